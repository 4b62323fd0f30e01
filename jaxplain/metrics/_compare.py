"""Run several attribution methods through several metrics: one table, same footing."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.core._keys import check_key
from jaxplain.metrics import _checks as checks
from jaxplain.metrics._complexity import complexity, sparseness
from jaxplain.metrics._faithfulness import deletion, insertion, pixel_perturbation
from jaxplain.metrics._robustness import continuity, max_sensitivity


@dataclasses.dataclass(frozen=True)
class _Options:
    steps: int
    baseline: Any
    insertion_baseline: Any
    samples: int
    batch_size: int | None
    output: str


def _deletion(order):
    def metric(f, x, t, a, method, key, o):
        return deletion(f, x, t, a, steps=o.steps, order=order, baseline=o.baseline,
                        output=o.output, batch_size=o.batch_size).area
    return metric


def _insertion(f, x, t, a, method, key, o):
    return insertion(f, x, t, a, steps=o.steps, baseline=o.insertion_baseline, output=o.output,
                     batch_size=o.batch_size).area


def _lerf(f, x, t, a, method, key, o):
    return pixel_perturbation(f, x, a, target=t, baseline=o.baseline,
                              batch_size=o.batch_size).mean(-1)


def _continuity(f, x, t, a, method, key, o):
    return continuity(f, x, t, method, key=key, samples=o.samples, batch_size=o.batch_size)


def _max_sensitivity(f, x, t, a, method, key, o):
    return max_sensitivity(f, x, t, method, key=key, samples=o.samples,
                           batch_size=o.batch_size)


#: name -> (metric, which direction is better). Each metric returns one value per example.
METRICS: dict[str, tuple[Callable[..., Array], str]] = {
    "deletion_morf": (_deletion("morf"), "lower"),
    "deletion_lerf": (_deletion("lerf"), "higher"),
    "insertion": (_insertion, "higher"),
    "lerf_change": (_lerf, "lower"),
    "sparseness": (lambda f, x, t, a, m, k, o: sparseness(a), "higher"),
    "complexity": (lambda f, x, t, a, m, k, o: complexity(a), "lower"),
    "continuity": (_continuity, "lower"),
    "max_sensitivity": (_max_sensitivity, "lower"),
}

DEFAULT_METRICS = ("deletion_morf", "deletion_lerf", "sparseness", "continuity")


@dataclasses.dataclass(frozen=True)
class Table:
    """Mean metric values per method.

    Attributes:
        header: ``("method", *metric names)``.
        rows: One ``(method name, *mean values)`` row per method, in the order given.
        better: Per metric, ``"lower"`` or ``"higher"`` (which direction is more faithful,
            sparser or smoother).
    """

    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    better: tuple[str, ...]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{method: {metric: value}}``."""
        return {row[0]: dict(zip(self.header[1:], row[1:])) for row in self.rows}


def compare(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    methods: Mapping[str, Callable[..., Array]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    key: Array,
    steps: int = 20,
    baseline: Any = "zeros",
    insertion_baseline: Any = None,
    samples: int = 5,
    batch_size: int | None = None,
    output: str = "probability",
) -> Table:
    """Evaluate every method with every metric on the same inputs; mean over the batch.

    Metric names (see :data:`METRICS`): ``deletion_morf`` / ``deletion_lerf`` (area under the
    deletion curve, most / least relevant first), ``insertion`` (area; from a blur of images),
    ``lerf_change`` (critical-pathways LeRF change averaged over 1..10%), ``sparseness``
    (Gini), ``complexity`` (entropy), ``continuity`` and ``max_sensitivity`` (these two
    re-run the method on ``samples`` noisy copies).

    Args:
        f: Maps a batch to logits (a model whose output is a ``jax.nn.softmax`` has its
            probabilities read as they are by the perturbation metrics, not softmaxed again).
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` classes or one int.
        methods: ``{name: method(f, x, target) -> attribution}``.
        metrics: Metric names, in column order (default ``deletion_morf``,
            ``deletion_lerf``, ``sparseness``, ``continuity``).
        key: PRNG key for the noise metrics (the same key for every method).
        steps: Steps of the deletion / insertion curves (20: fewer than :func:`deletion`'s
            own default of 50, so the areas differ slightly from a direct call).
        baseline: Replacement value of the deletion and LeRF metrics.
        insertion_baseline: Where the insertion curve starts (any ``baseline`` of
            :func:`insertion`); None: ``"blur"`` for images (RISE), ``"zeros"`` for other
            inputs.
        samples: Perturbations for continuity and max-sensitivity (5: fewer than their own
            default of 10).
        batch_size: Chunking, as each metric's own ``batch_size``: perturbed inputs per model
            call of ``deletion_morf``, ``deletion_lerf``, ``insertion`` and ``lerf_change``,
            noisy copies of the batch per method call of ``continuity`` and
            ``max_sensitivity`` (``None``: each metric's default). It bounds memory and does
            not change the values.
        output: What the deletion and insertion curves read, as in :func:`deletion`:
            ``"probability"`` or ``"logit"`` (a regression model's one output takes it).

    Returns:
        A :class:`Table`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
        >>> grad = lambda f, x, t: jax.grad(lambda x: f(x)[:, 0].sum())(x)
        >>> table = compare(f, jnp.ones((4, 3)), 0, {"gradient": grad}, ("sparseness",),
        ...                 key=jax.random.key(0))
        >>> table.header, round(table.rows[0][1], 4)
        (('method', 'sparseness'), 0.2222)
    """
    x, x_check = checks.as_batch(x)
    target, target_check = checks.as_target(target, x.shape[0], checks.num_classes(f, x))
    check_key(key)
    if not isinstance(methods, Mapping) or not methods:
        raise TypeError(f"methods must be a non-empty mapping {{name: method}}, got {methods!r}")
    for name, method in methods.items():
        checks.check_method(method, f"methods[{name!r}]")
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be names from {tuple(METRICS)}, got {metrics}")
    options = _Options(checks.check_positive_int(steps, "steps"), baseline, insertion_baseline,
                       checks.check_positive_int(samples, "samples"),
                       checks.check_batch_size(batch_size), output)
    # Values are read back three times, not per method and metric (each read waits for an
    # accelerator's queue): x and target, every map, every score. Arrays found fine are not
    # read again by the methods and metrics that check them.
    checks.run_checks(x_check, target_check)
    maps = {name: checks.as_like(method(f, x, target), x, f"the attribution of {name!r}")
            for name, method in methods.items()}
    checks.run_checks(*(check for _, check in maps.values()))
    scores = jax.device_get([
        [jnp.mean(METRICS[m][0](f, x, target, a, methods[name], key, options)) for m in metrics]
        for name, (a, _) in maps.items()])
    rows = tuple((name, *map(float, values)) for name, values in zip(maps, scores))
    return Table(("method", *metrics), rows, tuple(METRICS[m][1] for m in metrics))


def random_attribution(key: Array) -> Callable[..., Array]:
    """A control method: uniform noise shaped like ``x``, each example's drawn from ``key`` and
    that example's values.

    The same example gives the same map, whatever else is in its batch; any change of it gives
    an unrelated map, so the control is neither faithful nor continuous.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> random_attribution(jax.random.key(0))(None, jnp.ones((2, 3)), 0).shape
        (2, 3)
    """
    check_key(key)

    def one(row):
        flat = row.reshape(-1).astype(jnp.float32)
        place = jnp.linspace(1.0, 2.0, flat.size, dtype=jnp.float32)  # a permutation is another
        k = key
        for s in (flat.sum(), (flat * place).sum()):
            k = jax.random.fold_in(k, jax.lax.bitcast_convert_type(s, jnp.uint32))
        return jax.random.uniform(k, row.shape, row.dtype)

    def method(f, x, target):
        return jax.vmap(one)(x)

    return method
