"""Small models of every supported kind, shared by the kernel tests, and a compile counter."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class ResidualBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), name="conv_a")(x))
        return nn.relu(x + nn.Conv(4, (3, 3), name="conv_b")(h))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = ResidualBlock(name="block1")(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(8, name="fc1")(x))
        return nn.Dense(3, name="head")(x)


def linen_cnn(seed=0):
    model = LinenCNN()
    variables = model.init(jax.random.key(seed), jnp.ones((1, 6, 6, 1)))
    # non-zero biases, so that bias handling is exercised
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.1 * jax.random.normal(jax.random.key(len(path) + seed), v.shape)
        if "bias" in jax.tree_util.keystr(path) else v, variables)
    return model, variables


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.lin1 = nnx.Linear(4, 8, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(2)])
        self.lin2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.lin1(x))
        for block in self.blocks:
            x = jax.nn.relu(block(x))
        return self.lin2(x)


def equinox_mlp(seed=0):
    return eqx.nn.MLP(4, 3, 8, 2, key=jax.random.key(seed))


def plain_function(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    w1 = jax.random.normal(k1, (4, 6))
    b1 = jax.random.normal(k2, (6,))
    w2 = jax.random.normal(k3, (6, 2))

    def f(x):
        with jax.named_scope("proj"):
            h = x @ w1 + b1
        h = jax.nn.relu(h)
        with jax.named_scope("out"):
            return h @ w2

    return f, (w1, b1, w2)


class Compiles:
    """Counts XLA compilations while active (jax.monitoring's compile-duration events)."""

    def __enter__(self):
        self.count = 0
        self._listener = lambda event, *_, **__: setattr(
            self, "count", self.count + ("backend_compile" in event))
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
