"""The metrics check `f` as the attribution methods do: a Flax module given as `f` is refused
with the way to wrap it (not Flax's CallCompactUnboundModuleError or NNX's TraceContextError),
one example without its batch axis is reported as such (pass x[None]), and completeness lists
the baselines it takes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics as M


class Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Conv(4, (3, 3), name="conv")(x)).mean(axis=(1, 2)))


class Nnx(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))


X = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
T = jnp.array([0, 1, 2, 0])
ONES = jnp.ones(X.shape)
KEY = jax.random.key(1)
SEGMENTS = jnp.arange(64).reshape(8, 8) // 16
F = jp.as_function(Linen(), Linen().init(jax.random.key(2), X))

METRICS = {
    "compare": lambda f, x: M.compare(f, x, T, {"g": A.gradient}, ("sparseness",), key=KEY),
    "completeness": lambda f, x: M.completeness(f, x, T, jnp.ones_like(x)),
    "conservation": lambda f, x: M.conservation(f, x, T, jnp.ones_like(x)),
    "faithfulness_correlation": lambda f, x: M.faithfulness_correlation(
        f, x, T, jnp.ones_like(x), key=KEY, subset_size=4, samples=2),
    "deletion": lambda f, x: M.deletion(f, x, T, jnp.ones_like(x), steps=2),
    "insertion": lambda f, x: M.insertion(f, x, T, jnp.ones_like(x), steps=2),
    "pixel_flipping": lambda f, x: M.pixel_flipping(f, x, T, jnp.ones_like(x), steps=2),
    "pixel_perturbation": lambda f, x: M.pixel_perturbation(f, x, jnp.ones_like(x), target=T),
    "pixel_perturbation, target=None": lambda f, x: M.pixel_perturbation(f, x, jnp.ones_like(x)),
    "infidelity": lambda f, x: M.infidelity(f, x, T, jnp.ones_like(x), key=KEY, samples=2),
    "irof": lambda f, x: M.irof(f, x, T, jnp.ones_like(x), SEGMENTS),
    "monotonicity": lambda f, x: M.monotonicity(f, x, T, jnp.ones_like(x)),
    "monotonicity_correlation": lambda f, x: M.monotonicity_correlation(
        f, x, T, jnp.ones_like(x), key=KEY, samples=2),
    "random_logit": lambda f, x: M.random_logit(f, x, T, A.gradient, key=KEY,
                                                similarity="spearman"),
    "max_sensitivity": lambda f, x: M.max_sensitivity(f, x, T, A.gradient, key=KEY, samples=2),
    "local_lipschitz": lambda f, x: M.local_lipschitz(f, x, T, A.gradient, key=KEY, samples=2),
    "continuity": lambda f, x: M.continuity(f, x, T, A.gradient, key=KEY, samples=2),
}

MODULES = {
    "linen": (Linen(), r"f is a Flax Linen module \(Linen\).*jaxplain\.as_function\(model, "
                       r"variables\)"),
    "linen class": (Linen, r"f is the Flax Linen module class Linen"),
    "nnx": (Nnx(nnx.Rngs(0)), r"f is a Flax NNX module \(Nnx\): pass jaxplain\.as_function"),
}


@pytest.mark.parametrize("module", sorted(MODULES))
@pytest.mark.parametrize("metric", sorted(METRICS))
def test_module_as_f_is_refused_with_the_way_to_wrap_it(metric, module):
    model, message = MODULES[module]
    with pytest.raises(TypeError, match=message):
        METRICS[metric](model, X)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_one_example_without_batch_axis_says_x_none(metric):
    with pytest.raises(ValueError, match=r"could not be evaluated on an input of shape "
                                         r"\(8, 8, 1\).*pass x\[None\]"):
        METRICS[metric](F, X[0])


def test_randomization_check_says_x_none():
    model = Linen()
    variables = model.init(jax.random.key(2), X)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 1\).*pass x\[None\]"):
        M.randomization_check(model, variables, X[0], A.gradient, key=KEY, target=0)


@pytest.mark.parametrize("baseline, error", [(None, TypeError), ("zeros", ValueError),
                                             ("mean", ValueError)])
def test_completeness_lists_only_the_baselines_it_takes(baseline, error):
    message = (r"baseline must be a number or an array broadcastable to x \(4, 8, 8, 1\) for "
               r"completeness.*pass 0\.0 for zeros")
    with pytest.raises(error, match=message) as info:
        M.completeness(F, X, T, ONES, baseline=baseline)
    assert "blur" not in str(info.value)


def test_completeness_at_zero_is_attribution_completeness_delta():
    a = A.integrated_gradients(F, X, T, steps=8)
    np.testing.assert_allclose(M.completeness(F, X, T, a, baseline=0.0),
                               A.completeness_delta(F, X, T, a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", ["deletion", "infidelity", "continuity", "random_logit",
                                    "pixel_perturbation"])
def test_a_function_as_target_says_how_to_explain_another_quantity(metric):
    target = lambda logits: logits.max(-1)  # noqa: E731
    calls = {
        "deletion": lambda: M.deletion(F, X, target, ONES, steps=2),
        "infidelity": lambda: M.infidelity(F, X, target, ONES, key=KEY, samples=2),
        "continuity": lambda: M.continuity(F, X, target, A.gradient, key=KEY, samples=2),
        "random_logit": lambda: M.random_logit(F, X, target, A.gradient, key=KEY,
                                               similarity="spearman"),
        "pixel_perturbation": lambda: M.pixel_perturbation(F, X, ONES, target=target),
    }
    with pytest.raises(TypeError, match=r"not a function.*lambda x: g\(f\(x\)\)\[:, None\]"):
        calls[metric]()
