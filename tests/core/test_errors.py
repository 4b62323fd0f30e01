import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.core import UNROLL_BUDGET
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
    with pytest.raises(TypeError, match="floating dtype, or an integer one"):
        jp.sites(f, jnp.ones((1, 6, 6, 1), bool))
    with pytest.raises(ValueError, match="batch axis"):
        jp.sites(f, jnp.float32(1.0))
    with pytest.raises(ValueError, match="could not be evaluated on an input of shape"):
        jp.sites(f, jnp.ones((1, 6, 6, 2, 3)))
    with pytest.raises(TypeError, match="must be an array"):
        jp.sites(f, [[1.0]])


def test_input_without_its_batch_axis_is_named():
    from flax import nnx
    import flax.linen as nn

    nnx_f = jp.as_function(models.NNXMLP(nnx.Rngs(0)))
    dense = nn.Dense(3)
    linen_f = jp.as_function(dense, dense.init(jax.random.key(0), jnp.ones((1, 4))))
    for kind, f in [("Flax NNX", nnx_f), ("Flax Linen", linen_f)]:
        assert f(jnp.ones((2, 4))).shape == (2, 3)
        with pytest.raises(ValueError, match=rf"The {kind} model maps x of shape \(4,\) to an "
                                             r"output of shape \(3,\): the batch sizes differ"):
            jp.sites(f, jnp.ones((4,)))


def test_intervention_with_another_batch_size_names_the_site():
    f = f_linen()
    mask = jnp.ones((5, 1, 1, 4))  # made for a batch of 5
    with pytest.raises(TypeError, match=r"The intervention at site 'conv1' failed on its value of "
                                        r"shape \(3, 6, 6, 4\) \(float32\)"):
        jp.intervene(f, {"conv1": lambda v: v * mask})(jnp.ones((3, 6, 6, 1)))


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


W3 = jnp.ones((3, 3))


def _cell(h):
    with jax.named_scope("cell"):
        return jnp.tanh(h @ W3)


@jax.custom_vjp
def _cell_vjp(h):
    return _cell(h)


_cell_vjp.defvjp(lambda h: (_cell(h), h), lambda h, g: (g,))


@jax.custom_jvp
def _cell_jvp(h):
    return _cell(h)


_cell_jvp.defjvp(lambda p, t: (_cell(p[0]), t[0]))

OPAQUE = {
    "scan": (lambda x: jax.lax.scan(lambda h, _: (_cell(h), None), x, None,
                                    length=UNROLL_BUDGET)[0], "inside a `scan` loop too long"),
    "while": (lambda x: jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, _cell(c[1])),
                                           (0, x))[1], "inside a `while_loop` body"),
    "cond": (lambda x: jax.lax.cond(x.sum() > 0, _cell, lambda h: h, x), "inside a `cond` branch"),
    "custom_vjp": (_cell_vjp, r"inside a function with a custom derivative \(`jax.custom_vjp`\)"),
    "custom_jvp": (_cell_jvp, r"inside a function with a custom derivative \(`jax.custom_jvp`\)"),
}


# The cond branches on a sum over the whole batch, so jaxplain rightly warns that the
# output mixes examples; that is not what this test is about.
@pytest.mark.filterwarnings("ignore:The model's output for one example depends")
@pytest.mark.parametrize("kind", list(OPAQUE))
def test_site_inside_control_flow_or_a_custom_derivative_is_refused(kind):
    f, message = OPAQUE[kind]
    x = jnp.ones((2, 3))
    assert [s.name for s in jp.sites(f, x)] == []
    with pytest.raises(ValueError, match=f"Site 'cell' lies {message}"):
        jp.capture(f, "cell")(x)
    with pytest.raises(ValueError, match="Choose a site outside it"):
        jp.intervene(f, {"cell": lambda v: v})(x)
    # the construct itself runs unchanged, with its own derivative (the custom rules differ
    # from tanh's derivative); a while_loop has forward-mode derivatives only
    y, _ = jp.capture(f, [])(x)
    np.testing.assert_allclose(y, f(x), rtol=1e-6)
    if kind == "while":
        derivative = lambda fn: jax.jvp(fn, (x,), (x,))[1]  # noqa: E731
    else:
        derivative = lambda fn: jax.grad(lambda v: fn(v).sum())(x)  # noqa: E731
    np.testing.assert_allclose(derivative(jp.intervene(f, {})), derivative(f), rtol=1e-6)


def test_a_module_given_for_the_function_says_how_to_wrap_it():
    import equinox as eqx
    import flax.linen as nn

    from jaxplain.attribution import gradient

    x = jnp.ones((2, 3))
    linen = nn.Dense(2)
    equinox = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    cases = [(linen, "as_function(model, variables)"), (nn.Dense, "as_function(Dense(...)"),
             (equinox, "as_function(model)")]
    for module, hint in cases:
        for call in (lambda: jp.sites(module, x), lambda: jp.capture(module, "dense")(x),
                     lambda: gradient(module, x, 0)):
            with pytest.raises(TypeError, match=r"not a function of a batch") as err:
                call()
            assert hint in str(err.value)
    # wrapped, they run
    assert jp.as_function(equinox)(x).shape == (2, 2)
    assert gradient(jp.as_function(linen, linen.init(jax.random.key(0), x)), x, 0).shape == x.shape


def test_a_function_that_returns_more_than_the_logits_is_named():
    import flax.linen as nn

    from jaxplain.attribution import gradient, integrated_gradients

    x = jnp.ones((2, 3))
    w = jnp.ones((3, 2))
    for method in (gradient, integrated_gradients):
        with pytest.raises(TypeError, match=r"f must return one array.*tuple of shapes"):
            method(lambda z: (z @ w, z), x, 0)
        with pytest.raises(ValueError, match=r"could not be evaluated on an input of shape \(2, 3\)"):
            method(lambda z: z @ jnp.ones((4, 2)), x, 0)
    model = nn.BatchNorm(use_running_average=False)
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="inference mode"):
        jp.as_function(model, variables, mutable=["batch_stats"])


def test_token_ids_reach_the_kernel_but_not_a_gradient():
    import flax.linen as nn

    from jaxplain.attribution import attention_rollout, gradient

    class Tokens(nn.Module):
        def setup(self):
            self.embed = nn.Embed(16, 8)
            self.attn = nn.MultiHeadDotProductAttention(num_heads=2)
            self.head = nn.Dense(2)

        def __call__(self, ids):
            return self.from_embeddings(self.embed(ids))

        def from_embeddings(self, h):  # the same model after its embedding
            return self.head((h + self.attn(h)).mean(1))

    ids = jax.random.randint(jax.random.key(0), (3, 5), 0, 16)
    model = Tokens()
    variables = model.init(jax.random.key(1), ids)
    f = jp.as_function(model, variables)
    embed = variables["params"]["embed"]["embedding"][ids]
    g = jp.as_function(model, variables, method="from_embeddings")
    assert "attn/softmax" in {s.name for s in jp.sites(f, ids)}
    _, got = jp.capture(f, "attn/softmax")(ids)
    _, want = jp.capture(g, "attn/softmax")(embed)
    np.testing.assert_allclose(got["attn/softmax"], want["attn/softmax"], atol=1e-6)
    out = jp.intervene(f, {"attn/softmax": lambda a: jnp.zeros_like(a)})(ids)
    np.testing.assert_allclose(out, jp.intervene(g, {"attn/softmax": lambda a: jnp.zeros_like(a)})(embed),
                               atol=1e-6)
    assert not np.allclose(out, f(ids))
    np.testing.assert_allclose(attention_rollout(f, ids), attention_rollout(g, embed), atol=1e-6)
    with pytest.raises(TypeError, match="function of the embeddings"):
        gradient(f, ids, 0)
    with pytest.raises(TypeError, match="floating x"):
        jp.rewrite_backward(f, jp.lrp.Epsilon())(ids)


def test_an_nnx_module_or_a_module_class_says_how_to_wrap_it():
    import equinox as eqx
    from flax import nnx

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match=r"Flax NNX module \(Linear\).*as_function\(model\)"):
        jp.sites(model, x)
    for cls, kind in ((nnx.Linear, "Flax NNX"), (eqx.nn.Linear, "Equinox")):
        with pytest.raises(TypeError, match=f"the {kind} module class Linear"):
            jp.sites(cls, x)
    np.testing.assert_allclose(jp.as_function(model)(x), model(x))


def test_an_equinox_batchnorm_in_training_mode_gets_a_hint():
    import equinox as eqx

    class Net(eqx.Module):
        bn: eqx.nn.BatchNorm

        def __call__(self, x, state):
            return self.bn(x, state)[0]

    net, state = eqx.nn.make_with_state(Net)(eqx.nn.BatchNorm(3, "batch", mode="batch"))
    f = jp.as_function(eqx.Partial(lambda m, s, x: m(x, s), net, state))
    with pytest.raises(ValueError, match=r"inference mode, eqx.nn.inference_mode\(model\)"):
        jp.sites(f, jnp.ones((2, 3)))


def test_a_linen_model_with_dropout_on_by_default_gets_a_hint():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(x))

    x = jnp.ones((2, 4))
    variables = Net().init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    with pytest.raises(ValueError, match=r"needs PRNG.*train=False"):
        jp.sites(jp.as_function(Net(), variables), x)
    assert len(jp.sites(jp.as_function(Net(), variables, train=False), x)) >= 1


def test_a_linen_batchnorm_in_training_mode_by_default_gets_a_hint():
    import flax.linen as nn

    from jaxplain import pathways
    from jaxplain.attribution import gradient

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            return nn.Dense(3)(nn.relu(nn.BatchNorm(use_running_average=not train)(x)))

    x = jnp.ones((2, 4))
    variables = Net().init(jax.random.key(0), x)
    for call in (lambda f: gradient(f, x, 0), lambda f: pathways.select(f, x, None, keep=0.5),
                 lambda f: jp.sites(f, x)):
        with pytest.raises(ValueError, match=r"batch_stats.*as_function\(model, variables, "
                                             r"train=False\)"):
            call(jp.as_function(Net(), variables))
        call(jp.as_function(Net(), variables, train=False))


def test_a_rule_parameter_given_as_a_jax_array_is_refused_by_name():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Scaled:
        factor: object

        def activation(self, op, x, y, g):
            return g * self.factor

    f = lambda x: jax.nn.relu(x) @ jnp.ones((3, 2))  # noqa: E731
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match=r"rule Scaled.factor is a JAX array \(concrete\).*"
                                        r"pass a Python number"):
        jp.rewrite_backward(f, Scaled(jnp.float32(0.5)))
    with pytest.raises(TypeError, match=r"rule Scaled.factor is a JAX array \(traced\)"):
        jax.jit(lambda e: jp.rewrite_backward(f, [("*", Scaled(e))])(x))(0.5)
    assert jp.rewrite_backward(f, Scaled(0.5))(x).shape == (2, 2)   # a Python number works
