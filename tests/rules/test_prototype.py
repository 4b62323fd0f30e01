"""Prototyping with rule neuron groups: the objective of a rule's group, rendered on digits."""

import jax
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.rules import Rule, rule_objective
from tests.rules.test_binarize import _tiny_cnn


def _rule(head, tail, head_layer="conv", tail_layer="fc"):
    one = np.array(1)
    return Rule(head=np.array(head), tail=np.array(tail), support=one, usage=one, min_hits=one,
                confidence=np.array(1.0), gain=np.array(-1.0), head_layer=head_layer,
                tail_layer=tail_layer)


def test_objective_sums_the_group_activations():
    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 8, 8, 1)))
    conv, dense = jp.core.relu_sites(f, x[:2])
    logits, acts = jp.capture(f, [conv, dense])(x)
    c, d = np.asarray(acts[conv]), np.asarray(acts[dense])          # (5, 4, 4, 4), (5, 6)
    value = lambda obj: float(obj(acts, logits, x))
    rule = _rule([1, 3], [0, 2, 5])
    sites = {"conv": conv, "fc": dense}
    tail = d[:, [0, 2, 5]].sum()
    head = c.mean(axis=(1, 2))[:, [1, 3]].sum()                     # filters: mean over space
    assert value(rule_objective(rule, sites)) == pytest.approx(tail, rel=1e-5)
    assert value(rule_objective(rule, sites, part="head")) == pytest.approx(head, rel=1e-5)
    assert value(rule_objective(rule, sites, part="both")) == pytest.approx(head + tail, rel=1e-5)
    # Locality items are single (position, filter) neurons of the flattened (h, w, c) map.
    local = _rule([5, 17, 40], [1], head_layer="conv_local")
    sites = {"conv_local": conv, "fc": dense}
    expected = sum(c[:, r, q, k].sum() for r, q, k in zip(*np.unravel_index([5, 17, 40],
                                                                           (4, 4, 4))))
    obj = rule_objective(local, sites, part="head", layouts={"conv_local": (4, 4, 4)})
    assert value(obj) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="part"):
        rule_objective(rule, sites, part="tails")
    with pytest.raises(ValueError, match="no entry"):
        rule_objective(rule, {"fc": dense}, part="head")
    with pytest.raises(ValueError, match="layouts"):
        rule_objective(local, sites, part="head", layouts={"conv_local": (2, 2, 2)})



def test_a_locality_group_renders_and_raises_its_neurons():
    """render refused the group's (coordinates, items) positions: 'must have 2 coordinate(s)'."""
    from jaxplain.visualize import render

    f, _, _ = _tiny_cnn()
    local = _rule([5, 17, 40], [1], head_layer="conv_local")  # at the ReLU's input: never dead
    obj = rule_objective(local, {"conv_local": "conv", "fc": "relu_1"}, part="head",
                         layouts={"conv_local": (4, 4, 4)})
    out = render(f, obj, key=jax.random.key(0), shape=(1, 8, 8, 1), steps=16)
    start = render(f, obj, key=jax.random.key(0), shape=(1, 8, 8, 1), steps=1)
    assert float(out.value) > float(start.value)

def test_rendered_group_turns_on_its_rule_tail(digits_model):
    # The prototype of a rule's tail drives (nearly) all of the group above its binarization
    # threshold at once; a control group of as many other units does not.
    from jaxplain.rules import mine
    from jaxplain.rules._demo import rule_layers
    from jaxplain.visualize import channel, render

    _, _, f, digits = digits_model
    x = np.asarray(digits.x_train[:400])
    layers, (conv, dense), bins = rule_layers(f, x)
    rules = mine(layers, k_tail=16, beam=16, k_head=8, max_rules=1, batch_size=32)
    rule = rules.rules[0]
    tail = np.asarray(rule.tail)
    others = np.setdiff1d(np.arange(layers[dense].shape[1]), tail)[: len(tail)]
    group = rule_objective(rule, {conv: conv, dense: dense})
    out = render(f, [group, channel(dense, others)], key=jax.random.key(0), shape=(1, 8, 8, 1),
                 steps=128)
    _, acts = jp.capture(f, [dense])(out.images[:, 0])
    on = (np.asarray(acts[dense])[:, tail] > bins[dense].thresholds[tail]).mean(axis=1)
    assert on[0] >= 0.9 and on[1] <= on[0] - 0.5, on
