"""docs/attribution.md's "Models with several inputs" and "Coming from Captum and Zennit": their
examples run, and what the sections say of them holds."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "attribution.md"


def _run_section(title):
    section = DOC.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    scope = {}
    exec(compile(blocks[0], f"{DOC}: {title}", "exec"), scope)  # noqa: S102 - our docs
    return scope


@pytest.fixture(scope="module")
def several():
    return _run_section("Models with several inputs")


@pytest.fixture(scope="module")
def migration():
    return _run_section("Coming from Captum and Zennit")


def test_several_inputs_the_closure_and_its_jit_give_the_same(several):
    s = several
    assert s["ig"].shape == (4, 6, 6, 1)
    np.testing.assert_allclose(s["explain"](s["image"], s["meta"], s["t"]), s["ig"], rtol=1e-5,
                               atol=1e-7)
    s["explain"](s["image"] + 1.0, 2 * s["meta"], s["t"])  # other values: no new compilation
    assert s["explain"]._cache_size() == 1


def test_several_inputs_closure_refused_where_the_batch_grows(several):
    f, image, t = several["f"], several["image"], several["t"]
    for method in (lambda: A.deeplift(f, image, t),
                   lambda: A.gradient_shap(f, image, t, key=jax.random.key(0),
                                           baselines=image[:2]),
                   lambda: A.score_cam(f, image, t, site="conv")):
        with pytest.raises(ValueError, match="a batch of .* not x's 4"):
            method()
    with pytest.raises(TypeError, match="one array"):
        A.gradient(lambda xs: f(xs[0]), (image, several["meta"]), t)


def test_several_inputs_concatenated_values_sum_to_the_gap(several):
    s = several
    g, both, t = s["g"], s["both"], np.asarray(s["t"])
    np.testing.assert_allclose(g(both), s["model"].apply(s["variables"], s["image"], s["meta"]),
                               rtol=1e-6)
    rows = np.arange(4)
    gap = np.asarray(g(both))[rows, t] - np.asarray(g(jnp.zeros_like(both)))[rows, t]
    np.testing.assert_allclose(np.asarray(s["per_input"]).sum(1), gap, rtol=1e-4, atol=1e-6)
    dl = np.asarray(s["dl_image"]).reshape(4, -1).sum(1) + np.asarray(s["dl_meta"]).sum(1)
    np.testing.assert_allclose(dl, gap, rtol=1e-4, atol=1e-6)


def test_layer_ig_is_the_path_integral_at_the_site(migration):
    """layer_integrated_gradients equals Gauss-Legendre IG at the site written out step by step
    (x reaches the output around the site through the skip connection), chunked or not."""
    import jaxplain as jp

    s = migration
    f, x, t, site = s["f"], s["x"], s["t"], s["site"]
    a_x = jp.capture(f, site)(x)[1][site]
    a_b = jp.capture(f, site)(jnp.zeros_like(x))[1][site]
    grad = jax.grad(lambda a: jp.intervene(f, {site: lambda v: a})(x)[jnp.arange(4), t].sum())
    nodes, weights = np.polynomial.legendre.leggauss(32)
    path = sum(w / 2 * grad(a_b + (1 + z) / 2 * (a_x - a_b)) for z, w in zip(nodes, weights))
    want = np.asarray((a_x - a_b) * path)
    scale = np.abs(want).max()
    assert s["layer_ig"].shape == (4, 6, 6, 4)
    assert np.abs(np.asarray(s["layer_ig"]) - want).max() <= 1e-5 * scale
    chunked = A.layer_integrated_gradients(f, x, t, site=site, steps=32, batch_size=5)
    assert np.abs(np.asarray(chunked) - want).max() <= 1e-5 * scale
