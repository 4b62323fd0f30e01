"""A cache folder shared by several users or processes: the umask's permissions, one training."""

import os
import stat
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np

from jaxplain import data
from jaxplain.data import _pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fake_train(key, digits, model, *, epochs, learning_rate, progress):
    """The untrained variables and a one-epoch history, in place of the 10-epoch run."""
    variables = model.init(key, digits.x_test[:1])
    history = data.TrainHistory(loss=(1.0,), train_accuracy=(0.1,), test_accuracy=(0.1,))
    return jax.tree.map(np.asarray, variables), history


def test_cache_folder_follows_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(_pretrained, "train", fake_train)
    old = os.umask(0o002)          # a cache shared by a group
    try:
        data.pretrained(tmp_path, progress=False)
    finally:
        os.umask(old)
    folder = tmp_path / _pretrained.CHECKPOINT_NAME
    assert stat.S_IMODE(folder.stat().st_mode) == 0o775     # mkdtemp gave 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


# Each child says it is about to call pretrained, then calls it; the fake training waits until
# both have said so, so that without a lock both would find the cache empty and train.
CHILD = textwrap.dedent("""
    import pathlib, sys, time
    from jaxplain import data
    from jaxplain.data import _pretrained
    from tests.data.test_cache_sharing import fake_train
    home = pathlib.Path(sys.argv[1])

    def train(*args, **kwargs):
        (home.parent / ("trained-" + sys.argv[2])).touch()
        deadline = time.monotonic() + 60
        while len(list(home.parent.glob("calling-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)            # the other child is now in pretrained
        return fake_train(*args, **kwargs)

    _pretrained.train = train
    (home.parent / ("calling-" + sys.argv[2])).touch()
    _, variables = data.pretrained(home, progress=False)
    print(data.params_checksum(variables))
""")


def test_two_processes_filling_one_cache_train_once(tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    start = time.monotonic()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(i)], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for i in range(2)]
    outs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outs):
        assert child.returncode == 0, err[-3000:]
    assert len(list(tmp_path.glob("trained-*"))) == 1, "both processes trained"
    assert outs[0][0] == outs[1][0]                     # the second loaded the first's model
    assert time.monotonic() - start < 60
