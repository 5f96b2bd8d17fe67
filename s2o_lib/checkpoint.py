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

__all__ = [
    "BEST_NAME", "CHECKPOINT_NAME", "FORMAT_VERSION", "TEMPORARY_SUFFIX", "architecture_mismatch",
    "load_checkpoint", "load_model", "load_weights", "remove_stale_temporaries", "restore_best", "save_checkpoint",
]


FORMAT_VERSION = 1
TEMPORARY_SUFFIX = ".tmp"
#: The files of a run folder (`s2o_lib.train.fit`): the resumable checkpoint and the best-robust weights.
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"


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
        way_out = (f"`trained_model` or `python -m s2o_lib train --out {path.parent}` with the run's settings "
                   "writes it again from the run (`restore_best`)" if path.name == BEST_NAME
                   else "delete it and train again")
        raise S2OError(
            f"could not read checkpoint {path}: the file is corrupted, truncated or not an S²O checkpoint "
            f"({type(err).__name__}); {way_out}"
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


def _sound(path: Path) -> bool:
    """Whether ``path`` loads with ``weights_only=True`` as a checkpoint with weights."""
    try:
        load_checkpoint(path)
    except S2OError:
        return False
    return True


def restore_best(folder: str | Path) -> Path | None:
    """Write a run's ``best.pt`` again when it is missing or does not load (truncated, damaged, not a checkpoint).

    ``best.pt`` holds the epoch with the best per-epoch PGD accuracy (``history["best_epoch"]``; `s2o_lib.train.fit`
    writes it whenever that accuracy improves, on the evaluation subset). The weights still on disk are the last
    epoch's (``checkpoint.pt``) and those kept by ``fit(keep_every=...)`` (``epoch_NNN.pt``), and the history
    records every epoch's PGD accuracy, so no re-evaluation is needed:

    1. the best epoch's weights are among them (it is the last epoch, or it was kept): copied, exactly what was
       lost;
    2. else they are gone, and the epoch with the best recorded PGD accuracy among those on disk (the first of
       equals, as `fit` picks) takes its place: ``meta["epoch"]`` says which epoch ``best.pt`` holds,
       ``meta["best_fallback"]`` says why, and one line is printed. (Only retraining could bring the lost epoch
       back, exactly only where training is deterministic.)

    Nothing is done for a run without a per-epoch evaluation (no ``best_epoch``: it never had a ``best.pt``).
    Call it while holding the folder (`s2o_lib.lock.folder_lock`); `fit` calls it after every run.

    Args:
        folder: a run folder holding ``checkpoint.pt``.

    Returns:
        The ``best.pt`` written, ``None`` when it was sound (or the run has none).
    """
    folder = Path(folder)
    best = folder / BEST_NAME
    if not (folder / CHECKPOINT_NAME).is_file() or (best.exists() and _sound(best)):
        return None
    state = load_checkpoint(folder / CHECKPOINT_NAME)
    history = state.get("history") or {}
    wanted, epochs = history.get("best_epoch"), history.get("epoch") or []
    if wanted is None or not epochs:
        return None
    robust = dict(zip(epochs, history.get("eval_robust") or [], strict=False))
    on_disk = {epochs[-1]: folder / CHECKPOINT_NAME}
    on_disk.update({e: folder / f"epoch_{e:03d}.pt" for e in epochs[:-1]
                    if (folder / f"epoch_{e:03d}.pt").is_file() and _sound(folder / f"epoch_{e:03d}.pt")})
    chosen = wanted if wanted in on_disk else max(sorted(on_disk), key=lambda e: robust.get(e) or -1.0)
    source = state if chosen == epochs[-1] else load_checkpoint(on_disk[chosen])
    meta = {**(source.get("meta") or {}), "epoch": chosen}
    if chosen != wanted:
        meta["best_fallback"] = (f"epoch {wanted}'s weights were lost; epoch {chosen} has the best PGD accuracy "
                                 f"({robust.get(chosen)}) of the epochs still on disk")
        print(f"{best} was missing or damaged and epoch {wanted}'s weights are gone: it now holds epoch {chosen}, "
              "the best left (fit(keep_every=1) keeps every epoch)")
    return save_checkpoint(best, {"model": source["model"], "meta": meta, "history": source.get("history", history)})
