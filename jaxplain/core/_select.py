"""The one selection language: a name, a glob, a list of names/globs, or a predicate."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Sequence

from jaxplain.core._sites import Site

Selector = str | Sequence[str] | Callable[[str, Site], bool]


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def matches(selector: Selector, site: Site) -> bool:
    """True when `site` is picked by `selector` (no error for unknown names)."""
    if callable(selector):
        return bool(selector(site.name, site))
    patterns = (selector,) if isinstance(selector, str) else tuple(selector)
    return any(fnmatch.fnmatchcase(site.name, p) if _is_glob(p) else site.name == p for p in patterns)


def unknown_site_error(name: str, known: Iterable[str], what: str = "site") -> ValueError:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"Unknown {what} {name!r}.{hint} Known sites: {', '.join(known) or '(none)'}. (Sites "
        "are the values computed from x: a layer that reads only constants, such as a second "
        "input closed over by f, is not one.)"
    )


def select(sites: Sequence[Site], selector: Selector) -> tuple[str, ...]:
    """Names of `sites` picked by `selector`, in program order.

    Args:
      sites: the model's sites (from :func:`jaxplain.sites`).
      selector: a site name, a glob (``"block1/*"``), a sequence of names/globs, or a predicate
        ``(name, site) -> bool``.

    Returns:
      The selected names. A plain name that is not a site, or a glob that matches nothing,
      raises ValueError listing close matches.
    """
    if callable(selector):
        return tuple(s.name for s in sites if selector(s.name, s))
    if isinstance(selector, str):
        patterns: tuple[str, ...] = (selector,)
    else:
        patterns = tuple(selector)
        if not all(isinstance(p, str) for p in patterns):
            raise TypeError(f"selector must be a str, a sequence of str or a predicate; got {selector!r}")
    names = [s.name for s in sites]
    for p in patterns:
        hit = fnmatch.filter(names, p) if _is_glob(p) else [n for n in names if n == p]
        if not hit:
            raise unknown_site_error(p, names)
    return tuple(s.name for s in sites if matches(patterns, s))


def one_site(names: Sequence[str], selector: str, what: str = "site") -> str:
    """The one name of `names` that `selector` picks: the name itself, or the single match of
    a glob. A ValueError lists the matches of a glob that picks several, or the close matches
    of one that picks none; a TypeError for anything but a str."""
    if not isinstance(selector, str):
        raise TypeError(f"{what} must be a site name (str), got {type(selector).__name__}: "
                        f"{selector!r}")
    if selector in names:
        return selector
    hits = fnmatch.filter(names, selector) if _is_glob(selector) else []
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ValueError(f"{what} {selector!r} matches {len(hits)} sites ({', '.join(hits)}), "
                         f"but one is read here: pass one of them by name")
    raise unknown_site_error(selector, names, what=what)
