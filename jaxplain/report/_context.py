"""What every demo section receives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def no_progress(iterable: Iterable[T], desc: str | None = None, **kwargs: Any) -> Iterable[T]:
    """A silent stand-in for ``tqdm``: returns ``iterable`` unchanged.

    The default ``DemoContext.progress``; a section calls ``ctx.progress(loop, desc=...)``
    the same way whether a bar is shown or not.

    Args:
        iterable: Any iterable.
        desc: The bar's label (ignored).
        **kwargs: Other ``tqdm`` options (ignored).

    Returns:
        ``iterable`` itself.
    """
    del desc, kwargs
    return iterable


@dataclasses.dataclass(frozen=True)
class DemoContext:
    """The inputs of a demo section ``demo_section(ctx) -> Section``.

    Attributes:
        model: The model (``jaxplain demo``: a Flax Linen :class:`jaxplain.data.DigitsCNN`;
            ``jaxplain explain``: what the user's factory returned).
        variables: Its trained variables (None when the model is a plain function).
        f: ``jaxplain.as_function(model, variables)``: ``(batch, ...)`` -> ``(batch, classes)``;
            for the demo ``(batch, 8, 8, 1)`` -> ``(batch, 10)``.
        data: The data set: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the demo's
            :class:`jaxplain.data.Digits`).
        name: What the data are, for the report's text.
        noun: What one example is called in the text (``"digits"``, ``"examples"``).
        key: A PRNG key for the section's randomness (``jaxplain demo --seed``).
        quick: Use a reduced setting (the test suite runs the demo this way; keep each
            section under ~15 s on two CPU cores).
        progress: ``progress(iterable, desc=...)`` wraps a long loop in a progress bar (tqdm
            in the CLI, a no-op by default).
        history: The model's :class:`jaxplain.data.TrainHistory`, when known.
        cache_dir: Where a section finds (or trains and caches) another embedded model it
            needs, e.g. the digits ViT of the transformers section; None: ``$JAXPLAIN_HOME``.
        labelled: Whether ``data``'s labels are true labels; False when they are the model's
            own predictions (``jaxplain explain`` on data without labels), so that no accuracy
            or error is reported.
    """

    model: Any
    variables: Any
    f: Callable[[Any], Any]
    data: Any
    key: Any
    quick: bool = False
    progress: Callable[..., Iterable[Any]] = no_progress
    history: Any = None
    name: str = "scikit-learn's 8x8 digits"
    noun: str = "digits"
    cache_dir: Any = None
    labelled: bool = True
