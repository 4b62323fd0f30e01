"""Remove-and-retrain (ROAR) and keep-and-retrain (KAR) on the embedded digits.

Perturbation metrics evaluate the model on inputs it never saw; ROAR retrains the model on the
perturbed data instead, so a drop in accuracy means the removed pixels carried the information,
not that the model was surprised by the replacement value.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _perturb as P


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=("fractions", "accuracy"), meta_fields=()
)
@dataclasses.dataclass(frozen=True)
class RetrainResult:
    """Test accuracy of a model retrained on images with features removed or kept.

    Attributes:
        fractions: ``(q,)`` fraction of pixels removed (ROAR) or kept (KAR).
        accuracy: ``(q,)`` test accuracy after retraining from scratch at each fraction.
    """

    fractions: Float[Array, " q"]
    accuracy: Float[Array, " q"]


@functools.partial(jax.jit, static_argnames=("keep",))
def replace_top(x, maps, fill, count, *, keep):
    """Replace the ``count`` most relevant pixels (by ``|map|``, channels summed) by ``fill``.

    With ``keep=True`` the ``count`` most relevant pixels are kept and all others replaced.
    """
    rank = P.ranks(P.feature_scores(maps, True, True), "morf").reshape(x.shape[:3] + (1,))
    chosen = rank < count
    return jnp.where(chosen != keep, fill, x)


def _maps(f, method, x, chunk):
    out = []
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk]
        out.append(method(f, xb, jnp.argmax(f(xb), axis=-1)))
    return jnp.concatenate(out)


def _retrain(method, keep, f, digits, key, fractions, epochs, model, learning_rate, chunk,
             progress):
    from jaxplain import data

    checks.check_method(method)
    q = checks.check_fractions(fractions)
    checks.check_positive_int(epochs, "epochs")
    checks.check_positive_int(chunk, "chunk")
    defaulted = digits is None
    digits = checks.check_digits(data.load_digits() if defaulted else digits)
    if f is None:
        model_default, variables = data.pretrained()
        from jaxplain.core import as_function

        f = as_function(model_default, variables)
    checks.check_digits_fit(digits, defaulted, f"{'kar' if keep else 'roar'} explains "
                            "digits.x_train with f", f=f)
    maps_train = _maps(f, method, digits.x_train, chunk)
    maps_test = _maps(f, method, digits.x_test, chunk)
    fill = digits.x_train.mean(axis=(0, 1, 2))
    n = int(np.prod(digits.x_train.shape[1:3]))
    accuracy = []
    steps = range(len(q))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="KAR" if keep else "ROAR", unit="fraction")
    for i in steps:
        count = P.fraction_counts(n, (q[i],))[0]
        modified = dataclasses.replace(
            digits,
            x_train=replace_top(digits.x_train, maps_train, fill, count, keep=keep),
            x_test=replace_top(digits.x_test, maps_test, fill, count, keep=keep),
        )
        _, history = data.train(key, modified, model, epochs=epochs,
                                learning_rate=learning_rate, progress=False)
        accuracy.append(history.test_accuracy[-1])
    return RetrainResult(jnp.asarray(q, jnp.float32), jnp.asarray(accuracy, jnp.float32))


def roar(
    method: Callable[..., Array],
    *,
    key: Array,
    f: Callable[[Array], Array] | None = None,
    digits: Any = None,
    fractions: Any = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
    epochs: int = 5,
    model: Any = None,
    learning_rate: float = 3e-3,
    chunk: int = 512,
    progress: bool = False,
) -> RetrainResult:
    """RemOve And Retrain: accuracy of models retrained without the top-q% relevant pixels.

    The maps of ``method`` for ``f``'s predicted class are computed once on the train and test
    images; for each fraction ``q`` the ``int(q H W)`` pixels with the largest ``|map|``
    (channels summed) of every image are set to the training-set mean per channel, and a fresh
    model is trained with :func:`jaxplain.data.train` (same key for every ``q``) and tested on
    the equally modified test split. A faithful method makes the accuracy fall faster than a
    random ranking.

    Args:
        method: ``method(f, x, target) -> attribution`` shaped like ``x``.
        key: PRNG key for the retraining (initialization and shuffles).
        f: The model whose maps rank the pixels (default: the pretrained digits CNN).
        digits: The data set, a :class:`jaxplain.data.Digits` of 4-D ``(n, H, W, C)``
            images (default: the embedded 8x8 digits, :func:`jaxplain.data.load_digits`).
            With your own ``f``, wrap your own arrays:
            ``data.Digits(x_train=..., y_train=..., x_test=..., y_test=...)``; an ``f`` that
            cannot read ``digits.x_train`` raises a ``ValueError`` before any work.
        fractions: Fractions ``q`` in ``[0, 1]``; ``q = 0`` retrains on unmodified data.
        epochs: Training epochs per retraining (keep it small: one model per ``q``).
        model: The Linen module retrained (default ``DigitsCNN``).
        learning_rate: Adam's step size for the retraining.
        chunk: Images explained per call of ``method``.
        progress: Show a progress bar over the fractions.

    Returns:
        A :class:`RetrainResult` (``fractions``, ``accuracy``).

    References:
        Hooker, Erhan, Kindermans, Kim, "A Benchmark for Interpretability Methods in Deep
        Neural Networks", NeurIPS 2019.
    """
    return _retrain(method, False, f, digits, key, fractions, epochs, model, learning_rate,
                    chunk, progress)


def kar(
    method: Callable[..., Array],
    *,
    key: Array,
    f: Callable[[Array], Array] | None = None,
    digits: Any = None,
    fractions: Any = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
    epochs: int = 5,
    model: Any = None,
    learning_rate: float = 3e-3,
    chunk: int = 512,
    progress: bool = False,
) -> RetrainResult:
    """Keep And Retrain: accuracy of models retrained on only the top-q% relevant pixels.

    The complement of :func:`roar`: the ``int(q H W)`` most relevant pixels are kept and all
    others set to the training mean. A faithful method keeps the accuracy high with few pixels.
    Arguments and result as in :func:`roar`.

    References:
        Hooker, Erhan, Kindermans, Kim, "A Benchmark for Interpretability Methods in Deep
        Neural Networks", NeurIPS 2019.
    """
    return _retrain(method, True, f, digits, key, fractions, epochs, model, learning_rate,
                    chunk, progress)
