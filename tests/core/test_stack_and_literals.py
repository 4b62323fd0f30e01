"""The kernel follows the batch axis through ``jnp.stack`` (a ``stack`` primitive) and into the
pieces of ``jnp.split`` and ``jnp.unstack``, and a max over a non-batch axis followed by an op
with a literal operand is analysed without error.

Before: a stacked value lost its batch axis (a site of ``jnp.stack(branches, 0)`` was presented
``(branches, n, features)``), and ``jax.nn.softmax(s, axis=-2)``, ``jnp.max(x, axis=1,
initial=-jnp.inf)`` and ``jax.nn.logsumexp(x, axis=1)`` raised ``TypeError: unhashable type``
in every method, the plain gradient included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import attn_lrp, gradient
from jaxplain.core import BatchMixingWarning
from jaxplain.core._batch import batch_axes, mixes_batch
from jaxplain.core._capture import program_of

_K = jax.random.split(jax.random.key(0), 6)
_W = [jax.random.normal(k, (4, 4)) for k in _K[:3]]
_X = jax.random.normal(_K[3], (2, 4))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_a_stack_puts_the_batch_axis_where_its_operands_have_it(axis):
    def f(x):
        with jax.named_scope("stacked"):
            s = jnp.stack([jax.nn.relu(x @ w) for w in _W], axis)  # batch axis 0 in each
        return s.sum(axis)

    program, _ = program_of(f, _X, unrolled=True)
    node = next(n for n in program.nodes if n.prim == "stack")
    assert batch_axes(program)[node.outs[0]] == (1 if node.eqn.params["axis"] == 0 else 0)
    (site,) = [s for s in jp.sites(f, _X) if s.name == "stacked"]
    assert site.shape[0] == 2  # batch first
    out, found = jp.capture(f, "stacked")(_X)
    expected = jnp.stack([jax.nn.relu(_X @ w) for w in _W], 1)  # (n, branches, features)
    np.testing.assert_allclose(found["stacked"], expected if axis in (0, 1) else
                               jnp.moveaxis(expected, 1, -1), rtol=1e-6)


def _pieces(f):
    """The batch axis of each output of `f`'s one split or unstack, and whether `f` mixes the
    examples."""
    program, _ = program_of(f, _X, unrolled=True)
    node = next(n for n in program.nodes if n.prim in ("split", "unstack"))
    states = batch_axes(program)
    return [states.get(r) for r in node.outs], mixes_batch(program, states)


def _stacked(x):
    return jnp.stack([jax.nn.relu(x @ w) for w in _W], 0)  # (branches, n, features)


def test_the_pieces_of_a_split_or_unstack_keep_the_batch_axis():
    assert _pieces(lambda x: sum(jnp.unstack(_stacked(x), axis=0))) == ([0, 0, 0], False)
    assert _pieces(lambda x: sum(jnp.unstack(_stacked(x), axis=2))) == ([1] * 4, False)
    assert _pieces(lambda x: jnp.concatenate(jnp.split(_stacked(x), 2, axis=-1)[::-1], -1)
                   .sum(0)) == ([1, 1], False)


def test_a_split_or_unstack_along_the_batch_mixes_the_examples():
    with pytest.warns(BatchMixingWarning):
        assert _pieces(lambda x: sum(jnp.unstack(_stacked(x), axis=1))) == ([None, None], True)
    with pytest.warns(BatchMixingWarning):
        assert _pieces(lambda x: jnp.concatenate(jnp.split(x, 2)[::-1])) == ([None, None], True)


_V = jax.random.normal(_K[4], (4, 3))
_XS = jax.random.normal(_K[5], (2, 3, 4))


def _softmax_over_tokens(x):  # (n, tokens, 4) -> (n, 4): softmax along the first token axis
    s = jnp.einsum("ntd,nsd->nts", x @ _W[0], x)
    return (jax.nn.softmax(s, axis=-2) @ x).mean(1)


_MAXES = {
    "softmax(axis=-2)": _softmax_over_tokens,
    "max(axis=1, initial=-inf)": lambda x: jnp.max(x, axis=1, initial=-jnp.inf) @ _V,
    "logsumexp(axis=1)": lambda x: jax.nn.logsumexp(x, axis=1) @ _V,
    "max(axis=1)": lambda x: jnp.max(x, axis=1) @ _V,
}


@pytest.mark.parametrize("name", list(_MAXES))
def test_a_max_followed_by_a_literal_is_analysed(name):
    f = _MAXES[name]
    assert jp.sites(f, _XS)
    plain = jax.vmap(jax.grad(lambda x: f(x[None])[0, 0]))(_XS)
    np.testing.assert_allclose(gradient(f, _XS, 0), plain, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(attn_lrp(f, _XS, 0)))
