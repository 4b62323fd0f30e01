"""The demo registry, the section runner and the foundation section."""

import doctest
import importlib
import math

import numpy as np
import pytest

import jaxplain
from jaxplain.report import Section, load_section, load_sections, run_section, section_name
from jaxplain.report._demo_sections import SECTIONS


def boom(ctx):
    raise RuntimeError("section exploded")


def not_a_section(ctx):
    return "text"


def test_section_names():
    assert section_name("jaxplain.report._foundation:demo_section") == "foundation"
    assert section_name("jaxplain.rules._demo:demo_section") == "rules"
    assert section_name("mypkg.extra:make") == "extra"


def test_registry_is_well_formed():
    assert SECTIONS[0] == "jaxplain.report._foundation:demo_section"
    names = [section_name(s) for s in SECTIONS]
    assert len(set(names)) == len(names), f"duplicate section names in {names}"
    assert all(callable(fn) for _, fn in load_sections())


def test_load_section_errors():
    with pytest.raises(ValueError, match="package.module:function"):
        load_section("jaxplain.report._foundation.demo_section")
    with pytest.raises(ImportError, match="has no 'nothing'"):
        load_section("jaxplain.report._foundation:nothing")
    with pytest.raises(ImportError):
        load_section("jaxplain.no_such_module:demo_section")
    with pytest.raises(TypeError, match="sequence"):
        load_sections("jaxplain.report._foundation:demo_section")


@pytest.mark.parametrize("spec, message", [
    (f"{__name__}:boom", "RuntimeError: section exploded"),
    (f"{__name__}:not_a_section", "returned str, expected jaxplain.report.Section"),
    ("jaxplain.no_such_module:demo_section", "No module named 'jaxplain.no_such_module'"),
])
def test_run_section_turns_failures_into_failed_sections(spec, message):
    section = run_section(None, spec)
    assert section.failed and section.title == f"{section_name(spec)} (failed)"
    assert message in section.error and "Traceback" in section.error


def test_foundation_section(demo_context):
    ctx = demo_context
    section = load_section(SECTIONS[0])(ctx)
    assert isinstance(section, Section) and not section.failed
    predicted = np.argmax(np.asarray(ctx.f(ctx.data.x_test)), -1)
    acc = np.mean(predicted == np.asarray(ctx.data.y_test))
    assert f"test accuracy {acc:.2%}" in section.text
    tables = [i for i in section.items if hasattr(i, "rows")]
    figures = [i for i in section.items if hasattr(i, "png")]
    assert len(tables) == 1 and len(figures) == 3  # samples, training curve, sites
    sites = jaxplain.sites(ctx.f, ctx.data.x_test[:1])
    assert [r[0] for r in tables[0].rows] == [s.name for s in sites]
    assert [r[4] for r in tables[0].rows] == [math.prod(s.shape[1:]) for s in sites]
    assert ("block1/add", "add", "add", "8x8x16", 1024) in tables[0].rows
    without_history = load_section(SECTIONS[0])(
        type(ctx)(**{**ctx.__dict__, "history": None}))
    assert sum(hasattr(i, "png") for i in without_history.items) == 2


def test_foundation_section_without_labels_reports_no_accuracy(demo_context):
    ctx = type(demo_context)(**{**demo_context.__dict__, "labelled": False, "history": None})
    section = load_section(SECTIONS[0])(ctx)
    assert "test accuracy n/a (labels are the model's predictions)" in section.text
    assert "%" not in section.text and "errors" not in section.text
    assert "no errors to show" in section.items[0].caption


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_samples_figure_says_when_there_are_no_errors():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxplain.report._foundation import _samples_figure

    x = np.random.default_rng(0).uniform(size=(12, 8, 8, 1)).astype(np.float32)
    y = np.arange(12) % 3
    perfect = _samples_figure(x, y, y)
    assert _texts(perfect) == ["no errors"]
    wrong = y.copy()
    wrong[4] = (y[4] + 1) % 3
    one_error = _samples_figure(x, y, wrong)
    assert _texts(one_error) == []
    assert one_error.axes[10].get_title() == f"{y[4]} / {wrong[4]}"
    unlabelled = _samples_figure(x, y, y, labelled=False)
    assert _texts(unlabelled) == ["no labels: the model's predictions stand in for them"]
    assert unlabelled.axes[0].get_title() == f"{y[0]}"
    plt.close("all")


@pytest.mark.parametrize("with_labels", [True, False])
def test_explain_tells_the_report_whether_the_labels_are_true(with_labels, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from jaxplain import cli

    rng = np.random.default_rng(0)
    arrays = {"x": rng.uniform(size=(8, 8, 8, 3)).astype(np.float32)}
    if with_labels:
        arrays["y"] = rng.integers(0, 4, 8)
    np.savez(tmp_path / "images.npz", **arrays)
    seen = {}
    monkeypatch.setattr(cli, "_report", lambda specs, out, title, **context: seen.update(context))
    result = CliRunner().invoke(cli.main, [
        "explain", "tests.report._user_models:cnn", "--data", str(tmp_path / "images.npz"),
        "--no-compile-cache", "--only", "foundation", "--out", str(tmp_path / "report")],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["labelled"] is with_labels


@pytest.mark.parametrize("name", ["jaxplain.report", "jaxplain.report._section",
                                  "jaxplain.report._html"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
