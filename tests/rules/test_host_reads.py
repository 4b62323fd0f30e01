"""Host reads of the rule search and of ``activations``: one wait per device call, the next
call dispatched before the previous result is read, and the same results as reading each call
at once (``fetch_ahead`` replaced by the sequential loop)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain.core
from jaxplain.rules import _binarize, _kernel, _search, activations, mine
from tests._reads import counting
from tests.rules._planted import planted

SMALL = dict(k_tail=4, beam=8, k_head=4, batch_size=8, max_rules=3)


@pytest.fixture
def log(monkeypatch):
    """Events in order: ``call`` (a device call), ``wait`` (a host read, tests/_reads.py),
    ``begin`` / ``end`` around ``_Search.score`` and ``_Search.extensions``."""
    events = []
    for name in ("score", "cooccurrence"):
        monkeypatch.setattr(_kernel, name, _logged(getattr(_kernel, name), events, "call"))
    for name in ("score", "extensions"):
        method = getattr(_search._Search, name)

        def bracketed(self, *args, __method=method):
            events.append("begin")
            try:
                return __method(self, *args)
            finally:
                events.append("end")

        monkeypatch.setattr(_search._Search, name, bracketed)
    capture = jaxplain.core.capture
    monkeypatch.setattr(jaxplain.core, "capture",
                        lambda *a, **kw: _logged(capture(*a, **kw), events, "call"))
    with counting(_search, _binarize, on_wait=lambda: events.append("wait")):
        yield events


def _logged(fn, events, event):
    """``fn`` logging ``event`` when called on arrays (not while a caller is traced)."""
    def logged(*args, **kwargs):
        if not any(isinstance(a, jax.core.Tracer) for a in args):
            events.append(event)
        return fn(*args, **kwargs)
    return logged


def _one_ahead(events):
    """Whether ``events`` are k device calls each read with one wait, call i + 1 dispatched
    before call i is read: call, (call, wait) x (k - 1), wait."""
    k = events.count("call")
    return events == (["call"] + ["call", "wait"] * (k - 1) + ["wait"] if k else [])


def _sequential(items, call):
    """The peer of ``fetch_ahead``: call and read one item at a time."""
    for item in items:
        yield item, jax.device_get(call(item))


def _layers():
    d_a, d_b, _ = planted(0, n=600)
    return {"a": d_a, "b": d_b}


def test_mine_reads_each_kernel_call_once_while_the_next_runs(log):
    rules = mine(_layers(), **SMALL)
    calls, segment = [], None
    for event in log:
        if event == "begin":
            segment = []
        elif event == "end":
            calls.append(segment)
        elif segment is not None:
            segment.append(event)
    assert len(rules) >= 2 and len(calls) >= 4
    for events in calls:
        assert _one_ahead(events), events
    assert sum(events.count("call") >= 2 for events in calls) >= 2   # overlap was possible


def test_reading_ahead_changes_no_rule_gain_or_code_length(monkeypatch):
    ahead = mine(_layers(), **SMALL)
    monkeypatch.setattr(_kernel, "fetch_ahead", _sequential)
    one_by_one = mine(_layers(), **SMALL)
    assert str(ahead) == str(one_by_one) and len(ahead) >= 2
    assert [r.gain.item() for r in ahead.rules] == [r.gain.item() for r in one_by_one.rules]
    assert ahead.code_length.item() == one_by_one.code_length.item()


def test_head_rows_compiles_once_and_mine_sends_no_implicit_transfers(monkeypatch):
    growth = []
    extensions = _search._Search.extensions
    monkeypatch.setattr(_search._Search, "extensions",
                        lambda self, *a: (growth.append(1), extensions(self, *a))[1])
    with jax.transfer_guard_host_to_device("disallow"):
        mine(_layers(), **SMALL)
    _kernel.head_rows.clear_cache()
    mine(_layers(), **SMALL)
    assert len(growth) >= 4 and _kernel.head_rows._cache_size() == 1


def _model():
    """A two-layer MLP ``(n, 4) -> (n, 3)`` with bfloat16 weights: called on a weakly typed
    float32 ``x`` it computes in bfloat16, on a NumPy (strongly typed) one in float32."""
    w1 = jax.random.normal(jax.random.key(0), (4, 6), jnp.bfloat16)
    w2 = jax.random.normal(jax.random.key(1), (6, 3), jnp.bfloat16)
    return lambda x: jax.nn.relu(x @ w1) @ w2


def test_activations_keep_device_x_there_and_read_each_batch_once(log, monkeypatch):
    f = _model()
    x_host = np.asarray(jax.random.normal(jax.random.key(2), (40, 4)))
    x = jnp.asarray(x_host)
    activations(f, x, "relu", batch_size=8, quantile=0.5)
    log.clear()   # compiling reads the model's weights, as constants
    device = activations(f, x, "relu", batch_size=8, quantile=0.5)
    assert _one_ahead(log) and log.count("call") == 5, log    # x itself is never read
    weak = (jnp.arange(160) % 7 - 3).reshape(40, 4) * 0.37   # float32, weakly typed
    assert weak.weak_type
    results = [device, activations(f, weak, "relu", batch_size=8, quantile=0.5)]
    monkeypatch.setattr(_binarize, "fetch_ahead", _sequential)
    for x_in, result in zip((x_host, np.asarray(weak)), results):   # NumPy, one at a time
        peer = activations(f, x_in, "relu", batch_size=8, quantile=0.5)
        np.testing.assert_array_equal(result["relu"].items, peer["relu"].items)
        np.testing.assert_array_equal(result["relu"].thresholds, peer["relu"].thresholds)
