"""jaxplain under JAX's strict configurations: rank promotion "raise", dtype promotion
"strict", ``jax_debug_infs`` and ``jax.checking_leaks`` give the default results (subnet,
pathways, grad_cam); and no tracer of a user's ``jit`` is kept in the kernel's compile cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution, pathways, subnet
from jaxplain.core import _capture
from jaxplain.core._capture import InternalError, OwnEdit
from tests._strict import STRICT

K = jax.random.split(jax.random.key(0), 4)
K1 = jax.random.normal(K[0], (3, 3, 1, 4)) * 0.5
K2 = jax.random.normal(K[1], (3, 3, 4, 4)) * 0.5
W = jax.random.normal(K[2], (4, 3))
X = jax.random.uniform(K[3], (4, 6, 6, 1))
T = jnp.array([0, 1, 2, 0])


def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def f(x):  # no implicit broadcasting or promotion of its own
    h = jax.nn.relu(conv(jax.nn.relu(conv(x, K1)), K2))
    return jnp.dot(h.mean(axis=(1, 2)), W)


RUNS = {
    "subnet": lambda: subnet.extract(f, X, sites=["relu", "relu_1"], key=jax.random.key(0),
                                     steps=2, finetune_steps=1, l1=(1e-2,)).multipliers(),
    "select": lambda: pathways.select(f, X, T, keep=0.5),
    "pathway_gradient": lambda: pathways.pathway_gradient(f, X, T, keep=0.5),
    "grad_cam": lambda: attribution.grad_cam(f, X, T, site="relu_1"),
}
pytestmark = pytest.mark.filterwarnings("ignore:f predicts class")

CONFIGS = {**STRICT, "checking_leaks": jax.checking_leaks}


@pytest.fixture(scope="module")
def defaults():
    return {name: run() for name, run in RUNS.items()}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", RUNS)
def test_runs_and_equals_default(defaults, config, name):
    with CONFIGS[config]():
        got = RUNS[name]()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 got, defaults[name])


def _entries():
    return _capture._compiled.cache_info().currsize


def test_no_cache_entry_per_trace_of_a_user_jit():
    """Each trace of a user's jit around pathway_gradient added an entry pinning its tracers
    (4 traces: 4 entries); the masks are now arguments of one cached program."""
    pathways.pathway_gradient(f, X[:2], T[:2], keep=0.5)
    before = _entries()
    g = jax.jit(lambda x, t: pathways.pathway_gradient(f, x, t, keep=0.5))
    for n in (1, 3, 5):
        got = g(X[:1].repeat(n, 0), T[:1].repeat(n, 0))
        np.testing.assert_allclose(got, pathways.pathway_gradient(f, X[:1].repeat(n, 0),
                                                                  T[:1].repeat(n, 0), keep=0.5),
                                   rtol=1e-6)
    assert _entries() - before <= 1


def test_edit_with_a_traced_default_is_not_cached():
    """``lambda v, m=m: ...`` holds `m` as a default: it was cached (closure None), and so was
    capture of the intervened function; neither is now."""

    @jax.jit
    def g(x, m):
        h = jp.intervene(f, {"relu": lambda v, m=m: v * m})
        return jp.capture(h, "relu_1")(x)[1]["relu_1"]

    before = _entries()
    with jax.checking_leaks():
        for n in (1, 2, 3):
            g(X[:n], jnp.full((4,), 0.5))
    assert _entries() == before


def test_an_own_edit_reuses_its_program_for_a_new_operand():
    a = pathways.apply(f, {"relu": jnp.ones((4, 6, 6, 4), bool)})
    b = pathways.apply(f, {"relu": jnp.zeros((4, 6, 6, 4), bool)})
    assert a.__wrapped__.func is b.__wrapped__.func  # one compiled program, masks its arguments
    np.testing.assert_allclose(a(X), f(X), rtol=1e-6)
    assert not np.allclose(b(X), f(X))


def test_an_own_edit_failing_is_reported_as_a_jaxplain_bug():
    def bad(v, m):
        return v @ jnp.ones((3, 3), v.dtype)  # 4 channels: fails

    with pytest.raises(InternalError, match="bug in jaxplain, not in your model") as err:
        jp.capture(jp.intervene(f, {"relu": OwnEdit(bad, jnp.ones(4))}), "relu")(X)
    assert "could not be evaluated" not in str(err.value)
    assert "'relu'" in str(err.value)


def test_an_own_edit_with_an_operand_of_another_shape_is_the_callers_error():
    from jaxplain.pathways._gradient import _masked

    with pytest.raises(ValueError, match="does not broadcast"):
        jp.intervene(f, {"relu": OwnEdit(_masked, jnp.ones((3, 6, 6, 4), bool))})(X)


def test_placement_probe_compiles_once():
    from jaxplain.subnet import _placement

    _placement.shifted(f, X, ("relu", "relu_1"))
    size = _placement._probe._cache_size()
    assert size > 0
    _placement.shifted(f, X, ("relu", "relu_1"))
    assert _placement._probe._cache_size() == size
