"""Loading and running the registered demo sections."""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Sequence

from jaxplain.report._context import DemoContext
from jaxplain.report._section import Section

SectionFn = Callable[[DemoContext], Section]


def section_name(spec: str) -> str:
    """The short name of a section spec, as ``jaxplain demo --only`` takes it.

    ``"jaxplain.rules._demo:demo_section"`` -> ``"rules"`` (a module named ``_demo`` is named
    after its package); ``"jaxplain.report._foundation:demo_section"`` -> ``"foundation"``.

    Args:
        spec: A section spec ``"package.module:function"``.

    Returns:
        The module's name without leading underscores (its package's for ``_demo``).

    Raises:
        ValueError: If ``spec`` is not of the form ``"module:function"``.
    """
    module = _split(spec)[0].split(".")
    last = module[-1].lstrip("_")
    return module[-2].lstrip("_") if last == "demo" and len(module) > 1 else last


def load_section(spec: str) -> SectionFn:
    """Imports ``"package.module:function"`` and returns the function.

    Args:
        spec: A section spec ``"package.module:function"``.

    Returns:
        The function ``demo_section(ctx: DemoContext) -> Section`` it names.

    Raises:
        ValueError: If ``spec`` is not of the form ``"module:function"``.
        ImportError: If the module or the function cannot be found.
    """
    module_name, attr = _split(spec)
    module = importlib.import_module(module_name)
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ImportError(f"section {spec!r}: module {module_name} has no {attr!r}") from None
    if not callable(fn):
        raise ImportError(f"section {spec!r}: {attr!r} is not callable")
    return fn


def load_sections(specs: Sequence[str] | None = None) -> tuple[tuple[str, SectionFn], ...]:
    """``(name, function)`` for each spec (default: the registry ``SECTIONS``), in order.

    Args:
        specs: Section specs ``"package.module:function"``; None: the demo's registry
            (``jaxplain/report/_demo_sections.py``).

    Returns:
        A tuple of ``(section_name(spec), load_section(spec))`` pairs, one per spec.

    Raises:
        TypeError: If ``specs`` is a single str rather than a sequence of them.
        ValueError, ImportError: As :func:`load_section`, for the first bad spec.
    """
    return tuple((section_name(s), load_section(s)) for s in _specs(specs))


def run_section(ctx: DemoContext, spec: str) -> Section:
    """Loads and runs one section; a failure becomes a failed :class:`Section`, not an error.

    The failed section's ``error`` holds the traceback, and its title names the section.

    Args:
        ctx: The :class:`DemoContext` passed to the section function.
        spec: A section spec ``"package.module:function"``.

    Returns:
        The section the function returned, or ``Section("<name> (failed)", error=traceback)``
        if loading or running it raised (or it returned something else than a Section).
    """
    try:
        section = load_section(spec)(ctx)
        if not isinstance(section, Section):
            raise TypeError(
                f"{spec} returned {type(section).__name__}, expected jaxplain.report.Section"
            )
        return section
    except Exception:  # a broken section must not take the whole demo down
        return Section(f"{section_name(spec)} (failed)", error=traceback.format_exc())


def _specs(specs: Sequence[str] | None) -> tuple[str, ...]:
    if specs is None:
        from jaxplain.report._demo_sections import SECTIONS

        return SECTIONS
    if isinstance(specs, str):
        raise TypeError(f"specs must be a sequence of 'module:function' strings, got {specs!r}")
    return tuple(specs)


def _split(spec: str) -> tuple[str, str]:
    module, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (sep and module and attr.isidentifier()):
        raise ValueError(f"a section spec must look like 'package.module:function', got {spec!r}")
    return module, attr
