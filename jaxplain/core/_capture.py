"""The kernel's forward verbs: sites, capture, intervene."""

from __future__ import annotations

import fnmatch
import functools
import os
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxplain.core._adapters import refuse_module
from jaxplain.core._batch import batch_axes
from jaxplain.core._channels import channel_axes
from jaxplain.core._program import Program, edit_scope, run, trace
from jaxplain.core._select import Selector, _is_glob, select
from jaxplain.core._sites import Site, SiteMap, analyze

# program -> its site map; weak, so that a program (and the weights it holds as constants) goes
# with the trace cache entry of its function
_ANALYSES: "weakref.WeakKeyDictionary[Program, SiteMap]" = weakref.WeakKeyDictionary()
# the model functions (or, for one that cannot be weakly referenced, the traced programs)
# whose batch mixing has been reported: kept apart from the analyses, which `mixes_batch` may
# build without warning
_WARNED: weakref.WeakSet = weakref.WeakSet()
# the packages whose frames a warning skips to point at the user's line
_INTERNAL = tuple(package + os.sep for package in (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(jax.__file__)))


class BatchMixingWarning(UserWarning):
    """The model's output for one example depends on the other examples of its batch (a value
    computed over the batch axis, e.g. batch statistics). Filter it by this category."""

    def __init__(self, message: str = (
            "The model's output for one example depends on the other examples of the batch: a "
            "value inside it is computed over the batch axis (e.g. a BatchNorm using batch "
            "statistics), so per-example explanations of it mix examples. Run the model in "
            "inference mode, e.g. as_function(linen_model, variables, train=False) or "
            "as_function(nnx_model, use_running_average=True) for a flag its __call__ takes.")):
        super().__init__(message)


def check_input(x, name: str = "x"):
    """Validate a model input: an array with a batch axis and a floating or integer dtype
    (token ids: sites, capture and intervene differentiate nothing)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array with a batch axis first; got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch axis first; got a scalar of shape {x.shape}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{name} must have a floating dtype, or an integer one for token ids; "
                        f"got {x.dtype}. Cast it, e.g. x.astype(jnp.float32).")


def model_error_hint(err: Exception) -> str:
    """A hint for a model error with a known cause, or ""."""
    if "unbound axis name" in str(err):
        return (" (an Equinox BatchNorm in training mode reads batch statistics over a named "
                "axis: explain the model in inference mode, eqx.nn.inference_mode(model))")
    return ""


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning issued by the caller at the first frame outside
    jaxplain and JAX: the user's line, wherever it reaches the kernel from."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def program_of(f: Callable, x, *, unrolled: bool = False,
               warn: bool = True) -> tuple[Program, SiteMap]:
    """The traced program of `f` at `x`'s shape and its site map (both cached); with
    ``unrolled=True`` the program with its loops unrolled (the same one when it has none).
    Warns (:class:`BatchMixingWarning`, once per model function) when `f` mixes the examples
    of the batch, unless ``warn=False``."""
    refuse_module(f)
    check_input(x)
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    try:
        program = trace(f, spec)
    except Exception as err:  # noqa: BLE001 - any failure of f at this shape, re-raised with context
        raise ValueError(f"The model could not be evaluated on an input of shape {tuple(x.shape)} "
                         f"and dtype {x.dtype}: {err}{model_error_hint(err)}") from err
    traced = program
    if unrolled and program.unrolled is not None:
        program = program.unrolled
    site_map = _ANALYSES.get(program)
    if site_map is None:
        site_map = _ANALYSES[program] = analyze(program)
    if warn and site_map.mixes_batch and _first_report(f, traced):
        warnings.warn(BatchMixingWarning(), stacklevel=_user_stacklevel())
    return program, site_map


def _first_report(f: Callable, program: Program) -> bool:
    """True, once, for a model that mixes the batch: keyed by `f` (whatever shapes a method
    evaluates it at, e.g. SmoothGrad's samples folded into the batch), or by its `program`
    where `f` cannot be weakly referenced."""
    key = f
    try:
        hash(f), weakref.ref(f)
    except TypeError:  # unhashable, or not weakly referenceable
        key = program
    if key in _WARNED:
        return False
    _WARNED.add(key)
    return True


def mixes_batch(f: Callable, x) -> bool:
    """True when `f`'s output for one example of `x` (a batch, or its shape and dtype) depends on
    the others: a value inside it is computed over the batch axis. Traced once per shape, and
    without warning (the kernel's verbs and the attribution methods warn with
    :class:`BatchMixingWarning` when they first meet such a model, whether or not it was asked
    here first)."""
    return program_of(f, x, warn=False)[1].mixes_batch


def warn_if_mixes_batch(f: Callable, x) -> None:
    """Warn (:class:`BatchMixingWarning`) the first time `f` is met when it mixes the examples
    of `x`'s batch; the analysis is cached per shape, so a later call costs a lookup."""
    program_of(f, x)


def sites(f: Callable, x) -> tuple[Site, ...]:
    """The named intermediate values of `f` at input `x`.

    Args:
      f: a model function, batch first (see :func:`jaxplain.as_function`).
      x: an example input batch, e.g. ``Float[Array, "batch *features"]`` (only its shape and
        dtype are used).

    Returns:
      The sites in program order, each a :class:`Site` (name, shape, dtype, kind, op).

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain as jp
      >>> w = jnp.ones((3, 2))
      >>> def f(x):
      ...     with jax.named_scope("proj"):
      ...         h = x @ w
      ...     return jax.nn.relu(h)
      >>> [s.name for s in jp.sites(f, jnp.ones((4, 3)))]
      ['proj', 'relu']
    """
    return program_of(f, x, unrolled=True)[1].sites


_WHY_OPAQUE = {
    "scan": "a `scan` loop too long to unroll (more than jaxplain.core.UNROLL_BUDGET equations "
            "in all its iterations)",
    "while": "a `while_loop` body: it has one value per iteration",
    "cond": "a `cond` branch: it has a value only when that branch runs",
    "custom_jvp_call": "a function with a custom derivative (`jax.custom_jvp`), whose rule "
                       "would be bypassed by an edit inside it",
    "custom_vjp_call": "a function with a custom derivative (`jax.custom_vjp`), whose rule "
                       "would be bypassed by an edit inside it",
}


def _inside(name: str, scopes) -> str | None:
    """The scope of `scopes` that the site name or glob `name` lies in or names (a glob may
    name the scope itself or a site below it: ``rnn/cell/*/tanh_1``), or None."""
    parts = name.split("/")
    for k in range(len(parts), 0, -1):
        head = "/".join(parts[:k])
        if _is_glob(head):
            hit = next(iter(fnmatch.filter(scopes, head)), None)
            if hit is not None:
                return hit
        elif head in scopes:
            return head
    return None


def _resolve(program: Program, site_map: SiteMap, names) -> tuple[str, ...]:
    root = "/".join(site_map.root) + "/" if site_map.root else ""
    opaque = {scope[len(root):]: prim for scope, prim in program.opaque_scopes.items()
              if scope.startswith(root)}
    for name in ([names] if isinstance(names, str) else list(names) if not callable(names) else []):
        if not isinstance(name, str) or name in site_map.ids:
            continue
        if name in site_map.constant:
            raise ValueError(f"Site {name!r} is a constant at this step of its loop: its value "
                             "(for an add, one of its operands) does not depend on x there, e.g. "
                             "a recurrent branch at step 0, whose initial carry is a constant. "
                             "The other steps have this site.")
        if _is_glob(name) and any(fnmatch.fnmatchcase(s.name, name) for s in site_map.sites):
            continue
        scope = _inside(name, opaque)
        if scope is not None:
            raise ValueError(f"Site {name!r} lies inside {_WHY_OPAQUE[opaque[scope]]}; such sites "
                             "are not supported. Choose a site outside it.")
    return select(site_map.sites, names)


def program_for(f: Callable, x, selectors) -> tuple[Program, SiteMap, list[tuple[str, ...]]]:
    """``(program, site map, names picked by each selector)`` to run for `selectors` (a
    sequence): the program with its loops kept, which compiles faster, unless a chosen site
    lies inside a loop or is a scope whose value a loop computes."""
    full, full_map = program_of(f, x, unrolled=True)
    picked = [_resolve(full, full_map, s) for s in selectors]
    program, site_map = program_of(f, x)
    if program is not full:
        from_loop = {r for node in program.nodes if node.prim == "scan" for r in node.outs}
        if any(name not in site_map.ids or site_map.ids[name] in from_loop
               for names in picked for name in names):
            return full, full_map, picked
    return program, site_map, picked


class _SamePredicate:
    """A predicate selector compared by what it computes: its code, the values it closes over
    and its defaults. So an inline ``lambda n, s: s.kind == "activation"``, a new function
    object on every call, keys the compile caches as the first one did (it recompiled on every
    call, 290 ms each on a small CNN)."""

    __slots__ = ("fn", "key")

    def __init__(self, fn: types.FunctionType, key):
        self.fn, self.key = fn, key

    def __call__(self, name, site):
        return self.fn(name, site)

    def __eq__(self, other):
        return isinstance(other, _SamePredicate) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return repr(self.fn)


def _predicate_key(fn):
    """`fn` keyed by code, closed-over values and defaults when all are hashable, else itself."""
    if not isinstance(fn, types.FunctionType):
        return fn
    cells = tuple(c.cell_contents for c in fn.__closure__ or ())
    key = (fn.__code__, cells, fn.__defaults__,
           tuple(sorted((fn.__kwdefaults__ or {}).items())))
    try:
        hash(key)
    except TypeError:
        return fn
    return _SamePredicate(fn, key)


def selector_key(selector):
    """`selector` in a hashable form that `select` accepts (a list of names becomes a tuple; a
    predicate is compared by its code and closed-over values, see `_SamePredicate`)."""
    if isinstance(selector, str):
        return selector
    if callable(selector):
        return _predicate_key(selector)
    try:
        return tuple(selector)
    except TypeError:
        raise TypeError("a site selector must be a name, a glob, a sequence of them or a "
                        f"predicate (name, site) -> bool; got {selector!r}") from None


@functools.lru_cache(maxsize=64)
def _compiled(impl: Callable, f: Callable, key) -> Callable:
    return jax.jit(functools.partial(impl, f, key))


def compiled(impl: Callable, f: Callable, key, *, cacheable: bool = True) -> Callable:
    """``jax.jit(partial(impl, f, key))``, one compiled function per equal ``(impl, f, key)``.

    So that ``capture(f, "relu")(x)`` called again in a loop reuses the compiled program, as
    ``jax.jit`` does for a static argument. An unhashable `f` or `key`, or ``cacheable=False``
    (the key holds closures, which may hold traced values), gets a fresh function.
    """
    try:
        hash((f, key))
    except TypeError:
        cacheable = False
    return _compiled(impl, f, key) if cacheable else jax.jit(functools.partial(impl, f, key))


def relu_sites(f: Callable, x) -> tuple[str, ...]:
    """Names of the post-ReLU activation sites of `f`, in program order."""
    return tuple(s.name for s in sites(f, x) if s.kind == "activation" and s.op == "relu")


def capture(f: Callable, names: Selector) -> Callable:
    """A new pure function returning `f`'s output and the values at the chosen sites.

    Args:
      f: a model function, batch first.
      names: which sites: a name, a glob, a sequence of them, or a predicate ``(name, site)``.

    Returns:
      ``g`` with ``g(x) -> (f(x), {name: value})``; each value has the batch axis first. ``g``
      is jit-compiled (a second call with the same shapes runs the compiled program) and
      composes with jit, vmap, grad and jvp.

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain as jp
      >>> f = lambda x: jax.nn.relu(x - 1.0) * 2.0
      >>> y, acts = jp.capture(f, "relu")(jnp.array([[0.5, 3.0]]))
      >>> acts["relu"].tolist()
      [[0.0, 2.0]]
    """
    return compiled(_capture, f, selector_key(names))


def _presented(site_map: SiteMap, name: str, value):
    """A site's value as the kernel presents it: batch first, channels last (see :class:`Site`)."""
    perm = site_map.moved.get(name)
    return value if perm is None else jnp.transpose(value, perm)


def _restored(site_map: SiteMap, name: str, value):
    """A presented value put back in the model's own layout (the inverse of `_presented`)."""
    perm = site_map.moved.get(name)
    return value if perm is None else jnp.transpose(value, tuple(sorted(range(len(perm)),
                                                                        key=perm.__getitem__)))


def _capture(f: Callable, names, x):
    program, site_map, (chosen,) = program_for(f, x, [names])
    y, env = run(program, x)
    return y, {n: _presented(site_map, n, env[site_map.ids[n]]) for n in chosen}


def intervene(f: Callable, edits: Mapping[str, Callable]) -> Callable:
    """A new pure function that applies ``fn(value)`` at each chosen site.

    Args:
      f: a model function, batch first.
      edits: ``{selector: fn}``; every site picked by a selector gets ``value <- fn(value)``
        (same shape and dtype). ``fn`` may close over traced arrays (masks, scores, gates).

    Returns:
      ``h`` with ``h(x) -> y``, the output of the edited computation; pure and composable.

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain as jp
      >>> f = lambda x: jax.nn.relu(x) @ jnp.ones((2, 1))
      >>> jp.intervene(f, {"relu": lambda a: a * jnp.array([1.0, 0.0])})(jnp.array([[1.0, 5.0]]))
      Array([[1.]], dtype=float32)
    """
    if not isinstance(edits, Mapping):
        raise TypeError(f"edits must be a mapping {{site: fn}}; got {type(edits).__name__}")
    for key, fn in edits.items():
        if not callable(fn):
            raise TypeError(f"edits[{key!r}] must be callable value -> value; got {type(fn).__name__}")

    pairs = tuple((selector_key(selector), fn) for selector, fn in edits.items())
    closure_free = all(isinstance(fn, types.FunctionType) and fn.__closure__ is None
                       for _, fn in pairs)
    return compiled(_intervene, f, pairs, cacheable=closure_free)


def _intervene(f: Callable, pairs: tuple, x):
    program, site_map, picked = program_for(f, x, [selector for selector, _ in pairs])
    by_id: dict[int, list[tuple[str, Callable]]] = {}
    for (_, fn), names in zip(pairs, picked):
        for name in names:
            by_id.setdefault(site_map.ids[name], []).append((name, fn))
    # the layout of each edited value, recorded with its new value (see `edit_scope`)
    channels, batch = (channel_axes(program), batch_axes(program)) if by_id else ({}, {})

    def after(i, node, outs):
        for k, ref in enumerate(node.outs):
            for name, fn in by_id.get(ref, ()):
                value = _presented(site_map, name, outs[k])
                scope = edit_scope("/".join(site_map.root + (name,)), channels.get(ref),
                                   batch.get(ref))
                with jax.named_scope(scope):
                    try:
                        new = fn(value)
                    except (TypeError, ValueError) as err:  # e.g. a mask of another batch size
                        raise type(err)(f"The intervention at site {name!r} failed on its value "
                                        f"of shape {tuple(value.shape)} ({value.dtype}): "
                                        f"{err}") from err
                    if jnp.shape(new) != jnp.shape(value):
                        raise ValueError(f"The intervention at site {name!r} returned shape "
                                         f"{jnp.shape(new)}; expected {jnp.shape(value)}.")
                    new = jnp.asarray(new, dtype=value.dtype)
                    new = _restored(site_map, name, new)
                outs[k] = new
        return outs

    return run(program, x, after=after if by_id else None)[0]
