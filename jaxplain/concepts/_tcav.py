"""Testing with concept activation vectors (TCAV).

A CAV is the normal of a linear boundary between a site's activations on concept examples and
on random examples, pointing toward the concept. The directional derivative of a class logit
along it says whether moving the activation toward the concept raises the class; the TCAV
score is the fraction of class examples where it does. Repeating with several random sets and
comparing with random-vs-random CAVs by a t-test separates concepts from chance (Kim et al.,
2018).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.concepts._linear import bucket, check_options, fit_linear, fit_rows
from jaxplain.concepts._stats import ttest_ind
from jaxplain.attribution._common import batch_axis_hint, check_x, output_shape
from jaxplain.attribution._value_checks import check_no_nan, is_traced
from jaxplain.attribution._site import site_gradients
from jaxplain.core import capture
from jaxplain.core._adapters import refuse_module
from jaxplain.core._select import one_site

# Null CAVs pair each random set with the next (cyclically): with fewer sets, two of the pairs
# are one pair of sets in both orders.
MIN_RANDOMS = 3

# Below this held-out accuracy a concept CAV separates the concept from random examples little
# better than chance (0.5), so its direction, and the TCAV score along it, mean little.
LOW_ACCURACY = 0.75


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["vector", "accuracy"], meta_fields=["site"])
@dataclasses.dataclass(frozen=True)
class CAV:
    """A concept activation vector.

    Attributes:
        site: the site name.
        vector: unit vector shaped like one example's value at the site.
        accuracy: held-out accuracy of the concept-vs-random classifier.
    """

    site: str
    vector: Array
    accuracy: Array


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["scores", "random_scores", "statistic", "p_value", "accuracies"],
                   meta_fields=["site", "alpha"])
@dataclasses.dataclass(frozen=True)
class TCAVResult:
    """TCAV of one concept for one class at one site.

    Attributes:
        scores: ``(r,)`` TCAV scores of the concept, one per random set.
        random_scores: ``(r,)`` TCAV scores of random-vs-random CAVs (the null).
        statistic, p_value: two-sided two-sample t-test of ``scores`` vs ``random_scores``.
        accuracies: ``(r,)`` the concept CAVs' classifiers' held-out accuracies.
        site, alpha: the site and the significance level used for ``significant``.
    """

    scores: Array
    random_scores: Array
    statistic: Array
    p_value: Array
    accuracies: Array
    site: str
    alpha: float

    @property
    def score(self) -> Array:
        """Mean TCAV score over the random sets."""
        return jnp.mean(self.scores)

    @property
    def significant(self) -> Array:
        """``p_value < alpha``."""
        return self.p_value < self.alpha


def _site_values(f, x, site):
    """``(name, value)``: the one site ``site`` picks (a name or a glob) and its value on ``x``."""
    _, acts = capture(f, site)(x)
    name = one_site(tuple(acts), site)
    return name, acts[name]


def _check_set(name, x, example_shape, like):
    """``x`` as a batch of at least 2 examples shaped ``example_shape`` (those of ``like``),
    without NaN where concrete."""
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a batch of at least 2 examples, got shape {x.shape}")
    if x.shape[1:] != tuple(example_shape):
        hint = (f" (one example without its batch axis? pass {name}[None], and at least 2)"
                if x.shape == tuple(example_shape) else "")
        raise ValueError(f"{name} must be a batch of examples shaped like {like}'s, (n, "
                         f"{', '.join(map(str, example_shape))}), got shape {x.shape}{hint}")
    check_no_nan(x, name)
    return x


def cav(f: Callable[[Array], Array], concept: Float[ArrayLike, "n ..."],
        random: Float[ArrayLike, "m ..."], *, site: str, l2: float = 1e-3, steps: int = 100,
        holdout: float = 1 / 3) -> CAV:
    """Fit a concept activation vector at ``site`` from concept and random examples.

    Args:
        f: the model.
        concept: inputs showing the concept.
        random: inputs without it (a random sample).
        site: the site whose activations are separated (a name, or a glob with one match).
        l2, steps, holdout: the logistic regression's L2 weight, number of L-BFGS steps and
            fraction of each set held out to measure its accuracy
            (:func:`~jaxplain.concepts.fit_linear`).

    Returns:
        :class:`CAV` (unit normal to the boundary fitted on the examples not held out, towards
        the concept).

    Example:
        >>> v = cav(f, striped, random_images, site="block1/relu_1")
    """
    random = jnp.asarray(random)
    random = _check_set("random", random, random.shape[1:], "random")
    concept = _check_set("concept", concept, random.shape[1:], "random")
    site, a = _site_values(f, jnp.concatenate([concept, random]), site)
    ac, ar = a[:len(concept)], a[len(concept):]
    clf = fit_linear(ac.reshape(len(ac), -1), ar.reshape(len(ar), -1), l2=l2, steps=steps,
                     holdout=holdout)
    w = clf.weight / jnp.maximum(jnp.linalg.norm(clf.weight), 1e-12)
    return CAV(site, w.reshape(ac.shape[1:]), clf.accuracy)


@functools.partial(jax.jit, static_argnames=("f", "site"))
def _site_gradients(f, x, target, *, site):
    """``(b, *site_shape)``: per example, the gradient of the target logit with respect to the
    activation at ``site``; compiled once per model, site and shapes."""
    _, value = _site_values(f, x, site)
    target = jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))
    return site_gradients(f, [site], x, target, [value])[0]


@functools.partial(jax.jit, static_argnames="f")
def _directional_derivatives(f, x, target, cav):
    """``(b,)``: the site gradients of :func:`_site_gradients` dotted with ``cav.vector`` (the
    CAV's site is static: a meta field of its pytree)."""
    g = _site_gradients(f, x, target, site=cav.site)
    if g.shape[1:] != cav.vector.shape:
        raise ValueError(
            f"cav.vector has shape {cav.vector.shape}, but one example's value at its site "
            f"{cav.site!r} has shape {g.shape[1:]}: a CAV is shaped like the site it was fitted "
            "at (was it fitted at another site, or on inputs of another shape?)")
    return g.reshape(len(g), -1) @ cav.vector.reshape(-1)


def _check_inputs(f, x, target):
    """``x`` as a JAX array (a batch; NaN refused where concrete) that the model ``f`` (not a
    module) evaluates on, and ``target`` in range of its classes."""
    refuse_module(f)
    x = check_x(x, token_ids=True)
    # a target traced by the caller's jit has a dtype and shape but no values to range-check
    t = target if is_traced(target) else np.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"target must be an int or int array, got dtype {t.dtype}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(f"target must be a scalar or shape ({x.shape[0]},), got {t.shape}")
    out = output_shape(f, x)  # traced once per model and input shape
    if len(out) != 2 or out[0] != x.shape[0]:
        raise ValueError(f"f must map x of shape {x.shape} to logits (batch, classes); got an "
                         f"output of shape {out}{batch_axis_hint(f, x.shape, x.dtype)}")
    n = out[1]
    if not is_traced(t) and t.size and (t.min() < 0 or t.max() >= n):
        raise ValueError(f"target out of range for {n} classes: {t}")
    return x


def directional_derivatives(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."],
                            target: Int[ArrayLike, " b"] | Int[ArrayLike, ""], *,
                            cav: CAV) -> Float[Array, " b"]:
    """``S_{C,k}(x) = grad_{site} logit_k(x) . v_C`` for each example.

    Example:
        >>> s = directional_derivatives(f, x, 3, cav=v)
    """
    x = _check_inputs(f, x, target)
    return _directional_derivatives(f, x, target, cav)


def tcav_score(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."],
               target: Int[ArrayLike, " b"] | Int[ArrayLike, ""], *, cav: CAV) -> Array:
    """The fraction of examples whose directional derivative along ``cav`` is positive."""
    return jnp.mean(directional_derivatives(f, x, target, cav=cav) > 0)


def tcav(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."],
         target: Int[ArrayLike, " b"] | Int[ArrayLike, ""], *, site: str,
         concept: Float[ArrayLike, "n ..."], randoms: Sequence[Float[ArrayLike, "m ..."]],
         alpha: float = 0.05, l2: float = 1e-3, steps: int = 100,
         holdout: float = 1 / 3) -> TCAVResult:
    """TCAV with significance: concept CAVs against each random set, and a t-test against
    random-vs-random CAVs.

    For each random set ``R_i`` a CAV (concept vs ``R_i``) gives a score on ``x``; CAVs of
    ``R_i`` vs ``R_{i+1 mod r}`` give the null distribution. The two lists of scores are
    compared by Student's two-sided t-test.

    Args:
        f: the model.
        x: examples of the class (the TCAV score is a fraction of them).
        target: the class index (int or ``(b,)``).
        site: the site of the CAVs (a name, or a glob with one match).
        concept: inputs showing the concept, shaped like ``x``'s examples.
        randoms: at least 3 random sets of inputs, shaped like ``x``'s examples, no two equal
            (nor equal to ``concept``). With 2 the null CAVs would be ``R_0`` vs ``R_1`` and
            its negation, scores ``s`` and ``1 - s``; with a repeated set, fits of a set
            against itself.
        alpha: significance level for :attr:`TCAVResult.significant`.
        l2, steps, holdout: the linear classifier's settings (:func:`cav`).

    Returns:
        :class:`TCAVResult`.

    Raises:
        ValueError: a NaN in ``x``, ``concept`` or ``randoms``, or two equal sets (checked
            where the arrays are concrete, not as arguments of the caller's ``jit``); fewer
            than 3 random sets.

    Warns:
        RuntimeWarning: (eager calls) when a concept CAV's held-out accuracy is below
            ``LOW_ACCURACY`` (0.75): the concept is hardly linearly separable from that random
            set at ``site``, so the scores are not evidence either way.

    Example:
        >>> r = tcav(f, x_class3, 3, site="fc1", concept=loops, randoms=[r0, r1, r2, r3])
        >>> float(r.score), bool(r.significant)

    References:
        Kim et al. Interpretability beyond feature attribution: quantitative testing with
        concept activation vectors (TCAV). ICML, 2018.
    """
    x = _check_inputs(f, x, target)
    if isinstance(randoms, (jax.Array, np.ndarray)) or len(randoms) < MIN_RANDOMS:
        got = ("an array" if isinstance(randoms, (jax.Array, np.ndarray)) else
               f"{len(randoms)}")
        raise ValueError(
            f"randoms must be a sequence of at least {MIN_RANDOMS} random example sets, got "
            f"{got}: the null CAVs pair R_i with R_(i+1 mod r), and with 2 sets they are R_0 vs "
            "R_1 and R_1 vs R_0, one classifier negated (null scores s and 1 - s, no spread)")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    check_options(steps, holdout)
    concept = _check_set("concept", concept, x.shape[1:], "x")
    randoms = [_check_set(f"randoms[{i}]", r, x.shape[1:], "x") for i, r in enumerate(randoms)]
    sets = [concept, *randoms]
    _check_distinct(sets, ["concept", *(f"randoms[{i}]" for i in range(len(randoms)))])
    site, acts = _site_values(f, jnp.concatenate(sets), site)  # one pass for all example sets
    g = _site_gradients(f, x, target, site=site)
    g = g.reshape(len(g), -1)
    acts = jnp.split(acts.reshape(len(acts), -1), np.cumsum([len(s) for s in sets])[:-1])
    a_concept, a_randoms = acts[0], acts[1:]
    r = len(randoms)
    pairs = [(a_concept, a) for a in a_randoms]
    pairs += [(a_randoms[i], a_randoms[(i + 1) % r]) for i in range(r)]
    # Every pair padded to one size: one compiled fit per call, whatever the set sizes.
    rows = bucket(max(len(p) + len(q) for p, q in pairs))

    def fit(pos, neg):
        clf = fit_rows(pos, neg, rows=rows, l2=l2, steps=steps, holdout=holdout)
        return clf.weight / jnp.maximum(jnp.linalg.norm(clf.weight), 1e-12), clf.accuracy

    concept_cavs = [fit(*p) for p in pairs[:r]]
    null_cavs = [fit(*p) for p in pairs[r:]]
    score = lambda c: jnp.mean(g @ c[0] > 0)
    scores = jnp.stack([score(c) for c in concept_cavs])
    null = jnp.stack([score(c) for c in null_cavs])
    t, p = ttest_ind(scores, null)
    accuracies = jnp.stack([c[1] for c in concept_cavs])
    _warn_if_inaccurate(accuracies, site)
    return TCAVResult(scores, null, t, p, accuracies, site, float(alpha))


def _check_distinct(sets: list[Array], names: list[str]) -> None:
    """Raise ValueError when two concrete example sets of the same shape are equal: a CAV of a
    set against itself is noise, and null scores of such fits have no spread (p = 0)."""
    pairs = tuple((i, j) for j in range(len(sets)) for i in range(j)
                  if sets[i].shape == sets[j].shape
                  and not is_traced(sets[i]) and not is_traced(sets[j]))
    if not pairs:
        return
    with jax.ensure_compile_time_eval():  # one read-back for all pairs
        same = jax.device_get(_equal_pairs(tuple(sets), pairs))
    for (i, j), equal in zip(pairs, same):
        if equal:
            raise ValueError(
                f"{names[i]} and {names[j]} are the same examples: TCAV needs distinct sets "
                "(a CAV of a set against itself is noise, and repeated random sets make the "
                "null scores equal, so any concept comes out significant with p = 0); draw "
                "each random set separately")


@functools.partial(jax.jit, static_argnames="pairs")
def _equal_pairs(sets: tuple[Array, ...], pairs: tuple[tuple[int, int], ...]) -> Array:
    """``(len(pairs),)`` bool: whether ``sets[i]`` equals ``sets[j]`` for each ``(i, j)``."""
    return jnp.stack([jnp.array_equal(sets[i], sets[j]) for i, j in pairs])


def _warn_if_inaccurate(accuracies: Array, site: str) -> None:
    if isinstance(accuracies, jax.core.Tracer):
        return
    acc = np.asarray(accuracies)
    low = np.flatnonzero(acc < LOW_ACCURACY)
    if low.size:
        warnings.warn(
            f"tcav: the concept CAVs against random sets {low.tolist()} reach only "
            f"{[round(float(a), 2) for a in acc[low]]} held-out accuracy (< {LOW_ACCURACY}) at "
            f"site {site!r}: the concept is hardly separable from random examples there, so their "
            "TCAV scores are not evidence either way. Try more or clearer concept examples, "
            "another site, or another l2 (a larger one where the site has many more units than "
            "there are examples)", RuntimeWarning, stacklevel=3)
