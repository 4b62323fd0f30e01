"""Tiny hand-built networks with planted structure for the NeuroChains tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits


def conv(x, w, b):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b


def region(classes=(0, 1), per_class=10, offset=0):
    """``per_class`` 8x8 digits of each class (float32 NHWC in [0, 1]) and their labels."""
    d = load_digits()
    xs, ys = [], []
    for c in classes:
        idx = np.flatnonzero(d.target == c)[offset:offset + per_class]
        xs.append(d.images[idx] / 16.0)
        ys.append(d.target[idx])
    x = np.concatenate(xs)[..., None].astype(np.float32)
    return jnp.asarray(x), np.concatenate(ys)


def planted_params(x, seed=0, channels=24, planted=(0, 1), eps=0.0):
    """Three 3x3 conv layers and a 2-class head in which only the ``planted`` channels of each
    layer carry the signal: weights from the other channels into planted channels and into the
    head are ``eps`` times noise (exactly 0 by default). The head compares the two planted
    channels of the last layer, with a bias that splits the region ``x`` into halves, so each
    planted chain is needed."""
    rng = np.random.default_rng(seed)
    planted = np.asarray(planted)
    other = np.setdiff1d(np.arange(channels), planted)
    p = {}
    fan_in = 1
    for i in (1, 2, 3):
        w = rng.normal(size=(3, 3, fan_in, channels)) * np.sqrt(2.0 / (9 * fan_in))
        if i > 1:
            w[:, :, other[:, None], planted[None, :]] *= eps
            w[:, :, planted[:, None], planted[None, :]] = np.abs(
                w[:, :, planted[:, None], planted[None, :]]) * 4.0
        p[f"w{i}"] = w.astype(np.float32)
        p[f"b{i}"] = (0.05 * rng.normal(size=channels)).astype(np.float32)
        fan_in = channels
    head = eps * rng.normal(size=(channels, 2))
    head[planted[0]] = (4.0, -4.0)
    head[planted[1]] = (-4.0, 4.0)
    p["head"] = head.astype(np.float32)
    p["bias"] = np.zeros(2, np.float32)
    logits = np.asarray(planted_net(p)(x))
    split = np.median(logits[:, 0] - logits[:, 1])
    p["bias"] = np.asarray([-split / 2, split / 2], np.float32)
    return p


def planted_net(p):
    """``f(x)``: conv1 -> relu -> conv2 -> relu -> conv3 -> relu -> mean pool -> head."""
    p = jax.tree.map(jnp.asarray, p)

    def f(x):
        h = x
        for i in (1, 2, 3):
            with jax.named_scope(f"conv{i}"):
                h = conv(h, p[f"w{i}"], p[f"b{i}"])
            h = jax.nn.relu(h)
        h = jnp.mean(h, axis=(1, 2))
        with jax.named_scope("head"):
            return h @ p["head"] + p["bias"]

    return f


@functools.cache
def residual_params(seed=1, channels=8, zero_branch=False):
    rng = np.random.default_rng(seed)
    p = {"w0": rng.normal(size=(3, 3, 1, channels)) * 0.5,
         "wa": rng.normal(size=(3, 3, channels, channels)) * 0.2,
         "wb": rng.normal(size=(3, 3, channels, channels)) * 0.2,
         "head": rng.normal(size=(channels, 3))}
    if zero_branch:
        p["wb"] = np.zeros_like(p["wb"])
    return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}


def residual_net(p):
    """``f(x)``: stem -> relu -> block (relu(x + conv_b(relu(conv_a(x))))) -> pool -> head."""

    def f(x):
        with jax.named_scope("stem"):
            h = conv(x, p["w0"], 0.0)
        h = jax.nn.relu(h)
        with jax.named_scope("conv_a"):
            b = conv(h, p["wa"], 0.0)
        b = jax.nn.relu(b)
        with jax.named_scope("conv_b"):
            b = conv(b, p["wb"], 0.0)
        h = jax.nn.relu(h + b)
        return jnp.mean(h, axis=(1, 2)) @ p["head"]

    return f


@functools.cache
def planted(eps=0.0):
    """``(f, x, params)`` for the planted network on a 2 x 10 digits region (cached, so the
    tests share compiled code)."""
    x, _ = region()
    params = planted_params(np.asarray(x), eps=eps)
    return planted_net(params), x, params


PLANTED = {"conv1": (0, 1), "conv2": (0, 1), "conv3": (0, 1)}
SITES = ("conv1", "conv2", "conv3")
FAST = {"steps": 500, "finetune_steps": 200}
