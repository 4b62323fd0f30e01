"""Counting the host's waits for the device in a call: reads of JAX arrays' values.

On an accelerator every read of a device array's values (``bool(a)``, ``float(a)``,
``np.asarray(a)``, ``jax.device_get``) makes the host wait for the device's queue. On the CPU
they are cheap and ``jax.transfer_guard_device_to_host`` never fires, so reads are counted by
wrapping what reads: the arrays' ``_value`` (behind ``bool``, ``float``, ``item``, ``tolist``
and ``jax.device_get``) and ``__array__``, ``np.asarray`` / ``np.array`` given a JAX array
(which NumPy reads through the buffer protocol on the CPU), and any NumPy function given a JAX
array by one of the modules passed to :func:`counting`. One ``jax.device_get`` is one wait
however many arrays it reads; an array read twice counts once (its host copy is cached).

``simulate_accelerator`` makes jaxplain's platform test say "not in the host's memory", so
that it takes the path it takes on a GPU.
"""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import _value_checks

_ARRAY = type(jnp.zeros(0))  # jaxlib's array class, without a private import


@dataclasses.dataclass
class Reads:
    waits: int = 0   # host waits: one per bare read, one per jax.device_get
    arrays: int = 0  # distinct arrays read
    elements: int = 0  # their elements
    sizes: list = dataclasses.field(default_factory=list)  # the elements read by each wait


def simulate_accelerator(monkeypatch):
    """Arrays other than NumPy's are taken as held on an accelerator."""
    monkeypatch.setattr(_value_checks, "_on_host", lambda x: isinstance(x, np.ndarray))


class _NumpySpy:
    """NumPy for one module under test: `read` gets every JAX array given to a function."""

    def __init__(self, read):
        self._read = read

    def __getattr__(self, name):
        v = getattr(np, name)
        if isinstance(v, type) or not callable(v):
            return v

        def call(*args, **kwargs):
            for a in (*args, *kwargs.values()):
                self._read(a)
            return v(*args, **kwargs)
        return call


@contextlib.contextmanager
def counting(*modules, on_wait=lambda: None):
    """Counts the reads made inside the block (also those of the NumPy of `modules`) and calls
    `on_wait()` at each wait."""
    reads, seen, grouped = Reads(), [], []
    value, to_numpy = _ARRAY.__dict__["_value"].fget, _ARRAY.__array__

    def wait(elements):
        reads.waits += 1
        reads.sizes.append(elements)
        on_wait()

    def read(a):
        if isinstance(a, _ARRAY) and not any(a is b for b in seen):
            seen.append(a)
            reads.arrays += 1
            reads.elements += a.size
            if grouped:
                grouped[-1] += a.size
            else:
                wait(a.size)

    def device_get(tree, _get=jax.device_get):
        grouped.append(0)
        try:
            return _get(tree)
        finally:
            elements = grouped.pop()
            if elements:
                wait(elements)

    def reading(fn):
        def wrapped(a, *args, **kwargs):
            read(a)
            return fn(a, *args, **kwargs)
        return wrapped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_ARRAY, "_value", property(lambda a: (read(a), value(a))[1]))
        patch.setattr(_ARRAY, "__array__", reading(to_numpy))
        patch.setattr(jax, "device_get", device_get)
        for name in ("asarray", "array", "asanyarray"):
            patch.setattr(np, name, reading(getattr(np, name)))
        for module in modules:
            if hasattr(module, "np"):
                patch.setattr(module, "np", _NumpySpy(read))
        yield reads
