"""TCAV on a model where a concept provably drives a class; t-test vs SciPy; the classifier."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxplain import concepts
from jaxplain.attribution._site import site_gradients
from jaxplain.core import capture
from jaxplain.concepts._linear import _fit, fit_rows, held_out
from tests._traces import counting

RNG = np.random.default_rng(0)
D = 8
C = jnp.asarray(RNG.normal(size=D - 1), jnp.float32)


def model(x):
    """hidden = x (a named site); logit_0 = 3 h_0 + c . relu(h_1:); logit_1 = -logit_0."""
    with jax.named_scope("hidden"):
        h = x * 1.0
    z = 3.0 * h[:, 0] + jax.nn.relu(h[:, 1:]) @ C
    return jnp.stack([z, -z], axis=1)


def _random_set(n=40):
    return jnp.asarray(RNG.normal(size=(n, D)), jnp.float32)


CONCEPT = _random_set().at[:, 0].add(4.0)  # the concept: a large first hidden unit
RANDOMS = [_random_set() for _ in range(8)]
X = _random_set(60)


def test_directional_derivative_matches_the_closed_form():
    v = concepts.cav(model, CONCEPT, RANDOMS[0], site="hidden")
    # Held out: the concept shifts h_0 by 4 standard deviations, Bayes accuracy Phi(2) = 0.98.
    assert float(v.accuracy) > 0.85 and v.vector.shape == (D,)
    # Points to the concept (fitted on two thirds of 40 + 40 examples in 8 dimensions).
    assert float(v.vector[0]) > 0.6 and int(jnp.argmax(jnp.abs(v.vector))) == 0
    s = concepts.directional_derivatives(model, X, 0, cav=v)
    grad = np.concatenate([np.full((60, 1), 3.0), (np.asarray(X)[:, 1:] > 0) * np.asarray(C)], 1)
    np.testing.assert_allclose(s, grad @ np.asarray(v.vector), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(concepts.tcav_score(model, X, 0, cav=v), np.mean(s > 0))
    s1 = concepts.directional_derivatives(model, X, jnp.ones(60, jnp.int32), cav=v)
    np.testing.assert_allclose(s1, -s, rtol=1e-5, atol=1e-6)



def test_a_target_traced_by_the_callers_jit_gives_the_eager_numbers():
    """directional_derivatives and tcav_score take a target that is an argument of the
    caller's jit (its values are range-checked only when concrete): it raised a
    TracerArrayConversionError."""
    v = concepts.cav(model, CONCEPT, RANDOMS[0], site="hidden")
    t = jnp.arange(60) % 2
    eager = concepts.directional_derivatives(model, X, t, cav=v)
    traced = jax.jit(lambda x, t: concepts.directional_derivatives(model, x, t, cav=v))(X, t)
    np.testing.assert_allclose(traced, eager, rtol=1e-6, atol=1e-7)
    score = jax.jit(lambda x, t: concepts.tcav_score(model, x, t, cav=v))(X, t)
    np.testing.assert_allclose(score, np.mean(np.asarray(eager) > 0))

# One of the 8 concept CAVs reaches 0.73 held-out accuracy (l2=1e-3 overfits 54 examples).
@pytest.mark.filterwarnings("ignore:tcav. the concept CAVs against random sets .5.:RuntimeWarning")
def test_tcav_finds_the_driving_concept_and_not_a_random_one():
    r = concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT, randoms=RANDOMS)
    assert float(r.score) > 0.95
    assert bool(r.significant) and float(r.p_value) < 0.01
    assert 0.2 < float(jnp.mean(r.random_scores)) < 0.8
    # The opposite class is driven down by the concept: score near 0, also significant.
    down = concepts.tcav(model, X, 1, site="hidden", concept=CONCEPT, randoms=RANDOMS)
    assert float(down.score) < 0.05 and bool(down.significant)
    # A "concept" that is just another random set is not significant.
    with pytest.warns(RuntimeWarning, match="held-out accuracy"):  # and it says so
        fake = concepts.tcav(model, X, 0, site="hidden", concept=_random_set(), randoms=RANDOMS)
    assert not bool(fake.significant), (fake.scores, fake.random_scores, fake.p_value)
    assert float(fake.p_value) > 0.2


def test_ttest_matches_scipy():
    for n, m in ((5, 7), (10, 10), (3, 12)):
        a, b = RNG.normal(size=n), RNG.normal(0.7, 2.0, size=m)
        t, p = concepts.ttest_ind(jnp.asarray(a), jnp.asarray(b))
        want = stats.ttest_ind(a, b)
        np.testing.assert_allclose(t, want.statistic, rtol=1e-4)
        np.testing.assert_allclose(p, want.pvalue, rtol=1e-3, atol=1e-6)
    t, p = concepts.ttest_ind(jnp.ones(4), jnp.zeros(4))
    assert np.isinf(float(t)) and float(p) == 0.0
    t, p = concepts.ttest_ind(jnp.ones(4), jnp.ones(4))
    assert float(t) == 0.0 and float(p) == 1.0


def test_linear_classifier_separates_and_finds_the_normal():
    w = RNG.normal(size=5)
    pts = RNG.normal(size=(300, 5))
    margin = pts @ w
    keep = np.abs(margin) > 0.3
    pos, neg = pts[keep & (margin > 0)], pts[keep & (margin < 0)]
    clf = concepts.fit_linear(jnp.asarray(pos), jnp.asarray(neg), steps=500)
    assert float(clf.accuracy) > 0.98
    cos = float(clf.weight @ w) / (np.linalg.norm(clf.weight) * np.linalg.norm(w))
    assert cos > 0.95


def test_errors():
    with pytest.raises(ValueError, match="randoms"):
        concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT, randoms=RANDOMS[:1])
    with pytest.raises(ValueError, match="target out of range"):
        concepts.tcav(model, X, 2, site="hidden", concept=CONCEPT, randoms=RANDOMS)
    with pytest.raises(TypeError, match="target"):
        concepts.directional_derivatives(model, X, 0.5, cav=None)
    with pytest.raises(ValueError, match="concept"):
        concepts.cav(model, CONCEPT[:1], RANDOMS[0], site="hidden")
    with pytest.raises(ValueError, match="same d"):
        concepts.fit_linear(jnp.ones((3, 2)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        concepts.ttest_ind(jnp.ones(1), jnp.ones(3))
    with pytest.raises(ValueError, match="holdout"):
        concepts.cav(model, CONCEPT, RANDOMS[0], site="hidden", holdout=0.0)


def _two_relus(x):
    with jax.named_scope("relu_a"):
        h = jax.nn.relu(x)
    with jax.named_scope("relu_b"):
        h = jax.nn.relu(h - 0.5)
    return model(h)


def test_site_globs_and_example_shapes_are_checked():
    # A glob with one match is that site; one with several, and sets shaped unlike x's examples
    # (another size, or one example without its batch axis), were a bare KeyError / TypeError.
    r = concepts.tcav(_two_relus, X, 0, site="*_b", concept=CONCEPT, randoms=RANDOMS[:3])
    assert r.site == "relu_b"
    assert concepts.cav(_two_relus, CONCEPT, RANDOMS[0], site="*_a").site == "relu_a"
    for call in (
            lambda: concepts.tcav(_two_relus, X, 0, site="relu_?", concept=CONCEPT,
                                  randoms=RANDOMS[:3]),
            lambda: concepts.cav(_two_relus, CONCEPT, RANDOMS[0], site="relu_?")):
        with pytest.raises(ValueError, match=r"matches 2 sites \(relu_a, relu_b\)"):
            call()
    with pytest.raises(ValueError, match=r"concept must .* shaped like x's, \(n, 8\), got shape "
                                         r"\(40, 6\)"):
        concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT[:, :6], randoms=RANDOMS[:3])
    with pytest.raises(ValueError, match=r"randoms\[1\] must"):
        concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT,
                      randoms=[RANDOMS[0], RANDOMS[1][:, :6], RANDOMS[2]])
    with pytest.raises(ValueError, match=r"concept must .* shaped like random's"):
        concepts.cav(model, CONCEPT[:, :6], RANDOMS[0], site="hidden")
    images = jnp.ones((4, 3, 3, 1))
    with pytest.raises(ValueError, match=r"without its batch axis\? pass concept\[None\]"):
        concepts.cav(lambda x: x.reshape(len(x), -1)[:, :2], images[0], images, site="*")


def test_a_second_call_compiles_and_traces_nothing():
    """The site gradient ran op by op (jax.grad through the interpreted intervention) and
    jax.eval_shape traced f for its output shape on every call: about 15 ms per call of
    directional_derivatives on the digits CNN. Now a second call runs compiled programs only;
    the numbers are those of the eager gradient at the site."""
    v = concepts.cav(model, CONCEPT, RANDOMS[0], site="hidden")
    _, acts = capture(model, "hidden")(X)
    g = site_gradients(model, ["hidden"], X, jnp.zeros(60, jnp.int32), [acts["hidden"]])[0]
    np.testing.assert_allclose(concepts.directional_derivatives(model, X, 0, cav=v),
                               g @ v.vector, rtol=1e-6, atol=1e-7)
    calls = [lambda: concepts.directional_derivatives(model, X, 0, cav=v),
             lambda: concepts.tcav_score(model, X, jnp.arange(60) % 2, cav=v),
             lambda: concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT,
                                   randoms=RANDOMS[:3])]
    for call in calls:
        first = jax.block_until_ready(call())
        with counting() as n:
            again = jax.block_until_ready(call())
        assert (n.traces, n.compiles) == (0, 0)
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
            np.testing.assert_array_equal(a, b)


def test_tcav_scores_equal_the_single_cav_path():
    r = concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT, randoms=RANDOMS[:3])
    for i in range(3):
        v = concepts.cav(model, CONCEPT, RANDOMS[i], site="hidden")
        np.testing.assert_allclose(r.scores[i], concepts.tcav_score(model, X, 0, cav=v))
        np.testing.assert_allclose(r.accuracies[i], v.accuracy)


def _relu_features(seed, n=50, d=512):
    """Post-ReLU-like features (mean about one standard deviation, unequal scales), separable."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 3.0, d)
    shift = np.zeros(d)
    shift[: d // 8] = 0.3
    pos = np.maximum(rng.normal(size=(n, d)) + 0.5 + shift, 0) * scales
    neg = np.maximum(rng.normal(size=(n, d)) + 0.5, 0) * scales
    return pos.astype(np.float32), neg.astype(np.float32)


def test_linear_classifier_fits_relu_features_as_sklearn_does():
    # Full-batch Adam on uncentred features reached 0.81 accuracy / cosine 0.72 with
    # scikit-learn on such features at its default steps; the centred L-BFGS fit reaches both.
    from sklearn.linear_model import LogisticRegression

    for seed in (0, 1):
        pos, neg = _relu_features(seed)
        clf = concepts.fit_linear(jnp.asarray(pos), jnp.asarray(neg))
        # Fitted on the examples not held out (every third of each set is).
        test = np.r_[held_out(len(pos), 1 / 3), held_out(len(neg), 1 / 3)]
        a = np.concatenate([pos, neg])[~test]
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))][~test]
        # The returned weight and bias are the boundary in the raw space.
        np.testing.assert_array_equal(a @ np.asarray(clf.weight) + float(clf.bias) > 0, y > 0)
        s = np.std(a - a.mean(0))
        peer = LogisticRegression(C=1 / (2 * 1e-3 * s**2 * len(a)), tol=1e-8, max_iter=10000)
        w_peer = peer.fit(a, y).coef_[0]
        w = np.asarray(clf.weight)
        cos = w @ w_peer / (np.linalg.norm(w) * np.linalg.norm(w_peer))
        assert cos > 0.99, cos
        # More steps do not undo the fit (Adam spiked late and could end at chance).
        longer = concepts.fit_linear(jnp.asarray(pos), jnp.asarray(neg), steps=1000)
        assert float(longer.accuracy) == float(clf.accuracy)
        np.testing.assert_allclose(longer.weight / np.linalg.norm(longer.weight),
                                   w / np.linalg.norm(w), atol=0.02)


def test_tcav_warns_when_the_concept_cavs_are_inaccurate():
    with pytest.warns(RuntimeWarning, match="held-out accuracy"):
        concepts.tcav(model, X, 0, site="hidden", concept=_random_set(), randoms=RANDOMS[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        concepts.tcav(model, X, 0, site="hidden", concept=CONCEPT, randoms=RANDOMS[:3])


def _wide_model(x):
    """A site with 300 features: more than the examples of any set below."""
    with jax.named_scope("wide"):
        h = x * 1.0
    z = h[:, :2].sum(axis=1)
    return jnp.stack([z, -z], axis=1)


def test_cav_accuracy_is_held_out_not_training_accuracy():
    # With more features (300) than examples (60), any two sets separate perfectly on the
    # examples fitted: a training accuracy was 1.0 even for a random "concept".
    rng = np.random.default_rng(1)
    sets = [jnp.asarray(rng.normal(size=(30, 300)), jnp.float32) for _ in range(4)]
    fake = concepts.cav(_wide_model, sets[0], sets[1], site="wide")
    assert float(fake.accuracy) < 0.75, float(fake.accuracy)
    real = concepts.cav(_wide_model, sets[2].at[:, :5].add(4.0), sets[1], site="wide")
    assert float(real.accuracy) > 0.95
    # It is the accuracy of the returned boundary on the held-out examples, which it was not
    # fitted on.
    pos, neg = np.asarray(sets[0]), np.asarray(sets[1])
    clf = concepts.fit_linear(pos, neg)
    mask = held_out(30, 1 / 3)
    assert mask.sum() == 10 and mask[1::3].all()
    a = np.concatenate([pos[mask], neg[mask]])
    want = np.mean((a @ np.asarray(clf.weight) + float(clf.bias) > 0) == np.r_[[1] * 10, [0] * 10])
    np.testing.assert_allclose(float(clf.accuracy), want)
    # Refitting on the held-out examples does change the boundary (they were not used).
    other = concepts.fit_linear(np.concatenate([pos[~mask], pos[mask][:1]]), neg)
    assert not np.allclose(other.weight, clf.weight)
    with pytest.warns(RuntimeWarning, match="held-out accuracy"):
        concepts.tcav(_wide_model, sets[2], 0, site="wide", concept=sets[0], randoms=sets[1:])


def test_padded_fit_equals_the_unpadded_fit():
    pos, neg = _relu_features(2, n=37, d=64)
    pos, neg = jnp.asarray(pos), jnp.asarray(neg[:29])
    kw = dict(l2=1e-3, steps=100, holdout=1 / 3)
    exact = fit_rows(pos, neg, rows=66, **kw)
    for rows in (80, 128):
        padded = fit_rows(pos, neg, rows=rows, **kw)
        np.testing.assert_allclose(padded.weight, exact.weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(padded.bias, exact.bias, rtol=1e-5, atol=1e-6)
        assert float(padded.accuracy) == float(exact.accuracy)


def test_tcav_compiles_the_fit_once_for_sets_of_many_sizes():
    # Was one compilation (about 3 s) per distinct pair size: 12 for these 6 random sets.
    # 11 features: no other test fits them, so every compilation here is new.
    data = np.random.default_rng(3).normal(size=(300, 11)).astype(np.float32)
    sets = [jnp.asarray(data[:40])]
    start = 40
    for size in range(30, 46, 3):
        sets.append(jnp.asarray(data[start:start + size]))
        start += size
    before = _fit._cache_size()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        concepts.tcav(_wide_model, sets[0], 0, site="wide", concept=sets[0], randoms=sets[1:])
    assert _fit._cache_size() - before == 1
