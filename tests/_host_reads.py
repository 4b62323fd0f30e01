"""Counting the host's reads of device arrays: on an accelerator each one waits for the device.

On CPU JAX's device-to-host transfer guard never fires, and ``np.asarray`` reads an array
through the buffer protocol, unseen by JAX; so reads are counted where they are made: each
``jax.device_get`` call (its copies run together: one wait), each read of an array's value
outside one (``bool``, ``int``, ``float``, formatting, ``tolist``), and each call of the NumPy
of the given modules with a jax Array argument.
"""

import contextlib

import jax
import numpy as np
import pytest

_ARRAY = type(jax.numpy.zeros(()))  # jaxlib's array class, without a private import


class NumpySpy:
    """NumPy for one module under test: `record` gets the jax Arrays of every call given some."""

    def __init__(self, record):
        self._record = record

    def __getattr__(self, name):
        v = getattr(np, name)
        if isinstance(v, type) or not callable(v):
            return v

        def call(*args, **kwargs):
            arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, jax.Array)]
            if arrays:
                self._record(arrays)
            return v(*args, **kwargs)
        return call


@contextlib.contextmanager
def counting(*modules):
    """Yields a list that gets the number of elements of each read made inside the block."""
    reads: list[int] = []
    inside = [False]
    value = _ARRAY.__dict__["_value"].fget
    device_get = jax.device_get

    def read_value(a):
        if not inside[0]:
            reads.append(a.size)
        return value(a)

    def counted_device_get(tree):
        sizes = [a.size for a in jax.tree.leaves(tree) if isinstance(a, jax.Array)]
        if sizes:
            reads.append(sum(sizes))
        inside[0] = True
        try:
            return device_get(tree)
        finally:
            inside[0] = False

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_ARRAY, "_value", property(read_value))
        mp.setattr(jax, "device_get", counted_device_get)
        spy = NumpySpy(lambda arrays: reads.append(sum(a.size for a in arrays)))
        for module in modules:
            if hasattr(module, "np"):
                mp.setattr(module, "np", spy)
        yield reads
