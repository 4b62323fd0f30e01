"""What :func:`~jaxplain.subnet.extract` warns about its result: a fidelity or size target
missed, an empty sub-network, a loss that stopped being finite, and a search that lost the
region's labels for good (its kept iterate then a snapshot of scores still shrinking)."""

from __future__ import annotations

import warnings

import numpy as np

from jaxplain.subnet._threshold import target_units
from jaxplain.subnet._types import DEFAULT_L1, Options

# extract's caller: warnings.warn in a helper (1), warn (2), extract (3), its caller (4).
_CALLER = 4


def warn(opts: Options, *, met: bool, kept: int, total: int, agreement: float, chosen: int,
         searched: dict, tuned: np.ndarray) -> None:
    """Issues every warning about the result at the caller of ``extract``.

    Args:
      opts: ``extract``'s options.
      met: Whether the chosen candidate keeps the ``fidelity`` target.
      kept: Its units; ``total``: the scored units.
      agreement: Its region label agreement.
      chosen: Its index in the L1 grid.
      searched: ``{name: Int[L]}``, :func:`jaxplain.subnet._optimize.trajectory` of the search.
      tuned: ``Int[L]``, the first fine-tuning step whose loss is not finite (-1: none).
    """
    _not_finite(searched["nonfinite"], tuned, opts)
    if opts.sparsity is not None or met:  # else the next warning says to try smaller weights
        _truncated(searched, chosen, opts)
    if opts.sparsity is None and not met:
        warnings.warn(f"no candidate kept the fidelity target {opts.fidelity}; returning the most "
                      f"faithful one (agreement {agreement:.3f}). Try smaller l1 values.",
                      stacklevel=_CALLER - 1)
    elif not met:
        warnings.warn(f"at sparsity={opts.sparsity} the most faithful candidate keeps the "
                      f"arg-max label of only {100 * agreement:.0f}% of the region (fidelity "
                      f"target {opts.fidelity}); it is returned as asked. Ask for a lower "
                      "sparsity, or pass fidelity= the agreement you accept.",
                      stacklevel=_CALLER - 1)
    target = None if opts.sparsity is None else target_units(opts.sparsity, total)
    if target is not None and 0 < kept < target:
        warnings.warn(f"at sparsity={opts.sparsity} the target is {target} of {total} "
                      f"units, but the sub-network keeps only {kept} (sparsity "
                      f"{1 - kept / total:.3f}): no candidate connects more units of its "
                      "open layers from the input to the output (the units of a layer whose "
                      "gate closed, and those the dependency closure removes, cannot be kept). "
                      "Ask for a lower sparsity, or pass smaller l1 / gate_l1 values so that "
                      "fewer gates close.", stacklevel=_CALLER - 1)
    if kept == 0:
        warnings.warn("the sub-network is empty: no kept unit connects the input to the output "
                      "(every candidate was removed by thresholding and the dependency closure). "
                      "Ask for a lower sparsity or smaller l1 values.", stacklevel=_CALLER - 1)


def _not_finite(searched: np.ndarray, tuned: np.ndarray, opts: Options) -> None:
    """Warns when a candidate's loss stopped being finite (``searched`` / ``tuned``: per
    candidate, the first such step of the search / fine-tuning, -1 where none): its iterates
    from there on are never kept, so its result comes from before that step."""
    said = [f"step {k} of the search for l1={w:g}" for k, w in zip(searched, opts.l1) if k >= 0]
    said += [f"step {k} of the fine-tuning of the candidate of l1={w:g}"
             for k, w in zip(tuned, opts.l1) if k >= 0]
    if said:
        warnings.warn(f"the loss was not finite (NaN or inf) from {'; '.join(said)}: the "
                      "iterates from there on were discarded (each such candidate comes from "
                      "the steps before). f's outputs are not finite with its units scaled so "
                      "(an overflow, a logarithm or division at 0; scores go up to "
                      f"score_max={opts.score_max:g}): check f, or compute it in a wider "
                      "dtype.", stacklevel=_CALLER)


def _truncated(searched: dict, chosen: int, opts: Options) -> None:
    """Warns when the chosen candidate's search lost the fidelity target and never regained
    it, with a finite loss, and no smaller L1 weight of the grid kept it to the end. Its best
    iterate, the one thresholded, is then the last before the labels were lost: a snapshot of
    scores still on their way down (Adam moves each by about the learning rate per step,
    whatever the weight), many small but above the threshold, so a larger weight, losing the
    labels sooner, keeps more units."""
    best, last = int(searched["best"][chosen]), int(searched["last"][chosen])
    if bool(searched["ends"][chosen]) or best < 0 or searched["nonfinite"][chosen] >= 0:
        return  # kept to the end; never kept; or warned about as not finite
    l1 = opts.l1[chosen]
    smaller = [j for j, w in enumerate(opts.l1) if w < l1]
    if any(bool(searched["ends"][j]) for j in smaller):  # the grid went below it: no better
        return
    advice = ("use a smaller l1 (or leave l1 unset: the default grid "
              f"{DEFAULT_L1} keeps the sparsest result that keeps the labels)" if not smaller
              else f"every smaller weight of the grid {opts.l1} lost them too; add smaller ones")
    warnings.warn(f"l1={l1:g} is too large for this region: the search lost the region's labels "
                  f"(fidelity {opts.fidelity}) after step {last} of {opts.steps} and never "
                  f"regained them, so the sub-network is thresholded from the iterate of step "
                  f"{best}, its scores still on their way down (small ones not yet 0 are "
                  "kept, and with such weights a larger l1 keeps more units, up to all of "
                  f"them); {advice}.", stacklevel=_CALLER)
