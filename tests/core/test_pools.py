"""The pool rewrites of cpu_friendly: tiling max / sum pools rewritten as block reductions, and
overlapping or padded max pools differentiated through window slices, keep their values and
their gradients (the first maximum of a window takes a max pool's gradient, ties included),
forward and reverse mode, under jit and vmap; sum pools that do not tile are left alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.core._pools import REWRITES
from jaxplain.core._reinterpret import on_cpu, reinterpret
from tests._jaxpr import primitives


def block_pools(fn):
    """`fn` with the pool rewrites only (cpu_friendly without its convolution rewrite)."""
    return on_cpu(fn, REWRITES)

# (input shape, window, strides, padding)
TILING = [
    ((3, 8, 8, 4), (1, 2, 2, 1), (1, 2, 2, 1), "VALID"),      # NHWC 2x2
    ((2, 3, 9, 9), (1, 1, 3, 3), (1, 1, 3, 3), "VALID"),      # NCHW 3x3
    ((2, 7, 10, 3), (1, 2, 3, 1), (1, 2, 3, 1), "VALID"),     # a remainder row is dropped
    ((4, 12, 5), (1, 4, 1), (1, 4, 1), "VALID"),              # 1-d
]

# (input shape, window, strides, padding, window dilation): max pools whose windows overlap or pad
OVERLAPPING = [
    ((2, 9, 9, 3), (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)), None),  # ResNet
    ((2, 7, 7, 3), (1, 3, 3, 1), (1, 1, 1, 1), "SAME", None),
    ((2, 3, 8, 8), (1, 1, 2, 2), (1, 1, 1, 1), "VALID", None),                         # NCHW
    ((2, 6, 6, 2), (1, 2, 2, 1), (1, 2, 2, 1), "SAME", None),                          # padded
    ((3, 11, 2), (1, 3, 1), (1, 2, 1), ((0, 0), (2, 1), (0, 0)), (1, 2, 1)),          # dilated
]


def _pooled(op, window, strides, padding, shape, dilation=None):
    """x (shape) -> (batch,): a pool of tanh(x) read out with fixed, non-uniform weights (so
    that gradients differ per window)."""
    init, reducer = (-jnp.inf, jax.lax.max) if op == "max" else (0.0, jax.lax.add)
    pool = lambda z: jax.lax.reduce_window(jnp.tanh(z), init, reducer, window, strides, padding,
                                           window_dilation=dilation)
    out = jax.eval_shape(pool, jax.ShapeDtypeStruct(shape, jnp.float32)).shape
    weights = jax.random.normal(jax.random.key(7), out[1:])
    return lambda x: (pool(x) * weights).reshape(len(x), -1).sum(1)


def _ties(shape):
    """Inputs with many equal values in each window (small integers)."""
    return jnp.asarray(np.random.default_rng(0).integers(0, 2, shape), jnp.float32)


@pytest.mark.parametrize("op, shape, window, strides, padding, dilation",
                         [(op, *case, None) for op in ("max", "sum") for case in TILING]
                         + [("max", *case) for case in OVERLAPPING])
def test_values_and_gradients_are_unchanged(op, shape, window, strides, padding, dilation):
    f = _pooled(op, window, strides, padding, shape, dilation)
    for x in (jax.random.normal(jax.random.key(1), shape), _ties(shape)):
        fast = block_pools(f)
        np.testing.assert_allclose(fast(x), f(x), rtol=1e-6, atol=1e-6)
        # jax has no reverse mode for a dilated max pool: forward mode gives the reference
        reference = jax.jacfwd if dilation else jax.grad
        g, gf = reference(lambda z: f(z).sum())(x), jax.grad(lambda z: fast(z).sum())(x)
        if op == "max" and not dilation:  # one-hot selections: the same gradient, ties included
            np.testing.assert_array_equal(gf, g)
        else:
            np.testing.assert_allclose(gf, g, rtol=1e-6, atol=1e-7)
        t = jax.random.normal(jax.random.key(2), shape)
        np.testing.assert_allclose(jax.jvp(fast, (x,), (t,))[1], jax.jvp(f, (x,), (t,))[1],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strides", [(1, 2, 2, 1), (1, 1, 1, 1)])  # tiling, overlapping
def test_a_max_pool_gradient_goes_to_the_first_maximum_of_a_window(strides):
    x = jnp.array([[[1.0, 3.0], [3.0, 0.0]]])[..., None]  # (1, 2, 2, 1): two maxima
    pool = lambda z: jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2, 2, 1), strides,
                                           "VALID").sum()
    g = jax.grad(block_pools(pool))(x)
    np.testing.assert_array_equal(g[0, ..., 0], [[0.0, 1.0], [0.0, 0.0]])


@pytest.mark.parametrize("case", [(*TILING[0], None), OVERLAPPING[0]])
def test_under_jit_and_vmap(case):
    shape, *pool = case
    f = _pooled("max", *pool[:3], shape, pool[3])
    x = _ties((5,) + shape)
    grad = lambda z: jax.grad(lambda v: f(v).sum())(z)
    fast = lambda z: jax.grad(lambda v: block_pools(f)(v).sum())(z)
    np.testing.assert_array_equal(jax.vmap(fast)(x), jnp.stack([grad(xi) for xi in x]))
    np.testing.assert_array_equal(jax.jit(jax.vmap(fast))(x), jax.jit(jax.vmap(grad))(x))


def test_flax_pools_in_a_model():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(6, (3, 3))(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Conv(8, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            return nn.Dense(3)(x.reshape(len(x), -1))

    x = jax.random.uniform(jax.random.key(3), (4, 8, 8, 2))
    params = Net().init(jax.random.key(0), x)
    f = lambda z: Net().apply(params, z)
    loss = lambda fn: lambda z: fn(z)[:, 1].sum()
    np.testing.assert_allclose(jax.grad(loss(block_pools(f)))(x), jax.grad(loss(f))(x),
                               rtol=1e-5, atol=1e-7)
    assert "select_and_scatter_add" in primitives(jax.make_jaxpr(jax.grad(loss(f)))(x))
    assert not {"select_and_scatter_add", "reduce_window_sum"} & primitives(
        jax.make_jaxpr(jax.grad(loss(lambda z: reinterpret(f, REWRITES, z))))(x))


def test_overlapping_max_pools_are_differentiated_without_select_and_scatter():
    shape, window, strides, padding, _ = OVERLAPPING[0]
    x = jax.random.normal(jax.random.key(4), shape)
    f = _pooled("max", window, strides, padding, shape)
    plain = jax.grad(lambda z: f(z).sum())
    assert "select_and_scatter_add" in primitives(jax.make_jaxpr(plain)(x))
    rewritten = jax.grad(lambda z: reinterpret(f, REWRITES, z).sum())
    assert "select_and_scatter_add" not in primitives(jax.make_jaxpr(rewritten)(x))


def test_pools_the_rewrites_leave_alone():
    x = jax.random.normal(jax.random.key(4), (2, 7, 7, 3))
    for window, strides, padding in (((1, 3, 3, 1), (1, 2, 2, 1), "VALID"),    # overlapping
                                     ((1, 2, 2, 1), (1, 2, 2, 1), "SAME")):    # padded
        f = _pooled("sum", window, strides, padding, x.shape)
        rewritten = jax.grad(lambda z: reinterpret(f, REWRITES, z).sum())
        assert "reduce_window_sum" in primitives(jax.make_jaxpr(rewritten)(x))
        np.testing.assert_allclose(jax.grad(lambda z: block_pools(f)(z).sum())(x),
                                   jax.grad(lambda z: f(z).sum())(x), rtol=1e-6)
    # a max pool over a dilated input
    f = lambda z: jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 1, 1, 1),
                                        "VALID", base_dilation=(1, 2, 2, 1)).sum()
    rewritten = jax.grad(lambda z: reinterpret(f, REWRITES, z))
    assert "select_and_scatter_add" in primitives(jax.make_jaxpr(rewritten)(x))


def test_the_rewrite_is_chosen_at_trace_time_with_no_branch_in_the_program():
    # a per-platform branch (lax.platform_dependent) made second derivatives, e.g. of an
    # attribution with respect to the weights, several times slower on CPU
    shape, window, strides, padding = TILING[0]
    f = _pooled("max", window, strides, padding, shape)
    x = jax.random.normal(jax.random.key(5), shape)
    w = jnp.float32(1.5)
    second = jax.grad(lambda s: jax.grad(lambda z: block_pools(lambda u: f(s * u))(z).sum())(x).sum())
    prims = primitives(jax.make_jaxpr(second)(w))
    assert "cond" not in prims and "platform_index" not in prims
    assert "select_and_scatter_add" not in prims
    plain = jax.grad(lambda s: jax.grad(lambda z: f(s * z).sum())(x).sum())
    np.testing.assert_allclose(second(w), plain(w), rtol=1e-5)


def test_other_backends_get_the_function_as_it_is(monkeypatch):
    shape, window, strides, padding = TILING[0]
    f = _pooled("max", window, strides, padding, shape)
    x = jax.random.normal(jax.random.key(6), shape)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    grad = jax.grad(lambda z: block_pools(f)(z).sum())
    assert "select_and_scatter_add" in primitives(jax.make_jaxpr(grad)(x))
