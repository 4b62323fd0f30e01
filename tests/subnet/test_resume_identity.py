"""A checkpoint directory resumes only its own run (the region's bytes, the model, the sites, the
key and the options that change the result), however the directory is spelled."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet import _checkpoint
from tests.subnet import _nets

KEY = jax.random.key(0)
QUICK = dict(sites=_nets.SITES, l1=1e-3, steps=10, finetune_steps=5, checkpoint_every=5,
             fidelity=0.0)


def _what_differs(err) -> str:
    return str(err.value).split("another optimisation: ")[1].split(". Use an empty")[0]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One checkpointed run, shared: the refused calls write nothing, the resumed ones find
    every step done."""
    f, x, _ = _nets.planted(0.01)
    directory = str(tmp_path_factory.mktemp("resume") / "ck")
    sub = subnet.extract(f, x, key=KEY, checkpoint_dir=directory, **QUICK)
    return f, x, directory, sub


def test_a_flipped_region_with_the_same_pixel_sum_is_refused(first):
    f, x, directory, _ = first
    flipped = x[:, :, ::-1]
    assert float(jnp.sum(flipped)) == float(jnp.sum(x))  # what the old fingerprint compared
    with pytest.raises(ValueError, match="x_region holds other values") as err:
        subnet.extract(f, flipped, key=KEY, checkpoint_dir=directory, **QUICK)
    assert "log-probabilities" not in _what_differs(err)  # not blamed on the model


def test_another_model_with_the_same_sites_is_refused(first):
    _, x, directory, _ = first
    other = _nets.planted_net(_nets.planted_params(np.asarray(x), seed=1, eps=0.01))
    with pytest.raises(ValueError, match="log-probabilities on the region differ") as err:
        subnet.extract(other, x, key=KEY, checkpoint_dir=directory, **QUICK)
    assert "x_region" not in _what_differs(err) and "option" not in _what_differs(err)


def test_the_refusal_names_the_option_and_the_key(first):
    f, x, directory, _ = first
    with pytest.raises(ValueError, match=r"option l1=\[0\.001\] there, \[0\.01\] now"):
        subnet.extract(f, x, key=KEY, checkpoint_dir=directory, **dict(QUICK, l1=1e-2))
    with pytest.raises(ValueError, match="another key"):
        subnet.extract(f, x, key=jax.random.key(1), checkpoint_dir=directory, **QUICK)


def test_the_same_run_resumes_however_the_directory_is_spelled(first, monkeypatch):
    f, x, directory, sub = first
    monkeypatch.chdir(os.path.dirname(directory))
    for spelling, every in (("./ck", 5), (directory + os.sep, 5), ("ck", 3)):
        again = subnet.extract(f, x, key=KEY, checkpoint_dir=spelling,
                               **dict(QUICK, checkpoint_every=every))
        assert again.kept_units == sub.kept_units
        np.testing.assert_allclose(float(again.region_kl), float(sub.region_kl), rtol=1e-6)


def test_the_same_model_within_rounding_resumes(first):
    f, x, directory, sub = first
    stored = json.load(open(os.path.join(directory, _checkpoint.FILE)))["model"]
    assert (stored["atol"], stored["rtol"]) == (0.05, 0.02)
    # Logits off by 1e-4 relative (another device's rounding) still match ...
    again = subnet.extract(lambda v: f(v) * (1 + 1e-4), x, key=KEY, checkpoint_dir=directory,
                           **QUICK)
    assert again.kept_units == sub.kept_units
    # ... logits 20% larger do not.
    with pytest.raises(ValueError, match="another model or other weights"):
        subnet.extract(lambda v: f(v) * 1.2, x, key=KEY, checkpoint_dir=directory, **QUICK)


def test_checkpoints_without_an_identity_are_refused(tmp_path):
    f, x, _ = _nets.planted(0.01)
    os.makedirs(tmp_path / "search")
    with pytest.raises(ValueError, match="without identity.json"):
        subnet.extract(f, x, key=KEY, checkpoint_dir=str(tmp_path), **QUICK)
