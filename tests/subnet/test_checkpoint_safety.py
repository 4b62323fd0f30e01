"""A checkpoint directory is safe to share, damage and misname: a model with its units in another
order is refused, one run at a time holds it, damaged files give errors naming them (a damaged
latest step falls back to the one before), an unwritable one is refused up front, ``~`` is the
home directory."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.core._folders import folder_lock
from jaxplain.subnet import _checkpoint

D, H, C = 10, 16, 3
KEY = jax.random.key(3)
QUICK = dict(sites="hidden", l1=(1e-2, 3e-2), steps=10, finetune_steps=5, checkpoint_every=5,
             sparsity=0.75, fidelity=0.0)
W1 = jax.random.normal(jax.random.key(0), (D, H)) / np.sqrt(D)
B1 = jax.random.normal(jax.random.key(5), (H,)) * 0.1
W2 = jax.random.normal(jax.random.key(1), (H, C)) / np.sqrt(H) * 3
X = jax.random.normal(jax.random.key(2), (12, D))


def _net(w1, b1, w2):
    def f(x):
        with jax.named_scope("hidden"):
            h = x @ w1 + b1
        return jax.nn.relu(h) @ w2
    return f


F = _net(W1, B1, W2)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One checkpointed run, shared (tests that damage it work on a copy)."""
    directory = tmp_path_factory.mktemp("safety") / "ck"
    return directory, subnet.extract(F, X, key=KEY, checkpoint_dir=str(directory), **QUICK)


def _same(a, b):
    assert a.kept_units == b.kept_units
    np.testing.assert_array_equal(np.asarray(a.masks["hidden"]), np.asarray(b.masks["hidden"]))
    np.testing.assert_allclose(float(a.region_kl), float(b.region_kl), rtol=1e-5, atol=1e-7)


def test_units_in_another_order_are_refused_the_same_weights_resume(first):
    directory, sub = first
    perm = np.random.default_rng(0).permutation(H)
    twin = _net(W1[:, perm], B1[perm], W2[perm])  # the same function, hidden units permuted
    assert float(jnp.abs(twin(X) - F(X)).max()) < 1e-5  # the log-probabilities cannot tell
    with pytest.raises(ValueError, match="units of site 'hidden' have other activations"):
        subnet.extract(twin, X, key=KEY, checkpoint_dir=str(directory), **QUICK)
    # The same weights in a new closure resume (every step is done: the same sub-network).
    again = subnet.extract(_net(W1, B1, W2), X, key=KEY, checkpoint_dir=str(directory),
                           **dict(QUICK, checkpoint_every=3))
    _same(again, sub)


def test_a_directory_held_by_another_process_is_refused_at_once(tmp_path):
    directory = tmp_path / "ck"
    directory.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; h = os.open(sys.argv[1], "
         "os.O_RDONLY); fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(60)", str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=r"checkpoint_dir='.*ck' is in use by another"):
            subnet.extract(F, X, key=KEY, checkpoint_dir=str(directory), **QUICK)
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(directory) == []  # refused before writing anything


def test_a_directory_held_in_this_process_is_refused_and_freed_after_a_run(tmp_path):
    directory = tmp_path / "ck"
    with folder_lock(directory):  # another thread's run, say
        with pytest.raises(ValueError, match="in use by another extract run"):
            subnet.extract(F, X, key=KEY, checkpoint_dir=str(directory), **QUICK)
    subnet.extract(F, X, key=KEY, checkpoint_dir=str(directory), **QUICK)
    with folder_lock(directory, busy=lambda: AssertionError("still held after the run")):
        pass


@pytest.mark.parametrize("damage", ["", '{"sites": ["hid', "[]", '{"sites": 1}'])
def test_a_damaged_identity_is_named(tmp_path, damage):
    directory = tmp_path / "ck"
    directory.mkdir()
    (directory / _checkpoint.FILE).write_text(damage)
    with pytest.raises(ValueError, match="identity.json' is damaged") as err:
        subnet.extract(F, X, key=KEY, checkpoint_dir=str(directory), **QUICK)
    assert str(directory) in str(err.value) and "Delete the directory" in str(err.value)


def test_the_identity_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    class Interrupted(Exception):
        pass

    def dump(obj, fh):  # the disk fills up half way
        fh.write(json.dumps(obj)[:40])
        raise Interrupted

    monkeypatch.setattr(_checkpoint.json, "dump", dump)
    directory = tmp_path / "ck"
    with pytest.raises(Interrupted):
        subnet.extract(F, X, key=KEY, checkpoint_dir=str(directory), **QUICK)
    assert os.listdir(directory) == []


def _truncate(step: Path):
    for file in step.rglob("*"):
        if file.is_file():
            file.write_bytes(file.read_bytes()[:10])


def test_a_damaged_latest_step_falls_back_to_the_one_before(first, tmp_path):
    directory, sub = first
    copy = tmp_path / "ck"
    shutil.copytree(directory, copy)
    assert sorted(os.listdir(copy / "search")) == ["10", "5"]  # two steps kept
    _truncate(copy / "search" / "10")
    with pytest.warns(RuntimeWarning, match=r"search'?: step 10 \(.*\) cannot be read and was "
                                            r"deleted; resuming from step 5"):
        again = subnet.extract(F, X, key=KEY, checkpoint_dir=str(copy), **QUICK)
    _same(again, sub)  # steps 6 to 10 run again, as before
    for step in ("5", "10"):
        _truncate(copy / "search" / step)
    with pytest.raises(ValueError, match=r"search'? is damaged: no step of it can be read "
                                         r"\(step 10 .*; step 5 .*\)\. Delete the directory"):
        subnet.extract(F, X, key=KEY, checkpoint_dir=str(copy), **QUICK)


def test_an_unwritable_directory_is_refused_up_front(tmp_path):
    (tmp_path / "file").write_text("")
    under_a_file = tmp_path / "file" / "ck"  # root may write anywhere but here
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*file/ck' cannot be written"):
        subnet.extract(F, X, key=KEY, checkpoint_dir=str(under_a_file), **QUICK)


def test_a_tilde_is_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    sub = subnet.extract(F, X, key=KEY, checkpoint_dir="~/ck", **QUICK)
    assert (tmp_path / "home" / "ck" / _checkpoint.FILE).is_file()
    assert not (tmp_path / "~").exists()
    again = subnet.extract(F, X, key=KEY, checkpoint_dir=tmp_path / "home" / "ck", **QUICK)
    _same(again, sub)
