"""LRP agrees with Zennit 0.5 on twin networks (same weights): max relative error <= 1e-4.

Zennit's relevance is the input gradient under a composite started from the one-hot target
(its ``Gradient`` attributor). A single jaxplain rule is compared with a Zennit composite that
puts that rule on every linear layer, Norm on average pools and Pass on activations (max pools
keep their gradient); the presets are compared with Zennit's presets as they are.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.attribution import _zennit, twins  # noqa: E402

zennit = _zennit.load()
if zennit is None:
    pytest.skip("zennit is not installed", allow_module_level=True)

from zennit import composites as ZC  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.types import AvgPool  # noqa: E402

from jaxplain import lrp as L  # noqa: E402
from jaxplain.attribution import lrp  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TOL = 1e-4
SEEDS = (0, 1)
KINDS = ("signed", "nonneg")
BOX = (-4.0, 4.0)  # bounds holding both kinds of inputs

_NETS = {  # name -> (JAX net, torch twin, input shape) from the seed's weights
    "mlp": lambda s: (twins.mlp(twins.mlp_params(s)), twins.torch_mlp(twins.mlp_params(s)), (6, 10)),
    "cnn_max": lambda s: (twins.cnn(twins.cnn_params(s), last_pool="max"),
                          twins.torch_cnn(twins.cnn_params(s), last_pool="max"), (4, 8, 8, 2)),
    "cnn_avg": lambda s: (twins.cnn(twins.cnn_params(s)), twins.torch_cnn(twins.cnn_params(s)),
                          (4, 8, 8, 2)),
    "cnn_bn": lambda s: (twins.cnn(twins.cnn_params(s, batchnorm=True), last_pool="max"),
                         twins.torch_cnn(twins.cnn_params(s, batchnorm=True), last_pool="max"),
                         (4, 8, 8, 2)),
}
_CACHE = {}


def cases(net):
    """(f, torch twin, x, target) over the seeds, both kinds of input, and two targets: one
    class per example, and the lowest logit (mostly negative)."""
    for seed in SEEDS:
        if (net, seed) not in _CACHE:
            _CACHE[net, seed] = _NETS[net](seed)
        f, model, shape = _CACHE[net, seed]
        for kind in KINDS:
            x = twins.inputs(seed, shape, kind)
            for target in (np.arange(shape[0]) % 5, np.asarray(f(x)).argmin(1)):
                yield f, model, x, target


def worst(net, rules, composite):
    """The max relative error per example of ours vs Zennit's over all cases of `net`."""
    return max(twins.relative_error(lrp(f, x, t, rules=rules), _zennit.relevance(model, x, t, composite))
               for f, model, x, t in cases(net))


RULES = [L.Epsilon(1e-6), L.Epsilon(1.0), L.ZPlus(), L.AlphaBeta(1.0, 0.0), L.AlphaBeta(2.0, 1.0),
         L.Flat(), L.WSquare(), L.Gamma(0.25)]


@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("net", ["mlp", "cnn_max", "cnn_avg"])
def test_each_rule_on_every_linear_layer(rule, net):
    assert worst(net, rule, _zennit.everywhere(rule)) <= TOL


@pytest.mark.parametrize("net", ["mlp", "cnn_avg"])
def test_large_epsilon_with_a_negative_target_logit_has_zennits_sign_convention(net):
    rule = L.Epsilon(1.0)
    for f, model, x, _ in cases(net):
        logits = np.asarray(f(x))
        t = logits.argmin(1)
        assert (logits[np.arange(len(t)), t] < 0).all()
        ours = lrp(f, x, t, rules=rule)
        assert twins.relative_error(ours, _zennit.relevance(model, x, t, _zennit.everywhere(rule))) <= TOL
        # the test can tell the conventions apart: z + eps (instead of z + eps sign(z)) differs
        plus_eps = ZC.LayerMapComposite([(zennit.types.Linear, zennit.rules.Epsilon(lambda z: z + 1.0))])
        assert twins.relative_error(ours, _zennit.relevance(model, x, t, plus_eps)) > 1e-2


@pytest.mark.parametrize("net,low,high", [
    ("mlp", *BOX),
    ("cnn_max", *BOX),
    ("cnn_avg", (-4.0, -3.0), (3.5, 4.0)),  # one bound per channel
])
def test_zbox_on_the_first_layer(net, low, high):
    first, rest = L.ZBox(low, high), L.Epsilon(0.1)
    assert worst(net, L.Composite(first=first, default=rest), _zennit.everywhere(rest, first=first)) <= TOL


PRESETS = {
    "EpsilonPlusFlat": (L.EpsilonPlusFlat(), ZC.EpsilonPlusFlat, {}),
    "EpsilonAlpha2Beta1": (L.EpsilonAlpha2Beta1(), ZC.EpsilonAlpha2Beta1, {}),
    "EpsilonPlus": (L.EpsilonPlus(), ZC.EpsilonPlus, {}),
    "EpsilonAlpha2Beta1Flat": (L.EpsilonAlpha2Beta1Flat(), ZC.EpsilonAlpha2Beta1Flat, {}),
    "EpsilonGammaBox": (L.EpsilonGammaBox(*BOX), ZC.EpsilonGammaBox, dict(low=BOX[0], high=BOX[1])),
}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("net", ["mlp", "cnn_max", "cnn_avg"])
def test_presets_equal_zennits_presets(preset, net):
    ours, theirs, kwargs = PRESETS[preset]
    assert worst(net, ours, theirs(**kwargs)) <= TOL


SMOOTH = ("tanh", "sigmoid", "silu", "gelu", "gelu_tanh")


def smooth_worst(activation, ours, theirs):
    """Max relative error of ours vs Zennit on MLPs with a smooth activation, in float64 on
    both sides (small denominators of these nets amplify float32 rounding to ~1e-4)."""
    errors = []
    with jax.enable_x64(True):
        for seed in SEEDS:
            params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in twins.mlp_params(seed)]
            f = twins.mlp(params, activation=activation)
            model = twins.torch_mlp(params, activation=activation)
            for kind in KINDS:
                x = twins.inputs(seed, (6, 10), kind).astype(np.float64)
                for t in (np.arange(6) % 5, np.asarray(f(x)).argmin(1)):
                    errors.append(twins.relative_error(lrp(f, x, t, rules=ours),
                                                       _zennit.relevance(model, x, t, theirs)))
    return max(errors)


@pytest.mark.parametrize("rules", [L.Epsilon(1e-6), L.ZPlus(), L.AlphaBeta(2.0, 1.0), L.Flat(),
                                   L.EpsilonPlusFlat(), L.EpsilonAlpha2Beta1()], ids=repr)
@pytest.mark.parametrize("activation", SMOOTH)
def test_smooth_activations_pass_relevance_as_zennit(rules, activation):
    presets = {L.EpsilonPlusFlat(): ZC.EpsilonPlusFlat(), L.EpsilonAlpha2Beta1(): ZC.EpsilonAlpha2Beta1()}
    theirs = presets.get(rules) or _zennit.everywhere(rules)
    assert smooth_worst(activation, rules, theirs) <= 1e-9


@pytest.mark.parametrize("activation", SMOOTH)
def test_smooth_activations_with_their_gradient_would_differ(activation):
    """The Pass rule is really exercised: the derivative at the activations is far from Zennit."""
    ours = L.Composite(default=L.Epsilon(1e-6), activations="gradient")
    assert smooth_worst(activation, ours, _zennit.everywhere(L.Epsilon(1e-6))) > 1e-2


def test_average_pooling_with_its_plain_gradient_would_differ():
    """The Norm rule at average pools matters: Zennit's preset with the plain gradient there
    (and at activations) is far from ours."""
    ours, theirs, kwargs = PRESETS["EpsilonPlusFlat"]
    plain = theirs(layer_map=[(AvgPool, None), (zennit.types.Activation, None)], **kwargs)
    assert worst("cnn_avg", ours, plain) > 1e-2


def test_average_pooling_conserves_relevance_as_zennits_norm_rule():
    params = {k: (w, np.zeros_like(b)) for k, (w, b) in twins.cnn_params(0).items()}  # bias-free
    f, model = twins.cnn(params, pool="avg"), twins.torch_cnn(params, pool="avg")
    x = twins.inputs(0, (4, 8, 8, 2), "nonneg")
    t = np.asarray(f(x)).argmax(1)
    norm = ZC.LayerMapComposite([(zennit.types.Linear, zennit.rules.Epsilon(1e-9)),
                                 (AvgPool, zennit.rules.Norm(1e-9))])
    np.testing.assert_allclose(_zennit.relevance(model, x, t, norm).reshape(4, -1).sum(1), 1.0, rtol=1e-4)
    total = np.asarray(lrp(f, x, t, rules=L.Epsilon(1e-9))).reshape(4, -1).sum(1)
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def _global_pool_twins(seed):
    """conv3x3, ReLU, global average pooling, dense: JAX (mean over H, W) and torch
    (``AdaptiveAvgPool2d``, which Zennit's presets give their Norm rule)."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(3, 3, 2, 6)).astype(np.float32) * 0.5, rng.normal(size=6).astype(np.float32) * 0.2
    wd, bd = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32) * 0.2

    def f(x):
        import jax

        h = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
        return h.mean(axis=(1, 2)) @ wd + bd

    conv = torch.nn.Conv2d(2, 6, 3, padding=1)
    conv.weight.data, conv.bias.data = torch.tensor(w.transpose(3, 2, 0, 1).copy()), torch.tensor(b)
    dense = torch.nn.Linear(6, 5)
    dense.weight.data, dense.bias.data = torch.tensor(wd.T.copy()), torch.tensor(bd)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), dense).eval()
    return f, model


@pytest.mark.parametrize("preset", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonPlus"])
def test_global_average_pooling_equals_zennits_adaptive_pool(preset):
    ours, theirs, kwargs = PRESETS[preset]
    for seed in SEEDS:
        f, model = _global_pool_twins(seed)
        x = twins.inputs(seed, (4, 6, 6, 2), "signed")
        for t in (np.arange(4) % 5, np.asarray(f(x)).argmin(1)):
            got = lrp(f, x, t, rules=ours)
            assert twins.relative_error(got, _zennit.relevance(model, x, t, theirs(**kwargs))) <= TOL


@pytest.mark.parametrize("case", ["EpsilonPlusFlat", "EpsilonGammaBox", L.Epsilon(0.5),
                                  L.AlphaBeta(2.0, 1.0), L.WSquare()], ids=str)
def test_batchnorm_equals_zennits_merged_batchnorm(case):
    assert worst("cnn_bn", *_with_merged_batchnorm(case)) <= TOL


def _with_merged_batchnorm(case):
    """(our rules, Zennit's composite with SequentialMergeBatchNorm) for a preset name or a rule."""
    canonizers = [SequentialMergeBatchNorm()]
    if isinstance(case, str):
        ours, theirs, kwargs = PRESETS[case]
        return ours, theirs(canonizers=canonizers, **kwargs)
    return case, _zennit.everywhere(case, canonizers=canonizers)


def test_batchnorm_without_zennits_canonizer_differs():
    """Zennit's presets pass relevance through an unmerged BatchNorm unchanged (Pass); we fold
    BatchNorm into the convolution, i.e. equal Zennit with SequentialMergeBatchNorm only."""
    f, model, x, t = next(cases("cnn_bn"))
    ours = lrp(f, x, t, rules=L.EpsilonPlusFlat())
    assert twins.relative_error(ours, _zennit.relevance(model, x, t, ZC.EpsilonPlusFlat())) > 1e-2


@pytest.mark.parametrize("case", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonGammaBox",
                                  L.Epsilon(0.5), L.ZPlus()], ids=str)
def test_an_nchw_network_equals_zennit_on_its_torch_twin(case):
    """The CNN written channels first, as PyTorch would (with BatchNorm: merged by Zennit's
    canonizer, folded by us): the biases and BatchNorm fold on axis 1."""
    ours, composite = _with_merged_batchnorm(case)
    for seed in SEEDS:
        params = twins.cnn_params(seed, batchnorm=True)
        f = twins.cnn(params, last_pool="max", layout="NCHW")
        model = twins.torch_cnn(params, last_pool="max")
        for kind in KINDS:
            x = twins.inputs(seed, (4, 8, 8, 2), kind)
            t = np.arange(4) % 5
            got = np.moveaxis(np.asarray(lrp(f, np.moveaxis(x, -1, 1), t, rules=ours)), 1, -1)
            assert twins.relative_error(got, _zennit.relevance(model, x, t, composite)) <= TOL
