"""Objectives for feature visualization: small composable values on sites.

An objective is a pytree that maps what a model computes on a batch of images -- the values at
its sites, the logits and the images themselves -- to one scalar to *maximize*. Objectives add,
scale and divide by numbers (``channel("conv1", 3) + 0.5 * layer("fc1")``, ``obj / 2``), take a
constant term (``obj + 1``, as Lucent's spelling: no gradient, but counted in the value), and a
list of objectives with the same structure stacks into one batched objective that
:func:`jaxplain.visualize.render` optimizes with ``vmap`` (all channels of a layer in one call).

Indices, positions, directions and weights are pytree *leaves* (so they stack and vmap); site
names and class-vs-probability choices are static metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

Acts = Mapping[str, Array]


def _spatial_mean(value: Array) -> Array:
    """Mean over every axis between the batch axis and the channel axis: ``(b, ..., c) -> (b, c)``."""
    if value.ndim <= 2:
        return value
    return jnp.mean(value, axis=tuple(range(1, value.ndim - 1)))


class Objective:
    """Base of all objectives: arithmetic, pytree registration and the evaluation protocol.

    Subclasses implement ``sites`` (the site names they read) and ``__call__(acts, logits, x)``
    returning a scalar: the summed objective over the batch of images (each image's gradient is
    then that image's own objective, except for batch terms such as :class:`Diversity`).

    Every subclass is registered as a JAX pytree when it is defined, so it passes through
    ``jit`` and ``vmap``: a subclass with fields must be a dataclass (frozen, ``eq=False``);
    fields annotated ``str`` or ``bool`` (or a union of them with ``None``, such as
    ``Optional[str]``) and fields declared
    ``dataclasses.field(metadata={"static": True})`` are static metadata (hashable), every other
    field a leaf (arrays, numbers, nested objectives). A subclass without instance state needs
    nothing.

    Example:
        >>> @dataclasses.dataclass(frozen=True, eq=False)
        ... class Redness(Objective):
        ...     weight: float = 1.0
        ...     def sites(self):
        ...         return ()
        ...     def __call__(self, acts, logits, x):
        ...         return self.weight * jnp.sum(x[..., 0] - x[..., 2])
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls, _flatten_with_keys, functools.partial(_unflatten, cls), _flatten)

    def sites(self) -> tuple[str, ...]:
        raise NotImplementedError

    def __call__(self, acts: Acts, logits: Array, x: Array) -> Array:
        raise NotImplementedError

    def __add__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return Sum((self, other))
        return Sum((self, Constant(_constant("+", other))))

    def __radd__(self, other: Any) -> Objective:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # sum([...]) starts at 0
        return Sum((Constant(_constant("+", other)), self))

    def __sub__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return Sum((self, Scaled(-1.0, other)))
        return Sum((self, Constant(-_constant("-", other))))

    def __rsub__(self, other: Any) -> Objective:
        return Sum((Constant(_constant("-", other)), Scaled(-1.0, self)))

    def __mul__(self, weight: Any) -> Objective:
        return Scaled(_weight("*", weight), self)

    __rmul__ = __mul__

    def __truediv__(self, divisor: Any) -> Objective:
        return Scaled(1.0 / _weight("/", divisor), self)

    def __rtruediv__(self, other: Any) -> Objective:
        raise TypeError(f"{type(other).__name__} / objective is not supported (as in Lucent): "
                        "divide an objective by a number instead (obj / 2)")

    def __neg__(self) -> Objective:
        return Scaled(-1.0, self)


def _number(op: str, value: Any, what: str) -> Any:
    """``value`` as a Python float or a scalar array (a leaf: it stacks and vmaps)."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or not (
            isinstance(value, (int, float, np.number)) or hasattr(value, "dtype")):
        raise TypeError(f"objective {op} {type(value).__name__} is not supported: {what}, got "
                        f"{value!r}")
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if jnp.shape(value) != ():
        raise TypeError(f"objective {op} array of shape {jnp.shape(value)} is not supported: "
                        f"{what} (a scalar); for one number per objective, apply it to each "
                        "objective of the list")
    return value


def _weight(op: str, weight: Any) -> Any:
    """A weight for ``*`` or ``/``."""
    if isinstance(weight, Objective):
        raise TypeError(f"objective {op} objective is not supported (as in Lucent): multiply "
                        "or divide an objective by a number (0.5 * a, a / 2) and combine "
                        "objectives with + and -")
    weight = _number(op, weight, "multiply or divide an objective by a number")
    if op == "/" and isinstance(weight, float) and weight == 0:
        raise ZeroDivisionError("objective / 0: divide an objective by a non-zero number")
    return weight


def _constant(op: str, value: Any) -> Any:
    """A constant term for ``+`` or ``-``."""
    return _number(op, value, "add or subtract an objective or a number (a constant term)")


def _split(obj: Objective) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of ``obj``'s leaf fields and of its static fields."""
    cls = type(obj)
    if dataclasses.is_dataclass(cls):
        return _fields(cls)
    if vars(obj):
        raise TypeError(
            f"{cls.__name__} is an Objective with instance attributes {sorted(vars(obj))} but "
            "not a dataclass, so JAX cannot trace it: decorate it with "
            "@dataclasses.dataclass(frozen=True, eq=False) and declare them as fields (fields "
            "annotated str or bool are static, the others leaves)")
    return (), ()


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # By annotation, not by value: the split must not change when JAX swaps leaves for tracers.
    data, meta = [], []
    for field in dataclasses.fields(cls):
        static = field.metadata.get("static", _static_annotation(field.type))
        (meta if static else data).append(field.name)
    return tuple(data), tuple(meta)


_STATIC = {str: "str", bool: "bool", type(None): "None"}


def _static_annotation(annotation: Any) -> bool:
    """Whether a field's annotation makes it static: ``str``, ``bool``, or a union of them and
    ``None`` (``Optional[str]``, ``str | None``), as types or as strings (under ``from
    __future__ import annotations``)."""
    if isinstance(annotation, str):
        names = _union_names(annotation)
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        names = [_STATIC.get(a) for a in typing.get_args(annotation)]
    else:
        names = [_STATIC.get(annotation)]
    return all(n in _STATIC.values() for n in names) and any(n != "None" for n in names)


def _union_names(annotation: str) -> list[str]:
    """The members of a union written as a string: ``"str | None"``, ``"Optional[str]"``,
    ``"typing.Union[str, bool]"``."""
    text = annotation.replace(" ", "").replace("typing.", "")
    for head, extra in (("Optional[", ["None"]), ("Union[", [])):
        if text.startswith(head) and text.endswith("]"):
            return [n for part in text[len(head):-1].split(",") for n in _union_names(part)] + extra
    return [{"NoneType": "None"}.get(n, n) for n in text.split("|")]


def check_leaves(obj: Objective) -> None:
    """Raise TypeError for a leaf field of ``obj`` (or of an objective inside it) that holds
    something JAX cannot trace, such as a site name in a field not annotated ``str``."""
    data, _ = _split(obj)
    for name in data:
        found = jax.tree_util.tree_leaves_with_path(
            getattr(obj, name), is_leaf=lambda v: isinstance(v, Objective))
        for path, leaf in found:
            if isinstance(leaf, Objective):
                check_leaves(leaf)
            elif not _traceable(leaf):
                field = f"{type(obj).__name__}.{name}{jax.tree_util.keystr(path)}"
                raise TypeError(
                    f"objective field {field} is a leaf (JAX traces it as an array) but holds "
                    f"{type(leaf).__name__} {leaf!r}. Fields annotated str or bool (also "
                    "Optional[str], str | None) are static; annotate it so, or declare it "
                    "dataclasses.field(metadata={\"static\": True}) for another hashable value")


def _traceable(leaf: Any) -> bool:
    """Whether JAX can take ``leaf`` as an array: a number, or an array of numbers or bools."""
    if isinstance(leaf, (int, float, complex, jax.Array)):
        return True
    return isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind in "biufc"


def _flatten(obj):
    data, meta = _split(obj)
    return [getattr(obj, k) for k in data], (data, meta, tuple(getattr(obj, k) for k in meta))


def _flatten_with_keys(obj):
    children, aux = _flatten(obj)
    return [(jax.tree_util.GetAttrKey(k), c) for k, c in zip(aux[0], children)], aux


def _unflatten(cls, aux, children):
    data, meta, values = aux
    obj = object.__new__(cls)
    for k, v in (*zip(data, children), *zip(meta, values)):
        object.__setattr__(obj, k, v)
    return obj


def _pytree(cls):
    """A built-in objective: a frozen dataclass compared by identity (its leaves are arrays)."""
    return dataclasses.dataclass(frozen=True, eq=False)(cls)


@_pytree
class Scaled(Objective):
    """``weight * term``; ``weight`` is a leaf, so it stacks across objectives."""

    weight: Any
    term: Objective

    def sites(self):
        return self.term.sites()

    def __call__(self, acts, logits, x):
        return self.weight * self.term(acts, logits, x)


@_pytree
class Sum(Objective):
    """The sum of several objectives (flattened: ``a + b + c`` is one ``Sum`` of three)."""

    terms: tuple

    def __post_init__(self):
        flat = []
        for t in self.terms:
            flat.extend(t.terms if isinstance(t, Sum) else (t,))
        object.__setattr__(self, "terms", tuple(flat))

    def sites(self):
        return tuple(dict.fromkeys(s for t in self.terms for s in t.sites()))

    def __call__(self, acts, logits, x):
        return sum(t(acts, logits, x) for t in self.terms)


@_pytree
class Constant(Objective):
    """A constant term ``value`` for each image (``obj + 1``): counted in the objective's value,
    its gradient is 0. Summed over the batch like every term, so ``k`` images add ``k * value``."""

    value: Any

    def sites(self):
        return ()

    def __call__(self, acts, logits, x):
        return jnp.asarray(self.value) * x.shape[0]


@_pytree
class Channel(Objective):
    """Mean activation of channel ``index`` (last axis) of ``site`` over space."""

    site: str
    index: Any

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        return jnp.sum(_spatial_mean(acts[self.site])[:, self.index])


def _at(value: Array, position: Any, index: Any = slice(None)) -> Array:
    """``value[:, *position, index]``: ``(b, *spatial, c) -> (b, c)`` for the whole channel
    axis, or ``(b, *index.shape)`` with positions and indices paired elementwise (a neuron
    group); ``position=None`` is the centre ``(h // 2, w // 2)`` of the site's spatial shape, as
    Lucent's default."""
    spatial = value.shape[1:-1]
    pos = (tuple(s // 2 for s in spatial) if position is None
           else tuple(position[i] for i in range(len(spatial))))
    return value[(slice(None), *pos, index)]


@_pytree
class Neuron(Objective):
    """Activation of one neuron: channel ``index`` at spatial ``position`` of ``site`` (``None``:
    the centre of the site, read off its shape when the objective is evaluated)."""

    site: str
    index: Any
    position: Any

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        return jnp.sum(_at(acts[self.site], self.position, self.index))


@_pytree
class Layer(Objective):
    """Mean squared activation of the whole site (the "deep dream" objective)."""

    site: str

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        value = acts[self.site]
        return jnp.sum(jnp.mean(jnp.square(value).reshape(value.shape[0], -1), axis=1))


@_pytree
class Direction(Objective):
    """Projection of the site's activations on ``vector``: a ``(channels,)`` vector is dotted
    with the mean over space (an NMF component, a rule's neuron group), a vector shaped like one
    example's value at the site (a CAV) with the whole value."""

    site: str
    vector: Any

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        value = acts[self.site]
        vector = jnp.asarray(self.vector, value.dtype)
        if vector.ndim == 1:
            return jnp.sum(_spatial_mean(value) @ vector)
        if vector.shape != value.shape[1:]:
            raise ValueError(f"direction vector for site {self.site!r} must be (channels,) or "
                             f"shaped like one example's value there, {value.shape[1:]}; got "
                             f"shape {vector.shape}")
        return jnp.sum(value * vector[None])


@_pytree
class Class(Objective):
    """The class logit (``probability=False``) or softmax probability of class ``index``: one
    class for every example, or an int array ``(b,)`` of one class per example."""

    index: Any
    probability: bool = False

    def sites(self):
        return ()

    def __call__(self, acts, logits, x):
        scores = jax.nn.softmax(logits, axis=-1) if self.probability else logits
        index = jnp.asarray(self.index)
        if index.ndim == 0:
            return jnp.sum(scores[:, index])
        if index.shape != scores.shape[:1]:
            raise ValueError(f"class index of shape {index.shape} for a batch of "
                             f"{scores.shape[0]}: pass one class, or one per example")
        return jnp.sum(jnp.take_along_axis(scores, index[:, None], axis=1))


@_pytree
class Diversity(Objective):
    """Minus the mean pairwise cosine similarity of the batch's Gram-matrix features at ``site``.

    Adding ``w * diversity(site)`` to an objective and rendering several images per objective
    pushes them apart, so they show different facets of one feature (Olah et al., 2017).
    Position-invariant: each image is summarised by the Gram matrix of its activation vectors.
    """

    site: str

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        return -mean_pairwise_similarity(acts[self.site])


def mean_pairwise_similarity(value: Float[ArrayLike, "b *site"]) -> Float[Array, ""]:
    """Mean cosine similarity between the Gram-matrix features of distinct batch elements."""
    b = value.shape[0]
    if b < 2:
        return jnp.zeros((), value.dtype)
    flat = value.reshape(b, -1, value.shape[-1])
    gram = jnp.einsum("bpc,bpd->bcd", flat, flat).reshape(b, -1)
    unit = gram / (jnp.linalg.norm(gram, axis=1, keepdims=True) + 1e-8)
    sim = unit @ unit.T
    return (jnp.sum(sim) - jnp.trace(sim)) / (b * (b - 1))


def terms(obj: Objective):
    """The leaf terms of an objective (through sums and scalings)."""
    if isinstance(obj, Sum):
        for t in obj.terms:
            yield from terms(t)
    elif isinstance(obj, Scaled):
        yield from terms(obj.term)
    else:
        yield obj


def leaf_values(v) -> list[int] | None:
    """A leaf's values as a flat list, or None for a tracer (validated by the caller's checks)."""
    try:
        return np.asarray(v).reshape(-1).tolist()
    except Exception:
        return None


def _check_site(site: Any) -> str:
    if not isinstance(site, str):
        raise TypeError(f"site must be a site name (str), got {type(site).__name__}: {site!r}")
    return site


def channel(site: str, index: int | ArrayLike) -> Channel:
    """Objective: the mean over space of channel ``index`` at ``site``.

    Example:
        >>> obj = channel("conv1", 3) + 0.5 * layer("fc1")
    """
    return Channel(_check_site(site), index)


def _position(position: Any) -> Array | None:
    if position is None:
        return None
    given = jnp.asarray(position)
    if jnp.issubdtype(given.dtype, jnp.inexact):
        vals = leaf_values(given)
        if vals is None or any(v != round(v) for v in vals):
            raise ValueError(f"neuron position must be integers (one index per spatial axis, "
                             f"e.g. (y, x)), got {position!r}")
    return given.astype(jnp.int32)


def neuron(site: str, index: int | ArrayLike,
           position: tuple[int, ...] | ArrayLike | None = None) -> Neuron:
    """Objective: channel ``index`` at spatial ``position`` (e.g. ``(y, x)``) of ``site``.

    ``position=None`` (default) is the site's centre ``(h // 2, w // 2)``, as Lucent's default,
    taken from the site's shape where the objective is evaluated (so it follows a transform
    that changes the image size, e.g. :class:`Pad`). On a dense site the position is ``()``.

    Raises:
        ValueError: for a position that is not integral, e.g. ``(3.7, 4.9)`` (it would be
            truncated to ``(3, 4)``).

    Example:
        >>> obj = neuron("conv1", 3)          # == neuron("conv1", 3, (h // 2, w // 2))
    """
    return Neuron(_check_site(site), index, _position(position))


def layer(site: str) -> Layer:
    """Objective: the mean squared activation of all of ``site``."""
    return Layer(_check_site(site))


def direction(site: str, vector: Float[ArrayLike, "*site channels"]) -> Direction:
    """Objective: the projection of ``site``'s activations on ``vector``.

    A ``(channels,)`` vector weighs the channels of the mean over space; a vector shaped like
    one example's value at ``site``, ``(*spatial, channels)`` (a :class:`~jaxplain.concepts.CAV`'s
    ``vector``), is dotted with the whole value, position by position.

    Example:
        >>> obj = direction("block1/relu_1", groups.directions[0])       # (16,)
        >>> obj = direction(v.site, v.vector)                             # a CAV, (8, 8, 16)
    """
    vector = jnp.asarray(vector)
    if vector.ndim == 0:
        raise ValueError("vector must be (channels,) or shaped like one example's value at the "
                         "site, got a scalar")
    return Direction(_check_site(site), vector)


def _class_index(kind: str, index: Any) -> Any:
    """One class (an int) or one class per example (an int array ``(batch,)``)."""
    try:
        given = jnp.asarray(index)
    except (TypeError, ValueError):
        given = None
    if given is None or given.ndim > 1 or not jnp.issubdtype(given.dtype, jnp.integer):
        raise TypeError(f"{kind}: index must be one class (an int) or one class per example "
                        f"(an int array of shape (batch,)), got {index!r}")
    return given if isinstance(index, (list, tuple)) else index


def class_logit(index: Int[ArrayLike, " batch"] | Int[ArrayLike, ""]) -> Class:
    """Objective: the logit of class ``index``.

    Args:
        index: one class for every example, or an int array ``(batch,)`` of one class per
            example (as every attribution method's ``target``); in :func:`render` the batch is
            the ``k`` images rendered per objective (``shape[0]``), so image ``i`` maximizes
            class ``index[i]``. For the sum of several classes add objectives,
            ``class_logit(0) + class_logit(2)``.

    Example:
        >>> a = site_attribution(f, x, class_logit(y), site="block1/relu_1")   # y: (b,) labels
    """
    return Class(_class_index("class_logit", index), probability=False)


def class_probability(index: Int[ArrayLike, " batch"] | Int[ArrayLike, ""]) -> Class:
    """Objective: the softmax probability of class ``index`` (one class, or one per example
    as :func:`class_logit`)."""
    return Class(_class_index("class_probability", index), probability=True)


def diversity(site: str) -> Diversity:
    """Objective term: minus the pairwise similarity of a batch's features at ``site``."""
    return Diversity(_check_site(site))


def stack(objectives) -> Objective:
    """Stack objectives of one structure into one batched objective (leading axis per leaf).

    Raises:
        ValueError: if the objectives differ in structure (e.g. different sites or terms).
    """
    objectives = list(objectives)
    if not objectives or not all(isinstance(o, Objective) for o in objectives):
        raise TypeError("objective must be an Objective or a non-empty sequence of Objectives, "
                        f"got {objectives!r}")
    structs = [jax.tree_util.tree_structure(o) for o in objectives]
    for i, s in enumerate(structs):
        if s != structs[0]:
            raise ValueError(
                "objectives rendered together must share one structure (same kinds of terms on "
                f"the same sites); objective 0 is {structs[0]} but objective {i} is {s}")
    return jax.tree_util.tree_map(_stacked, *objectives)


def _stacked(*leaves) -> Array | np.ndarray:
    """``(n, *leaf)``: on the host when no leaf is a JAX array (Python ints such as channel
    indices), so that checking the values reads nothing back from the device."""
    if any(isinstance(a, jax.Array) for a in leaves):
        return jnp.stack([jnp.asarray(a) for a in leaves])
    stacked = np.stack([np.asarray(a) for a in leaves])
    return stacked.astype(jax.dtypes.canonicalize_dtype(stacked.dtype))
