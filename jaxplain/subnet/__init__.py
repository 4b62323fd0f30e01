"""NeuroChains: sparse sub-networks of exact filter copies that keep a local region's outputs."""

from jaxplain.subnet._extract import apply as apply
from jaxplain.subnet._extract import extract as extract
from jaxplain.subnet._types import Options as Options
from jaxplain.subnet._types import SubNetwork as SubNetwork
from jaxplain.subnet._metrics import Fidelity as Fidelity
from jaxplain.subnet._metrics import evaluate as evaluate
from jaxplain.subnet._metrics import fidelity as fidelity
from jaxplain.subnet._metrics import sparsity as sparsity
from jaxplain.subnet._plot import plot_chain as plot_chain
from jaxplain.subnet._plot import plot_feature_maps as plot_feature_maps

__all__ = [
    "Fidelity", "Options", "SubNetwork", "apply", "evaluate", "extract", "fidelity",
    "plot_chain", "plot_feature_maps", "sparsity",
]
