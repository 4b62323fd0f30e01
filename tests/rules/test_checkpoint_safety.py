"""Checkpoint folders used safely: one search at a time holds a folder, options equal in value
resume whatever their Python type (also from stamps of older versions), and ``~`` is home."""

import hashlib
import os
import time

import numpy as np
import pytest

from jaxplain.core._folders import folder_lock
from jaxplain.rules import _checkpoint, mine
from tests.rules._planted import planted

FAST = dict(k_tail=16, beam=16, k_head=8, batch_size=16)


def key(rule_set):
    return [(r.head.tolist(), r.tail.tolist(), int(r.min_hits), float(r.gain))
            for r in rule_set.rules]


@pytest.fixture(scope="module")
def layers():
    d_a, d_b, _ = planted(3, rules=3)
    return {"a": d_a, "b": d_b}


@pytest.fixture(scope="module")
def two(layers):
    """The first two rules of the uninterrupted search."""
    return key(mine(layers, max_rules=2, **FAST))


def old_fingerprint(data_parts, options):
    """The stamp as jaxplain wrote it before options were normalised: each option's repr."""
    digest = hashlib.sha1()
    for part in data_parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    stamp = {"data": np.frombuffer(digest.digest(), dtype=np.uint8).copy()}
    for name, value in options.items():
        stamp[name] = np.frombuffer(repr(value).encode(), dtype=np.uint8).copy()
    return stamp


def test_a_folder_held_by_another_search_is_refused_at_once(layers, tmp_path):
    directory = tmp_path / "ck"
    with folder_lock(directory, busy=lambda: AssertionError("the test holds the lock")):
        start = time.monotonic()
        with pytest.raises(ValueError, match="in use by another process") as error:
            mine(layers, checkpoint_dir=str(directory), max_rules=1, **FAST)
        assert time.monotonic() - start < 10
    assert str(directory) in str(error.value) and "its own checkpoint_dir" in str(error.value)
    assert os.listdir(directory) == []          # nothing saved by the refused search
    mine(layers, checkpoint_dir=str(directory), max_rules=1, **FAST)   # released: usable
    assert os.listdir(directory) == ["1"]


@pytest.mark.parametrize("first, again", [
    (dict(k_tail=16), dict(k_tail=np.int64(16))),
    (dict(eps=1e-9), dict(eps=np.float64(1e-9))),
    (dict(min_tail_frac=0.0), dict(min_tail_frac=0)),
    (dict(min_tail_frac=0), dict(min_tail_frac=np.float64(0.0))),
])
def test_options_equal_in_value_resume(layers, two, tmp_path, first, again):
    directory = str(tmp_path / "ck")
    mine(layers, checkpoint_dir=directory, max_rules=1, **dict(FAST, **first))
    resumed = mine(layers, checkpoint_dir=directory, max_rules=2, **dict(FAST, **again))
    assert key(resumed) == two


@pytest.mark.parametrize("old, new", [
    (dict(k_tail=16, eps=1e-9, min_tail_frac=0.0), dict(k_tail=16, eps=1e-9)),  # plain values
    (dict(k_tail=np.int64(16)), dict(k_tail=16)),            # stamped 'np.int64(16)'
    (dict(min_tail_frac=0), dict(min_tail_frac=0.0)),        # stamped '0'
])
def test_checkpoints_stamped_by_older_versions_resume(layers, two, tmp_path, monkeypatch,
                                                      old, new):
    directory = str(tmp_path / "ck")
    with monkeypatch.context() as patch:
        patch.setattr(_checkpoint, "fingerprint",
                      lambda parts, options: old_fingerprint(parts, dict(options, **old)))
        mine(layers, checkpoint_dir=directory, max_rules=1, **dict(FAST, **old))
    resumed = mine(layers, checkpoint_dir=directory, max_rules=2, **dict(FAST, **new))
    assert key(resumed) == two
    with pytest.raises(ValueError, match="k_tail"):            # a different value still differs
        mine(layers, checkpoint_dir=directory, **dict(FAST, **dict(new, k_tail=np.int64(8))))


def test_tilde_is_the_home_folder(layers, tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    mine(layers, checkpoint_dir="~/ck", max_rules=1, **FAST)
    assert os.listdir(home / "ck") == ["1"] and os.listdir(work) == []
