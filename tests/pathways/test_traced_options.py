"""Float options are values of the compiled programs, not static arguments: a sweep over
learned_gates' learning_rate, momentum, l1 and max_gate, over keep of threshold, select,
pathway_gradient and random_masks, or over greedy_masks' step compiles nothing after the first
call, and each value gives what a program with that value built in gives."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import pathways as pw
from jaxplain.pathways import _checks, _pruning, _select
from tests.pathways import _models


class Compiles:
    """Counts traces and XLA compilations while active (jax.monitoring's duration events)."""

    def __enter__(self):
        self.events = []
        self._listener = lambda event, *_, **__: (
            self.events.append(event) if "backend_compile" in event or "jaxpr_trace" in event
            else None)
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def test_learned_gates_float_options_compile_once_and_match_built_in_values():
    f, _, x = _models.model("mlp", seed=8)
    default = pw.learned_gates(f, x, steps=30)
    options = dict(learning_rate=0.03, momentum=0.5, l1=0.02, max_gate=0.5)
    with Compiles() as c:
        got = jax.block_until_ready(pw.learned_gates(f, x, steps=30, **options))
    assert not c.events, f"new float options compiled again: {c.events}"
    specs, _ = _checks.resolve(f, x, None)
    ones = {n: jnp.ones(shape, jnp.float32) for n, shape, _ in specs}
    built_in = jax.jit(lambda x, init: _pruning._learned_gates.__wrapped__(
        f, x, init, 30, *options.values(), 100))(x, ones)
    for n in got:
        np.testing.assert_array_equal(got[n], built_in[n])
    assert all(not np.array_equal(got[n], default[n]) for n in got)  # the options act
    assert max(float(g.max()) for g in got.values()) == 0.5  # max_gate clamps


def test_keep_compiles_once_and_matches_a_built_in_cut():
    f, _, x = _models.model("mlp", seed=1)
    t = jnp.argmax(f(x), -1)
    scores = pw.contributions(f, x, t)
    calls = {
        "threshold": lambda k: pw.threshold(scores, keep=k),
        "select": lambda k: pw.select(f, x, t, keep=k),
        "pathway_gradient": lambda k: pw.pathway_gradient(f, x, t, keep=k),
        "random_masks": lambda k: pw.random_masks(jax.random.key(0), f, x, keep=k),
    }
    for call in calls.values():
        jax.block_until_ready(call(0.2))
    keeps = (0.05, 0.5, 1.0)
    with Compiles() as c:
        out = {name: [jax.block_until_ready(call(k)) for k in keeps]
               for name, call in calls.items()}
    assert not c.events, f"a new keep compiled again: {c.events}"
    n = _select.units(v.shape for v in scores.values())
    built_in = jax.jit(lambda s: _select.threshold_scores(s, _select.cut(keeps[0], n)))(scores)
    for name in scores:
        np.testing.assert_array_equal(out["threshold"][0][name], built_in[name])
    for k, masks, selected, grad in zip(keeps, out["threshold"], out["select"],
                                        out["pathway_gradient"]):
        for name in scores:
            np.testing.assert_array_equal(selected[name], masks[name])
        np.testing.assert_array_equal(grad, pw.masked_gradient(f, x, t, selected))
        assert 0 < float(pw.kept_fraction(masks).min()) <= k + 1 / n
    assert all(bool(m.all()) for m in out["threshold"][-1].values())  # keep=1 keeps every unit
    for k, masks in zip(keeps, out["random_masks"]):
        for m in masks.values():
            size = int(np.prod(m.shape[1:]))
            np.testing.assert_array_equal(m.reshape(len(x), -1).sum(1), size - int((1 - k) * size))


def test_percentile_position_is_numpy_percentile_at_every_q_in_one_program():
    v = jnp.asarray(np.random.default_rng(0).normal(size=(3, 101)).astype(np.float32))
    rows = jax.jit(_select.percentile_rows)
    rows(v, _select.position(101, 10.0))
    with Compiles() as c:
        for q in (0.0, 0.5, 33.3, 80.0, 99.99, 100.0):
            np.testing.assert_allclose(rows(v, _select.position(101, q)),
                                       np.percentile(np.asarray(v, np.float64), q, axis=1),
                                       rtol=1e-6, atol=1e-7)
    assert not c.events


def test_greedy_step_compiles_once():
    f, _, x = _models.model("mlp", seed=2)
    t = jnp.argmax(f(x), -1)
    pw.greedy_masks(f, x, t, rounds=3, step=10.0)
    with Compiles() as c:
        steps = {s: jax.block_until_ready(pw.greedy_masks(f, x, t, rounds=3, step=s))
                 for s in (20.0, 40.0)}
    assert not c.events
    built_in = jax.jit(lambda x, t: _pruning._greedy.__wrapped__(
        f, x, t, _checks.resolve(f, x, None)[0], 3, 40.0))(x, t)
    for n in built_in:
        np.testing.assert_array_equal(steps[40.0][n], built_in[n])
    assert any(not np.array_equal(steps[20.0][n], steps[40.0][n]) for n in built_in)
