"""The demo section runs in quick mode on the default model and reports its numbers."""

import dataclasses
import functools

import pytest

from jaxplain.subnet import _demo
from jaxplain.subnet._demo import demo_section


def test_demo_section(demo_context, monkeypatch):
    calls = []
    real = _demo.subnet.extract
    monkeypatch.setattr(_demo.subnet, "extract", lambda *a, **k: calls.append(k) or real(*a, **k))
    metrics, evaluate = [], _demo.subnet.evaluate
    monkeypatch.setattr(_demo.subnet, "evaluate",
                        lambda *a, **k: metrics.append(evaluate(*a, **k)) or metrics[-1])
    section = demo_section(demo_context)
    assert calls[0]["progress"] is False          # the default DemoContext shows nothing
    m = metrics[0]   # the 2-class accuracies side by side, both with the arg-max over 2 classes
    assert (f"{100 * m['unseen_accuracy_restricted']:.1f}% (full net, the same way: "
            f"{100 * m['unseen_accuracy_full_restricted']:.1f}%)") in section.text
    assert not section.failed
    assert "units" in section.text and "agreement" in section.text
    assert [type(i).__name__ for i in section.items] == ["Table", "Figure", "Figure"]


class _Stop(Exception):
    pass


def test_demo_section_shows_the_optimisation_when_the_cli_shows_progress(demo_context,
                                                                        monkeypatch):
    from tqdm.auto import tqdm

    calls = []

    def record(*args, **kwargs):
        calls.append(kwargs)
        raise _Stop   # stop here: only the arguments are checked

    monkeypatch.setattr(_demo.subnet, "extract", record)
    # What the jaxplain CLI passes (cli._report).
    ctx = dataclasses.replace(demo_context, progress=functools.partial(tqdm, leave=False))
    with pytest.raises(_Stop):
        demo_section(ctx)
    assert calls[0]["progress"] is True
