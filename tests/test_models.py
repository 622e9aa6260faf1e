"""The models: shapes, first-layer names, the linear CNN against independent numpy computations,
and parameter counts against the published architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from linearcnn.errors import LinearCNNInputError
from linearcnn.models import (
    ARCHS,
    LinearCNN,
    LinearCNNMulti,
    build_model,
    first_layer,
    first_layer_name,
)
from linearcnn.patches import mean_patches

FIRST_LAYER_NAMES = {
    "linear": "conv",
    "linear-multi": "conv",
    "vgg11": "features.0",
    "vgg11-bn": "features.0",
    "resnet20": "conv1",
    "resnet18": "conv1",
}


def numpy_correlation(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Valid cross-correlation of one (C, H, W) image with one (C, k, k) kernel, by explicit loops."""
    _, h, w = image.shape
    k = kernel.shape[-1]
    out = np.zeros((h - k + 1, w - k + 1))
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            out[i, j] = np.sum(image[:, i : i + k, j : j + k] * kernel)
    return out


def numpy_mean_patches(images: np.ndarray, k: int) -> np.ndarray:
    """Mean of every image's stride-1 k x k patches, (N, C*k*k), from numpy's sliding windows."""
    windows = sliding_window_view(images, (k, k), axis=(2, 3))  # (N, C, H-k+1, W-k+1, k, k)
    return windows.mean(axis=(2, 3)).reshape(images.shape[0], -1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_arch_builds_for_any_channels_with_configured_first_layer(arch: str, channels: int) -> None:
    model = build_model(arch, channels, 5, width=8, kernel_size=5)
    assert first_layer_name(model) == FIRST_LAYER_NAMES[arch]
    conv = first_layer(model)
    assert conv.weight.shape == (8, channels, 5, 5)
    assert f"{FIRST_LAYER_NAMES[arch]}.weight" in model.state_dict()
    size = 64 if arch == "resnet18" else 32
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == ((2,) if arch == "linear" else (2, 5))
    assert torch.isfinite(out).all()


def test_vgg_works_on_28x28_and_odd_kernel_sizes() -> None:
    model = build_model("vgg11-bn", 1, 10, width=4, kernel_size=4)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(LinearCNNInputError) as info:
        build_model("alexnet", 3, 10)
    message = str(info.value)
    assert "alexnet" in message and "\n" not in message
    for arch in ARCHS:
        assert arch in message


@pytest.mark.parametrize(
    ("arch", "kwargs", "expected"),
    [
        # CIFAR VGG11 (e.g. kuangliu/pytorch-cifar): 8 convs with bias, Linear(512, 10)
        ("vgg11", {}, 9_225_610),
        ("vgg11-bn", {}, 9_231_114),
        # torchvision resnet18 for ImageNet (1000 classes)
        ("resnet18", {"num_classes": 1000}, 11_689_512),
    ],
)
def test_parameter_counts_match_the_published_architectures(arch: str, kwargs: dict, expected: int) -> None:
    model = build_model(arch, 3, kwargs.get("num_classes", 10))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_resnet20_parameter_count() -> None:
    # He et al.'s ResNet20 has 0.27M parameters with parameter-free (option A) shortcuts,
    # 269,722 for 10 classes; our two projection shortcuts (option B) add 1x1 convs and BNs:
    # 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
    model = build_model("resnet20", 3, 10)
    assert sum(p.numel() for p in model.parameters()) == 269_722 + 2_752


def test_linear_cnn_forward_equals_numpy_mean_of_correlations() -> None:
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 2, 7, 6))
    model = LinearCNN(2, 4, 3, sigma=0.5).double()
    kernels = model.conv.weight.detach().numpy()  # (K, C, k, k)
    expected = np.array(
        [np.mean([numpy_correlation(image, kernel) for kernel in kernels]) for image in images]
    )
    got = model(torch.from_numpy(images)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_linear_cnn_init_is_zero_mean_with_std_sigma() -> None:
    torch.manual_seed(0)
    weights = LinearCNN(3, 400, 5, sigma=0.02).conv.weight.detach().double()  # 30,000 draws
    assert abs(weights.mean().item()) < 5 * 0.02 / np.sqrt(weights.numel())
    assert weights.std().item() == pytest.approx(0.02, rel=0.03)
    assert LinearCNN(3, 4, 3).conv.bias is None


def test_mean_patches_equal_numpy_sliding_windows_and_give_the_linear_output() -> None:
    rng = np.random.default_rng(2)
    images = rng.normal(size=(4, 3, 9, 8))
    got = mean_patches(torch.from_numpy(images), 4).numpy()
    np.testing.assert_allclose(got, numpy_mean_patches(images, 4), rtol=1e-12, atol=1e-14)
    model = LinearCNN(3, 5, 4, sigma=1.0).double()
    mean_filter = model.conv.weight.detach().numpy().mean(axis=0).reshape(-1)  # (d,)
    np.testing.assert_allclose(model(torch.from_numpy(images)).detach().numpy(), got @ mean_filter, rtol=1e-11)


def test_mean_patches_rejects_a_kernel_larger_than_the_images() -> None:
    with pytest.raises(LinearCNNInputError, match="larger than the images"):
        mean_patches(torch.zeros(1, 1, 4, 4), 5)


def test_every_filter_of_the_linear_cnn_receives_the_same_gradient() -> None:
    rng = np.random.default_rng(3)
    images = rng.normal(size=(6, 3, 8, 8))
    targets = rng.choice([-1.0, 1.0], size=6)
    model = LinearCNN(3, 5, 3, sigma=0.3).double()
    loss = ((model(torch.from_numpy(images)) - torch.from_numpy(targets)) ** 2).mean()
    loss.backward()
    grads = model.conv.weight.grad.numpy().reshape(5, -1)  # (K, d)
    # Independent: dL/dw_k = (2 / (N K)) sum_n (f_n - y_n) pbar_n for every k
    pbar = numpy_mean_patches(images, 3)  # (N, d)
    outputs = pbar @ model.conv.weight.detach().numpy().reshape(5, -1).mean(axis=0)
    expected = 2.0 / (6 * 5) * ((outputs - targets) @ pbar)
    for k in range(5):
        np.testing.assert_allclose(grads[k], expected, rtol=1e-10, atol=1e-14)


def test_linear_multi_readout_is_frozen_unless_trainable_and_forward_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    images = rng.normal(size=(3, 2, 6, 6))
    fixed = LinearCNNMulti(2, 4, 3, num_classes=5, sigma=0.2).double()
    assert not fixed.readout.weight.requires_grad and fixed.conv.weight.requires_grad
    assert LinearCNNMulti(2, 4, 3, 5, trainable_readout=True).readout.weight.requires_grad
    filters = fixed.conv.weight.detach().numpy().reshape(4, -1)  # (K, d)
    readout = fixed.readout.weight.detach().numpy()  # (classes, K)
    expected = numpy_mean_patches(images, 3) @ filters.T @ readout.T  # (N, classes)
    np.testing.assert_allclose(fixed(torch.from_numpy(images)).detach().numpy(), expected, rtol=1e-11)


def test_first_layer_name_looks_through_ddp_style_wrappers() -> None:
    model = build_model("resnet20", 3, 10, width=4)

    class Wrapped(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self._orig_mod = inner  # what torch.compile's wrapper holds

    assert first_layer_name(Wrapped(model)) == "conv1"
