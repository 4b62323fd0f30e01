"""render under strict JAX configurations and with jax_enable_x64: the same images."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxplain import visualize as V
from tests._strict import STRICT

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(3, 3, 1, 4)), jnp.float32)
HEAD = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
X = jnp.asarray(RNG.random((16, 6, 6, 1)), jnp.float32)
CAV = jnp.asarray(RNG.normal(size=(6, 6, 4)), jnp.float32)  # one example's value at "relu"
KEY = jax.random.key(0)


def _model(x):
    """conv (3x3, 1 -> 4) -> relu -> global max -> 3 logits; no broadcasting of its own."""
    h = jax.lax.conv_general_dilated(x, W, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.max(jax.nn.relu(h), axis=(1, 2)) @ HEAD


def _generator(z):
    return jax.nn.sigmoid(z.reshape(-1, 6, 6, 1))


def _renders(optimizer=None):
    """Renders of a few objectives, parameterizations, transforms and regularizers (3 steps
    each), as thunks."""
    run = lambda obj, **kw: V.render(_model, obj, key=KEY, shape=kw.pop("shape", (1, 6, 6, 1)),
                                     steps=3, optimizer=optimizer, **kw)
    return [
        lambda: run(V.class_logit(0) + V.direction("relu", CAV)
                    + V.cosine_direction("relu", jnp.ones(4)),
                    transforms=(V.Jitter(1),),
                    regularizers=(V.gaussian_prior(X, weight=0.01),)),
        lambda: run(V.neuron("relu", 2) + 0.1 * V.diversity("relu"), shape=(2, 6, 6, 1),
                    param=V.Fourier(colour=V.colour_decorrelation(X)),
                    transforms=V.standard_transforms(6),
                    regularizers=(V.L2(0.01), V.TotalVariation(0.05), V.Blur(1.0))),
        lambda: run([V.channel("relu", i) for i in (1, 2)],
                    param=V.CodeSpace(_generator, (36,))),
    ]


def _assert_equal(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("config", list(STRICT))
def test_render_runs_and_agrees_with_the_defaults(config):
    # Were: rank "raise" refused the Fourier spectrum times its (h, w) scale, the CAV-shaped
    # direction and the colour / prior square roots; strict promotion optax's Adam (Python
    # floats with its int32 step count) and the complex spectrum.
    want = [r() for r in _renders()]
    with STRICT[config]():
        got = [r() for r in _renders()]
    _assert_equal(got, want)


@pytest.mark.parametrize("param", [V.Pixel(), V.Fourier(),
                                   V.CodeSpace(lambda z: z.reshape(-1, 6, 6, 1), (36,))])
def test_random_starts_and_transforms_are_the_same_draws_with_x64(param):
    # The starts were drawn at the default float dtype (float64 with x64: other numbers for
    # one key), the transforms' offsets, scales and angles at the default int dtype.
    shape = (2, 6, 6, 1)
    moves = (V.Jitter(1), V.Jitter(1, crop=True), V.Scale(), V.Rotate())
    draw = lambda: (param.init(KEY, shape),
                    [t(KEY, X[:4]) for t in moves], V.blur(X[:4]))
    want = draw()
    with jax.enable_x64(True):
        got = draw()
    _assert_equal(got, want)


def test_render_with_x64_gives_the_float32_render():
    # Every step of our own is the float32 one: plain gradient ascent is bit-identical. optax's
    # Adam takes its bias corrections in float64 under x64 (a few float32 ulps per step); it
    # was 3e-3 apart while the starts were float64 draws.
    sgd, adam = _renders(optax.sgd(0.05)), _renders()[0]
    want, want_adam = [r() for r in sgd], adam()
    with jax.enable_x64(True):
        got, got_adam = [r() for r in sgd], adam()
    _assert_equal(got, want)
    assert got_adam.images.dtype == want_adam.images.dtype == jnp.float32
    np.testing.assert_allclose(got_adam.images, want_adam.images, rtol=0, atol=1e-5)
