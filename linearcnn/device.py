"""Device resolution: the one place that turns a device name ("auto", "cpu", "cuda:N") into a torch.device."""

from __future__ import annotations

import torch

from linearcnn.errors import LinearCNNInputError


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:N' as given (checked).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        resolved = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(name)
        except RuntimeError:
            raise LinearCNNInputError(
                f"device {device!r} is not a device name; expected auto, cpu, cuda or cuda:N", parameter="device"
            ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise LinearCNNInputError(f"device {device!r}: CUDA is not available here; expected auto or cpu", parameter="device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise LinearCNNInputError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are present", parameter="device"
            )
    elif resolved.type != "cpu":
        raise LinearCNNInputError(f"device {device!r} is not supported; expected auto, cpu, cuda or cuda:N", parameter="device")
    return resolved


__all__ = ["resolve_device"]
