"""The rules demo section on the digits CNN (quick mode)."""

import numpy as np


def test_demo_section_mines_class_specific_rules(demo_context, monkeypatch):
    from jaxplain.report import Section
    from jaxplain.rules import _demo

    calls = []
    real = _demo.mine
    monkeypatch.setattr(_demo, "mine", lambda *a, **k: calls.append(k) or real(*a, **k))
    section = _demo.demo_section(demo_context)
    assert isinstance(section, Section)
    assert "rules compress the activations" in section.text
    assert calls[0]["progress"] is False          # the default DemoContext shows nothing


def test_demo_section_shows_the_search_when_the_cli_shows_progress(demo_context, monkeypatch):
    import dataclasses
    import functools

    from tqdm.auto import tqdm

    from jaxplain.rules import _demo

    calls = []
    real = _demo.mine
    monkeypatch.setattr(_demo, "mine", lambda *a, **k: calls.append(k) or real(*a, **k))
    # What the jaxplain CLI passes (cli._report).
    ctx = dataclasses.replace(demo_context, progress=functools.partial(tqdm, leave=False))
    _demo.demo_section(ctx)
    assert calls[0]["progress"] is True


def test_digits_rules_have_class_structure(digits_model):
    from jaxplain.rules import mine, specificity
    from jaxplain.rules._demo import rule_layers

    _, _, f, digits = digits_model
    x, y = np.asarray(digits.x_train[:400]), np.asarray(digits.y_train[:400])
    layers, (conv, dense), bins = rule_layers(f, x)
    assert bins[conv].items.shape == (400, 16) and bins[dense].items.shape == (400, 64)
    rules = mine(layers, labels=y, k_tail=16, beam=16, k_head=8, max_rules=4, batch_size=32)
    assert len(rules) >= 1 and rules.compression < 100.0
    # Rules are far more class-concentrated than the class prior (max share ~10%).
    assert specificity(rules).max() > 0.5


def test_no_rule_is_called_both_most_specific_and_most_shared():
    from jaxplain.rules._demo import specificity_text

    # One rule (or all equally specific): it is the most specific, and no rule is shared.
    text = specificity_text(["A -> B"], [1.0])
    assert "Most class-specific rule: A -> B (100%" in text and "Most shared" not in text
    assert text.startswith("1 of 1 rules have at least 90%") and "0 less than 60%" in text
    text = specificity_text(["A", "B", "C"], [0.95, 0.7, 0.75])
    assert "Most class-specific rule: A (95%" in text and "Most shared" not in text
    # Shared rules are named only when below the threshold; the most specific one apart.
    text = specificity_text(["A", "B", "C"], [0.95, 0.4, 0.75])
    assert "Most class-specific rule: A (95%" in text and "Most shared: B (40%" in text
    assert "1 of 3 rules" in text and "1 less than 60%" in text
    # Every rule shared: none is called class-specific.
    text = specificity_text(["A", "B"], [0.5, 0.3])
    assert "Most class-specific" not in text and "Most shared: B (30%" in text


def test_a_model_with_one_relu_gets_a_note_not_a_failure():
    # An MLP with one hidden layer (getting_started.md's mymlp) failed the section with a
    # ValueError, so `jaxplain explain` on it exited with status 1.
    import jax
    import jax.numpy as jnp
    import pytest

    from jaxplain.report import DemoContext
    from jaxplain.report._user import ReportData
    from jaxplain.rules._demo import demo_section, rule_layers

    w1, w2 = jnp.ones((5, 4)), jnp.ones((4, 3))
    f = lambda x: jax.nn.relu(x @ w1) @ w2  # noqa: E731
    x, y = np.zeros((6, 5), np.float32), np.zeros(6, int)
    ctx = DemoContext(model=f, variables=None, f=f, data=ReportData(x, y, x, y),
                      key=jax.random.key(0), quick=True, noun="examples")
    section = demo_section(ctx)
    assert not section.failed and not section.items
    assert section.text == ("ExplaiNN rules are mined between two ReLU sites; the model has 1 "
                            "(relu), so they do not apply to this model.")
    with pytest.raises(ValueError, match=r"two ReLU sites; the model has 0 \(none\)"):
        rule_layers(lambda x: x @ w1, x)


def test_rules_figure_titles_read_as_sizes_and_histograms_have_axis_labels():
    import types

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxplain.rules._demo import rules_figure
    from jaxplain.rules._ruleset import Rule, rule_rows

    rng = np.random.default_rng(0)
    layers = {"conv": rng.random((40, 6)) < 0.5, "fc": rng.random((40, 12)) < 0.5}
    labels = np.arange(40) % 3
    rules = [Rule(head=np.array(h), tail=np.array(t), support=np.array(0), usage=np.array(0),
                  min_hits=np.array(1), confidence=np.array(0.0), gain=np.array(0.0),
                  head_layer="conv", tail_layer="fc") for h, t in [([1], list(range(10))),
                                                                  ([0, 2], [4, 5])]]
    fig = rules_figure(types.SimpleNamespace(rules=rules), layers, np.zeros((40, 4, 4, 1)),
                       labels)
    top, bottom = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in top] == ["rule 0\n|X|=1 -> |Y|=10", "rule 1\n|X|=2 -> |Y|=2"]
    assert all(ax.get_xlabel() == "class" for ax in bottom) and bottom[0].get_ylabel()
    # each histogram counts the rows using its rule, by class
    for ax, rule in zip(bottom, rules):
        heights = [p.get_height() for p in ax.patches]
        assert heights == list(np.bincount(labels[rule_rows(rule, layers)], minlength=3))
    plt.close(fig)
