"""The folders jaxplain writes (the model cache, checkpoints, reports): whether one can be
written, and a lock so that two processes do not fill one at once."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def folder_lock(folder: Path, *, busy: Callable[[], Exception] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on `folder` (made if missing) for the block.

    The folder itself is locked, not a lock file in it: nothing is added to what it holds, and
    a folder opened read-only can be locked by a user who may only read it. With `busy` None a
    second process waits for the first; else it raises ``busy()`` at once. No lock where
    ``fcntl`` or a lockable folder is unavailable (Windows, a file system without locks): the
    block runs unlocked.
    """
    with contextlib.ExitStack() as stack:
        try:
            import fcntl

            folder.mkdir(parents=True, exist_ok=True)
            handle = os.open(folder, os.O_RDONLY)
            stack.callback(os.close, handle)
        except (ImportError, OSError):
            handle = None
        if handle is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if busy is None else fcntl.LOCK_NB))
            except BlockingIOError:
                raise busy() from None
            except OSError:  # a file system without locks
                pass
        yield


def cannot_write(folder: Path) -> str | None:
    """Why `folder` cannot be written (``"OSError: Read-only file system"``), or None: it is
    created if missing, and a probe file is made in it and removed. Checked before long work
    whose results would otherwise be lost at the first write."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None
