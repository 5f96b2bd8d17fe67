"""One writer per output folder: an exclusive ``fcntl.flock`` on ``DIR/.lock`` held for a whole run.

Two runs writing into one folder (two ``train`` commands with the same ``--out``, two notebooks training the
same cached model) would overwrite each other's checkpoints. `folder_lock` lets only one process at a time
hold a folder; the other either fails at once, naming the process that holds it (the command line), or
waits for it and then reads what it wrote (`s2o_lib.zoo`). The operating system releases the lock when its
process ends, however it ends (exit, Ctrl-C, ``kill -9``), so a crash never leaves a folder locked. The lock
is re-entrant within one process (`s2o_lib.train.fit` takes it again inside the command line's lock).
Under ``torchrun`` only rank 0 writes checkpoints, so only rank 0 takes the lock (`writes_here`). On systems
without ``fcntl`` (Windows) it locks nothing.

Example:
    >>> from s2o_lib.lock import folder_lock                     # doctest: +SKIP
    >>> with folder_lock("runs/at"):                             # FolderBusy if another process holds it
    ...     fit(model, loader, method="at", epochs=10, checkpoint_dir="runs/at")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import S2OError

__all__ = [
    "LOCK_NAME", "FolderBusy", "folder_lock", "lock_holder", "writes_here",
]


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # folders this process holds, with their nesting depth


class FolderBusy(S2OError):
    """Another process holds the folder's lock.

    Attributes:
        folder: the folder.
        holder: who holds it, e.g. ``"pid 1234"`` (`lock_holder`).
    """

    def __init__(self, folder: Path, holder: str) -> None:
        self.folder, self.holder = folder, holder
        super().__init__(f"{folder} is in use by another run ({holder}); wait for it to finish, or write into "
                         "another folder")


def writes_here() -> bool:
    """Whether this process writes the run's files: yes, except the ranks other than 0 of a ``torchrun`` launch
    (``RANK`` in the environment), whose rank 0 writes them."""
    return os.environ.get("RANK", "0") == "0"


def lock_holder(folder: str | Path) -> str:
    """Who holds (or last held) ``folder``'s lock, as written in ``DIR/.lock`` (e.g. ``"pid 1234"``)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text().strip()
    except OSError:
        return "an unknown process"
    return f"pid {text}" if text.isdigit() else (text or "an unknown process")


def _acquire(fd: int, folder: Path, *, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        if not wait:
            raise FolderBusy(folder, lock_holder(folder)) from None
    print(f"waiting for {lock_holder(folder)}, which is writing into {folder} ...", file=sys.stderr, flush=True)
    fcntl.flock(fd, fcntl.LOCK_EX)


@contextmanager
def folder_lock(folder: str | Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold ``folder``'s exclusive lock (``DIR/.lock``, holding this process's id) while the block runs.

    Args:
        folder: the output folder; created if missing.
        wait: wait until the other process releases it (``False``: raise `FolderBusy` at once).

    Yields:
        The folder, as a `Path`.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _HELD or fcntl is None or not writes_here():
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, folder, wait=wait)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock
