"""Explanation metrics: faithfulness, robustness, randomization sanity checks, complexity."""

from jaxplain.metrics._compare import METRICS as METRICS
from jaxplain.metrics._compare import Table as Table
from jaxplain.metrics._compare import compare as compare
from jaxplain.metrics._compare import random_attribution as random_attribution
from jaxplain.metrics._complexity import complexity as complexity
from jaxplain.metrics._complexity import completeness as completeness
from jaxplain.metrics._complexity import conservation as conservation
from jaxplain.metrics._complexity import sparseness as sparseness
from jaxplain.metrics._faithfulness import Curve as Curve
from jaxplain.metrics._faithfulness import deletion as deletion
from jaxplain.metrics._faithfulness import insertion as insertion
from jaxplain.metrics._faithfulness import pixel_flipping as pixel_flipping
from jaxplain.metrics._faithfulness import pixel_perturbation as pixel_perturbation
from jaxplain.metrics._randomization import RandomizationResult as RandomizationResult
from jaxplain.metrics._randomization import data_randomization_check as data_randomization_check
from jaxplain.metrics._randomization import randomization_check as randomization_check
from jaxplain.metrics._retrain import RetrainResult as RetrainResult
from jaxplain.metrics._retrain import kar as kar
from jaxplain.metrics._retrain import roar as roar
from jaxplain.metrics._robustness import continuity as continuity
from jaxplain.metrics._robustness import local_lipschitz as local_lipschitz
from jaxplain.metrics._robustness import max_sensitivity as max_sensitivity
from jaxplain.metrics._similarity import spearman as spearman
from jaxplain.metrics._similarity import ssim as ssim
from jaxplain.metrics._correlation import faithfulness_correlation as faithfulness_correlation
from jaxplain.metrics._monotonicity import monotonicity as monotonicity
from jaxplain.metrics._monotonicity import monotonicity_correlation as monotonicity_correlation
from jaxplain.metrics._infidelity import infidelity as infidelity
from jaxplain.metrics._irof import irof as irof
from jaxplain.metrics._random_logit import random_logit as random_logit

__all__ = [
    "METRICS", "Curve", "RandomizationResult", "RetrainResult", "Table", "compare",
    "completeness", "complexity", "conservation", "continuity", "data_randomization_check",
    "deletion", "faithfulness_correlation", "infidelity", "insertion", "irof", "kar",
    "local_lipschitz", "max_sensitivity", "monotonicity", "monotonicity_correlation",
    "pixel_flipping", "pixel_perturbation", "random_attribution", "random_logit",
    "randomization_check", "roar", "sparseness", "spearman", "ssim",
]
