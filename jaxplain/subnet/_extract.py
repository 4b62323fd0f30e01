"""NeuroChains: extract a sparse sub-network of exact filter copies that keeps a region's outputs.

References:
  Zhao, Zhou, Long, Jiang, Zhang. "NeuroChains: Extract Local Reasoning Chains of Deep Neural
  Nets" (ICLR 2021 submission), and "Extracting Local Reasoning Chains of Deep Neural Networks"
  (TMLR 2022).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.core import BatchMixingWarning, mixes_batch
from jaxplain.core._function_cache import per_function
from jaxplain.core._keys import check_key
from jaxplain.subnet import _checkpoint, _host, _optimize, _placement, _threshold, _verdict
from jaxplain.subnet._objective import log_probs
from jaxplain.subnet._types import Options, SubNetwork


def _check_region(x_region) -> jax.Array:
    if not hasattr(x_region, "shape") or not hasattr(x_region, "dtype"):
        raise TypeError(f"x_region must be an array of region samples, batch first; got "
                        f"{type(x_region).__name__}")
    # A device region stays there: only whether it is finite is read back (one bool).
    on_device = isinstance(x_region, jax.Array)
    x = x_region if on_device else np.asarray(x_region)
    if x.ndim < 2:
        raise ValueError(f"x_region must have a batch axis and at least one feature axis; got "
                         f"shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"x_region must hold at least 2 samples (a local region, e.g. 20 images "
                         f"of 2 classes); got a batch of {x.shape[0]} (shape {x.shape})")
    if not jnp.issubdtype(x.dtype, jnp.floating):  # NumPy's test misses bfloat16
        raise TypeError(f"x_region must have a floating dtype (float32, bfloat16, ...); got "
                        f"{x.dtype}")
    if not (jnp.all(jnp.isfinite(x)) if on_device else np.all(np.isfinite(x))):
        raise ValueError("x_region contains NaN or infinite values")
    if not on_device:
        return jnp.asarray(x)
    return jnp.asarray(x, x.dtype) if x.weak_type else x  # strongly typed, as from NumPy


def resolve_sites(f: Callable, x: jax.Array, sites) -> tuple[str, ...]:
    """The chosen site names in the network's order; each must have a unit (last) axis."""
    if sites is None:
        raise ValueError("sites must name the layers to score: a name, a glob such as "
                         "'block1/*', a list of names, or a predicate (name, site) -> bool")
    known = jp.sites(f, x)
    chosen = set(jp.core.select(known, sites))
    if not chosen:
        raise ValueError(f"sites={sites!r} selects no site; known sites: "
                         f"{[s.name for s in known]}")
    ordered = tuple(s for s in known if s.name in chosen)
    for s in ordered:
        if len(s.shape) < 2:
            raise ValueError(f"site {s.name!r} has shape {s.shape}: it needs a batch axis and a "
                             "unit axis (last) to score units")
    return tuple(s.name for s in ordered)


def _stack(tree, n):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + jnp.shape(a)), tree)


def _take(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


@contextlib.contextmanager
def _batch_warning_once(f: Callable, x: jax.Array):
    """Warns at the caller of :func:`extract` when ``f``'s output for one sample depends on the
    others (batch statistics), then silences that warning inside the block: the kernel warns
    once per traced program, and extract traces ``f`` several times."""
    if mixes_batch(f, x):
        # stacklevel: this generator, contextlib's __enter__, extract, its caller.
        warnings.warn(BatchMixingWarning(), stacklevel=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchMixingWarning)
        yield


def _output(f: Callable, x: jax.Array) -> tuple[tuple, np.dtype]:
    """The shape and dtype of ``f(x)``, traced once per function and input shape (where ``f``
    is hashable, as the compiled stages need)."""
    try:
        return _output_cached(f, tuple(x.shape), jnp.dtype(x.dtype))
    except TypeError:  # not hashable: trace every time
        return _output_cached.__wrapped__(f, tuple(x.shape), jnp.dtype(x.dtype))


@per_function(maxsize_fallback=256)
def _output_cached(f: Callable, shape: tuple, dtype) -> tuple[tuple, np.dtype]:
    out = jax.eval_shape(f, jax.ShapeDtypeStruct(shape, dtype))
    return tuple(out.shape), jnp.dtype(out.dtype)


def _check_outputs(f: Callable, x: jax.Array) -> None:
    """Refuses a model without a class axis of two or more outputs: the softmax of one output is
    1 for every input, so the objective is 0 and any sub-network, even an empty one, keeps it."""
    shape, _ = _output(f, x)
    if len(shape) >= 2 and shape[-1] >= 2:
        return
    raise ValueError(
        f"f's output has shape {shape}, but extract keeps class decisions: it minimises the KL "
        "between softmax(f(x)) and the sub-network's over the last axis, and keeps arg-max "
        "labels; with one output that softmax is 1 for every input, and an empty sub-network "
        "would keep it. For a one-logit binary classifier z = f(x) pass "
        "g = lambda x: (lambda z: jnp.concatenate([jnp.zeros_like(z), z], axis=-1))(f(x)), "
        "which calls f once (its softmax is [1 - sigmoid(z), sigmoid(z)]; for a model ending in "
        "jax.nn.sigmoid, use jnp.log(p) - jnp.log1p(-p) of its output p as z). A regression has "
        "no class decision: the same wrapper on f(x) - t keeps the decision y > t and "
        "sigmoid(y - t), not the value of y; sub-networks that keep a regression's values are "
        "not supported. See docs/targets.md.")


def _check_start(start: dict) -> None:
    """Refuses a region on which ``f``'s log-probabilities hold NaN (``start``: from
    :func:`_read_start`, read): the KL would be NaN at the start of the search, no iterate
    could be kept, and the result would be the start point, unpruned."""
    bad = int(start["nan_samples"])
    if bad:
        raise ValueError(f"f's log-probabilities hold NaN for {bad} of the "
                         f"{start['labels'].size} samples of x_region (NaN or +inf logits, or a "
                         "row of -inf logits), so the NeuroChains objective is not finite at "
                         "the start of the search. Fix f's outputs on x_region; logits of -inf "
                         "for some classes are fine (they count 0 in the KL).")


def _warn_if_one_class(labels: np.ndarray) -> None:
    """Warns at the caller of :func:`extract` when the model predicts one class on the whole
    region (``labels``: its arg-max labels there): a sub-network that always answers it keeps
    every label without explaining anything."""
    predicted = np.unique(labels)
    if predicted.size == 1:
        warnings.warn(f"f predicts class {int(predicted[0])} for every example of x_region: a "
                      "sub-network that always answers it keeps all their labels (agreement 1) "
                      "without telling them apart. NeuroChains' regions hold examples of two or "
                      "more classes, e.g. near a decision boundary.", stacklevel=3)


def _warn_about_placement(f: Callable, x: jax.Array, names: tuple[str, ...]) -> None:
    """Warns at the caller of :func:`extract` when removed units of a scored site would still
    feed a per-unit constant downstream (a site before its BatchNorm, bias or depthwise
    convolution) or reach a normaliser over the channels (a GroupNorm, a LayerNorm)."""
    found, normalised = _placement.placement(f, x, names)
    if found:
        listed = ", ".join(f"{s!r} (up to {v:.3g} at {t!r})" for s, t, v in found)
        warnings.warn(f"removed units of {listed} would still feed constants downstream: with "
                      "the site at 0, its channels hold input-independent non-zero values where "
                      "they meet other channels. Ops that map each channel to itself carry a "
                      "removed unit's channel on and add their own constant to it (a "
                      "BatchNorm's shift beta - mean * gamma / sqrt(var), a bias added after the "
                      "site, a depthwise convolution's bias, an activation not 0 at 0 such as a "
                      "sigmoid gate's 0.5), so the sub-network is not the one its masks "
                      "describe. Score the values after the shift instead (here "
                      f"{[t for _, t, _ in found]}).", stacklevel=3)
    if normalised:
        listed = ", ".join(f"{s!r} (normalised at {t!r}, where they move by up to {v:.3g})"
                           for s, t, v in normalised)
        warnings.warn(f"removed units of {listed} would still reach the output: a normaliser "
                      "whose statistics span the channel axis (a GroupNorm with two or more "
                      "channels a group, a LayerNorm) turns a zeroed channel into -mean / std "
                      "of its group, which changes with the input, and the zeros shift the kept "
                      "channels' mean and std, so the sub-network is not the one its masks "
                      "describe. Score the normaliser's output or the activation after it "
                      f"instead (here {[t for _, t, _ in normalised]}).", stacklevel=3)


def _check_resumable(directory: str | None, f: Callable, x: jax.Array, names: tuple[str, ...],
                     key: jax.Array, opts: Options, logp: jax.Array) -> None:
    """Refuses a checkpoint ``directory`` of another run, or marks a new one as this run's."""
    if directory is not None:
        _checkpoint.check(directory, _checkpoint.identity(f, x, names, key, opts, logp,
                                                          _output(f, x)[1]))


def _subdir(directory: str | None, name: str) -> str | None:
    return None if directory is None else os.path.join(directory, name)


def extract(f: Callable, x_region: jax.Array, *, sites, key: jax.Array,
            progress: bool = False, **options) -> SubNetwork:
    """Extracts a sparse sub-network of ``f`` that keeps its outputs on a local region.

    Every unit (last axis) of every chosen site gets a non-negative score ``s`` and every site
    a gate ``sigmoid(theta)``; the site's value ``v`` becomes ``v * sigmoid(theta) * s``
    (through :func:`jaxplain.intervene`; the weights are never changed). Scores and gates
    minimise ``mean KL(softmax f(x) || softmax f_sub(x)) + l1 * sum|s| + gate_l1 * G`` over the
    region in one jit-compiled ``lax.scan`` with optax (vmapped over the L1 grid). Then units
    with small scores and layers with closed gates are removed, the dependency closure drops
    units that feed only removed units, and those that only inject constants unless the
    region's labels need them, and the surviving scores are
    fine-tuned on the fixed sub-network (KL only). By default the result is the sparsest
    candidate whose arg-max labels on the region agree with ``f`` on ``fidelity`` (100%) of
    the samples; ``sparsity=0.95`` asks for a share of removed units instead: the candidate
    closest to that size from above (at least that many units whenever they connect the input
    to the output; a warning when fewer), then the most faithful, is returned whatever its
    agreement (a warning when it is below ``fidelity``). ``l1=1e-3`` fixes the L1 weight. See
    :class:`Options` for every option and its default.

    Args:
      f: The model, batch first, mapping inputs to logits (see :func:`jaxplain.as_function`).
        The last axis is read as the logits of one class decision (softmax, arg-max), two or
        more of them: a one-output model is refused. A multi-output regression or a
        multi-label head runs, but keeps the softmax over its outputs and which one is
        largest, not their values (docs/targets.md).
      x_region: ``Float[Array, "n *shape"]``, the region's samples (n >= 2).
      sites: Which sites to score, as :func:`jaxplain.core.select` reads it (a name, a glob, a
        list, a predicate); e.g. the BatchNorm, GroupNorm or LayerNorm outputs, or the
        convolution and dense outputs (bias included) where no such norm follows, before their
        activations. A site followed by a per-unit shift (a convolution before its BatchNorm, a
        unit before a depthwise convolution with a bias) is warned about: its removed units
        would still feed the shift downstream. So is a site before a norm whose statistics span
        the channels (a GroupNorm with two or more channels a group, a LayerNorm): it turns a
        zeroed channel into ``-mean / std``, input-dependent; score the norm's output instead
        (an RMSNorm after the site is safe; an InstanceNorm's bias still feeds a removed
        unit's constant on, unwarned: score its output).
      key: PRNG key (random probes of the dependency closure).
      progress: Show the optimisation as it runs: a tqdm bar (on stderr) per phase (search,
        fine-tuning), updated after every ``checkpoint_every`` steps with each candidate's
        loss, region label agreement and share of units whose score is exactly 0 (one value
        per L1 weight). Each phase then runs as chunks of ``checkpoint_every`` steps; the
        result is the same as without.
      **options: Fields of :class:`Options`.

    Returns:
      A :class:`SubNetwork`; evaluate it with :func:`apply` or :func:`fidelity`.

    Raises:
      TypeError: inside ``jit``, ``vmap`` or ``grad`` (a traced region, key or weights): the
        search reads values back to the host; call it outside, then :func:`apply` inside.

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain as jp
      >>> w1 = jax.random.normal(jax.random.key(0), (4, 8))
      >>> w2 = jax.random.normal(jax.random.key(1), (8, 3))
      >>> def f(x):
      ...     with jax.named_scope("hidden"):
      ...         h = x @ w1
      ...     return jax.nn.relu(h) @ w2
      >>> x = jax.random.normal(jax.random.key(2), (6, 4))
      >>> sub = jp.subnet.extract(f, x, sites="hidden", key=jax.random.key(3), steps=200,
      ...                         finetune_steps=50)
      >>> bool(sub.region_agreement == 1.0)
      True
      >>> f_sub = jp.subnet.apply(f, sub)   # the pruned function
      >>> bool((f_sub(x).argmax(-1) == f(x).argmax(-1)).all())
      True

    References:
      Zhao et al., "NeuroChains: Extract Local Reasoning Chains of Deep Neural Nets", ICLR 2021
      submission; TMLR 2022 "Extracting Local Reasoning Chains of Deep Neural Networks".
    """
    try:
        opts = Options(**options)
    except TypeError as err:
        raise TypeError(f"unknown option for extract: {err}; the options are the fields of "
                        f"jaxplain.subnet.Options") from None
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    _host.check_arguments("extract", (x_region, key))
    x = _check_region(x_region)
    check_key(key)
    if _host.closes_over_tracers(f, x):
        _host.refuse("extract", "an f that closes over traced values")
    n_l1 = len(opts.l1)
    search_bar = f"subnet search ({_count(n_l1, 'L1 weight')})" if progress else None
    tune_bar = f"subnet fine-tune ({_count(n_l1, 'candidate')})" if progress else None
    directory = _checkpoint.directory(opts.checkpoint_dir)
    # One run at a time on a checkpoint directory: a second one is refused before any work.
    with _checkpoint.claim(directory), _batch_warning_once(f, x):
        _check_outputs(f, x)
        names = resolve_sites(f, x, sites)
        _warn_about_placement(f, x, names)
        units = tuple(s.shape[-1] for s in jp.sites(f, x) if s.name in names)
        l1 = jnp.asarray(opts.l1, jnp.float32)
        # The compiled stages see the L1 grid as data: other weights of the same count reuse them.
        static = dataclasses.replace(opts, l1=(0.0,) * len(opts.l1), gate_l1=None,
                                     checkpoint_dir=None)

        # 1. Score-and-gate search: one vmapped scan over the L1 grid.
        logp, state, all_units = _search_init(x, f=f, names=names, units=units, opts=static)
        start = jax.device_get(_read_start(logp))
        _check_start(start)
        _warn_if_one_class(start["labels"])
        _check_resumable(directory, f, x, names, key, opts, logp)
        run = functools.partial(_optimize.run, f, checkpoint_every=opts.checkpoint_every)
        state = run(state, all_units, l1, jnp.asarray(opts.gate_weights, jnp.float32),
                    opts.fidelity, x, logp, steps=opts.steps, phase=_phase(opts, search=True),
                    checkpoint_dir=_subdir(directory, "search"),
                    progress=search_bar)
        fidelity = jnp.asarray(opts.fidelity, jnp.float32)
        searched = _optimize.trajectory(state["history"], fidelity)

        # 2. Thresholding and the dependency closure; 3. fine-tuning (KL only, structure fixed).
        masks, taus, state = _candidates(state["best"], x, logp, key, f=f, opts=static)
        zeros = jnp.zeros((len(opts.l1),), jnp.float32)
        state = run(state, masks, zeros, zeros, opts.fidelity, x, logp, steps=opts.finetune_steps,
                    phase=_phase(opts, search=False),
                    checkpoint_dir=_subdir(directory, "finetune"), progress=tune_bar)

        tuned = _optimize.trajectory(state["history"], fidelity)["nonfinite"]

        # 4. The sparsest candidate that keeps the fidelity target (or the most faithful one).
        fields, chosen = _choose(state["best"], masks, taus, l1, x, logp, f=f, opts=static)
    # What the checks below need, in one read of the device.
    chosen, kept, agreement, searched, tuned = jax.device_get(
        (chosen, _threshold.count(fields["masks"]), fields["region_agreement"], searched, tuned))
    met, chosen = bool(chosen["met"]), int(chosen["index"])
    kept, agreement = int(kept), float(agreement)
    _verdict.warn(opts, met=met, kept=kept, total=sum(units), agreement=agreement,
                  chosen=chosen, searched=searched, tuned=tuned)
    return SubNetwork(**fields, sites=names)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _floor(opts: Options) -> float:
    """The smallest score of a kept unit when fine-tuning to a target size: the smallest
    ``threshold``, so that fine-tuning never removes a unit of the chosen size."""
    return min(opts.threshold)


def _phase(opts: Options, *, search: bool) -> _optimize.Phase:
    score_min = 0.0 if search or opts.sparsity is None else _floor(opts)
    return _optimize.Phase(opts.gate_penalty, search, opts.optimizer, opts.learning_rate,
                           opts.score_max, score_min)


@functools.partial(jax.jit, static_argnames=("f", "names", "units", "opts"))
def _search_init(x, *, f, names, units, opts):
    """The region's log-probabilities (float32 at least), the search's start state and its
    masks (one per L1 weight)."""
    logp = log_probs(f(x))
    init = {"scores": {n: jnp.full((c,), opts.score_init, jnp.float32)
                       for n, c in zip(names, units)},
            "theta": {n: jnp.asarray(opts.gate_init, jnp.float32) for n in names}}
    n_l1 = len(opts.l1)
    phase = _phase(opts, search=True)
    state = jax.vmap(lambda p: _optimize.init_state(p, opts.steps, phase))(_stack(init, n_l1))
    all_units = _stack({n: jnp.ones((c,), bool) for n, c in zip(names, units)}, n_l1)
    return logp, state, all_units


@jax.jit
def _read_start(logp):
    """What the checks before the search read of the region's log-probabilities: the
    predicted labels and the number of samples whose log-probabilities hold NaN."""
    return {"labels": jnp.argmax(logp, axis=-1),
            "nan_samples": jnp.sum(jnp.any(jnp.isnan(logp), axis=-1))}


@functools.partial(jax.jit, static_argnames=("f", "opts"))
def _candidates(best, x, logp, key, *, f, opts: Options):
    """One thresholded, closed sub-network per L1 weight and its fine-tuning start state:
    ``(masks {site: (L, c)}, taus (L,), state)``."""
    n_l1 = len(opts.l1)
    if opts.sparsity is not None:
        grid = [None]
        thresholds = jnp.asarray([jnp.nan], jnp.float32)
        # Zero scores are ranked too (by the KL's gain from taking them back) and restart at
        # the floor: the L1 weight may have left fewer positive scores than the target.
        gain = _threshold.benefit(f, best, x, logp)
        if opts.closure:  # grown until the closed sub-network has the target size
            kept = _threshold.by_rank_closed(f, best, x, key, opts.sparsity, opts.gate_threshold,
                                             gain, _floor(opts))
        else:
            kept = _threshold.by_rank(best, opts.sparsity, opts.gate_threshold, gain,
                                      _floor(opts))
        best = dict(best, scores={n: jnp.maximum(s, _floor(opts))
                                  for n, s in best["scores"].items()})
        flat = _threshold.effective(best)
    else:
        eff = _threshold.effective(best)
        grid = [_threshold.by_threshold(best, tau, opts.gate_threshold) for tau in opts.threshold]
        thresholds = jnp.asarray(opts.threshold, jnp.float32)
        # All (threshold, L1) candidates as one batch: (T * L, c).
        flat = {n: jnp.concatenate([jnp.where(m[n], eff[n], 0.0) for m in grid]) for n in eff}
        if opts.closure:
            kept = _threshold.closure(f, flat, x, key)
        else:
            kept = {n: v != 0 for n, v in flat.items()}
    mult = {n: jnp.where(kept[n], flat[n], 0.0) for n in flat}
    agree = _threshold.evaluate(f, mult, x, logp)[0].reshape(len(grid), n_l1)
    ok = agree >= opts.fidelity - 1e-6
    # The largest passing threshold per L1 weight, else the smallest.
    last = len(grid) - 1 - jnp.argmax(ok[::-1], axis=0)
    choice = jnp.where(jnp.any(ok, axis=0), last, 0)
    pick = choice * n_l1 + jnp.arange(n_l1)
    masks = {n: m[pick] for n, m in kept.items()}
    theta = best["theta"] if opts.finetune_gates == "value" else jax.tree.map(
        lambda t: jnp.full_like(t, jnp.inf), best["theta"])
    start = {"scores": {n: jnp.where(masks[n], s, 0.0) for n, s in best["scores"].items()},
             "theta": theta}
    phase = _phase(opts, search=False)
    state = jax.vmap(lambda p: _optimize.init_state(p, opts.finetune_steps, phase))(start)
    return masks, thresholds[choice], state


@functools.partial(jax.jit, static_argnames=("f", "opts"))
def _choose(tuned, masks, taus, l1, x, logp, *, f, opts: Options):
    """The chosen candidate's SubNetwork fields, and ``{"met": whether it meets the fidelity
    target, "index": its index (its L1 weight's in the grid)}``."""
    eff = _threshold.effective(tuned)
    masks = {n: m & (eff[n] > 0) for n, m in masks.items()}  # fine-tuning may zero a score
    mult = {n: jnp.where(masks[n], eff[n], 0.0) for n in masks}
    agree, kl = _threshold.evaluate(f, mult, x, logp)
    kept = _threshold.count(masks)
    feasible = agree >= opts.fidelity - 1e-6
    if opts.sparsity is None:
        # The sparsest feasible one (then the lowest KL); if none is feasible, the most faithful
        # non-empty one.
        sparsest = jnp.lexsort((kl, kept, ~feasible))[0]
        faithful = jnp.lexsort((kept, kl, -agree, kept == 0))[0]
        i = jnp.where(jnp.any(feasible), sparsest, faithful)
    else:
        # Non-empty first, then at least the target size, then the closest to it (the closure
        # may have had to add units to connect the chain), then the most faithful.
        total = sum(m.shape[-1] for m in masks.values())
        target = _threshold.target_units(opts.sparsity, total)
        i = jnp.lexsort((kept, kl, -agree, jnp.abs(kept - target), kept < target, kept == 0))[0]
    chosen_masks = _take(masks, i)
    scores = {n: jnp.where(chosen_masks[n], tuned["scores"][n][i], 0.0) for n in masks}
    gates = {n: jnp.where(jnp.any(chosen_masks[n]), jax.nn.sigmoid(tuned["theta"][n][i]), 0.0)
             for n in masks}
    fields = {"masks": chosen_masks, "scores": scores, "gates": gates,
              "region_agreement": agree[i], "region_kl": kl[i],
              "l1": l1[i], "threshold": taus[i],
              # The same units as a plain 0/1 mask (no scores, no gates): what "exact copies"
              # alone would keep.
              "unscaled_agreement": _threshold.evaluate(
                  f, {n: m[None].astype(jnp.float32) for n, m in chosen_masks.items()}, x,
                  logp)[0][0]}
    return fields, {"met": feasible[i], "index": i}


def apply(f: Callable, subnetwork: SubNetwork) -> Callable:
    """The pruned function: ``f`` with each site's value multiplied by the sub-network's
    ``mask * gate * score`` (removed units exactly 0); pure and jit-able, weights untouched.

    Args:
      f: The full model the sub-network was extracted from.
      subnetwork: From :func:`extract`.

    Returns:
      ``f_sub`` with ``f_sub(x)`` shaped like ``f(x)`` (see :func:`extract`'s example).
    """
    if not isinstance(subnetwork, SubNetwork):
        raise TypeError(f"subnetwork must be a jaxplain.subnet.SubNetwork (from extract); got "
                        f"{type(subnetwork).__name__}")
    mult = subnetwork.multipliers()

    def check(name, m):
        def fn(v):
            if v.shape[-1] != m.shape[-1]:
                raise ValueError(f"site {name!r} has {v.shape[-1]} units (value shape {v.shape}) "
                                 f"but the sub-network scores {m.shape[-1]}: it was extracted "
                                 "from another model")
            return v * m.astype(v.dtype)
        return fn

    return jp.intervene(f, {n: check(n, m) for n, m in mult.items()})


