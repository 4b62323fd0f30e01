"""subnet.extract under jax_enable_x64: a float32 model gives what it gives without x64, and a
float64 model runs, its best loss kept in float64."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._extract import _phase, _search_init

KW = dict(sites=["relu"], key=jax.random.key(0), steps=50, finetune_steps=10)


def _mlp(dtype):
    w1 = jax.random.normal(jax.random.key(1), (16, 12), dtype)
    w2 = jax.random.normal(jax.random.key(2), (12, 3), dtype)
    f = lambda x: jax.nn.relu(x @ w1) @ w2  # noqa: E731
    return f, jax.random.normal(jax.random.key(0), (8, 16), dtype)


def test_float32_model_under_x64_matches_float32_mode():
    f, x = _mlp(jnp.float32)
    plain = subnet.extract(f, x, **KW)
    with jax.enable_x64(True):
        wide = subnet.extract(f, x, **KW)
    for n in plain.masks:
        np.testing.assert_array_equal(np.asarray(wide.masks[n]), np.asarray(plain.masks[n]))
    np.testing.assert_allclose(float(wide.region_agreement), float(plain.region_agreement))


def test_float64_model():
    with jax.enable_x64(True):
        f, x = _mlp(jnp.float64)
        sub = subnet.extract(f, x, **KW)
        assert float(sub.region_agreement) >= 0.9
        opts = subnet.Options(l1=1e-3, steps=5)
        logp, state, masks = _search_init(x, f=f, names=("relu",), units=(12,), opts=opts)
        l1 = jnp.asarray([1e-3], jnp.float32)
        out = _optimize.run(f, state, masks, l1, l1, 1.0, x, logp, steps=5,
                            phase=_phase(opts, search=True))
        assert out["best_loss"].dtype == jnp.float64  # not rounded to float32
        assert int(out["step"][0]) == 5
        assert np.isfinite(np.asarray(out["history"])).all()
