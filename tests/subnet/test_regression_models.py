"""Models whose outputs are not class logits: a one-output model is refused before optimising
(its softmax is 1, so an empty sub-network kept it), and the wrappers the refusal and
docs/targets.md name keep the decisions they say."""

import jax
import jax.numpy as jnp
import pytest

from jaxplain import subnet

W1 = jax.random.normal(jax.random.key(0), (4, 16))
W2 = jax.random.normal(jax.random.key(1), (16, 3))
X = jax.random.normal(jax.random.key(2), (20, 4))


def _net(outputs):
    def f(x):
        with jax.named_scope("hidden"):
            h = x @ W1
        return jax.nn.relu(h) @ W2[:, :outputs]
    return f


def _extract(f):
    return subnet.extract(f, X, sites="hidden", key=jax.random.key(3), steps=300,
                          finetune_steps=100)


@pytest.mark.parametrize("squeeze", [False, True])
def test_one_output_is_refused_before_optimising(squeeze, monkeypatch):
    f = _net(1)
    g = (lambda x: f(x)[:, 0]) if squeeze else f
    monkeypatch.setattr(subnet._extract._optimize, "run", lambda *a, **k: pytest.fail("ran"))
    shape = r"\(20,\)" if squeeze else r"\(20, 1\)"
    with pytest.raises(ValueError, match=rf"shape {shape}.*softmax is 1.*jnp.zeros_like"):
        subnet.extract(g, X, sites="hidden", key=jax.random.key(3))


def test_the_two_logit_wrapper_keeps_a_regressions_sign():
    # The refusal's remedy: [0, y] has softmax [1 - sigmoid(y), sigmoid(y)], whose arg-max is
    # y > 0. Before, extract ran on the one output and returned 0/16 units, a constant f_sub.
    f = _net(1)
    y = f(X)[:, 0]
    t = jnp.median(y)  # a threshold that splits the region in halves
    g = lambda x: (lambda z: jnp.concatenate([jnp.zeros_like(z), z - t], -1))(f(x))  # noqa: E731
    sub = _extract(g)
    y_sub = subnet.apply(f, sub)(X)[:, 0]
    assert 0 < sum(sub.kept_units.values()) < 16
    assert float(sub.region_agreement) == 1.0
    assert bool(jnp.all((y_sub > t) == (y > t)))
    assert float(jnp.std(y_sub)) > 0.1 * float(jnp.std(y))  # not a constant


def test_stacked_label_pairs_keep_every_label_of_a_multi_label_head():
    # docs/targets.md: (n, labels, 2) outputs give one Bernoulli KL per label; agreement is the
    # share of (example, label) decisions kept.
    f = _net(3)
    pairs = lambda x: (lambda z: jnp.stack([jnp.zeros_like(z), z], -1))(f(x))  # noqa: E731
    sub = _extract(pairs)
    z, z_sub = f(X), subnet.apply(f, sub)(X)
    assert float(sub.region_agreement) == 1.0
    assert bool(jnp.all((z_sub > 0) == (z > 0)))
    assert float(subnet.fidelity(pairs, sub, X).agreement) == 1.0
