"""The random methods give the same numbers for float32 models and inputs whether
``jax_enable_x64`` is on or off: their draws are float32 (int32), not the default dtype.

x64 is process-wide, so each setting runs in its own interpreter.
"""

import subprocess
import sys

import numpy as np

SCRIPT = r"""
import sys
import jax
jax.config.update("jax_enable_x64", sys.argv[1] == "on")
import jax.numpy as jnp, numpy as np, equinox as eqx
from jaxplain import attribution as A, metrics as M
r = np.random.RandomState(0)
w1, w2 = (jnp.asarray(r.randn(*s), jnp.float32) for s in ((8, 6), (6, 3)))
f = lambda x: jnp.tanh(x @ w1) @ w2
x = jnp.asarray(r.rand(2, 8), jnp.float32)
t, k = jnp.array([0, 1], jnp.int32), jax.random.key(0)
a = A.gradient(f, x, t)
mlp = eqx.nn.MLP(8, 3, 4, 1, key=jax.random.key(3), dtype=jnp.float32)
out = dict(
    kernel_shap=A.kernel_shap(f, x, t, key=k, samples=40),
    lime=A.lime(f, x, t, key=k, samples=20),
    lime_per_example=A.lime(f, x, t, key=k, samples=20,
                            feature_mask=jnp.array([[0, 0, 1, 1, 2, 2, 3, 3], [0] * 4 + [1] * 4])),
    smoothgrad=A.smoothgrad(f, x, t, key=k, samples=3),
    gradient_shap=A.gradient_shap(f, x, t, key=k, baselines=0.5 * x, samples=3),
    shapley_sampling=A.shapley_sampling(f, x, t, key=k, samples=2),
    max_sensitivity=M.max_sensitivity(f, x, t, A.gradient, key=k, samples=2),
    continuity=M.continuity(f, x, t, A.gradient, key=k, samples=2),
    local_lipschitz=M.local_lipschitz(f, x, t, A.gradient, key=k, samples=2),
    infidelity=M.infidelity(f, x, t, a, key=k, samples=4),
    faithfulness_correlation=M.faithfulness_correlation(f, x, t, a, key=k, subset_size=3,
                                                        samples=4),
    monotonicity_correlation=M.monotonicity_correlation(f, x, t, a, key=k, samples=3),
    random_logit=M.random_logit(f, x, t, A.gradient, key=k, similarity="spearman"),
    randomization=M.randomization_check(mlp, None, x, A.gradient, key=k, stdev=0.1).spearman,
    random_attribution=M.random_attribution(k)(f, x, t),
)
np.savez(sys.argv[2], **{n: np.asarray(v) for n, v in out.items()})
"""


def test_random_methods_do_not_depend_on_x64(tmp_path):
    runs = {}
    for mode in ("off", "on"):
        path = tmp_path / f"{mode}.npz"
        subprocess.run([sys.executable, "-c", SCRIPT, mode, str(path)], check=True)
        runs[mode] = np.load(path)
    for name in runs["off"].files:
        off, on = runs["off"][name], runs["on"][name]
        assert off.dtype == np.float32, (name, off.dtype)
        np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-6, err_msg=name)
