"""The CAM family on inputs without a channel axis: a raw ``(n, T)`` waveform or ``(n, H, W)``
grey images that the model gives a channel itself (``x[..., None]``). The map comes back shaped
like `x`, equal to the map of the same model spelled with the channel axis in its input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

KEYS = jax.random.split(jax.random.key(3), 4)
METHODS = [(A.grad_cam, {}), (A.grad_cam_plus_plus, {}), (A.score_cam, {"batch_size": 2}),
           (A.guided_grad_cam, {})]


def _net(spatial: int, layout: str):
    """A strided convolution (site ``conv``, 4 channels at half the size) and a dense head of 3
    classes over its mean, reading ``(n, *spatial, 1)`` inputs (``(n, 1, *spatial)`` for
    ``layout="first"``)."""
    w = jax.random.normal(KEYS[spatial], (3,) * spatial + (1, 4))
    head = jax.random.normal(KEYS[0], (4, 3))
    axes = "DHW"[-spatial:]
    lhs = f"N{axes}C" if layout == "last" else f"NC{axes}"

    def f(x):
        with jax.named_scope("conv"):
            h = jax.nn.relu(jax.lax.conv_general_dilated(
                x, w, (2,) * spatial, "SAME", dimension_numbers=(lhs, f"{axes}IO", lhs)))
        pooled = h.mean(axis=tuple(range(1, spatial + 1)) if layout == "last"
                        else tuple(range(2, spatial + 2)))
        return pooled @ head

    return f


@pytest.mark.parametrize("method, options", METHODS)
@pytest.mark.parametrize("shape", [(2, 16), (2, 8, 6)])  # a waveform, grey images
def test_a_map_of_an_input_without_channels_is_shaped_like_it(method, options, shape):
    x = jax.random.normal(KEYS[3], shape)
    t = jnp.array([0, 2])
    with_channel = _net(len(shape) - 1, "last")
    channel_first = _net(len(shape) - 1, "first")
    want = method(with_channel, x[..., None], t, site="conv", **options)[..., 0]
    assert float(jnp.abs(want).max()) > 0
    for f in (lambda v: with_channel(v[..., None]), lambda v: channel_first(v[:, None])):
        got = method(f, x, t, site="conv", **options)
        assert got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_token_ids_get_their_map_over_the_tokens():
    """Ids ``(n, L)`` at a ``"SAME"`` convolution after the embedding: the resized map is the
    site's, one value per token."""
    table, w = jax.random.normal(KEYS[0], (10, 4)), jax.random.normal(KEYS[1], (3, 4, 5))
    head = jax.random.normal(KEYS[2], (5, 2))

    def f(ids):
        with jax.named_scope("conv"):
            h = jax.nn.relu(jax.lax.conv_general_dilated(
                table[ids], w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")))
        return h.max(axis=1) @ head

    ids = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    for method in (A.grad_cam, A.grad_cam_plus_plus):
        cam = method(f, ids, 0, site="conv")
        assert cam.shape == ids.shape and float(jnp.abs(cam).max()) > 0
        np.testing.assert_array_equal(cam, method(f, ids, 0, site="conv", resize=False))
