"""The kernel's forward verbs: sites, capture, intervene."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.core._adapters import refuse_module
from jaxplain.core._batch import LOST, KEEP_FIRST, batch_axes, lost_by
from jaxplain.core._caches import SameFunction, function_key
from jaxplain.core._channels import channel_axes
from jaxplain.core._draws import StochasticModelWarning, draws_random
from jaxplain.core._program import Program, edit_scope, run, trace
from jaxplain.core._select import Selector, _is_glob, select
from jaxplain.core._sites import Site, SiteMap, analyze
from jaxplain.core._user_line import user_stacklevel

# program -> its site map; weak, so that a program (and the weights it holds as constants) goes
# with the trace cache entry of its function
_ANALYSES: "weakref.WeakKeyDictionary[Program, SiteMap]" = weakref.WeakKeyDictionary()
# the model functions (or, for one that cannot be weakly referenced, the traced programs)
# whose batch mixing has been reported: kept apart from the analyses, which `mixes_batch` may
# build without warning
_WARNED: weakref.WeakSet = weakref.WeakSet()
# those whose random draws have been reported (:class:`StochasticModelWarning`)
_WARNED_DRAWS: weakref.WeakSet = weakref.WeakSet()


class BatchMixingWarning(UserWarning):
    """The model's output for one example depends on the other examples of its batch (a value
    computed over the batch axis, e.g. batch statistics, or values moved along it, e.g.
    message passing between the rows of x). Filter it by this category."""

    def __init__(self, message: str = (
            "The model's output for one example depends on the other examples of the batch: a "
            "value inside it is computed over the batch axis (e.g. a BatchNorm using batch "
            "statistics), or values move along it (a gather, segment_sum or other scatter, "
            "sort, cumsum, roll or flip over the batch: message passing between the rows of x), "
            "so per-example explanations of it mix examples. Run the model in inference mode, "
            "e.g. as_function(linen_model, variables, train=False) or as_function(nnx_model, "
            "use_running_average=True) for a flag its __call__ takes. For node classification "
            "on one graph (x of shape (nodes, features), logits (nodes, classes)) the rows are "
            "not examples: explain jax.vmap(g) over a batch of graphs, or one graph as a batch "
            "of one, x[None], with each node a separate target through a wrapper such as "
            "lambda xs: jax.vmap(g)(xs).reshape(len(xs), -1) and target node * classes + "
            "class.")):
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
    if "needs PRNG" in str(err):
        return (" (the model runs Dropout or another random layer in training mode: explain it "
                "in inference mode, as_function(model, variables, train=False) for a Linen "
                "model whose __call__ takes train, or model.eval() for NNX)")
    if type(err).__name__ == "ModifyScopeVariableError" and type(err).__module__.startswith("flax"):
        return (" (the Linen model updates a variable collection such as batch_stats, as it "
                "does in training mode: explain it in inference mode, "
                "jaxplain.as_function(model, variables, train=False) for a __call__ that takes "
                "train, or the argument of your module that turns training off)")
    if _nnx_state_error(err):
        return (" (f closes over a Flax NNX module that updates its state when called: a "
                "BatchNorm in training mode, a Dropout drawing from its Rngs, or a call through "
                "nnx.jit, which NNX refuses inside jaxplain's trace. Pass the module itself: "
                "f = jaxplain.as_function(model), which runs an evaluation-mode copy and never "
                "changes your model. Flax may have left the closed-over model unusable after "
                "this failure (an nnx.jit call traced under jax.eval_shape): rebuild or reload "
                "it)")
    return ""


def _nnx_state_error(err: Exception) -> bool:
    """Whether `err` is Flax NNX refusing to update a module's state from inside a trace: its
    ``TraceContextError``, or the ``TracerArrayConversionError`` of a traced value written into
    a variable that holds a NumPy array (a model restored from NumPy weights)."""
    kind = type(err)
    if kind.__name__ == "TraceContextError" and kind.__module__.startswith("flax"):
        return True
    if kind.__name__ != "TracerArrayConversionError":
        return False
    nnx_dir = os.sep + os.path.join("flax", "nnx") + os.sep
    tb = err.__traceback__
    while tb is not None:
        if nnx_dir in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def batch_lost_at(f: Callable, x, name: str) -> tuple[str, str]:
    """``(cause, fix)`` for the site `name` of `f` at `x`'s shape, whose batch axis the kernel
    lost on the way from `x` (:func:`jaxplain.core._batch.lost_by`)."""
    program, site_map = program_of(f, x, unrolled=True, warn=False)
    ref = site_map.ids.get(name)
    if ref is None:
        return LOST, KEEP_FIRST
    return lost_by(program, batch_axes(program), ref)


def program_of(f: Callable, x, *, unrolled: bool = False,
               warn: bool = True) -> tuple[Program, SiteMap]:
    """The traced program of `f` at `x`'s shape and its site map (both cached); with
    ``unrolled=True`` the program with its loops unrolled (the same one when it has none).
    Warns, once per model function and unless ``warn=False``, when `f` mixes the examples of
    the batch (:class:`BatchMixingWarning`) and when it draws random numbers
    (:class:`StochasticModelWarning`: a Dropout left on, one fixed draw in every call)."""
    refuse_module(f)
    check_input(x)
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    try:
        program = trace(f, spec)
    except InternalError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of f at this shape, re-raised with context
        raise ValueError(f"The model could not be evaluated on an input of shape {tuple(x.shape)} "
                         f"and dtype {x.dtype}: {err}{model_error_hint(err)}") from err
    traced = program
    if unrolled and program.unrolled is not None:
        program = program.unrolled
    site_map = _ANALYSES.get(program)
    if site_map is None:
        site_map = _ANALYSES[program] = analyze(program)
    if warn and site_map.mixes_batch and _first_report(f, traced, _WARNED):
        warnings.warn(BatchMixingWarning(), stacklevel=user_stacklevel())
    if warn and draws_random(traced) and _first_report(f, traced, _WARNED_DRAWS):
        warnings.warn(StochasticModelWarning(), stacklevel=user_stacklevel())
    return program, site_map


def _first_report(f: Callable, program: Program, reported: weakref.WeakSet) -> bool:
    """True, once, for a model not yet in `reported`: keyed by `f` (whatever shapes a method
    evaluates it at, e.g. SmoothGrad's samples folded into the batch), or by its `program`
    where `f` cannot be weakly referenced."""
    key = f
    try:
        hash(f), weakref.ref(f)
    except TypeError:  # unhashable, or not weakly referenceable
        key = program
    if key in reported:
        return False
    reported.add(key)
    return True


def mixes_batch(f: Callable, x) -> bool:
    """True when `f`'s output for one example of `x` (a batch, or its shape and dtype) depends on
    the others: a value inside it is computed over the batch axis. Traced once per shape, and
    without warning (the kernel's verbs and the attribution methods warn with
    :class:`BatchMixingWarning` when they first meet such a model, whether or not it was asked
    here first)."""
    return program_of(f, x, warn=False)[1].mixes_batch


def warn_about_model(f: Callable, x) -> None:
    """Warn (:class:`BatchMixingWarning`) the first time `f` is met when it mixes the examples
    of `x`'s batch, and (:class:`StochasticModelWarning`) when it draws random numbers; the
    analyses are cached per shape, so a later call costs a lookup."""
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

    Warns (``UserWarning``) when a scope looks entered more than once (a ``jax.named_scope``
    reused in a loop, a module called several times): its site is the value at the end of the
    last entry.
    """
    site_map = program_of(f, x, unrolled=True)[1]
    for name, times in site_map.reused.items():
        warnings.warn(f"sites: the scope {name!r} looks entered {times} times (a jax.named_scope "
                      f"reused in a loop, or a module called {times} times); its site is the "
                      f"value at the end of the last entry. Give each entry its own scope to "
                      f"reach each, e.g. jax.named_scope(f'{name}{{i}}').",
                      stacklevel=user_stacklevel())
    return site_map.sites


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


def _rewritten(f: Callable) -> bool:
    """Whether `f` is a function that `rewrite_backward` returned (a jit of its implementation)."""
    inner = getattr(f, "__wrapped__", None)
    return (isinstance(inner, functools.partial)
            and getattr(inner.func, "__module__", None) == "jaxplain.core._backward")


def program_for(f: Callable, x, selectors) -> tuple[Program, SiteMap, list[tuple[str, ...]]]:
    """``(program, site map, names picked by each selector)`` to run for `selectors` (a
    sequence): the program with its loops kept, which compiles faster, unless a chosen site
    lies inside a loop or is a scope whose value a loop computes."""
    full, full_map = program_of(f, x, unrolled=True)
    try:
        picked = [_resolve(full, full_map, s) for s in selectors]
    except ValueError as err:
        if not _rewritten(f):
            raise
        raise ValueError(f"{err} Here f is a function that rewrite_backward returned: the "
                         "places its rules act at are custom-VJP calls, which hide the sites "
                         "inside them. Capture or edit the model itself and rewrite the result, "
                         "e.g. rewrite_backward(intervene(f, edits), rules).") from err
    program, site_map = program_of(f, x)
    if program is not full:
        from_loop = {r for node in program.nodes if node.prim == "scan" for r in node.outs}
        if any(name not in site_map.ids or site_map.ids[name] in from_loop
               for names in picked for name in names):
            return full, full_map, picked
    return program, site_map, picked


def selector_key(selector):
    """`selector` in a hashable form that `select` accepts (a list of names becomes a tuple; a
    predicate is compared by what it computes, see `function_key`: an inline ``lambda n, s:
    s.kind == "activation"`` written in a loop compiles once)."""
    if isinstance(selector, str):
        return selector
    if callable(selector):
        return function_key(selector)
    try:
        return tuple(selector)
    except TypeError:
        raise TypeError("a site selector must be a name, a glob, a sequence of them or a "
                        f"predicate (name, site) -> bool; got {selector!r}") from None


# not a per_function cache (jaxplain.core._function_cache): the value, the compiled function,
# holds `f`, so an entry kept with `f` would keep `f` alive forever; so at most 64 functions
# are held here until evicted or clear_caches
@functools.lru_cache(maxsize=64)
def _compiled(impl: Callable, f: Callable, key) -> Callable:
    return jax.jit(functools.partial(impl, f, key))


def compiled(impl: Callable, f: Callable, key, *, cacheable: bool = True) -> Callable:
    """``jax.jit(partial(impl, f, key))``, one compiled function per equal ``(impl, f, key)``.

    So that ``capture(f, "relu")(x)`` called again in a loop reuses the compiled program, as
    ``jax.jit`` does for a static argument. An unhashable `f` or `key`, ``cacheable=False``
    (the key holds closures or defaults, which may hold traced values), or an `f` built from
    such a function gets a fresh function, marked so that functions built from it are not
    cached either (the cache would pin a trace's tracers, and never be hit again).
    """
    try:
        hash((f, key))
    except TypeError:
        cacheable = False
    if cacheable and not getattr(f, _UNCACHEABLE, False):
        return _compiled(impl, f, key)
    return _uncacheable(jax.jit(functools.partial(impl, f, key)))


# the attribute that marks a function holding values that may be traced (see `compiled`)
_UNCACHEABLE = "_jaxplain_uncacheable"


def _uncacheable(fn: Callable) -> Callable:
    setattr(fn, _UNCACHEABLE, True)
    return fn


#: The ReLU-like activations: piecewise linear, with a unit on or off (the network masked at them
#: is locally linear around x, the pathway theory).
RELU_LIKE = ("relu", "relu6", "leaky_relu", "hard_tanh")


def relu_sites(f: Callable, x) -> tuple[str, ...]:
    """Names of the sites of `f` after a ReLU-like activation (:data:`RELU_LIKE`), in program
    order: the default sites of the rules, sub-networks and pathways."""
    return tuple(s.name for s in sites(f, x) if s.kind == "activation" and s.op in RELU_LIKE)


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


def intervene(f: Callable, edits: Mapping) -> Callable:
    """A new pure function that replaces the values at the chosen sites.

    Args:
      f: a model function, batch first.
      edits: ``{selector: edit}``. Every site a selector picks gets ``value <- fn(value)`` for a
        function ``fn`` (same shape and dtype; it may close over traced arrays: masks, scores,
        gates), or ``value <- array`` for an array that broadcasts to the value (activation
        patching: a clean run's activation, as `capture` returns it), passed to the compiled
        program as an argument. A value with several names (a scope whose last operation is an
        activation: ``blk`` and ``blk/relu``) is one value: each entry edits it once, every name
        sees the result, and entries that pick the same value apply in the order of `edits`,
        each to the result of the one before.

    Returns:
      ``h`` with ``h(x) -> y``, the output of the edited computation; pure and composable.
      Equal edits reuse the compiled program: functions compared by their code and the values
      they close over (an inline ``lambda v: v * 0.5`` in a loop compiles once), arrays by
      shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain as jp
      >>> f = lambda x: jax.nn.relu(x) @ jnp.ones((2, 1))
      >>> jp.intervene(f, {"relu": lambda a: a * jnp.array([1.0, 0.0])})(jnp.array([[1.0, 5.0]]))
      Array([[1.]], dtype=float32)
      >>> jp.intervene(f, {"relu": jnp.array([[2.0, 0.0]])})(jnp.array([[1.0, 5.0]]))
      Array([[2.]], dtype=float32)
    """
    if not isinstance(edits, Mapping):
        raise TypeError(f"edits must be a mapping {{site: fn or array}}; got {type(edits).__name__}")
    pairs, patches = [], []
    for selector, edit in edits.items():
        if isinstance(edit, OwnEdit):
            patches.append(jnp.asarray(edit.operand))
            edit = _Patch(len(patches) - 1, function_key(edit.fn))
        elif not callable(edit):
            patches.append(_as_patch(selector, edit))
            edit = _Patch(len(patches) - 1)
        pairs.append((selector_key(selector), function_key(edit)))
    h = compiled(_intervene, f, tuple(pairs), cacheable=all(_keyable(e) for _, e in pairs))
    if not patches:
        return h
    h = functools.partial(h, patches=tuple(patches))
    return _uncacheable(h) if any(isinstance(p, jax.core.Tracer) for p in patches) else h


def _keyable(edit) -> bool:
    """Whether an edit can key the compile cache: a function compared by what it computes, or
    an array edit. Not a function compared by identity: it holds or reads a value that may be
    traced or change (``lambda v, m=m: v * m`` with a traced `m`; a global NumPy array rebound),
    which a cached program would pin or go stale on."""
    if isinstance(edit, _Patch):
        edit = edit.fn
    return edit is None or isinstance(edit, SameFunction)


class InternalError(RuntimeError):
    """One of jaxplain's own edits failed: a bug in jaxplain, not in the user's model."""


@dataclasses.dataclass(frozen=True, eq=False)
class OwnEdit:
    """One of jaxplain's own edits, ``value <- fn(value, operand)``, for ``intervene``'s
    `edits`: `operand` (an array that broadcasts to the value, e.g. a mask, a gate, a shift) is
    passed to the compiled program as an argument, like an array edit, so a new operand of the
    same shape reuses the program and no traced value is baked into it. An operand that does
    not broadcast is the caller's error (a ``ValueError``); any other failure of `fn` is
    jaxplain's (an :class:`InternalError`)."""

    fn: Callable
    operand: Any

    def __call__(self, value):
        operand = _patched(self.operand, value)
        try:
            return self.fn(value, operand)
        except Exception as err:  # noqa: BLE001 - any failure here is jaxplain's
            raise InternalError(
                f"jaxplain's own edit {getattr(self.fn, '__qualname__', self.fn)!r} failed: "
                f"{err}. This is a bug in jaxplain, not in your model: please report it with "
                "this message.") from err


@dataclasses.dataclass(frozen=True)
class _Patch:
    """An edit that puts ``patches[index]``, an argument of the compiled program, in place, or
    with `fn`, the key of an :class:`OwnEdit`'s function, edits with it."""

    index: int
    fn: Callable | None = None


def _as_patch(selector, value):
    """An array edit, checked: anything with a shape and a numeric dtype (not a bare number,
    which could mean a scale as well as a value)."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")
            and (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == bool)):
        raise TypeError(f"edits[{selector!r}] must be callable value -> value, or an array to put "
                        f"in the site's place; got {type(value).__name__}. For a number write "
                        "what it means: lambda v: v * 3.0 to scale, jnp.asarray(3.0) to set.")
    return jnp.asarray(value)


def _patched(patch, value):
    """`patch` in place of `value`: broadcast to its shape, which it may not change."""
    try:
        fits = np.broadcast_shapes(patch.shape, value.shape) == value.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"the array of shape {tuple(patch.shape)} does not broadcast to it; pass "
                         "one of that shape, or one that broadcasts to it (batch first, channels "
                         "last, as capture returns the site)")
    return jnp.broadcast_to(patch, value.shape)


def _values(program: Program, site_map: SiteMap) -> dict[int, tuple[str, ...]]:
    """``{value id: names}``: the site names of each value, under the id that the rest of the
    program reads. Several names may denote one value, a scope and its last operation
    (``blk`` and ``blk/relu``); in an edited program each name holds its own copy of the new
    value (see `_edited`), which is still that value."""
    copied = {node.outs[0]: node.ins[0] for node in program.nodes
              if node.prim == "copy" and node.outs and node.outs[0] in program.edits
              and isinstance(node.ins[0], int) and node.ins[0] in program.edits}

    def origin(ref):
        while ref in copied:
            ref = copied[ref]
        return ref

    groups: dict[int, list[str]] = {}
    for site in site_map.sites:
        groups.setdefault(origin(site_map.ids[site.name]), []).append(site.name)
    position = {ref: i for i, node in enumerate(program.nodes) for ref in node.outs}
    return {max((site_map.ids[n] for n in names), key=lambda r: position.get(r, -1)): tuple(names)
            for names in groups.values()}


def _intervene(f: Callable, pairs: tuple, x, patches=()):
    program, site_map, picked = program_for(f, x, [selector for selector, _ in pairs])
    values = _values(program, site_map)
    value_of = {name: ref for ref, names in values.items() for name in names}
    by_id: dict[int, list[tuple[str, Callable]]] = {}
    for (_, edit), names in zip(pairs, picked):
        if isinstance(edit, _Patch):
            patch = patches[edit.index]
            edit = functools.partial(_patched, patch) if edit.fn is None else OwnEdit(edit.fn, patch)
        once = {}  # each value once per entry, however many of its names the selector picks
        for name in names:
            once.setdefault(value_of[name], name)
        for ref, name in once.items():
            by_id.setdefault(ref, []).append((name, edit))
    # the layout of each edited value, recorded with its new value (see `edit_scope`)
    channels, batch = (channel_axes(program), batch_axes(program)) if by_id else ({}, {})

    def after(i, node, outs):
        for k, ref in enumerate(node.outs):
            if ref in by_id:
                outs[k] = _edited(site_map, values[ref], by_id[ref], outs[k],
                                  (channels.get(ref), batch.get(ref)))
        return outs

    return run(program, x, after=after if by_id else None)[0]


def _edited(site_map: SiteMap, names: tuple, edits: list, value, layout: tuple):
    """`value`, the value of the sites `names`, after `edits` (``(name, fn)`` pairs, in order).
    The new value ends as a copy under the edit scope of each of its names (see `edit_scope`),
    so that a later trace finds it under every name, also when no operation made it (a
    constant, an array patch)."""
    path = lambda name: "/".join(site_map.root + (name,))  # noqa: E731
    with jax.named_scope(edit_scope(path(names[0]), *layout)):
        new = _presented(site_map, names[0], value)
        for name, fn in edits:
            try:
                out = fn(new)
            except (TypeError, ValueError, InternalError) as err:  # e.g. a mask of another batch size
                raise type(err)(f"The intervention at site {name!r} failed on its value of "
                                f"shape {tuple(new.shape)} ({new.dtype}): {err}") from err
            if jnp.shape(out) != new.shape:
                raise ValueError(f"The intervention at site {name!r} returned shape "
                                 f"{jnp.shape(out)}; expected {new.shape}.")
            new = jnp.asarray(out, dtype=new.dtype)
        new = jnp.copy(_restored(site_map, names[0], new))
    for name in names[1:]:
        with jax.named_scope(edit_scope(path(name), *layout)):
            new = jnp.copy(new)
    return new
