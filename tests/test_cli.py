"""The ``jaxplain`` command, end to end on the session's model (quick mode)."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from jaxplain.cli import main
from jaxplain.report import section_name
from jaxplain.report import _demo_sections


def fails(ctx):
    raise ValueError("deliberate failure")


@pytest.fixture
def runner(jaxplain_home, digits_model, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))  # the session's trained model
    return CliRunner()


def test_demo_quick_writes_the_report_with_every_section(runner, tmp_path):
    result = runner.invoke(main, ["demo", "--quick", "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    index = tmp_path / "report" / "index.html"
    assert f"Report: {index.resolve()}" in result.output
    assert re.search(r"Test accuracy: 9[7-9]\.\d\d% on 450 held-out digits", result.output)
    html = index.read_text()
    specs = _demo_sections.SECTIONS
    assert html.count("<section ") == len(specs) and 'class="failed"' not in html
    for i, spec in enumerate(specs, 1):
        assert f"[{i}/{len(specs)}] {section_name(spec)}" in result.output
    assert "The model and its sites" in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert (index.parent / src).stat().st_size > 0
    report = json.loads((index.parent / "report.json").read_text())
    assert len(report["sections"]) == len(specs)
    assert not any(s["failed"] for s in report["sections"])
    assert sum(i["type"] == "table" for s in report["sections"] for i in s["items"]) \
        == html.count("<table>")


def test_demo_only_runs_the_chosen_sections(runner, tmp_path):
    args = ["demo", "--quick", "--only", "foundation", "--no-compile-cache", "--out", str(tmp_path)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Compiled programs" not in result.output
    assert "[1/1] foundation" in result.output and "block1/relu_1" in result.output
    assert (tmp_path / "index.html").read_text().count("<section ") == 1


def test_demo_keeps_compiled_programs_under_jaxplain_home(jaxplain_home, digits_model, tmp_path):
    """In a process of its own: the suite's processes already use a compilation cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(JAXPLAIN_HOME=str(jaxplain_home), MPLBACKEND="Agg")
    command = [sys.executable, "-c", "from jaxplain.cli import main; main()", "demo", "--quick",
               "--only", "rules", "--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Compiled programs cached in {jaxplain_home / 'xla'}" in result.stdout
    assert any((jaxplain_home / "xla").iterdir())


def test_demo_unknown_section_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["demo", "--only", "foundation,nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown section(s) nope" in result.output and "foundation" in result.output
    assert not (tmp_path / "index.html").exists()


def test_failing_section_is_reported_and_exits_nonzero(runner, tmp_path, monkeypatch):
    monkeypatch.setattr(_demo_sections, "SECTIONS",
                        (f"{__name__}:fails", "jaxplain.report._foundation:demo_section"))
    result = runner.invoke(main, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "ValueError: deliberate failure" in result.stderr
    assert "1 section(s) failed: test_cli" in result.stderr
    html = (tmp_path / "index.html").read_text()
    assert 'class="failed"' in html and "deliberate failure" in html
    assert "The model and its sites" in html  # the other section still ran


def test_sites_command_lists_the_default_models_sites(runner):
    result = runner.invoke(main, ["sites"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["site", "kind", "op", "shape"]
    assert [line.split()[0] for line in lines[1:]] == [
        "conv1", "relu", "block1/conv_a", "block1/relu", "block1/conv_b", "block1/add",
        "block1/relu_1", "block1", "avg_pool", "fc1", "relu_1", "head"]
    assert lines[-1].split() == ["head", "module", "module", "10"]
