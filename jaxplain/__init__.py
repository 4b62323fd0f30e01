"""jaxplain: a functional interpretability engine for JAX.

The kernel's verbs are re-exported here; the method families are subpackages, imported on
first use (``jaxplain.attribution.gradient`` works after a plain ``import jaxplain``).
"""

from jaxplain.core import as_function as as_function
from jaxplain.core import capture as capture
from jaxplain.core import clear_caches as clear_caches
from jaxplain.core import intervene as intervene
from jaxplain.core import rewrite_backward as rewrite_backward
from jaxplain.core import sites as sites
from jaxplain.core import Site as Site

__version__ = "0.1.0"

_SUBPACKAGES = ("attribution", "concepts", "core", "data", "lrp", "metrics", "pathways", "report",
                "rules", "subnet", "visualize")

__all__ = [
    "Site", "as_function", "capture", "clear_caches", "intervene", "rewrite_backward", "sites",
    # The subpackages, imported on first use.
    "attribution", "concepts", "core", "data", "lrp", "metrics", "pathways", "report", "rules",
    "subnet", "visualize",
]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        import importlib  # here, not at the top: the public namespace holds only the API

        return importlib.import_module(f"jaxplain.{name}")
    raise AttributeError(f"module 'jaxplain' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBPACKAGES})
