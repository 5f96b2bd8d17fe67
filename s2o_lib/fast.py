"""The fast path for GPUs: a device-resident CIFAR loader, bf16/fp16 autocast, channels-last, torch.compile.

None of this changes what is computed, only how fast:

- `DeviceLoader` keeps the whole dataset on the device as uint8 and does the paper's augmentation
  (random crop with 4 pixels of zero padding, horizontal flip) with batched tensor ops, so no CPU worker
  decodes images between steps. It shuffles with a CPU `torch.Generator` (``loader.generator``) so that
  `s2o_lib.train.fit` saves and restores its state for exact resume, as with a DataLoader.
- `autocast` returns a bf16 or fp16 autocast context for ``precision="bf16"`` / ``"fp16"``, and a no-op for
  ``"fp32"`` (the code path is then exactly the plain one). fp16 needs a loss scaler (`grad_scaler`): its
  range ends at 65504 and small gradients underflow to zero. `preferred_precision` is the one place that picks
  a precision for a GPU (``"auto"``: bf16 from compute capability 8.0, Ampere, on; fp16 before, e.g. a T4).
- `prepare_model` moves a model to channels-last memory format and, if asked, compiles it.

Example:
    >>> import torch
    >>> from s2o_lib.fast import DeviceLoader
    >>> images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    >>> loader = DeviceLoader(images, torch.randint(0, 10, (100,)), batch_size=32, shuffle=True, augment=True)
    >>> x, y = next(iter(loader)); x.shape, x.dtype
    (torch.Size([32, 3, 32, 32]), torch.float32)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .checks import check_int
from .data import holds_uint8_images, is_augmented, make_loader, tensors
from .errors import S2OError, unknown_name

__all__ = [
    "BF16_CAPABILITY", "CPU_FP16_ENV", "PRECISIONS", "PRECISION_CHOICES", "DeviceLoader", "Precision",
    "PrecisionChoice", "autocast", "fp16_active", "grad_scaler", "preferred_precision", "prepare_model",
    "random_crop_flip", "resolve_precision", "training_loader",
]


Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS = ("fp32", "bf16", "fp16")
#: A precision, or ``"auto"``: `preferred_precision` of the device that trains.
PrecisionChoice = Literal["fp32", "bf16", "fp16", "auto"]
PRECISION_CHOICES = (*PRECISIONS, "auto")
#: Set to 1 to run ``precision="fp16"`` on a CPU anyway: only to test the fp16 code path (autocast and the loss
#: scaler both run there, e.g. ``benchmarks/gpu_check.py --cpu``); it is slower than fp32 there, not a way to train.
CPU_FP16_ENV = "S2O_CPU_FP16"
#: The first compute capability with bf16 tensor cores (Ampere, 8.0); a T4 (Turing) is 7.5.
BF16_CAPABILITY = (8, 0)


def random_crop_flip(x: Tensor, *, padding: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Batched random crop (zero padding) and horizontal flip: the paper's CIFAR augmentation.

    Args:
        x: images (B, C, H, W), any dtype.
        padding: pixels of zero padding on each side before cropping back to H × W.
        generator: CPU generator for the offsets and flips.
    """
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device, non_blocking=True)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device, non_blocking=True)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing on (B, H+2p, W+2p, C) picks each sample's window in one gather.
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


class DeviceLoader:
    """Batches from a dataset held entirely on one device.

    Args:
        images: (N, C, H, W) uint8 (0–255) or float ([0, 1]) images.
        labels: (N,) labels.
        batch_size: batch size.
        shuffle: reshuffle every epoch.
        augment: random crop (padding 4) and horizontal flip.
        seed: seed of the CPU generator that shuffles and augments.
        device: where the data lives (default: the images' device).
        drop_last: drop the last incomplete batch.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        augment: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        drop_last: bool = False,
    ) -> None:
        check_int(batch_size, "batch_size", minimum=1)
        if images.ndim != 4 or len(images) != len(labels):
            raise S2OError(f"images must be (N, C, H, W) with one label each; got {tuple(images.shape)} and "
                           f"{len(labels)} labels")
        device = torch.device(device) if device is not None else images.device
        self.images = images.to(device)
        self.labels = labels.to(device, dtype=torch.long)
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.dataset = self.images  # len(loader.dataset) works as for a DataLoader

    @classmethod
    def from_dataset(cls, dataset: Dataset, **kwargs) -> DeviceLoader:
        """Build from a torchvision (or tensor) dataset; keyword arguments as for the constructor.

        The images are taken as the dataset stores them (`s2o_lib.data.tensors` with ``raw=True``: uint8 for
        torchvision's CIFAR, SVHN and MNIST), without the dataset's own transform: pass ``augment`` to crop and flip.
        """
        images, labels = tensors(dataset, raw=True)
        return cls(images, labels, **kwargs)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x, generator=self.generator)
            x = x.float().div_(255) if x.dtype == torch.uint8 else x
            yield x, self.labels[idx]


def preferred_precision(device: torch.device | str) -> Precision:
    """The precision ``"auto"`` trains in on ``device``: the one place that chooses it.

    A CUDA GPU with bf16 tensor cores (compute capability 8.0 on: A100, L4, H100) trains in bf16, which needs no
    loss scaling; an older one (a T4, 7.5, Colab's free GPU) in fp16 with a `grad_scaler`, its tensor cores'
    format (about 1.8× fp32 on a T4, benchmarks/RESULTS.md); a CPU or MPS device in fp32.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device) >= BF16_CAPABILITY else "fp16"


def resolve_precision(precision: str, device: torch.device | str) -> Precision:
    """``precision`` checked for ``device``, with ``"auto"`` resolved by `preferred_precision`.

    ``"fp16"`` runs on CUDA only: a CPU's autocast computes fp16 slowly and no faster than fp32, so it is refused
    with what to use instead (unless ``S2O_CPU_FP16=1``, for tests of the fp16 code path).
    """
    if precision not in PRECISION_CHOICES:
        raise unknown_name("precision", precision, PRECISION_CHOICES)
    device = torch.device(device)
    if precision == "auto":
        return preferred_precision(device)
    cpu_fp16 = os.environ.get(CPU_FP16_ENV, "").strip().lower() in ("1", "true", "yes")
    if precision == "fp16" and device.type != "cuda" and not (device.type == "cpu" and cpu_fp16):
        raise S2OError(f"precision='fp16' needs a CUDA GPU (this run is on {device.type}); use a GPU, or "
                       "precision='fp32' (or 'bf16' on a CPU that has it)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise S2OError("this GPU does not support bf16; use precision='fp16' (or 'auto') or 'fp32'")
    return precision  # type: ignore[return-value]


def autocast(device: torch.device | str, precision: Precision = "fp32") -> contextlib.AbstractContextManager:
    """A bf16 or fp16 autocast context for ``precision="bf16"`` / ``"fp16"``; a no-op for ``"fp32"``.

    The precision is checked by `resolve_precision` (fp16 on a CPU is refused); ``"auto"`` is not taken here.
    """
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    if precision == "fp32":
        return contextlib.nullcontext()
    resolve_precision(precision, device)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, precision: Precision) -> torch.amp.GradScaler:
    """The loss scaler of a precision: active for ``"fp16"``, a pass-through (``enabled=False``) otherwise.

    An active scaler multiplies the loss by its scale (65536 at first) before ``backward``, unscales the
    gradients before the optimiser's step, skips a step whose gradients are not finite and then halves the
    scale, and doubles it after 2000 finite steps (torch's defaults). A disabled one changes nothing: with
    fp32 or bf16 the step is exactly the plain one.
    """
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def fp16_active(device: torch.device | str) -> bool:
    """Whether an fp16 autocast context is active for ``device``'s type (e.g. inside ``autocast(dev, "fp16")``)."""
    device_type = torch.device(device).type
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


def prepare_model(model: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Channels-last memory format and optional ``torch.compile`` (the returned module shares weights).

    Compiling under deterministic kernels (`s2o_lib.config.seed_everything`) also sets the compiler's own
    deterministic option, as ``torch.use_deterministic_algorithms`` does; ``seed_everything`` leaves it to this
    place so that runs which never compile never import the compiler.
    """
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        if torch.are_deterministic_algorithms_enabled():
            torch.use_deterministic_algorithms(True, warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
        model = torch.compile(model)
    return model


def training_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_device: bool | None = None,
    num_workers: int = 0,
) -> DataLoader | DeviceLoader:
    """The shuffling training loader of ``dataset``: a `DeviceLoader` where it pays, else a DataLoader.

    A DataLoader decodes, crops and flips every image on the CPU between steps (in the main process with
    ``num_workers=0``), which leaves a GPU waiting; a `DeviceLoader` does it with a few batched tensor ops on
    the GPU. It pays for datasets that torchvision keeps in memory as uint8 (CIFAR-10/100, SVHN, MNIST) on a
    CUDA device, which is what ``on_device=None`` chooses. The two shuffle and augment with different random
    streams, so they train different (equally good) models; each is reproducible and resumes exactly.

    Args:
        dataset: the training set (from `s2o_lib.data.load_dataset`); its crop-and-flip, if any, is kept.
        batch_size: batch size.
        seed: seed of the shuffling (and of the `DeviceLoader`'s augmentation).
        device: where training runs.
        on_device: ``True``/``False`` force the choice (e.g. ``True`` to test the device path on a CPU);
            ``None``: a `DeviceLoader` for a uint8 torchvision dataset on CUDA, a DataLoader otherwise.
        num_workers: worker processes of the DataLoader (unused by a `DeviceLoader`).
    """
    device = torch.device(device)
    if on_device is None:
        on_device = device.type == "cuda" and holds_uint8_images(dataset)
    if not on_device:
        return make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed, num_workers=num_workers)
    return DeviceLoader.from_dataset(dataset, batch_size=batch_size, shuffle=True, augment=is_augmented(dataset),
                                     seed=seed, device=device)
