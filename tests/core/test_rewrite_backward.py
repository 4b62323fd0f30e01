import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from tests.core import models


class Guided:
    """Guided backprop's ReLU rule: pass positive gradients through active units."""

    def activation(self, op, x, y, g):
        return g * (x > 0) * (g > 0)


class Epsilon:
    def __init__(self, eps):
        self.eps = eps

    def linear(self, layer, x, g):
        z = layer(x)
        s = g / (z + self.eps * jnp.where(z >= 0, 1.0, -1.0))
        return x * jax.vjp(lambda v: layer.apply(v, layer.weight), x)[1](s)[0]


def test_guided_backprop_rule_matches_hand_computation():
    w1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
    w2 = jnp.array([[1.0], [-1.0], [2.0]])
    f = lambda x: jax.nn.relu(x @ w1) @ w2  # noqa: E731
    x = jnp.array([[1.0, 1.0], [-1.0, 2.0]])
    got = jax.grad(lambda x: jp.rewrite_backward(f, Guided())(x).sum())(x)
    z = np.asarray(x @ w1)
    g_hidden = np.broadcast_to(np.asarray(w2)[:, 0], z.shape)
    g_hidden = g_hidden * (z > 0) * (g_hidden > 0)
    np.testing.assert_allclose(got, g_hidden @ np.asarray(w1).T, rtol=1e-6)
    np.testing.assert_allclose(jp.rewrite_backward(f, Guided())(x), f(x))


def test_rules_by_selector_and_plain_gradient_elsewhere():
    model, variables = models.linen_cnn()
    f = jp.as_function(model, variables)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
    only_block = jp.rewrite_backward(f, [("block1/*", Guided())])
    everywhere = jp.rewrite_backward(f, Guided())
    grad = lambda fn: jax.grad(lambda v: fn(v)[:, 0].sum())(x)  # noqa: E731
    assert not np.allclose(grad(only_block), grad(f))
    assert not np.allclose(grad(only_block), grad(everywhere))
    no_rule = jp.rewrite_backward(f, [(lambda name, site: False, Guided())])
    np.testing.assert_allclose(grad(no_rule), grad(f), rtol=1e-6)


def test_linear_layer_sees_folded_bias_and_conserves_relevance():
    k = jax.random.split(jax.random.key(4), 4)
    w1, b1 = jax.random.normal(k[0], (5, 7)), jax.random.normal(k[1], (7,))
    w2 = jax.random.normal(k[2], (7, 3))
    f = lambda x: jax.nn.relu(x @ w1 + b1) @ w2  # noqa: E731
    x = jax.random.normal(k[3], (4, 5))
    seen = []

    class Spy(Epsilon):
        def linear(self, layer, x, g):
            seen.append((layer.name, layer.op, layer.is_input, layer.bias))
            return super().linear(layer, x, g)

    target = jax.nn.one_hot(jnp.array([0, 1, 2, 0]), 3)
    with jax.disable_jit():  # so that the spy may keep concrete values
        relevance = jax.vjp(jp.rewrite_backward(f, Spy(1e-9)), x)[1](target)[0]
    assert [s[:3] for s in seen] == [("linear_1", "dense", False), ("linear", "dense", True)]
    np.testing.assert_allclose(seen[1][3].reshape(-1), b1, rtol=1e-6)
    # epsilon-LRP: relevance at the input = target relevance minus what the bias absorbed
    h = np.maximum(np.asarray(x @ w1 + b1), 0)
    z2 = h @ np.asarray(w2)
    r_hidden = h * ((np.asarray(target) / z2) @ np.asarray(w2).T)
    z1 = np.asarray(x @ w1 + b1)
    r_in = np.asarray(x) * ((r_hidden * (z1 > 0) / z1) @ np.asarray(w1).T)
    np.testing.assert_allclose(relevance, r_in, rtol=1e-4, atol=1e-5)


def test_batchnorm_is_folded_into_the_preceding_layer():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(4, name="fc")(x)
            x = nn.BatchNorm(use_running_average=True, name="bn")(x)
            return nn.Dense(2, use_bias=False, name="head")(nn.relu(x))

    model = Net()
    variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    stats = {"mean": jnp.array([0.5, -1.0, 0.0, 2.0]), "var": jnp.array([4.0, 0.25, 1.0, 9.0])}
    variables = {"params": variables["params"], "batch_stats": {"bn": stats}}
    f = jp.as_function(model, variables)
    layers = {}

    class Spy:
        def linear(self, layer, x, g):
            layers[layer.name] = layer
            return None

    x = jax.random.normal(jax.random.key(1), (3, 3))
    with jax.disable_jit():  # so that the spy may keep concrete values
        jax.grad(lambda v: jp.rewrite_backward(f, Spy())(v).sum())(x)
    fc = layers["fc"]
    _, acts = jp.capture(f, "bn")(x)
    np.testing.assert_allclose(fc(x), acts["bn"], rtol=1e-5, atol=1e-5)


def test_linear_inside_nested_jit_pairs_with_bias_outside():
    w, b = jnp.ones((3, 2)), jnp.array([1.0, 2.0])
    matmul = jax.jit(lambda x: x @ w)
    f = lambda x: matmul(x) + b  # noqa: E731

    class BiasReporter:  # the "gradient" it returns is the sum of the bias it was given
        def linear(self, layer, x, g):
            return jnp.full_like(x, layer.bias.sum())

    got = jax.grad(lambda v: jp.rewrite_backward(f, BiasReporter())(v).sum())(jnp.ones((2, 3)))
    np.testing.assert_allclose(got, jnp.full((2, 3), 3.0))


def test_rewrite_backward_under_jit_vmap_and_forward_unchanged():
    model, variables = models.linen_cnn()
    f = jp.as_function(model, variables)
    g = jp.rewrite_backward(f, Guided())
    x = jax.random.normal(jax.random.key(5), (3, 6, 6, 1))
    np.testing.assert_allclose(g(x), f(x), rtol=1e-6)
    eager = jax.grad(lambda v: g(v)[:, 2].sum())(x)
    jitted = jax.jit(jax.grad(lambda v: g(v)[:, 2].sum()))(x)
    vmapped = jax.vmap(jax.grad(lambda v: g(v[None])[0, 2]))(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-6)


def test_pool_rules_replace_the_pooling_gradient():
    import flax.linen as nn

    seen = {}

    class Spread:  # every input of a window gets the window's whole cotangent
        def pool(self, op, x, y, g, pullback):
            seen[op] = (x, y, g, pullback(g))
            return jnp.repeat(jnp.repeat(g, 2, axis=1), 2, axis=2)

    x = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
    weights = jax.random.normal(jax.random.key(3), (2, 2, 2, 3))
    for op, pool in [("avg_pool", nn.avg_pool), ("max_pool", nn.max_pool)]:
        f = lambda v, pool=pool: (pool(v, (2, 2), (2, 2)) * weights).sum((1, 2, 3))  # noqa: E731
        assert [(s.name, s.op) for s in jp.sites(f, x)] == [(op, op)]
        # the site is the pool alone, not the product by the weights that follows it
        np.testing.assert_allclose(jp.capture(f, op)(x)[1][op], pool(x, (2, 2), (2, 2)), rtol=1e-6)
        g = jp.rewrite_backward(f, Spread())
        np.testing.assert_allclose(g(x), f(x), rtol=1e-6)
        with jax.disable_jit():  # so that the rule may keep concrete values
            got = jax.grad(lambda v: g(v).sum())(x)
        np.testing.assert_allclose(got, np.repeat(np.repeat(weights, 2, 1), 2, 2), rtol=1e-6)
        np.testing.assert_allclose(seen[op][1], pool(x, (2, 2), (2, 2)), rtol=1e-6)
        # the pullback handed to the rule is the plain gradient of the pool
        plain = jax.vjp(lambda v, pool=pool: pool(v, (2, 2), (2, 2)), x)[1](seen[op][2])[0]
        np.testing.assert_allclose(seen[op][3], plain, rtol=1e-6)
        assert not np.allclose(got, jax.grad(lambda v: f(v).sum())(x))
    # a rule without `pool`, or a selector that misses the pool, keeps the plain gradient
    f = lambda v: (nn.avg_pool(v, (2, 2), (2, 2)) * weights).sum((1, 2, 3))  # noqa: E731
    plain = jax.grad(lambda v: f(v).sum())(x)
    for rules in [Guided(), [(lambda name, site: name != "avg_pool", Spread())]]:
        np.testing.assert_allclose(jax.grad(lambda v: jp.rewrite_backward(f, rules)(v).sum())(x),
                                   plain, rtol=1e-6)
