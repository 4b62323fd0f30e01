"""Critical pathways and the pathway gradient (Khakzar et al., CVPR 2021)."""

from jaxplain.pathways._contributions import contributions as contributions
from jaxplain.pathways._contributions import integrated_contributions as integrated_contributions
from jaxplain.pathways._gradient import apply as apply
from jaxplain.pathways._gradient import masked_gradient as masked_gradient
from jaxplain.pathways._gradient import masked_jvp as masked_jvp
from jaxplain.pathways._gradient import max_abs_channel as max_abs_channel
from jaxplain.pathways._gradient import pathway_gradient as pathway_gradient
from jaxplain.pathways._gradient import pathway_jvp as pathway_jvp
from jaxplain.pathways._overlap import dead_share as dead_share
from jaxplain.pathways._overlap import jaccard as jaccard
from jaxplain.pathways._pruning import greedy_masks as greedy_masks
from jaxplain.pathways._pruning import learned_gates as learned_gates
from jaxplain.pathways._pruning import random_masks as random_masks
from jaxplain.pathways._select import kept_fraction as kept_fraction
from jaxplain.pathways._select import select as select
from jaxplain.pathways._select import threshold as threshold

__all__ = [
    "apply", "contributions", "dead_share", "greedy_masks", "integrated_contributions",
    "jaccard", "kept_fraction", "learned_gates", "masked_gradient", "masked_jvp",
    "max_abs_channel", "pathway_gradient", "pathway_jvp", "random_masks", "select", "threshold",
]
