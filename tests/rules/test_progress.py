"""mine(progress=True): a bar per search level with the heads scored and the best gain so far,
a line per accepted rule; the same rules as without, and nothing built when off."""

import math

import numpy as np
import pytest
import tqdm.auto

from jaxplain.rules import mine
from tests.rules._planted import planted

FAST = dict(k_tail=16, beam=16, k_head=8, batch_size=16, max_head=2)


class _Recorder:
    """A stand-in for tqdm that records what ``mine`` shows."""

    events: list = []

    def __init__(self, total=None, desc=None, **kwargs):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, None
        self.kwargs = kwargs
        _Recorder.events.append(("bar", self))

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def update(self, n=1):
        self.n += n
        _Recorder.events.append(("update", self.desc, n, self.postfix))

    def close(self):
        _Recorder.events.append(("close", self))

    @staticmethod
    def write(text, file=None):
        _Recorder.events.append(("write", text))


def _layers():
    d_a, d_b, _ = planted(0)
    d_c = np.random.default_rng(1).random((d_a.shape[0], 12)) < 0.1
    return {"a": d_a, "b": d_b, "c": d_c}


def test_progress_shows_levels_heads_and_best_gain_and_keeps_the_rules(monkeypatch):
    layers = _layers()
    quiet = mine(layers, **FAST)
    _Recorder.events = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    shown = mine(layers, progress=True, **FAST)
    assert str(shown) == str(quiet) and float(shown.code_length) == float(quiet.code_length)
    assert len(quiet) >= 2

    bars = [e[1] for e in _Recorder.events if e[0] == "bar"]
    closed = [e[1] for e in _Recorder.events if e[0] == "close"]
    assert sorted(map(id, bars)) == sorted(map(id, closed))            # every bar is closed
    for bar in bars:
        assert bar.n == bar.total and bar.kwargs.get("leave") is False  # every head counted
    # Seeds, then heads of 2, for each of the three layer pairs, for every rule searched
    # (the accepted ones and the last, which does not compress).
    descs = [b.desc for b in bars]
    for rule in range(1, len(quiet) + 2):
        for pair in ("a->b", "a->c", "b->c"):
            assert f"rule {rule}: {pair} heads of 1" in descs, descs
    assert any("heads of 2" in d for d in descs)
    # The best gain shown just before a rule is accepted is that rule's gain, and the gains
    # shown never go up within one rule's search.
    writes = [i for i, e in enumerate(_Recorder.events) if e[0] == "write"]
    assert len(writes) == len(quiet)
    start = 0
    for index, (at, rule) in enumerate(zip(writes, quiet.rules), 1):
        shown_gains = [float(e[3].split()[2]) for e in _Recorder.events[start:at]
                       if e[0] == "update" and "none" not in e[3]]
        assert shown_gains == sorted(shown_gains, reverse=True)
        assert math.isclose(shown_gains[-1], float(rule.gain), abs_tol=0.05)
        line = _Recorder.events[at][1]
        assert line.startswith(f"accepted rule {index} (") and str(rule) in line
        start = at


def test_progress_on_stderr_and_silent_when_off(capsys):
    layers = _layers()
    mine(layers, max_rules=1, **FAST)
    assert capsys.readouterr() == ("", "")
    mine(layers, max_rules=1, progress=True, **FAST)
    out, err = capsys.readouterr()
    assert out == ""                                     # all of it on stderr
    # (tqdm redraws at most every 0.1 s: these fast levels show their start only.)
    assert "rule 1: a->b heads of 1" in err and "head/s" in err
    assert "accepted rule 1 (" in err and "bits; L = " in err


def test_progress_off_builds_no_bar(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tqdm used with progress=False")

    monkeypatch.setattr(tqdm.auto, "tqdm", refuse)
    assert len(mine(_layers(), max_rules=1, **FAST)) == 1


def test_progress_must_be_a_bool():
    with pytest.raises(TypeError, match="progress must be True or False, got 'yes'"):
        mine(_layers(), progress="yes", **FAST)
