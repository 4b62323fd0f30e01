"""Attributions at a site, by composing ``capture``/``intervene`` with gradients.

* the helpers of every site method: a site's value, the target's gradient there, and
  :func:`upsample`, which resizes maps (the CAM family, in :mod:`jaxplain.attribution._cam`,
  is built on them);
* :func:`activation_x_gradient`: unit (neuron/channel) attribution of a site to the output;
* :func:`layer_conductance`: conductance of a site's units along the IG path;
* :func:`layer_integrated_gradients`: integrated gradients of the model as a function of a
  site's value;
* :func:`site_output`: a site's units as a model's outputs, so that any input attribution
  method explains a chosen neuron instead of a logit.

As everywhere in :mod:`jaxplain.attribution`, the model runs in its own dtype, the methods'
arithmetic (quadrature, interpolation, sums) in float32 at least, and the result comes back in
`x`'s dtype, site-shaped or not. :func:`activation_x_gradient` and
:func:`layer_integrated_gradients` differentiate at the site only, so they also take the token
ids of a model of ids (integer `x`, not uint8), with the embedding as the site; their result is
then in the site's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common
from jaxplain.attribution._integrated import quadrature
from jaxplain.core import capture, intervene
from jaxplain.core._capture import OwnEdit, program_for
from jaxplain.core._channels import image_channel_axis
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._function_cache import per_function
from jaxplain.core._select import one_site


def _activation(f, site, x):
    """The value at `x` of the one site `site` picks: its name, or a glob of one match (a
    glob of several is refused, listing them)."""
    _, values = capture(f, site)(x)
    return values[one_site(tuple(values), site)]


def _site_name(f, x, site) -> str:
    """The one site `site` names at `x`: the name itself, or the single match of a glob; a
    ValueError lists the matches of a glob that picks several (or close names for none)."""
    if not isinstance(site, str):
        raise TypeError(f"site must be one site name (a str, see jaxplain.sites); got {site!r}")
    return one_site(program_for(f, x, [site])[2][0], site)


@per_function(maxsize_fallback=256)
def _site_value(f, site, shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.eval_shape(lambda z: _activation(f, site, z), jax.ShapeDtypeStruct(shape, dtype))


def _check_site(f, x, site) -> tuple:
    """The shape of `site`'s value at `x`, or a clear error (no site name or one glob match,
    no float values)."""
    site = _site_name(f, x, site)
    value = _site_value(f, site, tuple(x.shape), jnp.dtype(x.dtype))
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"site {site!r} holds {value.dtype} values, which have no gradient: pick "
                        "a site of floating-point values (for token ids, the embedding's)")
    return tuple(value.shape)


def check_layout(f, x, site: str, method: str) -> None:
    """Warn when the site `site` (a name or a glob of one match) has as many axes as `x` (3 or
    more) and no known channel axis while `x`'s channels are known and not last (an NCHW
    input): `method` then reads the site's last axis, a spatial one if the site kept the
    input's layout, as its channels."""
    spec = jax.ShapeDtypeStruct(tuple(x.shape), jnp.dtype(x.dtype))
    _, site_map, (names,) = program_for(f, spec, [site])
    found = {s.name: s for s in site_map.sites}.get(names[0] if len(names) == 1 else None)
    if found is None or found.channel_axis is not None or not 3 <= len(found.shape) == x.ndim:
        return
    axis = image_channel_axis(f, spec)
    if axis is not None and axis != x.ndim - 1:
        warnings.warn(f"{method}: the channel axis of site {site!r} (shape {found.shape}) is "
                      f"unknown (see jaxplain.sites), while x {tuple(x.shape)} keeps its "
                      f"channels on axis {axis}; the site's last axis is read as its channels, "
                      "which may be a spatial one. Pick a site after the first convolution, "
                      "or write the step before it so that it keeps the channel axis.",
                      UserWarning, stacklevel=3)


def _result_dtype(x, a) -> jnp.dtype:
    """`x`'s dtype, or the site value `a`'s where `x` holds token ids."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else a.dtype


def site_gradients(f, sites, x, target, activations) -> list:
    """d sum_i f(x)[i, t_i] / d value of each of `sites` (all shifted at once), shaped like
    `activations`, NaN in the examples whose target is not finite (CPU rewrites and NaN as in
    :func:`_common.target_gradient`)."""

    def out(deltas):
        shifted = intervene(f, {s: OwnEdit(_shifted, d) for s, d in zip(sites, deltas)})
        return _common.selected(cpu_friendly(shifted), x, target)

    return _common.selected_gradient(out, [jnp.zeros_like(a) for a in activations])


def _shifted(value, delta):
    """``value + delta``, the shift an argument of the compiled program (see ``OwnEdit``)."""
    return value + delta


def _site_gradient(f, site, x, target, activation):
    return site_gradients(f, [site], x, target, [activation])[0]


INTERPOLATIONS = ("nearest", "bilinear")


def upsample(cam: jax.Array, size: tuple, mode: str) -> jax.Array:
    """`cam` ``(n, h, w, ...)`` resized to ``(n, *size)``: ``"bilinear"`` with half-pixel
    centres (:func:`jax.image.resize`), ``"nearest"`` as PyTorch's ``interpolate(mode=
    "nearest")`` (Captum's default): output ``i`` reads input ``floor(i * h / H)``."""
    if mode == "bilinear":
        return jax.image.resize(cam, (cam.shape[0],) + tuple(size), "bilinear")
    for axis, (small, large) in enumerate(zip(cam.shape[1:], size), start=1):
        cam = jnp.take(cam, np.arange(large) * small // large, axis=axis)
    return cam


@functools.partial(jax.jit, static_argnames=("f", "site"))
def _activation_x_gradient(f, x, target, *, site):
    a = _activation(f, site, x)
    g = _site_gradient(f, site, x, target, a)
    return (_common.widen(a) * _common.widen(g)).astype(_result_dtype(x, a))


def activation_x_gradient(f: Callable,
                          x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
                          target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *,
                          site: str) -> Array:
    """Attribution of a site's units to the output: activation times gradient.

    ``attr = A * d f_t / d A`` at the site ``A``; summing over the spatial axes gives a
    channel attribution, e.g. ``attr.sum(axis=(1, 2))`` for NHWC sites.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first; or the token ids of a model of ids (integers, not uint8).
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: a site name (see :func:`jaxplain.sites`), or a glob that matches one, e.g. the
        embedding's for token ids.

    Returns:
      An array shaped like the site's value, in `x`'s dtype (the site's for token ids).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import activation_x_gradient
      >>> def f(x):
      ...     with jax.named_scope("hidden"):
      ...         h = jax.nn.relu(x * 2.0)
      ...     return h @ jnp.array([[1.0], [-1.0]])
      >>> activation_x_gradient(f, jnp.array([[1.0, 3.0]]), 0, site="hidden")
      Array([[ 2., -6.]], dtype=float32)

    References:
      Shrikumar et al. Not Just a Black Box. arXiv:1605.01713, 2016 (gradient x input, at a
      layer); Kokhlikyan et al. Captum. arXiv:2009.07896, 2020 (LayerGradientXActivation).
    """
    x, t = _common.check_site_arguments(f, x, target)
    site = _site_name(f, x, site)
    _check_site(f, x, site)
    return _activation_x_gradient(f, x, t, site=site)


def _path_arguments(f, x, target, site, baseline, steps, method, *, ids=False) -> tuple:
    """The checks of the site methods along the IG path: ``(x, target, baseline, site)``, the
    site by name (a glob resolved to its one match); with `ids`, `x` and the baseline may be
    token ids (the path then runs at the site only)."""
    x, t = (_common.check_site_arguments if ids else _common.check_arguments)(f, x, target)
    if (jnp.issubdtype(x.dtype, jnp.integer) and baseline is not None
            and not jnp.issubdtype(jnp.result_type(baseline), jnp.integer)):
        raise TypeError(f"baseline must be token ids like x (e.g. pad ids, jnp.full_like(x, "
                        f"pad_id)), whose site value starts the path; got dtype "
                        f"{jnp.result_type(baseline)}")
    b = _common.check_baseline(baseline, x)
    quadrature(method, steps)
    site = _site_name(f, x, site)
    _check_site(f, x, site)
    return x, t, b, site


@functools.partial(jax.jit, static_argnames=("f", "site", "steps", "method", "batch_size"))
def _layer_conductance(f, x, target, baseline, *, site, steps, method, batch_size):
    alphas, weights = quadrature(method, steps)
    start, direction = _common.widen(baseline), _common.widen(x) - _common.widen(baseline)

    def step(item):
        alpha, weight = item
        z = (start + alpha * direction).astype(x.dtype)
        a, da = jax.jvp(lambda v: _activation(f, site, v), (z,), (direction.astype(x.dtype),))
        return weight * _common.widen(_site_gradient(f, site, z, target, a)) * _common.widen(da)

    dtype = _common.wide(x.dtype)
    items = (jnp.asarray(alphas, dtype), jnp.asarray(weights, dtype))
    return _common.chunked_sum(step, items, batch_size).astype(x.dtype)


def layer_conductance(f: Callable, x: Float[ArrayLike, "batch *feature"],
                      target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str,
                      baseline=None, steps: int = 50, method: str = "gausslegendre",
                      batch_size: int | None = None) -> Array:
    """Conductance of a site's units: the IG path integral, taken through the site.

    ``cond_j = integral_0^1 (d f_t / d A_j)(A(z_a)) * d A_j(z_a) / d a  da`` along the straight
    path ``z_a = b + a (x - b)``, with the quadrature of :func:`integrated_gradients`. When all
    of the model's computation passes through the site, the units' conductances sum to the
    integrated gradients' total (both approximate ``f(x)_t - f(b)_t``).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: a site name (see :func:`jaxplain.sites`), or a glob that matches one.
      baseline: the reference input: None (zeros), a scalar, or an array broadcastable to `x`.
      steps: the number of quadrature points.
      method: the quadrature, as in :func:`integrated_gradients`.
      batch_size: the number of steps evaluated at once (None: all at once on GPU/TPU, on CPU as
        many as keep a pass in cache).

    Returns:
      An array shaped like the site's value.

    References:
      Dhamdhere, Sundararajan, Yan. How Important Is a Neuron? ICLR 2019.
    """
    x, t, b, site = _path_arguments(f, x, target, site, baseline, steps, method)
    return _layer_conductance(f, x, t, b, site=site, steps=int(steps), method=method,
                              batch_size=_common.check_batch_size(batch_size))



def _unit_gradients(f, site, z, flat: jax.Array) -> jax.Array:
    """d A_flat(z_i) / d z_i for every example ``i``, shaped like `z` (``A_flat`` the unit of
    row-major index `flat`, a traced int, of one example's value at `site`)."""

    def unit(v):
        a = _activation(f, site, v)
        return a.reshape(a.shape[0], -1)[:, flat].sum()

    return jax.grad(unit)(z)


@functools.partial(jax.jit, static_argnames=("f", "site", "steps", "method", "batch_size"))
def _neuron_conductance(f, x, target, baseline, flat, *, site, steps, method, batch_size):
    alphas, weights = quadrature(method, steps)
    start, direction = _common.widen(baseline), _common.widen(x) - _common.widen(baseline)

    def step(item):
        alpha, weight = item
        z = (start + alpha * direction).astype(x.dtype)
        g = _site_gradient(f, site, z, target, _activation(f, site, z))
        g = _common.widen(g.reshape(g.shape[0], -1)[:, flat])  # (n,): d f_t / d A_flat
        g = g.reshape((-1,) + (1,) * (x.ndim - 1))
        return weight * g * _common.widen(_unit_gradients(f, site, z, flat))

    dtype = _common.wide(x.dtype)
    items = (jnp.asarray(alphas, dtype), jnp.asarray(weights, dtype))
    return (direction * _common.chunked_sum(step, items, batch_size)).astype(x.dtype)


def neuron_conductance(f: Callable, x: Float[ArrayLike, "batch *feature"],
                       target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str,
                       neuron: int | tuple[int, ...], baseline=None, steps: int = 50,
                       method: str = "gausslegendre", batch_size: int | None = None) -> Array:
    """Conductance of one unit for each input feature: the share of the target's integrated
    gradients that flows through the unit (Captum's ``NeuronConductance``).

    ``cond_i = (x_i - b_i) integral_0^1 (d f_t / d A_j)(z_a) (d A_j / d x_i)(z_a) da`` along
    the straight path ``z_a = b + a (x - b)``, with the quadrature of
    :func:`integrated_gradients`. Summed over the inputs it is the unit's
    :func:`layer_conductance`. Integrated gradients of :func:`site_output` explain the unit's
    own value instead, not its part in the target.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: a site name (see :func:`jaxplain.sites`), or a glob that matches one.
      neuron: the unit, the same for every example: an index tuple into one example's value at
        the site as presented, channels last (``(h, w, c)``, also for an NCHW model), or an
        integer, its row-major flat index (as :func:`site_output` numbers units); integers may
        be NumPy or concrete JAX scalars (``jnp.argmax(...)``), negative ones count from the
        end. The unit is a traced index, so a loop over units compiles once.
      baseline: the reference input: None (zeros), a scalar, or an array broadcastable to `x`.
      steps: the number of quadrature points.
      method: the quadrature, as in :func:`integrated_gradients`.
      batch_size: the number of steps evaluated at once (None: all at once on GPU/TPU, on CPU as
        many as keep a pass in cache).

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import neuron_conductance
      >>> def f(x):
      ...     with jax.named_scope("hidden"):
      ...         h = x @ jnp.array([[1.0, 2.0], [3.0, -1.0]])
      ...     return h @ jnp.array([[2.0], [1.0]])
      >>> neuron_conductance(f, jnp.array([[1.0, 1.0]]), 0, site="hidden", neuron=0).round(4)
      Array([[2., 6.]], dtype=float32)

    References:
      Dhamdhere, Sundararajan, Yan. How Important Is a Neuron? ICLR 2019; Kokhlikyan et al.
      Captum. arXiv:2009.07896, 2020 (NeuronConductance).
    """
    x, t, b, site = _path_arguments(f, x, target, site, baseline, steps, method)
    shape = _check_site(f, x, site)[1:]
    flat = jnp.asarray(_flat_unit(neuron, shape), jnp.int32)  # traced: one compile for all units
    if _index(neuron) is None:  # an index tuple reads the site's layout
        check_layout(f, x, site, "neuron_conductance")
    return _neuron_conductance(f, x, t, b, flat, site=site, steps=int(steps), method=method,
                               batch_size=_common.check_batch_size(batch_size))


def _index(i: Any) -> int | None:
    """`i` as a Python int when it is a concrete integer scalar (an int, a NumPy or JAX integer,
    a 0-d integer array such as ``jnp.argmax(...)``), else None (a bool is no index)."""
    if isinstance(i, (bool, np.bool_)) or (hasattr(i, "dtype")
                                           and not jnp.issubdtype(i.dtype, jnp.integer)):
        return None
    if isinstance(i, jax.core.Tracer):
        raise TypeError(f"neuron must be concrete (the unit is picked before tracing); got the "
                        f"traced value {i!r}: pass an int or index tuple from outside jit (a "
                        "loop over units compiles once)")
    try:
        return operator.index(i)
    except TypeError:
        return None


def _flat_unit(neuron: Any, shape: tuple) -> int:
    """The row-major flat index of `neuron` in one example's site value of `shape`: an integer
    scalar (a flat index) or a sequence of them (an index tuple, a 1-d integer array), each
    negative one counted from the end as in Python; a ValueError for one out of range."""
    size = int(np.prod(shape, dtype=np.int64))
    flat = _index(neuron)
    if flat is not None:
        if not -size <= flat < size:
            raise ValueError(f"neuron {flat} is out of range: the site has {size} units per "
                             f"example (shape {shape}); negative indices count from the end")
        return flat % size
    index = None
    if isinstance(neuron, (tuple, list)) or np.ndim(neuron) == 1:
        index = [_index(i) for i in neuron]
    if (index is None or len(index) != len(shape)
            or not all(i is not None and -n <= i < n for i, n in zip(index, shape))):
        raise ValueError(f"neuron must be an integer (a flat index, from -{size} to {size - 1}) "
                         f"or an index tuple into one example's site value of shape {shape} "
                         f"(negative indices count from the end); got {neuron!r}")
    return int(np.ravel_multi_index([i % n for i, n in zip(index, shape)], shape))


def _replaced_gradient(f, site, x, target, value):
    """d sum_i f(x)[i, t_i] / d `value`, with `value` put in place of the site's own; NaN in
    the examples whose target is not finite (:func:`_common.selected_gradient`)."""

    def out(v):
        replaced = intervene(f, {site: v})
        return _common.selected(cpu_friendly(replaced), x, target)

    return _common.selected_gradient(out, value)


@functools.partial(jax.jit, static_argnames=("f", "site", "steps", "method", "batch_size"))
def _layer_integrated_gradients(f, x, target, baseline, *, site, steps, method, batch_size):
    alphas, weights = quadrature(method, steps)
    a_x, a_b = _activation(f, site, x), _activation(f, site, baseline)
    start, delta = _common.widen(a_b), _common.widen(a_x) - _common.widen(a_b)

    def step(item):  # the point interpolated in float32 at least, put in at the site's dtype
        alpha, weight = item
        value = (start + alpha * delta).astype(a_x.dtype)
        return weight * _common.widen(_replaced_gradient(f, site, x, target, value))

    dtype = jnp.promote_types(_common.wide(x.dtype), delta.dtype)
    items = (jnp.asarray(alphas, dtype), jnp.asarray(weights, dtype))
    return (delta * _common.chunked_sum(step, items, batch_size)).astype(_result_dtype(x, a_x))


def layer_integrated_gradients(f: Callable,
                               x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
                               target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, site: str,
                               baseline=None, steps: int = 50, method: str = "gausslegendre",
                               batch_size: int | None = None) -> Array:
    """Integrated gradients of the model as a function of a site's value (Captum's
    ``LayerIntegratedGradients``).

    ``attr = (A(x) - A(b)) * integral_0^1 (d f_t / d A)(A(b) + a (A(x) - A(b))) da``: the
    site's value ``A`` goes along the straight line between its values at the baseline and at
    the input, and is put in place of the site's own while the input stays `x` (what reaches
    the output around the site, a skip connection say, sees `x`). Quadrature as in
    :func:`integrated_gradients`. When all of the model's computation passes through the site,
    the units' attributions sum to about ``f(x)_t - f(b)_t``.

    Captum's text recipe, ``LayerIntegratedGradients(model, model.embedding)`` on token ids with
    a baseline of pad ids, is this function on the model of ids with ``site=`` the embedding's
    and ``baseline=`` the pad ids: ``attr.sum(-1)`` is one score per token.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first; or the token ids of a model of ids (integers, not uint8).
      target: the class to explain per example, shape ``(n,)``, or one int.
      site: a site name (see :func:`jaxplain.sites`), or a glob that matches one, e.g. the
        embedding's for token ids.
      baseline: the reference input (the site's start is its value there): None (zeros), a
        scalar, or an array broadcastable to `x`; ids for ids (e.g. pad ids, or 0 for None).
      steps: the number of quadrature points.
      method: the quadrature, as in :func:`integrated_gradients`.
      batch_size: the number of steps evaluated at once (None: all at once on GPU/TPU, on CPU as
        many as keep a pass in cache).

    Returns:
      An array shaped like the site's value, in `x`'s dtype (the site's for token ids).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import layer_integrated_gradients
      >>> def f(x):
      ...     with jax.named_scope("hidden"):
      ...         h = x * jnp.array([1.0, 2.0])
      ...     return (h ** 2).sum(axis=1, keepdims=True)
      >>> layer_integrated_gradients(f, jnp.array([[1.0, 1.0]]), 0, site="hidden").round(4)
      Array([[1., 4.]], dtype=float32)

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017; Kokhlikyan
      et al. Captum. arXiv:2009.07896, 2020 (LayerIntegratedGradients).
    """
    x, t, b, site = _path_arguments(f, x, target, site, baseline, steps, method, ids=True)
    return _layer_integrated_gradients(f, x, t, b, site=site, steps=int(steps), method=method,
                                       batch_size=_common.check_batch_size(batch_size))


@dataclasses.dataclass(frozen=True)
class SiteOutput:
    """A model whose outputs are the units of one of `f`'s sites (see :func:`site_output`)."""

    f: Callable
    site: str
    reduce: str | None = None

    def __call__(self, x):
        a = _activation(self.f, self.site, x)
        if self.reduce is None:
            return a.reshape(a.shape[0], -1)
        check_layout(self.f, x, self.site, "site_output(reduce=...)")
        spatial = tuple(range(1, a.ndim - 1))
        return a.mean(axis=spatial) if self.reduce == "mean" else a.sum(axis=spatial)


def site_output(f: Callable, site: str, *, reduce: str | None = None) -> SiteOutput:
    """A site's units as the outputs of a model, to explain a neuron instead of a logit.

    Any input attribution method then explains unit ``j`` with ``target=j``, e.g.
    ``integrated_gradients(site_output(f, "fc1"), x, 3)`` attributes neuron 3 of ``fc1`` to
    the input pixels.

    Args:
      f: the model.
      site: a site name (see :func:`jaxplain.sites`), or a glob of one match (checked when
        the model is first evaluated: a glob of several sites is refused, listing them).
      reduce: None flattens the site's value, so units are numbered in row-major order of one
        example's shape; ``"mean"`` or ``"sum"`` pools the spatial axes so that the units are
        the channels (the last axis).

    Returns:
      A hashable function ``x -> (n, units)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import gradient, site_output
      >>> def f(x):
      ...     with jax.named_scope("hidden"):
      ...         h = x @ jnp.array([[1.0, 2.0], [3.0, 4.0]])
      ...     return h.sum(axis=1, keepdims=True)
      >>> gradient(site_output(f, "hidden"), jnp.ones((1, 2)), 1)   # neuron 1 of "hidden"
      Array([[2., 4.]], dtype=float32)
    """
    _common.check_function(f)
    if not isinstance(site, str):
        raise TypeError(f"site must be one site name (a str); got {site!r}")
    if reduce not in (None, "mean", "sum"):
        raise ValueError(f"reduce must be None, 'mean' or 'sum'; got {reduce!r}")
    return SiteOutput(f, site, reduce)
