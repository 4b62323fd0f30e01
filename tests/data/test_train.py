"""data.train: only the params collection is trained; the call's keyword arguments."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import data


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x)))
        return nn.Dense(3)(x.reshape(len(x), -1))


class _NeedsFlag(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(x.reshape(len(x), -1)))


def _toy(n=96):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = rng.uniform(0, 0.2, (n, 4, 4, 1)).astype(np.float32)
    x[np.arange(n), 0, y, 0] = 1.0
    return data.Digits(*(jnp.asarray(a) for a in (x, y, x[:16], y[:16])))


def test_train_refuses_collections_besides_params_before_training():
    with pytest.raises(TypeError, match=r"only variable collection is 'params', but the model's "
                                        r"variables \(from model.init\) also hold "
                                        r"\('batch_stats',\).*mutable=\['batch_stats'\]"):
        data.train(jax.random.key(0), _toy(), _BatchNormNet(), epochs=1, progress=False)


def test_train_passes_apply_kwargs_to_init_and_apply():
    with pytest.raises(TypeError, match="train"):
        data.train(jax.random.key(0), _toy(), _NeedsFlag(), epochs=1, progress=False)
    variables, history = data.train(jax.random.key(0), _toy(), _NeedsFlag(), epochs=3,
                                    batch_size=16, learning_rate=0.1, progress=False,
                                    apply_kwargs={"train": False})
    assert set(variables) == {"params"} and len(history.loss) == 3
    assert history.loss[-1] < history.loss[0]
    with pytest.raises(TypeError, match="apply_kwargs must be a dict"):
        data.train(jax.random.key(0), _toy(), _NeedsFlag(), progress=False, apply_kwargs=[1])
