"""Pathway gradient: keep=1 identity, hand-built critical path, exact local linearity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import pathways as pw
from tests.pathways import _models


def _mask_list(f, x, masks):
    return [masks[n] for n in jp.core.relu_sites(f, x)]


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet"])
def test_keep_one_is_the_plain_gradient(kind):
    f, _, x = _models.model(kind, seed=2)
    t = jnp.arange(x.shape[0]) % 3
    plain = jax.grad(lambda x: jnp.take_along_axis(f(x), t[:, None], 1).sum())(x)
    np.testing.assert_array_equal(np.asarray(pw.pathway_gradient(f, x, t, keep=1.0)), np.asarray(plain))


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet"])
def test_masked_forward_and_gradient_match_a_hand_written_masked_network(kind):
    f, fwd, x = _models.model(kind, seed=3)
    t = jnp.argmax(f(x), -1)
    masks = pw.select(f, x, t, keep=0.2)
    mlist = [m.astype(jnp.float32) for m in _mask_list(f, x, masks)]
    np.testing.assert_allclose(pw.apply(f, masks)(x), fwd(x, mlist)[0], rtol=1e-5, atol=1e-5)
    ref = jax.grad(lambda x: jnp.take_along_axis(fwd(x, mlist)[0], t[:, None], 1).sum())(x)
    pg = pw.pathway_gradient(f, x, t, keep=0.2)
    np.testing.assert_allclose(pg, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pg, jax.grad(lambda x: jnp.take_along_axis(f(x), t[:, None], 1).sum())(x))
    np.testing.assert_allclose(pw.masked_gradient(f, x, t, masks), pg, rtol=1e-6, atol=1e-7)
    d = jax.random.normal(jax.random.key(0), x.shape)
    y, dy = pw.pathway_jvp(f, x, t, d, keep=0.2)
    np.testing.assert_allclose(dy, (pg * d).reshape(len(x), -1).sum(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, jnp.take_along_axis(fwd(x, mlist)[0], t[:, None], 1)[:, 0], rtol=1e-5, atol=1e-5)


def _hand_net(x):
    a = jnp.array([[1.0, 0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 1.0]])
    b = jnp.array([[3.0, -1.0], [0.5, 0.0], [10.0, 0.0], [0.1, 0.0], [0.5, 0.0]])
    c = jnp.array([[1.0, -1.0], [5.0, 0.0]])
    u = jax.nn.relu(x @ a)
    v = jax.nn.relu(u @ b)
    return v @ c


def test_hand_built_critical_path():
    # x = (1, 2): u = (1, 2, 0[dead], 3, 2), v = (5.3, 0[dead]), y_0 = v_0 + 5 v_1.
    # Scores |a dy0/da|: u -> (3, 1, 0, 0.3, 1) (u1 and u4 tie), v -> (5.3, 0).
    # keep = 0.5: tau = 50th pct of (0, 0, .3, 1, 1, 3, 5.3) = 1 -> the ties drop; path = {u0, v0}.
    x = jnp.array([[1.0, 2.0]])
    names = jp.core.relu_sites(_hand_net, x)
    scores = pw.contributions(_hand_net, x, 0)
    np.testing.assert_allclose(scores[names[0]], [[3.0, 1.0, 0.0, 0.3, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(scores[names[1]], [[5.3, 0.0]], rtol=1e-6)
    masks = pw.select(_hand_net, x, 0, keep=0.5)
    assert masks[names[0]].tolist() == [[True, False, False, False, False]]
    assert masks[names[1]].tolist() == [[True, False]]
    # On the path y_0 = 3 relu(x_0): gradient (3, 0); the plain gradient is (3.1, 1.1).
    np.testing.assert_allclose(pw.pathway_gradient(_hand_net, x, 0, keep=0.5), [[3.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(pw.pathway_gradient(_hand_net, x, 0, keep=1.0), [[3.1, 1.1]], rtol=1e-6)
    np.testing.assert_allclose(pw.apply(_hand_net, masks)(x), [[3.0, -3.0]], rtol=1e-6)
    # keep = 0.8: tau = 20th pct = 0.12 -> u0, u1, u3, u4 and v0 kept; the dead units still drop.
    wide = pw.select(_hand_net, x, 0, keep=0.8)
    assert wide[names[0]].tolist() == [[True, True, False, True, True]]
    assert wide[names[1]].tolist() == [[True, False]]


@functools.partial(jax.jit, static_argnames=("fwd", "masked"))
def _flip_distance(fwd, x0, masks, d, masked):
    """Distance along unit `d` to the first change of the ReLU pattern (kept units only if masked)."""

    def pattern(x):
        zs = fwd(x, masks if masked else None)[1]
        return jnp.concatenate([((z > 0) & (m > 0)).ravel() for z, m in zip(zs, masks)])

    p0 = pattern(x0)
    ts = jnp.geomspace(1e-5, 50.0, 96)
    changed = jax.vmap(lambda t: (pattern(x0 + t * d) != p0).any())(ts)
    first = jnp.argmax(changed)
    hi = jnp.where(changed.any(), ts[first], 50.0)
    lo = jnp.where(first > 0, ts[jnp.maximum(first - 1, 0)], 0.0)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        moved = (pattern(x0 + mid * d) != p0).any()
        return jnp.where(moved, lo, mid), jnp.where(moved, mid, hi)

    lo, hi = jax.lax.fori_loop(0, 30, bisect, (lo, hi))
    return lo


@pytest.mark.parametrize("kind,seed", [("mlp", 0), ("mlp", 1), ("cnn", 0), ("cnn", 1), ("resnet", 0)])
def test_local_linearity_and_larger_linear_region(kind, seed):
    f, fwd, x = _models.model(kind, seed)
    t = jnp.argmax(f(x), -1)
    masks = pw.select(f, x, t, keep=0.2)
    mlist = [m.astype(jnp.float32) for m in _mask_list(f, x, masks)]
    ones = [jnp.ones_like(m) for m in mlist]
    dirs = jax.random.normal(jax.random.key(seed + 10), (12,) + x.shape[1:])
    dirs = dirs / jnp.linalg.norm(dirs.reshape(len(dirs), -1), axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    masked_r, plain_r = [], []
    for i in range(2):
        xi, mi, oi = x[i : i + 1], [m[i : i + 1] for m in mlist], [o[i : i + 1] for o in ones]
        mi_dict = {n: masks[n][i : i + 1] for n in masks}
        r_m = jax.vmap(lambda d: _flip_distance(fwd, xi, mi, d[None], True))(dirs)
        r_u = jax.vmap(lambda d: _flip_distance(fwd, xi, oi, d[None], False))(dirs)
        masked_r.append(r_m)
        plain_r.append(r_u)
        # Inside the masked region the masked net is exactly affine: f(x + s d) - f(x) = s * jvp(d).
        h = pw.apply(f, mi_dict)
        pg = pw.masked_gradient(f, xi, t[i], mi_dict)
        for j in range(4):
            d, s = dirs[j][None], 0.5 * float(r_m[j])
            y0, dy = pw.masked_jvp(f, xi, t[i], mi_dict, d)
            # Finite difference over a step inside the region == jvp == vjp (pathway gradient) . d.
            step = float(h(xi + s * d)[0, t[i]] - y0[0])
            tol = 1e-4 * max(1.0, abs(float(y0[0])), abs(step))
            assert abs(step - s * float(dy[0])) <= tol
            assert abs(step - s * float((pg * d).sum())) <= tol
    masked_med = float(jnp.median(jnp.concatenate(masked_r)))
    plain_med = float(jnp.median(jnp.concatenate(plain_r)))
    # The spec's check: at least 5x (measured here: 14x to 200x on these five model/seed pairs).
    assert masked_med > 5.0 * plain_med, (masked_med, plain_med)


def test_max_abs_channel():
    maps = jnp.array([[[[1.0, -3.0, 2.0], [0.5, 0.2, -0.1]]]])
    assert pw.max_abs_channel(maps).tolist() == [[[-3.0, 0.5]]]
    assert pw.max_abs_channel(jnp.moveaxis(maps, -1, 1), axis=1).tolist() == [[[-3.0, 0.5]]]


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 3, 4, 5, 3)])  # signals and volumes
def test_max_abs_channel_takes_any_number_of_spatial_axes(shape):
    maps = jax.random.normal(jax.random.key(0), shape)
    want = np.take_along_axis(np.asarray(maps), np.abs(maps).argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(pw.max_abs_channel(maps), want)
    np.testing.assert_array_equal(pw.max_abs_channel(jnp.moveaxis(maps, -1, 1), axis=1), want)


def test_compiles_once_and_composes_with_jit():
    traces = []
    f0, _, x = _models.model("mlp", seed=4)

    def f(x):
        traces.append(1)
        return f0(x)

    pw.pathway_gradient(f, x, 0, keep=0.2)
    n = len(traces)
    pw.pathway_gradient(f, x + 1.0, 1, keep=0.2)
    assert len(traces) == n, "second call re-traced the model"
    inside = jax.jit(lambda x: pw.pathway_gradient(f0, x, 0, keep=0.2))(x)
    np.testing.assert_allclose(inside, pw.pathway_gradient(f0, x, 0, keep=0.2), rtol=1e-6)
    # Per-example independence: the batch result equals a loop over single examples.
    loop = jnp.concatenate([pw.pathway_gradient(f0, x[i : i + 1], 0, keep=0.2) for i in range(len(x))])
    np.testing.assert_allclose(pw.pathway_gradient(f0, x, 0, keep=0.2), loop, rtol=1e-5, atol=1e-6)


def test_composes_with_vmap():
    f0, _, x = _models.model("mlp", seed=4)
    groups = x.reshape(2, 2, -1)
    got = jax.vmap(lambda xb: pw.pathway_gradient(f0, xb, 0, keep=0.2))(groups)
    want = jnp.stack([pw.pathway_gradient(f0, xb, 0, keep=0.2) for xb in groups])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
