"""jaxplain: a functional interpretability engine for JAX."""

from jaxplain.core import as_function as as_function
from jaxplain.core import capture as capture
from jaxplain.core import intervene as intervene
from jaxplain.core import rewrite_backward as rewrite_backward
from jaxplain.core import sites as sites
from jaxplain.core import Site as Site

__version__ = "0.1.0"
