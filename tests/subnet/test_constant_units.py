"""The dependency closure keeps an input-independent unit that the chain needs (a bias unit, or
one constant on the region), still removes constants the labels do not need, and reported KL
values are never negative."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _threshold
from jaxplain.subnet._objective import log_probs
from jaxplain.subnet._types import SubNetwork

H = 8


def _bias_net(constant="bias", harmless=False):
    """fc1[0] = x0 and fc1[5] = 1 (``"bias"``: zero weights, bias 1; ``"region"``:
    1 - relu(x1 - 5), 1 on the region x1 < 5 only); fc2[0] = relu(2 fc1[0] - fc1[5]),
    fc2[1] = relu(fc1[5] - 2 fc1[0]); the head compares them, so the label is x0 > 0.5 and
    needs the constant (``"none"``: fc2's own bias holds it, fc1[5] = 0). ``harmless`` adds
    fc1[7] = 1 -> fc2[2] = fc1[7], which shifts both logits alike."""
    w1 = np.zeros((2, H), np.float32)
    b1 = np.zeros(H, np.float32)
    w1[0, 0] = 1.0
    b1[5] = 1.0 if constant == "bias" else 0.0
    w2 = np.zeros((H, H), np.float32)
    b2 = np.zeros(H, np.float32)
    w2[0, 0], w2[0, 1] = 2.0, -2.0
    if constant == "none":
        b2[0], b2[1] = -1.0, 1.0
    else:
        w2[5, 0], w2[5, 1] = -1.0, 1.0
    head = np.zeros((H, 2), np.float32)
    head[0], head[1] = (4.0, -4.0), (-4.0, 4.0)
    if harmless:
        b1[7], w2[7, 2], head[2] = 1.0, 1.0, (3.0, 3.0)

    def f(x):
        with jax.named_scope("fc1"):
            h = x @ w1 + b1
            if constant == "region":
                h = h.at[:, 5].set(1.0 - jax.nn.relu(x[:, 1] - 5.0))
        with jax.named_scope("fc2"):
            h = jax.nn.relu(h) @ w2 + b2
        return jax.nn.relu(h) @ head

    x = jnp.asarray(np.random.default_rng(0).random((40, 2)), jnp.float32)
    return f, x


def _closed(f, x, kept):
    """The closure of one candidate keeping ``kept`` (``{site: units}``) at multiplier 1, as
    ``{site: kept units}``, and its region agreement."""
    mult = {n: jnp.zeros((1, H)).at[0, jnp.asarray(u)].set(1.0) for n, u in kept.items()}
    masks = _threshold.closure(f, mult, x, jax.random.key(0))
    closed = {n: jnp.where(masks[n], mult[n], 0.0) for n in mult}
    agree, kl = _threshold.evaluate(f, closed, x, log_probs(f(x)))
    return {n: np.flatnonzero(np.asarray(m[0])).tolist() for n, m in masks.items()}, float(agree[0])


def test_closure_keeps_a_bias_unit_the_chain_needs():
    for constant in ("bias", "region"):
        f, x = _bias_net(constant)
        chain = {"fc1": [0, 5], "fc2": [0, 1]}
        assert _closed(f, x, chain) == (chain, 1.0), constant
        # Every unit kept: the closure removes the ones that reach nothing, not the constant.
        assert _closed(f, x, {"fc1": list(range(H)), "fc2": list(range(H))}) == (chain, 1.0)


def test_closure_still_removes_constants_the_labels_do_not_need():
    # fc1[7] -> fc2[2] is input-independent, reaches the output, and moves no label.
    f, x = _bias_net("none", harmless=True)
    assert _closed(f, x, {"fc1": [0, 7], "fc2": [0, 1, 2]}) == ({"fc1": [0], "fc2": [0, 1]},
                                                                1.0)
    # With a constant the labels need, the constants are kept or removed together.
    f, x = _bias_net("region", harmless=True)
    assert _closed(f, x, {"fc1": [0, 5, 7], "fc2": [0, 1, 2]}) == (
        {"fc1": [0, 5, 7], "fc2": [0, 1, 2]}, 1.0)


def test_extract_keeps_the_chain_with_its_constant_and_reports_kl_at_least_zero():
    f, x = _bias_net("bias")
    sub = subnet.extract(f, x, sites=["fc1", "fc2"], key=jax.random.key(0), steps=200,
                         finetune_steps=50)
    assert float(sub.region_agreement) == 1.0
    assert {n: np.flatnonzero(np.asarray(sub.masks[n])).tolist() for n in sub.sites} == {
        "fc1": [0, 5], "fc2": [0, 1]}
    assert float(sub.region_kl) >= 0.0
    assert float(subnet.fidelity(f, sub, x).kl) >= 0.0


def test_reported_kl_is_not_negative_where_float32_cancels():
    # Units 2.. shift both logits alike: without them the softmax is the same, KL 0 exactly,
    # which the float32 sum of p * (log p - log q) can round below 0.
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 16)).astype(np.float32)
    head = np.zeros((16, 2), np.float32)
    head[0], head[1] = (3.0, -3.0), (-3.0, 3.0)
    head[2:, 0] = head[2:, 1] = rng.normal(size=14)

    def f(x):
        with jax.named_scope("fc1"):
            h = x @ w1
        return jax.nn.relu(h) @ head

    x = jnp.asarray(rng.normal(size=(30, 4)), jnp.float32)
    logp = log_probs(f(x))
    kls = []
    for drop in range(2, 16):  # candidates without units drop.. (float32 rounding varies)
        mask = jnp.arange(16) < drop
        sub = SubNetwork(masks={"fc1": mask}, scores={"fc1": mask.astype(jnp.float32)},
                         gates={"fc1": jnp.ones(())}, region_agreement=jnp.ones(()),
                         region_kl=jnp.zeros(()), l1=jnp.zeros(()), threshold=jnp.zeros(()),
                         sites=("fc1",))
        fid = subnet.fidelity(f, sub, x)
        assert float(fid.agreement) == 1.0
        kls.append(float(fid.kl))
        kls.append(float(_threshold.evaluate(f, {"fc1": mask[None].astype(jnp.float32)}, x,
                                             logp)[1][0]))
    # The exact value is 0: what is reported is 0 up to rounding, and never negative.
    assert min(kls) >= 0.0 and max(kls) < 1e-6
