"""What a Lucid / Lucent user reaches for: constant terms and division, the neuron's default
centre, cosine directions, Pad, Jitter(crop=True) and standard_transforms (against NumPy, and
rendering with each still raises its objective)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import visualize as vis
from tests.visualize._models import tiny_cnn

F = tiny_cnn()  # fully convolutional up to a global mean: any image size runs
KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
ACTS = {"a": jnp.asarray(RNG.normal(size=(3, 5, 6, 4)), jnp.float32),
        "b": jnp.asarray(RNG.normal(size=(3, 7)), jnp.float32)}
LOGITS = jnp.asarray(RNG.normal(size=(3, 10)), jnp.float32)
X = jnp.zeros((3, 5, 6, 1))
SHAPE = (1, 8, 8, 1)


def _value(obj, acts=ACTS):
    return obj(acts, LOGITS, X)


def _grad(obj):
    return jax.grad(lambda a: _value(obj, a))(ACTS)


def _start_values(obj, shape=SHAPE, n=8):
    """The objective on random starts of the default parameterization (Pixel())."""
    p, vals = vis.Pixel(), []
    for k in jax.random.split(jax.random.key(1), n):
        x = p.image(p.init(k, shape), shape)
        y, acts = jp.capture(F, list(obj.sites()))(x)
        vals.append(float(obj(acts, y, x)))
    return np.asarray(vals)


def _final_value(obj, images):
    y, acts = jp.capture(F, list(obj.sites()))(images)
    return float(obj(acts, y, images))


# ---- arithmetic ----------------------------------------------------------------------------


def test_a_constant_term_keeps_the_gradient_and_counts_in_the_value():
    obj = vis.channel("a", 1) + 0.5 * vis.layer("b")
    base, k = float(_value(obj)), X.shape[0]
    cases = [(obj + 2.5, base + 2.5 * k, 1), (2.5 + obj, base + 2.5 * k, 1),
             (obj - 2.5, base - 2.5 * k, 1), (1 - obj, k - base, -1),
             (obj + jnp.float32(2.5), base + 2.5 * k, 1)]
    for o, want, sign in cases:
        # Per image, like every term: the batch of k images adds k * c.
        np.testing.assert_allclose(float(_value(o)), want, rtol=1e-5)
        for name in ACTS:
            np.testing.assert_allclose(_grad(o)[name], sign * _grad(obj)[name], atol=1e-7)
    assert len(sum([obj, vis.layer("a")]).terms) == 3  # sum() starts at 0: no constant term


def test_render_of_obj_plus_c_moves_the_same_images_and_reports_c():
    obj = vis.channel("conv2", 2)
    kw = dict(key=KEY, shape=(2, 8, 8, 1), steps=30, learning_rate=0.1)
    plain, shifted = vis.render(F, obj, **kw), vis.render(F, obj + 3.0, **kw)
    np.testing.assert_allclose(shifted.images, plain.images, atol=1e-6)  # no gradient from c
    np.testing.assert_allclose(shifted.value, plain.value + 2 * 3.0, rtol=1e-5)  # k = 2 images
    np.testing.assert_allclose(shifted.trace, plain.trace + 2 * 3.0, rtol=1e-5)


def test_division_is_scaling_by_the_reciprocal():
    obj = vis.channel("a", 2) - vis.neuron("a", 1, (0, 3))
    np.testing.assert_allclose(float(_value(obj / 2)), float(_value(0.5 * obj)), rtol=1e-6)
    np.testing.assert_allclose(float(_value(obj / jnp.float32(4.0))), float(_value(obj)) / 4,
                               rtol=1e-6)
    stacked = vis.stack([obj / d for d in (1, 2, 4)])  # the reciprocal is a leaf: it stacks
    np.testing.assert_allclose(jax.vmap(_value)(stacked), float(_value(obj)) / np.array([1, 2, 4]),
                               rtol=1e-5)


def test_products_and_quotients_of_objectives_are_type_errors():
    a, b = vis.channel("a", 1), vis.layer("b")
    for op in (lambda: a * b, lambda: a / b):
        with pytest.raises(TypeError, match=r"objective [*/] objective is not supported.*number"):
            op()
    with pytest.raises(TypeError, match=r"int / objective is not supported"):
        2 / a
    with pytest.raises(TypeError, match=r"objective \+ str is not supported"):
        a + "1"
    with pytest.raises(TypeError, match=r"shape \(3,\).*scalar"):
        a + np.ones(3)
    with pytest.raises(TypeError, match=r"objective \* bool"):
        a * True
    with pytest.raises(ZeroDivisionError, match="non-zero"):
        a / 0


# ---- neuron: the default position -----------------------------------------------------------


def test_neuron_defaults_to_the_sites_centre():
    # (5, 6) spatial: centre (5 // 2, 6 // 2) = (2, 3); a dense site has no position.
    a = np.asarray(ACTS["a"])
    np.testing.assert_allclose(float(_value(vis.neuron("a", 3))), a[:, 2, 3, 3].sum(), rtol=1e-6)
    np.testing.assert_allclose(float(_value(vis.neuron("a", 3))),
                               float(_value(vis.neuron("a", 3, (2, 3)))), rtol=1e-6)
    np.testing.assert_allclose(float(_value(vis.neuron("b", 4))), float(_value(vis.channel("b", 4))))
    stacked = vis.stack([vis.neuron("a", c) for c in range(4)])
    np.testing.assert_allclose(jax.vmap(_value)(stacked), a[:, 2, 3].sum(0), rtol=1e-5)
    with pytest.raises(ValueError, match="share one structure"):
        vis.stack([vis.neuron("a", 0), vis.neuron("a", 0, (1, 1))])


def test_rendered_default_neuron_equals_the_explicit_centre():
    kw = dict(key=KEY, shape=SHAPE, steps=30, learning_rate=0.1)
    default = vis.render(F, vis.neuron("conv2", 1), **kw)
    explicit = vis.render(F, vis.neuron("conv2", 1, (4, 4)), **kw)
    np.testing.assert_allclose(default.images, explicit.images, atol=1e-6)
    assert float(default.value) > _start_values(vis.neuron("conv2", 1)).max()


# ---- cosine directions -------------------------------------------------------------------------


def _np_cos(a, v):
    return a @ v / (np.linalg.norm(a, axis=-1) * np.linalg.norm(v))


def test_cosine_direction_is_the_mean_cosine_per_position_and_scale_invariant():
    a, v = np.asarray(ACTS["a"], np.float64), np.array([0.3, -1.0, 2.0, 0.5])
    want = _np_cos(a, v).mean(axis=(1, 2)).sum()
    for scale in (1.0, 1e-3, 250.0):
        np.testing.assert_allclose(float(_value(vis.cosine_direction("a", scale * v))), want,
                                   rtol=1e-5)
    np.testing.assert_allclose(float(_value(vis.cosine_direction("a", -v))), -want, rtol=1e-5)
    # One position: explicit, and the centre by default.
    np.testing.assert_allclose(float(_value(vis.cosine_direction_neuron("a", 3 * v, (4, 1)))),
                               _np_cos(a[:, 4, 1], v).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(_value(vis.cosine_direction_neuron("a", v))),
                               _np_cos(a[:, 2, 3], v).sum(), rtol=1e-5)
    # The raw-dot-product direction is unchanged and grows with |v|.
    np.testing.assert_allclose(float(_value(vis.direction("a", 2 * v))),
                               2 * (a.mean(axis=(1, 2)) @ v).sum(), rtol=1e-5)


def test_cosine_gradient_is_finite_at_a_zero_activation():
    acts = {"a": jnp.zeros((1, 2, 2, 4)), "b": ACTS["b"]}
    g = jax.grad(lambda a: _value(vis.cosine_direction("a", jnp.ones(4)), {**acts, "a": a}))(
        acts["a"])
    assert np.all(np.isfinite(g))


def test_cosine_direction_errors():
    with pytest.raises(ValueError, match="1-D"):
        vis.cosine_direction("a", np.ones((2, 2)))
    with pytest.raises(ValueError, match="all zeros"):
        vis.cosine_direction_neuron("a", np.zeros(4))
    with pytest.raises(ValueError, match="must be integers"):
        vis.cosine_direction_neuron("a", np.ones(4), (1.5, 2))
    with pytest.raises(ValueError, match="direction vector .* 6 entries"):
        vis.render(F, vis.cosine_direction("relu_1", jnp.ones(5)), key=KEY, shape=SHAPE, steps=2)


def test_rendered_cosine_directions_rise_in_one_vmapped_call():
    vectors = jnp.eye(6)[:3] + 0.1
    objs = [vis.cosine_direction("conv2", v) for v in vectors]
    out = vis.render(F, objs, key=KEY, shape=SHAPE, steps=40, learning_rate=0.1)
    assert out.value.shape == (3,)
    for i, o in enumerate(objs):
        np.testing.assert_allclose(_final_value(o, out.images[i]), out.value[i], rtol=1e-4)
        assert float(out.value[i]) > _start_values(o).max() + 0.05


# ---- transforms --------------------------------------------------------------------------------


def test_pad_equals_np_pad():
    x = RNG.uniform(size=(2, 5, 6, 3)).astype(np.float32)
    width = ((0, 0), (3, 3), (3, 3), (0, 0))
    np.testing.assert_array_equal(vis.Pad(3)(KEY, x), np.pad(x, width, mode="reflect"))
    np.testing.assert_array_equal(vis.Pad(3, mode="constant")(KEY, x),
                                  np.pad(x, width, constant_values=0.5))
    np.testing.assert_array_equal(vis.Pad(3, "constant", value=-1)(KEY, x),
                                  np.pad(x, width, constant_values=-1.0))
    assert vis.Pad(3, "constant") == vis.Pad(3, "constant", 0.5)  # one compiled loop
    assert hash(vis.Pad(3, "constant")) == hash(vis.Pad(3, "constant", 0.5))


def test_crop_jitter_is_a_crop_at_an_offset_within_pixels():
    x = RNG.uniform(size=(16, 7, 9, 2)).astype(np.float32)
    out = np.asarray(vis.Jitter(3, crop=True)(KEY, x))
    assert out.shape == (16, 4, 6, 2)
    offsets = set()
    for i in range(16):
        hits = [(dy, dx) for dy in range(4) for dx in range(4)
                if np.array_equal(out[i], x[i, dy:dy + 4, dx:dx + 6])]
        assert len(hits) == 1, hits
        offsets.add(hits[0])
    assert len(offsets) > 4  # drawn per image


def test_transform_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        vis.Pad(2, mode="edge")
    with pytest.raises(ValueError, match="value=0.0 is the fill of mode='constant'"):
        vis.Pad(2, value=0.0)
    with pytest.raises(ValueError, match="pixels must be a non-negative int"):
        vis.Pad(-1)
    with pytest.raises(ValueError, match="crop must be a bool"):
        vis.Jitter(1, crop="yes")
    with pytest.raises(ValueError, match="crops 8 pixels off images of 8x8"):
        vis.render(F, vis.channel("conv2", 1), key=KEY, shape=SHAPE, steps=2,
                   transforms=(vis.Jitter(8, crop=True),))
    with pytest.raises(ValueError, match="size must be"):
        vis.standard_transforms(0)
    flat = lambda x: x.reshape(x.shape[0], -1) @ jnp.ones((64, 3))  # noqa: E731 -- 8x8 only
    with pytest.raises(ValueError, match=r"from \(1, 8, 8, 1\) to \(1, 12, 12, 1\).*any image"):
        vis.render(flat, vis.class_logit(1), key=KEY, shape=SHAPE, steps=2,
                   transforms=(vis.Pad(2),))
    # A position must exist both where value is taken (8x8) and where the steps run (12x12).
    with pytest.raises(ValueError, match=r"out of range .* \(8, 8\) \(on the \(1, 8, 8, 1\)"):
        vis.render(F, vis.neuron("conv2", 1, (10, 10)), key=KEY, shape=SHAPE, steps=2,
                   transforms=(vis.Pad(2),))


def test_standard_transforms_scale_lucents_preset_and_pad_the_batch():
    big = vis.standard_transforms(224)
    assert big[0] == vis.Pad(12, "constant", 0.5)
    assert (big[1], big[4]) == (vis.Jitter(4), vis.Jitter(2))
    assert big[2].factors == pytest.approx([0.9 + 0.02 * i for i in range(11)])
    assert big[3].degrees == tuple(float(d) for d in range(-10, 11)) + 5 * (0.0,)
    small = vis.standard_transforms(32)
    assert (small[0].pixels, small[1].pixels, small[4].pixels) == (2, 1, 1)
    assert small[2:4] == big[2:4]
    assert vis.standard_transforms(8)[0].pixels == 1  # at least 1
    x = jnp.asarray(RNG.uniform(size=(4, 32, 32, 3)), jnp.float32)
    out = np.asarray(jp.visualize._transforms.apply_transforms(small, KEY, x))
    # The model sees the images enlarged by 2 * pad, still in the images' range [0, 1].
    assert out.shape == (4, 36, 36, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out[0], out[1])  # drawn per image


def test_render_with_pad_crop_and_standard_transforms_raises_the_objective():
    obj = vis.neuron("conv2", 1)  # the centre of whatever size the model sees
    start = _start_values(obj).max()
    for transforms in ((vis.Pad(2),), (vis.Pad(2, "constant"), vis.Jitter(1, crop=True)),
                       vis.standard_transforms(8)):
        out = vis.render(F, obj, key=KEY, shape=SHAPE, steps=60, learning_rate=0.1,
                         transforms=transforms)
        assert out.images.shape == SHAPE
        # value is taken on the returned 8x8 images, at their own centre (4, 4).
        np.testing.assert_allclose(
            _final_value(vis.neuron("conv2", 1, (4, 4)), out.images), out.value, rtol=1e-4)
        assert float(out.value) > start + 0.5, (transforms, float(out.value), start)


def test_new_values_do_not_recompile():
    def run(c, v, pad):
        objs = [vis.cosine_direction_neuron("conv2", v * s) / 2 + c for s in (1.0, 2.0)]
        return vis.render(F, objs, key=KEY, shape=SHAPE, steps=5,
                          transforms=(vis.Pad(pad, "constant"), vis.Jitter(1, crop=True)))

    run(1.0, jnp.arange(6.0), 2)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True):
            out = run(-2.0, jnp.arange(6.0)[::-1], 2)
    finally:
        logging.getLogger("jax").removeHandler(handler)
    assert not [r for r in records if "_render" in r.getMessage()]
    assert out.value.shape == (2,)
