"""Training the default model with optax."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.data._digits import Digits
from jaxplain.data._model import DigitsCNN

#: The training recipe of the default model (part of its checkpoint's identity).
EPOCHS = 10
BATCH_SIZE = 64
LEARNING_RATE = 1e-2


@dataclasses.dataclass(frozen=True)
class TrainHistory:
    """Per-epoch training statistics.

    Attributes:
        loss: Mean cross-entropy over the epoch's minibatches.
        train_accuracy: Accuracy over the epoch's minibatches (as trained, not re-evaluated).
        test_accuracy: Accuracy on the test split after the epoch.
    """

    loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_accuracy: tuple[float, ...]

    def to_json(self) -> dict[str, list[float]]:
        """The history as a JSON-ready dict of lists."""
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainHistory:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on a malformed dict."""
        try:
            names = [f.name for f in dataclasses.fields(cls)]
            fields = {name: tuple(float(v) for v in data[name]) for name in names}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed training history {data!r}: {e}") from None
        if len({len(v) for v in fields.values()}) != 1:
            raise ValueError(f"training history fields differ in length: {data!r}")
        return cls(**fields)


def accuracy(
    f: Any, x: Float[ArrayLike, "n *shape"], y: Int[ArrayLike, " n"]
) -> float:
    """Fraction of ``x`` whose arg-max logit under ``f`` equals the label ``y``."""
    return float(jnp.mean(jnp.argmax(jax.jit(f)(x), axis=-1) == y))


def check_params_only(variables: Any, name: str = "variables") -> None:
    """A ``TypeError`` when `variables` hold collections besides ``params``.

    :func:`train` updates the ``params`` only; a model with other collections (BatchNorm's
    ``batch_stats``, which must be updated with ``mutable=["batch_stats"]`` in training mode)
    would fail inside Flax, or train without its statistics.
    """
    extra = tuple(c for c in variables if c != "params")
    if extra:
        raise TypeError(
            f"jaxplain.data.train trains Linen models whose only variable collection is "
            f"'params', but the model's {name} also hold {extra}. Train such a model with your "
            "own loop (model.apply(variables, x, train=True, mutable=['batch_stats']) and the "
            "updated statistics kept), or use a model without them (e.g. LayerNorm or "
            "GroupNorm instead of BatchNorm); for a sanity check, train a copy on shuffled "
            "labels yourself and compare the maps with metrics.spearman / metrics.ssim")


def train(
    key: Array,
    digits: Digits,
    model: nn.Module | None = None,
    *,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    progress: bool = True,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], TrainHistory]:
    """Trains ``model`` (default :class:`DigitsCNN`) on ``digits.x_train`` with Adam.

    Each epoch shuffles the training set with a key split from ``key`` and takes one jitted
    Adam step per full minibatch (the remainder is dropped for that epoch).

    Only the ``params`` collection is trained: a model whose ``init`` makes other
    collections (BatchNorm's ``batch_stats``) is refused with a ``TypeError`` before training.

    Args:
        key: PRNG key for the initialisation and the shuffles.
        digits: The data (see :func:`load_digits`).
        model: A Linen module mapping ``(batch, 8, 8, 1)`` to ``(batch, 10)`` logits (or the
            batches of ``digits.x_train`` to logits), with ``params`` as its only collection.
        epochs: Passes over the training set (>= 1).
        batch_size: Minibatch size, between 1 and the training-set size.
        learning_rate: Adam's initial step size, cosine-decayed to 0 over the training.
        progress: Show a tqdm progress bar (on stderr) over the epochs.
        apply_kwargs: Keyword arguments of every ``model.init`` and ``model.apply`` call (e.g.
            ``{"train": False}`` for a model whose ``train`` flag has no default).

    Returns:
        ``(variables, history)``: the trained Flax variables and a :class:`TrainHistory`.

    Example:
        >>> import jax
        >>> from jaxplain import data
        >>> variables, history = data.train(jax.random.key(0), data.load_digits(), epochs=1,
        ...                                 progress=False)
        >>> len(history.loss)
        1
    """
    n = digits.x_train.shape[0]
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an int in [1, {n}], got {batch_size!r}")
    model = DigitsCNN() if model is None else model
    if apply_kwargs is None:
        apply_kwargs = {}
    elif not isinstance(apply_kwargs, Mapping):
        raise TypeError(f"apply_kwargs must be a dict of keyword arguments for model.apply, got "
                        f"{apply_kwargs!r}")
    steps = n // batch_size
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps))
    init_key, key = jax.random.split(key)
    variables = model.init(init_key, digits.x_train[:1], **apply_kwargs)
    check_params_only(variables, "variables (from model.init)")
    params = variables["params"]
    opt_state = tx.init(params)

    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x, **apply_kwargs)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    @jax.jit
    def step(params, opt_state, x_all, y_all, idx):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, acc), grads = grad_fn(params, x_all[idx], y_all[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    @jax.jit
    def test_accuracy(params, x, y):
        return jnp.mean(jnp.argmax(model.apply({"params": params}, x, **apply_kwargs), -1) == y)

    # One jitted step per minibatch, driven from Python: on XLA:CPU the gradient convolutions
    # run 10-70x slower inside a compiled loop body (lax.scan / while) than as top-level ops.
    from tqdm.auto import tqdm

    bar = tqdm(range(epochs), desc=f"training {type(model).__name__}", unit="epoch",
               disable=not progress)
    history: list[tuple[float, float, float]] = []
    for k in jax.random.split(key, epochs):
        order = jax.random.permutation(k, n)[: steps * batch_size].reshape(steps, batch_size)
        stats = []
        for idx in order:
            params, opt_state, loss, acc = step(
                params, opt_state, digits.x_train, digits.y_train, idx
            )
            stats.append((loss, acc))
        loss, acc = jnp.mean(jnp.asarray(stats), axis=0)
        test_acc = test_accuracy(params, digits.x_test, digits.y_test)
        history.append((float(loss), float(acc), float(test_acc)))
        bar.set_postfix(loss=f"{history[-1][0]:.3f}", test_acc=f"{history[-1][2]:.3f}")
        bar.update()
    bar.close()
    return {"params": params}, TrainHistory(*(tuple(c) for c in zip(*history)))
