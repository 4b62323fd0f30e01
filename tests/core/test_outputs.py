"""output_activation / output_is_softmax: a model's output read off its traced program."""

import doctest
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.core import _outputs
from jaxplain.core._outputs import (as_probabilities, given_probabilities, output_activation,
                                    output_is_softmax)

W = jax.random.normal(jax.random.key(0), (6, 4))
X = jnp.ones((3, 6))


def logits(x):
    return jnp.tanh(x) @ W


def _stable_softmax(z):
    e = jnp.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _stable_log_softmax(z):
    m = jax.lax.stop_gradient(z.max(-1, keepdims=True))
    return z - m - jnp.log(jnp.sum(jnp.exp(z - m), -1, keepdims=True))


@pytest.mark.parametrize("f,expected", [
    (logits, None),
    (lambda x: jax.nn.softmax(logits(x)), "softmax"),
    (lambda x: jax.nn.softmax(logits(x), axis=-1), "softmax"),
    (jax.jit(lambda x: jax.nn.softmax(logits(x))), "softmax"),                # a nested jit
    (jax.vmap(lambda v: jax.nn.softmax(jnp.tanh(v) @ W)), "softmax"),         # per example
    (lambda x: jax.nn.softmax(logits(x)).astype(jnp.float16), "softmax"),     # a cast after
    (lambda x: jax.nn.softmax(logits(x)[:, None, :]).reshape(3, 4), "softmax"),
    (lambda x: jax.nn.log_softmax(logits(x)), "log_softmax"),
    (lambda x: jax.nn.softmax(logits(x), axis=0), None),                      # over the batch
    (lambda x: jax.nn.log_softmax(logits(x), axis=0), None),
    (lambda x: 2.0 * jax.nn.softmax(logits(x)), None),                        # not as it is
    (lambda x: jax.nn.sigmoid(logits(x)), "sigmoid"),                         # multi-label
    (lambda x: jax.nn.softmax(logits(x)[:, :2]) @ W[:2, :2], None),           # softmax inside
    # written by hand
    (lambda x: jnp.exp(logits(x)) / jnp.exp(logits(x)).sum(-1, keepdims=True), "softmax"),
    (lambda x: _stable_softmax(logits(x)), "softmax"),
    (lambda x: jnp.exp(logits(x)) / jnp.exp(logits(x)).sum(0, keepdims=True), None),
    (lambda x: jnp.exp(logits(x)) / jnp.exp(2 * logits(x)).sum(-1, keepdims=True), None),
    (lambda x: logits(x) - jax.nn.logsumexp(logits(x), -1, keepdims=True), "log_softmax"),
    (lambda x: logits(x) - jnp.log(jnp.exp(logits(x)).sum(-1))[:, None], "log_softmax"),
    (lambda x: _stable_log_softmax(logits(x)), "log_softmax"),
    (lambda x: logits(x) - jax.nn.logsumexp(logits(x), 0, keepdims=True), None),
    (lambda x: logits(x) - logits(x).mean(-1, keepdims=True), None),
    (lambda x: jnp.log(jax.nn.softmax(logits(x))), "log_softmax"),
    (lambda x: jnp.log(_stable_softmax(logits(x))), "log_softmax"),
    (lambda x: jnp.log(jax.nn.sigmoid(logits(x))), None),
    (lambda x: jax.nn.log_sigmoid(logits(x)), None),
    (lambda x: 2.0 * jax.nn.sigmoid(logits(x)), None),
    (lambda x: jnp.log(jnp.log(jax.nn.softmax(logits(x)))), None),
])
def test_the_output_activation_is_read_off_the_program(f, expected):
    assert output_activation(f, X) == expected
    assert output_is_softmax(f, X) is (expected == "softmax")


def test_a_flax_model_with_a_softmax_head():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.softmax(nn.Dense(4)(nn.relu(nn.Dense(8)(x))))

    model = Net()
    f = jp.as_function(model, model.init(jax.random.key(0), X))
    assert output_is_softmax(f, X)


def test_traced_once_per_function_and_shape():
    calls = []

    def f(x):
        calls.append(x.shape)
        return jax.nn.softmax(logits(x))

    assert output_is_softmax(f, X) and output_is_softmax(f, X + 1.0)
    assert output_is_softmax(f, jax.ShapeDtypeStruct(X.shape, X.dtype))
    assert len(calls) == 1
    assert output_is_softmax(f, jnp.ones((1, 6)))
    assert len(calls) == 2


def test_works_on_tracers_inside_jit():
    f = lambda x: jax.nn.softmax(logits(x))  # noqa: E731
    seen = []

    @jax.jit
    def g(x):
        seen.append(output_is_softmax(f, x))
        return f(x)

    g(X)
    assert seen == [True]


def test_docstring_examples():
    result = doctest.testmod(_outputs)
    assert result.attempted > 0 and result.failed == 0


def test_a_bfloat16_model_is_traced_at_its_own_dtype():
    # the cache key once spelled bfloat16 as numpy's "<V2", which traced at a void dtype
    f = lambda x: jax.nn.softmax(jnp.tanh(x) @ W.astype(jnp.bfloat16))  # noqa: E731
    assert output_is_softmax(f, X.astype(jnp.bfloat16))
    assert output_activation(lambda x: jnp.tanh(x) @ W.astype(jnp.bfloat16),
                             X.astype(jnp.bfloat16)) is None


def test_deeplift_and_lrp_run_on_a_bfloat16_model():
    from jaxplain.attribution import deeplift, lrp
    from jaxplain.lrp import Epsilon
    w = jax.random.normal(jax.random.key(1), (6, 5))
    f32 = lambda x: jax.nn.relu(x @ w) @ W[:5]  # noqa: E731
    f16 = lambda x: jax.nn.relu(x @ w.astype(jnp.bfloat16)) @ W[:5].astype(jnp.bfloat16)  # noqa: E731
    x = jax.random.normal(jax.random.key(2), (3, 6))
    for method in (deeplift, functools.partial(lrp, rules=Epsilon())):
        low, full = method(f16, x.astype(jnp.bfloat16), 0), method(f32, x, 0)
        assert low.dtype == jnp.bfloat16
        assert jnp.allclose(low.astype(jnp.float32), full, atol=0.1, rtol=0.05)


# Probability heads the program does not show as a softmax: only their values say so.
_UNSEEN_HEADS = {
    "clip(softmax)": lambda z: jnp.clip(jax.nn.softmax(z), 1e-7, 1.0),
    "softmax * 1.0": lambda z: jax.nn.softmax(z) * 1.0,
    "exp(log_softmax)": lambda z: jnp.exp(jax.nn.log_softmax(z)),
}


@pytest.mark.parametrize("name", sorted(_UNSEEN_HEADS))
def test_probability_rows_are_read_as_given_and_logits_softmaxed(name):
    z = 3.0 * logits(jax.random.normal(jax.random.key(1), (5, 6)))
    p = _UNSEEN_HEADS[name](z)
    assert output_activation(lambda x: _UNSEEN_HEADS[name](logits(x)), X) is None
    np.testing.assert_array_equal(as_probabilities(p), p)                  # no second softmax
    np.testing.assert_allclose(as_probabilities(p, log=True), jnp.log(p), rtol=1e-6)
    np.testing.assert_array_equal(as_probabilities(z), jax.nn.softmax(z))
    np.testing.assert_array_equal(as_probabilities(z, log=True), jax.nn.log_softmax(z))
    # per row, under jit: a batch mixing both kinds reads each row as what it is
    mixed = jnp.concatenate([p[:2], z[2:]])
    got = jax.jit(as_probabilities)(mixed)
    np.testing.assert_array_equal(got[:2], p[:2])
    np.testing.assert_allclose(got[2:], jax.nn.softmax(z[2:]), rtol=1e-6)


def test_what_counts_as_probabilities():
    z = logits(jax.random.normal(jax.random.key(2), (4, 6)))
    assert not given_probabilities(jax.nn.log_softmax(z)).any()            # all <= 0
    assert not given_probabilities(jnp.abs(z)).any()
    assert not given_probabilities(jax.nn.softmax(z) * 1.01).any()         # sums to 1.01
    assert not given_probabilities(jnp.array([[1.2, -0.2]])).any()          # sums to 1, negative
    assert not given_probabilities(jnp.array([[jnp.nan, 1.0]])).any()
    assert given_probabilities(jax.nn.softmax(z)).all()
    # 1000 classes in bfloat16 are off by several of its 8e-3 ulps and still read as given
    wide = jax.nn.softmax(5 * jax.random.normal(jax.random.key(3), (64, 1000)).astype(jnp.bfloat16))
    assert given_probabilities(wide).all()
    assert given_probabilities(wide).shape == (64, 1)
