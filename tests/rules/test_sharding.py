"""Rows sharded over 8 emulated CPU devices give the identical rule set, and a checkpoint
resumes across device counts (in a subprocess: the device-count flag must precede JAX's start)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import tempfile
    import jax, numpy as np
    from jaxplain.rules import mine
    from tests.rules._planted import planted
    assert jax.device_count() == 8, jax.devices()
    d_a, d_b, truth = planted(5, n=1000, rules=3)
    layers = {"a": d_a, "b": d_b}
    opts = dict(k_tail=16, beam=16, k_head=8, batch_size=16)
    one = mine(layers, devices=jax.devices()[:1], **opts)
    eight = mine(layers, devices=jax.devices(), **opts)
    key = lambda rs: [(r.head.tolist(), r.tail.tolist(), int(r.min_hits), float(r.gain))
                      for r in rs.rules]
    assert len(one) >= 3, str(one)
    assert key(one) == key(eight), (key(one), key(eight))
    assert float(one.code_length) == float(eight.code_length)
    # A search checkpointed on one device resumes on eight to the same rules.
    directory = tempfile.mkdtemp()
    mine(layers, devices=jax.devices()[:1], checkpoint_dir=directory, max_rules=2, **opts)
    resumed = mine(layers, devices=jax.devices(), checkpoint_dir=directory, **opts)
    assert key(resumed) == key(one), (key(resumed), key(one))
    print("identical", len(one))
""")


def test_sharded_rows_give_identical_rules():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "identical" in proc.stdout
