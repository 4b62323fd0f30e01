"""Spearman / SSIM against references, and the parameter / label randomization checks."""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxplain import as_function, metrics
from tests.core.test_channels import B1, B2, D, W1, W2, XF, EqxNet, X
from tests.metrics._reference import np_ssim


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.int32, (2, 2, 9), elements=st.integers(-3, 3)))
def test_spearman_matches_scipy_with_ties(v):
    a, b = v[0].astype(np.float32), v[1].astype(np.float32)
    got = np.asarray(metrics.spearman(jnp.asarray(a), jnp.asarray(b)))
    for i in range(2):
        if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
            assert got[i] == 0.0                       # scipy: NaN; ours: 0, never NaN
        else:
            assert got[i] == pytest.approx(scipy.stats.spearmanr(a[i], b[i])[0], abs=1e-5)


def test_ssim_matches_the_scikit_image_convention():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    b = (a + rng.normal(0, 0.3, a.shape)).astype(np.float32)
    for win in (3, 5, 7):
        got = np.asarray(metrics.ssim(jnp.asarray(a), jnp.asarray(b), win_size=win))
        np.testing.assert_allclose(got, [np_ssim(a[i], b[i], win, 2.0) for i in range(3)],
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics.ssim(jnp.asarray(a), jnp.asarray(a)), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="win_size must be odd"):
        metrics.ssim(jnp.asarray(a), jnp.asarray(b), win_size=4)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="conv2")(x))
        x = x.reshape(len(x), -1)
        x = nn.relu(nn.Dense(16, name="fc")(x))
        return nn.Dense(4, name="head")(x)


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)


def _edges(f, x, t):
    """An input-only 'explanation': horizontal + vertical differences; ignores the model."""
    return jnp.abs(x - jnp.roll(x, 1, axis=1)) + jnp.abs(x - jnp.roll(x, 1, axis=2))


@pytest.fixture(scope="module")
def net():
    x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))
    return _Net(), _Net().init(jax.random.key(1), x), x


def test_full_randomization_destroys_gradient_but_not_an_edge_detector(net):
    model, variables, x = net
    key = jax.random.key(2)
    grad = metrics.randomization_check(model, variables, x, _grad, key=key)
    edges = metrics.randomization_check(model, variables, x, _edges, key=key)
    assert grad.states == ("head", "fc", "conv2", "conv1")
    assert grad.spearman.shape == (4, 6)
    np.testing.assert_allclose(edges.spearman, 1.0, atol=1e-6)
    np.testing.assert_allclose(edges.ssim, 1.0, atol=1e-6)
    assert float(jnp.abs(grad.spearman[-1]).mean()) < 0.4
    assert float(grad.ssim[-1].mean()) < 0.5
    assert float(grad.spearman_abs[-1].mean()) < float(edges.spearman_abs[-1].mean()) - 0.4


def test_independent_state_of_the_top_layer_equals_the_first_cascading_state(net):
    model, variables, x = net
    key = jax.random.key(3)
    cas = metrics.randomization_check(model, variables, x, _grad, key=key)
    ind = metrics.randomization_check(model, variables, x, _grad, key=key, mode="independent")
    np.testing.assert_allclose(ind.spearman[0], cas.spearman[0], rtol=1e-6)
    # A layer re-drawn alone changes the explanation, but less than all layers at once.
    assert float(ind.spearman[-1].mean()) > float(cas.spearman[-1].mean())
    # a restored checkpoint may list the params in another order: the call order still wins
    shuffled = {"params": dict(reversed(list(variables["params"].items())))}
    again = metrics.randomization_check(model, shuffled, x, _grad, key=key)
    assert again.states == cas.states == ("head", "fc", "conv2", "conv1")
    gauss = metrics.randomization_check(model, variables, x, _grad, key=key, stdev=0.1,
                                        layers=("conv1", "head"))
    assert gauss.states == ("head", "conv1") and bool(jnp.isfinite(gauss.ssim).all())


def test_errors(net):
    model, variables, x = net
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="layers must be names from"):
        metrics.randomization_check(model, variables, x, _grad, key=key, layers=("conv9",))
    with pytest.raises(ValueError, match="mode must be one of"):
        metrics.randomization_check(model, variables, x, _grad, key=key, mode="all")
    with pytest.raises(ValueError, match="x must have a batch axis and at least one feature"):
        metrics.randomization_check(model, variables, x[:, 0, 0, 0], _grad, key=key)
    with pytest.raises(TypeError, match="apply_kwargs must be a dict"):
        metrics.randomization_check(model, variables, x, _grad, key=key, apply_kwargs=("train",))
    with pytest.raises(ValueError, match="'params' collection"):
        metrics.randomization_check(model, {"state": {}}, x, _grad, key=key)


class _Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x.reshape(len(x), -1))))


def test_label_randomization_changes_gradients_not_edges():
    from jaxplain.data import Digits, train

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 400).astype(np.int32)
    xs = rng.uniform(0, 0.3, (400, 8, 8, 1)).astype(np.float32)
    xs[np.arange(400), y // 8, y % 8, 0] = 1.0          # a planted, learnable label pixel
    digits = Digits(*(jnp.asarray(a) for a in (xs[:300], y[:300], xs[300:], y[300:])))
    model = _Small()
    variables, _ = train(jax.random.key(0), digits, model, epochs=8, progress=False)
    x = digits.x_test[:8]
    kw = dict(key=jax.random.key(1), digits=digits, epochs=8)
    grad = metrics.data_randomization_check(model, variables, x, _grad, **kw)
    edges = metrics.data_randomization_check(model, variables, x, _edges, **kw)
    assert grad.states == ("shuffled labels",)
    np.testing.assert_allclose(edges.spearman, 1.0, atol=1e-6)
    assert float(grad.spearman_abs.mean()) < 0.6


# --- Equinox and NNX models -------------------------------------------------------------------


class _LinenTwin(nn.Module):
    """The NHWC Linen twin of ``EqxNet`` (tests/core/test_channels.py)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), padding="SAME", name="conv1")(x))
        h = nn.relu(nn.Conv(4, (3, 3), padding="SAME", name="conv2")(h) + h)
        return h.mean(axis=(1, 2)) @ D


def _linen_variables(w1, b1, w2, b2):
    return {"params": {"conv1": {"kernel": w1, "bias": b1}, "conv2": {"kernel": w2, "bias": b2}}}


def _eqx_twin(w1, b1, w2, b2):
    """``EqxNet`` with the NHWC weights (HWIO kernels) moved to its OIHW layout."""
    
    return eqx.tree_at(lambda m: (m.conv1.weight, m.conv1.bias, m.conv2.weight, m.conv2.bias),
                       EqxNet(), (w1.transpose(3, 2, 0, 1), b1[:, None, None],
                                  w2.transpose(3, 2, 0, 1), b2[:, None, None]))


def _nnx_twin(w1, b1, w2, b2):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.conv1 = nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
            self.conv2 = nnx.Conv(4, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
            self.conv1.kernel[...], self.conv1.bias[...] = w1, b1
            self.conv2.kernel[...], self.conv2.bias[...] = w2, b2

        def __call__(self, x):
            h = nnx.relu(self.conv1(x))
            h = nnx.relu(self.conv2(h) + h)
            return h.mean(axis=(1, 2)) @ D

    return Net()


def _new_weights(seed):
    k = jax.random.split(jax.random.key(seed), 4)
    return (jax.random.normal(k[0], W1.shape) * 0.5, jax.random.normal(k[1], B1.shape) * 0.1,
            jax.random.normal(k[2], W2.shape) * 0.3, jax.random.normal(k[3], B2.shape) * 0.1)


def _assert_same_result(got, want):
    assert got.states == want.states
    for field in ("spearman", "spearman_abs", "ssim"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-4,
                                   atol=1e-4, err_msg=field)


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_an_equinox_cnn_reading_nchw_scores_as_its_nhwc_linen_twin(mode):
    from jaxplain.attribution import gradient_x_input

    ours, new = (W1, B1, W2, B2), _new_weights(7)
    np.testing.assert_allclose(as_function(_eqx_twin(*ours))(XF), _LinenTwin().apply(
        _linen_variables(*ours), X), rtol=1e-5, atol=1e-5)
    kw = dict(key=jax.random.key(0), mode=mode)
    for method in (_grad, gradient_x_input):
        want = metrics.randomization_check(_LinenTwin(), _linen_variables(*ours), X, method,
                                           fresh=_linen_variables(*new), **kw)
        got = metrics.randomization_check(_eqx_twin(*ours), None, XF, method,
                                          fresh=_eqx_twin(*new), **kw)
        assert want.states == ("conv2", "conv1") and want.ssim.shape == (2, 5)
        _assert_same_result(got, want)
        assert float(want.ssim.min()) < 0.9              # the re-drawn layers do change the maps
    # an input-only map of the NCHW images: unchanged whatever the weights (SSIM 1)
    edges = metrics.randomization_check(_eqx_twin(*ours), None, XF, _edges, stdev=0.1, win_size=7,
                                        **kw)
    np.testing.assert_allclose(edges.ssim, 1.0, atol=1e-6)


def test_an_nnx_model_scores_as_its_linen_twin():
    ours, new = (W1, B1, W2, B2), _new_weights(8)
    kw = dict(key=jax.random.key(0))
    want = metrics.randomization_check(_LinenTwin(), _linen_variables(*ours), X, _grad,
                                       fresh=_linen_variables(*new), **kw)
    got = metrics.randomization_check(_nnx_twin(*ours), None, X, _grad, fresh=_nnx_twin(*new),
                                      **kw)
    _assert_same_result(got, want)
    gauss = metrics.randomization_check(_nnx_twin(*ours), None, X, _grad, stdev=0.1,
                                        layers=("conv2/kernel",), **kw)
    assert gauss.states == ("conv2/kernel",) and float(gauss.ssim.mean()) < 0.9


def _equinox_linear(key):
    """A linear model of (4, 4, 1) images whose fields are declared out of call order:
    logits = head(body[1](body[0](x)))."""
    
    class Linear(eqx.Module):
        head: eqx.nn.Linear
        body: tuple

        def __call__(self, x):
            h = x.reshape(-1)
            for layer in self.body:
                h = layer(h)
            return self.head(h)

    k = jax.random.split(key, 3)
    return Linear(eqx.nn.Linear(5, 3, key=k[0]),
                  (eqx.nn.Linear(16, 6, key=k[1]), eqx.nn.Linear(6, 5, key=k[2])))


def _closed_form_similarity(model, new, states, target):
    """Spearman (SciPy) and SSIM (NumPy) of the gradient maps of the linear model, whose
    gradient is the row ``target`` of ``W_head W_body1 W_body0``, whatever the input and the
    biases; ``states``: for each state, the layers taken from ``new``."""
    def grad_map(m):
        w = np.asarray(m.head.weight @ m.body[1].weight @ m.body[0].weight, np.float64)
        g = w[np.asarray(target)].reshape(-1, 4, 4)
        return g / np.abs(g).max(axis=(1, 2), keepdims=True)

    m0 = grad_map(model)
    out = []
    for swapped in states:
        m = grad_map(type(model)(
            new.head if "head" in swapped else model.head,
            tuple(new.body[i] if f"body/{i}" in swapped else model.body[i] for i in (0, 1))))
        out.append([(scipy.stats.spearmanr(m0[b].ravel(), m[b].ravel())[0],
                     np_ssim(m0[b], m[b], 3, 2.0)) for b in range(len(m0))])
    return np.asarray(out)


def test_an_equinox_linear_model_behaves_as_the_closed_form():
    model, new = _equinox_linear(jax.random.key(0)), _equinox_linear(jax.random.key(1))
    x = jax.random.uniform(jax.random.key(2), (4, 4, 4, 1))
    t = jnp.asarray([0, 1, 2, 0])
    kw = dict(key=jax.random.key(3), target=t, fresh=new, win_size=3)
    cas = metrics.randomization_check(model, None, x, _grad, **kw)
    assert cas.states == ("head", "body/1", "body/0")
    want = _closed_form_similarity(model, new, [{"head"}, {"head", "body/1"},
                                                {"head", "body/1", "body/0"}], t)
    np.testing.assert_allclose(cas.spearman, want[..., 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cas.ssim, want[..., 1], rtol=1e-4, atol=1e-4)
    ind = metrics.randomization_check(model, None, x, _grad, mode="independent", **kw)
    want = _closed_form_similarity(model, new, [{"head"}, {"body/1"}, {"body/0"}], t)
    np.testing.assert_allclose(ind.spearman, want[..., 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ind.ssim, want[..., 1], rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(want[..., 0]).max()) < 0.99      # every re-drawn layer matters
    # the gradient of a linear model does not depend on its biases: re-drawn, the map stays
    biases = metrics.randomization_check(model, None, x, _grad, layers=("body/0/bias", "head/bias"),
                                         **kw)
    assert biases.states == ("head/bias", "body/0/bias")
    np.testing.assert_allclose(biases.spearman, 1.0, atol=1e-5)
    np.testing.assert_allclose(biases.ssim, 1.0, atol=1e-5)
    # Gaussian weights: deterministic in the key; independent's top state = cascading's first
    kw = dict(key=jax.random.key(3), target=t, stdev=0.1, win_size=3)
    g1 = metrics.randomization_check(model, None, x, _grad, **kw)
    g2 = metrics.randomization_check(model, None, x, _grad, mode="independent", **kw)
    np.testing.assert_array_equal(g1.spearman[0], g2.spearman[0])
    assert float(jnp.abs(g1.spearman[-1]).mean()) < 0.9
    edges = metrics.randomization_check(model, None, x, _edges, **kw)
    np.testing.assert_allclose(edges.ssim, 1.0, atol=1e-6)
    np.testing.assert_allclose(edges.spearman, 1.0, atol=1e-6)


def test_errors_for_other_model_kinds():
    model = _eqx_twin(W1, B1, W2, B2)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="plain function has no weights"):
        metrics.randomization_check(as_function(model), None, XF, _grad, key=key, stdev=0.1)
    with pytest.raises(ValueError, match="variables must be None for an Equinox module"):
        metrics.randomization_check(model, {"params": {}}, XF, _grad, key=key, stdev=0.1)
    with pytest.raises(ValueError, match="fresh or stdev is needed for an Equinox module"):
        metrics.randomization_check(model, None, XF, _grad, key=key)
    with pytest.raises(ValueError, match="not both"):
        metrics.randomization_check(model, None, XF, _grad, key=key, stdev=0.1, fresh=model)
    with pytest.raises(ValueError, match=r"layers must be names from the fields of an Equinox "
                                         r"module \('conv1', 'conv2'\).*unknown: \('conv3',\)"):
        metrics.randomization_check(model, None, XF, _grad, key=key, stdev=0.1,
                                    layers=("conv1", "conv3"))
    with pytest.raises(TypeError, match="fresh must be an Equinox module"):
        metrics.randomization_check(model, None, XF, _grad, key=key,
                                    fresh=_nnx_twin(W1, B1, W2, B2))
    with pytest.raises(ValueError, match="fresh must have the architecture of model: its weight "
                                         "head/weight is missing"):
        metrics.randomization_check(_equinox_linear(key), None, X[:, :4, :4, :1], _grad, key=key,
                                    fresh=model, win_size=3)
    with pytest.raises(ValueError, match="win_size must be odd and at most 8"):  # H, W of NCHW
        metrics.randomization_check(model, None, XF, _grad, key=key, stdev=0.1, win_size=9)
    with pytest.raises(ValueError, match="attribution of method must have the shape of x"):
        metrics.randomization_check(model, None, XF, lambda f, x, t: x[..., :4], key=key,
                                    stdev=0.1)
    with pytest.raises(ValueError, match="no weights to randomize"):
        metrics.randomization_check(eqx.nn.Lambda(lambda x: x.mean((1, 2))), None, XF, _grad,
                                    key=key, stdev=0.1)
    with pytest.raises(TypeError, match="data_randomization_check retrains"):
        metrics.data_randomization_check(model, None, XF, _grad, key=key)


# --- state that is not a parameter, wrappers, vectors, the call's keyword arguments ---------


class _BnCNN(eqx.Module):
    conv: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)
        self.bn = eqx.nn.BatchNorm(4, axis_name="batch", mode="ema")
        self.head = eqx.nn.Linear(4 * 6 * 6, 3, key=k2)

    def __call__(self, x, state):
        h, state = self.bn(self.conv(x), state)
        return self.head(jax.nn.relu(h).reshape(-1)), state


class _Classifier(eqx.Module):
    """The wrapper docs/attribution.md recommends: the CNN and its State, logits only."""

    model: _BnCNN
    state: eqx.nn.State

    def __call__(self, x):
        return self.model(x, self.state)[0]


def _bn_classifier(seed, trained_stats=False):
    model, state = eqx.nn.make_with_state(_BnCNN)(jax.random.key(seed))
    if trained_stats:  # running statistics far from the initial (0, 1)
        state = state.set(model.bn.ema_state_index, (jnp.asarray([0.3, -0.2, 0.1, 0.5]),
                                                 jnp.asarray([2.0, 0.5, 3.0, 0.2])))
    return _Classifier(eqx.nn.inference_mode(model), state)


def _reference_scores(f0, fs, x, t, win=None):
    """Spearman (SciPy) and, with `win`, SSIM (NumPy) of the gradient maps of `fs` against
    those of `f0`: channels summed and scaled by max |.| for images, flattened otherwise."""
    def grad_map(f):
        g = np.asarray(_grad(f, x, t), np.float64)
        if win is None:
            return g.reshape(len(g), -1)
        g = g.sum(1)                                     # NCHW
        return g / np.abs(g).max(axis=(1, 2), keepdims=True)

    m0 = grad_map(f0)
    out = []
    for f in fs:
        m = grad_map(f)
        row = []
        for b in range(len(m0)):
            rho = scipy.stats.spearmanr(m0[b].ravel(), m[b].ravel())[0]
            rho_abs = scipy.stats.spearmanr(np.abs(m0[b]).ravel(), np.abs(m[b]).ravel())[0]
            row.append((rho, rho_abs) + ((np_ssim(m0[b], m[b], win, 2.0),) if win else ()))
        out.append(row)
    return np.asarray(out)


def test_an_equinox_batchnorm_wrapper_cascades_over_the_cnn_and_keeps_its_state():
    clf, fresh = _bn_classifier(0, trained_stats=True), _bn_classifier(1)
    x = jax.random.uniform(jax.random.key(2), (4, 1, 6, 6))
    t = jnp.asarray([0, 1, 2, 0])
    r = metrics.randomization_check(clf, None, x, _grad, key=jax.random.key(3), target=t,
                                    fresh=fresh, win_size=3)
    # the wrapper is looked through; the State is not a layer
    assert r.states == ("model/head", "model/bn", "model/conv")
    # each state = the CNN with its layers from `fresh`, the trained State kept (fresh's State
    # holds the initial statistics, which would give other maps)
    swapped = []
    for k in range(1, 4):
        names = ("head", "bn", "conv")[:k]
        model = eqx.tree_at(lambda m: [getattr(m.model, n) for n in names], clf,
                            [getattr(fresh.model, n) for n in names])
        swapped.append(as_function(model))
    want = _reference_scores(as_function(clf), swapped, x, t, win=3)
    np.testing.assert_allclose(r.spearman, want[..., 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.spearman_abs, want[..., 1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.ssim, want[..., 2], rtol=1e-4, atol=1e-4)
    # Gaussian weights: the running variance is not drawn, so the maps stay finite
    g = metrics.randomization_check(clf, None, x, _grad, key=jax.random.key(3), stdev=0.1,
                                    win_size=3)
    assert g.states == r.states
    assert bool(jnp.isfinite(g.ssim).all()) and float(jnp.abs(g.spearman).max()) > 0
    with pytest.raises(ValueError, match=r"layers must be names from the fields of an Equinox "
                                         r"module \('model/conv', 'model/bn', 'model/head'\)"):
        metrics.randomization_check(clf, None, x, _grad, key=jax.random.key(3), stdev=0.1,
                                    layers=("state",), win_size=3)
    # NNX's batch statistics are not weights either
    from flax import nnx

    class NnxBn(nnx.Module):
        def __init__(self):
            self.bn = nnx.BatchNorm(1, rngs=nnx.Rngs(0))
            self.head = nnx.Linear(36, 3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.head(self.bn(x).reshape(len(x), -1))

    with pytest.raises(ValueError, match=r"unknown: \('bn/mean',\)"):
        metrics.randomization_check(NnxBn(), None, x.transpose(0, 2, 3, 1), _grad,
                                    key=jax.random.key(3), stdev=0.1, layers=("bn/mean",),
                                    win_size=3)


def test_non_finite_maps_raise_naming_the_layer(net):
    model, variables, x = net
    # new weights with a NaN in `fc` only: the second cascading state breaks (the method is
    # traced once and compiled, so the map's NaN must come from the weights, not a call count)
    fresh = model.init(jax.random.key(5), x)
    fc = fresh["params"]["fc"]
    fc = {**fc, "kernel": fc["kernel"].at[0, 0].set(jnp.nan)}
    fresh = {"params": {**fresh["params"], "fc": fc}}
    with pytest.raises(ValueError, match=r"not finite \(NaN or inf\) with layer 'fc' re-drawn, "
                                         r"with every layer after it \(cascading state 2 of 4\)"):
        metrics.randomization_check(model, variables, x, _grad, key=jax.random.key(0),
                                    fresh=fresh)
    # weights so large that the randomized logits overflow
    clf = _bn_classifier(0)
    xf = jax.random.uniform(jax.random.key(2), (2, 1, 6, 6))
    with pytest.raises(ValueError, match="with layer 'model/bn' re-drawn.*outputs are not finite"):
        metrics.randomization_check(clf, None, xf, _grad, key=jax.random.key(1), stdev=1e30,
                                    win_size=3)


def _linear_mlp(seed):
    return eqx.nn.MLP(6, 3, 5, 2, activation=lambda h: h, key=jax.random.key(seed))


def test_an_equinox_mlp_on_vectors_behaves_as_the_closed_form():
    model, new = _linear_mlp(0), _linear_mlp(1)
    x = jax.random.normal(jax.random.key(2), (5, 6))
    t = jnp.asarray([0, 1, 2, 0, 1])
    kw = dict(key=jax.random.key(3), target=t, fresh=new)
    cas = metrics.randomization_check(model, None, x, _grad, **kw)
    ind = metrics.randomization_check(model, None, x, _grad, mode="independent", **kw)
    assert cas.states == ind.states == ("layers/2", "layers/1", "layers/0")
    assert cas.ssim is None and ind.ssim is None         # no 2-D maps, no SSIM

    def gradient_rows(layers):                           # the gradient: a row of W2 W1 W0
        w = np.eye(6)
        for layer in layers:
            w = np.asarray(layer.weight, np.float64) @ w
        return w[np.asarray(t)]

    g0 = gradient_rows(model.layers)
    for got, swaps in ((cas, [{2}, {1, 2}, {0, 1, 2}]), (ind, [{2}, {1}, {0}])):
        for row, swapped in enumerate(swaps):
            g = gradient_rows([new.layers[k] if k in swapped else model.layers[k]
                               for k in range(3)])
            want = [scipy.stats.spearmanr(g0[b], g[b])[0] for b in range(5)]
            want_abs = [scipy.stats.spearmanr(np.abs(g0[b]), np.abs(g[b]))[0] for b in range(5)]
            np.testing.assert_allclose(got.spearman[row], want, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(got.spearman_abs[row], want_abs, rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(cas.spearman[-1]).mean()) < 0.9
    # the result is a pytree without an SSIM leaf
    assert len(jax.tree.leaves(cas)) == 2


class _TrainFlag(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):                  # no default, as in Flax's examples
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
        x = nn.Dropout(0.5, deterministic=not train)(x.reshape(len(x), -1))
        return nn.Dense(3, name="head")(x)


def test_a_linen_model_with_a_required_train_flag_runs_with_apply_kwargs():
    model = _TrainFlag()
    x = jax.random.uniform(jax.random.key(0), (3, 6, 6, 2))
    variables = model.init(jax.random.key(1), x, train=False)
    variables = {**variables, "batch_stats": {"bn": {"mean": jnp.full((4,), 0.4),
                                                     "var": jnp.full((4,), 3.0)}}}
    key, t = jax.random.key(2), jnp.asarray([0, 1, 2])
    with pytest.raises(TypeError, match=r"missing 1 required.*'train'.*apply_kwargs="):
        metrics.randomization_check(model, variables, x, _grad, key=key, target=t)
    kw = dict(key=key, target=t, win_size=3, apply_kwargs={"train": False})
    r = metrics.randomization_check(model, variables, x, _grad, **kw)
    assert r.states == ("head", "bn", "conv")
    # the default fresh is model.init(first half of key, x[:1], train=False); batch_stats stay
    fresh = model.init(jax.random.split(key)[0], x[:1], train=False)["params"]
    fs = []
    for k in range(1, 4):
        params = dict(variables["params"])
        params.update({n: fresh[n] for n in ("head", "bn", "conv")[:k]})
        fs.append(as_function(model, {**variables, "params": params}, train=False))
    f0 = as_function(model, variables, train=False)
    nhwc = lambda f: lambda x: f(x.transpose(0, 2, 3, 1))  # noqa: E731 - NCHW reference maps
    want = _reference_scores(nhwc(f0), [nhwc(f) for f in fs], x.transpose(0, 3, 1, 2), t, win=3)
    np.testing.assert_allclose(r.spearman, want[..., 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.ssim, want[..., 2], rtol=1e-4, atol=1e-4)


def test_data_randomization_refuses_extra_collections_up_front(monkeypatch):
    import jaxplain.data

    model = _TrainFlag()
    x = jax.random.uniform(jax.random.key(0), (3, 6, 6, 2))
    variables = model.init(jax.random.key(1), x, train=False)
    monkeypatch.setattr(jaxplain.data, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TypeError, match=r"only variable collection is 'params', but the model's "
                                        r"variables also hold \('batch_stats',\)"):
        metrics.data_randomization_check(model, variables, x, _grad, key=jax.random.key(2),
                                         apply_kwargs={"train": False})


class _VectorFlag(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(16)(x)))
        return nn.Dense(4)(h)


def test_data_randomization_on_vectors_with_apply_kwargs():
    from jaxplain.data import Digits, train

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 700).astype(np.int32)
    xs = rng.normal(0, 0.3, (700, 8)).astype(np.float32)
    xs[np.arange(700), y] += 2.0                        # a planted, learnable feature
    digits = Digits(*(jnp.asarray(a) for a in (xs[:600], y[:600], xs[600:], y[600:])))
    model, kw = _VectorFlag(), dict(apply_kwargs={"train": False})
    variables, history = train(jax.random.key(0), digits, model, epochs=4, progress=False, **kw)
    assert history.test_accuracy[-1] > 0.9
    x = digits.x_test[:6]
    r = metrics.data_randomization_check(model, variables, x, _grad, key=jax.random.key(1),
                                         digits=digits, epochs=4, **kw)
    ident = metrics.data_randomization_check(model, variables, x, lambda f, x, t: x * x,
                                             key=jax.random.key(1), digits=digits, epochs=1, **kw)
    assert r.states == ("shuffled labels",) and r.ssim is None and r.spearman.shape == (1, 6)
    assert float(r.spearman.mean()) < 0.6
    np.testing.assert_allclose(ident.spearman, 1.0, atol=1e-6)


class _OwnCNN(nn.Module):
    classes: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("side, classes, passed, match", [
    (12, 4, False, r"inputs shaped \(12, 12, 1\).*the embedded 8x8 digits \(the default of "
                   r"digits=\)"),
    (8, 4, False, r"returns 4 logits but the labels of the embedded 8x8 digits \(the default "
                  r"of digits=\) go up to 9"),
    (12, 4, True, r"inputs shaped \(12, 12, 1\).*the images of the digits= data are shaped "
                  r"\(8, 8, 1\)"),
])
def test_data_randomization_refuses_data_the_model_cannot_train_on_up_front(
        monkeypatch, side, classes, passed, match):
    import jaxplain.data

    model = _OwnCNN(classes)
    x = jax.random.uniform(jax.random.key(0), (3, side, side, 1))
    variables = model.init(jax.random.key(1), x)
    kw = dict(digits=jaxplain.data.load_digits()) if passed else {}
    monkeypatch.setattr(jaxplain.data, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=match) as info:
        metrics.data_randomization_check(model, variables, x, _grad, key=jax.random.key(2), **kw)
    if not passed:
        assert "digits=data.Digits(x_train=..., y_train=..., x_test=..., y_test=...)" in str(
            info.value)


def test_data_randomization_refuses_digits_that_are_not_a_data_set():
    model = _OwnCNN(10)
    x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
    variables = model.init(jax.random.key(1), x)
    with pytest.raises(TypeError, match=r"digits must be your training data wrapped as "
                                        r"data\.Digits\(x_train=\.\.\."):
        metrics.data_randomization_check(model, variables, x, _grad, key=jax.random.key(2),
                                         digits=(x, jnp.zeros(3, jnp.int32)))


class _MapsItself(eqx.Module):
    """An Equinox model whose __call__ takes the batch and maps its MLP over it."""
    mlp: eqx.nn.MLP

    def __call__(self, x):
        return jax.vmap(self.mlp)(x)


def test_an_equinox_model_that_maps_itself_is_pointed_at_per_example_false():
    model, new = _MapsItself(_linear_mlp(0)), _MapsItself(_linear_mlp(1))
    x = jax.random.normal(jax.random.key(2), (5, 6))
    kw = dict(key=jax.random.key(3), target=0, fresh=new)
    with pytest.raises(ValueError, match=r"fails on one example.*runs on the whole batch.*"
                                         r"apply_kwargs=\{'per_example': False\}"):
        metrics.randomization_check(model, None, x, _grad, **kw)
    got = metrics.randomization_check(model, None, x, _grad, apply_kwargs={"per_example": False},
                                      **kw)
    want = metrics.randomization_check(model.mlp, None, x, _grad, **{**kw, "fresh": new.mlp})
    np.testing.assert_allclose(got.spearman, want.spearman, rtol=1e-6)
    with pytest.raises(ValueError, match="matmul"):      # fails on the batch too: as it was
        metrics.randomization_check(_MapsItself(eqx.nn.MLP(7, 3, 5, 2, key=jax.random.key(0))),
                                    None, x, _grad, **kw)
