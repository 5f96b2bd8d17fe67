"""Pretrained-model bundles (s2o_lib.suite.bundle), served by a real HTTP server (`python -m http.server`)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from s2o_lib import train as train_module
from s2o_lib import zoo
from s2o_lib.config import PROFILES, get_profile
from s2o_lib.errors import S2OError
from s2o_lib.suite import bundle
from s2o_lib.suite.cli import main

pytestmark = pytest.mark.usefixtures("one_thread", "published_bundles")

# The smoke profile shrunk to train in a second; its name stays "smoke", so its bundle is a smoke bundle.
TINY = dataclasses.replace(get_profile("smoke"), epochs=1, train_subset=128, test_subset=32, eval_n=32)
METHODS = ("standard", "at")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cache with two tiny smoke runs, and their (model, history)."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(bundle.URL_ENV, raising=False)
        runs = {m: zoo.trained_model(m, profile=TINY, root=root, progress=False) for m in METHODS}
    return root, runs


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained):
    """``(folder, base URL)``: a `python -m http.server` on a free localhost port serving ``folder``, which holds
    the packed tiny smoke bundle ``s2o-smoke.tar`` and its ``.sha256``."""
    folder = tmp_path_factory.mktemp("served")
    bundle.pack(TINY, out=folder / "s2o-smoke.tar", root=trained[0])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/s2o-smoke.tar.sha256", timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the HTTP server did not start")
    yield folder, base
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def fresh_lookups(monkeypatch):
    """Every test starts with no bundle tried in this process and no S2O_ZOO_URL."""
    monkeypatch.setattr(bundle, "_TRIED", {})
    monkeypatch.delenv(bundle.URL_ENV, raising=False)


def _no_training(monkeypatch) -> list[str]:
    """Make training an epoch fail; returns the list of methods `zoo.fit` is called with (it resumes cached runs)."""
    def train_epoch(self, epoch):
        raise AssertionError("an epoch was trained: the model was trained instead of loaded")

    calls: list[str] = []
    real_fit = zoo.fit
    monkeypatch.setattr(train_module._Training, "train_epoch", train_epoch)
    monkeypatch.setattr(zoo, "fit", lambda *a, **k: calls.append(k["method"]) or real_fit(*a, **k))
    return calls


def _rewrite(source: Path, out: Path, *, change=None, extra: list[tarfile.TarInfo] = (), manifest=None) -> Path:
    """Copy a bundle, changing members' bytes (``change(name, data) -> data``), the manifest, or adding members;
    publish the copy's own sha256 beside it (so that only the per-file checks can catch the change)."""
    with tarfile.open(source) as tar, tarfile.open(out, "w") as new:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name == bundle.MANIFEST and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            elif change is not None:
                data = change(member.name, data)
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
        for info in extra:
            new.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    Path(f"{out}.sha256").write_text(f"{hashlib.sha256(out.read_bytes()).hexdigest()}  {out.name}\n")
    return out


def _untouched(cache: Path) -> None:
    """The cache holds nothing of a refused bundle: no file but the lock files of `s2o_lib.lock` (the zoo holds
    a run's folder while it looks for the bundle), no staging folder."""
    left = [p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"] if cache.exists() else []
    assert not left, left
    assert not list(cache.glob(".bundle-*")) if cache.exists() else True


def test_pack_writes_a_manifest_with_every_file(server, trained):
    folder, _ = server
    archive = folder / "s2o-smoke.tar"
    assert archive.stat().st_mode & 0o777 == 0o644  # a web server running as another user can read it
    assert (folder / "s2o-smoke.tar.sha256").read_text().split()[0] == hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile(bundle.MANIFEST).read())
        names = set(tar.getnames())
    assert manifest["profile"] == "smoke" and manifest["settings"]["epochs"] == 1
    runs = {run["method"]: run for run in manifest["runs"]}
    assert set(runs) == set(METHODS)
    for method, run in runs.items():
        assert (run["seed"], run["tag"], run["folder"]) == (0, "", f"{method}-seed0")
        assert run["settings"]["epochs"] == 1 and run["library_version"]
        assert {"checkpoint.pt", "best.pt"} <= set(run["files"])
        for name, entry in run["files"].items():
            local = trained[0] / "smoke" / run["folder"] / name
            assert entry == {"sha256": bundle.sha256_of(local), "size": local.stat().st_size}
            assert f"smoke/{run['folder']}/{name}" in names


def test_empty_cache_fetches_and_loads_without_training(server, trained, tmp_path, monkeypatch, capsys):
    fit_calls = _no_training(monkeypatch)
    monkeypatch.setenv(bundle.URL_ENV, f"{server[1]}/s2o-smoke.tar")
    cache = tmp_path / "cache"
    for method in METHODS:  # the first fetches the bundle (fit is not called); the second finds its run cached
        model, history = zoo.trained_model(method, profile=TINY, root=cache, progress=False)
        want_model, want_history = trained[1][method]
        for (name, got), want in zip(model.state_dict().items(), want_model.state_dict().values(), strict=True):
            assert torch.equal(got.cpu(), want.cpu()), name
        assert history == want_history and not model.training
    assert sorted(p.name for p in (cache / "smoke").iterdir() if p.is_dir()) == ["at-seed0", "standard-seed0"]
    assert fit_calls == ["at"]  # "standard" came straight from the bundle; "at" resumed its complete checkpoint
    assert not list(cache.glob(".bundle-*"))
    assert "no pretrained" not in capsys.readouterr().out


def test_a_run_the_bundle_lacks_is_trained_and_the_bundle_is_fetched_once(server, tmp_path, monkeypatch):
    monkeypatch.setenv(bundle.URL_ENV, f"{server[1]}/s2o-smoke.tar")
    calls = []
    real_fetch = bundle.fetch
    monkeypatch.setattr(bundle, "fetch", lambda *a, **k: calls.append(1) or real_fetch(*a, **k))
    monkeypatch.setattr(zoo, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyError("trains")))
    cache = tmp_path / "cache"
    for _ in range(2):
        with pytest.raises(KeyError, match="trains"):
            zoo.trained_model("trades", profile=TINY, root=cache, progress=False)
    bundle._TRIED.clear()  # a new process (the next notebook) sees the marker instead
    with pytest.raises(KeyError, match="trains"):
        zoo.trained_model("mart", profile=TINY, root=cache, progress=False)
    assert len(calls) == 1 and (cache / "smoke" / "at-seed0" / "checkpoint.pt").is_file()


def test_file_url_and_url_fragment_checksum(server, tmp_path):
    archive = server[0] / "s2o-smoke.tar"
    url = f"{archive.as_uri()}#sha256={bundle.sha256_of(archive)}"
    installed = bundle.fetch(TINY, url=url, root=tmp_path, progress=False)
    assert sorted(p.name for p in installed) == ["at-seed0", "standard-seed0"]
    with pytest.raises(S2OError, match="published sha256"):
        bundle.fetch(TINY, url=f"{archive.as_uri()}#sha256={'0' * 64}", root=tmp_path / "other", progress=False)
    _untouched(tmp_path / "other")


def test_a_tampered_file_is_refused_and_the_cache_stays_empty(server, tmp_path, monkeypatch):
    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith("at-seed0/checkpoint.pt") else data

    _rewrite(server[0] / "s2o-smoke.tar", server[0] / "tampered.tar", change=flip)
    _no_training(monkeypatch)
    monkeypatch.setenv(bundle.URL_ENV, f"{server[1]}/tampered.tar")
    cache = tmp_path / "cache"
    with pytest.raises(S2OError, match="does not match its manifest's sha256") as err:
        zoo.trained_model("standard", profile=TINY, root=cache, progress=False)
    assert "\n" not in str(err.value)
    _untouched(cache)


def test_a_bundle_that_differs_from_its_published_sha256_is_refused(server, tmp_path):
    folder = server[0]
    (folder / "swapped.tar").write_bytes((folder / "s2o-smoke.tar").read_bytes() + b"\0" * 512)
    (folder / "swapped.tar.sha256").write_text((folder / "s2o-smoke.tar.sha256").read_text())
    with pytest.raises(S2OError, match="does not match its published sha256"):
        bundle.fetch(TINY, url=f"{server[1]}/swapped.tar", root=tmp_path, progress=False)
    _untouched(tmp_path)


def test_a_bundle_of_another_profile_or_other_settings_is_refused(server, tmp_path):
    url = f"{server[1]}/s2o-smoke.tar"
    with pytest.raises(S2OError, match="holds the 'smoke' profile, not 'class'"):
        bundle.fetch("class", url=url, root=tmp_path, progress=False)
    with pytest.raises(S2OError, match="smoke's epochs=1, this library has epochs=6"):
        bundle.fetch("smoke", url=url, root=tmp_path, progress=False)
    assert not (tmp_path / "class").exists()
    _untouched(tmp_path)


def test_a_run_trained_with_other_settings_is_refused(server, tmp_path):
    def other_lr(manifest):
        manifest["runs"][0]["settings"]["lr"] = 0.5
        return manifest

    _rewrite(server[0] / "s2o-smoke.tar", server[0] / "other-lr.tar", manifest=other_lr)
    with pytest.raises(S2OError, match="trained with lr=0.5"):
        bundle.fetch(TINY, url=f"{server[1]}/other-lr.tar", root=tmp_path, progress=False)
    _untouched(tmp_path)


@pytest.mark.parametrize("attack", ["dotdot-member", "symlink", "manifest-folder"])
def test_path_traversal_is_refused(server, tmp_path, attack):
    extra, manifest = [], None
    if attack == "dotdot-member":
        extra = [tarfile.TarInfo("smoke/../../evil.txt")]
        extra[0].size = 4
    elif attack == "symlink":
        link = tarfile.TarInfo("smoke/at-seed0/link.pt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        extra = [link]
    else:
        def manifest(m):
            m["runs"][0]["folder"] = "../../evil"
            return m
    name = f"{attack}.tar"
    _rewrite(server[0] / "s2o-smoke.tar", server[0] / name, extra=extra, manifest=manifest)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(S2OError, match="unsafe"):
        bundle.fetch(TINY, url=f"{server[1]}/{name}", root=cache, progress=False)
    _untouched(cache)
    assert not [p for p in tmp_path.rglob("*") if "evil" in p.name or p.is_symlink()]


def test_the_subject_alone_never_looks_a_bundle_up(server, tmp_path, monkeypatch):
    """`s2o_lib.zoo` imports nothing of the suite: until `use_published_bundles`, a set S2O_ZOO_URL is not read."""
    monkeypatch.setattr(zoo, "RUN_SOURCES", [])
    monkeypatch.setenv(bundle.URL_ENV, f"{server[1]}/s2o-smoke.tar")
    monkeypatch.setattr(bundle, "fetch", lambda *a, **k: pytest.fail("fetched without the suite's source"))
    monkeypatch.setattr(zoo, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyError("trains")))
    with pytest.raises(KeyError, match="trains"):
        zoo.trained_model("standard", profile=TINY, root=tmp_path, progress=False)
    bundle.use_published_bundles()
    bundle.use_published_bundles()  # twice: still one source
    assert zoo.RUN_SOURCES == [bundle.bundled_run]


def test_unreachable_bundle_falls_through_to_training_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(bundle.URL_ENV, f"http://127.0.0.1:{_free_port()}/s2o-smoke.tar")
    monkeypatch.setattr(zoo, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyError("trains")))
    for method in METHODS:
        with pytest.raises(KeyError, match="trains"):
            zoo.trained_model(method, profile=TINY, root=tmp_path, progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("no pretrained smoke bundle (cannot reach http://127.0.0.1:")


def test_a_bundle_that_is_not_published_is_unavailable(server, tmp_path):
    with pytest.raises(bundle.BundleUnavailable, match="HTTP 404"):
        bundle.fetch(TINY, url=f"{server[1]}/missing.tar", root=tmp_path, progress=False)
    with pytest.raises(bundle.BundleUnavailable, match="cannot reach"):
        bundle.fetch(TINY, url=(tmp_path / "missing.tar").as_uri(), root=tmp_path, progress=False)
    _untouched(tmp_path)


def test_bundle_url_comes_from_the_environment_or_the_release(monkeypatch):
    assert bundle.bundle_url("smoke") is None  # CPU and CI: no lookup unless asked
    assert bundle.bundle_url("class") == (
        "https://github.com/s2o-tutorials/s2o-tutorials/releases/download/models-v0.1.0/s2o-class.tar")
    monkeypatch.setenv("S2O_REPO_URL", "https://example.org/fork/")
    assert bundle.bundle_url("class") == "https://example.org/fork/releases/download/models-v0.1.0/s2o-class.tar"
    for off in ("", "none", " None "):
        monkeypatch.setenv(bundle.URL_ENV, off)
        assert bundle.bundle_url("class") is None
    monkeypatch.setenv(bundle.URL_ENV, "https://h/{profile}/models/")
    assert bundle.bundle_url("smoke") == "https://h/smoke/models/s2o-smoke.tar"
    monkeypatch.setenv(bundle.URL_ENV, "file:///b.tar#sha256=ab")
    assert bundle.bundle_url("paper") == "file:///b.tar#sha256=ab"


def test_cli_pack_and_fetch(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(PROFILES, "smoke", TINY)
    out = tmp_path / "s2o-smoke.tar"
    assert main(["zoo", "pack", "--profile", "smoke", "--out", str(out), "--runs", str(trained[0])]) == 0
    assert out.is_file() and Path(f"{out}.sha256").is_file()
    cache = tmp_path / "cache"
    args = ["zoo", "fetch", "--profile", "smoke", "--url", out.as_uri(), "--runs", str(cache), "--no-progress"]
    assert main(args) == 0
    assert "installed 2 run(s): at-seed0, standard-seed0" in capsys.readouterr().out
    assert main(args) == 0 and "all were cached already" in capsys.readouterr().out
    args[args.index("smoke")] = "class"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the bundle holds the 'smoke' profile") and err.count("\n") == 1


@pytest.mark.parametrize("content", [b"not a tar" * 100, "manifest"])
def test_an_unreadable_bundle_is_refused_in_one_line(tmp_path, content):
    archive = tmp_path / "bad.tar"
    if content == "manifest":
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(bundle.MANIFEST)
            info.size = 8
            tar.addfile(info, io.BytesIO(b"{broken "))
    else:
        archive.write_bytes(content)
    url = f"{archive.as_uri()}#sha256={bundle.sha256_of(archive)}"
    with pytest.raises(S2OError, match="not a readable tar with a well-formed manifest.json") as err:
        bundle.fetch(TINY, url=url, root=tmp_path / "cache", progress=False)
    assert "\n" not in str(err.value)
    _untouched(tmp_path / "cache")
