"""A ReLU in any spelling (jnp.clip(h, 0), h * (h > 0), a max with a cast zero) is the ReLU
that guided backprop, deconvnet and DeepLIFT act at, as Captum's are at the twin's nn.ReLU;
jnp.clip(h, 0, 6) is a relu6; and a model with no ReLU at all gets a warning from guided
backprop and deconvnet, which would return its plain gradient."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

_RNG = np.random.default_rng(0)
W1, B1 = _RNG.normal(size=(6, 10)).astype(np.float32), _RNG.normal(0, 0.3, 10).astype(np.float32)
W2, B2 = _RNG.normal(0, 0.4, (10, 8)).astype(np.float32), _RNG.normal(0, 0.3, 8).astype(np.float32)
W3 = _RNG.normal(0, 0.4, (8, 3)).astype(np.float32)
X = _RNG.normal(size=(4, 6)).astype(np.float32)
BASE = (0.5 * _RNG.normal(size=X.shape)).astype(np.float32)
T = np.array([0, 1, 2, 0])

SPELLINGS = {
    "clip(h, 0.0)": lambda h: jnp.clip(h, 0.0),
    "clip(h, 0)": lambda h: jnp.clip(h, 0),
    "clip(h, 0.0, None)": lambda h: jnp.clip(h, 0.0, None),
    "h.clip(0)": lambda h: h.clip(0),
    "h * (h > 0)": lambda h: h * (h > 0),
    "(h >= 0) * h": lambda h: (h >= 0) * h,
    "h * (0 < h)": lambda h: h * (0 < h),
    "maximum(h, zeros_like(h))": lambda h: jnp.maximum(h, jnp.zeros_like(h)),
}


def _net(act):
    w1, b1, w2, b2, w3 = (jnp.asarray(a) for a in (W1, B1, W2, B2, W3))
    return lambda v: act(act(v @ w1 + b1) @ w2 + b2) @ w3


def _torch_net(torch):
    def linear(w, b=None):
        layer = torch.nn.Linear(*w.shape, bias=b is not None)
        layer.weight.data = torch.tensor(w.T.copy())
        if b is not None:
            layer.bias.data = torch.tensor(b)
        return layer

    return torch.nn.Sequential(linear(W1, B1), torch.nn.ReLU(), linear(W2, B2),
                               torch.nn.ReLU(), linear(W3)).eval()


@pytest.fixture(scope="module")
def captum():
    """Captum's GuidedBackprop, Deconvolution and DeepLift on the twin with nn.ReLU."""
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    x, t = torch.tensor(X), torch.tensor(T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "guided_backprop": captum_attr.GuidedBackprop(_torch_net(torch)).attribute(x, target=t),
            "deconvnet": captum_attr.Deconvolution(_torch_net(torch)).attribute(x, target=t),
            "deeplift": captum_attr.DeepLift(_torch_net(torch)).attribute(
                x, target=t, baselines=torch.tensor(BASE)),
        }


def _ours(method, f):
    if method == "deeplift":
        return A.deeplift(f, jnp.asarray(X), jnp.asarray(T), baseline=jnp.asarray(BASE))
    return getattr(A, method)(f, jnp.asarray(X), jnp.asarray(T))


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "deeplift"])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_every_relu_spelling_is_captums_relu(spelling, method, captum):
    """Before: jnp.clip(h, 0) and h * (h > 0) were no ReLU, so guided backprop returned the
    plain gradient (max relative error 0.39 against Captum), deconvnet was off by 1.23 and
    DeepLIFT by 1.81, with no warning from the first two."""
    f = _net(SPELLINGS[spelling])
    np.testing.assert_allclose(f(X), _net(jax.nn.relu)(X), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no ReLU" warning, no unruled nonlinearity
        ours = _ours(method, f)
    ref = captum[method].detach().numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_clip_to_six_is_relu6():
    """jnp.clip(h, 0, 6) (and minimum(maximum(h, 0), 6)) is one relu6 node: DeepLIFT equals
    its value for jax.nn.relu6 and sums to the gap, on inputs that saturate the 6; before it
    warned of the clip's max and min and missed the gap."""
    x, b = 4 * jnp.asarray(X), jnp.asarray(BASE)
    want = A.deeplift(_net(jax.nn.relu6), x, 0, baseline=b)
    for act in (lambda h: jnp.clip(h, 0, 6), lambda h: jnp.minimum(jnp.maximum(h, 0.0), 6.0)):
        f = _net(act)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            a = A.deeplift(f, x, 0, baseline=b)
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.sum(1), f(x)[:, 0] - f(b)[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act, found", [
    (jnp.tanh, "'tanh'"), (jax.nn.softplus, "'softplus'"),
    (lambda h: jnp.clip(h, 0.5), "'max'"),            # a bound that is no zero: no ReLU
    (lambda h: h * (h > 0.5), "no activation"),       # a mask at 0.5: no ReLU
])
@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_a_model_without_relu_warns_once_naming_what_it_found(act, found, method):
    f = _net(act)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = getattr(A, method)(f, jnp.asarray(X), jnp.asarray(T))
    said = [str(w.message) for w in caught if "has no ReLU" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(f"{method}:") and found in said[0], said
    grad = jax.grad(lambda v: f(v)[jnp.arange(len(T)), T].sum())(jnp.asarray(X))
    np.testing.assert_allclose(out, grad, rtol=1e-5, atol=1e-6)


def test_guided_grad_cam_without_relu_warns_once():
    """guided_grad_cam multiplies guided backprop, which a model without ReLU turns into its
    plain gradient: it warns as guided_backprop does."""
    k = jnp.asarray(_RNG.normal(size=(3, 3, 1, 4)).astype(np.float32))
    head = jnp.asarray(_RNG.normal(size=(4, 3)).astype(np.float32))

    def f(v):
        h = jnp.tanh(jax.lax.conv_general_dilated(v, k, (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC")))
        with jax.named_scope("features"):
            h = h * 1.0
        return h.mean((1, 2)) @ head

    x = jnp.asarray(_RNG.normal(size=(2, 5, 5, 1)).astype(np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        A.guided_grad_cam(f, x, 0, site="features")
    said = [str(w.message) for w in caught if "has no ReLU" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("guided_grad_cam:"), said
