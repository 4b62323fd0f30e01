"""Zennit (PyTorch LRP) for the agreement tests and the benchmark: import it, map our rules to its
rules, and compute the relevance of a torch twin as Zennit's ``Gradient`` attributor does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np

from jaxplain import lrp as L
from tests.attribution import twins


def load():
    """The ``zennit`` module, or None when it is not installed.

    ``zennit/__init__.py`` imports ``zennit.torchvision``, which imports the classes
    ``Bottleneck`` and ``BasicBlock`` from ``torchvision.models.resnet`` (used only by its ResNet
    canonizer, which these tests never build). torchvision is not installed next to the CPU
    torch here and in CI (Zennit itself is installed with ``--no-deps``), so when it cannot be
    imported we register empty stand-ins for those three modules just for the import, and
    remove them afterwards so that no other code sees a fake torchvision.
    """
    if importlib.util.find_spec("zennit") is None:
        return None
    try:
        import torchvision.models.resnet  # noqa: F401
        stand_ins = {}
    except ImportError:
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (), {})
        resnet.BasicBlock = type("BasicBlock", (), {})
        models = types.ModuleType("torchvision.models")
        models.resnet = resnet
        root = types.ModuleType("torchvision")
        root.models = models
        stand_ins = {"torchvision": root, "torchvision.models": models,
                     "torchvision.models.resnet": resnet}
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("zennit")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _bound(value):
    """A ZBox bound: a float, or a per-channel tuple as a (1, C, 1, 1) tensor (NCHW)."""
    import torch

    return torch.tensor(value).reshape(1, -1, 1, 1) if isinstance(value, tuple) else value


def rule(ours):
    """Zennit's rule with the same parameters as one of ours."""
    import zennit.rules as Z

    if isinstance(ours, L.Epsilon):
        return Z.Epsilon(epsilon=ours.epsilon)
    if isinstance(ours, L.ZPlus):
        return Z.ZPlus(stabilizer=ours.stabilizer)
    if isinstance(ours, L.AlphaBeta):
        return Z.AlphaBeta(alpha=ours.alpha, beta=ours.beta, stabilizer=ours.stabilizer)
    if isinstance(ours, L.ZBox):
        return Z.ZBox(low=_bound(ours.low), high=_bound(ours.high),
                      stabilizer=ours.stabilizer)
    if isinstance(ours, L.Flat):
        return Z.Flat(stabilizer=ours.stabilizer)
    if isinstance(ours, L.WSquare):
        return Z.WSquare(stabilizer=ours.stabilizer)
    if isinstance(ours, L.Gamma):
        return Z.Gamma(gamma=ours.gamma, stabilizer=ours.stabilizer)
    raise TypeError(f"no Zennit counterpart for {ours!r}")


def everywhere(ours, *, first=None, canonizers=None):
    """A Zennit composite with `ours` on every linear layer (and `first` on the first one),
    Zennit's Norm rule on average pools and its Pass rule on activations (as its presets and
    jaxplain's composites); max pools keep their gradient."""
    from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
    from zennit.rules import Norm, Pass
    from zennit.types import Activation, AvgPool, Linear

    layer_map = [(Activation, Pass()), (AvgPool, Norm()), (Linear, rule(ours))]
    if first is None:
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(Linear, rule(first))],
                                         canonizers=canonizers)


def relevance(model, x, target, composite):
    """Zennit's LRP of `model` (a torch twin) for NHWC/2-D `x`: the input gradient under the
    composite, started from the one-hot of `target` (``zennit.attribution.Gradient``)."""
    import torch
    from zennit.attribution import Gradient

    t = torch.as_tensor(np.asarray(target))
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(twins.to_torch(x), lambda out: torch.eye(out.shape[1], dtype=out.dtype)[t])
    return twins.from_torch(rel)
