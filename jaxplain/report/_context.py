"""What every demo section receives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def no_progress(iterable: Iterable[T], desc: str | None = None, **kwargs: Any) -> Iterable[T]:
    """A silent stand-in for ``tqdm``: returns ``iterable`` unchanged."""
    del desc, kwargs
    return iterable


@dataclasses.dataclass(frozen=True)
class DemoContext:
    """The inputs of a demo section ``demo_section(ctx) -> Section``.

    Attributes:
        model: The default model (a Flax Linen :class:`jaxplain.data.DigitsCNN`).
        variables: Its trained variables.
        f: ``jaxplain.as_function(model, variables)``: ``(batch, 8, 8, 1)`` -> ``(batch, 10)``.
        digits: The :class:`jaxplain.data.Digits` data set.
        key: A PRNG key for the section's randomness (``jaxplain demo --seed``).
        quick: Use a reduced setting (the test suite runs the demo this way; keep each
            section under ~15 s on two CPU cores).
        progress: ``progress(iterable, desc=...)`` wraps a long loop in a progress bar (tqdm
            in the CLI, a no-op by default).
        history: The model's :class:`jaxplain.data.TrainHistory`, when known.
    """

    model: Any
    variables: Any
    f: Callable[[Any], Any]
    digits: Any
    key: Any
    quick: bool = False
    progress: Callable[..., Iterable[Any]] = no_progress
    history: Any = None
