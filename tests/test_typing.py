"""jaxplain's annotations hold for what its documentation passes, and checkers can read them.

Documented calls (NumPy inputs and targets, NumPy int64 scalars, a feature mask, the metrics
on a tiny model) run under jaxtyping's import hook with beartype, which checks every annotated
function of the package, internal ones included, on every call. The hook must wrap the import,
so the calls run in a fresh interpreter.
"""

import importlib.resources
import json
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import jax.numpy as jnp
import pytest
from beartype.door import is_bearable

from jaxplain import attribution as A
from jaxplain import rules

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json
import numpy as np
from jaxtyping import install_import_hook

with install_import_hook("jaxplain", "beartype.beartype"):
    from jaxplain import attribution as A, metrics as M

import flax.linen as nn
import jax
import jax.numpy as jnp

W = jax.random.normal(jax.random.key(0), (64, 3))
f = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ W)
x = np.asarray(jax.random.uniform(jax.random.key(1), (2, 8, 8, 1)))
t = np.array([0, 2])  # int64
key = jax.random.key(2)
out = {}

def gap(a, b):
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))

a = A.gradient(f, x, t)
out["numpy_vs_jax"] = gap(a, A.gradient(f, jnp.asarray(x), jnp.asarray(t, jnp.int32)))
relu = lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ W)
out["deeplift_numpy_vs_jax"] = gap(A.deeplift(relu, x, t, baseline=0.1),
                                   A.deeplift(relu, jnp.asarray(x), jnp.asarray(t, jnp.int32),
                                              baseline=0.1))
out["int64_scalar_vs_int"] = gap(A.gradient_x_input(f, x, np.int64(1)),
                                 A.gradient_x_input(f, x, 1))

# additive in its two groups: each group's Shapley value is the drop when it alone is removed
g = lambda v: v @ jnp.array([[1.0], [2.0], [-1.0], [0.5]])
v, mask = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), np.array([0, 0, 1, 1])
out["kernel_shap_vs_ablation"] = gap(A.kernel_shap(g, v, 0, feature_mask=mask),
                                     A.feature_ablation(g, v, 0, feature_mask=mask))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(5, name="fc")(x.reshape(x.shape[0], -1)))
        return nn.Dense(3, name="head")(h)


model = MLP()
variables = model.init(jax.random.key(3), x)
scores = {
    "infidelity": M.infidelity(f, x, t, a, key=key),
    "random_logit": M.random_logit(f, x, t, A.gradient, key=key),
    "randomization_check": M.randomization_check(model, variables, x, A.gradient,
                                                 key=key).spearman[-1],
    "irof": M.irof(f, x, t, a, np.arange(64).reshape(8, 8) // 16),
}
out["metrics"] = {k: [np.shape(s), bool(np.all(np.isfinite(s)))] for k, s in scores.items()}
print("RESULT", json.dumps(out))
'''


@pytest.fixture(scope="module")
def hooked():
    """The script's results and its stderr, run under the import hook in a fresh interpreter."""
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(s for s in run.stdout.splitlines() if s.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), run.stderr


def test_documented_calls_pass_the_import_hook(hooked):
    out, _ = hooked
    assert out["numpy_vs_jax"] < 1e-6
    assert out["deeplift_numpy_vs_jax"] < 1e-6
    assert out["int64_scalar_vs_int"] < 1e-6
    assert out["kernel_shap_vs_ablation"] < 1e-4
    for name, (shape, finite) in out["metrics"].items():
        assert shape == [2] and finite, name


def test_no_finalizer_errors_at_exit(hooked):
    """A weakref finalizer run at interpreter exit is not type-checked (the checker's own
    modules may be gone by then, which printed a traceback per finalizer)."""
    assert "Exception ignored" not in hooked[1]


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation", "shapley_sampling",
                                    "kernel_shap", "lime", "score_cam"])
def test_baseline_annotation_takes_what_the_docs_pass(method):
    hint = typing.get_type_hints(getattr(A, method))["baseline"]
    for baseline in (0.0, 0, None, jnp.array([0, 1]), jnp.zeros((1, 2))):
        assert is_bearable(baseline, hint), (method, baseline)


def test_conv_quantile_annotation_takes_none():
    hint = typing.get_type_hints(rules.binarize)["conv_quantile"]
    assert is_bearable(None, hint) and is_bearable(0.9, hint)


def test_the_target_annotation_still_refuses():
    """ArrayLike widens the array types, not the dtypes or the ranks."""
    hint = typing.get_type_hints(A.gradient)
    assert not is_bearable(1.5, hint["target"])
    assert not is_bearable(jnp.zeros((2, 3), jnp.int32), hint["target"])


def test_pytree_decorator_is_a_dataclass_transform():
    """Static checkers see the constructors of ``visualize.Fourier`` and the regularizers."""
    from jaxplain.visualize import _param, _regularizers
    for module in (_param, _regularizers):
        assert hasattr(module.frozen_pytree, "__dataclass_transform__")


def test_package_ships_py_typed():
    """PEP 561: without the marker, mypy ignores the annotations of an installed jaxplain."""
    assert importlib.resources.files("jaxplain").joinpath("py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["jaxplain"]
