"""Parameterizations, transforms and regularizers against closed forms and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import visualize as vis

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
IMG = jnp.asarray(RNG.uniform(size=(2, 6, 6, 3)), jnp.float32)


def test_pixel_and_fourier_map_into_the_range():
    for p in (vis.Pixel(std=3.0), vis.Fourier(std=3.0), vis.Pixel(std=3.0, squash="clip")):
        img = p.image(p.init(KEY, (2, 8, 6, 3)), (2, 8, 6, 3))
        assert img.shape == (2, 8, 6, 3)
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    p = vis.Pixel(value_range=(-1.0, 2.0), squash="none")
    np.testing.assert_allclose(p.image(jnp.zeros((1, 2, 2, 1)), None), 0.5)


def test_fourier_with_zero_decay_is_an_orthonormal_basis():
    # decay=0: no scaling, so the map from spectrum to (pre-squash) pixels preserves energy of
    # a real-signal spectrum; check linearity and that a DC coefficient gives a flat image.
    p = vis.Fourier(decay=0.0, squash="none", value_range=(0.0, 1.0))
    params = jnp.zeros((2, 1, 1, 4, 3)).at[0, 0, 0, 0, 0].set(2.0)
    img = p.image(params, (1, 4, 4, 1))
    np.testing.assert_allclose(img - 0.5, np.full((1, 4, 4, 1), 2.0 / 4.0), atol=1e-6)


def test_fourier_scaling_damps_high_frequencies():
    p = vis.Fourier(decay=1.0, squash="none")
    params = jax.random.normal(KEY, (2, 64, 1, 16, 9))
    img = np.asarray(p.image(params, (64, 16, 16, 1)))[..., 0]
    power = (np.abs(np.fft.fft2(img)) ** 2).mean(0)
    assert power[0, 1] > 4 * power[8, 8]  # 1/f^2 falls by (8 sqrt2)^2 / 1 ~ 128 in theory


def test_colour_decorrelation_is_the_covariance_square_root():
    mix = np.array([[1.0, 0.8, 0.2], [0.0, 0.6, 0.5], [0.0, 0.0, 0.3]])
    data = (RNG.normal(size=(500, 4, 4, 3)) @ mix).astype(np.float32)
    s = np.asarray(vis.colour_decorrelation(data), np.float64)
    cov = np.cov(data.reshape(-1, 3), rowvar=False)
    np.testing.assert_allclose(s @ s.T / (s @ s.T)[0, 0], cov / cov[0, 0], rtol=1e-3, atol=1e-4)
    p = vis.Pixel(colour=jnp.asarray(s), squash="none")
    z = jnp.asarray(RNG.normal(size=(1, 2, 2, 3)), jnp.float32)
    np.testing.assert_allclose(p.image(z, None) - 0.5, np.asarray(z) @ s.T, rtol=1e-5,
                               atol=1e-6)
    # In Fourier space the colour map applies after the inverse transform.
    shape = (1, 4, 4, 3)
    params = vis.Fourier(std=1.0).init(KEY, shape)
    grey = np.asarray(vis.Fourier(squash="none").image(params, shape)) - 0.5
    coloured = vis.Fourier(colour=jnp.asarray(s), squash="none").image(params, shape) - 0.5
    np.testing.assert_allclose(coloured, grey @ s.T, rtol=1e-4, atol=1e-6)


def test_transforms_identity_cases_and_exact_moves():
    x = jnp.asarray(RNG.uniform(size=(2, 5, 5, 2)), jnp.float32)
    np.testing.assert_allclose(vis.Jitter(0)(KEY, x), x)
    np.testing.assert_allclose(vis.Scale((1.0,))(KEY, x), x, atol=1e-6)
    np.testing.assert_allclose(vis.Rotate((0.0,))(KEY, x), x, atol=1e-6)
    # 90 degrees about the centre of a square image is an exact index permutation.
    r = np.asarray(vis.Rotate((90.0,))(KEY, x))
    candidates = [np.rot90(np.asarray(x), k, axes=(1, 2)) for k in (1, 3)]
    assert any(np.allclose(r, c, atol=1e-5) for c in candidates)
    # Jitter by at most 1 pixel: the interior equals a shift of the input.
    j = np.asarray(vis.Jitter(1)(KEY, x))
    for b in range(2):
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if np.allclose(j[b, 1:-1, 1:-1], np.asarray(x)[b, 1 + dy:4 + dy, 1 + dx:4 + dx])]
        assert shifts
    # Different keys draw different transforms.
    outs = {np.asarray(vis.Jitter(2)(k, x)).tobytes() for k in jax.random.split(KEY, 8)}
    assert len(outs) > 1


def test_regularizers_match_numpy():
    x = np.asarray(IMG, np.float64)
    dy = x[:, 1:, :-1] - x[:, :-1, :-1]
    dx = x[:, :-1, 1:] - x[:, :-1, :-1]
    tv = np.sqrt(dx**2 + dy**2 + 1e-8).reshape(2, -1).sum(1)
    np.testing.assert_allclose(vis.TotalVariation(2.0)(IMG), 2 * tv, rtol=1e-5)
    np.testing.assert_allclose(vis.L2(0.5, center=0.0)(IMG), 0.5 * (x**2).reshape(2, -1).sum(1),
                               rtol=1e-5)
    flat = jnp.full((1, 5, 5, 1), 0.3)
    np.testing.assert_allclose(vis.blur(flat), flat, atol=1e-6)
    assert float(vis.Blur()(flat)[0]) < 1e-10
    checker = jnp.asarray(np.indices((6, 6)).sum(0) % 2, jnp.float32)[None, :, :, None]
    smooth = jnp.broadcast_to(jnp.linspace(0, 1, 6)[None, :, None, None], (1, 6, 6, 1))
    assert float(vis.Blur()(checker)[0]) > 10 * float(vis.Blur()(smooth)[0])


def test_gaussian_prior_is_minus_log_density_up_to_a_constant():
    data = RNG.normal(size=(400, 2, 2, 1)) * np.array([1.0, 2.0, 0.5, 1.5]).reshape(2, 2, 1)
    prior = vis.gaussian_prior(jnp.asarray(data, jnp.float32), weight=1.0, shrinkage=0.0)
    flat = data.reshape(400, -1)
    mu, cov = flat.mean(0), np.cov(flat, rowvar=False)
    pts = RNG.normal(size=(5, 2, 2, 1))
    d = pts.reshape(5, -1) - mu
    want = 0.5 * np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(prior(jnp.asarray(pts, jnp.float32)), want, rtol=1e-3)
    user = vis.LogDensity(lambda x: -jnp.sum(x**2, axis=(1, 2, 3)), weight=2.0)
    np.testing.assert_allclose(user(jnp.asarray(pts)), 2 * (pts**2).reshape(5, -1).sum(1),
                               rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="squash"):
        vis.Pixel(squash="tanh")
    with pytest.raises(ValueError, match="value_range"):
        vis.Fourier(value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="pixels"):
        vis.Jitter(-1)
    with pytest.raises(ValueError, match="factors"):
        vis.Scale(())
    with pytest.raises(TypeError, match="generator"):
        vis.CodeSpace(3, (2,))
    with pytest.raises(TypeError, match="log_density"):
        vis.LogDensity("x")
    with pytest.raises(ValueError, match="at least 2"):
        vis.gaussian_prior(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        vis.colour_decorrelation(jnp.ones((3, 3)))


def test_scale_and_rotate_take_lists_as_lucent_does():
    # Lucent spells these as lists; they used to pass __post_init__ and then fail in jax.jit
    # (an unhashable static argument).
    s, r = vis.Scale([0.9, 1, 1.1]), vis.Rotate(list(range(-10, 11)))
    assert s == vis.Scale((0.9, 1.0, 1.1)) and hash(s) == hash(vis.Scale((0.9, 1.0, 1.1)))
    assert r.degrees == tuple(float(d) for d in range(-10, 11))
    assert vis.Rotate(np.array([90.0])) == vis.Rotate((90.0,))
    with pytest.raises(ValueError, match="sequence of numbers"):
        vis.Scale(1.1)
    f = lambda x: jnp.mean(x, axis=(1, 2))
    out = vis.render(f, vis.class_logit(0), key=KEY, shape=(1, 6, 6, 3), steps=2,
                     transforms=(s, r))
    assert out.images.shape == (1, 6, 6, 3)


def test_a_positive_rotation_turns_clockwise_as_displayed():
    # Row 0 at the top: a dot at the top centre goes to the right edge (Lucent, via kornia,
    # turns counter-clockwise for a positive angle).
    dot = jnp.zeros((1, 5, 5, 1)).at[0, 0, 2, 0].set(1.0)
    out = np.asarray(vis.Rotate((90.0,))(KEY, dot))[0, ..., 0]
    assert np.unravel_index(out.argmax(), out.shape) == (2, 4)
