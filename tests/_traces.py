"""Counting what a call makes JAX do: jaxpr traces and XLA compilations (jax.monitoring)."""

import contextlib
import dataclasses

import jax

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_COMPILE = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass
class Counts:
    traces: int = 0
    compiles: int = 0


@contextlib.contextmanager
def counting():
    """Counts the traces and compilations made inside the block (wait for the results inside
    it: ``jax.block_until_ready``)."""
    counts = Counts()

    def listener(event, *_, **__):
        counts.traces += event == _TRACE
        counts.compiles += event == _COMPILE

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
