"""The networks whose first layer we study: the paper's linear CNN, VGG11 and two ResNets.

Every model takes any number of input channels and a configurable first-layer kernel size and
width, builds without downloading anything, and registers its first convolution before any other
convolution, so `first_layer_name(model)` finds it by module order.

* `LinearCNN` — PAPER.md section 2: one convolution of K filters (stride 1, no bias), then the mean
  over filters and locations, one scalar per image. Trained with MSE, only the filters learn.
* `LinearCNNMulti` — the same convolution, a mean over locations per filter, then a linear readout
  (fixed random by default, or trainable) to the classes.
* `VGG11` (with or without batch norm, for 32x32 inputs), `ResNet20` (CIFAR-style, He et al. 2016),
  `ResNet18` (7x7 stride-2 stem for larger images; module names match torchvision's).

`build_model(arch, in_channels, num_classes, ...)` is the one constructor the rest of the package
uses; `ARCHS` lists the names it accepts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from linearcnn.errors import LinearCNNInputError

ARCHS: tuple[str, ...] = ("linear", "linear-multi", "vgg11", "vgg11-bn", "resnet20", "resnet18")
LINEAR_ARCHS: frozenset[str] = frozenset({"linear", "linear-multi"})

# Default first-layer width (number of first-layer filters) per architecture; the deeper layers
# scale with it in the usual ratios.
DEFAULT_WIDTH: dict[str, int] = {
    "linear": 64,
    "linear-multi": 64,
    "vgg11": 64,
    "vgg11-bn": 64,
    "resnet20": 16,
    "resnet18": 64,
}
# Default initial filter std (sigma) of the linear models: small, so that the initialisation term
# of Thm 4.2 is negligible (it vanishes as sigma -> 0).
DEFAULT_LINEAR_INIT_STD = 1e-3


class LinearCNN(nn.Module):
    """The paper's linear CNN: f(x) = mean over K filters and J locations of conv(x) = wbar . pbar(x).

    `pbar(x)` is the mean of image x's stride-1 patches (flattened in (C, k, k) order), `wbar` the
    mean filter; every filter therefore receives the same gradient. Filters start zero-mean Gaussian
    with std `sigma`; no bias.
    """

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, sigma: float = DEFAULT_LINEAR_INIT_STD):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_filters, kernel_size, stride=1, bias=False)
        nn.init.normal_(self.conv.weight, mean=0.0, std=sigma)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        responses = self.conv(images)  # (B, K, H-k+1, W-k+1)
        return responses.mean(dim=(1, 2, 3))  # (B,)


class LinearCNNMulti(nn.Module):
    """Linear CNN with several outputs: conv, mean over locations per filter, linear readout.

    out(x) = R h(x) with h_k(x) = w_k . pbar(x). The readout R (classes x K, no bias) is drawn
    N(0, 1/K) and frozen unless `trainable_readout`.
    """

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        kernel_size: int,
        num_classes: int,
        sigma: float = DEFAULT_LINEAR_INIT_STD,
        trainable_readout: bool = False,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_filters, kernel_size, stride=1, bias=False)
        nn.init.normal_(self.conv.weight, mean=0.0, std=sigma)
        self.readout = nn.Linear(num_filters, num_classes, bias=False)
        nn.init.normal_(self.readout.weight, mean=0.0, std=1.0 / math.sqrt(num_filters))
        self.readout.weight.requires_grad_(trainable_readout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(images).mean(dim=(2, 3))  # (B, K)
        return self.readout(pooled)  # (B, classes)


_VGG11_LAYOUT: tuple[int | str, ...] = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # x width


class VGG11(nn.Module):
    """VGG11 for 32x32 images (CIFAR-style): eight 3x3 convs, five max-pools, one linear classifier.

    Channels are width x (1, 2, 4, 4, 8, 8, 8, 8) (64 ... 512 at the default width). The first conv
    has kernel `kernel_size` with "same" padding. Pools use ceil_mode and an adaptive average pool
    precedes the classifier, so sizes other than 32x32 (e.g. 28x28) also work; at 32x32 the network
    is the standard one.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, kernel_size: int = 3, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        first = True
        for item in _VGG11_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                continue
            out_channels = int(item) * width
            k = kernel_size if first else 3
            layers.append(nn.Conv2d(channels, out_channels, k, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            channels, first = out_channels, False
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.features(images))  # (B, 8w, 1, 1)
        return self.classifier(torch.flatten(features, 1))  # (B, classes)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _init_resnet(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet20(nn.Module):
    """CIFAR-style ResNet20 (He et al. 2016, sec. 4.2): a 3x3 stem, three stages of three basic
    blocks at width x (1, 2, 4) (16/32/64 by default), global average pool, linear classifier.
    Shortcuts that change shape use a 1x1 conv projection (option B)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, stride=1, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(width, width, 3, 1)
        self.layer2 = _stage(width, 2 * width, 3, 2)
        self.layer3 = _stage(2 * width, 4 * width, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        _init_resnet(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(images)))  # (B, w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 4w, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, classes)


class ResNet18(nn.Module):
    """ResNet18 for larger images (torchvision's layout and module names): a `kernel_size` (7 by
    default) stride-2 stem, 3x3 stride-2 max-pool, four stages of two basic blocks at width x
    (1, 2, 4, 8), global average pool, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, stride=2, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(width, width, 2, 1)
        self.layer2 = _stage(width, 2 * width, 2, 2)
        self.layer3 = _stage(2 * width, 4 * width, 2, 2)
        self.layer4 = _stage(4 * width, 8 * width, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)
        _init_resnet(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, w, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8w, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, classes)


def default_kernel_size(arch: str) -> int:
    """The first-layer kernel size of `arch` when none is given (7 for resnet18, else 3)."""
    return 7 if arch == "resnet18" else 3


def check_arch(arch: str) -> str:
    """Return `arch` if it names a model, else raise LinearCNNInputError listing the valid ones."""
    if arch not in ARCHS:
        raise LinearCNNInputError(f"--arch {arch!r} is not a known architecture; expected one of {', '.join(ARCHS)}")
    return arch


def build_model(
    arch: str,
    in_channels: int,
    num_classes: int,
    *,
    width: int | None = None,
    kernel_size: int | None = None,
    init_std: float = DEFAULT_LINEAR_INIT_STD,
    trainable_readout: bool = False,
) -> nn.Module:
    """Build `arch` (one of `ARCHS`) for `in_channels`-channel images and `num_classes` outputs.

    `width` is the number of first-layer filters (default `DEFAULT_WIDTH[arch]`), `kernel_size` the
    first-layer kernel (default `default_kernel_size(arch)`). `init_std` (sigma) and
    `trainable_readout` apply to the linear models only; `num_classes` is ignored by `linear`
    (one scalar output). Uses the global torch RNG for the initialisation: seed it (or wrap the
    call in `torch.random.fork_rng`) for a reproducible model.
    """
    check_arch(arch)
    width = DEFAULT_WIDTH[arch] if width is None else width
    kernel_size = default_kernel_size(arch) if kernel_size is None else kernel_size
    for name, value in (("in_channels", in_channels), ("width", width), ("kernel_size", kernel_size)):
        if int(value) < 1:
            raise LinearCNNInputError(f"{name} must be a positive integer, got {value}")
    if arch != "linear" and num_classes < 1:
        raise LinearCNNInputError(f"num_classes must be a positive integer for {arch}, got {num_classes}")
    if arch in LINEAR_ARCHS and not init_std > 0:
        raise LinearCNNInputError(f"init_std must be positive for {arch}, got {init_std}")
    if arch == "linear":
        return LinearCNN(in_channels, width, kernel_size, init_std)
    if arch == "linear-multi":
        return LinearCNNMulti(in_channels, width, kernel_size, num_classes, init_std, trainable_readout)
    if arch in ("vgg11", "vgg11-bn"):
        return VGG11(in_channels, num_classes, width, kernel_size, batch_norm=arch == "vgg11-bn")
    if arch == "resnet20":
        return ResNet20(in_channels, num_classes, width, kernel_size)
    return ResNet18(in_channels, num_classes, width, kernel_size)


def build_seeded_model(
    arch: str,
    in_channels: int,
    num_classes: int,
    *,
    seed: int,
    width: int | None = None,
    kernel_size: int | None = None,
    init_std: float = DEFAULT_LINEAR_INIT_STD,
    trainable_readout: bool = False,
) -> nn.Module:
    """`build_model(...)` initialised from `seed` alone: the global torch RNG is left as it was.

    The one seeded initialisation of the package: training, the closed-form dynamics and the
    validation draw a model of seed S the same way, so their initial filters are equal.

    >>> a = build_seeded_model("linear", 3, 2, seed=7, width=4)
    >>> b = build_seeded_model("linear", 3, 2, seed=7, width=4)
    >>> bool(torch.equal(first_layer(a).weight, first_layer(b).weight))
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(
            arch, in_channels, num_classes, width=width, kernel_size=kernel_size, init_std=init_std,
            trainable_readout=trainable_readout,
        )


def first_layer_name(model: nn.Module) -> str:
    """Module name of the model's first convolution, e.g. "conv", "features.0" or "conv1".

    A DistributedDataParallel or torch.compile wrapper is looked through, so the name is always the
    one in the plain model's state dict (weights under f"{name}.weight").
    """
    model = unwrap_model(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    raise LinearCNNInputError(f"model {type(model).__name__} has no Conv2d layer")


def first_layer(model: nn.Module) -> nn.Conv2d:
    """The model's first convolution module (see `first_layer_name`)."""
    plain = unwrap_model(model)
    return plain.get_submodule(first_layer_name(plain))  # type: ignore[return-value]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
