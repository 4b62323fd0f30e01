"""Token-to-token explanations of transformers from their attention weights.

* :func:`attention_rollout`: the attention of every layer, mixed with the residual stream and
  multiplied through the layers (Abnar & Zuidema 2020);
* :func:`gradient_weighted_rollout`: the same product with each layer's attention weighted by
  its gradient for a class, positive part only (Chefer, Gur & Wolf 2021).

The attention weights are the model's softmax sites (``attn/softmax`` of a Flax attention
layer, see :func:`jaxplain.sites`), each ``(batch, heads, tokens, tokens)`` or
``(batch, tokens, tokens)``, read with ``capture`` and differentiated with ``intervene``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common
from jaxplain.attribution._site import site_gradients
from jaxplain.core import capture, sites as list_sites
from jaxplain.core._capture import selector_key
from jaxplain.core._select import select

_FUSIONS = {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}


def attention_sites(f: Callable, x, sites=None) -> tuple[str, ...]:
    """The self-attention weight sites of `f`, in program order.

    Args:
      f: the model.
      x: an example batch.
      sites: None (every softmax site of shape ``(batch, [heads...,] t, t)``), or a selector.

    Returns:
      Site names; ValueError when there are none, or a chosen site is not square in its last
      two axes, or the token counts differ between layers.
    """
    found = list_sites(f, x)
    if sites is None:
        names = tuple(s.name for s in found if s.op == "softmax" and len(s.shape) >= 3
                      and s.shape[-1] == s.shape[-2])
        if not names:
            raise ValueError("found no attention weights in f: no softmax site of shape "
                             "(batch, [heads,] tokens, tokens) (jax.nn.softmax over the last axis, "
                             "as Flax's attention layers call it). Pass sites=... to choose them.")
    else:
        names = select(found, selector_key(sites))
    by_name = {s.name: s for s in found}
    shapes = {by_name[n].shape for n in names}
    for name in names:
        shape = by_name[name].shape
        if len(shape) < 3 or shape[-1] != shape[-2] or shape[0] != x.shape[0]:
            raise ValueError(f"site {name!r} has shape {shape}; attention weights must be "
                             "(batch, [heads,] tokens, tokens) with as many queries as keys")
    if len({s[-1] for s in shapes}) > 1:
        raise ValueError(f"the attention sites have different token counts: {sorted(shapes)}")
    return names


def _fused(a, heads: str):
    """(n, [h...,] t, t) -> (n, t, t), fusing the heads (``jax.nn.dot_product_attention``'s
    weights are ``(n, groups, heads per group, t, t)``)."""
    return _FUSIONS[heads](a.reshape(a.shape[0], -1, *a.shape[-2:]), axis=1)


def _check_options(residual, heads):
    if heads not in _FUSIONS:
        raise ValueError(f"heads must be one of {sorted(_FUSIONS)}; got {heads!r}")
    if not 0.0 <= float(residual) <= 1.0:
        raise ValueError(f"residual must be in [0, 1]; got {residual}")


@functools.partial(jax.jit, static_argnames=("f", "sites", "residual", "heads"))
def _rollout(f, x, *, sites, residual, heads):
    _, acts = capture(f, list(sites))(x)
    rollout = None
    for name in sites:
        a = _fused(acts[name], heads)
        eye = jnp.eye(a.shape[-1], dtype=a.dtype)
        mixed = (1.0 - residual) * a + residual * eye
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def attention_rollout(f: Callable, x: Float[ArrayLike, "batch *feature"], *, sites=None,
                      residual: float = 0.5,
                      heads: str = "mean") -> Float[Array, "batch tokens tokens"]:
    """Attention rollout: how much each input token flows into each token of the last layer.

    Each layer's attention ``A`` (heads fused by `heads`) is mixed with the identity of the
    residual connection, ``Ã = (1 - residual) A + residual I`` with rows renormalised to 1,
    and the layers are multiplied in order: ``R = Ã_L ... Ã_2 Ã_1``. Row ``i`` of ``R`` is a
    distribution over the input tokens (e.g. the ``[CLS]`` row for a classifier).

    Args:
      f: the model; any JAX function with softmax sites (a Flax transformer through
        :func:`jaxplain.as_function`; scanned layers included).
      x: the inputs, batch first (e.g. ``(n, tokens, features)``).
      sites: the attention weight sites, in layer order; None: every self-attention softmax.
      residual: the weight of the identity (0.5 in the paper).
      heads: how heads are fused: ``"mean"`` (the paper), ``"max"`` or ``"min"``.

    Returns:
      ``(n, tokens, tokens)``: row = output token, column = input token.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import attention_rollout
      >>> def f(x):   # one attention layer over 3 tokens
      ...     p = jax.nn.softmax(x @ jnp.swapaxes(x, 1, 2))
      ...     return (p @ x).mean(axis=1)
      >>> r = attention_rollout(f, jnp.eye(3)[None])
      >>> bool(jnp.allclose(r.sum(axis=-1), 1.0))    # every row is a distribution
      True

    References:
      Abnar, Zuidema. Quantifying Attention Flow in Transformers. ACL 2020.
    """
    _common.check_function(f)
    x = _common.check_x(x, token_ids=True)  # nothing is differentiated: ids are fine
    _check_options(residual, heads)
    names = attention_sites(f, x, sites)
    return _rollout(f, x, sites=names, residual=float(residual), heads=heads)


@functools.partial(jax.jit, static_argnames=("f", "sites"))
def _gradient_rollout(f, x, target, *, sites):
    _, acts = capture(f, list(sites))(x)
    grads = site_gradients(f, sites, x, target, [acts[name] for name in sites])
    tokens = acts[sites[0]].shape[-1]
    relevance = jnp.broadcast_to(jnp.eye(tokens, dtype=x.dtype), (x.shape[0], tokens, tokens))
    for name, g in zip(sites, grads):
        weighted = _fused(jnp.maximum(g * acts[name], 0), "mean")
        relevance = relevance + weighted @ relevance
    return relevance


def gradient_weighted_rollout(f: Callable, x: Float[ArrayLike, "batch *feature"],
                              target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *,
                              sites=None) -> Float[Array, "batch tokens tokens"]:
    """Class-specific relevance between tokens from gradient-weighted attention.

    Starting from ``R = I``, each attention layer in order adds
    ``R <- R + mean_h[(dA ⊙ A)^+] R``, where ``A`` is the layer's attention and ``dA`` the
    gradient of the target logit with respect to it (Chefer et al.'s rule for self-attention).
    Row ``i`` of ``R`` minus the identity is the relevance of each input token for token ``i``
    (the ``[CLS]`` row for a classifier, or the mean over rows after mean pooling).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``, with softmax sites.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      sites: the attention weight sites, in layer order; None: every self-attention softmax.

    Returns:
      ``(n, tokens, tokens)``, non-negative, with ones on the diagonal and more.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import gradient_weighted_rollout
      >>> def f(x):   # one attention layer, logits from the mean token
      ...     p = jax.nn.softmax(x @ jnp.swapaxes(x, 1, 2))
      ...     return (p @ x).mean(axis=1)
      >>> r = gradient_weighted_rollout(f, jnp.eye(3)[None] * 2.0, 2)
      >>> int(jnp.argmax((r[0] - jnp.eye(3)).sum(axis=0)))   # token 2 carries class 2
      2

    References:
      Chefer, Gur, Wolf. Generic Attention-model Explainability for Interpreting Bi-Modal and
      Encoder-Decoder Transformers. ICCV 2021.
    """
    x, t = _common.check_arguments(f, x, target)
    names = attention_sites(f, x, sites)
    return _gradient_rollout(f, x, t, sites=names)
