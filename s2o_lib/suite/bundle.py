"""Pretrained-model bundles: a profile's cached runs in one verified ``.tar``, so that students load instead of train.

A bundle holds every run of one profile's model cache (`s2o_lib.zoo.runs_root` ``/<profile>/<method>[-tag]-seedN/``)
and a ``manifest.json``: the profile's name and settings, and per run its method, seed, tag, the training settings
its checkpoint records, the library version, and the sha256 and size of every file. `pack` writes it (and
``<bundle>.sha256`` beside it); `fetch` downloads it (`torch.hub.download_url_to_file`, so ``http(s)://`` and
``file://`` both work) and installs it only when everything checks out:

1. the bundle's sha256 equals the published one: ``#sha256=<hex>`` at the end of the URL when given, else the
   first word of ``<bundle URL>.sha256`` (the ``sha256sum`` format that `pack` writes beside the bundle);
2. the manifest's profile name and settings equal this library's profile (its ``notes`` excepted), and the runs
   trained with the profile's settings (no tag) record exactly the settings `s2o_lib.zoo.fit_settings` gives;
3. every member is a plain file under ``<profile>/`` listed in the manifest (no links, no ``..``, no absolute
   paths), and every file's sha256 and size equal the manifest's.

Files are extracted into a temporary folder inside the cache root and verified there; only then is each run
folder renamed into place (runs already in the cache are kept as they are). A bundle that fails a check raises a
one-line `S2OError` and leaves the cache unchanged. A bundle that cannot be reached (offline, not published)
raises `BundleUnavailable`, which `bundled_run` (a source of `s2o_lib.zoo.trained_model` once
`use_published_bundles` has added it) turns into one printed line before training as usual.

Where the bundle lives: ``$S2O_ZOO_URL`` (``""`` or ``none`` turns the lookup off; ``{profile}`` in it is replaced
by the profile's name), else the project's release asset, `default_url`. In the ``smoke`` profile (CPU, CI, no
network) nothing is looked up unless ``S2O_ZOO_URL`` is set.

Example:
    >>> from s2o_lib.suite.bundle import fetch, pack                                       # doctest: +SKIP
    >>> pack("class", out="s2o-class.tar")    # after run-notebooks --profile class, on a GPU  # doctest: +SKIP
    >>> fetch("class", url="https://example.org/s2o-class.tar")   # checks <url>.sha256        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, is_dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from torch import nn

from .. import __version__, zoo
from ..checkpoint import load_checkpoint
from ..config import Profile, get_profile
from ..errors import S2OError
from ..lock import FolderBusy, folder_lock
from ..models import device_of
from ..settings import settings_diff
from ..train import History
from ..zoo import RUNS_ENV, fit_settings, runs_root

__all__ = [
    "FORMAT_VERSION", "INSTALLED", "MANIFEST", "TIMEOUT", "URL_ENV", "BundleUnavailable", "bundle_url",
    "bundled_run", "default_url", "fetch", "pack", "published_sha256", "recorded_settings", "settings_mismatch",
    "sha256_of", "use_published_bundles",
]


URL_ENV = "S2O_ZOO_URL"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: A marker in ``<root>/<profile>/`` recording the bundle installed there, so it is not downloaded again.
INSTALLED = ".bundle.json"
#: Seconds to wait for the first answer of the bundle's host before calling it unreachable.
TIMEOUT = 10.0
# Bundles already tried in this process: (url, root) -> the reason they are unavailable, or "" once fetched.
_TRIED: dict[tuple[str, str], str] = {}


class BundleUnavailable(S2OError):
    """No bundle could be reached at the URL (offline, a host that does not answer, not published there)."""


def _profile(profile: Profile | str | None) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(profile)


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else runs_root()


def default_url(profile: str) -> str:
    """The release asset of a profile's bundle: ``<Repository>/releases/download/models-v<version>/s2o-<profile>.tar``.

    Args:
        profile: the profile's name.
    """
    from .project import repo_url

    return f"{repo_url().rstrip('/')}/releases/download/models-v{__version__}/s2o-{profile}.tar"


def bundle_url(profile: Profile | str | None = None) -> str | None:
    """Where to look for a profile's bundle: ``$S2O_ZOO_URL``, else `default_url` (``None``: no lookup).

    ``S2O_ZOO_URL=""`` or ``none`` turns the lookup off; a URL ending in ``/`` gets ``s2o-<profile>.tar`` appended
    and ``{profile}`` is replaced by the name. A dry-run profile never looks up. Unset, the ``smoke`` profile looks nothing up (CPU and CI runs stay
    off the network); the other profiles use the project's release asset.

    Args:
        profile: a `Profile`, its name, or ``None`` for the active one.
    """
    resolved = _profile(profile)
    if resolved.dry_run:  # a dry run's tiny models never match a bundle's, and it stays off the network
        return None
    name = resolved.name
    url = os.environ.get(URL_ENV)
    if url is None:
        return None if name == "smoke" else default_url(name)
    url = url.strip()
    if url.lower() in ("", "none"):
        return None
    url = url.replace("{profile}", name)
    return f"{url}s2o-{name}.tar" if url.endswith("/") else url


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), for comparisons with a manifest."""
    return json.loads(json.dumps(value))


#: Profile fields a bundle records but need not share with the local profile.
_UNCOMPARED = ("notes", "precision")


def _profile_settings(profile: Profile) -> dict[str, Any]:
    """What a bundle must agree on with the local profile: every field but ``notes`` and ``precision`` (a speed
    setting: a bundle trained in fp16 on a T4 serves an A100 as well)."""
    return _plain({k: v for k, v in profile.as_dict().items() if k not in _UNCOMPARED})


def recorded_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`s2o_lib.zoo.fit_settings` output flattened to the names `fit` records in a checkpoint's ``meta["settings"]``.

    ``attack``, ``loss``, ``optim`` fields keep their names, ``awp`` fields get ``awp_``, ``evaluation`` fields
    ``eval_``; ``None`` (resolved by `fit` per method) and what `fit` does not record (``speed``) are left out.

    Args:
        settings: `fit`'s keyword arguments, e.g. ``fit_settings(profile, beta=3)``.
    """
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if is_dataclass(value) and not isinstance(value, type):
            prefix = {"awp": "awp_", "evaluation": "eval_"}.get(key, "")
            flat.update({prefix + k: v for k, v in asdict(value).items()})
        elif isinstance(value, (int, float, str, tuple, list)):
            flat[key] = value
    unrecorded = ("precision", "channels_last", "compile")
    return _plain({k: v for k, v in flat.items() if v is not None and k not in unrecorded})


def settings_mismatch(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """The first setting in which a run's recorded settings differ from the expected ones, as ``"lr=0.1 (not 0.05)"``
    (`s2o_lib.settings.settings_diff`, the comparison resume uses too).

    Args:
        recorded: a checkpoint's ``meta["settings"]``.
        expected: flat expected settings (`recorded_settings`); keys the run does not record are skipped.
    """
    differing = settings_diff(recorded, expected)
    return None if not differing else f"{differing[0][0]}={differing[0][1]!r} (this library: {differing[0][2]!r})"


# --------------------------------------------------------------------------------------------- pack
def _run_entry(folder: Path, *, profile: str) -> dict[str, Any]:
    """The manifest's record of one run folder: what its checkpoint says it is, and its files' sha256."""
    state = load_checkpoint(folder / "checkpoint.pt")
    meta = state.get("meta") or {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return {
        "folder": folder.name, "method": meta.get("method"), "seed": meta.get("seed"), "tag": meta.get("tag", ""),
        "dataset": meta.get("dataset"), "model": meta.get("model"), "settings": meta.get("settings"),
        "epochs_done": len((state.get("history") or {}).get("epoch", [])),
        "library_version": state.get("library_version"),
        "files": {p.name: {"sha256": sha256_of(p), "size": p.stat().st_size} for p in files},
        "path": f"{profile}/{folder.name}",
    }


def _no_runs(cache: Path, profile: str) -> S2OError:
    """The error of a profile cache with no run: where it looked, any other cache that holds runs, the way out."""

    here = Path.cwd()
    elsewhere = [c for c in (here / "runs" / profile, here / "notebooks" / "runs" / profile)
                 if c.resolve() != cache.resolve() and any(c.glob("*/checkpoint.pt"))]
    if elsewhere:
        found = elsewhere[0].parent
        return S2OError(f"no trained runs in {cache.resolve()}, but {found} holds some: pass --runs {found} "
                        f"(or set {RUNS_ENV}={found})")
    return S2OError(f"no trained runs in {cache.resolve()} (the model cache; {RUNS_ENV} or --runs names another); "
                    f"the notebooks train them there: `python -m s2o_lib run-notebooks --profile {profile}`")


def _packable(folder: Path) -> None:
    """Refuse a run that is still training or was cut off: `pack` holds its lock, so no run is written while it
    packs (`s2o_lib.lock.FolderBusy` names the process that holds it); a run must have trained every epoch its
    settings plan, and its ``best.pt`` (if any) must load."""
    state = load_checkpoint(folder / "checkpoint.pt")
    done = len((state.get("history") or {}).get("epoch", []))
    planned = ((state.get("meta") or {}).get("settings") or {}).get("epochs", done)
    if done < planned:
        raise S2OError(f"{folder} is incomplete ({done} of {planned} epochs trained); finish it (train it again "
                       "with the same settings, which resumes it) or delete it before packing")
    if (folder / "best.pt").exists():
        load_checkpoint(folder / "best.pt")


def pack(profile: Profile | str | None, *, out: str | Path, root: str | Path | None = None) -> Path:
    """Write a bundle of a profile's cached runs to ``out`` (a ``.tar``) and its sha256 to ``<out>.sha256``.

    Every run folder of ``<root>/<profile>/`` that holds a ``checkpoint.pt`` is packed with all its files. A run
    that another process holds (training) or that trained fewer epochs than planned is refused with an
    `S2OError` naming it, and nothing is written; every run folder stays locked while it is packed.

    Args:
        profile: a `Profile`, its name, or ``None`` for the active one.
        out: the bundle file to write (written to a temporary file, then renamed).
        root: the model cache (default: `s2o_lib.zoo.runs_root`).

    Returns:
        The bundle's path.
    """
    profile = _profile(profile)
    cache = _root(root) / profile.name
    folders = sorted(p.parent for p in cache.glob("*/checkpoint.pt")) if cache.is_dir() else []
    if not folders:
        raise _no_runs(cache, profile.name)
    with ExitStack() as held:
        for folder in folders:
            try:
                held.enter_context(folder_lock(folder))
            except FolderBusy as err:
                raise S2OError(f"{folder} is being written by another process ({err.holder}); wait for its "
                               "training to finish, then pack again") from None
            _packable(folder)
        return _write_bundle(profile, folders, cache, out)


def _write_bundle(profile: Profile, folders: list[Path], cache: Path, out: str | Path) -> Path:
    """`pack` once its runs are held and checked: the manifest, the tar, its sha256."""
    manifest = {
        "format_version": FORMAT_VERSION, "profile": profile.name, "settings": _plain(profile.as_dict()),
        "library_version": __version__, "runs": [_run_entry(f, profile=profile.name) for f in folders],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            for run in manifest["runs"]:
                for name in run["files"]:
                    tar.add(cache / run["folder"] / name, arcname=f"{run['path']}/{name}", recursive=False)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a web server running as another user from serving it
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    Path(f"{out}.sha256").write_text(f"{sha256_of(out)}  {out.name}\n")
    return out


# --------------------------------------------------------------------------------------------- fetch
def _open(url: str, *, timeout: float):
    """Open ``url`` with a timeout; `BundleUnavailable` when it cannot be reached or is not there."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise BundleUnavailable(f"no bundle at {url} (HTTP {err.code})") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise BundleUnavailable(f"cannot reach {url} ({reason})") from err


def published_sha256(url: str, *, timeout: float = TIMEOUT) -> tuple[str, str]:
    """``(bundle URL, its published sha256)``: from ``#sha256=<hex>`` in ``url``, else from ``<url>.sha256``.

    Reading the checksum is also the cheap reachability check, with a ``timeout``: `BundleUnavailable` when the
    host does not answer or the file is missing.

    Args:
        url: the bundle's URL, optionally ending in ``#sha256=<64 hex digits>``.
        timeout: seconds to wait for the host.
    """
    base, _, fragment = url.partition("#")
    if fragment:
        if not fragment.startswith("sha256="):
            raise S2OError(f"the bundle URL's fragment must be '#sha256=<64 hex digits>', got '#{fragment}'")
        expected = fragment.removeprefix("sha256=")
        _open(base, timeout=timeout).close()
    else:
        with _open(f"{base}.sha256", timeout=timeout) as answer:
            words = answer.read(4096).decode("utf-8", "replace").split()
        expected = words[0] if words else ""
    expected = expected.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise S2OError(f"the published sha256 of {base} is not 64 hex digits ({expected[:70]!r}); "
                       "publish `sha256sum` output as <bundle>.sha256 or end the URL with #sha256=<hex>")
    return base, expected


def _check_manifest(manifest: Any, profile: Profile, *, expect: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a manifest for another profile, other profile settings, or runs trained with other settings."""
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise S2OError(f"the bundle's {MANIFEST} is missing or of another format; make it with `zoo pack`")
    if manifest.get("profile") != profile.name:
        raise S2OError(f"the bundle holds the {manifest.get('profile')!r} profile, not {profile.name!r}; "
                       f"fetch s2o-{profile.name}.tar or set {URL_ENV}")
    saved = {k: v for k, v in (manifest.get("settings") or {}).items() if k not in _UNCOMPARED}
    mine = _profile_settings(profile)
    for key in sorted(set(saved) | set(mine)):
        if saved.get(key) != mine.get(key):
            raise S2OError(f"the bundle was made with {profile.name}'s {key}={saved.get(key)!r}, this library has "
                           f"{key}={mine.get(key)!r}; make the bundle again with this version (`zoo pack`)")
    for run in manifest.get("runs") or []:
        wanted = expect.get(run.get("folder"), None if run.get("tag") else expect.get(""))
        problem = settings_mismatch(run.get("settings") or {}, wanted) if wanted else None
        if problem:
            raise S2OError(f"the bundle's run {run.get('folder')} was trained with {problem}; "
                           "make the bundle again with this version (`zoo pack`)")


def _read_members(tar: tarfile.TarFile, manifest: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """The run files the bundle must hold (``<profile>/<run>/<file>`` -> sha256 and size), its members checked:
    plain files only, no absolute paths or ``..``, nothing the manifest does not list."""
    listed: dict[str, dict[str, Any]] = {}
    for run in manifest.get("runs") or []:
        for name, entry in (run.get("files") or {}).items():
            listed[f"{profile}/{run.get('folder')}/{name}"] = entry
    for path in listed:
        parts = PurePosixPath(path).parts
        if len(parts) != 3 or any(p in ("", ".", "..") or "\\" in p for p in parts):
            raise S2OError(f"the bundle's manifest names the unsafe path {path!r}; refusing it")
    for member in tar.getmembers():
        name = member.name
        if name == MANIFEST:
            continue
        if name.startswith("/") or ".." in PurePosixPath(name).parts or not (member.isfile() or member.isdir()):
            raise S2OError(f"the bundle holds the unsafe member {name!r} (a link, an absolute path or '..'); "
                           "refusing it")
        if member.isfile() and name not in listed:
            raise S2OError(f"the bundle holds {name!r}, which its manifest does not list; refusing it")
    return listed


def _extract(tar: tarfile.TarFile, listed: Mapping[str, Mapping[str, Any]], staging: Path) -> None:
    """Write every listed file under ``staging`` (read from the archive, never `extractall`) and check it."""
    for path, entry in listed.items():
        try:
            source = tar.extractfile(path)
        except KeyError:
            source = None
        if source is None:
            raise S2OError(f"the bundle lacks {path}, which its manifest lists; it is incomplete")
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with source, open(target, "wb") as f:
            shutil.copyfileobj(source, f)
        if target.stat().st_size != entry.get("size") or sha256_of(target) != entry.get("sha256"):
            raise S2OError(f"{path} in the bundle does not match its manifest's sha256: the bundle was altered; "
                           "nothing was installed")


def _verify_and_install(archive: Path, profile: Profile, cache: Path, staging: Path,
                        expect: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Check the downloaded archive, extract it into ``staging``, then rename each new run into ``cache``."""
    try:
        with tarfile.open(archive) as tar:
            source = tar.extractfile(MANIFEST) if MANIFEST in tar.getnames() else None
            if source is None:
                raise S2OError(f"the bundle has no {MANIFEST}; make it with `python -m s2o_lib zoo pack`")
            manifest = json.loads(source.read())
            _check_manifest(manifest, profile, expect=expect)
            listed = _read_members(tar, manifest, profile.name)
            _extract(tar, listed, staging)
    except (tarfile.TarError, ValueError, KeyError, TypeError, AttributeError, EOFError, zlib.error) as err:
        if isinstance(err, S2OError):
            raise
        raise S2OError(f"the bundle is not a readable tar with a well-formed {MANIFEST} ({type(err).__name__}); "
                       "make it with `python -m s2o_lib zoo pack`") from err
    cache.mkdir(parents=True, exist_ok=True)
    installed = []
    for run in manifest["runs"]:
        target, staged = cache / run["folder"], staging / profile.name / run["folder"]
        if not target.exists():
            os.replace(staged, target)
            installed.append(target)
        elif not (target / "checkpoint.pt").exists():  # a folder held by `s2o_lib.lock` (its .lock only): fill it
            for file in sorted(staged.iterdir(), key=lambda f: f.name == "checkpoint.pt"):  # checkpoint.pt last
                os.replace(file, target / file.name)
            installed.append(target)
    return installed


def fetch(
    profile: Profile | str | None = None,
    *,
    url: str | None = None,
    root: str | Path | None = None,
    expect: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    timeout: float = TIMEOUT,
) -> list[Path]:
    """Download a profile's bundle, verify it, and unpack its runs into the model cache.

    Args:
        profile: a `Profile`, its name, or ``None`` for the active one.
        url: the bundle (``http(s)://`` or ``file://``; ``#sha256=<hex>`` may end it); ``None``: `bundle_url`.
        root: the model cache (default: `s2o_lib.zoo.runs_root`).
        expect: flat settings (`recorded_settings`) that runs must record, by run folder; key ``""`` applies to
            every untagged run (default: the profile's, ``fit_settings(profile)``).
        progress: show a download progress bar (``TQDM_DISABLE=1`` in the environment hides it too).
        timeout: seconds to wait for the host before `BundleUnavailable`.

    Returns:
        The run folders installed (runs already in the cache are kept and left out).
    """
    import torch.hub

    profile = _profile(profile)
    url = url or bundle_url(profile)
    if not url:
        raise S2OError(f"no bundle URL: pass --url or set {URL_ENV} (it is off for {profile.name})")
    if expect is None:

        expect = {"": recorded_settings(fit_settings(profile))}
    base, expected = published_sha256(url, timeout=timeout)
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=root))
    try:
        archive = staging / "bundle.tar"
        try:
            torch.hub.download_url_to_file(base, str(archive), progress=progress and not os.environ.get("TQDM_DISABLE"))
        except (urllib.error.URLError, OSError) as err:
            raise BundleUnavailable(f"could not download {base} ({getattr(err, 'reason', err)})") from err
        if sha256_of(archive) != expected:
            raise S2OError(f"{base} does not match its published sha256: the bundle was altered or the download "
                           "broke; nothing was installed")
        installed = _verify_and_install(archive, profile, root / profile.name, staging / "files", expect)
        (root / profile.name / INSTALLED).write_text(json.dumps({"url": url, "sha256": expected}))
        return installed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------- the zoo's hook
def _installed_url(marker: Path) -> str | None:
    """The URL of the bundle installed in a profile's cache (`INSTALLED`), ``None`` if unreadable."""
    try:
        return json.loads(marker.read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None


def _unusable(err: S2OError, url: str) -> S2OError:
    """A bundle that was reached but cannot be used, with the way to train instead."""
    return S2OError(f"the pretrained bundle {url} cannot be used: {err}. Set {URL_ENV}=none to train the models "
                    "here instead")


def bundled_run(model: nn.Module, folder: Path, *, profile: Profile, settings: Mapping[str, Any]) -> History | None:
    """The zoo's hook: a run missing from the cache, loaded from the profile's bundle (``None``: train it).

    Looks up `bundle_url` once per process and cache: unreachable, it prints one line and returns ``None`` (the
    caller trains); reachable but invalid, it raises `S2OError`. A run the bundle holds, complete, is loaded into
    ``model`` with ``weights_only=True`` and its `History` returned.

    Args:
        model: the freshly built model of the run, on its device.
        folder: the run's cache folder ``<root>/<profile>/<method>[-tag]-seedN``.
        profile: the profile.
        settings: the run's `fit` settings (`s2o_lib.zoo.fit_settings` with the run's overrides).
    """
    url = bundle_url(profile)
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.exists() or url is None:
        return None
    cache = folder.parent
    key = (url, str(cache.parent.resolve()))
    marker = cache / INSTALLED
    done = marker.is_file() and _installed_url(marker) == url
    if key not in _TRIED and not done:

        expect = {folder.name: recorded_settings(settings), "": recorded_settings(fit_settings(profile))}
        try:
            fetch(profile, url=url, root=cache.parent, expect=expect)
            _TRIED[key] = ""
        except BundleUnavailable as err:
            _TRIED[key] = str(err)
            print(f"no pretrained {profile.name} bundle ({err}); training instead ({URL_ENV}=none skips the lookup)")
        except S2OError as err:
            raise _unusable(err, url) from None
    if not checkpoint.exists():
        return None
    try:
        state = load_checkpoint(checkpoint, model=model, map_location=device_of(model))
    except S2OError as err:
        raise _unusable(err, url) from None
    history = History.from_dict(state["history"])
    return history if len(history.epoch) >= settings.get("epochs", 0) else None


def use_published_bundles() -> None:
    """Let `s2o_lib.zoo.trained_model` look a run missing from the cache up in the profile's bundle (`bundled_run`)
    before training it. The notebooks' set-up (`s2o_lib.suite.notebook_setup.set_up`) and the command line call it;
    calling it again changes nothing."""
    if bundled_run not in zoo.RUN_SOURCES:
        zoo.RUN_SOURCES.append(bundled_run)
