"""Few-position convolutions as patch products: the same values as XLA's convolution for any
strides, padding (negative too) and dilations in 1-3 spatial dimensions; the same values and
gradients through ``cpu_friendly`` and ``fast_convolutions``; and on CPU no convolution left
for the few-position and 1x1 layers, while larger ones stay convolutions."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._layout import fast_convolutions
from jaxplain.core._patches import patch_product, use_patch_product

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _random_case(rng):
    """A random convolution (x, w, params) with a non-empty output."""
    while True:
        n = int(rng.integers(1, 4))
        spatial = tuple(int(v) for v in rng.integers(1, 6, n))
        kernel = tuple(int(v) for v in rng.integers(1, 4, n))
        params = dict(window_strides=tuple(int(v) for v in rng.integers(1, 3, n)),
                      padding=tuple((int(a), int(b)) for a, b in rng.integers(-1, 3, (n, 2))),
                      lhs_dilation=tuple(int(v) for v in rng.integers(1, 3, n)),
                      rhs_dilation=tuple(int(v) for v in rng.integers(1, 3, n)))
        x = jnp.asarray(rng.normal(size=(2, *spatial, 3)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(*kernel, 3, 4)), jnp.float32)
        try:
            out = jax.eval_shape(lambda x: jax.lax.conv_general_dilated(
                x, w, dimension_numbers=DN[n], **params), x).shape
        except ValueError:  # padding that removes more than the input
            continue
        if all(s > 0 for s in out[1:-1]):
            return x, w, params


@pytest.mark.parametrize("seed", range(2))
def test_patch_product_equals_the_convolution(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        x, w, params = _random_case(rng)
        both = jax.jit(lambda x, w: (  # noqa: B023  (one compilation per case)
            jax.lax.conv_general_dilated(x, w, dimension_numbers=DN[x.ndim - 2], **params),
            patch_product(x, w, params)))
        ref, got = both(x, w)
        assert got.shape == ref.shape, params
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()),
                                   err_msg=str(params))


def _params(strides=(1, 1), groups=1):
    return dict(window_strides=strides, padding=((1, 1), (1, 1)), lhs_dilation=(1, 1),
                rhs_dilation=(1, 1), feature_group_count=groups, batch_group_count=1)


def test_patch_products_are_for_small_maps_and_unit_kernels():
    unpadded = dict(_params(), padding=((0, 0), (0, 0)))
    assert use_patch_product((2, 2), (3, 3), _params())                 # 2x2 -> 2x2
    assert use_patch_product((4, 4), (3, 3), _params((2, 2)))           # 4x4 -> 2x2
    assert not use_patch_product((3, 3), (3, 3), _params())             # 9 positions
    assert use_patch_product((16, 16), (1, 1), unpadded)                # 1x1: a matrix product
    assert use_patch_product((16, 16), (1, 1), dict(unpadded, window_strides=(2, 2)))
    assert not use_patch_product((2, 2), (3, 3), _params(groups=2))     # grouped
    assert not use_patch_product((16, 16), (1, 1), dict(unpadded, feature_group_count=4))


def _net():
    """A CNN with a 3x3 convolution on an 8x8 map, a 1x1 convolution, and a 3x3 convolution on
    a 2x2 map (few positions)."""
    w1 = jax.random.normal(jax.random.key(0), (3, 3, 2, 8)) * 0.4
    w2 = jax.random.normal(jax.random.key(1), (3, 3, 32, 6)) * 0.15
    unit = jax.random.normal(jax.random.key(4), (1, 1, 8, 32)) * 0.4  # XLA keeps it a convolution
    conv = lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",  # noqa: E731
                                                     dimension_numbers=DN[2])

    def f(x):
        h = jax.nn.relu(conv(x, w1))
        h = jax.nn.relu(conv(h, unit))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 4, 4, 1), (1, 4, 4, 1), "VALID")
        return jnp.tanh(conv(h, w2)).mean((1, 2))

    return f, jax.random.normal(jax.random.key(2), (5, 8, 8, 2))


def _convolutions(fn, x) -> int:
    return len(re.findall(r"= f32\[[^\]]*\]\{[^}]*\} convolution\(",
                          jax.jit(fn).lower(x).compile().as_text()))


def test_cpu_friendly_keeps_values_and_gradients():
    f, x = _net()
    loss = lambda g: lambda z: jnp.sum(g(z) ** 2)  # noqa: E731
    fast = cpu_friendly(f)
    np.testing.assert_allclose(jax.jit(fast)(x), f(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(loss(fast)))(x), jax.grad(loss(f))(x),
                               rtol=1e-4, atol=1e-6)
    t = jax.random.normal(jax.random.key(3), x.shape)
    # tangents of about 0.6; some entries cancel to 1e-7, where the two layouts' round-off
    # (1e-6 with the suite's unoptimised XLA) is all there is
    np.testing.assert_allclose(jax.jit(lambda x, t: jax.jvp(fast, (x,), (t,))[1])(x, t),
                               jax.jvp(f, (x,), (t,))[1], rtol=1e-4, atol=1e-5)
    batched = jax.jit(jax.vmap(jax.grad(loss(fast))))(x[:, None])
    np.testing.assert_allclose(batched[:, 0], jax.grad(loss(f))(x), rtol=1e-4, atol=1e-6)


def test_fast_convolutions_keeps_values_and_gradients():
    f, x = _net()
    step = jax.value_and_grad(lambda z: jnp.sum(f(z) ** 2))
    plain, fast = step(x), fast_convolutions(step)(x)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rewrite applies on CPU only")
def test_on_cpu_only_the_large_convolutions_are_left():
    f, x = _net()
    grad = lambda g: jax.grad(lambda z: jnp.sum(g(z) ** 2))  # noqa: E731
    # forward: three convolutions, of which the 3x3 one on 8x8 maps is left; the gradient adds
    # each one's input gradient, and again only that layer's stays a convolution
    assert _convolutions(f, x) == 3 and _convolutions(cpu_friendly(f), x) == 1
    assert _convolutions(grad(f), x) == 6 and _convolutions(grad(cpu_friendly(f)), x) == 2
    assert _convolutions(fast_convolutions(grad(f)), x) == 2
