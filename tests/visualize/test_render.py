"""render: activation maximization beats the data, Fourier lowers high frequencies, diversity
spreads a batch, vmap over objectives equals one at a time, priors and code space, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import visualize as vis
from tests.visualize._models import digits_images, tiny_cnn

F = tiny_cnn()
KEY = jax.random.key(0)
ALIVE = (1, 2, 3, 5)  # channels of relu_1 that are not dead at the grey start (checked below)


def _channel_means(x, site="relu_1"):
    _, acts = jp.capture(F, site)(x)
    return np.asarray(jnp.mean(acts[site], axis=(1, 2)))


def _high_freq_fraction(images):
    img = np.asarray(images, np.float64)[..., 0]
    img = img - img.mean(axis=(-1, -2), keepdims=True)
    power = np.abs(np.fft.fft2(img)) ** 2
    fy = np.fft.fftfreq(img.shape[-2])[:, None]
    fx = np.fft.fftfreq(img.shape[-1])[None, :]
    high = np.sqrt(fy**2 + fx**2) > 0.25
    return (power * high).sum(axis=(-1, -2)) / power.sum(axis=(-1, -2))


@pytest.fixture(scope="module")
def channels_pixel():
    objs = [vis.channel("relu_1", i) for i in range(6)]
    # The two channels outside ALIVE are dead at the start: render warns, naming them.
    with pytest.warns(RuntimeWarning, match=r"objectives \[0, 4\] of 6 \(channel\('relu_1'\)\)"):
        return vis.render(F, objs, key=KEY, shape=(1, 8, 8, 1), steps=100, learning_rate=0.1,
                          param=vis.Pixel(std=1.0))


def test_rendered_beats_every_data_example_and_the_start(channels_pixel):
    out = channels_pixel
    assert out.images.shape == (6, 1, 8, 8, 1) and out.trace.shape == (6, 100)
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    data_best = _channel_means(digits_images()).max(axis=0)
    # The reported value is the channel's activation on the returned image.
    got = _channel_means(out.images[:, 0])
    np.testing.assert_allclose(np.diag(got), out.value, rtol=1e-4, atol=1e-6)
    for c in ALIVE:
        assert out.trace[c, 0] > 0, "channel unexpectedly dead at the start"
        assert out.value[c] > data_best[c], (c, out.value[c], data_best[c])
        assert out.value[c] > 1.5 * out.trace[c, 0]


def test_vmap_over_objectives_equals_one_at_a_time(channels_pixel):
    keys = jax.random.split(KEY, 6)
    for c in (1, 3):
        one = vis.render(F, vis.channel("relu_1", c), key=keys[c], shape=(1, 8, 8, 1),
                         steps=100, learning_rate=0.1, param=vis.Pixel(std=1.0))
        np.testing.assert_allclose(one.images, channels_pixel.images[c], atol=2e-5)
        np.testing.assert_allclose(one.value, channels_pixel.value[c], rtol=1e-4)


def test_fourier_has_less_high_frequency_energy_than_pixels():
    objs = [vis.channel("relu_1", c) for c in ALIVE]
    kw = dict(key=KEY, shape=(1, 16, 16, 1), steps=100, learning_rate=0.05)
    pix = vis.render(F, objs, param=vis.Pixel(), **kw)
    fou = vis.render(F, objs, param=vis.Fourier(), **kw)
    # Similar objective values (Fourier at least 80 % of pixels' on every channel) ...
    assert np.all(np.asarray(fou.value) >= 0.8 * np.asarray(pix.value))
    # ... with clearly less high-frequency energy.
    hf_pix = _high_freq_fraction(pix.images[:, 0])
    hf_fou = _high_freq_fraction(fou.images[:, 0])
    assert np.all(hf_fou < hf_pix)
    assert hf_fou.mean() < 0.75 * hf_pix.mean()


def test_diversity_lowers_pairwise_similarity():
    sims = []
    for w in (0.0, 5.0):
        obj = vis.channel("relu_1", 2) + w * vis.diversity("relu_1")
        out = vis.render(F, obj, key=KEY, shape=(4, 8, 8, 1), steps=100,
                         param=vis.Pixel(std=0.5))
        _, acts = jp.capture(F, "relu_1")(out.images)
        sims.append(float(vis.mean_pairwise_similarity(acts["relu_1"])))
    assert sims[0] > 0.95
    assert sims[1] < sims[0] - 0.05


def test_gaussian_prior_pulls_towards_the_data():
    data = jnp.asarray(digits_images(500))
    prior = vis.gaussian_prior(data, weight=0.05)
    off = dataclasses.replace(prior, weight=0.0)  # same structure: one compile for both
    kw = dict(key=KEY, shape=(1, 8, 8, 1), steps=60, learning_rate=0.1)
    free = vis.render(F, vis.class_logit(3), regularizers=(off,), **kw)
    expert = vis.render(F, vis.class_logit(3), regularizers=(prior,), **kw)
    # The prior's penalty (minus log density up to a constant) drops, the logit stays up.
    assert float(prior(expert.images)[0]) < 0.5 * float(prior(free.images)[0])
    assert float(expert.value) > float(expert.trace[0])


def test_user_log_density_pulls_towards_its_mode():
    mode = jnp.asarray(digits_images(1))
    prior = vis.LogDensity(lambda x: -jnp.sum((x - mode) ** 2, axis=(1, 2, 3)), weight=1.0)
    off = dataclasses.replace(prior, weight=0.0)
    kw = dict(key=KEY, shape=(1, 8, 8, 1), steps=60, learning_rate=0.1)
    free = vis.render(F, vis.class_logit(3), regularizers=(off,), **kw)
    expert = vis.render(F, vis.class_logit(3), regularizers=(prior,), **kw)
    dist = lambda r: float(jnp.sum((r.images[0] - mode) ** 2))
    assert dist(expert) < 0.5 * dist(free)


def test_code_space_stays_in_the_generators_range():
    # A generator that can only draw vertical stripes: image[y, x] = sigmoid(z[x]).
    gen = lambda z: jnp.broadcast_to(jax.nn.sigmoid(z)[:, None, :, None], (z.shape[0], 8, 8, 1))
    out = vis.render(F, vis.channel("relu_1", 3), key=KEY, shape=(1, 8, 8, 1), steps=60,
                     param=vis.CodeSpace(gen, (8,)), learning_rate=0.1)
    assert out.params.shape == (1, 8)
    np.testing.assert_allclose(out.images, out.images[:, :1].repeat(8, axis=1), atol=1e-6)
    assert float(out.value) > float(out.trace[0])


def test_transforms_and_regularizers_run_and_second_call_does_not_retrace():
    objs = [vis.channel("relu_1", c) for c in ALIVE]
    kw = dict(key=KEY, shape=(2, 8, 8, 1), steps=20,
              transforms=(vis.Jitter(1), vis.Scale(), vis.Rotate()),
              regularizers=(vis.L2(0.01), vis.TotalVariation(0.01), vis.Blur(0.1)))
    out = vis.render(F, objs, **kw)
    assert np.all(np.isfinite(out.images)) and np.all(np.isfinite(out.trace))
    with jax.log_compiles(True):
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("jax").addHandler(handler)
        try:
            vis.render(F, [vis.channel("relu_1", c) for c in ALIVE], **kw)
        finally:
            logging.getLogger("jax").removeHandler(handler)
    assert not [r for r in records if "_render" in r.getMessage()]


def test_inside_a_user_jit():
    run = jax.jit(lambda k, c: vis.render(F, vis.channel("relu_1", c), key=k,
                                          shape=(1, 8, 8, 1), steps=100, learning_rate=0.1,
                                          param=vis.Pixel(std=1.0)).images)
    keys = jax.random.split(KEY, 6)
    direct = vis.render(F, vis.channel("relu_1", 3), key=keys[3], shape=(1, 8, 8, 1),
                        steps=100, learning_rate=0.1, param=vis.Pixel(std=1.0))
    np.testing.assert_allclose(run(keys[3], 3), direct.images, atol=2e-5)


def test_errors():
    ok = dict(key=KEY, shape=(1, 8, 8, 1), steps=5)
    with pytest.raises(ValueError, match="channel index out of range"):
        vis.render(F, vis.channel("relu_1", 6), **ok)
    with pytest.raises(ValueError, match="diversity"):
        vis.render(F, vis.channel("relu_1", 1) + vis.diversity("relu_1"), **ok)
    with pytest.raises(ValueError, match="steps"):
        vis.render(F, vis.channel("relu_1", 1), key=KEY, shape=(1, 8, 8, 1), steps=0)
    with pytest.raises(ValueError, match="shape"):
        vis.render(F, vis.channel("relu_1", 1), key=KEY, shape=(8,), steps=5)
    with pytest.raises(ValueError, match="share one structure"):
        vis.render(F, [vis.channel("relu_1", 1), vis.layer("relu_1")], **ok)
    with pytest.raises(TypeError, match="objective"):
        vis.render(F, "relu_1", **ok)
    with pytest.raises(ValueError, match="relu_1"):
        vis.render(F, vis.channel("relu_7", 1), **ok)  # unknown site: the kernel names matches
    with pytest.raises(ValueError, match="direction vector"):
        vis.render(F, vis.direction("relu_1", jnp.ones(5)), **ok)


def test_a_class_the_model_does_not_have_is_an_error():
    # JAX clamps an out-of-range index: class 12 of this 10-class model would render class 9.
    ok = dict(key=KEY, shape=(1, 8, 8, 1), steps=5)
    for obj in (vis.class_logit(12), vis.class_probability(10), vis.class_logit(-1),
                vis.channel("relu_1", 1) + 0.5 * vis.class_logit(10)):
        with pytest.raises(ValueError, match="model has 10 classes"):
            vis.render(F, obj, **ok)
    with pytest.raises(ValueError, match=r"got \[0, 12\]"):
        vis.render(F, [vis.class_logit(0), vis.class_logit(12)], **ok)
    assert vis.render(F, vis.class_logit(9), **ok).images.shape == (1, 8, 8, 1)


def test_a_shape_the_model_cannot_take_is_named():
    w = jnp.ones((8 * 8 * 1, 3))
    flat = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731 -- takes 8x8 images only
    for obj in (vis.class_logit(1), vis.layer("relu")):
        with pytest.raises(ValueError, match=r"shape=\(1, 4, 4, 1\)") as info:
            vis.render(flat, obj, key=KEY, shape=(1, 4, 4, 1), steps=2)
        causes, err = [], info.value.__cause__
        while err is not None:  # the model's own error is kept (maybe wrapped by the kernel)
            causes.append(err)
            err = err.__cause__
        assert any(isinstance(e, TypeError) for e in causes), causes


def test_a_colour_matrix_of_the_wrong_size_is_named():
    for param in (vis.Fourier(colour=jnp.eye(2)), vis.Pixel(colour=jnp.eye(3))):
        with pytest.raises(ValueError, match=r"colour must be a \(c, c\) matrix .* c = 1"):
            vis.render(F, vis.class_logit(1), key=KEY, shape=(1, 8, 8, 1), steps=2, param=param)


def test_a_list_of_objectives_without_array_fields_renders():
    # layer / diversity terms have no leaves: the number of objectives used to be read from
    # the first leaf (IndexError).
    objs = [vis.layer("relu_1") + vis.diversity("relu")] * 2
    out = vis.render(F, objs, key=KEY, shape=(2, 8, 8, 1), steps=20)
    assert out.images.shape == (2, 2, 8, 8, 1) and out.value.shape == (2,)
    keys = jax.random.split(KEY, 2)
    one = vis.render(F, objs[1], key=keys[1], shape=(2, 8, 8, 1), steps=20)
    np.testing.assert_allclose(one.value, out.value[1], rtol=1e-4)


def test_an_objective_on_a_glob_or_unknown_site_names_the_sites():
    with pytest.raises(ValueError, match=r"'relu\*' is a pattern.*\['relu', 'relu_1'\]"):
        vis.render(F, vis.channel("relu*", 1), key=KEY, shape=(1, 8, 8, 1), steps=2)
    with pytest.raises(ValueError, match="Unknown objective site 'relu_2'.*Did you mean"):
        vis.render(F, vis.channel("relu_2", 1), key=KEY, shape=(1, 8, 8, 1), steps=2)
