"""The files ``jaxplain demo`` writes: an unwritable or ``~`` --out, the training bar off a
terminal, the compiled-programs line, and two runs writing one report folder. The model is the
untrained default one (training faked, as in tests/data/test_cache_sharing.py) and the section
a one-liner, so each test takes about a second."""

import threading

import jax
import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain import cli
from jaxplain.cli import main
from jaxplain.data import _pretrained
from jaxplain.report import Figure, Section, _demo_sections, _html, write_report
from tests.data.test_cache_sharing import fake_train

ran = []


def quick_section(ctx):
    ran.append(ctx)
    return Section("Quick", text="one line")


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """A CliRunner on a fresh cache (training faked, its calls in ``runner.trained``) and the
    quick section alone."""
    trained = []

    def train(*args, **kwargs):
        trained.append(kwargs)
        return fake_train(*args, **kwargs)

    monkeypatch.setattr(_pretrained, "train", train)
    monkeypatch.setenv("JAXPLAIN_HOME", str(tmp_path / "jaxplain_home"))
    monkeypatch.setattr(_demo_sections, "SECTIONS", (f"{__name__}:quick_section",))
    ran.clear()
    result = CliRunner()
    result.trained = trained
    return result


@pytest.mark.parametrize("command", [["demo"], ["explain", "tests.report._user_models:mlp"]])
def test_unwritable_out_is_a_usage_error_before_any_section(runner, tmp_path, command):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "report"
    if command[0] == "explain":
        np.savez(tmp_path / "data.npz", x=np.zeros((4, 12), np.float32))
        command = command + ["--data", str(tmp_path / "data.npz")]
    result = runner.invoke(main, command + ["--no-compile-cache", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert str(out) in result.output and "--out" in result.output
    assert not ran and not runner.trained          # nothing ran: the error comes first


def test_tilde_in_out_is_the_home_folder(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["demo", "--no-compile-cache", "--out", "~/report"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "user" / "report" / "index.html").is_file()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("command", [["demo", "--no-compile-cache"], ["sites"]])
def test_training_bar_shows_on_a_terminal_only(runner, tmp_path, command):
    """CliRunner's stderr is not a terminal: like the sections' bars, training's is off."""
    args = command + (["--out", str(tmp_path / "report")] if command[0] == "demo" else [])
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [kwargs["progress"] for kwargs in runner.trained] == [False]


def looping_section(ctx):
    """A section with a long loop: it reports its steps through ``ctx.progress``."""
    ran.append(ctx)
    for _ in ctx.progress(range(3), desc="probe loop"):
        pass
    return Section("Looping", text="three steps")


def interrupted_section(ctx):
    raise KeyboardInterrupt


def test_progress_flag_shows_the_bars_off_a_terminal(runner, tmp_path, monkeypatch):
    """--progress in a log: training's bar and the sections' bars on stderr; default off."""
    monkeypatch.setattr(_demo_sections, "SECTIONS", (f"{__name__}:looping_section",))
    out = ["--no-compile-cache", "--out", str(tmp_path / "report")]
    shown = runner.invoke(main, ["demo", "--progress", *out])
    assert shown.exit_code == 0, shown.output
    assert "probe loop" in shown.stderr and "probe loop" not in shown.stdout
    assert [kwargs["progress"] for kwargs in runner.trained] == [True]
    quiet = runner.invoke(main, ["demo", *out])
    assert quiet.exit_code == 0, quiet.output
    assert "probe loop" not in quiet.stderr


def test_ctrl_c_keeps_the_finished_sections(runner, tmp_path, monkeypatch):
    """Ctrl-C in the second section: the first is written, the second marked interrupted, the
    third named as not run; exit status 130. Interrupted before any section finished, an
    earlier report is left as it was."""
    out = tmp_path / "report"
    monkeypatch.setattr(_demo_sections, "SECTIONS", (f"{__name__}:interrupted_section",))
    result = runner.invoke(main, ["demo", "--no-compile-cache", "--out", str(out)])
    assert result.exit_code == 130 and "nothing written" in result.stderr
    assert not (out / "index.html").exists()
    monkeypatch.setattr(_demo_sections, "SECTIONS", (
        f"{__name__}:quick_section", f"{__name__}:interrupted_section",
        f"{__name__}:looping_section"))
    result = runner.invoke(main, ["demo", "--no-compile-cache", "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert "Interrupted in test_cli_files" in result.stderr
    html = (out / "index.html").read_text()
    assert "one line" in html and 'class="failed"' in html and "(interrupted)" in html
    assert "Not run: test_cli_files" in html and "three steps" not in html


@pytest.fixture
def compile_cache_dir():
    """JAX's compilation cache folder, put back after the test."""
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


@pytest.mark.parametrize("own", [False, True])
def test_compiled_programs_line_says_when_nothing_can_be_cached(tmp_path, monkeypatch,
                                                                compile_cache_dir, own):
    (tmp_path / "file").write_text("a file, not a folder")
    folder = tmp_path / "file" / "xla"
    monkeypatch.setenv("JAXPLAIN_HOME", str(tmp_path / "file"))
    jax.config.update("jax_compilation_cache_dir", str(folder) if own else None)
    line = cli._cache_compiled_programs()
    assert "not cached" in line and str(folder) in line and "cached in" not in line
    assert jax.config.jax_compilation_cache_dir == (str(folder) if own else None)
    # A writable folder is used and said so.
    monkeypatch.setenv("JAXPLAIN_HOME", str(tmp_path / "home"))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "own") if own else None)
    line = cli._cache_compiled_programs()
    assert line == f"Compiled programs cached in {jax.config.jax_compilation_cache_dir}"
    assert (tmp_path / ("own" if own else "home/xla")).is_dir()


def test_two_runs_writing_one_folder_leave_one_runs_page_and_figures(tmp_path, monkeypatch):
    """Run A stops between moving its figures/ and its index.html into place; run B writes the
    same folder meanwhile. Whichever finishes last, page and figures come from one run."""
    sections = {tag: Section("Attribution", text=f"run {tag}", items=(Figure(tag.encode()),))
                for tag in "AB"}
    a_between, b_done = threading.Event(), threading.Event()
    replace = _html.os.replace

    def slow_replace(src, dst):
        replace(src, dst)
        if threading.current_thread().name == "A" and str(dst).endswith("figures"):
            a_between.set()
            b_done.wait(timeout=1.0)   # B waits for the folder's lock: A goes on after 1 s

    monkeypatch.setattr(_html.os, "replace", slow_replace)

    def run_b():
        a_between.wait(timeout=10)
        write_report([sections["B"]], tmp_path, title="B")
        b_done.set()

    threads = [threading.Thread(target=write_report, name="A",
                                args=([sections["A"]], tmp_path), kwargs={"title": "A"}),
               threading.Thread(target=run_b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    page = (tmp_path / "index.html").read_text()
    figures = [p.read_bytes() for p in (tmp_path / "figures").iterdir()]
    assert len(figures) == 1
    assert f"run {figures[0].decode()}" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "index.html", "report.json"]
