"""On an accelerator the metrics read their inputs' values back once, not per check, per
metric or per randomized state (every read makes the host wait for the device's queue), and an
array found fine is not read again. Counted on the CPU with jaxplain's platform test made to say
"accelerator" (tests/_reads.py); the errors stay those of the checks run one by one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics
from jaxplain.metrics import _checks as checks
from tests import _reads
from tests.metrics._models import tiny_cnn

F = tiny_cnn()
X = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2))
T = jnp.argmax(F(X), axis=-1).astype(jnp.int32)


@pytest.fixture
def accelerator(monkeypatch):
    _reads.simulate_accelerator(monkeypatch)


def _checked(x, a, t):
    x, x_check = checks.as_batch(x)
    a, a_check = checks.as_like(a, x, "attribution")
    t, t_check = checks.as_target(t, x.shape[0], 4)
    checks.run_checks(x_check, a_check, t_check)
    return x, a, t


def test_the_checks_of_a_metric_run_with_one_read(accelerator):
    a = X * 2
    with _reads.counting() as reads:
        _checked(X + 0, a, T + 0)
    assert reads.waits == 1, reads
    nan, inf, high = X.at[1, 0, 0, 0].set(jnp.nan), a.at[2, 1, 1, 1].set(jnp.inf), T.at[0].set(4)
    with pytest.raises(ValueError, match="^x contains NaN$"):
        _checked(nan, inf, high)  # the first failing check, in the order given
    with pytest.raises(ValueError, match=r"attribution contains NaN or inf \(examples \[2\] "
                                         r"of 3\)"):
        _checked(X, inf, high)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 4\).*got values in \[\d, 4\]"):
        _checked(X, a, high)
    with pytest.raises(ValueError, match="^x contains NaN$"):  # each check alone, too
        checks.check_batch(nan)


def test_a_metric_after_the_method_reads_only_the_map(accelerator):
    want = metrics.deletion(F, X, T, A.gradient(F, X, T), steps=4)  # compiled (reads consts)
    x, t = X + 0, T + 0
    a = A.gradient(F, x, t)  # checks x and t
    with _reads.counting() as reads:
        got = metrics.deletion(F, x, t, a, steps=4)
    assert reads.waits == 1, reads
    with _reads.counting() as reads:
        metrics.deletion(F, x, t, a, steps=4)
    assert reads.waits == 0, reads
    np.testing.assert_array_equal(got.area, want.area)


K = jax.random.key(1)
SEGMENTS = np.arange(64).reshape(8, 8) // 8
METRICS = {  # name: (call on x, target, map; host waits of a call on new arrays)
    "deletion": (lambda x, t, a: metrics.deletion(F, x, t, a, steps=4), 1),
    "pixel_flipping": (lambda x, t, a: metrics.pixel_flipping(F, x, t, a), 1),
    "pixel_perturbation": (lambda x, t, a: metrics.pixel_perturbation(F, x, a, target=t), 1),
    "completeness": (lambda x, t, a: metrics.completeness(F, x, t, a), 1),
    "infidelity": (lambda x, t, a: metrics.infidelity(F, x, t, a, key=K), 1),
    "faithfulness_correlation": (lambda x, t, a: metrics.faithfulness_correlation(
        F, x, t, a, key=K, subset_size=8, samples=4), 1),
    "monotonicity": (lambda x, t, a: metrics.monotonicity(F, x, t, a), 1),
    "irof": (lambda x, t, a: metrics.irof(F, x, t, a, SEGMENTS), 1),
    "max_sensitivity": (lambda x, t, a: metrics.max_sensitivity(F, x, t, A.gradient, key=K,
                                                                samples=2), 1),
    "random_logit": (lambda x, t, a: metrics.random_logit(F, x, t, A.gradient, key=K), 1),
}


@pytest.mark.parametrize("name", METRICS)
def test_a_metric_reads_its_new_inputs_at_once(name, accelerator):
    call, waits = METRICS[name]
    a = A.gradient(F, X, T)
    want = call(X, T, a)
    with _reads.counting() as reads:
        got = call(X + 0, T + 0, a + 0)  # x, target and map at once
    assert reads.waits == waits, reads
    np.testing.assert_array_equal(getattr(got, "area", got), getattr(want, "area", want))
    with pytest.raises(ValueError, match="^x contains NaN$"):  # x's error first, as before
        call(X.at[0, 0, 0, 0].set(jnp.nan), T.at[1].set(9), a.at[2].set(jnp.inf))


def test_compare_reads_inputs_maps_and_scores_once_each(accelerator):
    methods = {"g": A.gradient, "gxi": A.gradient_x_input, "noise": metrics.random_attribution(
        jax.random.key(1))}
    names = ("deletion_morf", "deletion_lerf", "sparseness", "continuity")
    run = lambda x, t: metrics.compare(F, x, t, methods, names, key=jax.random.key(2), steps=4,
                                       samples=2)
    want = run(X, T)
    with _reads.counting() as reads:
        got = run(X + 0, T + 0)
    assert reads.waits == 3, reads  # x and target; the three maps; the twelve scores
    assert got == want


def test_compare_refuses_a_map_that_is_not_finite(accelerator):
    broken = lambda f, x, t: A.gradient(f, x, t).at[1].set(jnp.inf)  # noqa: E731
    with pytest.raises(ValueError, match=r"the attribution of 'b' contains NaN or inf "
                                         r"\(examples \[1\] of 3\)"):
        metrics.compare(F, X, T, {"g": A.gradient, "b": broken}, ("sparseness",),
                        key=jax.random.key(0))


class _MLP(nn.Module):
    depth: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i in range(self.depth):
            x = nn.relu(nn.Dense(8, name=f"d{i}")(x))
        return nn.Dense(3, name="head")(x)


@pytest.mark.parametrize("depth", [1, 4])
def test_randomization_reads_twice_whatever_the_number_of_states(depth, accelerator):
    model, v = _MLP(depth), jax.random.uniform(jax.random.key(0), (4, 6))
    variables = model.init(jax.random.key(1), v)
    run = lambda x: metrics.randomization_check(model, variables, x, A.gradient,  # noqa: E731
                                                key=jax.random.key(2), target=0)
    want = run(v)
    with _reads.counting() as reads:
        got = run(v + 0)
    assert len(got.states) == depth + 1
    assert reads.waits == 2, reads  # x and target; then every state's map
    np.testing.assert_array_equal(got.spearman, want.spearman)


def test_randomization_names_the_first_state_whose_map_is_not_finite(accelerator):
    model, v = _MLP(3), jax.random.uniform(jax.random.key(0), (4, 6))
    variables = model.init(jax.random.key(1), v)
    fresh = model.init(jax.random.key(3), v)
    params = dict(fresh["params"])
    params["d1"] = {**params["d1"], "kernel": jnp.full_like(params["d1"]["kernel"], jnp.nan)}
    with pytest.raises(ValueError, match=r"with layer 'd1' re-drawn, with every layer after it "
                                         r"\(cascading state 3 of 4\); the model's outputs are "
                                         r"not finite either"):
        metrics.randomization_check(model, variables, v, A.gradient, key=jax.random.key(2),
                                    fresh={"params": params})
