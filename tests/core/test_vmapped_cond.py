"""A per-example model with a ``lax.cond`` on x, batched with ``jax.vmap`` (an Equinox module with
a cond, under the adapter's vmap, alike): JAX runs both branches and gates each branch's
operands, weights too, as ``select_n(p, stop_gradient(w), w)``, which is ``w`` whatever ``p``.
Such a gated weight is a weight, so each branch's dense layer is a linear layer, as in the
``jnp.where`` spelling of the same function: LRP-0 from the logit equals gradient x input on a
ReLU MLP with biases. Before, every layer was taken for a product of two input-dependent values
(a warning, and the plain gradient there): LRP-0 missed gradient x input by 1.15. A select
between two different weights by a predicate on x still depends on x (integrated gradients,
which moves x along a path, evaluates the pick at every point of it)."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain.lrp import Composite, Epsilon

_X = jax.random.normal(jax.random.key(1), (5, 6))
_T = jnp.array([0, 1, 2, 3, 0])
_LRP0 = Composite(default=Epsilon(0.0), stabilizer=0.0)


def _mlp(seed: int):
    k = jax.random.split(jax.random.key(seed), 4)
    w1, b1 = jax.random.normal(k[0], (6, 16)) / 2.4, 0.1 * jax.random.normal(k[1], (16,))
    w2, b2 = jax.random.normal(k[2], (16, 4)) / 4.0, 0.1 * jax.random.normal(k[3], (4,))
    return lambda v: jax.nn.relu(v @ w1 + b1) @ w2 + b2


_A, _B = _mlp(0), _mlp(10)
_COND = jax.vmap(lambda v: jax.lax.cond(v[0] > 0, _A, _B, v))
_WHERE = lambda z: jnp.where(z[:, :1] > 0, _A(z), _B(z))  # noqa: E731


def _lrp0(f, x=_X, t=_T):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no product warning
        return A.lrp(f, x, t, rules=_LRP0, scale_by_logit=True)


def test_lrp0_of_a_vmapped_cond_is_gradient_times_input_as_for_where():
    assert float(jnp.abs(_COND(_X) - _WHERE(_X)).max()) < 1e-5
    cond, where = _lrp0(_COND), _lrp0(_WHERE)
    np.testing.assert_allclose(cond, A.gradient_x_input(_COND, _X, _T), atol=1e-5)
    np.testing.assert_allclose(cond, where, atol=1e-5)
    assert {s.name for s in jp.sites(_COND, _X)} >= {"linear", "relu", "linear_1"}


def test_an_equinox_module_with_a_cond_under_the_adapter():
    class Gated(eqx.Module):
        a: eqx.nn.MLP
        b: eqx.nn.MLP

        def __call__(self, v):
            return jax.lax.cond(v[0] > 0, lambda u: self.a(u), lambda u: self.b(u), v)

    ka, kb = jax.random.split(jax.random.key(3))
    f = jp.as_function(Gated(eqx.nn.MLP(6, 4, 16, 1, key=ka), eqx.nn.MLP(6, 4, 16, 1, key=kb)))
    np.testing.assert_allclose(_lrp0(f), A.gradient_x_input(f, _X, _T), atol=1e-5)


@pytest.mark.filterwarnings("ignore:gradient_x_input. the model.s output depends")  # the index
def test_a_product_of_gated_weights_is_a_weight_and_switch_branches_alike():
    w1, w2 = (jax.random.normal(jax.random.key(k), (6, 6)) / 2 for k in (4, 5))
    w3 = jax.random.normal(jax.random.key(6), (6, 4))
    branches = [lambda u: u @ (w1 @ w2), lambda u: u @ (w2 @ w1), lambda u: jax.nn.relu(u @ w1)]
    f = jax.vmap(lambda v: jax.lax.switch(
        jnp.clip(v[0].astype(jnp.int32) + 1, 0, 2), branches, v) @ w3)
    np.testing.assert_allclose(_lrp0(f), A.gradient_x_input(f, _X, _T), atol=1e-5)


@pytest.mark.filterwarnings("ignore:deeplift. the model applies elementwise")  # the pick
def test_deeplift_and_guided_backprop_agree_with_the_where_spelling():
    same_branch = 0.01 * jnp.sign(_X[:, :1]) * (jnp.arange(6) == 0)  # the branch x takes
    for f in (_COND, _WHERE):
        dl = A.deeplift(f, _X, _T, baseline=same_branch)
        gap = (f(_X) - f(same_branch + 0 * _X))[jnp.arange(5), _T]
        np.testing.assert_allclose(dl.sum(1), gap, atol=1e-4)
    np.testing.assert_allclose(A.deeplift(_COND, _X, _T, baseline=same_branch),
                               A.deeplift(_WHERE, _X, _T, baseline=same_branch), atol=1e-5)
    np.testing.assert_allclose(A.guided_backprop(_COND, _X, _T),
                               A.guided_backprop(_WHERE, _X, _T), atol=1e-5)


def test_an_edit_inside_the_branches_still_feeds_later_sites():
    relus = [s.name for s in jp.sites(_COND, _X) if s.kind == "activation"]
    edited = jp.intervene(_COND, {relus[0]: lambda v: jnp.zeros_like(v)})
    _, values = jp.capture(edited, "*")(_X)
    later = [s.name for s in jp.sites(_COND, _X)]
    after = later[later.index(relus[0]) + 1]  # the layer that reads the zeroed ReLU
    bias = values[after][0]
    np.testing.assert_allclose(values[after], jnp.broadcast_to(bias, values[after].shape),
                               atol=1e-6)  # the bias alone, the same for every example


@pytest.mark.parametrize("gate", ["weights", "slope"])
def test_a_pick_between_values_by_x_still_depends_on_x(gate):
    w1, w2 = (jax.random.normal(jax.random.key(k), (6, 8)) for k in (7, 8))
    w3 = jax.random.normal(jax.random.key(9), (8, 4))
    if gate == "weights":  # each example's weights picked by its first feature
        f = lambda z: jnp.einsum("bi,bij->bj", z, jnp.where(z[:, :1, None] > 0, w1, w2)) @ w3  # noqa: E731
    else:  # a leaky ReLU written h * where(h > 0, 1, a)
        f = lambda z: (lambda h: h * jnp.where(h > 0, 1.0, 0.1))(z @ w1) @ w3  # noqa: E731
    ig = A.integrated_gradients(f, _X, _T, steps=64)  # completeness along the path
    gap = (f(_X) - f(jnp.zeros_like(_X)))[jnp.arange(5), _T]
    np.testing.assert_allclose(ig.sum(1), gap, rtol=0.05, atol=0.05)
