"""Orbax checkpoints of a rule search: the accepted rules, so a killed search can resume."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from jaxplain.core._folders import cannot_write, folder_lock


def fingerprint(data_parts, options: dict) -> dict:
    """What a resumed search must match: a 20-byte digest of the data, each option's repr.

    NumPy scalars are stamped as the Python numbers they equal (``np.int64(8)`` as ``8``), so
    an option read from a config or an array resumes the search started with a plain one.

    Args:
      data_parts: arrays and values that identify the data (hashed together).
      options: option name -> value, for the options that change the rules.

    Returns:
      dict ``"data"`` -> uint8 ``(20,)``, option name -> uint8 ``(len(repr),)``.
    """
    digest = hashlib.sha1()
    for part in data_parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    stamp = {"data": np.frombuffer(digest.digest(), dtype=np.uint8).copy()}
    for name, value in options.items():
        value = value.item() if isinstance(value, np.generic) else value
        stamp[name] = np.frombuffer(repr(value).encode(), dtype=np.uint8).copy()
    return stamp


@contextlib.contextmanager
def claimed(directory: str | os.PathLike | None) -> Iterator[str | None]:
    """Hold checkpoint_dir `directory` (``~`` expanded) for one search; yields its path.

    It is made if missing and checked writable, then locked for the block, so that a second
    search on it fails at once instead of mixing its steps into this one's. None: no
    checkpoint, nothing held.

    Raises:
      ValueError: `directory` cannot be written, or another process holds it.
    """
    if directory is None:
        yield None
        return
    directory = os.path.expanduser(os.fspath(directory))
    check_writable(directory)
    busy = lambda: ValueError(
        f"checkpoint_dir={directory!r} is in use by another process (a search saving its "
        "rules there now); wait for it to finish, or give this search its own checkpoint_dir")
    with folder_lock(Path(directory), busy=busy):
        yield directory


def check_writable(directory: str):
    """Create ``directory`` if needed and a probe file in it, so that an unwritable
    checkpoint_dir fails before the search rather than at its first save."""
    reason = cannot_write(Path(directory))
    if reason is not None:
        raise ValueError(f"checkpoint_dir={directory!r} cannot be written ({reason}); mine saves "
                         "its rules there after each accepted rule: pass a writable directory, "
                         "or checkpoint_dir=None")


def save(directory: str, accepted: list, stamp: dict, max_head: int, max_tail: int):
    """Write the accepted rules (step = their number); keeps the two latest steps."""
    count = len(accepted)
    heads = np.full((count, max_head), -1, np.int32)
    tails = np.full((count, max_tail), -1, np.int32)
    for i, rule in enumerate(accepted):
        heads[i, : len(rule.head)] = rule.head
        tails[i, : len(rule.tail)] = rule.tail
    tree = dict(pair=np.array([r.pair for r in accepted], np.int32), heads=heads, tails=tails,
                min_hits=np.array([r.min_hits for r in accepted], np.int32),
                gain=np.array([r.gain for r in accepted], np.float64), stamp=stamp)
    with ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=2)) as manager:
        manager.save(count, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()


def load(directory: str, stamp: dict):
    """The saved rules as ``(pair, head, tail, min_hits, gain)`` tuples, or [] if none.

    A step that cannot be read (a damaged or partly deleted file) is deleted with a
    ``RuntimeWarning`` and the step before it is used (two are kept).

    Raises:
      ValueError: the checkpoint belongs to a search on other data or with other options
        (the message names them), or no step of it can be read.
    """
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        return []
    damaged = []
    # One unnamed item, fixed up front: orbax would infer it from the first step it reads.
    with ocp.CheckpointManager(path, item_handlers=ocp.StandardCheckpointHandler()) as manager:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                saved, rules = _read(manager, step)
                break
            except Exception as e:  # orbax, tensorstore and json raise many types on damage
                damaged.append((step, f"{type(e).__name__}: {e}"[:300]))
        else:
            if not damaged:
                return []
            raise ValueError(f"checkpoint_dir={directory!r} is damaged: no step of it can be "
                             f"read ({_steps(damaged)}). Delete the directory to start "
                             "the search afresh, or pass another checkpoint_dir") from None
        differ = _differences(saved, stamp)
        if differ:
            raise ValueError(f"checkpoint_dir={directory!r} holds a search on other data or "
                             f"with other options ({'; '.join(differ)}); pass the same ones "
                             "to resume it, or use a fresh directory")
        for bad, _ in damaged:   # the resumed search writes these steps again
            manager.delete(bad)
    if damaged:
        warnings.warn(f"checkpoint_dir={directory!r}: {_steps(damaged)} cannot be read and "
                      f"was deleted; resuming from step {step} (its {step} accepted rules)",
                      RuntimeWarning, stacklevel=3)   # at mine's caller
    return rules


def _read(manager, step):
    """The stamp and rules of one step (any error means the step is damaged)."""
    tree = manager.restore(step, args=ocp.args.StandardRestore())
    rules = []
    for i in range(step):
        head = tuple(int(v) for v in np.asarray(tree["heads"][i]) if v >= 0)
        tail = tuple(int(v) for v in np.asarray(tree["tails"][i]) if v >= 0)
        rules.append((int(tree["pair"][i]), head, tail, int(tree["min_hits"][i]),
                      float(tree["gain"][i])))
    return tree["stamp"], rules


def _steps(damaged) -> str:
    return "; ".join(f"step {step} ({reason})" for step, reason in damaged)


# Options added after checkpoints were first written, with the behaviour a search had before:
# a stamp without one was written by such a search.
_ADDED = {"tail_order": "confidence"}


def _differences(saved, stamp: dict) -> list:
    """What differs between a checkpoint's stamp and this search's, in words."""
    if not isinstance(saved, dict):
        return ["it was written by an older jaxplain"]
    text = lambda a: np.asarray(a, np.uint8).tobytes().decode()
    out = []
    if not np.array_equal(np.asarray(saved.get("data")), stamp["data"]):
        out.append("the layers differ")
    saved = {**{name: np.frombuffer(repr(value).encode(), np.uint8)
                for name, value in _ADDED.items() if name in stamp}, **saved}
    for name in sorted((set(saved) | set(stamp)) - {"data"}):
        if name not in saved or name not in stamp:
            out.append(f"{name} is recorded on one side only")
        elif _value(text(saved[name])) != _value(text(stamp[name])):
            out.append(f"{name}={text(saved[name])} there, {text(stamp[name])} here")
    return out


# A NumPy scalar's repr under NumPy 2 (``np.int64(8)``), as older stamps may hold it.
_NUMPY_SCALAR = re.compile(r"\bnp\.(?:u?int|float)\d+\(([^()]*)\)")


def _value(text: str):
    """The option value a stamp's text stands for, so that equal numbers compare equal:
    stamps written before options were normalised hold ``np.int64(8)`` for ``8``, or ``0``
    for a float option's ``0.0``. Text that is no Python literal stands for itself."""
    try:
        return ast.literal_eval(_NUMPY_SCALAR.sub(r"\1", text))
    except (ValueError, SyntaxError):
        return text
