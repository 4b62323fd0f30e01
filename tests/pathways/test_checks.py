"""Input checks at the boundary: f through the shared function check, x validated and finite,
and a model that fails at x's shape reported as the kernel reports it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import pathways as pw
from jaxplain.attribution import _common
from tests.pathways import _models


def _calls(f, x):
    """Every public pathways function that takes f and x, called with small options."""
    masks = {"relu": jnp.ones((x.shape[0], 64), bool)}
    return {
        "contributions": lambda: pw.contributions(f, x, 0),
        "integrated_contributions": lambda: pw.integrated_contributions(f, x, 0, steps=2),
        "select": lambda: pw.select(f, x, 0, keep=0.2),
        "pathway_gradient": lambda: pw.pathway_gradient(f, x, 0, keep=0.2),
        "pathway_jvp": lambda: pw.pathway_jvp(f, x, 0, jnp.ones(np.shape(x)), keep=0.2),
        "masked_gradient": lambda: pw.masked_gradient(f, x, 0, masks),
        "masked_jvp": lambda: pw.masked_jvp(f, x, 0, masks, jnp.ones(np.shape(x))),
        "learned_gates": lambda: pw.learned_gates(f, x, steps=2),
        "greedy_masks": lambda: pw.greedy_masks(f, x, 0, rounds=2),
        "random_masks": lambda: pw.random_masks(jax.random.key(0), f, x, keep=0.2),
    }


NAMES = tuple(_calls(None, jnp.ones((1, 1))))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_x_is_refused(name, bad):
    f, _, x = _models.model("mlp", seed=0)
    x = np.array(x)
    x[2, 3] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or infinite values \(examples \[2\] of 4\)"):
        _calls(f, x)[name]()
    with pytest.raises(ValueError, match="x contains NaN"):  # as a JAX array too
        _calls(f, jnp.asarray(x))[name]()


def test_non_finite_x_is_refused_when_closed_over_in_jit_and_tracers_pass():
    f, _, x = _models.model("mlp", seed=0)
    bad = x.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="x contains NaN"):
        jax.jit(lambda: pw.pathway_gradient(f, bad, 0, keep=0.2))()
    # Traced x is not checked for values: NaN flows through as JAX's own ops would let it.
    out = jax.jit(lambda x: pw.pathway_gradient(f, x, 0, keep=0.2))(x)
    np.testing.assert_allclose(out, pw.pathway_gradient(f, x, 0, keep=0.2), rtol=1e-6)


def test_array_likes_are_accepted_and_bad_dtypes_refused():
    f, _, x = _models.model("mlp", seed=0)
    want = pw.pathway_gradient(f, x, 0, keep=0.2)
    np.testing.assert_allclose(pw.pathway_gradient(f, np.asarray(x).tolist(), 0, keep=0.2), want,
                               rtol=1e-6)
    assert set(pw.select(f, np.asarray(x).tolist(), 0, keep=0.2)) == set(pw.select(f, x, 0, keep=0.2))
    with pytest.raises(TypeError, match="x must be a floating-point array.*int32"):
        pw.pathway_gradient(f, jnp.ones((4, 20), jnp.int32), 0, keep=0.2)
    with pytest.raises(TypeError, match="x must be an array"):
        pw.select(f, [[1.0, 2.0], [3.0]], 0, keep=0.2)
    with pytest.raises(ValueError, match=r"batch axis first.*x\[None\]"):
        pw.contributions(f, x[0], 0)


@pytest.mark.parametrize("name", NAMES)
def test_a_model_that_fails_at_x_is_reported_as_the_kernel_does(name):
    f, _, x = _models.model("mlp", seed=0)
    wrong = x[:, :12]  # the first layer expects 20 features
    with pytest.raises(ValueError, match=r"The model could not be evaluated on an input of shape "
                                         r"\(4, 12\) and dtype float32: "):
        _calls(f, wrong)[name]()


class _Unhashable:
    """A callable model object that is not hashable, as an Equinox module holding arrays is."""

    __hash__ = None

    def __call__(self, x):
        return x @ jnp.ones((x.shape[-1], 3))


@pytest.mark.parametrize("name", NAMES + ("apply",))
def test_the_shared_function_check_runs_first(name, monkeypatch):
    f, _, x = _models.model("mlp", seed=0)

    class Refused(Exception):
        pass

    def refuse(g, name="f"):
        raise Refused(g)

    monkeypatch.setattr(_common, "check_function", refuse)
    bad_x = np.full((4, 20), np.nan, np.float32)  # the function check comes before the x check
    call = (lambda: pw.apply(f, {})) if name == "apply" else _calls(f, bad_x)[name]
    with pytest.raises(Refused):
        call()
    monkeypatch.undo()
    call = (lambda: pw.apply(_Unhashable(), {})) if name == "apply" else _calls(_Unhashable(), x)[name]
    with pytest.raises(TypeError, match="^f must be hashable"):
        call()


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_is_refused(name):
    f, _, x = _models.model("mlp", seed=0)
    with pytest.raises(ValueError, match="at least one example"):
        _calls(f, x[:0])[name]()


def test_max_abs_channel_refuses_maps_without_a_channel_axis():
    with pytest.raises(ValueError, match="no channel axis"):
        pw.max_abs_channel(jnp.ones((3, 20)))


def test_the_demo_figure_keeps_feature_ticks_on_vector_inputs():
    from jaxplain.pathways._demo import _figure

    x = np.linspace(0.0, 1.0, 40).reshape(2, 20)
    fig = _figure(x, [x, -x], ["a", "b"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels and labels[0] == "0"
    image = _figure(np.ones((1, 8, 8, 1)), [np.ones((1, 8, 8, 1))], ["a"])
    assert all(not ax.get_xticks().size for ax in image.axes[:2])


@pytest.mark.parametrize("name", ["contributions", "integrated_contributions", "select",
                                  "pathway_gradient", "masked_gradient", "greedy_masks"])
def test_an_int_target_and_an_array_of_targets_compile_once(name):
    # the target reaches the compiled function as an int32 (batch,) array whatever its form
    f, _, x = _models.model("mlp", seed=0)
    masks = {"relu": jnp.ones((x.shape[0], 64), bool)}
    call = {
        "contributions": lambda t: pw.contributions(f, x, t),
        "integrated_contributions": lambda t: pw.integrated_contributions(f, x, t, steps=2),
        "select": lambda t: pw.select(f, x, t, keep=0.2),
        "pathway_gradient": lambda t: pw.pathway_gradient(f, x, t, keep=0.2),
        "masked_gradient": lambda t: pw.masked_gradient(f, x, t, masks),
        "greedy_masks": lambda t: pw.greedy_masks(f, x, t, rounds=2),
    }[name]
    others = [jnp.array([1, 2, 0, 4]), np.array([3, 3, 3, 3]), 0, np.int64(2),
              jnp.arange(4, dtype=jnp.int16), jnp.full((x.shape[0],), 3)]
    first = jax.block_until_ready(call(3))
    compiles = []
    listener = lambda event, *_, **__: compiles.append(event) if "backend_compile" in event else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        outs = [jax.block_until_ready(call(t)) for t in others]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, f"{name} compiled again for another target form: {compiles}"
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(outs[-1])):
        np.testing.assert_array_equal(a, b)
