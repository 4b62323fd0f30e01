"""How good a sub-network is: sparsity and fidelity (label agreement, KL, accuracy)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxplain.subnet import _host
from jaxplain.subnet._extract import apply
from jaxplain.subnet._objective import agreement, log_probs, reported_kl
from jaxplain.subnet._types import SubNetwork


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How closely a sub-network follows the full network on a batch.

    Attributes:
      agreement: Share of samples whose arg-max label the sub-network keeps.
      kl: Mean KL(full softmax || sub-network softmax), nats, in float32 at least
        (bfloat16 logits are upcast); classes the full network gives probability 0
        (logits of -inf) count 0.
      accuracy: Sub-network top-1 accuracy against ``labels`` (NaN without labels).
      accuracy_full: The full network's accuracy against ``labels`` (NaN without labels).
      accuracy_restricted: Sub-network accuracy with the arg-max restricted to ``classes``
        (e.g. the region's two classes; NaN without labels or classes).
      accuracy_full_restricted: The full network's accuracy with the arg-max restricted to
        ``classes``: what ``accuracy_restricted`` compares with (NaN without labels or classes).
    """

    agreement: Float[Array, ""]
    kl: Float[Array, ""]
    accuracy: Float[Array, ""]
    accuracy_full: Float[Array, ""]
    accuracy_restricted: Float[Array, ""]
    accuracy_full_restricted: Float[Array, ""]


@functools.partial(jax.jit, static_argnames=("f",))
def _fidelity(sub, x, labels, class_mask, *, f):
    logits, sub_logits = f(x), apply(f, sub)(x)
    logp = log_probs(logits)
    nan = jnp.asarray(jnp.nan, jnp.float32)
    if labels is None:
        return Fidelity(agreement(logp, sub_logits), reported_kl(logp, sub_logits), nan, nan,
                        nan, nan)
    acc = jnp.mean(jnp.argmax(sub_logits, -1) == labels)
    acc_full = jnp.mean(jnp.argmax(logits, -1) == labels)
    restricted = restricted_full = nan
    if class_mask is not None:
        def among(z):
            return jnp.mean(jnp.argmax(jnp.where(class_mask, z, -jnp.inf), -1) == labels)
        restricted, restricted_full = among(sub_logits), among(logits)
    return Fidelity(agreement(logp, sub_logits), reported_kl(logp, sub_logits), acc,
                    acc_full, restricted, restricted_full)


def _check_classes(name: str, ids: Array, k: int) -> None:
    """Class ids must be integers in [0, k): JAX would clamp an index, and a label no output
    can take makes every accuracy silently 0."""
    if isinstance(ids, jax.core.Tracer):
        return
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must be integer class ids; got dtype {ids.dtype}")
    bad = np.unique(ids[(ids < 0) | (ids >= k)])
    if bad.size:
        raise ValueError(f"{name} must be classes of the model, 0 to {k - 1} ({k} outputs); got "
                         f"{bad.tolist()}")


def fidelity(f: Callable, subnetwork: SubNetwork, x: Array, labels: Array | None = None,
             *, classes: Sequence[int] | None = None) -> Fidelity:
    """Label agreement and KL of the sub-network against ``f`` on ``x`` (and accuracies).

    Args:
      f: The full model.
      subnetwork: From :func:`extract`.
      x: ``Float[Array, "n *shape"]``: the region, or unseen samples of the same classes.
      labels: Optional ``Int[Array, "n"]`` true labels, for the accuracies.
      classes: Optional class ids the restricted accuracy chooses among (the region's classes).

    Raises:
      ValueError: if a label or a class id is not a class of ``f`` (``0 .. outputs - 1``).

    Returns:
      A :class:`Fidelity`.
    """
    k = jax.eval_shape(f, x).shape[-1]
    if labels is not None:
        labels = jnp.asarray(labels)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},) to match x; got "
                             f"{labels.shape}")
        _check_classes("labels", labels, k)
    class_mask = None
    if classes is not None:
        if labels is None:
            raise ValueError("classes needs labels")
        classes = jnp.asarray(list(classes))
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError(f"classes must be a non-empty sequence of class ids; got {classes}")
        _check_classes("classes", classes, k)
        class_mask = jnp.zeros(k, bool).at[classes].set(True)
    return _fidelity(subnetwork, x, labels, class_mask, f=f)


def sparsity(subnetwork: SubNetwork) -> dict[str, float | int]:
    """Kept and total units and layers, and the share of units removed."""
    kept, total = subnetwork.kept_units, subnetwork.total_units
    return {"kept_units": sum(kept.values()), "total_units": sum(total.values()),
            "kept_layers": len(subnetwork.kept_layers), "total_layers": len(subnetwork.sites),
            "removed": subnetwork.sparsity}


def evaluate(f: Callable, subnetwork: SubNetwork, x_region: Array,
             x_unseen: Array | None = None, *, y_region: Array | None = None,
             y_unseen: Array | None = None, classes: Sequence[int] | None = None
             ) -> dict[str, float]:
    """Sparsity and fidelity on the region and on unseen data, reported together.

    Returns:
      A flat ``{metric: float}``: the :func:`sparsity` entries (``kept_units``,
      ``total_units``, ``kept_layers``, ``total_layers``, ``removed``), then for the region
      ``region_agreement`` (share of arg-max labels kept), ``region_kl`` (nats),
      ``region_accuracy`` (the sub-network's), ``region_accuracy_full`` (the full network's),
      ``region_accuracy_restricted`` (the sub-network's, arg-max over `classes`) and
      ``region_accuracy_full_restricted`` (the full network's, arg-max over `classes`: the
      number to compare ``region_accuracy_restricted`` with), and the same with ``unseen_``
      when ``x_unseen`` is given (NaN accuracies without labels).

    Raises:
      ValueError: if a label or a class id is not a class of ``f`` (see :func:`fidelity`).
      TypeError: inside ``jit``, ``vmap`` or ``grad`` (use :func:`fidelity` there).
    """
    _host.check_arguments("evaluate", (subnetwork, x_region, x_unseen, y_region, y_unseen))
    if classes is not None:  # checked also where no labels use it
        _check_classes("classes", np.asarray(list(classes)), jax.eval_shape(f, x_region).shape[-1])
    out: dict[str, float] = dict(sparsity(subnetwork))
    parts = [("region", x_region, y_region)]
    if x_unseen is not None:
        parts.append(("unseen", x_unseen, y_unseen))
    for prefix, x, y in parts:
        fid = fidelity(f, subnetwork, x, y, classes=classes if y is not None else None)
        if _host.traced(fid):
            _host.refuse("evaluate", "an f that closes over traced values")
        for field in dataclasses.fields(fid):
            out[f"{prefix}_{field.name}"] = float(np.asarray(getattr(fid, field.name)))
    return out
