"""The one-output refusal's recommended wrapper calls the model once: used as written, it runs
extract without the kernel's "scope entered 2 times" warnings."""

import re
import warnings

import jax
import jax.numpy as jnp
import pytest

from jaxplain import subnet

W1 = jax.random.normal(jax.random.key(0), (6, 16))
W2 = jax.random.normal(jax.random.key(1), (16, 1))
X = jax.random.normal(jax.random.key(2), (12, 6))


def f(x):
    with jax.named_scope("hidden"):
        h = x @ W1
    return jax.nn.relu(h) @ W2


def test_the_recommended_two_logit_wrapper_calls_f_once():
    kw = dict(sites="hidden", key=jax.random.key(0), l1=1e-3, steps=100, finetune_steps=20)
    with pytest.raises(ValueError) as refused:
        subnet.extract(f, X, **kw)
    code = re.search(r"pass g = (lambda x: .+?)(?:, which| \(its)", str(refused.value)).group(1)
    g = eval(code, {"jnp": jnp, "f": f})
    assert g(X).shape == (12, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = subnet.extract(g, X, **kw)
    # f called twice entered the scope 'hidden' twice: three warnings per extract.
    assert not [str(w.message) for w in caught if "entered" in str(w.message)]
    assert float(sub.region_agreement) == 1.0
