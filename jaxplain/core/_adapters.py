"""Model adapters: Flax Linen, Flax NNX, Equinox modules and plain callables -> f(x)."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def as_function(model, variables=None, **apply_kwargs) -> Callable:
    """The canonical pure function ``f(x) -> logits`` (batch first) of a model.

    Args:
      model: a Flax Linen module (with `variables`), a Flax NNX module, an Equinox module (or
        its bound method, also under ``eqx.filter_jit`` and ``eqx.filter_vmap``), or a plain
        callable of a batch (returned as is; also a function under ``eqx.filter_jit``).
      variables: the Linen variables (``{"params": ..., "batch_stats": ...}``); only for Linen.
      **apply_kwargs: keyword arguments for every call of the model, e.g. ``train=False`` or
        ``use_running_average=True`` so that BatchNorm runs in inference mode (a Linen module,
        or an NNX model whose ``__call__`` takes the flag: given at call time, it wins over the
        evaluation mode), or ``per_example=False`` for an Equinox module that already takes a
        batch. ``method=`` (another entry point) is Linen's: an NNX or Equinox model is called
        through ``__call__``, so give a module whose ``__call__`` calls that method.

    Returns:
      ``f`` with ``f(x)`` the model's output for the batch ``x``. NNX and Equinox submodules run
      under ``jax.named_scope`` of their attribute paths (on a copy: the model is not changed;
      each layer still an instance of its class), so their sites are named ``lin1``,
      ``blocks/0``, ``layers/2``. NNX models are put in
      evaluation mode (BatchNorm uses running averages, Dropout is off); Equinox modules are
      vmapped over the batch unless ``per_example=False`` (the default for one under
      ``eqx.filter_vmap``, which maps it itself), and named as the module itself below the
      ``eqx.filter_jit`` and ``filter_vmap`` wrappers and a bound method (``model.features``:
      ``lin``, not ``__self__/lin``); a module in a ``static=True`` field runs unnamed (see
      :func:`_equinox_function`). A Linen or NNX ``f`` raises
      ValueError when its array output's first axis is not the batch size of ``x`` (e.g. a
      single example given without its batch axis).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxplain as jp
      >>> model = nn.Dense(3)
      >>> variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
      >>> jp.as_function(model, variables)(jnp.ones((2, 4))).shape
      (2, 3)
    """
    kind = _kind(model)
    if kind == "linen":
        if variables is None:
            raise ValueError("as_function(model, variables): a Flax Linen module needs its variables "
                             "(the dict returned by model.init).")
        if apply_kwargs.get("mutable"):
            raise ValueError("as_function(model, variables, mutable=...): apply would return "
                             "(output, updated variables), not a function of the batch; run the "
                             "model in inference mode instead, e.g. train=False or "
                             "use_running_average=True, so that no collection is updated")
        return _LinenFunction(model, _snapshot(variables), _snapshot(apply_kwargs))
    if variables is not None:
        raise ValueError(f"variables are only used for Flax Linen modules; got them for a {kind} model.")
    if "method" in apply_kwargs and kind in ("nnx", "equinox"):
        _refuse_method(model, kind)
    if kind == "nnx":
        return _nnx_function(model, _snapshot(apply_kwargs))
    if kind == "equinox":
        return _equinox_function(_snapshot(model), _snapshot(apply_kwargs))
    if callable(model):
        if apply_kwargs:
            raise ValueError(f"keyword arguments {sorted(apply_kwargs)} are not used for a plain "
                             f"callable ({type(model).__name__}: a function, also when "
                             f"jax.jit or eqx.filter_jit wraps it), which is returned as is "
                             f"and takes the batch itself: pass it without them.")
        return model
    raise TypeError(f"model must be a Flax Linen/NNX module, an Equinox module or a callable; got "
                    f"{type(model).__name__}")


def _snapshot(tree):
    """A copy of `tree`'s containers (dicts, FrozenDicts, lists, modules) and NumPy leaves, so
    that the caller's later in-place updates (``variables["params"] = new``, ``a[...] = 0``) do
    not reach the function built from it; JAX arrays and other leaves are shared (immutable)."""
    return jax.tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a, tree)


def _refuse_method(model, kind: str) -> None:
    """TypeError, saying how to explain another entry point, when `model` (NNX or Equinox) is
    given Linen's ``method=`` and its ``__call__`` takes no such argument."""
    try:
        params = inspect.signature(type(model).__call__).parameters.values()
    except (TypeError, ValueError):  # no signature to read: refuse, as a call would fail
        params = ()
    if any(p.name == "method" or p.kind is p.VAR_KEYWORD for p in params):
        return  # its __call__ takes method= itself
    library = "a Flax NNX" if kind == "nnx" else "an Equinox"
    subclass = " or a subclass whose __call__ is it" if kind == "nnx" else ""
    raise TypeError(f"as_function(model, method=...): method= is for Flax Linen's apply; "
                    f"{library} model ({type(model).__name__}) is called through `__call__`. To "
                    f"explain another entry point (e.g. from_embeddings), give as_function a "
                    f"module whose `__call__` calls it (a small wrapper module calling "
                    f"`self.model.from_embeddings(e)` keeps the site names, below "
                    f"its attribute: `model/attn`){subclass} (the attribution guide, 'Token models').")


def refuse_module(f, name: str = "f") -> None:
    """TypeError, saying how to wrap it, when `f` is a Flax Linen, Flax NNX or Equinox module
    (or a module class) given where a function of a batch is expected. An NNX module does run
    on a batch, but as itself its sites lose their attribute names and a BatchNorm in training
    mode updates its statistics while the kernel traces it."""
    import flax.linen as nn

    if isinstance(f, type) and issubclass(f, nn.Module):
        raise TypeError(f"{name} is the Flax Linen module class {f.__name__}, not a function of a "
                        f"batch: build it and init its variables, then pass "
                        f"jaxplain.as_function({f.__name__}(...), variables)")
    if isinstance(f, type) and _class_kind(f) is not None:
        raise TypeError(f"{name} is the {_class_kind(f)} module class {f.__name__}, not a "
                        f"function of a batch: build the model, then pass "
                        f"jaxplain.as_function({f.__name__}(...))")
    kind = _kind(f)
    if kind == "nnx":
        raise TypeError(f"{name} is a Flax NNX module ({type(f).__name__}): pass "
                        f"jaxplain.as_function(model), which names its sites by attribute and "
                        f"runs it in evaluation mode")
    if kind == "linen":
        raise TypeError(f"{name} is a Flax Linen module ({type(f).__name__}), not a function of "
                        f"a batch: pass jaxplain.as_function(model, variables)")
    if kind == "equinox":
        raise TypeError(f"{name} is an Equinox module ({type(f).__name__}), not a function of a "
                        f"batch: pass jaxplain.as_function(model), which maps it over the batch "
                        f"(per_example=False when it takes a batch already)")


def _class_kind(cls: type) -> str | None:
    """"Flax NNX" or "Equinox" when `cls` is a module class of theirs, else None."""
    from flax import nnx
    import equinox as eqx

    if issubclass(cls, nnx.Module):
        return "Flax NNX"
    if issubclass(cls, eqx.Module):
        return "Equinox"
    return None


def _kind(model) -> str:
    try:
        import flax.linen as nn
        if isinstance(model, nn.Module):
            return "linen"
    except ImportError:  # pragma: no cover - flax is a dependency
        pass
    try:
        from flax import nnx
        if isinstance(model, nnx.Module):
            return "nnx"
    except ImportError:  # pragma: no cover
        pass
    try:
        import equinox as eqx
        if isinstance(model, eqx.Module) and not _transformed_function(model, eqx.Module):
            return "equinox"
    except ImportError:  # pragma: no cover
        pass
    return "callable"


def _transformed_function(model, module: type) -> bool:
    """True when the Equinox `module` instance `model` is a transformation of a plain function
    (``eqx.filter_jit(f)``, ``eqx.filter_vmap(f)``, nested), which runs as that function does:
    no module of layers and no bound method (whose module is per example)."""
    while isinstance(model, module) and not hasattr(model, "__self__"):
        model = getattr(model, "__wrapped__", None)
    return model is not None and not isinstance(model, module) and not hasattr(model, "__self__")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class _LinenFunction:
    """``x -> model.apply(variables, x, **kwargs)``, a stable callable for one (model, variables)."""

    model: object
    variables: object
    kwargs: dict

    def __call__(self, x):
        return _batch_first(x, self.model.apply(self.variables, x, **self.kwargs), "Flax Linen")

    def __repr__(self) -> str:
        """A summary, not the weights: ``jax.eval_shape``, ``jit`` and error messages format
        ``str(f)``, which printed every array (about 30 ms for a 3M-parameter model)."""
        kwargs = "".join(f", {k}={v!r}" if isinstance(v, (bool, int, float, type(None)))
                         else f", {k}=<{type(v).__name__}>" for k, v in self.kwargs.items())
        return f"as_function({type(self.model).__name__}, {_summary(self.variables)}{kwargs})"


def _summary(variables) -> str:
    """``"params: 4 arrays, 1,234 values; batch_stats: ..."``: each collection's size."""
    collections = variables.items() if hasattr(variables, "items") else [("variables", variables)]
    sizes = [(name, jax.tree.leaves(tree)) for name, tree in collections]
    return "; ".join(f"{name}: {len(leaves)} arrays, {sum(int(jnp.size(a)) for a in leaves):,} "
                     f"values" for name, leaves in sizes)


def _batch_first(x, y, kind: str):
    """`y`, after checking that an array output keeps `x`'s batch size on its first axis.

    Linen and NNX layers accept inputs without a batch axis, so a single example (or an input
    of the wrong rank) may run and return an output of another batch size. Pytree outputs (a
    model returning auxiliary values) are passed as they are.
    """
    if hasattr(y, "shape") and (jnp.ndim(x) == 0 or jnp.ndim(y) == 0 or y.shape[0] != x.shape[0]):
        raise ValueError(f"The {kind} model maps x of shape {tuple(jnp.shape(x))} to an output of "
                         f"shape {tuple(y.shape)}: the batch sizes differ. x must be a batch, the "
                         "model's per-example shape with a batch axis in front.")
    return y


#: The attribute paths of the scoped modules whose calls are running, innermost last.
_CALLING: contextvars.ContextVar[tuple[tuple, ...]] = contextvars.ContextVar("_CALLING",
                                                                           default=())


def _scope_at(path: tuple) -> str:
    """The named scope of the module at `path` for a call made now: `path` relative to the
    innermost module being called that holds it (its scope is open: ``head`` inside ``m``'s
    call), else the whole path (``m/head`` called from the root as ``self.m.head(x)``)."""
    for outer in reversed(_CALLING.get()):
        if len(outer) < len(path) and path[:len(outer)] == outer:
            return "/".join(str(p) for p in path[len(outer):])
    return "/".join(str(p) for p in path)


@functools.lru_cache(maxsize=4096)
def _scoped_class(cls: type, path: tuple) -> type:
    """A subclass of the module class `cls` whose ``__call__`` and public methods run under the
    named scope of `path` (see :func:`_scope_at`): the scoped layer is still an instance of its
    own class, so a model that dispatches on ``isinstance(layer, nnx.Linear)`` runs as written.
    The methods of a layer (``nnx.Embed.attend`` for tied weights) run under its scope too."""
    def scoped(method):
        @functools.wraps(method)
        def run(self, *args, **kw):
            scope = _scope_at(path)
            token = _CALLING.set(_CALLING.get() + (path,))
            try:
                with jax.named_scope(scope):
                    return method(self, *args, **kw)
            finally:
                _CALLING.reset(token)
        return run

    methods = {}
    for name in dir(cls):
        if name == "__call__" or not name.startswith("_"):
            raw = inspect.getattr_static(cls, name)
            raw = getattr(raw, "method", raw)  # Equinox keeps a module's methods wrapped
            if isinstance(raw, types.FunctionType):
                methods[name] = scoped(raw)

    def body(namespace):
        namespace.update(methods, __module__=cls.__module__, __qualname__=cls.__qualname__)
    return types.new_class(cls.__name__, (cls,), exec_body=body)


def _nnx_function(model, kwargs) -> Callable:
    from flax import nnx

    copy = nnx.clone(model)
    copy.eval()
    for path, node in nnx.iter_graph(copy):
        if path and isinstance(node, nnx.Module) and callable(node):
            node.__class__ = _scoped_class(type(node), tuple(path))  # the copy's: not the model's

    # Rebuilt from its arrays at each call, with Variables made in the caller's trace, so that NNX
    # transforms inside the model (nnx.scan over stacked layers) also run under jit and make_jaxpr.
    graphdef, state = nnx.split(copy)
    leaves, treedef = jax.tree_util.tree_flatten(_snapshot(state))

    def f(x):
        module = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
        return _batch_first(x, module(x, **kwargs), "Flax NNX")

    return f


def _rescoped(module, path: tuple):
    """A copy of the Equinox `module` (the same fields) of its :func:`_scoped_class`."""
    copy = object.__new__(_scoped_class(type(module), path))
    for name, value in vars(module).items():
        object.__setattr__(copy, name, value)
    return copy


def _equinox_function(model, kwargs) -> Callable:
    """``f(x)`` of the Equinox `model` (see :func:`as_function`): its callable submodules
    rescoped by attribute path, below its ``eqx.filter_jit`` and ``eqx.filter_vmap`` wrappers
    and a bound method's module (:func:`equinox_unwrapped`), so that the names are the module's own.
    Fields marked ``static=True`` are configuration, not part of the pytree: a module kept in
    one (``act: Callable = eqx.field(static=True)`` holding ``eqx.nn.Lambda(jax.nn.relu)``) is
    not rescoped and runs unnamed, its sites named by what it computes (``relu``), as a plain
    function there would be."""
    import equinox as eqx

    module, wrap, batched = equinox_unwrapped(model)
    per_example = kwargs.pop("per_example", not batched)
    paths = []

    def walk(node, path):
        if isinstance(node, eqx.Module):
            if path and callable(node):
                paths.append(path)
            for field in dataclasses.fields(node):
                if not field.metadata.get("static", False):
                    walk(getattr(node, field.name, None), path + (field.name,))
        elif isinstance(node, (tuple, list)):
            for k, item in enumerate(node):
                walk(item, path + (k,))

    walk(module, ())
    for path in sorted(paths, key=len, reverse=True):
        def where(m, path=path):
            for part in path:
                m = m[part] if isinstance(part, int) else getattr(m, part)
            return m
        module = eqx.tree_at(where, module, replace=_rescoped(where(module), path))
    scoped = wrap(module)

    if per_example:
        def f(x):
            try:
                return jax.vmap(lambda xi: scoped(xi, **kwargs))(x)
            except Exception as err:  # noqa: BLE001 - re-raised, with a hint where one fits
                hint = _per_example_hint(scoped, kwargs, x)
                if not hint:
                    raise
                raise ValueError(f"{err}\n{hint}") from err
        return f
    return lambda x: scoped(x, **kwargs)


def _per_example_hint(model, kwargs, x) -> str:
    """Why mapping the Equinox `model` over the examples of the batch `x` failed, where a
    cause is known, or "": a keyword argument with a leading axis the size of the batch, or a
    model that runs on `x` as a whole (its ``__call__`` takes a batch, or `x` is one example)."""
    batched = [k for k, v in kwargs.items()
               if jnp.ndim(v) >= 1 and jnp.shape(v)[0] == jnp.shape(x)[0]]
    if batched:
        return (f"as_function passes keyword arguments whole to every example of an Equinox "
                f"model (it maps the model over x only), and {batched} has a leading axis the "
                f"size of the batch: per-example inputs go inside x (the attribution guide, "
                f"'Models with several inputs').")
    try:
        jax.eval_shape(lambda x: model(x, **kwargs),
                       jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)))
    except Exception:  # noqa: BLE001 - it fails on the whole batch too: no known cause
        return ""
    return (f"The Equinox model ({type(model).__name__}) runs on x of shape "
            f"{tuple(jnp.shape(x))} as a whole but not on one example of it, as as_function "
            f"maps it over x's first axis: if its __call__ takes a batch itself (e.g. it "
            f"calls jax.vmap), pass as_function(model, per_example=False); if x is one "
            f"example, add the batch axis in front (x[None]).")


@functools.cache
def _wrapper_types() -> tuple[type, type]:
    """The classes of ``eqx.filter_jit``'s and ``eqx.filter_vmap``'s wrappers of a function."""
    import equinox as eqx

    return type(eqx.filter_jit(lambda x: x)), type(eqx.filter_vmap(lambda x: x))


def equinox_unwrapped(model) -> tuple[object, Callable, bool]:
    """``(module, wrap, batched)``: the Equinox module that `model` runs, below its (nested)
    ``eqx.filter_jit`` and ``eqx.filter_vmap`` wrappers and, for a bound method
    (``model.features``), the module it is bound to; ``wrap(m)``, `model` with `m` in that
    module's place (without the ``filter_jit`` wrappers: the kernel compiles ``f`` itself);
    and whether a ``filter_vmap`` maps it over the batch (``per_example=False`` by default)."""
    import equinox as eqx

    jit, vmap = _wrapper_types()
    if isinstance(model, jit):
        return equinox_unwrapped(model.__wrapped__)
    if isinstance(model, vmap):
        module, wrap, _ = equinox_unwrapped(model.__wrapped__)
        return module, lambda m: eqx.tree_at(lambda w: w.__wrapped__, model, wrap(m)), True
    if isinstance(getattr(model, "__self__", None), eqx.Module):  # a module's bound method
        return (model.__self__, lambda m: eqx.tree_at(lambda b: b.__self__, model, m), False)
    return model, lambda m: m, False
