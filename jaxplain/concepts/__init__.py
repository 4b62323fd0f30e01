"""Concepts: concept activation vectors (TCAV) and network dissection."""

from jaxplain.concepts._dissection import dissect as dissect
from jaxplain.concepts._dissection import iou as iou
from jaxplain.concepts._linear import LinearClassifier as LinearClassifier
from jaxplain.concepts._linear import fit_linear as fit_linear
from jaxplain.concepts._stats import ttest_ind as ttest_ind
from jaxplain.concepts._tcav import CAV as CAV
from jaxplain.concepts._tcav import TCAVResult as TCAVResult
from jaxplain.concepts._tcav import cav as cav
from jaxplain.concepts._tcav import directional_derivatives as directional_derivatives
from jaxplain.concepts._tcav import tcav as tcav
from jaxplain.concepts._tcav import tcav_score as tcav_score

__all__ = [
    "CAV", "LinearClassifier", "TCAVResult", "cav", "directional_derivatives", "dissect",
    "fit_linear", "iou", "tcav", "tcav_score", "ttest_ind",
]
