"""extract(progress=True): a bar per phase, updated after every chunk of ``checkpoint_every``
steps with each candidate's loss, agreement and zero scores; the same sub-network as without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tqdm.auto

from jaxplain import subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._extract import _phase, _search_init
from tests.subnet import _nets


class _Recorder:
    """A stand-in for tqdm that records what the optimisation shows."""

    bars: list = []

    def __init__(self, total=None, initial=0, desc=None, **kwargs):
        self.total, self.initial, self.desc, self.kwargs = total, initial, desc, kwargs
        self.updates, self.postfixes, self.closed = [], [], False
        _Recorder.bars.append(self)

    def set_postfix_str(self, text, refresh=True):
        self.postfixes.append(text)

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        self.closed = True


def _refuse(*args, **kwargs):
    raise AssertionError("tqdm used without progress")


def test_progress_gives_the_same_subnetwork_bit_for_bit(monkeypatch):
    f, x, _ = _nets.planted(0.01)
    # 130 = 50 + 50 + 30: the last chunk is shorter (another compiled length).
    kw = dict(sites=_nets.SITES, key=jax.random.key(0), l1=(1e-3, 1e-2), steps=130,
              finetune_steps=40, checkpoint_every=50)
    monkeypatch.setattr(tqdm.auto, "tqdm", _refuse)
    quiet = subnet.extract(f, x, **kw)
    _Recorder.bars = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    shown = subnet.extract(f, x, progress=True, **kw)
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), quiet, shown)
    assert all(jax.tree.leaves(same)), same
    search, finetune = _Recorder.bars
    assert search.desc == "subnet search (2 L1 weights)" and search.total == 130
    assert search.updates == [50, 50, 30] and search.closed
    assert finetune.desc == "subnet fine-tune (2 candidates)" and finetune.updates == [40]
    assert finetune.closed and finetune.kwargs.get("leave") is False
    assert search.postfixes[-1].startswith("loss ") and "agree " in search.postfixes[-1]


def test_each_chunk_reports_every_candidates_loss_agreement_and_zero_scores(monkeypatch):
    f, x, _ = _nets.planted(0.01)
    opts = subnet.Options(l1=(1e-3, 1e-2), steps=60)
    logp, state, masks = _search_init(x, f=f, names=_nets.SITES, units=(24, 24, 24), opts=opts)
    l1 = jnp.asarray(opts.l1, jnp.float32)
    args = (f, state, masks, l1, l1, 1.0, x, logp)
    _Recorder.bars = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    chunks = [_optimize.run(*args, steps=n, phase=_phase(opts, search=True), checkpoint_every=20,
                            progress="search") for n in (20, 40, 60)]
    bar = _Recorder.bars[-1]
    assert bar.updates == [20, 20, 20] and bar.total == 60
    for text, done, end in zip(bar.postfixes, (20, 40, 60), chunks):
        history = np.asarray(end["history"])                       # (L, steps, 3)
        loss, agree = history[:, done - 1, 0], history[:, done - 1, 2]
        zero = sum(np.sum(np.asarray(s) == 0, axis=-1) for s in end["params"]["scores"].values())
        assert text == (f"loss {loss[0]:.3g}/{loss[1]:.3g}, "
                        f"agree {100 * agree[0]:.0f}/{100 * agree[1]:.0f}%, "
                        f"units at 0 {100 * zero[0] / 72:.0f}/{100 * zero[1] / 72:.0f}%")


def test_a_resumed_run_starts_its_bar_at_the_checkpoint(monkeypatch, tmp_path):
    f, x, _ = _nets.planted(0.01)
    opts = subnet.Options(l1=1e-3, steps=40)
    logp, state, masks = _search_init(x, f=f, names=_nets.SITES, units=(24, 24, 24), opts=opts)
    l1 = jnp.asarray([1e-3], jnp.float32)
    args = (f, state, masks, l1, l1, 1.0, x, logp)
    common = dict(phase=_phase(opts, search=True), checkpoint_every=10,
                  checkpoint_dir=str(tmp_path))
    _optimize.run(*args, steps=20, **common)
    _Recorder.bars = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    resumed = _optimize.run(*args, steps=40, progress="search", **common)
    (bar,) = _Recorder.bars
    assert bar.initial == 20 and bar.updates == [10, 10] and int(resumed["step"][0]) == 40


def test_progress_goes_to_stderr(capsys):
    f, x, _ = _nets.planted(0.01)
    subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0), l1=1e-3, steps=20,
                   finetune_steps=10, checkpoint_every=10, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "subnet search (1 L1 weight)" in err and "subnet fine-tune (1 candidate)" in err
    assert "step/s" in err


def test_progress_must_be_a_bool():
    f, x, _ = _nets.planted(0.01)
    with pytest.raises(TypeError, match="progress must be True or False, got 1"):
        subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0), progress=1)
