"""Datasets: the bundled digits, the real torchvision path on a tiny CIFAR-10 written to disk, loaders."""

from __future__ import annotations

import os
import struct
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from s2o_lib.data import (
    DATASETS,
    batch_slices,
    dataset_info,
    holds_uint8_images,
    is_augmented,
    load_dataset,
    make_loader,
    tensors,
)
from s2o_lib.errors import S2OError

from .conftest import CIFAR_TEST, write_fake_cifar10

N_DIGITS = 1797  # size of scikit-learn's bundled digits


# --------------------------------------------------------------------------- digits


def test_digits_shapes_dtype_range_and_classes():
    for split in ("train", "test"):
        x, y = tensors(load_dataset("digits", split))
        assert x.shape[1:] == (1, 16, 16)
        assert x.dtype == torch.float32 and y.dtype == torch.long
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert float(x.max()) > 0.9  # really scaled to [0, 1], not left at /255 or similar
        assert sorted(y.unique().tolist()) == list(range(10))
        image, label = load_dataset("digits", split)[0]
        assert image.shape == (1, 16, 16) and int(label) in range(10)


def test_digits_split_is_a_fixed_stratified_80_20_partition():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == N_DIGITS
    assert len(test) == 360  # ceil(0.2 * 1797)
    # Same split on every call (and, being seeded by random_state=0, on every machine).
    x2, y2 = tensors(load_dataset("digits", "train"))
    assert torch.equal(x2, tensors(train)[0]) and torch.equal(y2, tensors(train)[1])

    # The two splits together are exactly the dataset, preprocessed as documented (/16, bilinear to 16x16):
    # compared as multisets, because the digits hold a few exact duplicate images.
    digits = load_digits()
    full = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    full = F.interpolate(full, size=16, mode="bilinear", align_corners=False).clamp(0, 1)

    def multiset(x, y):
        return Counter((xi.numpy().tobytes(), int(yi)) for xi, yi in zip(x, y, strict=True))

    x_tr, y_tr = tensors(train)
    x_te, y_te = tensors(test)
    assert multiset(x_tr, y_tr) + multiset(x_te, y_te) == multiset(full, torch.as_tensor(digits.target))

    # And it is the documented split (random_state=0), so results match across machines and releases.
    from sklearn.model_selection import train_test_split

    idx_tr, idx_te = train_test_split(range(N_DIGITS), test_size=0.2, random_state=0, stratify=digits.target)
    assert torch.equal(x_tr, full[idx_tr]) and torch.equal(x_te, full[idx_te])
    assert y_te.tolist() == digits.target[idx_te].tolist()

    # Stratified: each class keeps its share in the test split (to within rounding).
    totals = Counter(digits.target.tolist())
    in_test = Counter(y_te.tolist())
    for c in range(10):
        assert abs(in_test[c] - 0.2 * totals[c]) <= 1


def test_digits_datasets_are_fresh_copies():
    a = load_dataset("digits", "train")
    a.tensors[0].zero_()
    b = load_dataset("digits", "train")
    assert a is not b and float(b.tensors[0].max()) > 0.9


def test_digits_info_mean_std_match_the_training_split():
    x, _ = tensors(load_dataset("digits", "train"))
    info = dataset_info("digits")
    assert abs(float(x.mean()) - info.mean[0]) < 0.005
    assert abs(float(x.std()) - info.std[0]) < 0.005


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion-mnist"])
def test_augment_is_refused_for_images_that_are_not_32x32(name, tmp_path):
    with pytest.raises(S2OError, match="augment=False"):
        load_dataset(name, "train", root=tmp_path, augment=True)


def test_digits_subset_size_and_determinism():
    full_x, _ = tensors(load_dataset("digits", "train"))
    a = load_dataset("digits", "train", subset=100, seed=1)
    b = load_dataset("digits", "train", subset=100, seed=1)
    c = load_dataset("digits", "train", subset=100, seed=2)
    assert len(a) == 100
    assert torch.equal(tensors(a)[0], tensors(b)[0])
    assert not torch.equal(tensors(a)[0], tensors(c)[0])
    assert not torch.equal(tensors(a)[0], full_x[:100])  # random, not the first 100
    rows = {x.numpy().tobytes() for x in full_x}
    assert all(x.numpy().tobytes() in rows for x in tensors(a)[0])  # drawn from the split asked for


@pytest.mark.parametrize("subset", [0, -3, N_DIGITS])
def test_subset_out_of_range_is_an_s2o_error(subset):
    with pytest.raises(S2OError, match="subset"):
        load_dataset("digits", "train", subset=subset)


def test_unknown_dataset_and_split():
    with pytest.raises(S2OError) as info:
        load_dataset("imagenet", "train")
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(S2OError, match="split"):
        load_dataset("digits", "validation")  # type: ignore[arg-type]
    with pytest.raises(S2OError, match="imagenet"):
        dataset_info("imagenet")


@pytest.mark.parametrize(
    "name, expected",
    [("digits", (10, 1, 16)), ("mnist", (10, 1, 28)), ("fashion-mnist", (10, 1, 28)),
     ("cifar10", (10, 3, 32)), ("cifar100", (100, 3, 32)), ("svhn", (10, 3, 32))],
)
def test_dataset_info(name, expected):
    info = dataset_info(name)
    assert (info.num_classes, info.in_channels, info.image_size) == expected
    assert len(info.mean) == len(info.std) == info.in_channels


# --------------------------------------------------------------------------- CIFAR-10, real torchvision path

def test_cifar10_loads_the_written_pixels_and_labels(tmp_path, skip_md5):
    written = write_fake_cifar10(tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    data, labels = written["test_batch"]
    assert len(test) == CIFAR_TEST
    x, y = tensors(test)
    assert x.shape == (CIFAR_TEST, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    expected = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-7)  # ToTensor only: no normalisation
    assert y.tolist() == labels
    _, label = test[0]
    assert isinstance(label, int)

    # Train without augmentation: the five batches, in order.
    train = load_dataset("cifar10", "train", root=tmp_path, augment=False)
    x_train, y_train = tensors(train)
    batches = [written[f"data_batch_{i}"] for i in range(1, 6)]
    expected_train = torch.from_numpy(np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32)).float() / 255
    torch.testing.assert_close(x_train, expected_train, rtol=0, atol=1e-7)
    assert y_train.tolist() == [label for _, batch_labels in batches for label in batch_labels]


def test_cifar10_train_augmentation_keeps_shape_and_range(tmp_path, skip_md5):
    write_fake_cifar10(tmp_path)
    plain = load_dataset("cifar10", "train", root=tmp_path, augment=False)
    augmented = load_dataset("cifar10", "train", root=tmp_path)  # augment=None: on for CIFAR train
    torch.manual_seed(0)
    changed = False
    for _ in range(10):
        image, label = augmented[0]
        assert image.shape == (3, 32, 32)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert label == plain[0][1]
        changed |= not torch.equal(image, plain[0][0])
    assert changed  # crop/flip really happens (identity has probability 1/162 per draw)
    # The test split is never augmented by default.
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert all(torch.equal(test[0][0], test[0][0]) for _ in range(10))


def test_cifar10_subset(tmp_path, skip_md5):
    write_fake_cifar10(tmp_path)
    a = load_dataset("cifar10", "test", root=tmp_path, subset=3, seed=0)
    b = load_dataset("cifar10", "test", root=tmp_path, subset=3, seed=0)
    assert len(a) == 3 and torch.equal(tensors(a)[0], tensors(b)[0])
    with pytest.raises(S2OError, match="subset"):
        load_dataset("cifar10", "test", root=tmp_path, subset=CIFAR_TEST + 1)


def test_missing_dataset_says_where_to_put_the_files(tmp_path):
    with pytest.raises(S2OError) as info:
        load_dataset("cifar10", "test", root=tmp_path)
    message = str(info.value)
    assert str((tmp_path / "cifar10").resolve()) in message
    assert "cifar-10-batches-py" in message
    assert isinstance(info.value.__cause__, RuntimeError)  # chained, so the torchvision detail is not lost
    # torchvision's own text also says "download=True": the hint must be ours, not only quoted from it.
    assert "download=True" in message.replace(str(info.value.__cause__), "")


@pytest.mark.parametrize(
    "name, expected",
    [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("cifar100", "cifar-100-python"),
     ("svhn", "test_32x32.mat")],
)
def test_every_torchvision_set_says_where_to_put_its_files(tmp_path, name, expected):
    with pytest.raises(S2OError) as info:
        load_dataset(name, "test", root=tmp_path)
    message = str(info.value)
    assert str((tmp_path / name).resolve()) in message and expected in message
    assert "download=True" in message.replace(str(info.value.__cause__), "")
    assert len(message.splitlines()) == 1


def test_root_with_tilde_names_the_expanded_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(S2OError) as info:
        load_dataset("cifar10", "test", root="~/datasets")
    assert str(tmp_path / "datasets" / "cifar10") in str(info.value)


def test_download_without_network_is_an_s2o_error(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(cifar, "download_and_extract_archive", no_network)
    with pytest.raises(S2OError, match="download") as info:
        load_dataset("cifar10", "train", root=tmp_path, download=True)
    assert calls, "the download was never attempted"
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert str((tmp_path / "cifar10").resolve()) in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist"])
def test_download_blocked_at_the_socket_level_is_one_s2o_error(tmp_path, monkeypatch, name):
    """Block urllib itself, so torchvision's own download code runs and fails the way it does offline.

    The three sets fail differently inside torchvision: CIFAR-10 and SVHN let the URLError through,
    MNIST tries each mirror and raises one multi-line RuntimeError.
    """
    calls = []

    def no_network(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(S2OError) as info:
        load_dataset(name, "test", root=tmp_path, download=True)
    message = str(info.value)
    assert calls, "the download was never attempted"
    assert message.startswith(f"downloading {name} failed") and "network is unreachable" in message
    assert str((tmp_path / name).resolve()) in message
    assert len(message.splitlines()) == 1  # the CLI prints errors as one line
    assert isinstance(info.value.__cause__, (urllib.error.URLError, RuntimeError))


# --------------------------------------------------------------------------- SVHN and MNIST, real torchvision path


def _write_fake_svhn(folder: Path, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's .mat layout: X is (32, 32, 3, N) uint8, y is (N, 1) with the digit 0 stored as 10."""
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10]] + [[d] for d in rng.integers(1, 11, size=n - 1)], dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return x, y[:, 0]


def test_svhn_passes_the_split_and_loads_the_written_pixels(tmp_path, monkeypatch):
    from torchvision.datasets import svhn

    monkeypatch.setattr(svhn, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))  # md5 only
    folder = tmp_path / "svhn"
    written = {split: _write_fake_svhn(folder, split, n, seed)
               for split, n, seed in [("train", 5, 1), ("test", 3, 2)]}
    for split, (x_mat, y_mat) in written.items():
        x, y = tensors(load_dataset("svhn", split, root=tmp_path))
        assert x.shape == (len(y_mat), 3, 32, 32)  # a different count per split: split= really reached torchvision
        expected = torch.from_numpy(x_mat.transpose(3, 2, 0, 1)).float() / 255  # (H, W, C, N) -> (N, C, H, W)
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-7)
        assert y.tolist() == [0 if d == 10 else int(d) for d in y_mat]
    # SVHN is not CIFAR: no augmentation by default, even for training.
    train = load_dataset("svhn", "train", root=tmp_path)
    assert torch.equal(train[0][0], train[0][0])


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format MNIST ships in: magic (0x08 = uint8, then the number of dims), big-endian sizes, bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_style_sets_load_the_written_pixels(tmp_path, name, folder):
    raw = tmp_path / name / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in (("train", 4), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = (images, labels)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = tensors(load_dataset(name, split, root=tmp_path))  # augment=None: off for 28×28
        images, labels = written[prefix]
        torch.testing.assert_close(x, torch.from_numpy(images)[:, None].float() / 255, rtol=0, atol=1e-7)
        assert y.tolist() == labels.tolist()
        assert isinstance(load_dataset(name, split, root=tmp_path)[0][1], int)


# --------------------------------------------------------------------------- loaders and tensors


def _order(loader) -> list[int]:
    return [int(i) for (batch,) in loader for i in batch]


def test_make_loader_is_seeded():
    dataset = TensorDataset(torch.arange(200))
    a = make_loader(dataset, batch_size=16, shuffle=True, seed=3)
    b = make_loader(dataset, batch_size=16, shuffle=True, seed=3)
    c = make_loader(dataset, batch_size=16, shuffle=True, seed=4)
    assert a.generator is not None  # the training loop checkpoints it
    # Each loader's first epoch, taken once: calling _order(a) again would give a's second epoch, which
    # differs from any first epoch whatever the seed, and the seed check below could never fail.
    first_a, first_b, first_c = _order(a), _order(b), _order(c)
    assert first_a == first_b
    assert first_a != first_c
    assert sorted(first_a) == list(range(200))
    assert _order(make_loader(dataset, batch_size=16, shuffle=False)) == list(range(200))
    assert len(list(make_loader(dataset, batch_size=16, shuffle=False, drop_last=True))) == 200 // 16


def test_make_loader_resumes_from_generator_state():
    dataset = TensorDataset(torch.arange(50))
    loader = make_loader(dataset, batch_size=10, shuffle=True, seed=0)
    _order(loader)  # epoch 1
    state = loader.generator.get_state()
    epoch2 = _order(loader)
    loader.generator.set_state(state)
    assert _order(loader) == epoch2


def test_make_loader_rejects_bad_batch_size():
    with pytest.raises(S2OError, match="batch_size"):
        make_loader(TensorDataset(torch.arange(4)), batch_size=0, shuffle=False)


def test_tensors_fast_and_slow_paths_agree():
    train = load_dataset("digits", "train")
    x, y = tensors(train, n=20)
    assert x.shape == (20, 1, 16, 16) and y.dtype == torch.long
    # A Subset goes through its indices into the dataset it draws from.
    x_slow, y_slow = tensors(torch.utils.data.Subset(train, range(20)))
    assert torch.equal(x, x_slow) and torch.equal(y, y_slow)
    assert len(tensors(train, n=10**6)[0]) == len(train)
    assert len(tensors(torch.utils.data.Subset(train, range(20)), n=100)[0]) == 20  # slow path caps n too
    # Both paths hand back copies: editing X must not reach the dataset (or a session-wide fixture).
    x.zero_()
    assert torch.equal(tensors(train, n=20)[0], x_slow)
    with pytest.raises(S2OError):
        tensors(train, n=0)


class _ItemsOnly(torch.utils.data.Dataset):
    """A map-style dataset known only through __getitem__ (no tensors to index)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_tensors_takes_every_form_of_data_first_or_at_random():
    x_all, y_all = tensors(load_dataset("digits", "test"))
    forms = {
        "tuple": (x_all, y_all),
        "tensor dataset": TensorDataset(x_all, y_all),
        "items": _ItemsOnly(x_all, y_all),
        "subset": torch.utils.data.Subset(TensorDataset(x_all, y_all), range(len(y_all))),
    }
    picked = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(5))[:30].sort().values
    for name, data in forms.items():
        x, y = tensors(data, n=30)
        assert torch.equal(x, x_all[:30]) and torch.equal(y, y_all[:30]), name
        x, y = tensors(data, n=30, order="random", seed=5)  # n drawn with the seed, kept in the data's order
        assert torch.equal(x, x_all[picked]) and torch.equal(y, y_all[picked]), name
        assert torch.equal(tensors(data, order="random", seed=5)[0], x_all), name  # all of them: nothing to draw
    assert not torch.equal(tensors(forms["tuple"], n=30, order="random", seed=6)[0], x_all[picked])
    loader = DataLoader(TensorDataset(x_all, y_all), batch_size=7)
    x, y = tensors(loader, n=30)  # a DataLoader: the first n it yields
    assert torch.equal(x, x_all[:30]) and torch.equal(y, y_all[:30])
    with pytest.raises(S2OError, match="DataLoader"):
        tensors(loader, n=30, order="random")
    with pytest.raises(S2OError, match="unknown order"):
        tensors(forms["tuple"], order="last")
    with pytest.raises(S2OError, match="one label per image"):
        tensors((x_all, y_all[:-1]))
    with pytest.raises(S2OError, match=r"\[0, 1\]"):
        tensors((x_all * 2, y_all))
    with pytest.raises(S2OError, match="Dataset"):
        tensors(x_all)


def test_tensors_raw_gives_the_stored_cifar_pixels(tmp_path, skip_md5):
    written = write_fake_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)  # augmented: items would be cropped and flipped
    assert is_augmented(train) and holds_uint8_images(train)
    assert not is_augmented(load_dataset("cifar10", "test", root=tmp_path))
    x, y = tensors(train, raw=True)
    batches = [written[f"data_batch_{i}"] for i in range(1, 6)]
    expected = torch.from_numpy(np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32))
    assert x.dtype == torch.uint8 and torch.equal(x, expected)
    assert y.tolist() == [label for _, batch_labels in batches for label in batch_labels]
    subset = torch.utils.data.Subset(train, [3, 1])
    assert torch.equal(tensors(subset, raw=True)[0], expected[[3, 1]]) and holds_uint8_images(subset)
    digits = load_dataset("digits", "test")  # stores float tensors: raw changes nothing
    assert not holds_uint8_images(digits) and torch.equal(tensors(digits, raw=True)[0], tensors(digits)[0])


def test_batch_slices_cover_the_range_once():
    assert list(batch_slices(7, 3)) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert list(batch_slices(0, 3)) == []
