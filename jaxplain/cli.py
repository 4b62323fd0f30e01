"""The ``jaxplain`` command: ``jaxplain demo``, ``jaxplain explain`` and ``jaxplain sites``."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.group()
@click.version_option(package_name="jaxplain")
def main() -> None:
    """jaxplain: functional interpretability for JAX models."""


def _report_options(sections: str):
    """The options ``demo`` and ``explain`` share: --out, --quick, --seed and --only."""
    options = (
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("jaxplain-report"),
            show_default=True,
            help="Folder to write the report (index.html, figures/ and report.json) into.",
        ),
        click.option("--quick", is_flag=True,
                     help="Reduced settings for every section (seconds each)."),
        click.option(
            "--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
            help="Seed of the sections' PRNG key (0 to 2**32 - 1: JAX keeps 32 bits of it)."
        ),
        click.option(
            "--compile-cache/--no-compile-cache",
            default=True,
            show_default=True,
            help="Keep XLA's compiled programs under $JAXPLAIN_HOME/xla, so that a second run "
            "skips most compilation (ignored when JAX_COMPILATION_CACHE_DIR is set).",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Show progress bars on stderr (model training, the rules and sub-network "
            "searches, long loops); default: on a terminal only, as in a log they would fill it.",
        ),
        click.option(
            "--only",
            multiple=True,
            metavar="SECTION",
            help=f"Run only this section, by name ({sections}); repeatable or comma-separated.",
        ),
    )

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@main.command()
@_report_options("foundation, attribution, rules, ...")
def demo(out: Path, quick: bool, seed: int, compile_cache: bool, progress: bool | None,
         only: tuple[str, ...]) -> None:
    """Train (or load) the default digits CNN, explain it with every family, write a report.

    The model (and, unless --no-compile-cache, XLA's compiled programs) is cached under
    $JAXPLAIN_HOME (default ~/.cache/jaxplain). A failing section is reported and marked in the
    report, and the command then exits with status 1.
    """
    import matplotlib

    matplotlib.use("Agg")
    from jaxplain.report._demo_sections import SECTIONS

    specs = _chosen(SECTIONS, only)
    out = _writable_out(out)
    progress = _on_terminal() if progress is None else progress
    if compile_cache:
        click.echo(_cache_compiled_programs())

    import jaxplain
    from jaxplain import data

    digits = data.load_digits()
    model, variables = data.pretrained(progress=progress)
    info = data.checkpoint_info()
    f = jaxplain.as_function(model, variables)
    acc = data.accuracy(f, digits.x_test, digits.y_test)
    click.echo(f"Model: {type(model).__name__} from {info.path}")
    click.echo(f"Test accuracy: {acc:.2%} on {digits.x_test.shape[0]} held-out digits")

    _report(specs, out, "jaxplain demo: explaining a digits CNN", seed=seed, quick=quick,
            progress=progress, model=model, variables=variables, f=f, data=digits, history=info.history)


@main.command()
@click.argument("model_spec", metavar="MODEL")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An .npz with 'x' (finite floating point, scaled as the model expects; batch first; "
    "images NHWC, or NCHW for a channels-first model) and optional int labels 'y' (in [0, "
    "classes)), or 'x_train', 'x_test' and optional 'y_train', 'y_test' (or 'x_test' and "
    "'y_test' alone). One 'x' (or 'x_test' alone) is both the training and the test set; the "
    "model's predictions stand in for labels the file lacks.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Passed to MODEL (then a function of one argument) to restore your weights.",
)
@_report_options("foundation, attribution, rules, ...")
def explain(model_spec: str, data_path: Path, checkpoint: Path | None, out: Path, quick: bool,
            seed: int, compile_cache: bool, progress: bool | None,
            only: tuple[str, ...]) -> None:
    """Explain your own classifier on your data: the demo's report for any model.

    MODEL is 'package.module:name' (importable from the current folder): a model function
    f(x) -> logits, a Flax NNX or Equinox module, a (Linen module, variables) pair, or a
    function returning one of those (called with the --checkpoint path when given). Every
    section of the demo runs, choosing its sites from the model: rules, pathways and
    sub-networks use the ReLU sites, feature visualization the spatial ones (images only).
    """
    import matplotlib

    matplotlib.use("Agg")
    import jax

    from jaxplain.report._demo_sections import SECTIONS
    from jaxplain.report._user import ModelCallError, channels_last, same_sets

    specs = _chosen(SECTIONS, only)
    cache = _cache_compiled_programs() if compile_cache else None
    model, variables, f, data, predicted = _user_model_and_data(model_spec, data_path,
                                                                checkpoint)
    out = _writable_out(out)
    if cache:
        click.echo(cache)
    try:
        f, data, moved = channels_last(f, data, model=model_spec)
    except ModelCallError as e:
        raise _usage_error(e, model_spec, model, checkpoint) from e
    if moved:
        click.echo("The model reads its inputs channels first: the report shows and renders "
                   "them channels last (NWC, NHWC or NDHWC).")
    labelled = "test" not in predicted
    acc = float((jax.numpy.argmax(jax.jit(f)(data.x_test), -1) == data.y_test).mean())
    size = (f"{len(data.x_test)} examples, both the training and the test set,"
            if same_sets(data) else
            f"{len(data.x_train)} training / {len(data.x_test)} test examples")
    click.echo(f"Model: {model_spec} ({type(model).__name__})")
    click.echo(f"Data: {data_path} ({size} of shape {data.x_test.shape[1:]})")
    if labelled:
        click.echo(f"Test accuracy: {acc:.2%}")
    if predicted:
        click.echo(_PREDICTED[predicted][0])
    _report(specs, out, f"jaxplain explain: {model_spec}", seed=seed, quick=quick,
            progress=_on_terminal() if progress is None else progress, model=model, variables=variables, f=f, data=data, noun="examples", labelled=labelled,
            name=data_path.name + _PREDICTED.get(predicted, ("", ""))[1])


#: What the report says where labels are the model's predictions: a line, a suffix of the name.
_PREDICTED = {
    ("training", "test"): ("No labels in the data: the model's predictions stand in for them.",
                           " (labels: the model's predictions)"),
    ("training",): ("No y_train in the data: the model's predictions stand in for the training "
                    "labels (the test labels are the file's).",
                    " (training labels: the model's predictions)"),
    ("test",): ("No y_test in the data: the model's predictions stand in for the test labels.",
                " (test labels: the model's predictions)"),
}


def _user_model_and_data(model_spec: str, data_path: Path, checkpoint: Path | None) -> tuple:
    """``(model, variables, f, data, predicted)`` of MODEL and --data (``predicted``: the sets
    whose labels are the model's predictions), bad ones as usage errors."""
    import sys

    from jaxplain.report._user import ModelCallError, load_data, load_model

    if str(Path.cwd()) not in sys.path:  # MODEL is importable from the current folder
        sys.path.insert(0, str(Path.cwd()))
    try:
        model, variables, f = load_model(model_spec, checkpoint)
        data, predicted = load_data(data_path, f, model=model_spec)
    except ModelCallError as e:
        raise _usage_error(e, model_spec, model, checkpoint) from e
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    return model, variables, f, data, predicted


def _usage_error(error, model_spec: str, model, checkpoint: Path | None) -> click.UsageError:
    """A ModelCallError of ``model`` (from MODEL) as a usage error with what to try."""
    from jaxplain.report._user import call_hint

    return click.UsageError(f"{error}{call_hint(model_spec, model, checkpoint, error)}")


def _cache_compiled_programs() -> str:
    """Turn on JAX's persistent compilation cache in ``$JAXPLAIN_HOME/xla``, unless the user
    chose a folder of their own (``JAX_COMPILATION_CACHE_DIR``), and say where (the line to
    print once the arguments are validated). Programs that took at least 0.2 s to compile are
    kept; a second report then spends far less time compiling. Where ``$JAXPLAIN_HOME/xla``
    cannot be written, the programs already there are read and no new ones are kept."""
    import jax

    from jaxplain.core._folders import cannot_write
    from jaxplain.data._pretrained import home

    own = jax.config.jax_compilation_cache_dir is None
    folder = home() / "xla" if own else Path(jax.config.jax_compilation_cache_dir)
    reason = cannot_write(folder)
    # A read-only folder is still read; nothing is written to it (each write would warn).
    if own and (reason is None or folder.is_dir()):
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          0.2 if reason is None else float("inf"))
    if reason is None:
        return f"Compiled programs cached in {folder}"
    if folder.is_dir():
        return (f"Compiled programs read from {folder}; new ones are not cached: it cannot be "
                f"written ({reason})")
    return f"Compiled programs are not cached: {folder} cannot be written ({reason})"


def _writable_out(out: Path) -> Path:
    """--out with ``~`` expanded, created and checked before any section runs: a report that
    cannot be written would otherwise be lost after minutes of work (a usage error instead)."""
    from jaxplain.core._folders import cannot_write

    out = out.expanduser()
    reason = cannot_write(out)
    if reason is not None:
        raise click.BadParameter(f"the report folder {out} cannot be written ({reason}); "
                                 "choose a folder you can write to", param_hint="--out")
    return out


def _on_terminal() -> bool:
    """Whether progress bars are shown: on a terminal only, as redirected to a log they would
    fill it."""
    import sys

    return sys.stderr.isatty()


def _report(specs: tuple[str, ...], out: Path, title: str, *, seed: int, quick: bool,
            progress: bool, **context) -> None:
    """Run the sections on a ``DemoContext(**context)`` (a failing one is reported and
    marked), write the report, and exit with status 1 when a section failed. With `progress`,
    long loops show transient bars on stderr.

    Ctrl-C keeps what is done: the sections finished so far are written, the interrupted one
    marked as such (nothing is written when none had finished, so an earlier report stays),
    and the command exits with status 130."""
    import functools

    import jax
    from tqdm.auto import tqdm

    from jaxplain.report import DemoContext, no_progress, run_section, section_name, write_report

    bars = functools.partial(tqdm, leave=False) if progress else no_progress
    ctx = DemoContext(key=jax.random.key(seed), quick=quick, progress=bars, **context)

    sections, failed = [], []
    for i, spec in enumerate(specs, 1):
        name = section_name(spec)
        click.secho(f"\n[{i}/{len(specs)}] {name}", bold=True)
        start = time.perf_counter()
        try:
            section = run_section(ctx, spec)
        except KeyboardInterrupt:
            _interrupted(sections, specs[i:], name, time.perf_counter() - start, out, title)
        elapsed = time.perf_counter() - start
        sections.append(section)
        if section.failed:
            failed.append(name)
            click.echo(section.error, err=True)
            click.secho(f"{name} FAILED after {elapsed:.1f} s", fg="red", err=True)
        else:
            if section.text:
                click.echo(section.text)
            click.echo(f"({elapsed:.1f} s)")

    path = write_report(sections, out, title=title)
    click.echo(f"\nReport: {path.resolve()}")
    if failed:
        click.secho(f"{len(failed)} section(s) failed: {', '.join(failed)}", fg="red", err=True)
        raise SystemExit(1)


def _interrupted(sections: list, rest: tuple[str, ...], name: str, seconds: float, out: Path,
                 title: str) -> None:
    """After Ctrl-C in section `name`: write the finished `sections` and a marked one for
    `name` (where any had finished), say so, and exit with status 130."""
    from jaxplain.report import Section, section_name, write_report

    click.secho(f"\nInterrupted in {name} after {seconds:.1f} s.", fg="yellow", err=True)
    if not sections:
        click.echo(f"No section had finished: nothing written to {out}.", err=True)
        raise SystemExit(130)
    skipped = ", ".join(section_name(s) for s in rest) or "none"
    note = Section(f"{name} (interrupted)",
                   error=f"Interrupted (Ctrl-C) after {seconds:.1f} s. Not run: {skipped}.")
    path = write_report([*sections, note], out, title=f"{title} (interrupted)")
    click.echo(f"Report of the {len(sections)} finished section(s): {path.resolve()}", err=True)
    raise SystemExit(130)


@main.command()
@click.argument("model_spec", metavar="[MODEL]", required=False)
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="With MODEL: an .npz as for 'jaxplain explain' (its 'x' or "
              "'x_test' gives the input shape).")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="With MODEL: passed to it to restore your weights, as for 'jaxplain explain'.")
def sites(model_spec: str | None, data_path: Path | None, checkpoint: Path | None) -> None:
    """Print a model's sites (name, kind, op, shape per example): the default digits CNN's,
    or, given MODEL (as for 'jaxplain explain') and --data, your model's."""
    import jaxplain
    from jaxplain import data

    if model_spec is None:
        if data_path is not None or checkpoint is not None:
            raise click.UsageError("--data and --checkpoint are for a MODEL of your own")
        x = data.load_digits().x_test[:2]
        f = data.digits_function(progress=_on_terminal())
    else:
        if data_path is None:
            raise click.UsageError("MODEL needs --data: the sites are read at its input shape")
        _, _, f, own, _ = _user_model_and_data(model_spec, data_path, checkpoint)
        x = own.x_test[:2]
    rows = [(s.name, s.kind, s.op, "x".join(map(str, s.shape[1:])))
            for s in jaxplain.sites(f, x)]
    widths = [max(len(r[i]) for r in rows + [("site", "kind", "op", "shape")]) for i in range(4)]
    for row in [("site", "kind", "op", "shape"), *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _chosen(specs: tuple[str, ...], only: tuple[str, ...]) -> tuple[str, ...]:
    """The sections --only names (all without it); naming none or an unknown one is a usage
    error (an empty --only "$SECTIONS" would otherwise write a report of no section over the
    last one)."""
    from jaxplain.report import section_name

    if not only:
        return specs
    names = {section_name(s) for s in specs}
    wanted = {w.strip() for item in only for w in item.split(",") if w.strip()}
    if not wanted:
        raise click.BadParameter(
            f"names no section ({', '.join(map(repr, only))}); choose from "
            f"{', '.join(section_name(s) for s in specs)}, or leave --only out to run them all",
            param_hint="--only")
    unknown = sorted(wanted - names)
    if unknown:
        raise click.BadParameter(
            f"unknown section(s) {', '.join(unknown)}; "
            f"choose from {', '.join(section_name(s) for s in specs)}",
            param_hint="--only",
        )
    return tuple(s for s in specs if section_name(s) in wanted)
