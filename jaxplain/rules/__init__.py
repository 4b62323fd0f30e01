"""ExplaiNN: MDL rules X -> Y between layers of a network, mined from binarized activations."""

from jaxplain.rules._ruleset import Rule as Rule
from jaxplain.rules._ruleset import RuleSet as RuleSet
from jaxplain.rules._ruleset import Table as Table
from jaxplain.rules._ruleset import rule_rows as rule_rows
from jaxplain.rules._ruleset import specificity as specificity
from jaxplain.rules._search import SearchConfig as SearchConfig
from jaxplain.rules._search import mine as mine
from jaxplain.rules._binarize import Binarized as Binarized
from jaxplain.rules._binarize import activations as activations
from jaxplain.rules._binarize import binarize as binarize
from jaxplain.rules._prototype import rule_objective as rule_objective

__all__ = [
    "Binarized", "Rule", "RuleSet", "SearchConfig", "Table", "activations", "binarize", "mine",
    "rule_objective", "rule_rows", "specificity",
]
