"""Fidelity, accuracy and sparsity metrics against a float64 NumPy transcription."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from tests.subnet import _nets
from tests.subnet.test_equivalence import _subnetwork

SITES = ("stem", "conv_a", "conv_b")


def _pruned():
    f = _nets.residual_net(_nets.residual_params())
    x, _ = _nets.region((2, 7), per_class=12)
    rng = np.random.default_rng(0)
    masks = {n: jnp.asarray(rng.random(8) < 0.6) for n in SITES}
    scores = {n: jnp.asarray(rng.uniform(0.2, 1.5, 8), jnp.float32) for n in SITES}
    gates = {n: jnp.asarray(rng.uniform(0.5, 1.0), jnp.float32) for n in SITES}
    return f, x, _subnetwork(SITES, 8, masks=masks, scores=scores, gates=gates)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _reference(f, sub, x, labels, classes):
    full = np.asarray(f(x), np.float64)
    mult = {n: np.asarray(m) for n, m in sub.multipliers().items()}
    pruned = np.asarray(subnet.apply(f, sub)(x), np.float64)
    logp, logq = _log_softmax(full), _log_softmax(pruned)
    restricted, restricted_full = np.full_like(pruned, -np.inf), np.full_like(full, -np.inf)
    restricted[:, list(classes)] = pruned[:, list(classes)]
    restricted_full[:, list(classes)] = full[:, list(classes)]
    return {
        "agreement": np.mean(full.argmax(-1) == pruned.argmax(-1)),
        "kl": np.mean(np.sum(np.exp(logp) * (logp - logq), -1)),
        "accuracy": np.mean(pruned.argmax(-1) == labels),
        "accuracy_full": np.mean(full.argmax(-1) == labels),
        "accuracy_restricted": np.mean(restricted.argmax(-1) == labels),
        "accuracy_full_restricted": np.mean(restricted_full.argmax(-1) == labels),
    }, mult


def test_fidelity_matches_the_numpy_transcription():
    f, x, sub = _pruned()
    labels = np.random.default_rng(1).choice([0, 2], size=x.shape[0])
    expected, mult = _reference(f, sub, x, labels, (0, 2))
    assert any(np.any(m == 0) for m in mult.values())  # some units really are removed
    fid = subnet.fidelity(f, sub, x, labels, classes=(0, 2))
    assert expected["agreement"] < 1.0 or expected["kl"] > 1e-4  # the pruning changes f
    for name, value in expected.items():
        np.testing.assert_allclose(float(getattr(fid, name)), value, rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_evaluate_reports_sparsity_and_both_sets_together():
    f, x, sub = _pruned()
    unseen, _ = _nets.region((2, 7), per_class=12, offset=12)
    m = subnet.evaluate(f, sub, x, unseen)
    kept = sum(int(np.sum(np.asarray(sub.masks[n]))) for n in SITES)
    assert (m["kept_units"], m["total_units"]) == (kept, 24)
    assert (m["kept_layers"], m["total_layers"]) == (len(sub.kept_layers), 3)
    np.testing.assert_allclose(m["removed"], 1 - kept / 24)
    for prefix, data in (("region", x), ("unseen", unseen)):
        expected, _ = _reference(f, sub, data, np.zeros(data.shape[0], int), (0,))
        np.testing.assert_allclose(m[f"{prefix}_agreement"], expected["agreement"], atol=1e-6)
        np.testing.assert_allclose(m[f"{prefix}_kl"], expected["kl"], rtol=1e-4, atol=1e-6)
        assert np.isnan(m[f"{prefix}_accuracy"])  # no labels given


def test_restricted_accuracy_has_a_full_net_counterpart_to_compare_with():
    # A sub-network keeping every unit is the full net: its 2-class accuracy must equal the
    # full net's 2-class accuracy (the report once set it beside the all-class one instead).
    f = _nets.residual_net(_nets.residual_params())
    x, _ = _nets.region((2, 7), per_class=12)
    labels = np.random.default_rng(1).choice([0, 1], size=x.shape[0])  # f has 3 outputs
    m = subnet.evaluate(f, _subnetwork(SITES, 8), x, y_region=labels, classes=(0, 1))
    assert m["region_accuracy_restricted"] == m["region_accuracy_full_restricted"]
    assert m["region_accuracy_full"] == 0 < m["region_accuracy_full_restricted"]  # f says 2


def test_bad_labels_are_refused():
    f, x, sub = _pruned()
    with pytest.raises(ValueError, match="labels"):
        subnet.fidelity(f, sub, x, np.zeros(3, int))
    with pytest.raises(ValueError, match="classes needs labels"):
        subnet.fidelity(f, sub, x, classes=(0, 1))


def test_labels_and_classes_the_model_does_not_have_are_refused():
    # JAX would clamp class 10 to class 9 in the mask, and a label no output can take makes
    # the accuracies silently 0: both are errors naming the model's classes.
    f, x, sub = _pruned()
    k = f(x).shape[-1]
    labels = np.zeros(x.shape[0], int)
    with pytest.raises(ValueError, match=rf"classes must be classes of the model, 0 to {k - 1}"):
        subnet.fidelity(f, sub, x, labels, classes=(0, k))
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        subnet.fidelity(f, sub, x, labels, classes=(-1, 0))
    with pytest.raises(ValueError, match=rf"labels must be classes .* got \[{k}\]"):
        subnet.fidelity(f, sub, x, np.full(x.shape[0], k))
    with pytest.raises(TypeError, match="integer"):
        subnet.fidelity(f, sub, x, labels + 0.5)
    with pytest.raises(ValueError, match="labels must be classes"):
        subnet.evaluate(f, sub, x, x, y_region=labels, y_unseen=np.full(x.shape[0], k + 3))
    with pytest.raises(ValueError, match="classes must be classes"):
        subnet.evaluate(f, sub, x, classes=(0, k + 1))  # even where no labels use them
    assert float(subnet.fidelity(f, sub, x, labels, classes=(0, k - 1)).accuracy_full) >= 0
