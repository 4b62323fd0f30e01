"""Models a user would point ``jaxplain explain`` at (random weights): import paths for tests."""

import equinox as eqx
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
from flax import nnx


class SmallCNN(nn.Module):
    """8x8x3 images -> 4 classes: conv-relu, conv-relu, average pool, dense-relu, dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="conv2")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Dense(16, name="fc")(x.reshape(x.shape[0], -1)))
        return nn.Dense(4, name="head")(x)


def cnn():
    """A factory: ``(Linen module, variables)``."""
    model = SmallCNN()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def cnn_from(path):
    """A factory of the checkpoint path: the CNN with the variables saved at ``path``."""
    model, template = cnn()
    with open(path, "rb") as fh:
        return model, flax.serialization.from_bytes(template, fh.read())


#: An Equinox module (a model object, not a factory) on 12-feature vectors.
mlp = eqx.nn.MLP(12, 3, 16, 2, activation=jax.nn.relu, key=jax.random.key(1))


def logits_of_wrong_rank(x):
    """A plain function that returns one number per example (not (batch, classes))."""
    return x.reshape(x.shape[0], -1).sum(-1)


def cnn_as_function():
    """A factory returning the model as a plain function (how call arguments are fixed)."""
    import jaxplain

    return jaxplain.as_function(*cnn())


class EquinoxCNN(eqx.Module):
    """(3, 8, 8) images (channels first) -> 4 classes: conv-relu twice, mean pool, dense."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(3, 6, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(6, 8, 3, padding=1, key=k2)
        self.head = eqx.nn.Linear(8, 4, key=k3)

    def __call__(self, x):
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.head(x.mean(axis=(1, 2)))


#: An Equinox CNN reading NCHW images.
nchw_cnn = EquinoxCNN(jax.random.key(2))


class NnxMLP(nnx.Module):
    """A Flax NNX module class (MODEL may name it by mistake: it needs an instance)."""

    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, x):
        return self.lin(x)


def broken_loader(path):
    """A checkpoint factory whose loading fails."""
    raise RuntimeError(f"cannot read {path}")


def vector_model(x):
    """A plain model function on 12-feature vectors (one parameter, like a checkpoint factory)."""
    return x[:, :3]


class TrainFlagMLP(nn.Module):
    """12 features -> 3 classes; ``__call__`` needs ``train`` (as a model with BatchNorm does)."""

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(nn.relu(nn.BatchNorm(use_running_average=not train)(x)))


def train_flag_mlp():
    """A factory: ``(TrainFlagMLP, variables)``; called with ``x`` alone it lacks ``train``."""
    model = TrainFlagMLP()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 12)), train=False)


class BatchedMLP(eqx.Module):
    """An Equinox module whose ``__call__`` takes a batch ``(n, 12)`` (it vmaps inside)."""

    lin: eqx.nn.Linear

    def __init__(self):
        self.lin = eqx.nn.Linear(12, 3, key=jax.random.key(3))

    def __call__(self, x):
        return jax.vmap(self.lin)(x)


def batched_mlp():
    return BatchedMLP()
