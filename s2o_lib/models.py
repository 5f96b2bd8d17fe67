"""Model zoo: a small CNN for CPUs and the paper's PreAct ResNet-18 and WideResNet-34-10.

Every model takes images in [0, 1] of shape (B, C, H, W) and returns logits (B, num_classes). Every model
splits into ``features(x) -> (B, D)`` and a last linear layer ``head`` (C × D): S²O's Laplace variant and
the PAC-Bayesian bound both look at that last layer.

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> model = build_model("small-cnn", num_classes=10, in_channels=1)
    >>> model(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import S2OError, unknown_name

__all__ = [
    "ARCHITECTURES", "Classifier", "Normalize", "NormalizedClassifier", "PreActBlock", "PreActResNet18",
    "SmallCNN", "WideBasic", "WideResNet", "build_from_spec", "build_model", "device_of", "dtype_of",
    "hidden_layer", "last_linear", "model_spec",
]



class Normalize(nn.Module):
    """Per-channel standardisation inside the model, so attacks work on [0, 1] images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Base class: ``forward(x) = head(features(x))``."""

    head: nn.Linear
    spec: dict

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SmallCNN(Classifier):
    """Three conv-BN-ReLU blocks, global pooling to 2×2, a hidden layer and a linear head.

    Fast enough to adversarially train on the digits in seconds on two CPU cores.
    """

    def __init__(self, *, num_classes: int, in_channels: int, width: int = 32, hidden: int = 128) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, width, 1),
            *block(width, 2 * width, 2),
            *block(2 * width, 2 * width, 2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings in Deep Residual Networks")."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(Classifier):
    """PreAct ResNet-18 as in the S²O, AWP and robust-overfitting code (4 stages of 2 blocks, 64–512 wide).

    Args:
        num_classes: number of output logits.
        in_channels: image channels.
        width: channels of the first stage; the stages have width, 2, 4 and 8 × width (the paper: 64). The
            ``class`` profile uses 32 (``preact-resnet18-w32``: a quarter of the FLOPs, 2.8 M parameters).
    """

    def __init__(self, *, num_classes: int, in_channels: int, width: int = 64) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise S2OError(f"width must be a positive number of channels (the paper: 64), got {width!r}")
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.layer1 = self._make_layer(width, 2, 1)
        self.layer2 = self._make_layer(2 * width, 2, 2)
        self.layer3 = self._make_layer(4 * width, 2, 2)
        self.layer4 = self._make_layer(8 * width, 2, 2)
        self.bn = nn.BatchNorm2d(8 * width)
        self.head = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def features(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class WideBasic(nn.Module):
    """WideResNet basic block as in TRADES/MART/AWP's ``wideresnet.py`` (BN-ReLU-conv, dropout 0)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.shortcut: nn.Module | None = None
        if not self.equal_in_out:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet(Classifier):
    """WideResNet-depth-widen (Zagoruyko & Komodakis 2016); WRN-34-10 is the paper's large model."""

    def __init__(self, *, num_classes: int, in_channels: int, depth: int = 34, widen: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise S2OError(f"WideResNet depth must be 6n+4 (e.g. 28 or 34), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for stage, stride in zip(range(3), (1, 2, 2), strict=True):
            for i in range(n):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                blocks.append(WideBasic(c_in, widths[stage + 1], stride if i == 0 else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.head = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


ARCHITECTURES: dict[str, Callable[..., Classifier]] = {
    "small-cnn": SmallCNN,
    # smoke's: (24/32)² of width 32's FLOPs in the two larger convolutions; PGD-AT on the digits, one seed each:
    # PGD-20 accuracy 0.45 at width 24 and 0.44 at width 32, in 8 s instead of 15 s on two CPU cores.
    "small-cnn-w24": lambda **kw: SmallCNN(width=24, **kw),
    "preact-resnet18": PreActResNet18,
    "preact-resnet18-w32": lambda **kw: PreActResNet18(width=32, **kw),
    "wrn-34-10": lambda **kw: WideResNet(depth=34, widen=10, **kw),
    "wrn-28-4": lambda **kw: WideResNet(depth=28, widen=4, **kw),
}


def build_model(
    arch: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> nn.Module:
    """Build a model by name.

    Args:
        arch: one of `ARCHITECTURES` (``small-cnn``, ``small-cnn-w24``, ``preact-resnet18``, ``preact-resnet18-w32``,
            ``wrn-34-10``, ``wrn-28-4``).
        num_classes: number of output logits.
        in_channels: image channels (1 for digits/MNIST, 3 for CIFAR/SVHN).
        normalize: optional ``(mean, std)`` applied inside the model; the paper's code uses none.

    Returns:
        A `Classifier` (or a ``Sequential(Normalize, Classifier)`` with ``normalize``), on the CPU.
    """
    if arch not in ARCHITECTURES:
        raise unknown_name("architecture", arch, ARCHITECTURES)
    if num_classes < 2:
        raise S2OError(f"num_classes must be at least 2, got {num_classes}")
    if in_channels < 1:
        raise S2OError(f"in_channels must be at least 1, got {in_channels}")
    model: Classifier = ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels)
    if normalize is not None:
        model = NormalizedClassifier(Normalize(*normalize), model)
    # Recorded so that checkpoints can rebuild the model and refuse one of another architecture.
    model.spec = {
        "arch": arch,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "normalize": None if normalize is None else [list(normalize[0]), list(normalize[1])],
    }
    return model


def model_spec(model: nn.Module) -> dict:
    """How ``model`` was built (``arch``, ``num_classes``, ``in_channels``, ``normalize``)."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        return dict(spec)
    return {"arch": type(model).__name__, "num_classes": None, "in_channels": None, "normalize": None}


def build_from_spec(spec: dict) -> nn.Module:
    """Rebuild a model from `model_spec` (e.g. from a checkpoint's metadata)."""
    normalize = spec.get("normalize")
    return build_model(
        spec["arch"],
        num_classes=spec["num_classes"],
        in_channels=spec["in_channels"],
        normalize=None if normalize is None else (normalize[0], normalize[1]),
    )


class NormalizedClassifier(Classifier):
    """A classifier whose first step standardises its [0, 1] input."""

    def __init__(self, normalize: Normalize, inner: Classifier) -> None:
        super().__init__()
        self.normalize = normalize
        self.inner = inner
        self.head = inner.head

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(self.normalize(x))


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last linear layer (``model.head`` where it exists, else the last ``nn.Linear``)."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise S2OError("the model has no nn.Linear layer; S²O's last-layer statistics need one")
    return linears[-1]


def hidden_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Linear`` or ``nn.Conv2d`` layer before the head (the small CNN's hidden Linear, a ResNet's last
    convolution): the layer whose weight correlations notebooks 06 and 06b show beside the head's.

    Args:
        model: a classifier whose last linear layer is the head (`last_linear`).
    """
    head = last_linear(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head]
    if not layers:
        raise S2OError("the model has no Linear or Conv2d layer before its head")
    return layers[-1]


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives: the device of its first parameter (or buffer), the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def dtype_of(model: nn.Module) -> torch.dtype:
    """The floating-point type of the model's first parameter (float32 for a model without one)."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32
