"""Checking the arguments of `patch_stats` and cutting its `images` into named float-ready batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from linearcnn._arrays import real_array
from linearcnn.device import resolve_device
from linearcnn.errors import LinearCNNInputError


def _as_tensor(batch: object, what: str) -> torch.Tensor:
    """A 4-D real tensor of one batch (no copy for tensors and contiguous numeric numpy arrays)."""
    if isinstance(batch, torch.Tensor):
        tensor = batch.detach()
    else:
        array = real_array(batch, what, expected="an array; expected an (N, C, H, W) array or tensor")
        if array.dtype.kind == "u" and array.dtype != np.uint8:  # torch has few uint16/32/64 ops
            array = array.astype(np.float64)
        if any(s < 0 for s in array.strides):  # torch cannot view negative strides
            array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array)
    if tensor.is_complex():
        raise LinearCNNInputError(f"{what} has dtype {tensor.dtype}; expected real numbers (float or integer)")
    _check_ndim(tuple(tensor.shape), what)
    return tensor


def _check_ndim(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 4:
        hint = "; add a leading axis for one image" if len(shape) == 3 else ""
        raise LinearCNNInputError(
            f"{what} has shape {shape} ({len(shape)}-D); expected a 4-D (N, C, H, W) batch{hint}"
        )


def batches(images: object, batch_size: int) -> tuple[Iterator[tuple[torch.Tensor, str]], int | None]:
    """(iterator of (batch of at most batch_size images, its name), total images if known)."""
    if isinstance(images, torch.Tensor):
        whole = _as_tensor(images, "images")

        def split_tensor() -> Iterator[tuple[torch.Tensor, str]]:
            for start in range(0, whole.shape[0], batch_size):
                stop = min(start + batch_size, int(whole.shape[0]))
                yield whole[start:stop], f"images[{start}:{stop}]"

        return split_tensor(), int(whole.shape[0])
    if isinstance(images, np.ndarray):
        array = real_array(images, "images", expected="an array; expected an (N, C, H, W) array or tensor")
        _check_ndim(array.shape, "images")

        def split_array() -> Iterator[tuple[torch.Tensor, str]]:
            for start in range(0, array.shape[0], batch_size):
                stop = min(start + batch_size, int(array.shape[0]))
                name = f"images[{start}:{stop}]"
                yield _as_tensor(array[start:stop], name), name  # converted per batch

        return split_array(), int(array.shape[0])
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise LinearCNNInputError(
            f"images of type {type(images).__name__}: expected an (N, C, H, W) array or tensor, "
            f"or an iterable of such batches"
        )

    def stream() -> Iterator[tuple[torch.Tensor, str]]:
        for index, batch in enumerate(images):
            tensor = _as_tensor(batch, f"batch {index} of images")
            for start in range(0, tensor.shape[0], batch_size):
                yield tensor[start : start + batch_size], f"batch {index} of images"

    return stream(), None


def check_int(value: object, name: str, minimum: int) -> int:
    """`value` as an int, checked to be an integer >= `minimum` (the error names parameter `name`)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LinearCNNInputError(f"{name} must be an integer >= {minimum}, got {value!r}", parameter=name)
    return int(value)


def check_kernel_fits(kernel: int, shape: tuple[int, int, int]) -> None:
    """Images of `shape` (C, H, W) are not empty and hold at least one k x k patch."""
    c, h, w = shape
    if c < 1 or h < 1 or w < 1:
        raise LinearCNNInputError(f"images have shape (N, {c}, {h}, {w}); expected C, H and W >= 1")
    if kernel > h or kernel > w:
        raise LinearCNNInputError(
            f"kernel_size {kernel} is larger than the {h}x{w} images; expected kernel_size <= {min(h, w)}",
            parameter="kernel_size",
        )


def check_options(
    kernel_size: object, batch_size: object, centered: object, device: str | torch.device
) -> tuple[int, int, bool, torch.device]:
    """(kernel size, batch size, centered, device) checked: the options `patch_stats` and
    `dataset_patch_stats` share."""
    kernel = check_int(kernel_size, "kernel_size", 1)
    step = check_int(batch_size, "batch_size", 1)
    if not isinstance(centered, (bool, np.bool_)):
        raise LinearCNNInputError(f"centered must be True or False, got {centered!r}", parameter="centered")
    return kernel, step, bool(centered), resolve_device(device)


__all__ = ["batches", "check_int", "check_kernel_fits", "check_options"]
