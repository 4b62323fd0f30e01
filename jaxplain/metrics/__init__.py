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
