"""The perturbation metrics warn, once per model, about a model that mixes its batch's examples
(BatchNorm in training mode), as the attribution methods do: such a model's outputs on the
perturbed copies depend on what else is in the batch they are evaluated with."""

import warnings

import flax.linen as nn
import jax
import pytest

import jaxplain as jp
from jaxplain import metrics


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        h = nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x))
        return nn.Dense(3)(nn.relu(h))


_X = jax.random.normal(jax.random.key(0), (8, 5))
_VARS = BNNet().init(jax.random.key(1), _X)
_A = jax.random.normal(jax.random.key(2), _X.shape)


def _model(train):
    if train:
        return lambda z: BNNet().apply(_VARS, z, train=True, mutable=["batch_stats"])[0]
    return lambda z: BNNet().apply(_VARS, z)


_METRICS = {
    "deletion": lambda f: metrics.deletion(f, _X, 0, _A, steps=4),
    "insertion": lambda f: metrics.insertion(f, _X, 0, _A, steps=4, baseline="zeros"),
    "faithfulness_correlation": lambda f: metrics.faithfulness_correlation(
        f, _X, 0, _A, key=jax.random.key(3), samples=4, subset_size=2),
}


@pytest.mark.parametrize("name", list(_METRICS))
def test_a_metric_warns_once_on_a_model_that_mixes_the_batch(name):
    for train in (True, False):
        f = _model(train)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _METRICS[name](f)
            _METRICS[name](f)
        warned = [w for w in record if issubclass(w.category, jp.core.BatchMixingWarning)]
        assert len(warned) == (1 if train else 0), [str(w.message) for w in record]
        assert all(w.filename == __file__ for w in warned)

