"""A Flax Linen model with BatchNorm (eval mode) and a residual block; target sparsity mode."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import subnet
from tests.subnet import _nets


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(use_running_average=True, name="bn_a")(
            nn.Conv(8, (3, 3), name="conv_a")(x)))
        h = nn.BatchNorm(use_running_average=True, name="bn_b")(
            nn.Conv(8, (3, 3), name="conv_b")(h))
        return nn.relu(x + h)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn1")(
            nn.Conv(8, (3, 3), name="conv1")(x)))
        x = Block(name="block1")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10, name="head")(x)


@pytest.mark.filterwarnings("ignore:f predicts class:UserWarning")  # the adapter is tested, not the region
def test_linen_model_with_batchnorm_target_sparsity_and_frozen_variables():
    x, _ = _nets.region((3, 8))
    model = Net()
    variables = model.init(jax.random.key(0), x)
    # Non-trivial BatchNorm statistics so the shift matters.
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.3 if "mean" in jax.tree_util.keystr(p) else v, variables)
    before = jax.tree.map(np.array, variables)
    f = jp.as_function(model, variables)
    sites = ["bn1", "block1/bn_a", "block1/bn_b"]
    sub = subnet.extract(f, x, sites=sites, key=jax.random.key(1), sparsity=0.75,
                         l1=(1e-3, 1e-2), steps=300, finetune_steps=100)
    assert sub.sparsity >= 0.75
    assert set(sub.sites) == set(sites)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, variables))
    fid = subnet.fidelity(f, sub, x)
    np.testing.assert_allclose(float(fid.agreement), float(sub.region_agreement))
    # The pruned function is pure: jit and vmap agree with the plain call.
    g = subnet.apply(f, sub)
    np.testing.assert_allclose(np.asarray(jax.jit(g)(x)), np.asarray(g(x)), rtol=1e-5, atol=1e-5)
