"""The values of NeuroChains: its options (a frozen dataclass) and its result (a pytree)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from jaxtyping import Array, Bool, Float

#: The L1 weights swept by default (raw L1 sum of the scores, mean KL in nats) [R].
DEFAULT_L1 = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: The score thresholds tried by default; the largest that keeps the fidelity target wins [R].
DEFAULT_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2)


def _as_tuple(name: str, value: float | Sequence[float]) -> tuple[float, ...]:
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                             for v in values):
        raise ValueError(f"{name} must be a number >= 0 or a non-empty sequence of them, "
                         f"got {value!r}")
    return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class Options:
    """How :func:`extract` optimises, thresholds and fine-tunes (every choice marked [R] in the
    NeuroChains spec, with the spec's reference defaults).

    Attributes:
        l1: The L1 weight lambda on the scores, or a grid of them. A grid is optimised in one
            vmapped run; the result is the sparsest candidate that keeps ``fidelity`` (or, with
            ``sparsity``, the most faithful one at that sparsity).
        gate_l1: Weight lambda_g of the gate term (our addition); ``None`` uses each ``l1``.
        gate_penalty: ``"sigmoid"``: lambda_g * sum_u sigmoid(theta_u); ``"gated_l1"``:
            lambda_g * sum_u g_u * ||s_u||_1 (the spec's alternative).
        fidelity: Target share of region samples whose arg-max label the sub-network keeps.
        sparsity: Target share of units removed, in (0, 1); ``None`` searches for the sparsest
            sub-network that keeps ``fidelity``. With a target, thresholding keeps the first
            ``max(1, floor((1 - sparsity) * total))`` units of a ranking of every unit of the
            open layers instead of using ``threshold``: the largest multipliers, then the
            units whose score the search left at 0, the largest gain ``-dKL/dm`` first, then
            by position (with ``closure``, more of the ranking when the closure would remove
            some of them: enough to connect the input to the output; when that is more than
            one unit per site above the target, its units are removed again from the
            lowest-ranked up while the closure keeps the target). Units taken back at 0
            restart at the smallest ``threshold``, and fine-tuning keeps every kept score at
            or above it, so it removes none. The non-empty candidate of at least that size and
            closest to it (else the largest), then the most faithful, is returned even when its
            region agreement is below ``fidelity``; each shortfall warns.
        threshold: Score threshold tau_s (a unit with score <= tau_s is removed), or a grid; with
            a grid each L1 weight takes the largest tau_s whose thresholded net keeps
            ``fidelity`` before fine-tuning (the spec's adaptive mode).
        gate_threshold: A layer whose gate sigmoid(theta) is below this is removed whole.
        steps: Optimisation steps of the score-and-gate search.
        finetune_steps: Steps of the score fine-tuning on the fixed sub-network (KL only).
        learning_rate: Step size of the optimiser.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        score_init: Initial score of every unit.
        gate_init: Initial gate logit theta (sigmoid(5) = 0.993).
        score_max: Scores are projected onto [0, score_max] after every step.
        finetune_gates: ``"value"`` keeps the gates of kept layers at their learnt value during
            and after fine-tuning; ``"one"`` opens them fully (sigmoid = 1).
        closure: Apply the dependency closure after thresholding: remove kept units that no
            longer influence the output (they feed only removed units) and units whose value
            no longer depends on the input on the region (they would only inject bias or
            BatchNorm-shift constants, e.g. the rest of a residual branch after one of its
            convolutions went), the latter as a group and only when the region's label
            agreement does not drop without them (a bias unit the chain needs stays).
        checkpoint_dir: Directory for orbax checkpoints of the optimisation (``~`` expanded;
            one run at a time: another process using it is refused at once); a rerun with the
            same directory resumes from the latest readable step if it is the same run (the
            region's bytes, the model's outputs on it, each site's unit profiles on it, the
            sites, the key and every option but ``checkpoint_dir`` and ``checkpoint_every``),
            and is refused, naming what differs, otherwise. ``None`` runs each phase as a single
            jit-compiled ``lax.scan`` (in chunks with ``extract(..., progress=True)``).
        checkpoint_every: Steps between checkpoints (when ``checkpoint_dir`` is set), and
            between progress reports (``extract(..., progress=True)``).
    """

    l1: float | tuple[float, ...] = DEFAULT_L1
    gate_l1: float | None = None
    gate_penalty: str = "sigmoid"
    fidelity: float = 1.0
    sparsity: float | None = None
    threshold: float | tuple[float, ...] = DEFAULT_THRESHOLDS
    gate_threshold: float = 0.5
    steps: int = 1000
    finetune_steps: int = 300
    learning_rate: float = 1e-2
    optimizer: str = "adam"
    score_init: float = 1.0
    gate_init: float = 5.0
    score_max: float = 100.0
    finetune_gates: str = "value"
    closure: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100

    def __post_init__(self):
        object.__setattr__(self, "l1", _as_tuple("l1", self.l1))
        object.__setattr__(self, "threshold", _as_tuple("threshold", self.threshold))
        if self.gate_l1 is not None and not (
                isinstance(self.gate_l1, (int, float)) and math.isfinite(self.gate_l1)
                and self.gate_l1 >= 0):
            raise ValueError(f"gate_l1 must be None or a number >= 0, got {self.gate_l1!r}")
        if self.sparsity is not None and not (
                isinstance(self.sparsity, (int, float)) and 0.0 < self.sparsity < 1.0):
            raise ValueError(f"sparsity must be a share of units to remove in the open interval "
                             f"(0, 1), e.g. 0.95, got {self.sparsity!r}")
        if not 0.0 <= self.fidelity <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {self.fidelity!r}")
        for name in ("steps", "finetune_steps", "checkpoint_every"):
            value = getattr(self, name)
            low = 0 if name.endswith("steps") else 1
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        choices = {"gate_penalty": ("sigmoid", "gated_l1"), "optimizer": ("adam", "sgd"),
                   "finetune_gates": ("value", "one")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 < self.gate_threshold < 1.0:
            raise ValueError(f"gate_threshold must be in (0, 1), got {self.gate_threshold!r}")
        if not (self.learning_rate > 0 and self.score_max > 0 and self.score_init > 0):
            raise ValueError("learning_rate, score_max and score_init must be > 0, got "
                             f"{self.learning_rate!r}, {self.score_max!r}, {self.score_init!r}")

    @property
    def gate_weights(self) -> tuple[float, ...]:
        """lambda_g for each L1 weight of the grid."""
        if self.gate_l1 is None:
            return self.l1
        return (float(self.gate_l1),) * len(self.l1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SubNetwork:
    """A sub-network: which units of which sites are kept, and their learnt scales.

    The sub-network computes ``f`` with the value ``v`` at each site replaced by
    ``v * multiplier`` where ``multiplier = mask * gate * score`` (one entry per unit, the
    value's last axis): the kept filters are exact copies of the weights of ``f`` (never
    changed), their outputs scaled by the learnt multipliers, which are often far from 1 and
    part of the explanation. A plain 0/1 mask of the same units can lose many labels (see
    ``unscaled_agreement``). A pytree: it passes through ``jit`` and orbax unchanged.

    Attributes:
        masks: ``{site: Bool[c]}``, True for the kept units.
        scores: ``{site: Float[c]}``, the fine-tuned non-negative scores (0 where removed).
        gates: ``{site: Float[]}``, the layer gate after the sigmoid, ``sigmoid(theta)`` in
            (0, 1) for a kept layer (often ~0.99), and exactly 0.0 for a layer with no kept
            unit.
        region_agreement: Share of the region whose arg-max label the sub-network keeps.
        region_kl: Mean KL(original softmax || sub-network softmax) over the region, in nats.
        l1: The L1 weight of the chosen candidate.
        threshold: The score threshold of the chosen candidate (NaN with a target sparsity).
        sites: The site names, in the network's order (static).
        unscaled_agreement: Share of the region whose arg-max label the same kept units keep
            as a plain 0/1 mask (multiplier 1, no scores or gates); ``None`` when not measured.
    """

    masks: dict[str, Bool[Array, " c"]]
    scores: dict[str, Float[Array, " c"]]
    gates: dict[str, Float[Array, ""]]
    region_agreement: Float[Array, ""]
    region_kl: Float[Array, ""]
    l1: Float[Array, ""]
    threshold: Float[Array, ""]
    sites: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    unscaled_agreement: Float[Array, ""] | None = None

    def multipliers(self) -> dict[str, Float[Array, " c"]]:
        """``{site: mask * gate * score}``, the factor applied to each unit's value."""
        return {n: self.masks[n].astype(self.scores[n].dtype) * self.gates[n] * self.scores[n]
                for n in self.sites}

    @property
    def kept_units(self) -> dict[str, int]:
        """Kept units per site (host values)."""
        return {n: int(np.sum(np.asarray(self.masks[n]))) for n in self.sites}

    @property
    def total_units(self) -> dict[str, int]:
        """Units per site."""
        return {n: int(np.asarray(self.masks[n]).size) for n in self.sites}

    @property
    def kept_layers(self) -> tuple[str, ...]:
        """The sites with at least one kept unit, in order."""
        return tuple(n for n, k in self.kept_units.items() if k > 0)

    @property
    def sparsity(self) -> float:
        """Share of units removed over all sites."""
        kept, total = sum(self.kept_units.values()), sum(self.total_units.values())
        return 1.0 - kept / total

    def summary(self) -> str:
        """A few lines: kept units per site, kept layers, fidelity on the region (and that of
        the same units as an unscaled 0/1 mask, when measured)."""
        lines = [f"{n}: {k}/{t} units kept" for (n, k), t in
                 zip(self.kept_units.items(), self.total_units.values())]
        kept, total = sum(self.kept_units.values()), sum(self.total_units.values())
        lines.append(f"kept {kept}/{total} units ({100 * self.sparsity:.1f}% removed), "
                     f"{len(self.kept_layers)}/{len(self.sites)} layers; region agreement "
                     f"{100 * float(self.region_agreement):.1f}%, KL "
                     f"{float(self.region_kl):.2e} nats (l1={float(self.l1):g})")
        if self.unscaled_agreement is not None:
            lines.append(f"the same units unscaled (a 0/1 mask, no scores or gates): region "
                         f"agreement {100 * float(self.unscaled_agreement):.1f}%")
        return "\n".join(lines)
