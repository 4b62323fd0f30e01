import jax
import jax.numpy as jnp
import pytest

import jaxplain as jp
from tests.core import models


def f_linen():
    model, variables = models.linen_cnn()
    return jp.as_function(model, variables)


def test_unknown_site_lists_close_matches():
    f = f_linen()
    with pytest.raises(ValueError, match=r"Unknown site 'block1/conv_c'.*block1/conv_a"):
        jp.capture(f, "block1/conv_c")(jnp.ones((1, 6, 6, 1)))
    with pytest.raises(ValueError, match="Unknown site"):
        jp.intervene(f, {"conv9": lambda v: v})(jnp.ones((1, 6, 6, 1)))


def test_bad_inputs_are_named():
    f = f_linen()
    with pytest.raises(TypeError, match="floating dtype"):
        jp.sites(f, jnp.ones((1, 6, 6, 1), jnp.int32))
    with pytest.raises(ValueError, match="batch axis"):
        jp.sites(f, jnp.float32(1.0))
    with pytest.raises(ValueError, match="could not be evaluated on an input of shape"):
        jp.sites(f, jnp.ones((1, 6, 6, 2, 3)))
    with pytest.raises(TypeError, match="must be an array"):
        jp.sites(f, [[1.0]])


def test_bad_interventions_and_adapters():
    f = f_linen()
    x = jnp.ones((1, 6, 6, 1))
    with pytest.raises(ValueError, match="returned shape"):
        jp.intervene(f, {"relu": lambda v: v[..., :2]})(x)
    with pytest.raises(TypeError, match="callable"):
        jp.intervene(f, {"relu": 3.0})
    with pytest.raises(TypeError, match="mapping"):
        jp.intervene(f, ["relu"])
    model, _ = models.linen_cnn()
    with pytest.raises(ValueError, match="needs its variables"):
        jp.as_function(model)
    with pytest.raises(TypeError, match="must be a Flax"):
        jp.as_function(42)


def test_site_inside_a_loop_is_refused():
    w = jnp.ones((3, 3))

    def f(x):
        def body(h, _):
            with jax.named_scope("cell"):
                h = jnp.tanh(h @ w)
            return h, None

        return jax.lax.scan(body, x, None, length=2)[0]

    x = jnp.ones((2, 3))
    assert [s.name for s in jp.sites(f, x)] == []
    with pytest.raises(ValueError, match="inside a `scan` loop body"):
        jp.capture(f, "cell")(x)
    # the loop itself runs unchanged
    y, _ = jp.capture(f, [])(x)
    assert jnp.allclose(y, f(x))
