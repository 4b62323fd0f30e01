"""The public names of the design card resolve after a plain ``import jaxplain``."""

import json
import subprocess
import sys

import pytest

PUBLIC = {
    "": ["sites", "capture", "intervene", "rewrite_backward", "as_function", "Site", "clear_caches"],
    "attribution": ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad",
                    "deeplift", "guided_backprop", "occlusion", "feature_ablation",
                    "shapley_sampling", "lrp", "grad_cam"],
    "lrp": ["Epsilon", "ZPlus", "AlphaBeta", "ZBox", "Flat", "WSquare", "Gamma", "Composite"],
    "rules": ["binarize", "mine"],
    "subnet": ["extract", "apply"],
    "pathways": ["select", "pathway_gradient"],
    "data": ["load_digits", "pretrained", "digits_function", "DigitsCNN"],
    "report": ["Section", "write_report", "DemoContext"],
    "core": ["select", "relu_sites", "LinearLayer", "cpu_friendly", "mixes_batch",
             "BatchMixingWarning", "ChangedWeightsWarning", "StochasticModelWarning"],
}


def test_public_names_resolve_in_a_fresh_interpreter():
    # A fresh interpreter: here, other tests have already imported the subpackages.
    code = f"""
import json, jaxplain
missing = [f"{{p}}.{{n}}" for p, names in {PUBLIC!r}.items()
           for n in names if not hasattr(getattr(jaxplain, p) if p else jaxplain, n)]
print(json.dumps(missing))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_unknown_attribute_is_an_attribute_error():
    import jaxplain

    with pytest.raises(AttributeError, match="no attribute 'atribution'"):
        jaxplain.atribution  # noqa: B018
    assert {"attribution", "sites"} <= set(dir(jaxplain))


def test_the_namespace_holds_only_the_api_and_the_subpackages():
    # A fresh interpreter: here, other tests may have imported modules such as jaxplain.cli.
    code = """
import json, jaxplain
names = sorted(n for n in dir(jaxplain) if not n.startswith("_"))
print(json.dumps([names, hasattr(jaxplain, "importlib"), callable(jaxplain.pathways.select)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, leaked, lazy = json.loads(out.stdout.strip().splitlines()[-1])
    import jaxplain

    assert set(names) == set(PUBLIC[""]) | set(jaxplain._SUBPACKAGES)  # no helper module leaks
    assert not leaked and lazy  # and the subpackages still load on first use
