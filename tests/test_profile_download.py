"""CIFAR-10 is downloaded for `class` and `paper` when missing and reachable; `smoke` never touches the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from torchvision.datasets import CIFAR10

import s2o_lib.data
from s2o_lib.config import get_profile
from s2o_lib.data import dataset_missing, download_reachable
from s2o_lib.errors import S2OError
from s2o_lib.zoo import profile_data

from .conftest import write_fake_cifar10


class _Connection:
    def close(self) -> None:
        pass


@pytest.fixture()
def network(monkeypatch):
    """Record connection attempts; ``network.up`` decides whether they succeed. Nothing leaves this machine."""

    class Network:
        def __init__(self) -> None:
            self.up = True
            self.calls: list[tuple[str, int]] = []

        def connect(self, address, timeout=None):
            self.calls.append(address)
            if not self.up:
                raise OSError("Network is unreachable")
            return _Connection()

    net = Network()
    monkeypatch.setattr(socket, "create_connection", net.connect)
    return net


@pytest.fixture()
def fake_download(monkeypatch):
    """CIFAR10.download writes the tiny fake CIFAR-10 of conftest instead of fetching 170 MB."""
    calls = []

    def download(self):  # torchvision's root is <root>/cifar10
        calls.append(self.root)
        if dataset_missing("cifar10", root=Path(self.root).parent):
            write_fake_cifar10(Path(self.root).parent)

    monkeypatch.setattr(CIFAR10, "download", download)
    return calls


def test_smoke_never_touches_the_network(tmp_path, network, fake_download):
    train, test = profile_data(get_profile("smoke"), root=tmp_path)
    assert len(train) > 1000 and len(test) > 300
    assert network.calls == [] and fake_download == []
    assert not download_reachable("digits") and not dataset_missing("digits", root=tmp_path)


@pytest.mark.parametrize("name", ["class", "paper"])
def test_missing_cifar10_is_downloaded_when_reachable(tmp_path, network, fake_download, skip_md5, name):
    profile = get_profile(name).with_(train_subset=10, test_subset=5)
    assert dataset_missing("cifar10", root=tmp_path)
    train, test = profile_data(profile, root=tmp_path)
    assert (len(train), len(test)) == (10, 5)
    assert network.calls == [("www.cs.toronto.edu", 443)]  # torchvision's CIFAR-10 server
    assert fake_download and not dataset_missing("cifar10", root=tmp_path)
    # Present files: no probe, no download.
    network.calls.clear()
    fake_download.clear()
    profile_data(profile, root=tmp_path)
    assert network.calls == [] and fake_download == []


def test_offline_stops_with_the_missing_files_error(tmp_path, network, fake_download):
    network.up = False
    with pytest.raises(S2OError, match=r"cifar10 train was not found.*cifar-10-batches-py.*download=True"):
        profile_data(get_profile("class"), root=tmp_path)
    assert network.calls and fake_download == []


def test_an_explicit_download_flag_is_obeyed(tmp_path, network, fake_download, skip_md5):
    profile = get_profile("class").with_(train_subset=10, test_subset=5)
    with pytest.raises(S2OError, match="was not found"):
        profile_data(profile, root=tmp_path, download=False)
    assert network.calls == [] and fake_download == []
    profile_data(profile, root=tmp_path, download=True)
    assert fake_download and network.calls == []  # asked for: no probe first


def test_dataset_missing_checks_every_cifar_file(tmp_path):
    write_fake_cifar10(tmp_path)
    assert not dataset_missing("cifar10", root=tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert dataset_missing("cifar10", root=tmp_path)
    assert s2o_lib.data.dataset_missing("cifar100", root=tmp_path)
