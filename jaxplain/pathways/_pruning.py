"""Pruning-derived pathways, the baselines the paper compares contribution pathways with.

- :func:`learned_gates`: DGR / CDRP gates, one per unit, trained to keep the output
  distribution with an L1 penalty (SGD with momentum in a jitted ``lax.scan``).
- :func:`greedy_masks`: the authors' iterative Taylor pruning, which revives pruned and dead
  units every round (the "pathological" path of the paper's poster).
- :func:`random_masks`: a random fraction of each site.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._keys import check_key
from jaxplain.core._layout import fast_convolutions
from jaxplain.pathways import _checks, _contributions, _gradient, _select


def _gated_logits(f, x, gates):
    # differentiated in a loop: XLA:CPU's fast forms
    return cpu_friendly(_gradient.apply(f, gates))(x)


def _rows(mask, like):
    return mask.reshape((-1,) + (1,) * (like.ndim - 1))


def _descend(f, x, init, l1, steps, learning_rate, momentum, max_gate):
    """One DGR run per example: ``(best gates, best loss)``, the loss ``inf`` where no
    iteration kept the original prediction. ``l1``: ``(batch,)``."""
    p_orig = jax.nn.softmax(jax.lax.stop_gradient(f(x)), axis=-1)
    label = jnp.argmax(p_orig, axis=-1)

    def losses(gates):
        q = jax.nn.softmax(_gated_logits(f, x, gates), axis=-1)
        ce = -(p_orig * jnp.log(q + 1e-20)).sum(-1)
        l1_term = sum(jnp.abs(g).reshape(g.shape[0], -1).sum(1) for g in gates.values())
        return (ce + l1 * l1_term).sum(), (ce + l1 * l1_term, jnp.argmax(q, axis=-1))

    opt = optax.sgd(learning_rate, momentum=momentum)

    def step(carry, _):
        gates, state, best, best_loss = carry
        grads, (loss, pred) = jax.grad(losses, has_aux=True)(gates)
        better = (pred == label) & (loss < best_loss)
        best = {n: jnp.where(_rows(better, g), gates[n], g) for n, g in best.items()}
        best_loss = jnp.where(better, loss, best_loss)
        updates, state = opt.update(grads, state, gates)
        gates = jax.tree.map(lambda g: jnp.clip(g, 0.0, max_gate), optax.apply_updates(gates, updates))
        return (gates, state, best, best_loss), None

    # the best-loss carry in the loss's own dtype (float64 for a float64 model)
    loss_dtype = jax.eval_shape(losses, init)[1][0].dtype
    carry = (init, opt.init(init), init, jnp.full(x.shape[0], jnp.inf, loss_dtype))
    # the step's convolution gradients in XLA:CPU's fast layout (see jaxplain.core._layout)
    (_, _, best, best_loss), _ = jax.lax.scan(fast_convolutions(step), carry, None, length=steps)
    return best, best_loss


@functools.partial(jax.jit, static_argnames=("f", "steps", "retries"))
def _learned_gates(f, x, init, steps, learning_rate, momentum, l1, max_gate, retries):
    run = functools.partial(_descend, f, x, init, steps=steps, learning_rate=learning_rate,
                            momentum=momentum, max_gate=max_gate)
    # the penalty in the loss's dtype: the logits' and the gates' (float64 for a float64 model)
    dtype = jnp.result_type(jax.eval_shape(f, x).dtype, *jax.tree.leaves(init))
    l1s = jnp.full(x.shape[0], l1, dtype)
    best, loss = run(l1=l1s)

    def again(state):  # rerun with l1 / 10 where no iteration kept the prediction
        i, l1s, best, loss = state
        l1s = jnp.where(jnp.isinf(loss), l1s / 10, l1s)
        new, new_loss = run(l1=l1s)
        redo = jnp.isinf(loss)
        best = {n: jnp.where(_rows(redo, g), new[n], g) for n, g in best.items()}
        return i + 1, l1s, best, jnp.where(redo, new_loss, loss)

    more = lambda state: (state[0] < retries) & jnp.isinf(state[3]).any()  # noqa: E731
    return jax.lax.while_loop(more, again, (0, l1s, best, loss))[2]


def learned_gates(
    f: Callable, x: Float[ArrayLike, "batch *features"], *, sites=None, steps: int = 1000,
    learning_rate: float = 0.01, momentum: float = 0.9, l1: float = 0.01, init: str = "ones",
    key: PRNGKeyArray | None = None, max_gate: float = 100.0, retries: int = 100,
) -> dict[str, Float[Array, "batch *site"]]:
    """DGR / CDRP pathway gates learned with the pruning objective, one gate per unit.

    Each site becomes ``gate * a``; per example the gates minimise::

        -sum_k p_k(x) log(q_k(x; gates) + 1e-20) + l1 * sum |gates|

    (``p`` the original softmax, ``q`` the gated one) with SGD with momentum, clamping the gates
    to ``[0, max_gate]`` after each step. Returned are, per example, the gates with the lowest
    loss among the iterations whose prediction equals the original one. Where no iteration
    keeps it, the run is repeated from the same initial gates with ``l1`` divided by 10, up to
    ``retries`` times (the authors' DGR init=r; with ``init="ones"`` the first iteration is the
    original network, so it never retries); examples that never keep it return the initial
    gates. Threshold the gates into a pathway with :func:`threshold`, the same
    global-percentile rule as contributions.

    Gates are per unit (channel x position), not per channel as in the original CDRP, to match
    the authors' comparison. ``init="uniform"`` (the paper's DGR init=r) starts from
    Uniform[0, 1) and needs ``key``.

    Args:
      f, x, sites: as in :func:`select`.
      steps, learning_rate, momentum, l1, max_gate: the optimisation (defaults as the
        authors': 1000 steps, lr 0.01, momentum 0.9, lambda 0.01, clamp 100). The four floats
        are values of the compiled function: a sweep over them compiles once.
      init: ``"ones"`` or ``"uniform"``.
      key: PRNG key for ``init="uniform"``.
      retries: how many times to rerun with ``l1 / 10`` (the authors: 100).

    Returns:
      ``{site: gates}`` shaped like each site's value.

    References:
      Wang et al., "Interpret Neural Networks by Identifying Critical Data Routing Paths",
      CVPR 2018; Khakzar et al., CVPR 2021.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    if init not in ("ones", "uniform"):
        raise ValueError(f"init must be 'ones' or 'uniform'; got {init!r}.")
    if init == "uniform" and key is None:
        raise ValueError("init='uniform' needs key=jax.random.key(...).")
    if key is not None:
        check_key(key)
    _checks.check_positive_int(steps, "steps")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int; got {retries!r}.")
    specs, _ = _checks.resolve(f, x, sites)
    if init == "ones":
        gates = {n: jnp.ones(shape, jnp.float32) for n, shape, _ in specs}
    else:
        keys = jax.random.split(key, len(specs))
        gates = {n: jax.random.uniform(k, shape) for k, (n, shape, _) in zip(keys, specs)}
    learned = _learned_gates(f, x, gates, steps, float(learning_rate), float(momentum),
                             float(l1), float(max_gate), retries)
    return _checks.in_order(learned, gates)


@functools.partial(jax.jit, static_argnames=("f", "specs", "rounds"))
def _greedy(f, x, target, specs, rounds, step):
    t = _checks.targets(f, x, target)
    masks = {n: jnp.ones(shape, bool) for n, shape, _ in specs}

    def body(i, masks):
        scores = _contributions.taylor_scores(f, x, t, specs, masks)
        flat = _select._flat(scores)
        top = flat.max(axis=1, keepdims=True)
        tau = jnp.percentile(jnp.where(flat <= 0, top, flat), i * step, axis=1)
        return {
            n: ~((s > 0) & (s <= tau.reshape((-1,) + (1,) * (s.ndim - 1))))
            for n, s in scores.items()
        }

    return jax.lax.fori_loop(0, rounds, fast_convolutions(body), masks)


def greedy_masks(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    *, rounds: int = 99, step: float = 1.0, sites=None,
) -> dict[str, Bool[Array, "batch *site"]]:
    """The authors' greedy pruning (``prune_greedy(1, 99)``), kept as a baseline.

    Round ``i = 0 .. rounds-1`` rescores the current masked network with Taylor contributions,
    replaces scores ``<= 0`` by the maximum, takes the ``i * step``-th percentile ``tau`` and
    sets the mask to 0 where ``0 < score <= tau`` and to 1 elsewhere — so pruned units (score
    0 in the masked net) and dead units come back every round. The result meets the pruning
    objective with a path made largely of dead units; the paper calls such paths misleading.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    _checks.check_positive_int(rounds, "rounds")
    if rounds > 1 and not 0.0 < step * (rounds - 1) <= 100.0:
        raise ValueError(f"step * (rounds - 1) must lie in (0, 100]; got {step * (rounds - 1)}.")
    specs, n_classes = _checks.resolve(f, x, sites)
    target = _checks.check_target(target, x.shape[0], n_classes)
    return _checks.in_order(_greedy(f, x, target, specs, rounds, float(step)),
                            [n for n, *_ in specs])


@functools.partial(jax.jit, static_argnames=("specs",))
def _random(key, specs, drops):
    masks = {}
    for k, (name, shape, _), drop in zip(jax.random.split(key, len(specs)), specs, drops):
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(k, (shape[0], math.prod(shape[1:]))),
                                        axis=1), axis=1)
        masks[name] = (ranks >= drop).reshape(shape)
    return masks


def random_masks(
    key: PRNGKeyArray, f: Callable, x: Float[ArrayLike, "batch *features"], *, keep: float,
    sites=None,
) -> dict[str, Bool[Array, "batch *site"]]:
    """Random pathway: per example and site, drop ``floor((1 - keep) * units)`` random units.

    The count is exact for ``keep`` as written (its shortest decimal form, ``str(keep)``):
    ``keep=0.9`` of 10 units drops 1, where the float product ``(1.0 - 0.9) * 10`` is
    0.9999999999999998. It is counted on the host and passed as a value: a new ``keep`` does
    not recompile.
    """
    check_key(key)
    _checks.check_function(f)
    x = _checks.check_x(x)
    _checks.check_keep(keep)
    dropped = 1 - Fraction(str(keep))  # 0.9 as 9/10, not the binary float just above it
    specs, _ = _checks.resolve(f, x, sites)
    drops = tuple(math.floor(dropped * math.prod(shape[1:])) for _, shape, _ in specs)
    return _checks.in_order(_random(key, specs, drops), [n for n, *_ in specs])
