"""Datasets as tensors in [0, 1]: the bundled digits (offline) and the torchvision sets in ``data/``.

Images are float tensors in [0, 1] of shape (C, H, W); normalisation, where a model wants it, lives
inside the model. CIFAR training sets get the paper's augmentation (random crop with 4 pixels of
padding, horizontal flip).

Example:
    >>> from s2o_lib.data import load_dataset, make_loader
    >>> train = load_dataset("digits", "train")
    >>> x, y = next(iter(make_loader(train, batch_size=8, shuffle=True)))
    >>> tuple(x.shape), float(x.min()) >= 0, float(x.max()) <= 1
    ((8, 1, 16, 16), True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .checks import check_images, check_int, check_integer_labels
from .errors import S2OError, unknown_name

__all__ = [
    "DATASETS", "ORDERS", "DatasetInfo", "Order", "Rows", "Split", "batch_slices", "dataset_info",
    "dataset_missing", "download_reachable", "holds_uint8_images", "is_augmented", "load_dataset", "make_loader",
    "stand_in_dataset", "tensors",
]


Split = Literal["train", "test"]
Order = Literal["first", "random"]
ORDERS: tuple[str, ...] = ("first", "random")
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        num_classes: number of classes.
        in_channels: image channels.
        image_size: image side in pixels.
        mean: per-channel mean (for an optional `s2o_lib.models.Normalize`).
        std: per-channel standard deviation.
        files: what torchvision expects in the dataset's folder (for the "missing files" message).
    """

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: str = ""


_INFO: dict[str, DatasetInfo] = {
    # digits: measured on the 16×16 training split; the others are the usual published values.
    "digits": DatasetInfo(10, 1, 16, (0.305,), (0.319,), "(bundled with scikit-learn)"),
    "mnist": DatasetInfo(10, 1, 28, (0.1307,), (0.3081,), "MNIST/raw/ (train-images-idx3-ubyte, ...)"),
    "fashion-mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,), "FashionMNIST/raw/ (train-images-idx3-ubyte, ...)"),
    "cifar10": DatasetInfo(10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
                           "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"),
    "cifar100": DatasetInfo(100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            "cifar-100-python/ (train, test, meta)"),
    "svhn": DatasetInfo(10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                        "train_32x32.mat, test_32x32.mat"),
}


def dataset_info(name: str) -> DatasetInfo:
    """Classes, channels and image size of a dataset.

    Args:
        name: one of `DATASETS`.
    """
    if name not in _INFO:
        raise unknown_name("dataset", name, DATASETS)
    return _INFO[name]


@functools.lru_cache(maxsize=1)
def _digits_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    # 8×8 is too small for three conv blocks; bilinear upsampling keeps values in [0, 1].
    images = F.interpolate(images, size=16, mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, random_state=0, stratify=labels.numpy()
    )
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return images[idx_train], labels[idx_train], images[idx_test], labels[idx_test]


def _where_to_put(name: str, folder: Path) -> str:
    # Students hit this first on a fresh clone, so say where and what, in the path they would type.
    return f"put torchvision's {name} files in {folder.resolve()} (it expects {dataset_info(name).files} there)"


def _one_line(err: BaseException) -> str:
    # torchvision's MNIST joins one error per mirror with newlines; the CLI promises one-line errors.
    return " ".join(f"{type(err).__name__}: {err}".split())


def _torchvision_dataset(name: str, split: Split, folder: Path, download: bool, augment: bool) -> Dataset:
    import torchvision
    from torchvision import transforms

    steps = []
    if augment:
        steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    transform = transforms.Compose([*steps, transforms.ToTensor()])
    train = split == "train"
    constructors = {
        "mnist": lambda **kw: torchvision.datasets.MNIST(train=train, **kw),
        "fashion-mnist": lambda **kw: torchvision.datasets.FashionMNIST(train=train, **kw),
        "cifar10": lambda **kw: torchvision.datasets.CIFAR10(train=train, **kw),
        "cifar100": lambda **kw: torchvision.datasets.CIFAR100(train=train, **kw),
        "svhn": lambda **kw: torchvision.datasets.SVHN(split=split, **kw),
    }
    try:
        return constructors[name](root=str(folder), transform=transform, download=download)
    # torchvision raises RuntimeError for missing or corrupted files (and for MNIST's failed mirrors);
    # URLError, socket timeouts and SSL errors are all OSErrors.
    except (RuntimeError, OSError) as err:
        if download:
            raise S2OError(
                f"downloading {name} failed ({_one_line(err)}); check the network and retry, "
                f"or {_where_to_put(name, folder)}"
            ) from err
        raise S2OError(
            f"{name} {split} was not found or is corrupted ({_one_line(err)}); {_where_to_put(name, folder)}, "
            f"or pass download=True (command line: --download) to fetch them when a network is available"
        ) from err


def _torchvision_class(name: str) -> type:
    import torchvision

    classes = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
               "svhn": "SVHN"}
    return getattr(torchvision.datasets, classes[name])


def dataset_missing(name: str, *, root: str | Path = "data") -> bool:
    """Whether files of a torchvision dataset are missing under ``root/name`` (never for the bundled digits).

    For CIFAR the files are checked by name (no checksum, no network); other sets by loading both splits.

    Args:
        name: one of `DATASETS`.
        root: folder that holds one sub-folder per dataset.
    """
    dataset_info(name)
    if name == "digits":
        return False
    folder = Path(root).expanduser() / name
    cls = _torchvision_class(name)
    if name in ("cifar10", "cifar100"):
        files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return not all((folder / cls.base_folder / f).is_file() for f in files)
    try:
        for split in ("train", "test"):
            _torchvision_dataset(name, split, folder, False, False)
    except S2OError:
        return True
    return False


def download_reachable(name: str, *, timeout: float = 3.0) -> bool:
    """Whether the server a torchvision dataset downloads from accepts a connection (``False`` for digits).

    Args:
        name: one of `DATASETS`.
        timeout: seconds to wait for the connection.
    """
    import socket
    from urllib.parse import urlsplit

    dataset_info(name)
    if name == "digits":
        return False
    cls = _torchvision_class(name)
    url = getattr(cls, "url", None) or next(iter(getattr(cls, "split_list", {}).values()), [None])[0]
    url = url or (getattr(cls, "mirrors", None) or [None])[0]
    if not url:
        return False
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def stand_in_dataset(name: str, split: Split, *, size: int) -> Dataset:
    """Random images in the shape of a dataset (`torchvision.datasets.FakeData`), for dry runs without its files.

    The same transforms as `load_dataset` (crop-and-flip for CIFAR training sets); the train and test splits
    draw different images; each image is the same on every access.

    Args:
        name: one of `DATASETS`.
        split: ``"train"`` or ``"test"``.
        size: number of images.
    """
    from torchvision import datasets, transforms

    info = dataset_info(name)
    check_int(size, "size", minimum=1)
    augment = name in ("cifar10", "cifar100") and split == "train"
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    return datasets.FakeData(size=size, image_size=(info.in_channels, info.image_size, info.image_size),
                             num_classes=info.num_classes, transform=transforms.Compose([*steps, transforms.ToTensor()]),
                             random_offset=0 if split == "train" else 10**6)


def load_dataset(
    name: str,
    split: Split,
    *,
    root: str | Path = "data",
    download: bool = False,
    augment: bool | None = None,
    subset: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a dataset split as (image in [0, 1] of shape (C, H, W), label) pairs.

    Args:
        name: ``digits`` (bundled, offline), ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``svhn``.
        split: ``"train"`` or ``"test"``.
        root: folder that holds one sub-folder per dataset (``data/cifar10/cifar-10-batches-py/``, ...).
        download: fetch torchvision datasets that are missing (needs a network).
        augment: random crop (zero padding 4; the AT-AWP script pads by reflection instead) and flip, for
            the 32×32 sets only; ``None`` means on for CIFAR training sets and off otherwise.
        subset: keep this many examples, chosen at random with ``seed`` (for small profiles).
        seed: seed of the subset choice.
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise S2OError(f"split must be 'train' or 'test', got {split!r}")
    if augment is None:
        augment = name in ("cifar10", "cifar100") and split == "train"
    if augment and info.image_size != 32:
        # Checked for digits too: silently ignoring augment=True would hide a mistake.
        raise S2OError(f"the crop-and-flip augmentation is for 32×32 images; use augment=False for {name}")
    if name == "digits":
        x_train, y_train, x_test, y_test = _digits_tensors()
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        # Clone so a caller editing images in place cannot corrupt the cached copy.
        dataset: Dataset = TensorDataset(x.clone(), y.clone())
    else:
        # expanduser here so the error message shows the folder torchvision really looked in.
        dataset = _torchvision_dataset(name, split, Path(root).expanduser() / name, download, augment)
    if subset is not None:
        if subset <= 0 or subset > len(dataset):
            raise S2OError(f"subset must be between 1 and {len(dataset)} (the size of {name} {split}), got {subset}")
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:subset]
        if isinstance(dataset, TensorDataset):
            dataset = TensorDataset(*(t[order] for t in dataset.tensors))
        else:
            dataset = Subset(dataset, order.tolist())
    return dataset


def make_loader(
    dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0, drop_last: bool = False
) -> DataLoader:
    """A DataLoader whose shuffling is reproducible (its ``generator`` is seeded and checkpointed by `fit`).

    Args:
        dataset: the dataset.
        batch_size: batch size (≥ 1).
        shuffle: reshuffle every epoch.
        seed: seed of the shuffling generator.
        num_workers: worker processes (0: load in the main process).
        drop_last: drop the last incomplete batch.
    """
    check_int(batch_size, "batch_size", minimum=1)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers, drop_last=drop_last, pin_memory=torch.cuda.is_available(),
    )


def batch_slices(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(count)`` of ``batch_size`` items each (the last one may be shorter)."""
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def is_augmented(dataset: Dataset) -> bool:
    """Whether ``dataset`` (or the dataset a `Subset` draws from) applies `load_dataset`'s crop-and-flip."""
    from torchvision import transforms

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    steps = getattr(getattr(base, "transform", None), "transforms", ())
    return any(isinstance(step, transforms.RandomCrop) for step in steps)


def tensors(
    data: Dataset | DataLoader | tuple[Tensor, Tensor],
    *,
    n: int | None = None,
    order: Order = "first",
    seed: int = 0,
    raw: bool = False,
) -> tuple[Tensor, Tensor]:
    """``n`` examples of a Dataset, a DataLoader or an ``(X, y)`` tuple, stacked as CPU tensors ``(X, y)``.

    Args:
        data: a map-style Dataset of (image, label) pairs, a DataLoader (or `s2o_lib.fast.DeviceLoader`) of
            (images, labels) batches, or a tuple ``(X, y)`` of tensors with X of shape (N, C, H, W) and y (N,).
        n: how many (``None``: all; more than ``data`` holds: all).
        order: ``"first"``: the first ``n``; ``"random"``: ``n`` drawn at random with ``seed`` and returned in
            the order ``data`` holds them (not from a DataLoader: pass its ``.dataset``).
        seed: seed of the ``"random"`` draw.
        raw: the images as a torchvision dataset stores them, before its transform (uint8, no augmentation),
            for `s2o_lib.fast.DeviceLoader`; data that stores no such array gives what ``raw=False`` gives.

    Returns:
        Fresh CPU tensors (editing them never changes ``data``): images (n, C, H, W), float in [0, 1]
        (checked; augmented datasets give augmented images) or uint8 with ``raw=True``, and long labels (n,).

    Example:
        >>> x, y = tensors(load_dataset("digits", "test"), n=100, order="random", seed=0)
        >>> tuple(x.shape), y.dtype
        ((100, 1, 16, 16), torch.int64)
    """
    if n is not None:
        check_int(n, "n", minimum=1)
    if order not in ORDERS:
        raise unknown_name("order", order, ORDERS)
    check_int(seed, "seed", minimum=0)
    if _yields_batches(data):
        if order != "first":
            raise S2OError("order='random' needs the Dataset (loader.dataset) or an (X, y) tuple, not a DataLoader")
        x, y = _first_batches(data, n)
    else:
        total, rows = _indexed(data, raw=raw)
        count = total if n is None else min(n, total)
        if order == "random" and count < total:
            index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values
        else:
            index = torch.arange(count)
        x, y = rows(index)
    y = torch.as_tensor(y).detach().cpu()
    check_integer_labels(y)
    x, y = x.detach().cpu(), y.long()
    if x.shape[0] == 0:
        raise S2OError("there are no examples to take; give a non-empty dataset")
    if not (raw and x.dtype == torch.uint8):
        check_images(x, y)
    return x, y


Rows = Callable[[Tensor], tuple[Tensor, Tensor]]


def _yields_batches(data: object) -> bool:
    """A DataLoader, or another loader that yields (images, labels) batches (e.g. `s2o_lib.fast.DeviceLoader`)."""
    return isinstance(data, DataLoader) or (hasattr(data, "__iter__") and hasattr(data, "batch_size"))


def _indexed(data: object, *, raw: bool) -> tuple[int, Rows]:
    """How many examples ``data`` holds, and a function from their indices to the stacked ``(X, y)``."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise S2OError(f"(X, y) must hold one label per image; got {x.shape[0]} images, {y.shape[0]} labels")
        return x.shape[0], lambda index: (x[index], y[index])
    if isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
        return len(data), lambda index: (x[index], y[index])
    if isinstance(data, Subset):
        inner = torch.as_tensor(data.indices, dtype=torch.long)
        _, rows = _indexed(data.dataset, raw=raw)
        return len(inner), lambda index: rows(inner[index])
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        stored = _stored_images(data) if raw else None
        if stored is not None:
            images, labels = stored
            return len(labels), lambda index: (images[index], labels[index])
        return len(data), lambda index: _stack_items(data, index)
    raise S2OError(
        "data must be a map-style torch Dataset (with __len__), a DataLoader or an (X, y) tuple of tensors; "
        f"got {type(data).__name__}"
    )


def _stack_items(dataset: Dataset, index: Tensor) -> tuple[Tensor, Tensor]:
    items = [dataset[int(i)] for i in index]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    return x, torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)


def _storage(dataset: Dataset) -> tuple[object, object] | None:
    """The image array and labels a torchvision dataset keeps in memory (as it keeps them), or ``None``."""
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = getattr(dataset, "labels", None)
    return None if data is None or labels is None else (data, labels)


def _stored_images(dataset: Dataset) -> tuple[Tensor, Tensor] | None:
    """The (N, C, H, W) images and labels a torchvision dataset keeps in memory, or ``None``.

    CIFAR keeps ``data`` as an N×H×W×C uint8 array and ``targets`` as a list, SVHN ``data`` as N×C×H×W and
    ``labels``, MNIST ``data`` as an N×H×W uint8 tensor.
    """
    storage = _storage(dataset)
    if storage is None:
        return None
    images = torch.as_tensor(storage[0])
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    elif images.ndim == 3:
        images = images[:, None]
    return images.contiguous(), torch.as_tensor(storage[1], dtype=torch.long)


def holds_uint8_images(dataset: Dataset) -> bool:
    """Whether ``dataset`` (or the dataset a `Subset` draws from) keeps its images in memory as uint8, as
    torchvision's CIFAR, SVHN and MNIST do: then ``tensors(dataset, raw=True)`` decodes nothing."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    storage = _storage(base)
    return storage is not None and torch.as_tensor(storage[0][:1]).dtype == torch.uint8


def _first_batches(loader: DataLoader, n: int | None) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples a DataLoader yields (all with ``None``), concatenated on the CPU."""
    xs, ys, seen = [], [], 0
    for batch in loader:
        bx, by = batch[0], batch[1]
        if n is not None:
            bx, by = bx[: n - seen], by[: n - seen]
        xs.append(bx.cpu())
        ys.append(torch.as_tensor(by).cpu())
        seen += len(by)
        if n is not None and seen >= n:
            break
    if not xs:
        raise S2OError("the DataLoader yielded no batches; give it a non-empty dataset")
    return torch.cat(xs), torch.cat(ys)
