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

from jaxplain.concepts._linear import fit_linear
from jaxplain.concepts._stats import ttest_ind
from jaxplain.attribution._site import site_gradients
from jaxplain.core import capture

# Below this training accuracy a concept CAV separates the concept from random examples little
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
        accuracy: training accuracy of the concept-vs-random classifier.
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
        accuracies: ``(r,)`` the concept CAVs' classifier accuracies.
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
    _, acts = capture(f, site)(x)
    return acts[site]


def _check_set(name, x):
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a batch of at least 2 examples, got shape {x.shape}")
    return x


def cav(f: Callable[[Array], Array], concept: Float[Array, "n ..."], random: Float[Array, "m ..."],
        *, site: str, l2: float = 1e-3, steps: int = 100) -> CAV:
    """Fit a concept activation vector at ``site`` from concept and random examples.

    Args:
        f: the model.
        concept: inputs showing the concept.
        random: inputs without it (a random sample).
        site: the site whose activations are separated.
        l2, steps: the logistic regression's L2 weight and number of L-BFGS steps
            (:func:`~jaxplain.concepts.fit_linear`).

    Returns:
        :class:`CAV` (unit normal to the boundary, towards the concept).

    Example:
        >>> v = cav(f, striped, random_images, site="block1/relu_1")
    """
    concept, random = _check_set("concept", concept), _check_set("random", random)
    ac = _site_values(f, concept, site)
    ar = _site_values(f, random, site)
    clf = fit_linear(ac.reshape(len(ac), -1), ar.reshape(len(ar), -1), l2=l2, steps=steps)
    w = clf.weight / jnp.maximum(jnp.linalg.norm(clf.weight), 1e-12)
    return CAV(site, w.reshape(ac.shape[1:]), clf.accuracy)


def _site_gradients(f, x, target, site):
    """Per-example gradient of the target logit with respect to the activation at ``site``."""
    value = _site_values(f, x, site)
    target = jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))
    return site_gradients(f, [site], x, target, [value])[0]


def _check_target(f, x, target):
    x = jnp.asarray(x)
    t = np.asarray(target)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be an int or int array, got dtype {t.dtype}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(f"target must be a scalar or shape ({x.shape[0]},), got {t.shape}")
    n = jax.eval_shape(f, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1]
    if t.size and (t.min() < 0 or t.max() >= n):
        raise ValueError(f"target out of range for {n} classes: {t}")
    return x


def directional_derivatives(f: Callable[[Array], Array], x: Float[Array, "b ..."],
                            target: int | Int[ArrayLike, " b"], *, cav: CAV) -> Float[Array, " b"]:
    """``S_{C,k}(x) = grad_{site} logit_k(x) . v_C`` for each example.

    Example:
        >>> s = directional_derivatives(f, x, 3, cav=v)
    """
    x = _check_target(f, x, target)
    g = _site_gradients(f, x, target, cav.site)
    return g.reshape(len(g), -1) @ cav.vector.reshape(-1)


def tcav_score(f: Callable[[Array], Array], x: Float[Array, "b ..."],
               target: int | Int[ArrayLike, " b"], *, cav: CAV) -> Array:
    """The fraction of examples whose directional derivative along ``cav`` is positive."""
    return jnp.mean(directional_derivatives(f, x, target, cav=cav) > 0)


def tcav(f: Callable[[Array], Array], x: Float[Array, "b ..."], target: int | Int[ArrayLike, " b"],
         *, site: str, concept: Float[Array, "n ..."], randoms: Sequence[Float[Array, "m ..."]],
         alpha: float = 0.05, l2: float = 1e-3, steps: int = 100) -> TCAVResult:
    """TCAV with significance: concept CAVs against each random set, and a t-test against
    random-vs-random CAVs.

    For each random set ``R_i`` a CAV (concept vs ``R_i``) gives a score on ``x``; CAVs of
    ``R_i`` vs ``R_{i+1}`` give the null distribution. The two lists of scores are compared by
    Student's two-sided t-test.

    Args:
        f: the model.
        x: examples of the class (the TCAV score is a fraction of them).
        target: the class index (int or ``(b,)``).
        site: the site of the CAVs.
        concept: inputs showing the concept.
        randoms: at least 2 random sets of inputs.
        alpha: significance level for :attr:`TCAVResult.significant`.
        l2, steps: the linear classifier's settings.

    Returns:
        :class:`TCAVResult`.

    Warns:
        RuntimeWarning: (eager calls) when a concept CAV's training accuracy is below
            ``LOW_ACCURACY`` (0.75): the concept is hardly linearly separable from that random
            set at ``site``, so the scores are not evidence either way.

    Example:
        >>> r = tcav(f, x_class3, 3, site="fc1", concept=loops, randoms=[r0, r1, r2, r3])
        >>> float(r.score), bool(r.significant)

    References:
        Kim et al. Interpretability beyond feature attribution: quantitative testing with
        concept activation vectors (TCAV). ICML, 2018.
    """
    x = _check_target(f, x, target)
    if isinstance(randoms, (jax.Array, np.ndarray)) or len(randoms) < 2:
        raise ValueError("randoms must be a sequence of at least 2 random example sets")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    concept = _check_set("concept", concept)
    randoms = [_check_set(f"randoms[{i}]", r) for i, r in enumerate(randoms)]
    g = _site_gradients(f, x, target, site)
    g = g.reshape(len(g), -1)
    sets = [concept, *randoms]
    acts = _site_values(f, jnp.concatenate(sets), site)  # one pass for all example sets
    acts = jnp.split(acts.reshape(len(acts), -1), np.cumsum([len(s) for s in sets])[:-1])
    a_concept, a_randoms = acts[0], acts[1:]

    def fit(pos, neg):
        clf = fit_linear(pos, neg, l2=l2, steps=steps)
        return clf.weight / jnp.maximum(jnp.linalg.norm(clf.weight), 1e-12), clf.accuracy

    r = len(randoms)
    concept_cavs = [fit(a_concept, a) for a in a_randoms]
    null_cavs = [fit(a_randoms[i], a_randoms[(i + 1) % r]) for i in range(r)]
    score = lambda c: jnp.mean(g @ c[0] > 0)
    scores = jnp.stack([score(c) for c in concept_cavs])
    null = jnp.stack([score(c) for c in null_cavs])
    t, p = ttest_ind(scores, null)
    accuracies = jnp.stack([c[1] for c in concept_cavs])
    _warn_if_inaccurate(accuracies, site)
    return TCAVResult(scores, null, t, p, accuracies, site, float(alpha))


def _warn_if_inaccurate(accuracies: Array, site: str) -> None:
    if isinstance(accuracies, jax.core.Tracer):
        return
    acc = np.asarray(accuracies)
    low = np.flatnonzero(acc < LOW_ACCURACY)
    if low.size:
        warnings.warn(
            f"tcav: the concept CAVs against random sets {low.tolist()} reach only "
            f"{[round(float(a), 2) for a in acc[low]]} training accuracy (< {LOW_ACCURACY}) at "
            f"site {site!r}: the concept is hardly separable from random examples there, so their "
            "TCAV scores are not evidence either way. Try more or clearer concept examples, "
            "another site, or a smaller l2", RuntimeWarning, stacklevel=3)
