"""Bad input gets clear errors, raised before any optimisation."""

import warnings

import jax
import jax.numpy as jnp
import pytest

from jaxplain import subnet
from tests.subnet import _nets


def _call(x=None, **kw):
    f, x0, _ = _nets.planted(0.01)
    kw.setdefault("sites", _nets.SITES)
    return subnet.extract(f, x0 if x is None else x, key=jax.random.key(0), **kw)


def test_unknown_site_names_close_matches():
    with pytest.raises(ValueError, match="conv2"):
        _call(sites=["conv1", "convv2"])


def test_missing_sites():
    with pytest.raises(ValueError, match="sites"):
        _call(sites=None)


def test_region_of_one_image():
    _, x, _ = _nets.planted(0.01)
    with pytest.raises(ValueError, match="at least 2 samples"):
        _call(x=x[:1])


@pytest.mark.parametrize("sparsity", [0.0, 1.0, 1.5, -0.2])
def test_sparsity_outside_the_open_unit_interval(sparsity):
    with pytest.raises(ValueError, match=r"sparsity .*\(0, 1\)"):
        _call(sparsity=sparsity)


def test_mismatched_input_shape():
    with pytest.raises(ValueError, match="shape"):
        _call(x=jnp.ones((4, 8, 8, 3)))


def test_bad_region_values_and_types():
    _, x, _ = _nets.planted(0.01)
    with pytest.raises(ValueError, match="NaN"):
        _call(x=x.at[0, 0, 0, 0].set(jnp.nan))
    with pytest.raises(TypeError, match="floating"):
        _call(x=(x * 16).astype(jnp.int32))
    with pytest.raises(TypeError, match="array"):
        _call(x=[[1.0, 2.0]])


def test_unknown_and_invalid_options():
    with pytest.raises(TypeError, match="unknown option"):
        _call(lamda=1e-3)
    with pytest.raises(ValueError, match="l1"):
        _call(l1=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        _call(optimizer="lbfgs")
    with pytest.raises(ValueError, match="fidelity"):
        _call(fidelity=1.5)


def _four_paths():
    """Two classes, each reached through two hidden units that each see one input feature;
    four hidden units more are dead ends. One kept unit can keep at most half of the labels of
    a region with one example per feature."""
    w1 = jnp.concatenate([jnp.eye(4), jnp.zeros((4, 4))], axis=1)
    w2 = jnp.zeros((8, 2)).at[jnp.asarray([0, 1, 2, 3]), jnp.asarray([0, 0, 1, 1])].set(1.0)

    def f(x):
        with jax.named_scope("hidden"):
            h = x @ w1
        return jax.nn.relu(h) @ w2

    x = jnp.concatenate([jnp.eye(4), 0.5 * jnp.eye(4)])
    return f, x


def test_a_target_sparsity_below_the_fidelity_target_warns():
    f, x = _four_paths()
    kw = dict(sites="hidden", key=jax.random.key(0), l1=(1e-3,), steps=100, finetune_steps=20)
    with pytest.warns(UserWarning, match=r"sparsity=0.9 .* only 50% of the region"):
        sub = subnet.extract(f, x, sparsity=0.9, **kw)       # keeps 1 of 8 units
    assert sum(sub.kept_units.values()) == 1 and float(sub.region_agreement) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sub = subnet.extract(f, x, sparsity=0.9, fidelity=0.5, **kw)   # 50% is accepted
        sub = subnet.extract(f, x, sparsity=0.5, **kw)       # 4 units: every label kept
    assert float(sub.region_agreement) == 1.0


def test_no_candidate_keeping_the_fidelity_target_warns_and_returns_the_most_faithful():
    f, x = _four_paths()
    kw = dict(sites="hidden", key=jax.random.key(0), steps=100, finetune_steps=20)
    with pytest.warns(UserWarning) as record:
        sub = subnet.extract(f, x, l1=(10.0, 100.0), **kw)  # each L1 weight closes every unit
    said = [str(r.message) for r in record]
    assert said[0].startswith("no candidate kept the fidelity target 1.0; returning the most "
                              "faithful one (agreement 0.500)"), said
    assert said[1].startswith("the sub-network is empty") and len(said) == 2, said
    assert float(sub.region_agreement) == 0.5 and sum(sub.kept_units.values()) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sub = subnet.extract(f, x, l1=(1e-3, 10.0), **kw)   # the small weight keeps all labels
    assert float(sub.region_agreement) == 1.0 and sum(sub.kept_units.values()) == 4


def test_a_region_of_one_predicted_class_warns_at_the_caller():
    f, x = _four_paths()
    one = x[jnp.asarray([0, 1, 4, 5])]                       # features 0 and 1: class 0 only
    kw = dict(sites="hidden", key=jax.random.key(0), l1=(1e-3,), steps=20, finetune_steps=5)
    with pytest.warns(UserWarning, match="predicts class 0 for every example") as record:
        subnet.extract(f, one, **kw)
    assert any(r.filename == __file__ for r in record if "predicts class" in str(r.message))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subnet.extract(f, x, **kw)                           # two classes: no warning
