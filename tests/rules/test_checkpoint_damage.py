"""Checkpoints that cannot be used as they are: damaged steps, unwritable directories, and
resuming with other options (only those that change the rules are refused, by name)."""

import os
import shutil
import warnings

import numpy as np
import pytest

from jaxplain.rules import mine
from tests.rules._planted import planted

FAST = dict(k_tail=16, beam=16, k_head=8, batch_size=16)


def key(rule_set):
    return ([(r.head.tolist(), r.tail.tolist(), int(r.min_hits), float(r.gain))
             for r in rule_set.rules], float(rule_set.code_length))


@pytest.fixture(scope="module")
def layers():
    d_a, d_b, _ = planted(3, rules=3)
    return {"a": d_a, "b": d_b}


@pytest.fixture(scope="module")
def full(layers):
    rules = mine(layers, **FAST)
    assert len(rules) == 3
    return key(rules)


def two_rules(layers, tmp_path):
    """A checkpoint directory holding steps 1 and 2 (the search stopped by max_rules)."""
    directory = str(tmp_path / "ck")
    mine(layers, checkpoint_dir=directory, max_rules=2, **FAST)
    assert sorted(os.listdir(directory)) == ["1", "2"]
    return directory


def damage(step_dir, how):
    if how == "metadata":
        with open(os.path.join(step_dir, "default", "_METADATA"), "w") as file:
            file.write("garbage\n")
    else:   # the step folder emptied
        shutil.rmtree(step_dir)
        os.mkdir(step_dir)


@pytest.mark.parametrize("how", ["metadata", "emptied"])
def test_damaged_latest_step_resumes_from_the_previous_one(layers, full, tmp_path, how):
    directory = two_rules(layers, tmp_path)
    damage(os.path.join(directory, "2"), how)
    new = []
    with pytest.warns(RuntimeWarning, match=r"ck'.*step 2 .* resuming from step 1"):
        resumed = mine(layers, checkpoint_dir=directory, callback=new.append, **FAST)
    assert key(resumed) == full
    assert len(new) == 2        # rule 1 replayed, rules 2 and 3 searched again
    # The damaged step was replaced: the next call replays every rule, silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = mine(layers, checkpoint_dir=directory, callback=new.append, **FAST)
    assert key(again) == full and len(new) == 2


def test_every_step_damaged_says_which_directory_and_what_to_do(layers, tmp_path):
    directory = two_rules(layers, tmp_path)
    damage(os.path.join(directory, "2"), "emptied")
    damage(os.path.join(directory, "1"), "metadata")
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*ck' is damaged.*step 2.*step 1"
                                         r".*Delete the directory"):
        mine(layers, checkpoint_dir=directory, **FAST)


def test_unwritable_checkpoint_dir_fails_before_the_search(layers, tmp_path):
    (tmp_path / "file").write_text("")
    seen = []
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*file/ck' cannot be written"):
        mine(layers, checkpoint_dir=str(tmp_path / "file" / "ck"), callback=seen.append, **FAST)
    assert seen == []


def test_batch_size_and_tolerance_leave_the_rules_and_may_change_on_resume(layers, full,
                                                                         tmp_path):
    for batch_size in (1, 5, 64):
        assert key(mine(layers, **dict(FAST, batch_size=batch_size))) == full
    directory = two_rules(layers, tmp_path)
    new = []
    resumed = mine(layers, checkpoint_dir=directory, callback=new.append,
                   **dict(FAST, batch_size=5, tolerance=1e-5))
    assert key(resumed) == full and len(new) == 1


def test_refusal_names_the_options_that_differ(layers, full, tmp_path):
    directory = two_rules(layers, tmp_path)
    with pytest.raises(ValueError, match=r"other options \(beam=16 there, 8 here; "
                                         r"k_tail=16 there, 12 here\)"):
        mine(layers, checkpoint_dir=directory, **dict(FAST, k_tail=12, beam=8))
    with pytest.raises(ValueError, match=r"other data .*\(the layers differ\)"):
        mine(dict(layers, b=~layers["b"]), checkpoint_dir=directory, **FAST)
    # Options given as the values they default to are the same search.
    same = dict(FAST, pairs=[("a", "b")], min_head_support=max(2, int(np.ceil(0.001 * 1000))))
    assert key(mine(layers, checkpoint_dir=directory, **same)) == full
