"""The class activation map (CAM) family: a convolutional site's channels, weighted per class.

Every method here computes ``relu(sum_c w_c A_c)`` at a site ``A`` of shape ``(n, h, w, c)``
(channels last, as the kernel presents every site) and resizes it to the input; they differ in
the channel weights ``w_c``:

* :func:`grad_cam`: the spatial mean of the gradient (and :func:`guided_grad_cam`, guided
  backpropagation times that map);
* :func:`grad_cam_plus_plus`: the positive gradients weighted pixel by pixel with Grad-CAM++'s
  closed-form coefficients;
* :func:`score_cam`: no gradient; the increase of the target's probability (or logit) when
  the input is masked by each channel's upsampled, normalized map.

Channels-first models work unchanged: the site is read channels-last and the map is put back
on the input's channel axis (``(n, 1, H, W)`` for NCHW inputs). An input without a channel
axis, a waveform ``(n, T)`` or grey images ``(n, H, W)`` that the model gives one itself
(``x[..., None]``), gets a map shaped like it. The weights and the map are
computed in float32 at least from the site's values and gradients, and the map comes back in
`x`'s dtype, resized or not (the site's dtype for the token ids that Grad-CAM and Grad-CAM++
take: they differentiate at the site only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks
from jaxplain.attribution._modified import Guided, rule_gradient
from jaxplain.attribution._site import (INTERPOLATIONS, _activation, _check_site, _result_dtype,
                                        _site_gradient, _site_name, check_layout, upsample)
from jaxplain.core._channels import image_channel_axis
from jaxplain.core._outputs import as_probabilities, probability_as_given

NORMALIZATIONS = ("softmax", None)
SCORES = ("probability", "logit")


def _cam_arguments(f, x, target, site, resize: bool, method: str = "grad_cam") -> tuple:
    """The CAM methods' checks: ``(x, target, channel axis of x, site name)`` (a glob of one
    match resolved, so that both spellings share one compiled program), the axis None when `x` has
    none (a site with one more axis than `x`, whose first convolution reads it through an added
    axis, ``w[..., None]``). The methods that only differentiate at the site (grad_cam,
    grad_cam_plus_plus) take token ids as well."""
    ids = method in ("grad_cam", "grad_cam_plus_plus")
    x, t = (_common.check_site_arguments if ids else _common.check_arguments)(f, x, target)
    site = _site_name(f, x, site)
    shape = _check_site(f, x, site)
    if len(shape) < 3:
        raise ValueError(f"{method} needs a site with spatial axes (n, h, w, c); site {site!r} has "
                         f"shape {shape}")
    check_layout(f, x, site, method)
    channels = image_channel_axis(f, x)
    if channels is None and len(shape) == x.ndim + 1:
        return x, t, None, site
    if method == "score_cam" and len(shape) != x.ndim:
        # its masks are the site's channels upsampled to the input, whatever `resize` says
        raise ValueError(f"score_cam masks the input with each of the site's channels upsampled "
                         f"to the input's spatial shape, so it needs a spatial site with the "
                         f"input's layout, (n, *spatial, c) with as many axes as x "
                         f"{tuple(x.shape)}; got site {site!r} of shape {shape}"
                         + ("" if resize else " (resize=False only keeps the returned map at "
                            "the site's size; the masks are upsampled all the same)")
                         + "; on a token site, grad_cam and grad_cam_plus_plus with resize=False "
                         "return the map over the tokens")
    if resize and len(shape) != x.ndim:
        fix = "; pass resize=False" if method in ("grad_cam", "grad_cam_plus_plus") else ""
        raise ValueError(f"{method} needs the site {site!r} (shape {shape}) to have as many "
                         f"axes as x {tuple(x.shape)} to resize its map{fix}")
    return x, t, x.ndim - 1 if channels is None else channels, site


def _input_size(x, channels: int | None) -> tuple:
    """The spatial shape of `x`: its axes but the batch and the channel axis (None: all)."""
    return x.shape[1:] if channels is None else x.shape[1:channels] + x.shape[channels + 1:]


def _on_channels(m, channels: int | None):
    """`m` ``(n, *spatial)`` with a size-1 axis at `channels` (None: as it is), to broadcast
    against `x`."""
    return m if channels is None else jnp.expand_dims(m, channels)


def _finish(cam, x, a, *, relu, resize, channels):
    """`cam` ``(n, h, w)`` through the ReLU and resized onto `x`'s spatial axes (None: kept),
    in `x`'s dtype (the site value `a`'s for token ids)."""
    if relu:
        cam = jnp.maximum(cam, 0)
    if resize is not None:
        cam = _on_channels(upsample(cam, _input_size(x, channels), resize), channels)
    return cam.astype(_result_dtype(x, a))


@functools.partial(jax.jit, static_argnames=("f", "site", "relu", "resize", "channels"))
def _grad_cam(f, x, target, *, site, relu, resize, channels):
    a = _activation(f, site, x)
    g = _common.widen(_site_gradient(f, site, x, target, a))
    spatial = tuple(range(1, a.ndim - 1))
    cam = (g.mean(axis=spatial, keepdims=True) * _common.widen(a)).sum(axis=-1)
    return _finish(cam, x, a, relu=relu, resize=resize, channels=channels)


def grad_cam(f: Callable, x: Float[ArrayLike, "batch *feature"],
             target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str, relu: bool = True,
             resize: bool = True) -> Float[Array, "batch ..."]:
    """Grad-CAM: a site's channels weighted by their spatially averaged gradient.

    ``cam = relu(sum_c mean_{hw}(d f_t / d A_c) * A_c)`` at a site ``A`` of shape
    ``(n, h, w, c)`` (NHWC; any number of spatial axes; an NCHW site, as in an Equinox model,
    is presented channels-last by the kernel, see :class:`jaxplain.Site`).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first (images NHWC, or NCHW for a model whose first convolution
        reads its channels on axis 1, or without a channel axis, ``(n, T)`` or ``(n, H, W)``,
        for a model that adds it); or the token ids of a model of ids (integers, not uint8),
        with a site after the embedding.
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: the name of a convolutional site (see :func:`jaxplain.sites`), e.g. ``"block1"``.
      relu: keep only the positive part, as in the paper (Captum's default is False).
      resize: bilinearly resize the map to the input's spatial shape and return
        ``(n, H, W, 1)`` (``(n, 1, H, W)`` for NCHW inputs, `x`'s shape for inputs without
        a channel axis; broadcastable to `x`); False returns the site's ``(n, h, w)``.

    Returns:
      The class activation map.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import grad_cam
      >>> def f(x):
      ...     with jax.named_scope("features"):             # a 2-channel site
      ...         feats = jnp.concatenate([x, -x], axis=-1)
      ...     return feats.mean(axis=(1, 2)) @ jnp.array([[1.0], [0.5]])
      >>> grad_cam(f, jnp.ones((1, 2, 2, 1)), 0, site="features", resize=False)
      Array([[[0.125, 0.125],
              [0.125, 0.125]]], dtype=float32)

    References:
      Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
      Localization. ICCV 2017.
    """
    x, t, channels, site = _cam_arguments(f, x, target, site, resize)
    return _grad_cam(f, x, t, site=site, relu=bool(relu), resize="bilinear" if resize else None,
                     channels=channels)


@functools.partial(jax.jit, static_argnames=("f", "site", "interpolation", "channels"))
def _guided_grad_cam(f, x, target, *, site, interpolation, channels):
    cam = _grad_cam(f, x, target, site=site, relu=True, resize=interpolation, channels=channels)
    guided = rule_gradient(f, x, target, rule=Guided())
    return (_common.widen(guided) * _common.widen(cam)).astype(x.dtype)


def guided_grad_cam(f: Callable, x: Float[ArrayLike, "batch *feature"],
                    target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str,
                    interpolation: str = "nearest") -> Float[Array, "batch *feature"]:
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map upsampled to the input.

    ``attr = guided_backprop(f, x, t) * up(relu(grad_cam at site))``, the map broadcast over the
    input's channels (as Captum's ``GuidedGradCam``: the ReLU is always applied, and the map is
    upsampled with PyTorch's ``"nearest"`` rule by default).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first (images NHWC, or NCHW for a model whose first convolution
        reads its channels on axis 1, or without a channel axis, ``(n, T)`` or ``(n, H, W)``,
        for a model that adds it).
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: the name of a convolutional site with as many spatial axes as `x` (see
        :func:`jaxplain.sites`), e.g. ``"block2"``.
      interpolation: ``"nearest"`` (Captum's default ``interpolate_mode``: output pixel ``i``
        reads map pixel ``floor(i * h / H)``) or ``"bilinear"`` (half-pixel centres, as
        PyTorch's ``align_corners=False`` and :func:`grad_cam`'s resize).

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import guided_grad_cam
      >>> def f(x):                                         # (n, 4, 4, 1) images
      ...     with jax.named_scope("features"):             # a 2x2 site, 1 channel
      ...         feats = jax.nn.relu(x.reshape(-1, 2, 2, 2, 2, 1).sum(axis=(2, 4)))
      ...     return feats.sum(axis=(1, 2)) @ jnp.array([[1.0]])
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1) - 4.0   # block sums -6, 2, 26, 34
      >>> guided_grad_cam(f, x, 0, site="features")[0, ..., 0]  # guided backprop: 0 or 1
      Array([[ 0.,  0.,  2.,  2.],
             [ 0.,  0.,  2.,  2.],
             [26., 26., 34., 34.],
             [26., 26., 34., 34.]], dtype=float32)

    References:
      Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
      Localization. ICCV 2017; Springenberg et al. Striving for Simplicity: The All
      Convolutional Net. ICLR workshop 2015.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
    x, t, channels, site = _cam_arguments(f, x, target, site, True, "guided_grad_cam")
    _model_checks.warn_if_no_relu(f, x, Guided(), "guided_grad_cam")
    return _guided_grad_cam(f, x, t, site=site, interpolation=interpolation, channels=channels)


def plus_plus_weights(a, g):
    """Grad-CAM++'s channel weights ``(n, 1, ..., 1, c)`` from a site's value `a` and the
    target's gradient `g` there (both ``(n, h, w, c)``), in float32 at least.

    ``g² / (2 g² + S g³)`` is taken as ``1 / (2 + S g)`` where ``g != 0`` (0 where either
    denominator is 0): no ``g³``, which would round and underflow first."""
    a, g = _common.widen(a), _common.widen(g)
    spatial = tuple(range(1, a.ndim - 1))
    denominator = 2 + a.sum(axis=spatial, keepdims=True) * g
    defined = (g != 0) & (denominator != 0)
    alpha = jnp.where(defined, 1 / jnp.where(defined, denominator, 1), 0)
    return (alpha * jnp.maximum(g, 0)).sum(axis=spatial, keepdims=True)


@functools.partial(jax.jit, static_argnames=("f", "site", "relu", "resize", "channels"))
def _grad_cam_plus_plus(f, x, target, *, site, relu, resize, channels):
    a = _activation(f, site, x)
    g = _site_gradient(f, site, x, target, a)
    cam = (plus_plus_weights(a, g) * _common.widen(a)).sum(axis=-1)
    return _finish(cam, x, a, relu=relu, resize=resize, channels=channels)


def grad_cam_plus_plus(f: Callable, x: Float[ArrayLike, "batch *feature"],
                       target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str,
                       relu: bool = True, resize: bool = True) -> Float[Array, "batch ..."]:
    """Grad-CAM++: a site's channels weighted by their positive gradients, pixel by pixel.

    With ``g = d S_t / d A`` (``S_t`` the target logit) at a site ``A`` of shape ``(n, h, w, c)``,

    ``alpha_ij^c = g_ij^c² / (2 g_ij^c² + (sum_ab A_ab^c) g_ij^c³)`` (0 where the denominator is 0),
    ``w_c = sum_ij alpha_ij^c relu(g_ij^c)``, ``cam = relu(sum_c w_c A^c)``.

    This is the paper's closed form for the exponential output ``Y = exp(S_t)`` (its eq. with
    the exponential, as widely implemented): for a network piecewise linear in the site (ReLU),
    the second and third derivatives of ``Y`` are ``exp(S_t) g²`` and ``exp(S_t) g³``, and
    ``exp(S_t)`` cancels in ``alpha``. The paper's weights use ``relu(dY/dA) = exp(S_t) relu(g)``;
    we drop that positive factor per example (as common implementations do), which scales
    each map by ``exp(-S_t)`` and changes nothing else. Where the gradient is uniform over a
    channel (a global-average-pooled head), ``w_c = N relu(g_c) / (2 + g_c sum A^c)`` over its
    ``N`` positions: a positive multiple of Grad-CAM's ``g_c`` when ``g_c > 0``, and 0
    (Grad-CAM: negative) when ``g_c < 0``.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first (images NHWC, or NCHW for a model whose first convolution
        reads its channels on axis 1, or without a channel axis, ``(n, T)`` or ``(n, H, W)``,
        for a model that adds it); or the token ids of a model of ids (integers, not uint8),
        with a site after the embedding.
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: the name of a convolutional site (see :func:`jaxplain.sites`), e.g. ``"block1"``.
      relu: keep only the positive part of the map, as in the paper.
      resize: bilinearly resize the map to the input's spatial shape and return
        ``(n, H, W, 1)`` (``(n, 1, H, W)`` for NCHW inputs, `x`'s shape for inputs without
        a channel axis); False returns the site's ``(n, h, w)``.

    Returns:
      The class activation map.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import grad_cam_plus_plus
      >>> def f(x):
      ...     with jax.named_scope("features"):             # a 2-channel site
      ...         feats = jnp.concatenate([x, -x], axis=-1)
      ...     return feats.mean(axis=(1, 2)) @ jnp.array([[1.0], [-0.5]])
      >>> x = jnp.array([0.0, 1.0, 3.0, 4.0]).reshape(1, 2, 2, 1)   # mean 2
      >>> grad_cam_plus_plus(f, x, 0, site="features", resize=False)  # w = 1 / (2 + 2), 0
      Array([[[0.  , 0.25],
              [0.75, 1.  ]]], dtype=float32)

    References:
      Chattopadhay, Sarkar, Howlader, Balasubramanian. Grad-CAM++: Generalized Gradient-based
      Visual Explanations for Deep Convolutional Networks. WACV 2018.
    """
    x, t, channels, site = _cam_arguments(f, x, target, site, resize, "grad_cam_plus_plus")
    return _grad_cam_plus_plus(f, x, t, site=site, relu=bool(relu),
                               resize="bilinear" if resize else None, channels=channels)


def masks(a, size: tuple, channels: int | None):
    """Score-CAM's masks: each channel of `a` ``(n, h, w, m)`` bilinearly upsampled to `size`
    and min-max normalized to [0, 1] per example (a constant map gives 0), as
    ``(n * m, ...)`` example-major rows (each example's channels together, so a batch split
    over devices stays split) with a size-1 axis at `channels` (None: none)."""
    m = jnp.moveaxis(a, -1, 1).reshape((-1,) + a.shape[1:-1])
    m = upsample(m, size, "bilinear")
    axes = tuple(range(1, m.ndim))
    low = m.min(axis=axes, keepdims=True)
    span = m.max(axis=axes, keepdims=True) - low
    m = jnp.where(span > 0, (m - low) / jnp.where(span > 0, span, 1), 0)
    return _on_channels(m, channels)


def _score(f, z, target, score):
    """The target's `score` at `z`, ``(n,)`` in float32 at least. ``"probability"`` reads an
    output row that is probabilities already as it is (:func:`as_probabilities`, within the
    tolerance of the model's dtype: a clipped softmax that patterns miss) and takes the softmax
    of any other, as the metrics do."""
    out = f(z)
    wide = as_probabilities(out) if score == "probability" else _common.widen(out)
    return jnp.take_along_axis(wide, target[:, None], axis=1)[:, 0]


def channel_scores(f, x, target, baseline, a, *, score, batch_size, channels):
    """``(s, s_b)``: the target's `score` (``"probability"`` or ``"logit"``) on the input masked
    by each channel of the site value `a` ``(n, h, w, c)``, ``b + M_c (x - b)``, shape
    ``(n, c)``; and on the baseline, ``(n,)``. The channels are folded into the batch,
    `batch_size` of them at a time."""
    n, k = a.shape[0], a.shape[-1]
    size = _input_size(x, channels)
    start = _common.widen(baseline)
    delta = _common.widen(x) - start

    def chunk(index):  # (m,) channel indices -> their scores, placed in an (n, c) array
        m = index.shape[0]
        mask = masks(_common.widen(a[..., index]), size, channels)
        z = (jnp.repeat(start, m, axis=0) + mask * jnp.repeat(delta, m, axis=0)).astype(x.dtype)
        s = _score(f, z, jnp.repeat(target, m), score).reshape(n, m)
        return jnp.zeros((n, k), s.dtype).at[:, index].set(s)

    s = _common.chunked_reduce(chunk, jnp.arange(k), batch_size)
    return s, _score(f, baseline, target, score)


@functools.partial(jax.jit, static_argnames=("f", "site", "score", "normalize", "relu", "resize",
                                             "batch_size", "channels"))
def _score_cam(f, x, target, baseline, *, site, score, normalize, relu, resize, batch_size,
               channels):
    a = _activation(f, site, x)
    s, s_b = channel_scores(f, x, target, baseline, a, score=score, batch_size=batch_size,
                            channels=channels)
    increase = s - s_b[:, None]
    w = jax.nn.softmax(increase, axis=-1) if normalize == "softmax" else increase
    w = w.reshape((w.shape[0],) + (1,) * (a.ndim - 2) + (w.shape[1],))
    cam = (_common.widen(a) * w).sum(axis=-1)
    return _finish(cam, x, a, relu=relu, resize=resize, channels=channels)


def score_cam(f: Callable, x: Float[ArrayLike, "batch *feature"],
              target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str,
              baseline: ArrayLike | None = 0.0, score: str = "probability",
              normalize: str | None = None, relu: bool = True, resize: bool = True,
              batch_size: int | None = None) -> Float[Array, "batch ..."]:
    """Score-CAM: a site's channels weighted by how much each one, used as a mask, keeps the class.

    Each channel ``A^c`` of a site ``(n, h, w, c)`` is upsampled bilinearly to the input's
    spatial shape and min-max normalized per example to ``M_c`` in [0, 1] (a constant map gives
    ``M_c = 0``); the input is blended with the baseline through it, ``x_c = b + M_c (x - b)``
    (``x * M_c`` for the default ``b = 0``; one mask for all the input's channels). Its weight
    starts from the paper's increase of confidence ``C_c = s_t(x_c) - s_t(b)``, where ``s_t``
    is the target's softmax probability (``score="probability"``) or its logit
    (``score="logit"``); then ``w = C`` (``normalize=None``) or ``w = softmax_c(C)`` over the
    channels (``normalize="softmax"``, where subtracting ``s_t(b)`` changes nothing), and
    ``cam = relu(sum_c w_c A^c)`` at the site, resized as :func:`grad_cam`'s map.

    The defaults, probabilities without normalization, are the paper's increase; a constant
    map's weight is then exactly 0. (The authors' released code takes ``p_t(x_c)`` without the
    baseline's ``p_t(b)`` and skips constant maps: its map adds ``p_t(b) sum_c A^c`` to ours
    before the ReLU.) ``score="logit",
    normalize="softmax"`` is the softmax over channels of the paper's algorithm listing and of
    pytorch-grad-cam. A softmax of probabilities is not offered as a default: increases in
    [-1, 1] give weights within a factor e² of each other, close to a class-blind sum of the
    channels. The map is not min-max normalized; scale it for display.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first (images NHWC, or NCHW for a model whose first convolution
        reads its channels on axis 1, or without a channel axis, ``(n, T)`` or ``(n, H, W)``,
        for a model that adds it).
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: the name of a convolutional site with as many spatial axes as `x` (see
        :func:`jaxplain.sites`), e.g. ``"block2"``.
      baseline: what a masked-out pixel becomes: a scalar or an array broadcastable to `x`.
      score: ``"probability"`` (the softmax over the classes; a model whose output is already
        a softmax or a sigmoid is read as it is, and so is any output row that is non-negative
        and sums to 1, ``jnp.clip(jax.nn.softmax(z), 1e-7, 1)``, as in the metrics; one output
        without a sigmoid is refused) or ``"logit"``.
      normalize: None, or ``"softmax"`` over the channels.
      relu: keep only the positive part of the map, as in the paper.
      resize: bilinearly resize the map to the input's spatial shape and return
        ``(n, H, W, 1)`` (``(n, 1, H, W)`` for NCHW inputs, `x`'s shape for inputs without
        a channel axis); False returns the site's ``(n, h, w)``. The masks are upsampled to
        the input either way.
      batch_size: the number of channels evaluated at once, each a batch of `x`'s size
        (None: all at once on GPU/TPU, on CPU as many as keep a pass in cache). Score-CAM calls `f`
        on one masked batch per channel.

    Returns:
      The class activation map.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import score_cam
      >>> def f(x):                                         # (n, 2, 2, 1) images
      ...     top_row = jnp.array([1.0, 0.0])[:, None, None]  # over (h, w, c)
      ...     with jax.named_scope("features"):             # channel 0 fires on the top row
      ...         feats = jnp.concatenate([x * top_row, x], axis=-1)
      ...     top = feats[..., 0].sum(axis=(1, 2))          # class 0 reads the top row only
      ...     return jnp.stack([top, jnp.zeros_like(top)], axis=1)
      >>> x = jnp.ones((1, 2, 2, 1))
      >>> cam = score_cam(f, x, 0, site="features", resize=False)
      >>> cam.round(3)                                      # C = p(top row kept) - p(b) = 0.38
      Array([[[0.381, 0.381],
              [0.   , 0.   ]]], dtype=float32)

    References:
      Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu. Score-CAM: Score-Weighted Visual
      Explanations for Convolutional Neural Networks. CVPR workshops 2020.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}; got {score!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
    x, t, channels, site = _cam_arguments(f, x, target, site, resize, "score_cam")
    b = _common.check_baseline(baseline, x)
    batch_size = _common.check_batch_size(batch_size)
    k = _check_site(f, x, site)[-1]
    c = min(batch_size or k, k)
    _common.check_batch_of(f, x, c * x.shape[0], f"x masked by {c} channels at a time",
                           instead="pass batch_size=1 (one channel at a time: batches of x's "
                           "size)")
    asked, instead = "score='probability'", "score='logit'"
    if score == "probability" and probability_as_given(f, x, asked, instead):
        score = "logit"  # the model's outputs are probabilities already: read them as they are
    return _score_cam(f, x, t, b, site=site, score=score, normalize=normalize, relu=bool(relu),
                      resize="bilinear" if resize else None,
                      batch_size=batch_size, channels=channels)
