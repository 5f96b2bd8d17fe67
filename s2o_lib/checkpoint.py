"""Checkpoints that are never half-written and load with ``torch.load(weights_only=True)``.

A checkpoint is a dictionary of tensors and plain Python values only (no pickled objects), written to a
temporary file in the same folder, flushed to disk and renamed over the old one, so an interrupted
write leaves the previous checkpoint intact.

Example:
    >>> from s2o_lib.checkpoint import save_checkpoint, load_checkpoint   # doctest: +SKIP
    >>> save_checkpoint("runs/at/checkpoint.pt", {"model": model.state_dict(), "meta": {...}})
    >>> state = load_checkpoint("runs/at/checkpoint.pt", model=model)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import S2OError
from .models import build_from_spec, model_spec

FORMAT_VERSION = 1
TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _umask_mode() -> int:
    """The mode a new file gets from ``open`` under the current umask (0644 with the usual umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the system allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (temp file, fsync, rename, fsync of the folder).

    The file gets the permissions of any new file under the umask (``mkstemp``'s 0600 is not kept).

    Args:
        path: destination file; its folder is created if missing.
        state: tensors and plain Python values (what ``weights_only=True`` can load back).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "format_version": FORMAT_VERSION, "library_version": __version__}
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(f.fileno(), _umask_mode())
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that `save_checkpoint` leaves when its process is killed mid-write.

    Call it only while holding the folder (`s2o_lib.lock.folder_lock`): another writer's temporary file is
    not stale.

    Args:
        folder: a checkpoint folder.

    Returns:
        The files removed.
    """
    stale = [p for p in Path(folder).glob(f".*{TEMPORARY_SUFFIX}") if p.is_file() and ".pt." in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(
    path: str | Path, *, model: nn.Module | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``), optionally into ``model``.

    Args:
        path: the checkpoint file.
        model: if given, its architecture is checked against the checkpoint's and the weights are loaded.
        map_location: where tensors are loaded (default: CPU).

    Returns:
        The checkpoint dictionary (``model``, ``meta`` and, for training checkpoints, optimiser state).
    """
    path = Path(path)
    if not path.is_file():
        raise S2OError(f"no checkpoint at {path}; train one with `python -m s2o_lib train ... --out {path.parent}`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    # Any failure to unpickle (UnpicklingError, EOFError, BadZipFile, or IndexError on random bytes)
    # means the file is unusable; say so once instead of showing torch's internals.
    except Exception as err:
        raise S2OError(
            f"could not read checkpoint {path}: the file is corrupted, truncated or not an S²O checkpoint "
            f"({type(err).__name__}); delete it and train again"
        ) from err
    if not isinstance(state, dict) or "model" not in state:
        raise S2OError(f"{path} is not an S²O checkpoint (no 'model' entry); save one with save_checkpoint")
    if model is not None:
        load_weights(model, state, source=str(path))
    return state


def architecture_mismatch(model: nn.Module, state: dict[str, Any]) -> str | None:
    """How the model a checkpoint recorded (``state["meta"]["model"]``) differs from ``model``'s architecture, as
    ``"holds a ... model (key=...) but the model given is ..."``; ``None`` when it does not or is not recorded."""
    saved = (state.get("meta") or {}).get("model") or {}
    mine = model_spec(model)
    for key in ("arch", "num_classes", "in_channels"):
        if saved.get(key) is not None and mine.get(key) is not None and saved[key] != mine[key]:
            return (f"holds a {saved.get('arch')} model ({key}={saved[key]!r}) but the model given is "
                    f"{mine.get('arch')} ({key}={mine[key]!r})")
    return None


def load_weights(model: nn.Module, state: dict[str, Any], *, source: str = "checkpoint") -> None:
    """Load ``state["model"]`` into ``model`` after checking that the architectures match."""
    mismatch = architecture_mismatch(model, state)
    if mismatch:
        raise S2OError(f"{source} {mismatch}; build the same architecture or use s2o_lib.checkpoint.load_model")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise S2OError(
            f"{source} does not fit this model ({first}); it was saved from a different architecture"
        ) from err


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights.

    Returns:
        ``(model, meta)`` with the model in eval mode.
    """
    state = load_checkpoint(path, map_location=map_location)
    meta = state.get("meta") or {}
    spec = meta.get("model")
    if not spec or spec.get("num_classes") is None:
        raise S2OError(f"{path} does not record its architecture; build the model yourself and pass it to load_checkpoint")
    model = build_from_spec(spec).to(map_location)
    load_weights(model, state, source=str(path))
    model.eval()
    return model, meta
