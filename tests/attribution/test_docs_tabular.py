"""docs/attribution.md's categorical-input and background examples run and hold what the page
says of them."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np

from jaxplain import attribution as A

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md"


def _section(title: str, namespace: dict | None = None) -> dict:
    """`namespace` (a new one by default) after running the Python blocks of the section
    headed `title` in it."""
    text = DOC.read_text().split(f"### {title}\n", 1)[1].split("\n#", 1)[0]
    namespace = {} if namespace is None else namespace
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our docs
    return namespace


def test_integer_codes_get_exact_shapley_values_and_per_column_ablation():
    ns = _section("Categorical inputs (integer codes)")
    f, ids = ns["f"], ns["ids"]
    np.testing.assert_allclose(A.kernel_shap(f, ids, 0, baseline=0), [[5, 2], [2, 0]], atol=1e-4)
    ablated = A.feature_ablation(f, ids, 0, baseline=jnp.array([0, 1]))
    np.testing.assert_allclose(ablated, [[5, 3], [2, 1]], atol=1e-6)


def test_a_background_by_vmap_sums_to_the_gap_to_the_mean_background_output():
    ns = _section("A background distribution (interventional SHAP)",
                  _section("Categorical inputs (integer codes)"))  # its imports come first
    g, x, background, phi = ns["g"], ns["x"], ns["background"], ns["phi"]
    gap = g(x)[:, 0] - g(background)[:, 0].mean()
    np.testing.assert_allclose(phi.sum(1), gap, atol=1e-5)
