"""A per-frame layer written ``x.reshape(n * T, ...)`` merges the batch axis with the time axis:
the kernel loses the batch axis there, and :func:`jaxplain.core._batch.lost_by` names that
reshape (and the ``jax.vmap`` spelling that keeps the axis) instead of blaming a loop, sort or
gather the model does not have."""

import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution import deeplift
from jaxplain.core._batch import KEEP_FIRST, LOST, MERGED, batch_axes, lost_by
from jaxplain.core._capture import program_of

_K = jax.random.split(jax.random.key(0), 4)
W2 = jax.random.normal(_K[0], (3, 3, 2, 4))  # per-frame conv, HWIO
W1 = jax.random.normal(_K[1], (3, 4, 6))  # temporal conv, WIO
WH = jax.random.normal(_K[2], (6, 3))
X = jax.random.normal(_K[3], (2, 3, 4, 4, 2))  # (n, T, H, W, C)


def frames(h):  # (m, H, W, C) -> (m, 4)
    h = jax.lax.conv_general_dilated(h, W2, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(h).mean(axis=(1, 2))


def head(h):  # (n, T, 4) -> (n, 3)
    h = jax.lax.conv_general_dilated(h, W1, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    return jax.nn.relu(h).mean(1) @ WH


def reshaped(x):  # the TimeDistributed spelling: (n, T, ...) -> (n * T, ...) and back
    n, t = x.shape[:2]
    return head(frames(x.reshape(n * t, *x.shape[2:])).reshape(n, t, 4))


def over_time(x):  # vmap over the time axis: JAX's conv rule merges (T, n) into one axis
    return head(jax.vmap(frames, in_axes=1, out_axes=1)(x))


def per_frame(x):  # the suggested fix: vmap over examples and frames
    return head(jax.vmap(jax.vmap(lambda fr: frames(fr[None])[0]))(x))


def _cause(f, site="relu"):
    program, site_map = program_of(f, X, unrolled=True, warn=False)
    states = batch_axes(program)
    ref = site_map.ids[site]
    assert states.get(ref) is None  # the kernel does lose the batch axis of the frames' ReLU
    return lost_by(program, states, ref)


def test_a_reshape_merging_batch_and_time_is_named_with_the_vmap_fix():
    cause, fix = _cause(reshaped)
    assert cause == MERGED and "x.reshape(n*T, ...)" in cause
    assert "jax.vmap" in fix and "examples" in fix


def test_vmap_over_the_time_axis_is_the_same_merge():
    assert _cause(over_time)[0] == MERGED


def test_other_losses_keep_the_generic_cause():
    sorted_batch = lambda x: jax.nn.relu(jnp.sort(x, axis=0))  # noqa: E731
    program, site_map = program_of(sorted_batch, X[:, 0, 0, 0], unrolled=True, warn=False)
    states = batch_axes(program)
    assert lost_by(program, states, site_map.ids["relu"]) == (LOST, KEEP_FIRST)


def test_the_suggested_fix_keeps_the_batch_and_deeplift_sums_to_the_gap():
    program, site_map = program_of(per_frame, X, unrolled=True, warn=False)
    assert site_map.ids["relu"] in program.depends
    t = jnp.array([0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = deeplift(per_frame, X, t)
    gap = (per_frame(X) - per_frame(jnp.zeros_like(X)))[jnp.arange(2), t]
    np.testing.assert_allclose(attr.sum((1, 2, 3, 4)), gap, rtol=1e-4, atol=1e-4)


def test_kernel_doc_lists_the_merging_reshape_among_what_loses_the_batch():
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "kernel.md").read_text()
    section = re.search(r"### Batch first\n(.*?)\n\*\*Models that mix", doc, flags=re.S)[1]
    assert "x.reshape(n * T, ...)" in section and "jax.vmap(jax.vmap(frame))" in section


def test_every_method_that_needs_the_batch_names_the_merging_reshape():
    """DeepLIFT, pathway selection and rule mining refuse the frames' ReLU of the reshape
    spelling with the cause and the vmap fix, not a loop, sort or gather the model lacks."""
    from jaxplain import pathways, rules

    calls = {"deeplift": lambda: deeplift(reshaped, X, 0),
             "pathways": lambda: pathways.select(reshaped, X, None, keep=0.5, sites="relu"),
             "rules": lambda: rules.activations(reshaped, X, ["relu", "relu_1"])}
    for name, call in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                call()
            except ValueError as err:
                message = str(err)
            else:
                raise AssertionError(f"{name} accepted a value without its batch axis")
        assert "x.reshape(n*T, ...)" in message and "jax.vmap(jax.vmap(frame))" in message, name
        assert LOST not in message, name
