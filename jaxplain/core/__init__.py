"""The kernel: sites, capture, intervene, rewrite_backward, and model adapters."""

from jaxplain.core._capture import BatchMixingWarning as BatchMixingWarning
from jaxplain.core._capture import capture as capture
from jaxplain.core._capture import intervene as intervene
from jaxplain.core._capture import mixes_batch as mixes_batch
from jaxplain.core._draws import StochasticModelWarning as StochasticModelWarning
from jaxplain.core._changed_weights import ChangedWeightsWarning as ChangedWeightsWarning
from jaxplain.core._capture import relu_sites as relu_sites
from jaxplain.core._capture import sites as sites
from jaxplain.core._select import select as select
from jaxplain.core._sites import Site as Site
from jaxplain.core._backward import LinearLayer as LinearLayer
from jaxplain.core._backward import rewrite_backward as rewrite_backward
from jaxplain.core._adapters import as_function as as_function
from jaxplain.core._program import UNROLL_BUDGET as UNROLL_BUDGET
from jaxplain.core._cpu import cpu_friendly as cpu_friendly
from jaxplain.core._caches import clear_caches as clear_caches

__all__ = [
    "UNROLL_BUDGET", "BatchMixingWarning", "ChangedWeightsWarning", "LinearLayer", "Site",
    "StochasticModelWarning",
    "as_function", "capture", "clear_caches", "cpu_friendly", "intervene", "mixes_batch",
    "relu_sites", "rewrite_backward", "select", "sites",
]
