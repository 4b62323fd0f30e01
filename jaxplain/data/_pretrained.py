"""The pretrained default models, cached with orbax under ``$JAXPLAIN_HOME``.

Two architectures are embedded: ``"cnn"`` (:class:`DigitsCNN`, the default of every section)
and ``"vit"`` (:class:`DigitsViT`, for the transformer methods). A checkpoint is a folder
``<home>/digits_cnn_v<N>/`` (``digits_vit_v<N>/``) holding the orbax-saved variables
(``variables/``) and ``metadata.json`` (architecture, recipe, accuracy, training history and a
SHA-256 of the parameters). It is written into a temporary folder next to it and renamed into
place, so a reader sees a whole checkpoint or none; one that fails to load, or whose
parameters do not match the recorded checksum, is reported and retrained, never used. The
folder gets the umask's permissions (a cache can be shared by a group), and training holds a
lock on the cache folder, so that a second process filling the same cache waits and then
loads rather than training too; under that lock, what a killed save left behind is removed. A
model that cannot be saved (a read-only cache folder) is returned uncached, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxplain.core._folders import folder_lock
from jaxplain.data._digits import SPLIT_SEED, load_digits
from jaxplain.data._model import ARCHITECTURE_VERSION, DigitsCNN
from jaxplain.data._train import BATCH_SIZE, EPOCHS, LEARNING_RATE, TrainHistory, accuracy, train
from jaxplain.data._vit import VIT_VERSION, DigitsViT

#: Seed of the default model's initialisation and shuffles.
TRAIN_SEED = 0
#: Version of the checkpoint folder layout and metadata format.
FORMAT_VERSION = 1
_METADATA = "metadata.json"
_VARIABLES = "variables"


@dataclasses.dataclass(frozen=True)
class _Architecture:
    """An embedded model and its training recipe (part of its checkpoint's identity)."""

    model: type
    version: int
    folder: str
    epochs: int
    learning_rate: float


_ARCHITECTURES = {
    "cnn": _Architecture(DigitsCNN, ARCHITECTURE_VERSION, f"digits_cnn_v{ARCHITECTURE_VERSION}",
                         EPOCHS, LEARNING_RATE),
    "vit": _Architecture(DigitsViT, VIT_VERSION, f"digits_vit_v{VIT_VERSION}", 20, 3e-3),
}
CHECKPOINT_NAME = _ARCHITECTURES["cnn"].folder


def _architecture(name: str) -> _Architecture:
    if name not in _ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(_ARCHITECTURES)}; got {name!r}")
    return _ARCHITECTURES[name]


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What ``metadata.json`` records about the cached default model.

    Attributes:
        path: The checkpoint folder.
        test_accuracy: Accuracy on the test split of :func:`load_digits`.
        checksum: SHA-256 (hex) of the parameters, see :func:`params_checksum`.
        history: The per-epoch :class:`TrainHistory` of the training run.
    """

    path: Path
    test_accuracy: float
    checksum: str
    history: TrainHistory


def home(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$JAXPLAIN_HOME``, else ``~/.cache/jaxplain``."""
    if cache_dir is None:
        cache_dir = os.environ.get("JAXPLAIN_HOME") or Path.home() / ".cache" / "jaxplain"
    return Path(cache_dir).expanduser().resolve()


def params_checksum(variables: Any) -> str:
    """SHA-256 (hex) over every leaf's tree path, dtype, shape and bytes, in tree order."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def pretrained(
    cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True,
    architecture: str = "cnn",
) -> tuple[Any, dict[str, Any]]:
    """The default :class:`DigitsCNN` (or :class:`DigitsViT`) and its trained variables,
    loaded or trained and cached.

    The first call trains the model (about ten seconds on two CPU cores; >= 97% test
    accuracy for the CNN, >= 94% for the ViT) and saves it under :func:`home`; later calls
    load it. A checkpoint that cannot be restored or whose parameters fail the checksum is
    reported with a ``RuntimeWarning`` and replaced by a fresh training run. Where the model
    cannot be saved (a read-only or file-valued cache folder), the trained model is returned
    with a ``RuntimeWarning`` and trained again by the next call.

    Args:
        cache_dir: The cache folder; default ``$JAXPLAIN_HOME`` or ``~/.cache/jaxplain``.
        progress: Show a progress bar while training.
        architecture: ``"cnn"`` (the default model) or ``"vit"`` (a bias-free two-layer
            vision transformer over 2x2 patches, for the transformer methods).

    Returns:
        ``(model, variables)``; ``jaxplain.as_function(model, variables)`` is the classifier.

    Example:
        >>> from jaxplain import data
        >>> model, variables = data.pretrained(progress=False)
        >>> model.apply(variables, data.load_digits().x_test[:2]).shape
        (2, 10)
    """
    arch = _architecture(architecture)
    model = arch.model()
    path = home(cache_dir) / arch.folder
    if path.exists():
        try:
            return model, _restore(path, model, arch)
        except _Unusable as e:
            warnings.warn(
                f"the cached model at {path} is unusable ({e}); retraining it",
                RuntimeWarning,
                stacklevel=2,
            )
    with folder_lock(path.parent):  # of two processes filling it, the second waits, then loads
        if path.exists():  # another process may have trained it while this one waited
            with contextlib.suppress(_Unusable):
                return model, _restore(path, model, arch)
        return model, _train_and_save(path, model, arch, progress=progress)


def checkpoint_info(cache_dir: str | os.PathLike[str] | None = None, *,
                    architecture: str = "cnn") -> CheckpointInfo:
    """Reads the metadata of a cached default model (see :func:`pretrained`).

    Raises:
        FileNotFoundError: If there is no checkpoint in the cache folder yet.
        ValueError: If its metadata is malformed or belongs to another architecture.
    """
    arch = _architecture(architecture)
    path = home(cache_dir) / arch.folder
    if not (path / _METADATA).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; call jaxplain.data.pretrained() first")
    try:
        return _read_metadata(path, arch)
    except _Unusable as e:
        raise ValueError(f"the checkpoint metadata in {path} is unusable: {e}") from None


class _Unusable(Exception):
    """A checkpoint that must not be used (the message says why)."""


def _recipe(arch: _Architecture) -> dict[str, Any]:
    return {
        "architecture": arch.model.__name__,
        "architecture_version": arch.version,
        "format_version": FORMAT_VERSION,
        "train_seed": TRAIN_SEED,
        "split_seed": SPLIT_SEED,
        "epochs": arch.epochs,
        "batch_size": BATCH_SIZE,
        "learning_rate": arch.learning_rate,
    }


def _read_metadata(path: Path, arch: _Architecture) -> CheckpointInfo:
    try:
        meta = json.loads((path / _METADATA).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _Unusable(f"cannot read {_METADATA}: {e}") from None
    if not isinstance(meta, dict):
        raise _Unusable(f"{_METADATA} is not a JSON object")
    recipe = _recipe(arch)
    found = {k: meta.get(k) for k in recipe}
    if found != recipe:
        raise _Unusable(f"{_METADATA} records {found}, expected {recipe}")
    try:
        return CheckpointInfo(
            path=path,
            test_accuracy=float(meta["test_accuracy"]),
            checksum=str(meta["checksum"]),
            history=TrainHistory.from_json(meta["history"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _Unusable(f"{_METADATA} is malformed: {e!r}") from None


def _restore(path: Path, model: Any, arch: _Architecture) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    info = _read_metadata(path, arch)
    x = load_digits().x_test[:1]
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(path / _VARIABLES, abstract)
    except Exception as e:  # orbax/tensorstore raise many types on damaged files
        raise _Unusable(f"orbax cannot restore {_VARIABLES}/: {_cause(e)}") from None
    if params_checksum(variables) != info.checksum:
        raise _Unusable("the parameters do not match the checksum in the metadata")
    return variables


def _cause(e: Exception) -> str:
    """The first line of `e`, without the tensorstore spec (a kilobyte of JSON) it may end with."""
    text = f"{type(e).__name__}: {e}".splitlines()[0].split(" [tensorstore_spec=")[0]
    return text if len(text) <= 500 else text[:499] + "…"


def _train_and_save(path: Path, model: Any, arch: _Architecture, *,
                    progress: bool) -> dict[str, Any]:
    """Trains the model and saves it at `path`, or warns where it cannot be saved (called
    under the cache folder's lock, as is every write to that folder)."""
    digits = load_digits()
    variables, history = train(jax.random.key(TRAIN_SEED), digits, model, epochs=arch.epochs,
                               learning_rate=arch.learning_rate, progress=progress)
    meta = {
        **_recipe(arch),
        "test_accuracy": accuracy(
            lambda x: model.apply(variables, x), digits.x_test, digits.y_test
        ),
        "checksum": params_checksum(variables),
        "history": history.to_json(),
        "jax_version": jax.__version__,
    }
    try:
        _save(path, variables, meta)
    except OSError as e:
        warnings.warn(
            f"the trained model cannot be saved in {path.parent} ({type(e).__name__}: "
            f"{e.strerror or e}); it is used uncached and will be trained again next time. "
            "Set JAXPLAIN_HOME to a writable folder to keep it",
            RuntimeWarning,
            stacklevel=3,
        )
    return variables


def _save(path: Path, variables: Any, meta: dict[str, Any]) -> None:
    """Writes the checkpoint into a temporary folder beside `path`, then renames it into place."""
    import orbax.checkpoint as ocp

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    # Not mkdtemp: its mode 0700 would stay on the renamed folder; mkdir follows the umask.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"
    tmp.mkdir()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / _VARIABLES, variables)
        (tmp / _METADATA).write_text(json.dumps(meta, indent=2) + "\n")
        _move_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_leftovers(path: Path) -> None:
    """Removes the temporary folders of `path` (``.<name>.*.partial``, ``.<name>.*.old``) that
    a killed save left behind. Only under the cache folder's lock: no save is running."""
    for pattern in (f".{path.name}.*.partial", f".{path.name}.*.old"):
        for leftover in path.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(src: Path, dst: Path) -> None:
    """Renames the finished folder ``src`` to ``dst``, replacing an unusable ``dst``."""
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.replace(dst, old / dst.name)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(src, dst)
    except OSError:
        if not dst.exists():  # a concurrent writer may have won the race; theirs is whole too
            raise
