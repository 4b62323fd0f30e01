"""The default model as a plain function of a batch."""

from __future__ import annotations

import os
from collections.abc import Callable

from jaxtyping import Array, Float

from jaxplain.data._pretrained import pretrained


def digits_function(
    cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> Callable[[Float[Array, "batch 8 8 1"]], Float[Array, "batch 10"]]:
    """The pretrained default model as ``f(x) -> logits``, i.e. ``as_function(*pretrained())``.

    Args:
        cache_dir: The cache folder (see :func:`jaxplain.data.pretrained`).
        progress: Show a progress bar if the model has to be trained.

    Returns:
        A pure function from ``(batch, 8, 8, 1)`` images in ``[0, 1]`` to ``(batch, 10)`` logits.
    """
    import jaxplain

    model, variables = pretrained(cache_dir, progress=progress)
    return jaxplain.as_function(model, variables)
