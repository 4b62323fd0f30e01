"""LRP through a choice between input-dependent values: ``jnp.where(p(x), a(x), b(x))`` and a
vmapped ``lax.cond`` (whose operands pass the gradient gates ``select_n(p, stop_gradient(v),
v)``). The gradient hands each output's relevance whole to the chosen value, so lrp passes it
without the unruled-nonlinearity warning (DeepLIFT still warns: the choice differs between x and
the baseline), and a composite's ``first`` rule reaches the layers behind the gates of x: the
two spellings of one function get one map (EpsilonPlusFlat's maps differed by 7.4 before);
a constant chosen takes the relevance as a bias does."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain.lrp import Composite, Epsilon, EpsilonPlus, EpsilonPlusFlat
from tests.core.test_vmapped_cond import _A, _COND, _T, _WHERE, _X


def test_the_first_rule_reaches_a_vmapped_conds_layers_as_the_where_spelling():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = A.lrp(_COND, _X, _T, rules=EpsilonPlusFlat())
        want = A.lrp(_WHERE, _X, _T, rules=EpsilonPlusFlat())
    np.testing.assert_allclose(got, want, atol=1e-6)
    # the flat first rule spreads each first-layer unit's relevance evenly over the inputs, so
    # the map is not EpsilonPlus's (no first rule) there
    eps_only = A.lrp(_WHERE, _X, _T, rules=EpsilonPlus())
    assert np.abs(np.asarray(want) - np.asarray(eps_only)).max() > 1e-2


def test_a_choice_between_input_dependent_values_routes_relevance_whole():
    # two bias-free ReLU MLPs: LRP-0 from the logit conserves through the choice
    k = jax.random.split(jax.random.key(2), 4)
    w = [jax.random.normal(k[i], s) / 2 for i, s in enumerate([(6, 8), (8, 4), (6, 8), (8, 4)])]
    f = lambda z: jnp.where(z[:, :1] > 0, jax.nn.relu(z @ w[0]) @ w[1],  # noqa: E731
                            jax.nn.relu(z @ w[2]) @ w[3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = A.lrp(f, _X, _T, rules=Composite(default=Epsilon(0.0), stabilizer=0.0),
                  scale_by_logit=True)
    np.testing.assert_allclose(r.sum(axis=1), f(_X)[jnp.arange(5), _T], rtol=1e-5)
    with pytest.warns(UserWarning, match="do not sum to"):
        A.deeplift(f, _X, _T)


def test_a_choice_of_a_constant_absorbs_relevance_as_a_bias_and_deeplift_warns():
    f = lambda z: jnp.where(z[:, :1] > 0, _A(z), 0.5)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = A.lrp(f, _X, _T, rules=Composite(default=Epsilon(0.0), stabilizer=0.0))
    chose_constant = np.asarray(_X[:, 0] <= 0)
    np.testing.assert_array_equal(np.asarray(r)[chose_constant], 0.0)
    with pytest.warns(UserWarning, match="'select_n'"):
        A.deeplift(f, _X, _T)
