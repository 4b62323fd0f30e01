"""The kernel inside `jax.shard_map`: the input varies per device, the weights do not.

A one-device mesh is enough: the check that a primitive's operands vary along the same mesh
axes applies there too, and a primitive bound on the per-device input and a closed-over weight
was refused (``requires varying manual axes to match``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxplain as jp
from jaxplain import attribution
from jaxplain.lrp import EpsilonPlusFlat
from tests._jaxpr import primitives
from tests.core.models import linen_cnn


def _in_shard_map(fn, *args):
    """`fn(*args)` with every argument split over a one-device mesh."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    specs = (P("d"),) * len(args)
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P("d")))(*args)


def _cnn():
    model, variables = linen_cnn()
    x = jax.random.normal(jax.random.key(0), (3, 6, 6, 1))
    return jp.as_function(model, variables), x


def _recurrence(steps):
    """A tanh recurrence over `steps` time steps (`lax.scan`), weights closed over."""
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    w_in, w_h, w_out = (jax.random.normal(k1, (4, 6)) * 0.5, jax.random.normal(k2, (6, 6)) * 0.3,
                        jax.random.normal(k3, (6, 3)))

    def f(x):  # (batch, time, 4)
        def step(h, x_t):
            return jnp.tanh(x_t @ w_in + h @ w_h), None
        h0 = x[:, 0] @ jnp.zeros((4, 6))  # varies as x does, as a carry in a shard_map must
        h, _ = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
        return jax.nn.relu(h) @ w_out

    return f, jax.random.normal(jax.random.key(3), (2, steps, 4))


_MASK = np.arange(36).reshape(6, 6, 1) // 9
_KEY = jax.random.key(0)
METHODS = {  # (f, x, per-example target) -> array
    "capture": lambda f, x, t: jp.capture(f, "conv1")(x)[1]["conv1"],
    "intervene": lambda f, x, t: jp.intervene(f, {"block1/relu": lambda v: v * 0.5})(x),
    "deeplift": attribution.deeplift,
    "lrp": lambda f, x, t: attribution.lrp(f, x, t, rules=EpsilonPlusFlat()),
    "integrated_gradients": lambda f, x, t: attribution.integrated_gradients(f, x, t, steps=8),
    "grad_cam": lambda f, x, t: attribution.grad_cam(f, x, t, site="block1/relu_1"),
    # loops that carry an accumulator, and a relevance built from one target for all
    "integrated_gradients_chunked": lambda f, z, u: attribution.integrated_gradients(
        f, z, u, steps=8, batch_size=3),
    "smoothgrad_chunked": lambda f, z, u: attribution.smoothgrad(f, z, u, key=_KEY, samples=4,
                                                                 batch_size=2),
    "occlusion_chunked": lambda f, z, u: attribution.occlusion(f, z, u, window=(2, 2), stride=2,
                                                               batch_size=3),
    "lrp_one_target": lambda f, z, u: attribution.lrp(f, z, 1, rules=EpsilonPlusFlat()),
    "kernel_shap": lambda f, z, u: attribution.kernel_shap(f, z, u, feature_mask=_MASK),
    "deletion": lambda f, z, u: jp.metrics.deletion(f, z, u, z, steps=4, batch_size=5).values,
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_kernel_methods_in_a_shard_map_equal_the_unsharded_results(method):
    f, x = _cnn()
    t, fn = jnp.array([0, 1, 2]), METHODS[method]
    np.testing.assert_allclose(_in_shard_map(lambda z, u: fn(f, z, u), x, t), fn(f, x, t),
                               rtol=1e-5, atol=1e-6)


def test_weights_given_to_the_shard_map_replicated_work_too():
    model, variables = linen_cnn()
    x = jax.random.normal(jax.random.key(0), (3, 6, 6, 1))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))

    t = jnp.array([0, 1, 2])

    def explain(v, z, u):
        return attribution.deeplift(jp.as_function(model, v), z, u)

    sharded = jax.jit(jax.shard_map(explain, mesh=mesh, in_specs=(P(), P("d"), P("d")),
                                    out_specs=P("d")))
    np.testing.assert_allclose(sharded(variables, x, t), explain(variables, x, t), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("steps", [3, 2000])  # unrolled, and one node over the unroll budget
def test_loops_in_a_shard_map_equal_the_unsharded_results(steps):
    f, x = _recurrence(steps)
    t = jnp.array([0, 2])
    for fn in (lambda z, u: jp.capture(f, "relu")(z)[1]["relu"],
               lambda z, u: attribution.integrated_gradients(f, z, u, steps=4)):
        np.testing.assert_allclose(_in_shard_map(fn, x, t), fn(x, t), rtol=1e-4, atol=1e-6)


def test_outside_a_shard_map_nothing_is_cast():
    f, x = _cnn()
    traced = jax.make_jaxpr(lambda z: attribution.deeplift(f, z, 1))(x)
    assert "pvary" not in primitives(traced)
