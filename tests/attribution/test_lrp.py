"""LRP: a float64 NumPy transcription of each rule (matrix form), conservation, positivity."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import lrp
from jaxplain.attribution._lrp_rules import as_composite
from jaxplain.lrp import (AlphaBeta, Composite, Epsilon, EpsilonAlpha2Beta1, EpsilonPlusFlat, Flat,
                          Gamma, WSquare, ZBox, ZPlus, stabilize)

# ---------------------------------------------------------------- the slow float64 reference


def _stab(z, eps=1e-6):
    return z + np.where(z >= 0, eps, -eps)


def _conv_matrix(w, h, wd):
    """The matrix of a stride-1 SAME cross-correlation on (h, wd, C) inputs, NHWC flattening."""
    kh, kw, c, o = w.shape
    m = np.zeros((h, wd, c, h, wd, o))
    for p in range(h):
        for q in range(wd):
            for i in range(kh):
                for j in range(kw):
                    r, s = p + i - kh // 2, q + j - kw // 2
                    if 0 <= r < h and 0 <= s < wd:
                        m[r, s, :, p, q, :] += w[i, j]
    return m.reshape(h * wd * c, h * wd * o)


def _pool_matrix(h, wd, c):
    m = np.zeros((h, wd, c, h // 2, wd // 2, c))
    for p in range(h):
        for q in range(wd):
            m[p, q, np.arange(c), p // 2, q // 2, np.arange(c)] = 0.25
    return m.reshape(h * wd * c, -1)


def _reference_rule(rule, a, mat, b, R):
    """R_in for one linear layer; `mat(w_fn)` builds the layer matrix from modified weights."""
    m = mat(lambda w: w)
    pos, neg = (lambda v: np.maximum(v, 0)), (lambda v: np.minimum(v, 0))
    ap, an = pos(a), neg(a)
    if isinstance(rule, Epsilon):
        s = R / _stab(a @ m + b, rule.epsilon)
        return a * (s @ m.T)
    if isinstance(rule, (AlphaBeta, ZPlus)):
        alpha, beta = (rule.alpha, rule.beta) if isinstance(rule, AlphaBeta) else (1.0, 0.0)
        mp, mn = mat(pos), mat(neg)
        sp = R / _stab(ap @ mp + an @ mn + pos(b))
        sn = R / _stab(ap @ mn + an @ mp + neg(b))
        return (alpha * (ap * (sp @ mp.T) + an * (sp @ mn.T))
                - beta * (ap * (sn @ mn.T) + an * (sn @ mp.T)))
    if isinstance(rule, ZBox):
        lo, hi = np.full_like(a, rule.low), np.full_like(a, rule.high)
        mp, mn = mat(pos), mat(neg)
        s = R / _stab(a @ m - lo @ mp - hi @ mn)
        return a * (s @ m.T) - lo * (s @ mp.T) - hi * (s @ mn.T)
    if isinstance(rule, Flat):
        m1 = mat(np.ones_like)
        s = R / _stab(np.ones_like(a) @ m1)
        return s @ m1.T
    if isinstance(rule, WSquare):
        m2 = mat(np.square)
        s = R / _stab(np.ones_like(a) @ m2 + b ** 2)
        return s @ m2.T
    if isinstance(rule, Gamma):
        g = rule.gamma
        up, down = mat(lambda w: w + g * pos(w)), mat(lambda w: w + g * neg(w))
        z = a @ m + b
        sp = R * (z > 0) / _stab(ap @ up + an @ down + b + g * pos(b))
        sn = R * (z < 0) / _stab(ap @ down + an @ up + b + g * neg(b))
        return ap * (sp @ up.T) + an * (sp @ down.T) + ap * (sn @ down.T) + an * (sn @ up.T)
    raise AssertionError(rule)


def reference_lrp(layers, x, target, rule_for, activations="pass"):
    """layers: ("linear", name, op, mat, b) | ("relu",) | ("avg_pool", matrix); float64.

    Average pools redistribute in proportion to their inputs (Zennit's Norm rule); ReLUs pass
    relevance unchanged (Zennit's Pass) or, with ``activations="gradient"``, where ``z > 0``."""
    a = np.asarray(x, np.float64).reshape(len(x), -1)
    inputs = []
    for layer in layers:
        inputs.append(a)
        if layer[0] == "linear":
            a = a @ layer[3](lambda w: w) + layer[4]
        elif layer[0] == "relu":
            a = np.maximum(a, 0)
        else:
            a = a @ layer[1]
    R = np.eye(a.shape[1])[target]
    for k in reversed(range(len(layers))):
        layer, a_in = layers[k], inputs[k]
        if layer[0] == "linear":
            R = _reference_rule(rule_for(layer[1], layer[2], k == 0), a_in, layer[3], layer[4], R)
        elif layer[0] == "relu":
            R = R if activations == "pass" else R * (a_in > 0)
        else:
            R = a_in * ((R / _stab(a_in @ layer[1])) @ layer[1].T)
    return R.reshape(np.shape(x))


# ---------------------------------------------------------------- the nets (JAX + reference)

def mlp_case(seed, bias=True, sizes=(6, 8, 7, 4)):
    rng = np.random.default_rng(seed)
    params = [(rng.normal(size=(i, o)) / np.sqrt(i), rng.normal(size=o) * 0.3 * bias)
              for i, o in zip(sizes[:-1], sizes[1:])]
    jp_params = [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)) for w, b in params]

    def f(x):
        for k, (w, b) in enumerate(jp_params):
            x = x @ w + b if bias else x @ w
            if k < len(jp_params) - 1:
                x = jax.nn.relu(x)
        return x

    layers = []
    for k, (w, b) in enumerate(params):
        layers.append(("linear", f"dense{k}", "dense", (lambda fn, w=w: fn(w)), b))
        if k < len(params) - 1:
            layers.append(("relu",))
    return f, layers


def cnn_case(seed):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(3, 3, 1, 3)) * 0.5, rng.normal(size=3) * 0.2
    w2, b2 = rng.normal(size=(3, 3, 3, 4)) * 0.4, rng.normal(size=4) * 0.2
    wd, bd = rng.normal(size=(16, 5)) * 0.3, rng.normal(size=5) * 0.2
    j = {k: jnp.asarray(v, jnp.float32) for k, v in dict(w1=w1, b1=b1, w2=w2, b2=b2, wd=wd, bd=bd).items()}
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, j["w1"], (1, 1), "SAME", dimension_numbers=dn) + j["b1"])
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, j["w2"], (1, 1), "SAME", dimension_numbers=dn) + j["b2"])
        return x.reshape(x.shape[0], -1) @ j["wd"] + j["bd"]

    layers = [
        ("linear", "conv1", "conv", (lambda fn: _conv_matrix(fn(w1), 4, 4)), np.tile(b1, 16)),
        ("relu",),
        ("avg_pool", _pool_matrix(4, 4, 3)),
        ("linear", "conv2", "conv", (lambda fn: _conv_matrix(fn(w2), 2, 2)), np.tile(b2, 4)),
        ("relu",),
        ("linear", "dense", "dense", (lambda fn: fn(wd)), bd),
    ]
    return f, layers


def _rel_err(a, ref):
    a, ref = np.asarray(a, np.float64).reshape(len(a), -1), ref.reshape(len(ref), -1)
    return float((np.abs(a - ref).max(1) / np.maximum(np.abs(ref).max(1), 1e-12)).max())


RULES = [Epsilon(1e-6), Epsilon(0.5), ZPlus(), AlphaBeta(2.0, 1.0), AlphaBeta(1.0, 0.0),
         AlphaBeta(3.0, 1.5), Flat(), WSquare(), Gamma(0.25)]


@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_rule_matches_numpy_transcription(rule, case):
    f, layers = mlp_case(3) if case == "mlp" else cnn_case(3)
    shape = (5, 6) if case == "mlp" else (5, 4, 4, 1)
    x = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    logits = np.asarray(f(x))
    for target in (logits.argmax(1), logits.argmin(1)):  # the argmin logit is mostly negative
        ours = lrp(f, x, target, rules=rule)
        ref = reference_lrp(layers, x, target, lambda name, op, first: rule)
        assert _rel_err(ours, ref) < 2e-4, (rule, target)


@pytest.mark.parametrize("rule", [Flat(), WSquare(), Epsilon(1e-6)], ids=repr)
def test_gradient_at_activations_matches_numpy_transcription(rule):
    """``activations="gradient"`` masks relevance at dead ReLUs; behind Flat and WSquare (which
    do not multiply by their input) relevance reaches dead units, so it differs from Pass."""
    f, layers = cnn_case(3)
    x = np.random.default_rng(4).normal(size=(5, 4, 4, 1)).astype(np.float32)
    target = np.asarray(f(x)).argmax(1)
    ours = lrp(f, x, target, rules=Composite(default=rule, activations="gradient"))
    ref = reference_lrp(layers, x, target, lambda name, op, first: rule, activations="gradient")
    assert _rel_err(ours, ref) < 2e-4
    passed = reference_lrp(layers, x, target, lambda name, op, first: rule)
    assert (_rel_err(ours, passed) > 1e-2) == (not isinstance(rule, Epsilon))
    with pytest.raises(ValueError, match="activations"):
        Composite(activations="identity")


@dataclasses.dataclass(frozen=True)
class _NegativeEpsilon(Epsilon):
    """An epsilon below zero, which Epsilon refuses: the opposite sign convention, for the
    float64 reference only."""

    def __post_init__(self):
        pass


def test_large_epsilon_negative_logit_exposes_the_sign_convention():
    f, layers = mlp_case(5)
    x = np.random.default_rng(6).normal(size=(8, 6)).astype(np.float32)
    logits = np.asarray(f(x))
    target = logits.argmin(1)
    assert (logits[np.arange(8), target] < 0).all()
    ours = lrp(f, x, target, rules=Epsilon(0.5))
    ref = reference_lrp(layers, x, target, lambda *_: Epsilon(0.5))
    assert _rel_err(ours, ref) < 1e-4
    # with the opposite sign convention (-eps for negative z flipped) the result differs
    flipped = reference_lrp(layers, x, target, lambda *_: _NegativeEpsilon(-0.5))
    assert _rel_err(flipped, ref) > 1e-2


def test_stabilize_counts_zero_as_positive():
    z = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(stabilize(z, 0.5), [-2.5, 0.5, 3.5])


@pytest.mark.parametrize("composite,per_layer", [
    (EpsilonPlusFlat(), lambda name, op, first: Flat() if first else (ZPlus() if op == "conv" else Epsilon())),
    (EpsilonAlpha2Beta1(), lambda name, op, first: AlphaBeta(2, 1) if op == "conv" else Epsilon()),
    (Composite(first=ZBox(-3.0, 3.0), default=Epsilon(0.1)),
     lambda name, op, first: ZBox(-3.0, 3.0) if first else Epsilon(0.1)),
    # site names of a plain function: conv, conv_1, linear (see jaxplain.sites)
    (Composite(layers=(("conv_1", Gamma(0.5)), ("lin*", Epsilon(0.2))), default=ZPlus()),
     lambda name, op, first: Gamma(0.5) if name == "conv2" else (Epsilon(0.2) if op == "dense" else ZPlus())),
])
def test_composites_assign_rules_by_site(composite, per_layer):
    f, layers = cnn_case(7)
    x = np.random.default_rng(8).normal(size=(4, 4, 4, 1)).astype(np.float32)
    target = np.asarray(f(x)).argmax(1)
    ref = reference_lrp(layers, x, target, per_layer)
    assert _rel_err(lrp(f, x, target, rules=composite), ref) < 2e-4


def test_conservation_on_bias_free_nets():
    f, _ = mlp_case(9, bias=False)
    x = np.random.default_rng(10).normal(size=(6, 6)).astype(np.float32)
    target = np.asarray(f(x)).argmax(1)
    # (alpha-beta conserves only where both signs contribute; its a2b1 test is the transcription)
    for rule in (Epsilon(1e-9), ZPlus()):
        total = np.asarray(lrp(f, x, target, rules=rule)).sum(1)
        np.testing.assert_allclose(total, 1.0, rtol=1e-4, err_msg=repr(rule))
    logits = np.asarray(f(x))[np.arange(6), target]
    total = np.asarray(lrp(f, x, target, rules=Epsilon(1e-9), scale_by_logit=True)).sum(1)
    np.testing.assert_allclose(total, logits, rtol=1e-4)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "silu", "gelu", "gelu_tanh"])
def test_smooth_activations_pass_relevance_so_it_is_conserved(activation):
    """Relevance passes an activation unchanged, so a bias-free net conserves it whatever the
    activation; multiplying by the derivative instead (``activations="gradient"``) does not."""
    from tests.attribution import twins

    f = twins.mlp(twins.mlp_params(13), bias=False, activation=activation)
    x = np.random.default_rng(14).normal(size=(6, 10)).astype(np.float32)
    target = np.asarray(f(x)).argmax(1)
    total = np.asarray(lrp(f, x, target, rules=Epsilon(1e-9))).sum(1)
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)
    gradient = Composite(default=Epsilon(1e-9), activations="gradient")
    assert np.abs(np.asarray(lrp(f, x, target, rules=gradient)).sum(1) - 1.0).max() > 1e-2


def test_residual_add_conserves_relevance():
    rng = np.random.default_rng(11)
    w1, w2, w3 = (jnp.asarray(rng.normal(size=s) / 2, jnp.float32) for s in [(5, 6), (6, 6), (6, 3)])

    def f(x):
        h = jax.nn.relu(x @ w1)
        return (h + jax.nn.relu(h @ w2)) @ w3

    x = jnp.asarray(rng.uniform(size=(6, 5)), jnp.float32)
    target = np.asarray(f(x)).argmax(1)
    total = np.asarray(lrp(f, x, target, rules=Epsilon(1e-9))).sum(1)
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_zplus_is_non_negative():
    f, _ = cnn_case(12)
    x = np.random.default_rng(13).normal(size=(5, 4, 4, 1)).astype(np.float32)
    target = np.asarray(f(x)).argmax(1)
    for rule in (ZPlus(), AlphaBeta(1.0, 0.0)):
        r = np.asarray(lrp(f, x, target, rules=rule))
        assert (r >= -1e-7).all() and (r > 0).any()


def test_rules_are_hashable_values():
    assert Epsilon(1e-6) == Epsilon(1e-6) and hash(EpsilonPlusFlat()) == hash(EpsilonPlusFlat())
    with pytest.raises(ValueError, match="alpha"):
        AlphaBeta(-1.0, 0.0)
    f, _ = mlp_case(1)
    with pytest.raises(TypeError, match="rules"):
        lrp(f, np.ones((1, 6), np.float32), 0, rules="epsilon")


def test_batchnorm_is_folded_into_the_preceding_layer():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(4, (3, 3), name="conv")(x)
            x = nn.BatchNorm(use_running_average=True, name="bn")(x)
            x = nn.relu(x)
            return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))

    import jaxplain as jp

    x = np.random.default_rng(14).normal(size=(3, 4, 4, 1)).astype(np.float32)
    net = Net()
    variables = net.init(jax.random.key(0), x)
    rng = np.random.default_rng(15)
    stats = {"mean": rng.normal(size=4).astype(np.float32),
             "var": rng.uniform(0.5, 2.0, size=4).astype(np.float32)}
    params = dict(variables["params"])
    params["bn"] = {"scale": rng.uniform(0.5, 1.5, size=4).astype(np.float32),
                    "bias": rng.normal(size=4).astype(np.float32)}
    variables = {"params": params, "batch_stats": {"bn": stats}}
    f = jp.as_function(net, variables)
    # the same network with BatchNorm folded by hand into the convolution
    s = params["bn"]["scale"] / np.sqrt(stats["var"] + 1e-5)
    w = np.asarray(params["conv"]["kernel"]) * s
    b = (np.asarray(params["conv"]["bias"]) - stats["mean"]) * s + params["bn"]["bias"]
    wd, bd = np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])

    def folded(z):
        h = jax.lax.conv_general_dilated(z, jnp.asarray(w), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        return jax.nn.relu(h).reshape(z.shape[0], -1) @ wd + bd

    np.testing.assert_allclose(f(x), folded(x), rtol=1e-4, atol=1e-5)
    target = np.asarray(f(x)).argmax(1)
    for rule in (Epsilon(0.1), AlphaBeta(2.0, 1.0), EpsilonPlusFlat()):
        assert _rel_err(lrp(f, x, target, rules=rule),
                        np.asarray(lrp(folded, x, target, rules=rule), np.float64)) < 1e-4


_POOLS = {  # name -> (pool of NHWC features, size of the dense layer's input for 4x4x3)
    "average": (lambda h: (jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
                                                 "VALID") / 4.0).reshape(h.shape[0], -1), 12),
    "max": (lambda h: jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                            "VALID").reshape(h.shape[0], -1), 12),
    "global mean": (lambda h: h.mean(axis=(1, 2)), 3),  # as a ResNet's head
}


@pytest.mark.parametrize("pool", _POOLS)
def test_pooling_conserves_relevance(pool):
    rng = np.random.default_rng(17)
    pooling, width = _POOLS[pool]
    w1 = jnp.asarray(rng.normal(size=(3, 3, 1, 3)), jnp.float32)
    wd = jnp.asarray(rng.normal(size=(width, 4)), jnp.float32)

    def f(x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return pooling(h) @ wd

    x = rng.normal(size=(4, 4, 4, 1)).astype(np.float32)  # signed: some ReLUs in a window are dead
    target = np.asarray(f(x)).argmax(1)
    total = np.asarray(lrp(f, x, target, rules=Epsilon(1e-9))).reshape(4, -1).sum(1)
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_a_global_mean_is_no_site():
    f = lambda x: jax.nn.relu(x).mean(axis=(1, 2)) @ jnp.ones((1, 2))  # noqa: E731
    assert [s.name for s in jp.sites(f, jnp.ones((2, 3, 3, 1)))] == ["relu", "linear"]


@pytest.mark.parametrize("rules", [Epsilon(1e-6), EpsilonPlusFlat()], ids=["one rule", "composite"])
def test_on_cpu_the_pools_are_block_reductions(rules):
    """Pools between places and the pools a composite's rule owns both run in XLA:CPU's fast
    forms (no reduce-window left in the compiled program), with the same relevance."""
    k = jax.random.split(jax.random.key(7), 3)
    w1, w2 = jax.random.normal(k[0], (3, 3, 2, 4)), jax.random.normal(k[1], (3, 3, 4, 4))
    wd = jax.random.normal(k[2], (16, 3))
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn))
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, w2, (1, 1), "SAME", dimension_numbers=dn))
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
        return x.reshape(x.shape[0], -1) @ wd

    x = jax.random.uniform(jax.random.key(8), (3, 8, 8, 2))
    t = jnp.array([0, 1, 2])
    hlo = jax.jit(lambda x: lrp(f, x, t, rules=rules)).lower(x).compile().as_text()
    assert "reduce-window" not in hlo and "select-and-scatter" not in hlo
    composite = as_composite(rules)
    plain = jax.jit(lambda x: jax.vjp(jp.rewrite_backward(f, composite), x)[1](
        jax.nn.one_hot(t, 3))[0])
    np.testing.assert_allclose(lrp(f, x, t, rules=rules), plain(x), rtol=1e-5, atol=1e-7)


def test_an_equinox_mlp_gets_the_rules_of_its_plain_twin():
    """Under vmap, Equinox's Linear computes ``W @ x`` then moves the batch first: the layer,
    the transpose and the bias add are one layer, so biases enter the rules' denominators."""
    import equinox as eqx

    class MLP(eqx.Module):
        layers: tuple

        def __call__(self, x):
            return self.layers[1](jax.nn.relu(self.layers[0](x)))

    keys = jax.random.split(jax.random.key(3), 4)
    layers = (eqx.nn.Linear(6, 5, key=keys[0]), eqx.nn.Linear(5, 3, key=keys[1]))
    layers = tuple(eqx.tree_at(lambda l: l.bias, l, jax.random.normal(k, l.bias.shape))
                   for l, k in zip(layers, keys[2:]))

    def twin(x):
        h = jax.nn.relu(x @ layers[0].weight.T + layers[0].bias)
        return h @ layers[1].weight.T + layers[1].bias

    f = jp.as_function(MLP(layers))
    x = np.random.default_rng(18).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(f(x), twin(x), rtol=1e-5, atol=1e-5)
    target = np.asarray(f(x)).argmax(1)
    for rule in (Epsilon(1e-6), ZPlus(), AlphaBeta(2.0, 1.0), EpsilonPlusFlat()):
        np.testing.assert_allclose(lrp(f, x, target, rules=rule), lrp(twin, x, target, rules=rule),
                                   rtol=1e-4, atol=1e-6, err_msg=repr(rule))


def test_equinox_pools_conserve_relevance():
    """Equinox's pools run on moved, 5-d copies of the features under vmap; the division by the
    window after the squeeze and transpose still belongs to the average (else a quarter of the
    relevance would be lost in it)."""
    import equinox as eqx

    class CNN(eqx.Module):
        conv: eqx.nn.Conv2d
        head: eqx.nn.Linear

        def __call__(self, x):  # one (2, 8, 8) image
            h = eqx.nn.MaxPool2d(2, 2)(jax.nn.relu(self.conv(x)))
            return self.head(eqx.nn.AvgPool2d(2, 2)(h).reshape(-1))

    keys = jax.random.split(jax.random.key(5), 3)
    f = jp.as_function(CNN(eqx.nn.Conv2d(2, 3, 3, padding=1, use_bias=False, key=keys[0]),
                           eqx.nn.Linear(12, 4, use_bias=False, key=keys[1])))
    x = jax.random.normal(keys[2], (3, 2, 8, 8))
    for rule in (Epsilon(1e-9), ZPlus()):
        relevance = lrp(f, x, jnp.array([0, 1, 2]), rules=rule)
        np.testing.assert_allclose(relevance.sum((1, 2, 3)), 1.0, rtol=1e-4, err_msg=repr(rule))


def test_an_equinox_batchnorm_is_folded_into_its_convolution():
    """An NCHW convolution under vmap (x[None], reshape and squeeze around it), then an
    inference-mode Equinox BatchNorm: one layer, as the same network folded by hand."""
    import equinox as eqx

    class Net(eqx.Module):
        conv: eqx.nn.Conv2d
        bn: eqx.nn.BatchNorm
        head: eqx.nn.Linear

        def __call__(self, x, state):  # one (2, 6, 6) image
            h, state = self.bn(self.conv(x), state)
            return self.head(jax.nn.relu(h).mean((1, 2))), state

    class Inference(eqx.Module):
        net: Net
        state: eqx.nn.State

        def __call__(self, x):
            return self.net(x, self.state)[0]

    keys = jax.random.split(jax.random.key(6), 3)
    net, state = eqx.nn.make_with_state(Net)(
        eqx.nn.Conv2d(2, 4, 3, padding=1, key=keys[0]),
        eqx.nn.BatchNorm(4, axis_name="batch", inference=True, mode="ema"),
        eqx.nn.Linear(4, 3, key=keys[1]))
    mean, var = jnp.linspace(-0.5, 0.5, 4), jnp.linspace(0.5, 2.0, 4)
    state = state.set(net.bn.ema_state_index, (mean, var))
    f = jp.as_function(Inference(net, state))
    s = 1 / jnp.sqrt(var + net.bn.eps)
    w, b = net.conv.weight * s[:, None, None, None], (net.conv.bias[:, 0, 0] - mean) * s

    def folded(z):
        h = jax.lax.conv_general_dilated(z, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jax.nn.relu(h + b[:, None, None]).mean((2, 3)) @ net.head.weight.T + net.head.bias

    x = jax.random.normal(keys[2], (3, 2, 6, 6))
    np.testing.assert_allclose(f(x), folded(x), rtol=1e-5, atol=1e-6)
    target = np.asarray(f(x)).argmax(1)
    for rule in (Epsilon(0.1), AlphaBeta(2.0, 1.0), EpsilonPlusFlat()):
        np.testing.assert_allclose(lrp(f, x, target, rules=rule), lrp(folded, x, target, rules=rule),
                                   rtol=1e-4, atol=1e-6, err_msg=repr(rule))
