"""The embedded data set: scikit-learn's 8x8 handwritten digits, as NHWC arrays."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

#: Seed of the fixed stratified train/test split.
SPLIT_SEED = 0
#: Fraction of the 1797 images held out for testing (450 images).
TEST_FRACTION = 0.25


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("x_train", "y_train", "x_test", "y_test"),
    meta_fields=(),
)
@dataclasses.dataclass(frozen=True)
class Digits:
    """The digits data set, split once and for all into a train and a test part.

    Attributes:
        x_train: ``(1347, 8, 8, 1)`` float32 images in ``[0, 1]`` (NHWC).
        y_train: ``(1347,)`` int32 labels in ``0..9``.
        x_test: ``(450, 8, 8, 1)`` float32 images in ``[0, 1]``.
        y_test: ``(450,)`` int32 labels.

    A ``Digits`` is a pytree, so it passes through ``jax.jit`` and ``jax.device_put``.
    """

    x_train: Float[Array, "n_train 8 8 1"]
    y_train: Int[Array, " n_train"]
    x_test: Float[Array, "n_test 8 8 1"]
    y_test: Int[Array, " n_test"]


def load_digits() -> Digits:
    """Loads scikit-learn's digits (shipped inside scikit-learn; no download).

    The 1797 grey-level images (values 0..16) are scaled to ``[0, 1]`` by dividing by 16 and
    split with a stratified split of fixed seed (:data:`SPLIT_SEED`), 25% for testing, so every
    call returns the same arrays.

    Returns:
        A :class:`Digits` with ``x_*`` of shape ``(n, 8, 8, 1)`` (float32) and ``y_*`` of shape
        ``(n,)`` (int32).

    Example:
        >>> from jaxplain import data
        >>> d = data.load_digits()
        >>> d.x_train.shape, d.x_test.shape
        ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    x, y = _split()
    return Digits(*(jnp.asarray(a) for a in (x[0], y[0], x[1], y[1])))


@functools.cache
def _split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn import datasets, model_selection

    raw = datasets.load_digits()
    images = (raw.images / 16.0).astype(np.float32)[..., None]
    labels = raw.target.astype(np.int32)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    for a in (x_train, x_test, y_train, y_test):
        a.setflags(write=False)
    return (x_train, x_test), (y_train, y_test)
