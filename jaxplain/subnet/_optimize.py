"""Optimising scores and gates: one jit-compiled ``lax.scan`` with optax, vmapped over candidates.

Every candidate (one L1 weight of the grid, or one thresholded sub-network to fine-tune) runs
the same scan in one vmapped, jit-compiled call. Each step projects the kept units' scores onto
``[score_min, score_max]`` (``score_min`` is 0 but when fine-tuning to a target size; removed
units stay exactly 0) and keeps the best iterate: the lowest loss among those whose loss is
finite and whose region arg-max labels keep the fidelity target, or the lowest loss overall if
none does. With a checkpoint directory the scan runs in chunks, each saved with orbax, and a
rerun resumes from the latest readable chunk (the two latest are kept); with ``progress`` it
runs in the same chunks and a tqdm bar reports after each one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxplain.core._layout import fast_convolutions
from jaxplain.subnet._objective import objective


@dataclasses.dataclass(frozen=True)
class Phase:
    """The static part of one optimisation phase (hashable: a jit static argument)."""

    gate_penalty: str
    train_gates: bool
    optimizer: str
    learning_rate: float
    score_max: float
    score_min: float = 0.0

    def transform(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return optax.adam(self.learning_rate)
        return optax.sgd(self.learning_rate, momentum=0.9)


def init_state(params: dict, steps: int, phase: Phase) -> dict[str, Any]:
    """The scan state of one candidate (vmap it for a batch of candidates).

    ``best_loss`` starts as float32's largest finite value (not inf, which ``jax_debug_infs``
    would report); :func:`run` widens it to the loss's dtype (float64 for a float64 model)
    before the scan, as the loss is not known here."""
    with jax.numpy_dtype_promotion("standard"):  # optax promotes implicitly
        opt = phase.transform().init(params)
    return {
        "params": params,
        "opt": opt,
        "best": params,
        "best_feasible": jnp.zeros((), bool),
        "best_loss": jnp.full((), jnp.finfo(jnp.float32).max, jnp.float32),
        "history": jnp.zeros((steps, 3), jnp.float32),  # loss, kl, agreement per step
        "step": jnp.zeros((), jnp.int32),
    }


def _keep_best(state, params, loss, agree, target):
    # A non-finite loss is never kept: nor the first feasible iterate, whose loss every later
    # one would have to beat (nothing is below NaN).
    feasible = (agree >= target) & jnp.isfinite(loss)
    better = (feasible & ~state["best_feasible"]) | (
        (feasible == state["best_feasible"]) & (loss < state["best_loss"]))
    pick = lambda new, old: jnp.where(better, new, old)  # noqa: E731
    return dict(state, best=jax.tree.map(pick, params, state["best"]),
                best_feasible=state["best_feasible"] | feasible,
                best_loss=pick(loss, state["best_loss"]))


def _loss(params, masks, l1, gate_l1, f, x, logp, phase):
    return objective(params, f, x, logp, masks, l1, gate_l1, gate_penalty=phase.gate_penalty,
                     train_gates=phase.train_gates)


def _step(state, masks, l1, gate_l1, target, *, f, x, logp, phase):
    """One optimisation step of one candidate: Adam (or SGD), then the projection."""
    params = state["params"]
    (loss, (kl, agree)), grads = jax.value_and_grad(_loss, has_aux=True)(
        params, masks, l1, gate_l1, f, x, logp, phase)
    state = _keep_best(state, params, loss, agree, target)
    with jax.numpy_dtype_promotion("standard"):  # optax promotes implicitly
        updates, opt = phase.transform().update(grads, state["opt"], params)
        params = optax.apply_updates(params, updates)
    scores = {n: jnp.where(masks[n], jnp.clip(s, phase.score_min, phase.score_max), 0.0)
              for n, s in params["scores"].items()}
    row = jnp.stack([loss, kl, agree]).astype(jnp.float32)
    step = state["step"]  # both indices one integer dtype (a Python 0 is int64 under x64)
    history = jax.lax.dynamic_update_slice(state["history"], row[None],
                                           (step, jnp.zeros_like(step)))
    return dict(state, params={"scores": scores, "theta": params["theta"]}, opt=opt,
                history=history, step=state["step"] + 1)


def _finish(state, masks, l1, gate_l1, target, *, f, x, logp, phase):
    """The last iterate is a candidate for the best one too."""
    loss, (_, agree) = _loss(state["params"], masks, l1, gate_l1, f, x, logp, phase)
    return _keep_best(state, state["params"], loss, agree, target)


@functools.partial(jax.jit, static_argnames=("f", "phase"))
def _step_dtypes(state, masks, l1, gate_l1, target, x, logp, *, f, phase):
    """``state`` in the dtypes one step returns, the scan's carry: ``best_loss`` takes the
    loss's dtype (float64 for a float64 model, where ``init_state`` gives float32). Compiled,
    so that the step is traced for its dtypes once per model, phase and shapes, not per call."""
    static = dict(f=f, x=x, logp=logp, phase=phase)
    step = jax.vmap(lambda s, m, a, b: _step(s, m, a, b, target, **static))
    out = jax.eval_shape(step, state, masks, l1, gate_l1)
    return jax.tree.map(lambda s, o: jnp.asarray(s, o.dtype), state, out)


@functools.partial(jax.jit, static_argnames=("f", "length", "phase", "fast"))
def _run_chunk(state, masks, l1, gate_l1, target, x, logp, *, f, length, phase, fast=True):
    """``length`` steps of every candidate (leading axis) as one ``lax.scan`` over a vmapped
    step, from ``state`` in the carry's dtypes (:func:`_step_dtypes`); ``fast``: convolutions
    in XLA:CPU's fast layout (see :mod:`jaxplain.core._layout`)."""
    static = dict(f=f, x=x, logp=logp, phase=phase)
    step = jax.vmap(lambda s, m, a, b: _step(s, m, a, b, target, **static))
    body = lambda s, _: (step(s, masks, l1, gate_l1), None)  # noqa: E731
    state, _ = jax.lax.scan(fast_convolutions(body) if fast else body, state, None,
                            length=length)
    finish = jax.vmap(lambda s, m, a, b: _finish(s, m, a, b, target, **static))
    return finish(state, masks, l1, gate_l1)


@jax.jit
def trajectory(history: jax.Array, target: float) -> dict[str, jax.Array]:
    """What the iterates of each candidate did, read from ``history`` (``(L, steps, 3)``: loss,
    KL and agreement per step): ``{name: Int[L]}`` with ``nonfinite``, the first step whose loss
    is not finite; ``best``, the step of the lowest finite loss among the steps that keep
    ``target`` (the best iterate but for the last, which has no row); ``last``, the last such
    step; each -1 where there is none; and ``ends``, whether the last step keeps ``target``."""
    loss, agree = history[..., 0], history[..., 2]
    if not loss.shape[-1]:
        none = jnp.full(loss.shape[:-1], -1, jnp.int32)
        return {"nonfinite": none, "best": none, "last": none,
                "ends": jnp.ones(loss.shape[:-1], bool)}
    ok = jnp.isfinite(loss) & (agree >= target - 1e-6)
    steps = jnp.arange(loss.shape[-1], dtype=jnp.int32)

    def first(flags):
        return jnp.where(jnp.any(flags, -1), jnp.argmax(flags, -1).astype(jnp.int32), -1)

    best = jnp.argmin(jnp.where(ok, loss, jnp.inf), -1).astype(jnp.int32)
    return {"nonfinite": first(~jnp.isfinite(loss)),
            "best": jnp.where(jnp.any(ok, -1), best, -1),
            "last": jnp.max(jnp.where(ok, steps, -1), -1),
            "ends": ok[..., -1]}


def run(f: Callable, state: dict, masks: dict, l1: jax.Array, gate_l1: jax.Array,
        target: float, x: jax.Array, logp: jax.Array, *, steps: int, phase: Phase,
        checkpoint_dir: str | None = None, checkpoint_every: int = 100,
        progress: str | None = None) -> dict:
    """Runs ``steps`` steps for a batch of candidates (leading axis of every argument but
    ``x``, ``logp``, ``target``) in one jit-compiled scan, or in chunks of
    ``checkpoint_every`` steps when checkpointing or showing ``progress`` (the bar's
    description; None: no bar); returns the state."""
    target = jnp.asarray(target - 1e-6, jnp.float32)
    if steps == 0:
        return state
    args = (masks, l1, gate_l1, target, x, logp)
    # the carry's dtypes before the scan (and before a restore, whose template it is)
    state = _step_dtypes(state, *args, f=f, phase=phase)
    if checkpoint_dir is None and progress is None:
        return _run_chunk(state, *args, f=f, length=steps, phase=phase)
    manager, done = None, 0
    if checkpoint_dir is not None:
        import orbax.checkpoint as ocp

        directory = os.path.abspath(os.path.expanduser(checkpoint_dir))
        os.makedirs(directory, exist_ok=True)
        # Two steps kept, so that a damaged latest one falls back to the one before; one
        # unnamed item fixed up front (orbax would infer it from the first step it reads).
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=2),
            item_handlers=ocp.StandardCheckpointHandler())
        try:
            done, state = _restore(manager, state, directory)
        except ValueError:
            manager.close()
            raise
    bar = None if progress is None else _ChunkBar(progress, steps, done)
    try:
        while done < steps:
            length = min(checkpoint_every, steps - done)
            state = _run_chunk(state, *args, f=f, length=length, phase=phase)
            done += length
            if manager is not None:
                manager.save(done, args=ocp.args.StandardSave(state))
            if bar is not None:
                bar.show(state, done)
    finally:
        if bar is not None:
            bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    return state


def _restore(manager, state: dict, directory: str) -> tuple[int, dict]:
    """The latest readable step of ``manager`` and its state (0 and ``state`` when none is
    saved). A step that cannot be read (a damaged or partly deleted file) is deleted with a
    ``RuntimeWarning`` and the step before it is used (two are kept).

    Raises:
      ValueError: naming ``directory``, when no step of it can be read.
    """
    import orbax.checkpoint as ocp

    damaged = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(state))
            break
        except Exception as e:  # orbax, tensorstore and json raise many types on damage
            damaged.append((step, f"{type(e).__name__}: {e}"[:300]))
    else:
        if not damaged:
            return 0, state
        raise ValueError(f"checkpoint_dir={directory!r} is damaged: no step of it can be read "
                         f"({_steps(damaged)}). Delete the directory to start this phase "
                         "afresh, or pass another checkpoint_dir") from None
    for bad, _ in damaged:  # the resumed run writes these steps again
        manager.delete(bad)
    if damaged:
        warnings.warn(f"checkpoint_dir={directory!r}: {_steps(damaged)} cannot be read and was "
                      f"deleted; resuming from step {step}", RuntimeWarning,
                      stacklevel=4)  # at extract's caller
    return step, restored


def _steps(damaged) -> str:
    return "; ".join(f"step {step} ({reason})" for step, reason in damaged)


@jax.jit
def _shown(history, scores, done):
    """What the bar shows after step ``done`` (traced: one compilation for every chunk):
    ``(Float[L, 3], Int[L])``, each candidate's loss, KL and agreement of that step and its
    number of scores exactly 0 over all sites."""
    row = jax.lax.dynamic_index_in_dim(history, done - 1, axis=1, keepdims=False)
    return row, sum(jnp.sum(s == 0, axis=-1) for s in scores.values())


class _ChunkBar:
    """A tqdm bar over the steps, updated after each chunk with every candidate's loss,
    region label agreement and share of units whose score is exactly 0 (in the order of the
    L1 grid), read from the state's history."""

    def __init__(self, desc: str, steps: int, done: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, initial=done, desc=desc, unit="step", leave=False)
        self.done = done

    def show(self, state: dict, done: int) -> None:
        scores = state["params"]["scores"]
        # One read of the device (a wait on an accelerator) per update, whatever the sites.
        row, zero = jax.device_get(_shown(state["history"], scores, done))
        loss, _, agree = row.T
        zero = zero / sum(s.shape[-1] for s in scores.values())
        self.bar.set_postfix_str(
            f"loss {'/'.join(f'{v:.3g}' for v in loss)}, "
            f"agree {'/'.join(f'{100 * v:.0f}' for v in agree)}%, "
            f"units at 0 {'/'.join(f'{100 * v:.0f}' for v in zero)}%", refresh=False)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.bar.close()
