"""LRP rules and composites (numerically as Zennit's), for :func:`jaxplain.attribution.lrp`."""

from jaxplain.attribution._lrp_rules import AlphaBeta as AlphaBeta
from jaxplain.attribution._lrp_rules import Composite as Composite
from jaxplain.attribution._lrp_rules import Epsilon as Epsilon
from jaxplain.attribution._lrp_rules import EpsilonAlpha2Beta1 as EpsilonAlpha2Beta1
from jaxplain.attribution._lrp_rules import EpsilonAlpha2Beta1Flat as EpsilonAlpha2Beta1Flat
from jaxplain.attribution._lrp_rules import EpsilonGammaBox as EpsilonGammaBox
from jaxplain.attribution._lrp_rules import EpsilonPlus as EpsilonPlus
from jaxplain.attribution._lrp_rules import EpsilonPlusFlat as EpsilonPlusFlat
from jaxplain.attribution._lrp_rules import Flat as Flat
from jaxplain.attribution._lrp_rules import Gamma as Gamma
from jaxplain.attribution._lrp_rules import SignalTakeAll as SignalTakeAll
from jaxplain.attribution._lrp_rules import WSquare as WSquare
from jaxplain.attribution._lrp_rules import ZBox as ZBox
from jaxplain.attribution._lrp_rules import ZPlus as ZPlus
from jaxplain.attribution._lrp_rules import stabilize as stabilize

__all__ = [
    "AlphaBeta", "Composite", "Epsilon", "EpsilonAlpha2Beta1", "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox", "EpsilonPlus", "EpsilonPlusFlat", "Flat", "Gamma", "SignalTakeAll",
    "WSquare", "ZBox", "ZPlus", "stabilize",
]
