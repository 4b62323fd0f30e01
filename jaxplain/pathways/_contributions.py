"""Neuron contributions: |activation x d logit / d activation| at every unit of every site.

The gradient with respect to an activation comes from the kernel's ``intervene``: each site's
value ``a`` is replaced by ``a * (scale + g)`` with ``g = 0``, so that ``d y / d g = a * dy/da``
(the Taylor contribution itself, signed) in one backward pass for the whole batch. Examples
are independent in ``f`` (eval-mode normalisation), so the gradient of the summed target logits
is the per-example gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain import core
from jaxplain.attribution._common import chunked_sum, wide
from jaxplain.core._cpu import cpu_friendly
from jaxplain.pathways import _checks


DEFAULT_BATCH_SIZE = 4
"""IG steps evaluated at once by default: memory is about this many forward/backward passes of
the batch, whatever ``steps`` is."""


def _picked(y, t):
    return jnp.take_along_axis(y, t[:, None], axis=-1)[:, 0]


def taylor_scores(f, x, t, specs, masks=None) -> dict:
    """|a * dy_t/da| per unit (traced); with ``masks`` the network is masked while scoring."""

    def objective(g):
        def fn(name):
            m = None if masks is None else masks[name]
            if m is None:
                return lambda v: v * (1 + g[name])
            return lambda v: v * m.astype(v.dtype) * (1 + g[name])

        h = cpu_friendly(core.intervene(f, {n: fn(n) for n, _, _ in specs}))
        return _picked(h(x), t).sum()

    zeros = {n: jnp.zeros(shape, dtype) for n, shape, dtype in specs}
    return {n: jnp.abs(g) for n, g in jax.grad(objective)(zeros).items()}


def integrated_scores(f, x, t, specs, steps: int, batch_size) -> dict:
    """Per-site integrated gradients of the target logit w.r.t. the site (traced).

    The ``steps + 1`` alphas are evaluated ``batch_size`` at a time (vmapped; ``None``:
    :func:`jaxplain.core._chunks.auto_chunk`) and summed in a ``lax.scan`` (``chunked_sum``), so memory holds one chunk of gradients
    whatever ``steps`` is.
    """
    scores = {}
    for name, shape, dtype in specs:
        # the alphas in the input's and the site's dtype (float64 under x64), at least float32
        alphas = jnp.arange(steps + 1, dtype=wide(jnp.promote_types(x.dtype, dtype))) / steps

        def grad_at(alpha, name=name, shape=shape, dtype=dtype):
            def objective(g):
                h = cpu_friendly(core.intervene(
                    f, {name: lambda v: v * (alpha.astype(v.dtype) + g)}))
                return _picked(h(x), t).sum()

            return jax.grad(objective)(jnp.zeros(shape, dtype))

        # d y / d g at a <- alpha a equals a * dy/da'|_{a' = alpha a}; average over alpha_j = j/T.
        # The scan body's convolution gradients run in XLA:CPU's fast layout (chunked_reduce).
        total = chunked_sum(grad_at, alphas, batch_size)
        scores[name] = jnp.abs(total / (steps + 1))
    return scores


def check_batch_size(batch_size) -> int | None:
    """``batch_size`` (alphas per pass) as a positive int or ``None``."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive int (the number of IG steps evaluated at once) or "
            f"None (automatic: all at once on GPU/TPU, a cache-sized chunk on CPU); got "
            f"{batch_size!r}."
        )
    return int(batch_size)


@functools.partial(jax.jit, static_argnames=("f", "specs"))
def _contributions(f, x, target, specs):
    return taylor_scores(f, x, _checks.targets(f, x, target), specs)


@functools.partial(jax.jit, static_argnames=("f", "specs", "steps", "batch_size"))
def _integrated(f, x, target, specs, steps, batch_size):
    return integrated_scores(f, x, _checks.targets(f, x, target), specs, steps, batch_size)


def contributions(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    *, sites=None,
) -> dict[str, Float[Array, "batch *site"]]:
    """Neuron contributions ``|a * d y_target / d a|`` at every unit of the selected sites.

    The paper's "NeuronMCT" score (first-order Taylor, activation x gradient), with every mask
    at one while scoring. A unit is one element of a site's value: one channel at one spatial
    position for a convolutional layer.

    Args:
      f: model function, batch in, logits ``(batch, classes)`` out (``jaxplain.as_function``).
      x: input batch, e.g. NHWC images ``(batch, H, W, C)``.
      target: class per example, an int or ``(batch,)`` ints; ``None`` takes the predicted
        class, as the paper does. The score uses the pre-softmax logit.
      sites: ``None`` for every post-activation site of a piecewise-linear activation
        (relu, relu6, leaky_relu, hard_tanh), or any site selector of ``jaxplain.core.select``
        (name, glob, list of names, predicate).

    Returns:
      ``{site name: scores}``, each shaped like the site's value ``(batch, ...)``, >= 0.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain import pathways
      >>> f = lambda x: jax.nn.relu(x) @ jnp.array([[1.0, 0.0], [3.0, 1.0]])  # y_0 = a_0 + 3 a_1
      >>> pathways.contributions(f, jnp.array([[2.0, 1.0]]), 0)["relu"].tolist()
      [[2.0, 3.0]]

    References:
      Khakzar et al., "Neural Response Interpretation through the Lens of Critical Pathways",
      CVPR 2021.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    specs, n_classes = _checks.resolve(f, x, sites)
    target = _checks.check_target(target, x.shape[0], n_classes)
    return _checks.in_order(_contributions(f, x, target, specs), [n for n, *_ in specs])


def integrated_contributions(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    *, sites=None, steps: int = 10, batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> dict[str, Float[Array, "batch *site"]]:
    """Integrated-gradient neuron contributions (the paper's "NeuronIntGrad").

    For each site ``l`` on its own (the other sites untouched)::

        score_l = | a_l * 1/(T+1) * sum_{j=0..T} d y_t / d a_l  evaluated at a_l <- (j/T) a_l |

    with ``alpha_j = j / T`` running from 0 to 1. (The authors' code accumulates the scale, so
    its alphas run 0, .1, .3, .6, ..., 5.5; we do not copy that.) Costs ``(T + 1)`` forward and
    backward passes per site, like the reference.

    Args:
      f, x, target, sites: as in :func:`contributions`.
      steps: ``T``, the number of intervals (``T + 1`` gradient evaluations per site).
      batch_size: how many of the ``T + 1`` alphas to evaluate at once, each over the whole
        batch (as everywhere in ``jaxplain``); ``None`` evaluates all of them in one pass on
        GPU/TPU and on CPU as many as keep a pass in cache. The chunks are summed in a
        ``lax.scan``, so memory is about ``batch_size`` forward/backward passes whatever
        ``steps`` is; the default 4 bounds it for large ``steps``, 1 gives the least memory. The scores do not depend on it (to float
        rounding).

    Returns:
      ``{site name: scores}`` shaped like each site's value.

    References:
      Khakzar et al., CVPR 2021; Sundararajan et al., "Axiomatic Attribution for Deep
      Networks", ICML 2017.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    _checks.check_positive_int(steps, "steps")
    batch_size = check_batch_size(batch_size)
    specs, n_classes = _checks.resolve(f, x, sites)
    target = _checks.check_target(target, x.shape[0], n_classes)
    return _checks.in_order(_integrated(f, x, target, specs, steps, batch_size),
                            [n for n, *_ in specs])
