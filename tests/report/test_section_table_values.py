"""Section.with_table takes a table value (rules' to_table, metrics' Table, a report Table)."""

import numpy as np
import pytest

from jaxplain.metrics import Table as MetricsTable
from jaxplain.report import Section, Table
from jaxplain.rules import Rule, RuleSet


def _rule_table():
    """The table of a hand-made two-rule set with class histograms (no search needed)."""
    def rule(head, tail, support, usage):
        return Rule(head=np.array(head, np.int32), tail=np.array(tail, np.int32),
                    support=np.int64(support), usage=np.int64(usage), min_hits=np.int32(1),
                    confidence=np.float64(usage / support), gain=np.float64(-10.0),
                    head_layer="conv", tail_layer="fc")

    rules = RuleSet(rules=(rule([0], [1, 2], 40, 30), rule([3, 4], [5], 20, 20)),
                    code_length=np.float64(900.0), baseline_code_length=np.float64(1000.0),
                    class_histograms=np.array([[30, 0], [5, 15]]), num_rows=100)
    return rules.to_table()


def test_a_rules_table_is_the_table_of_its_header_and_rows():
    table = _rule_table()
    assert len(table.rows) > 0
    whole = Section("Rules").with_table(table, caption="c")
    parts = Section("Rules").with_table(table.header, table.rows, caption="c")
    assert whole == parts


def test_metrics_and_report_tables_go_in_as_they_are():
    metrics = MetricsTable(header=("method", "sparseness"), rows=(("gradient", 0.5),),
                           better=("higher",))
    (item,) = Section("M").with_table(metrics).items
    assert (item.header, item.rows, item.caption) == (metrics.header, metrics.rows, "")
    report = Table(("a", "b"), ((1, 2.5),), caption="kept")
    assert Section("R").with_table(report).items == (report,)          # its caption too
    assert Section("R").with_table(report, caption="new").items[0].caption == "new"


def test_header_without_rows_says_what_to_pass():
    with pytest.raises(TypeError, match=r"header= and rows=, or one table with \.header"):
        Section("T").with_table(["a", "b"])
