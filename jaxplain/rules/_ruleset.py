"""Rule and RuleSet: immutable pytrees holding mined rules, their statistics and code lengths."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import numpy as np

from jaxplain.rules._binarize import layer_items


def _frozen(values, dtype) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule ``X -> Y``: when the head neurons X fire, the tail neurons Y tend to fire too.

    Attributes:
      head_layer, tail_layer: layer names (static pytree metadata).
      head, tail: int32 neuron (column) indices within their layers, sorted.
      support: ``|T_X|``, the number of rows where every head neuron is active.
      usage: ``|U|``, the head rows where the rule asserts its tail (rows with >= ``min_hits``
        of the tail neurons active; all of them in ``tail_mode="exact"``).
      min_hits: the usage threshold k chosen by MDL.
      confidence: the fraction of ones in the block ``T_X x Y`` (mean P(y | X) over y in Y).
      gain: the change in total code length when the rule was accepted (bits, negative).

    ``str(rule)`` reads ``conv[3] -> fc[5,9]  support 200  usage 15/200  conf 0.15``: 200
    head rows, of which the rule holds on 15 (class histograms count those 15).
    """

    head: np.ndarray
    tail: np.ndarray
    support: np.ndarray
    usage: np.ndarray
    min_hits: np.ndarray
    confidence: np.ndarray
    gain: np.ndarray
    head_layer: str = dataclasses.field(metadata=dict(static=True), default="")
    tail_layer: str = dataclasses.field(metadata=dict(static=True), default="")

    def __str__(self) -> str:
        head = ",".join(str(int(i)) for i in self.head)
        tail = ",".join(str(int(i)) for i in self.tail)
        return (f"{self.head_layer}[{head}] -> {self.tail_layer}[{tail}]  "
                f"support {int(self.support)}  usage {int(self.usage)}/{int(self.support)}  "
                f"conf {float(self.confidence):.2f}")


class Table(NamedTuple):
    """A plain table: ``header`` names and ``rows`` of values (for printing or reports)."""

    header: list
    rows: list


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RuleSet:
    """The rules chosen by MDL, in acceptance order, with the code lengths in bits.

    Attributes:
      rules: tuple of ``Rule``.
      code_length: ``L(D, M)``, the total two-part code length with the rules (bits).
      baseline_code_length: ``L(D, {})``, every column coded independently (bits).
      class_histograms: int ``(len(rules), classes)`` label counts over each rule's usage rows
        when ``labels`` were given to ``mine``, else None.
      dropped: per layer, the constant columns left out of the search (static).
      widths: per layer, ``(name, columns)`` of the data given to ``mine`` (static).
      num_rows: the number of rows (samples) mined (static).
      stopped_by: why the search ended before no rule compressed (static): None when it ran
        to the end (``complete``), ``"time_budget"`` when ``time_budget`` ran out (more rules
        may compress: the candidate being searched was dropped), ``"max_rules"`` when it
        accepted ``max_rules`` rules (more were not looked for).
    """

    rules: tuple
    code_length: np.ndarray
    baseline_code_length: np.ndarray
    class_histograms: np.ndarray | None = None
    dropped: tuple = dataclasses.field(metadata=dict(static=True), default=())
    widths: tuple = dataclasses.field(metadata=dict(static=True), default=())
    num_rows: int = dataclasses.field(metadata=dict(static=True), default=0)
    stopped_by: str | None = dataclasses.field(metadata=dict(static=True), default=None)

    @property
    def compression(self) -> float:
        """``L% = 100 * L(D, M) / L(D, {})``."""
        return 100.0 * float(self.code_length) / float(self.baseline_code_length)

    @property
    def complete(self) -> bool:
        """Whether the search ran until no rule compressed (not stopped by a limit)."""
        return self.stopped_by is None

    def __len__(self) -> int:
        return len(self.rules)

    def to_table(self) -> Table:
        """One row per rule: index, rule text, sizes, support, usage, confidence, gain, classes.

        Returns:
          ``Table(header, rows)``: ``header`` the 9 column names (10 with class histograms:
          ``"top classes"``), ``rows`` one list of as many plain values per rule, in
          acceptance order. ``jaxplain.report.Section.with_table`` takes it as it is.
        """
        header = ["#", "head", "tail", "|X|", "|Y|", "support", "usage", "conf", "gain (bits)"]
        if self.class_histograms is not None:
            header.append("top classes")
        rows = []
        for i, rule in enumerate(self.rules):
            row = [i, f"{rule.head_layer}[{','.join(map(str, rule.head.tolist()))}]",
                   f"{rule.tail_layer}[{','.join(map(str, rule.tail.tolist()))}]",
                   len(rule.head), len(rule.tail), int(rule.support), int(rule.usage),
                   round(float(rule.confidence), 3), round(float(rule.gain), 2)]
            if self.class_histograms is not None:
                row.append(_top_classes(self.class_histograms[i]))
            rows.append(row)
        return Table(header, rows)

    def __str__(self) -> str:
        """A header line, then one line per rule: ``str(rule)`` and, with class histograms,
        ``usage classes 1:80% 3:20%``, the top classes of the rule's usage rows (not of all
        its support rows; classes under 0.5% are left out). A search stopped by a limit says
        so at the end of the header: ``INCOMPLETE: stopped by time_budget``. A layer whose
        columns were all constant gets a line after the header:
        ``layer 'a': all 3 columns constant (dropped): no rule can use it``."""
        lines = [f"RuleSet: {len(self.rules)} rules on {self.num_rows} rows, "
                 f"L = {float(self.code_length):.1f} bits = {self.compression:.2f}% of "
                 f"{float(self.baseline_code_length):.1f} bits"]
        if self.stopped_by is not None:
            more = ("more rules may compress" if self.stopped_by == "time_budget"
                    else "more were not looked for")
            lines[0] += f"  INCOMPLETE: stopped by {self.stopped_by} ({more})"
        dropped = dict(self.dropped)
        for name, width in self.widths:
            if len(dropped.get(name, ())) == width:
                lines.append(f"  layer {name!r}: all {width} columns constant (dropped): no "
                             f"rule can use it")
        for i, rule in enumerate(self.rules):
            line = f"  {rule}"
            if self.class_histograms is not None:
                line += f"  usage classes {_top_classes(self.class_histograms[i])}"
            lines.append(line)
        return "\n".join(lines)


def _top_classes(histogram: np.ndarray, top: int = 3) -> str:
    total = histogram.sum()
    if total == 0:
        return "-"
    order = np.argsort(-histogram, kind="stable")[:top]
    shares = [(int(c), f"{histogram[c] / total:.0%}") for c in order]
    # A class that rounds to 0% says nothing; the top class always shows.
    return " ".join(f"{c}:{share}" for i, (c, share) in enumerate(shares)
                    if i == 0 or share != "0%")


def specificity(rule_set: RuleSet) -> np.ndarray:
    """Per rule, the share of its usage rows in its most frequent class (1 = class-specific).

    Args:
      rule_set: the result of ``mine`` with ``labels=``.

    Returns:
      float64 ``(len(rule_set.rules),)`` in ``[0, 1]``: for each rule, its largest class
      count over its usage rows divided by its usage (0 for a rule on no rows).

    Raises:
      ValueError: the rule set has no class histograms (``mine`` got no ``labels``).
    """
    if rule_set.class_histograms is None:
        raise ValueError("specificity needs class histograms: pass labels= to mine")
    hist = np.asarray(rule_set.class_histograms, dtype=np.float64)
    return hist.max(axis=1) / np.maximum(hist.sum(axis=1), 1.0)


def rule_rows(rule: Rule, layers) -> np.ndarray:
    """The usage rows U of a rule in ``layers``: its head all on and >= ``min_hits`` tail hits.

    Args:
      rule: a ``Rule`` of a ``RuleSet``.
      layers: layer name -> bool ``(n, d_layer)`` or ``Binarized``, as given to ``mine``
        (or held-out data binarized at the same thresholds); it must hold the rule's
        ``head_layer`` and ``tail_layer``.

    Returns:
      bool ``(n,)``: True on the rows where the rule holds.
    """
    head = layer_items(rule.head_layer, layers[rule.head_layer])[:, rule.head].all(axis=1)
    hits = layer_items(rule.tail_layer, layers[rule.tail_layer])[:, rule.tail].sum(axis=1)
    return head & (hits >= int(rule.min_hits))
