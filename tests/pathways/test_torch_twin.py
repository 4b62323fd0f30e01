"""A PyTorch twin of the authors' procedure (float64, autograd, NumPy percentile on the host).

Scores, masks and pathway gradients of jaxplain must agree with it on the test networks;
masks up to units that sit at ``tau`` within float rounding (the spec's pitfall 8).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import pathways as pw
from tests.pathways import _models

torch = pytest.importorskip("torch")


def _t(a):
    return torch.tensor(np.asarray(a, np.float64))


def _torch_forward(kind, params):
    """``forward(x, masks, record) -> logits``; post-ReLU values (masked) appended to ``record``."""

    def relu(z, k, masks, record):
        a = torch.relu(z) * (1.0 if masks is None else masks[k])
        record.append(a)
        return a

    if kind == "mlp":
        ps = [(_t(w), _t(b)) for w, b in params]

        def forward(x, masks=None, record=None):
            record = [] if record is None else record
            h = x
            for k, (w, b) in enumerate(ps[:-1]):
                h = relu(h @ w + b, k, masks, record)
            return h @ ps[-1][0] + ps[-1][1]

        return forward

    w1, b1 = _t(params["w1"]).permute(3, 2, 0, 1), _t(params["b1"])
    w2, w3 = _t(params["w2"]).permute(3, 2, 0, 1), _t(params["w3"])

    def forward(x, masks=None, record=None):  # x: NCHW
        record = [] if record is None else record
        h1 = relu(torch.nn.functional.conv2d(x, w1, b1, padding=1), 0, masks, record)
        z2 = torch.nn.functional.conv2d(h1, w2, padding=1)
        h2 = relu(z2 + h1 if kind == "resnet" else z2, 1, masks, record)
        pooled = torch.nn.functional.avg_pool2d(h2, 2)
        return pooled.permute(0, 2, 3, 1).reshape(len(x), -1) @ w3  # flatten as NHWC

    return forward


def _torch_pathway(forward, x, keep):
    """Scores, masks and pathway gradient, the authors' way (per-example percentile on the host)."""
    acts = []
    y = forward(x.clone().requires_grad_(True), None, acts)  # so the activations carry grads
    label = y.argmax(1)
    for a in acts:
        a.retain_grad()
    y.gather(1, label[:, None]).sum().backward()
    scores = [(a * a.grad).abs().detach().numpy() for a in acts]
    masks = [np.zeros(s.shape, bool) for s in scores]
    for b in range(len(x)):
        tau = np.percentile(np.concatenate([s[b].ravel() for s in scores]), 100 * (1 - keep))
        for m, s in zip(masks, scores):
            m[b] = s[b] > tau
    xr = x.clone().requires_grad_(True)
    forward(xr, [torch.tensor(m, dtype=torch.float64) for m in masks]).gather(1, label[:, None]).sum().backward()
    return scores, masks, xr.grad.numpy(), label.numpy()


def _nhwc(a):
    return np.moveaxis(a, 1, -1) if a.ndim == 4 else a


@pytest.mark.parametrize("kind,seed", [("mlp", 0), ("mlp", 3), ("cnn", 1), ("resnet", 2)])
def test_agrees_with_a_torch_twin(kind, seed):
    f, _, x = _models.model(kind, seed)
    kp = jax.random.split(jax.random.key(seed))[0]
    params = _models.mlp_params(kp) if kind == "mlp" else _models.cnn_params(kp)
    xt = _t(x) if kind == "mlp" else _t(x).permute(0, 3, 1, 2)
    keep = 0.2
    scores, masks, grad, label = _torch_pathway(_torch_forward(kind, params), xt, keep)
    names = jp.core.relu_sites(f, x)
    t = jnp.argmax(f(x), -1)
    np.testing.assert_array_equal(np.asarray(t), label)
    ours = pw.contributions(f, x, t)
    for n, s in zip(names, scores):
        np.testing.assert_allclose(ours[n], _nhwc(s), rtol=1e-4, atol=1e-6)
    sel = pw.select(f, x, t, keep=keep)
    total = sum(m.size for m in masks)
    flips = sum(int((np.asarray(sel[n]) != _nhwc(m)).sum()) for n, m in zip(names, masks))
    assert flips <= max(1, total // 1000), flips
    # The pathway gradient with the twin's own masks equals the twin's, whatever unit flipped.
    theirs = {n: jnp.asarray(_nhwc(m)) for n, m in zip(names, masks)}
    np.testing.assert_allclose(pw.masked_gradient(f, x, t, theirs), _nhwc(grad), rtol=1e-4, atol=1e-6)
    if flips == 0:
        np.testing.assert_allclose(pw.pathway_gradient(f, x, t, keep=keep), _nhwc(grad), rtol=1e-4, atol=1e-6)
