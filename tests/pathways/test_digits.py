"""Pathways on the trained digits CNN (residual block, avg-pool) and the demo section."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import pathways as pw


def test_digits_pathways(digits_model):
    _, _, f, digits = digits_model
    x = jnp.asarray(digits.x_test[:16])
    t = jnp.argmax(f(x), -1)
    plain = jax.grad(lambda x: jnp.take_along_axis(f(x), t[:, None], 1).sum())(x)
    np.testing.assert_array_equal(pw.pathway_gradient(f, x, t, keep=1.0), plain)
    masks = pw.select(f, x, t, keep=0.3)
    # Post-add ReLU of the residual block is its own site; all four ReLU call sites are masked.
    assert set(masks) == {"relu", "block1/relu", "block1/relu_1", "relu_1"}
    np.testing.assert_allclose(pw.kept_fraction(masks), 0.3, atol=0.01)
    same = jnp.argmax(pw.apply(f, masks)(x), -1) == t
    assert float(same.mean()) >= 0.9
    # Exact affinity of the masked net for a small step along its own gradient direction.
    pg = pw.pathway_gradient(f, x, t, keep=0.3)
    d = pg / jnp.linalg.norm(pg.reshape(len(x), -1), axis=1).reshape(-1, 1, 1, 1)
    h = pw.apply(f, masks)
    pick = lambda y: jnp.take_along_axis(y, t[:, None], 1)[:, 0]  # noqa: E731
    s = 1e-3
    step = pick(h(x + s * d)) - pick(h(x))
    np.testing.assert_allclose(step, s * (pg * d).reshape(len(x), -1).sum(1), rtol=2e-2, atol=2e-5)


def test_demo_section(demo_context):
    from jaxplain.pathways._demo import demo_section

    from jaxplain.report._section import Figure, Table

    section = demo_section(demo_context)
    assert "keep=0.2" in section.text and "Critical pathways" in section.text
    (table,) = [i for i in section.items if isinstance(i, Table)]
    (figure,) = [i for i in section.items if isinstance(i, Figure)]
    assert figure.png.startswith(b"\x89PNG")
    # The kept fraction per layer agrees with a fresh selection on the same digits.
    x = jnp.asarray(demo_context.data.x_test[:8])
    masks = pw.select(demo_context.f, x, jnp.argmax(demo_context.f(x), -1), keep=0.2)
    assert table.header[2:-1] == tuple(f"kept {s}" for s in masks)
    (row,) = table.rows
    assert row[0] == "0.2"
    want = [pw.kept_fraction(masks).mean()] + [pw.kept_fraction({s: m}).mean() for s, m in masks.items()]
    np.testing.assert_allclose([float(v) for v in row[1:-1]], want, atol=1e-3)
    assert 0.0 <= float(row[-1]) <= 1.0
