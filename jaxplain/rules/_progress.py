"""What ``mine(progress=True)`` shows: a tqdm bar per search level, a line per accepted rule.

A level is one batch of candidate heads of one size for one layer pair (the seeds, then each
head-growth level); its bar counts the heads scored, kernel batch by kernel batch, and shows
the best gain found so far in the search for the current rule. ``NO_PROGRESS`` does nothing,
so a search without progress pays one method call per device call.
"""

from __future__ import annotations

import math
import sys
import time


class _NoProgress:
    def level(self, rule: int, pair: tuple[str, str], head_size: int, total: int) -> None:
        pass

    def scored(self, count: int, best_gain: float) -> None:
        pass

    def accepted(self, index: int, rule, compression: float) -> None:
        pass

    def close(self) -> None:
        pass


NO_PROGRESS = _NoProgress()


class SearchProgress(_NoProgress):
    """tqdm bars on stderr (as ``jaxplain.data.train`` and ``metrics.roar`` show theirs)."""

    def __init__(self):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._bar = None
        self._rule = None
        self._best = math.inf
        self._start = time.perf_counter()

    def level(self, rule, pair, head_size, total):
        self._close_bar()
        if rule != self._rule:           # a new rule's search: its best gain starts afresh
            self._rule, self._best = rule, math.inf
        a, b = pair
        self._bar = self._tqdm(total=total, desc=f"rule {rule}: {a}->{b} heads of {head_size}",
                               unit="head", leave=False)
        self._bar.set_postfix_str(self._postfix(), refresh=False)

    def scored(self, count, best_gain):
        self._best = min(self._best, best_gain)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(count)

    def accepted(self, index, rule, compression):
        self._close_bar()
        self._tqdm.write(f"accepted rule {index} ({time.perf_counter() - self._start:.1f} s): "
                         f"{rule}  gain {float(rule.gain):.1f} bits; L = {compression:.2f}%",
                         file=sys.stderr)

    def close(self):
        self._close_bar()

    def _postfix(self) -> str:
        return ("best gain: none yet" if not math.isfinite(self._best)
                else f"best gain {self._best:.1f} bits")

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def search_progress(enabled: bool) -> _NoProgress:
    """``SearchProgress()`` if ``enabled`` else ``NO_PROGRESS``."""
    if not isinstance(enabled, bool):
        raise TypeError(f"progress must be True or False, got {enabled!r}")
    return SearchProgress() if enabled else NO_PROGRESS
