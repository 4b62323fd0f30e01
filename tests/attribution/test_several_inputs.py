"""Models of several inputs and of one output: refusals that name the way out, and the paths
that take them (closures over a second input, `output="logit"`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics

W = jax.random.normal(jax.random.key(0), (6, 3))
META = jax.random.normal(jax.random.key(1), (4, 2))
X = jax.random.normal(jax.random.key(2), (4, 4))


def closure(x):
    """A second input closed over: f only takes batches of META's 4."""
    return jnp.tanh(jnp.concatenate([x, META], axis=1)) @ W


def test_the_closure_works_where_f_sees_x_s_batch():
    by_hand = jax.grad(lambda x: closure(x)[:, 0].sum())(X)
    np.testing.assert_allclose(A.gradient(closure, X, 0), by_hand, rtol=1e-6)
    ablation = A.feature_ablation(closure, X, 0)
    for j in range(4):
        off = closure(X.at[:, j].set(0.0))[:, 0]
        np.testing.assert_allclose(ablation[:, j], closure(X)[:, 0] - off, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("run", [
    lambda: A.deeplift(closure, X, 0),
    lambda: A.deeplift_shap(closure, X, 0, baselines=jnp.zeros((3, 4))),
    lambda: metrics.deletion(closure, X, 0, X, output="logit"),
])
def test_methods_on_a_larger_batch_say_so(run):
    with pytest.raises(ValueError, match=r"a batch of \d+ inputs, not x's 4.*several inputs"):
        run()


def test_a_deletion_curve_whose_copies_number_the_batch_is_refused_too():
    # 3 steps: 4 perturbed copies of each example, as many as META's rows: rows would pair
    # wrongly without an error
    with pytest.raises(ValueError, match="a batch of 5 inputs"):
        metrics.deletion(closure, X, 0, X, steps=3, output="logit")


def test_a_tuple_of_inputs_is_refused_with_the_ways_out():
    with pytest.raises(TypeError, match="closure over the others.*one flat array"):
        A.gradient(lambda xs: closure(xs[0]), (X, X), 0)
    with pytest.raises(TypeError, match="got a dict"):
        A.gradient(lambda xs: closure(xs["a"]), {"a": X}, 0)
    assert A.gradient(lambda x: x @ jnp.ones((2, 1)), [[1.0, 2.0]], 0).shape == (1, 2)  # a list of numbers


def test_one_output_per_example_and_callable_targets_are_explained():
    with pytest.raises(ValueError, match=r"lambda x: f\(x\)\[:, None\] with target 0"):
        A.gradient(lambda x: closure(x)[:, 0], X, 0)
    with pytest.raises(TypeError, match="not a function"):
        A.gradient(closure, X, lambda logits: logits[:, 0])


def test_compare_reads_a_regression_output_as_it_is():
    regression = lambda x: x @ jnp.array([[1.0], [2.0], [3.0], [4.0]])
    methods = {"gxi": A.gradient_x_input}
    with pytest.raises(ValueError, match="one output"):
        metrics.compare(regression, X, 0, methods, key=jax.random.key(0))
    table = metrics.compare(regression, X, 0, methods, ["deletion_morf"], key=jax.random.key(0),
                            output="logit", steps=4)
    curve = metrics.deletion(regression, X, 0, A.gradient_x_input(regression, X, 0), steps=4,
                             output="logit")
    np.testing.assert_allclose(table.rows[0][1], float(curve.area.mean()), rtol=1e-6)


def test_equinox_keyword_arguments_of_the_batch_s_size_get_a_hint():
    class Fused(eqx.Module):
        lin: eqx.nn.Linear

        def __call__(self, x, meta):
            return self.lin(jnp.concatenate([x, meta]))

    model = Fused(eqx.nn.Linear(6, 3, key=jax.random.key(3)))
    with pytest.raises(ValueError, match=r"keyword arguments whole to every example.*\['meta'\]"):
        jp.as_function(model, meta=META)(X)
    shared = jp.as_function(model, meta=META[0])  # one value for every example: fine
    np.testing.assert_allclose(shared(X)[1], model(X[1], META[0]), rtol=1e-6)


def test_an_unknown_site_says_constants_are_not_sites():
    with pytest.raises(ValueError, match="reads only constants"):
        jp.capture(closure, "meta_branch")(X)
