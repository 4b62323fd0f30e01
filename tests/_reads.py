"""Counting the host's waits for the device in a call: reads of JAX arrays' values.

On an accelerator every read of a device array's values (``bool(a)``, ``float(a)``,
``np.asarray(a)``, ``jax.device_get``) makes the host wait for the device's queue. On the CPU
they are cheap and ``jax.transfer_guard_device_to_host`` never fires, so reads are counted by
wrapping what reads: the arrays' ``_value`` (behind ``bool``, ``float``, ``item``, ``tolist``
and ``jax.device_get``) and ``np.asarray`` / ``np.array`` given a JAX array (which NumPy reads
through the buffer protocol on the CPU). One ``jax.device_get`` is one wait however many
arrays it reads; an array read twice counts once (its host copy is cached).

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


@dataclasses.dataclass
class Reads:
    waits: int = 0   # host waits: one per bare read, one per jax.device_get
    arrays: int = 0  # distinct arrays read
    elements: int = 0  # their elements


def simulate_accelerator(monkeypatch):
    """Arrays other than NumPy's are taken as held on an accelerator."""
    monkeypatch.setattr(_value_checks, "_on_host", lambda x: isinstance(x, np.ndarray))


@contextlib.contextmanager
def counting():
    """Counts the reads made inside the block."""
    reads, seen, grouped = Reads(), [], []
    array_type = type(jnp.zeros(0))
    value = array_type.__dict__["_value"]

    def read(a):
        if isinstance(a, array_type) and not any(a is b for b in seen):
            seen.append(a)
            reads.arrays += 1
            reads.elements += a.size
            if grouped:
                grouped[-1] += 1
            else:
                reads.waits += 1

    def device_get(tree, _get=jax.device_get):
        grouped.append(0)
        try:
            return _get(tree)
        finally:
            reads.waits += grouped.pop() > 0

    def reading(fn):
        def wrapped(a, *args, **kwargs):
            read(a)
            return fn(a, *args, **kwargs)
        return wrapped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(array_type, "_value", property(lambda a: (read(a), value.fget(a))[1]))
        patch.setattr(jax, "device_get", device_get)
        for name in ("asarray", "array", "asanyarray"):
            patch.setattr(np, name, reading(getattr(np, name)))
        yield reads
