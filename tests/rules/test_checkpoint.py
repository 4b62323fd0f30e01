"""Orbax checkpoints: a search killed mid-way resumes from its accepted rules to the same result."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from jaxplain.rules import mine
from tests.rules._planted import planted

FAST = dict(k_tail=16, beam=16, k_head=8, batch_size=16)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Mines in a child process that SIGKILLs itself as soon as the second rule is checkpointed.
KILLED = textwrap.dedent("""
    import os, signal, sys
    from jaxplain.rules import mine
    from tests.rules._planted import planted
    d_a, d_b, _ = planted(3, rules=3)
    seen = []
    def die(rule):
        seen.append(rule)
        print("accepted", rule, flush=True)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    mine({"a": d_a, "b": d_b}, checkpoint_dir=sys.argv[1], callback=die, **%r)
    print("not killed")
""" % FAST)


def key(rule_set):
    return [(r.head.tolist(), r.tail.tolist(), int(r.min_hits), float(r.gain))
            for r in rule_set.rules]


def test_killed_search_resumes_with_the_same_result(tmp_path):
    d_a, d_b, _ = planted(3, rules=3)
    layers = {"a": d_a, "b": d_b}
    full = mine(layers, **FAST)
    assert len(full) >= 3
    directory = str(tmp_path / "ck")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", KILLED, directory], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    assert proc.stdout.count("accepted") == 2 and "not killed" not in proc.stdout
    resumed_new = []
    resumed = mine(layers, checkpoint_dir=directory, callback=resumed_new.append, **FAST)
    assert key(resumed) == key(full)
    assert float(resumed.code_length) == float(full.code_length)
    assert len(resumed_new) == len(full) - 2       # the two checkpointed rules were not redone


def test_resume_after_max_rules_and_foreign_checkpoint(tmp_path):
    d_a, d_b, _ = planted(3, rules=3)
    layers = {"a": d_a, "b": d_b}
    full = mine(layers, **FAST)
    directory = str(tmp_path / "ck")
    partial = mine(layers, checkpoint_dir=directory, max_rules=2, **FAST)
    assert key(partial) == key(full)[:2]
    resumed = mine(layers, checkpoint_dir=directory, **FAST)
    assert key(resumed) == key(full)
    with pytest.raises(ValueError, match="other data"):
        mine({"a": d_a, "b": ~d_b}, checkpoint_dir=directory, **FAST)
    with pytest.raises(ValueError, match="other data"):
        mine(layers, checkpoint_dir=directory, **dict(FAST, k_tail=8))
