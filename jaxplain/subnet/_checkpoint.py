"""Which run a NeuroChains checkpoint directory belongs to, and that one run at a time uses it.

:func:`extract` holds :func:`claim` on ``checkpoint_dir`` for its whole run (a second run on the
same directory, in this process or another, is refused at once) and writes ``identity.json``
at its top before optimising: the sites, the region's shape, dtype and SHA-1 of its bytes, the
PRNG key, the options that change the result (not ``checkpoint_dir`` nor ``checkpoint_every``:
the same directory may be spelled another way, and the chunking leaves the iterates as they
are), the model's log-probabilities on the region (up to 4096 of them, evenly spaced) and each
scored site's unit profiles on the region, with the tolerances they are compared with. A rerun
resumes when all of these match, the numbers within their tolerance (another device or
compilation rounds differently: rounding the weights and inputs of the digits CNN to TF32 moves
the log-probabilities by at most 0.015, another model by several units); otherwise it refuses,
naming what differs. The profiles tell a model from itself with its units in another order: the
outputs are the same, but the saved scores are indexed by unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.core._folders import cannot_write, folder_lock
from jaxplain.subnet._types import Options

FILE = "identity.json"
#: Options that do not change the result: where and how often the optimisation is saved.
_NOT_RESULT = ("checkpoint_dir", "checkpoint_every")
_LOGPROBS = 4096
#: Groups of consecutive examples a unit's profile takes its mean over.
_GROUPS = 8
#: Tolerance on the log-probabilities, |now - stored| <= atol + rtol * |stored|, set for TF32
#: rounding (a 10-bit mantissa) and widened for coarser dtypes (bfloat16); on a site's unit
#: profiles atol is in units of the site's root mean square on the region.
_ATOL, _RTOL = 0.05, 0.02
_FIELDS = {"sites": list, "region": dict, "key": list, "options": dict, "model": dict}


def directory(checkpoint_dir) -> str | None:
    """``checkpoint_dir`` as an absolute path with ``~`` expanded; None stays None."""
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike) or None, got "
                        f"{checkpoint_dir!r}")
    return os.path.abspath(os.path.expanduser(os.fspath(checkpoint_dir)))


@contextlib.contextmanager
def claim(path: str | None) -> Iterator[None]:
    """Holds the checkpoint directory ``path`` (made if missing) for the block; None: nothing.

    Raises:
      ValueError: ``path`` cannot be written (checked before any optimisation), or another
        run holds it (in this process or another): at once, without waiting.
    """
    if path is None:
        yield
        return
    _check_writable(path)

    def busy():
        return ValueError(f"checkpoint_dir={path!r} is in use by another extract run (in this "
                          "or another process, optimising there now); wait for it to finish, "
                          "or give this run its own checkpoint_dir")

    with folder_lock(Path(path), busy=busy):
        yield


def _check_writable(path: str) -> None:
    reason = cannot_write(Path(path))
    if reason is not None:
        raise ValueError(f"checkpoint_dir={path!r} cannot be written ({reason}); extract saves "
                         "its optimisation there every checkpoint_every steps: pass a writable "
                         "directory, or checkpoint_dir=None")


@functools.partial(jax.jit, static_argnames=("f", "names"))
def _profiles(x, *, f, names):
    """Each site's unit profiles on ``x``: ``{name: Float[Array, "groups+1 units"]}``, a unit's
    mean over each of up to ``_GROUPS`` groups of consecutive examples, then its root mean
    square over all of ``x``; in the site's (floating) dtype."""
    _, values = jp.capture(f, names)(x)
    out = {}
    for name, v in values.items():
        wide = v.astype(jnp.promote_types(v.dtype, jnp.float32))
        n, units = v.shape[0], v.shape[-1]
        groups = min(_GROUPS, n)
        group = (np.arange(n) * groups) // n
        per_example = wide.reshape(n, -1, units).mean(axis=1)
        means = jax.ops.segment_sum(per_example, group, num_segments=groups) / np.bincount(
            group)[:, None]
        rms = jnp.sqrt(jnp.mean(jnp.square(wide.reshape(-1, units)), axis=0))
        keep = v.dtype if jnp.issubdtype(v.dtype, jnp.floating) else wide.dtype
        out[name] = jnp.concatenate([means, rms[None]]).astype(keep)
    return out


def _widen(dtype) -> float:
    """How much coarser than TF32's 10-bit mantissa ``dtype`` rounds (at least 1)."""
    return max(1.0, float(jnp.finfo(dtype).eps) / 2.0 ** -10)


def identity(f, x: jax.Array, names: tuple[str, ...], key: jax.Array, opts: Options,
             logp: jax.Array, dtype=None) -> dict:
    """The JSON-ready identity of one :func:`extract` run (one read of the device).

    Args:
      f: The model.
      x: ``Float[Array, "n *shape"]``, the region.
      names: The scored sites.
      key: The PRNG key given to :func:`extract`.
      opts: Its options.
      logp: ``Float[Array, "n classes"]``, the model's log-probabilities on ``x``.
      dtype: The dtype of the model's outputs, whose rounding widens the tolerance of ``logp``
        (computed in float32 from bfloat16 logits, say); None: ``logp``'s.
    """
    data, logp, profiles = jax.device_get((x, logp, _profiles(x, f=f, names=names)))
    data = np.ascontiguousarray(data)
    flat = np.asarray(logp, np.float64).ravel()
    step = -(-flat.size // _LOGPROBS)  # ceil: at most _LOGPROBS values
    widen = _widen(logp.dtype if dtype is None else dtype)
    options = {o.name: getattr(opts, o.name) for o in dataclasses.fields(opts)
               if o.name not in _NOT_RESULT}
    units = {n: {"profile": np.asarray(p, np.float64).tolist(),
                 "atol": _ATOL * _widen(p.dtype), "rtol": _RTOL * _widen(p.dtype)}
             for n, p in profiles.items()}
    return json.loads(json.dumps({
        "sites": list(names),
        "region": {"shape": list(data.shape), "dtype": str(data.dtype),
                   "sha1": hashlib.sha1(data.tobytes()).hexdigest()},
        "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
        "options": options,
        "model": {"logp": flat[::step].tolist(), "atol": _ATOL * widen, "rtol": _RTOL * widen,
                  "units": units}}))


def check(path: str, ident: dict) -> None:
    """Writes ``ident`` into a new checkpoint directory ``path`` (atomically), or refuses one
    that holds another run.

    Raises:
      ValueError: naming what differs (the sites, the region, the key, which options, the
        model), when the directory holds checkpoints without an identity, or when its
        identity cannot be read.
    """
    os.makedirs(path, exist_ok=True)
    file = os.path.join(path, FILE)
    if not os.path.exists(file):
        if any(os.path.exists(os.path.join(path, p)) for p in ("search", "finetune")):
            raise ValueError(f"checkpoint_dir {path!r} holds checkpoints without {FILE} "
                             "(written by an earlier jaxplain): it cannot tell which model and "
                             "region they belong to. Use an empty directory.")
        temp = f"{file}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temp, "w") as fh:
                json.dump(ident, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, file)  # a reader sees the whole file or none
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
        return
    differs = _differences(_read(file), ident)
    if differs:
        raise ValueError(f"checkpoint_dir {path!r} holds another optimisation: "
                         f"{'; '.join(differs)}. Use an empty directory, or the same model, "
                         "region, sites, key and options to resume.")


def _read(file: str) -> dict:
    """The stored identity, or a ValueError naming ``file`` when it cannot be read."""
    try:
        with open(file) as fh:
            stored = json.load(fh)
        reason = None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        stored, reason = None, f"{type(e).__name__}: {e}"
    if reason is None and not (
            isinstance(stored, dict)
            and all(isinstance(stored.get(k), t) for k, t in _FIELDS.items())
            and all(k in stored["model"] for k in ("logp", "atol", "rtol"))):
        reason = "not the identity of an extract run"
    if reason is not None:
        raise ValueError(f"{file!r} is damaged ({reason[:200]}): it records which run the "
                         "checkpoints beside it belong to. Delete the directory "
                         f"{os.path.dirname(file)!r} to restart the optimisation, or pass "
                         "another checkpoint_dir")
    return stored


def _differences(stored: dict, now: dict) -> list[str]:
    out = []
    same_sites = stored["sites"] == now["sites"]
    if not same_sites:
        out.append(f"sites {stored['sites']} there, {now['sites']} now")
    old, new = stored["region"], now["region"]
    if old != new:
        same = all(old.get(k) == new[k] for k in ("shape", "dtype"))
        out.append("x_region holds other values (same shape and dtype, another SHA-1 of its "
                   "bytes)" if same else f"x_region is {old.get('dtype')} {old.get('shape')} "
                   f"there, {new['dtype']} {new['shape']} now")
    if stored["key"] != now["key"]:
        out.append("another key")
    opts = stored["options"]
    out += [f"option {k}={opts.get(k)!r} there, {v!r} now" for k, v in now["options"].items()
            if opts.get(k) != v]
    if old == new:  # the model's values are comparable on the same region only
        out += _model_differences(stored["model"], now["model"])
        if same_sites:
            out += _unit_differences(stored["model"].get("units"), now["model"]["units"])
    return out


def _model_differences(stored: dict, now: dict) -> list[str]:
    a = np.asarray(stored["logp"], np.float64)
    b = np.asarray(now["logp"], np.float64)
    if a.shape != b.shape:
        return [f"the model gives {b.size} log-probabilities on the region where the "
                f"checkpoint's gave {a.size}: another model"]
    if not np.allclose(b, a, rtol=stored["rtol"], atol=stored["atol"], equal_nan=True):
        return [f"the model's log-probabilities on the region differ by up to "
                f"{np.nanmax(np.abs(b - a)):.3g} (tolerance {stored['atol']:.3g} + "
                f"{stored['rtol']:.3g} * |stored|): another model or other weights"]
    return []


def _unit_differences(stored: dict | None, now: dict) -> list[str]:
    """The sites whose units' profiles on the region differ beyond the stored tolerance."""
    if not isinstance(stored, dict):
        return [f"{FILE} holds no unit profiles of the sites (written by an earlier jaxplain): "
                "it cannot tell the model from one with its units in another order"]
    out = []
    for name, unit in now.items():
        saved = stored.get(name)
        if not (isinstance(saved, dict) and {"profile", "atol", "rtol"} <= saved.keys()):
            out.append(f"{FILE} holds no unit profile of site {name!r}")
            continue
        a = np.asarray(saved["profile"], np.float64)
        b = np.asarray(unit["profile"], np.float64)
        if a.shape != b.shape:
            out.append(f"site {name!r} has profiles of shape {b.shape} on the region where the "
                       f"checkpoint's had {a.shape}: another model")
            continue
        scale = float(np.sqrt(np.mean(np.square(a[-1]))))  # the site's RMS on the region
        gap = np.abs(b - a)
        off = ~((gap <= saved["atol"] * scale + saved["rtol"] * np.abs(a))
                | (np.isnan(a) & np.isnan(b)))
        if off.any():
            count = int(off.any(axis=0).sum())
            out.append(f"{count} of {a.shape[-1]} units of site {name!r} have other "
                       f"activations on the region (off by up to {np.nanmax(gap):.3g}; "
                       f"tolerance {saved['atol']:.3g} * {scale:.3g} (the site's RMS) + "
                       f"{saved['rtol']:.3g} * |stored|): another model, or its units in "
                       "another order")
    return out
