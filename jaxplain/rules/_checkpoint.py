"""Orbax checkpoints of a rule search: the accepted rules, so a killed search can resume."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import orbax.checkpoint as ocp


def fingerprint(parts) -> np.ndarray:
    """A 20-byte digest of the data and options, so a checkpoint only resumes its own search."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return np.frombuffer(digest.digest(), dtype=np.uint8).copy()


def save(directory: str, accepted: list, stamp: np.ndarray, max_head: int, max_tail: int):
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


def load(directory: str, stamp: np.ndarray):
    """The saved rules as ``(pair, head, tail, min_hits, gain)`` tuples, or [] if none.

    Raises:
      ValueError: the checkpoint belongs to a search on other data or with other options.
    """
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        return []
    with ocp.CheckpointManager(path) as manager:
        step = manager.latest_step()
        if step is None:
            return []
        tree = manager.restore(step, args=ocp.args.StandardRestore())
    if not np.array_equal(np.asarray(tree["stamp"]), stamp):
        raise ValueError(f"checkpoint_dir={directory!r} holds a search on other data or with "
                         "other options; use a fresh directory")
    out = []
    for i in range(step):
        head = tuple(int(v) for v in np.asarray(tree["heads"][i]) if v >= 0)
        tail = tuple(int(v) for v in np.asarray(tree["tails"][i]) if v >= 0)
        out.append((int(tree["pair"][i]), head, tail, int(tree["min_hits"][i]),
                    float(tree["gain"][i])))
    return out
