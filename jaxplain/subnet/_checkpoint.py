"""What a NeuroChains checkpoint directory belongs to, so that a rerun resumes only its own run.

:func:`extract` writes ``identity.json`` at the top of ``checkpoint_dir`` before optimising:
the sites, the region's shape, dtype and SHA-1 of its bytes, the PRNG key, the options that
change the result (not ``checkpoint_dir`` nor ``checkpoint_every``: the same directory may be
spelled another way, and the chunking leaves the iterates as they are), and the model's
log-probabilities on the region (up to 4096 of them, evenly spaced) with the tolerance they are
compared with. A rerun resumes when all of these match, the log-probabilities within that
tolerance (another device or compilation rounds differently: rounding the weights and inputs
of the digits CNN to TF32 moves them by at most 0.015, another model by several units);
otherwise it refuses, naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np

from jaxplain.subnet._types import Options

FILE = "identity.json"
#: Options that do not change the result: where and how often the optimisation is saved.
_NOT_RESULT = ("checkpoint_dir", "checkpoint_every")
_LOGPROBS = 4096
#: Tolerance on the log-probabilities, |now - stored| <= atol + rtol * |stored|, set for TF32
#: rounding (a 10-bit mantissa) and widened for coarser output dtypes (bfloat16).
_ATOL, _RTOL = 0.05, 0.02


def identity(x: jax.Array, names: tuple[str, ...], key: jax.Array, opts: Options,
             logp: jax.Array) -> dict:
    """The JSON-ready identity of one :func:`extract` run.

    Args:
      x: ``Float[Array, "n *shape"]``, the region.
      names: The scored sites.
      key: The PRNG key given to :func:`extract`.
      opts: Its options.
      logp: ``Float[Array, "n classes"]``, the model's log-probabilities on ``x``.
    """
    data = np.ascontiguousarray(np.asarray(x))
    flat = np.asarray(logp, np.float64).ravel()
    step = -(-flat.size // _LOGPROBS)  # ceil: at most _LOGPROBS values
    widen = max(1.0, float(np.finfo(np.asarray(logp).dtype).eps) / 2.0 ** -10)
    options = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
               if f.name not in _NOT_RESULT}
    return json.loads(json.dumps({
        "sites": list(names),
        "region": {"shape": list(data.shape), "dtype": str(data.dtype),
                   "sha1": hashlib.sha1(data.tobytes()).hexdigest()},
        "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
        "options": options,
        "model": {"logp": flat[::step].tolist(),
                  "atol": _ATOL * widen, "rtol": _RTOL * widen}}))


def check(directory: str, ident: dict) -> None:
    """Writes ``ident`` into a new checkpoint directory, or refuses one that holds another run.

    Raises:
      ValueError: naming what differs (the sites, the region, the key, which options, the
        model), or when the directory holds checkpoints without an identity.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILE)
    if not os.path.exists(path):
        if any(os.path.exists(os.path.join(directory, p)) for p in ("search", "finetune")):
            raise ValueError(f"checkpoint_dir {directory!r} holds checkpoints without {FILE} "
                             "(written by an earlier jaxplain): it cannot tell which model and "
                             "region they belong to. Use an empty directory.")
        with open(path, "w") as fh:
            json.dump(ident, fh)
        return
    with open(path) as fh:
        stored = json.load(fh)
    differs = _differences(stored, ident)
    if differs:
        raise ValueError(f"checkpoint_dir {directory!r} holds another optimisation: "
                         f"{'; '.join(differs)}. Use an empty directory, or the same model, "
                         "region, sites, key and options to resume.")


def _differences(stored: dict, now: dict) -> list[str]:
    out = []
    if stored.get("sites") != now["sites"]:
        out.append(f"sites {stored.get('sites')} there, {now['sites']} now")
    old, new = stored.get("region", {}), now["region"]
    if old != new:
        same = all(old.get(k) == new[k] for k in ("shape", "dtype"))
        out.append("x_region holds other values (same shape and dtype, another SHA-1 of its "
                   "bytes)" if same else f"x_region is {old.get('dtype')} {old.get('shape')} "
                   f"there, {new['dtype']} {new['shape']} now")
    if stored.get("key") != now["key"]:
        out.append("another key")
    opts = stored.get("options", {})
    out += [f"option {k}={opts.get(k)!r} there, {v!r} now" for k, v in now["options"].items()
            if opts.get(k) != v]
    if old == new:  # the log-probabilities are comparable on the same region only
        out += _model_differences(stored.get("model", {}), now["model"])
    return out


def _model_differences(stored: dict, now: dict) -> list[str]:
    a = np.asarray(stored.get("logp", []), np.float64)
    b = np.asarray(now["logp"], np.float64)
    if a.shape != b.shape:
        return [f"the model gives {b.size} log-probabilities on the region where the "
                f"checkpoint's gave {a.size}: another model"]
    if not np.allclose(b, a, rtol=stored["rtol"], atol=stored["atol"], equal_nan=True):
        return [f"the model's log-probabilities on the region differ by up to "
                f"{np.nanmax(np.abs(b - a)):.3g} (tolerance {stored['atol']:.3g} + "
                f"{stored['rtol']:.3g} * |stored|): another model or other weights"]
    return []
