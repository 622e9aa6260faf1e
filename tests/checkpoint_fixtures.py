"""Small models and files for the checkpoint tests, written independently of the loader.

Each model knows its true first layer (`stem`, or `first_conv` for the ViT), so tests compare
the loader's answer with the model's own weights, not with anything the loader computed.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def weights_of(conv: nn.Module) -> np.ndarray:
    """The float64 copy of a convolution's weights that the loader must return."""
    return conv.weight.detach().to(torch.float64).numpy()


class TinyCNN(nn.Module):
    """3x3 stem, a second conv, a linear head."""

    def __init__(self, seed: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))  # (B, 8, H, W)
        x = torch.relu(self.body(x))  # (B, 8, H, W)
        return self.fc(x.mean(dim=(2, 3)))  # (B, 10)


class HeadFirstNet(nn.Module):
    """Registers `head` before `stem` but applies `stem` first; both take 3 channels, so neither
    registration order, alphabetical order nor the input-channel rule finds the stem."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Conv2d(3, 4, 1)
        self.stem = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)))  # (B, 4, H, W)


class DepthwiseNet(nn.Module):
    """A depthwise conv (1 input channel per filter) whose name sorts before the 3-channel stem."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stages = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)


class TinyViT(nn.Module):
    """ViT-like: a patch embedding (D, 3, p, p) with stride p, tokens, positional embedding."""

    def __init__(
        self, seed: int = 0, torchvision_names: bool = False, patch: int = 4, dim: int = 16
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.torchvision_names = torchvision_names
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim))
        if torchvision_names:
            self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        else:
            self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.head = nn.Linear(dim, 10)

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.conv_proj if self.torchvision_names else self.patch_embed.proj

    @property
    def first_name(self) -> str:
        return "conv_proj" if self.torchvision_names else "patch_embed.proj"


class MLP(nn.Module):
    """No convolution at all."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(12, 6)
        self.fc2 = nn.Linear(6, 2)


class RunsCommand:
    """Pickle payload: unpickling it calls `os.system(command)`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (os.system, (self.command,))


class TouchesFile:
    """Pickle payload: unpickling it calls `pathlib.Path.touch(marker)`."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


#: What the hostile TorchScript modules print when their own `__setstate__` runs.
HOSTILE_MARKER = "LINEARCNN-HOSTILE-SETSTATE-RAN"


class PrintsOnLoad(nn.Module):
    """A scripted submodule whose `__setstate__` (run by `torch.jit.load`) prints `HOSTILE_MARKER`."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.sum()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.scale, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("LINEARCNN-HOSTILE-SETSTATE-RAN")  # HOSTILE_MARKER (TorchScript reads no globals)
        self.scale = state[0]
        self.training = state[1]


class HangsOnLoad(PrintsOnLoad):
    """A scripted submodule whose `__setstate__` prints `HOSTILE_MARKER`, then never returns."""

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("LINEARCNN-HOSTILE-SETSTATE-RAN")  # HOSTILE_MARKER (TorchScript reads no globals)
        spins = 0
        while True:
            spins += 1
        self.scale = state[0]
        self.training = state[1]


class WithHostileTail(nn.Module):
    """A 3x3 `stem` conv followed by a hostile submodule (`PrintsOnLoad` or `HangsOnLoad`)."""

    def __init__(self, tail: nn.Module, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 4, 3)
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.stem(x))


def rewrite_zip(source: Path, target: Path, changes: dict[str, bytes | None]) -> Path:
    """Copy the zip archive `source` to `target`, replacing the entries whose names end with a
    key of `changes` by its bytes (None: leave the entry out); each key must match one entry."""
    used = dict.fromkeys(changes, 0)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            suffix = next((key for key in changes if info.filename.endswith(key)), None)
            if suffix is None:
                new.writestr(info, old.read(info))
                continue
            used[suffix] += 1
            if changes[suffix] is not None:
                new.writestr(info.filename, changes[suffix])
    assert all(count == 1 for count in used.values()), used
    return target


def with_storage_numel(data_pkl: bytes, key: str, numel: int) -> bytes:
    """A TorchScript `data.pkl` (protocol 2, as torch.jit.save writes it) whose persistent id of
    storage `key` declares `numel` elements: rewrites the BININT1 after `'<key>', 'cpu'` (the
    location is spelled out the first time, a memo reference after)."""
    name = key.encode()
    pattern = re.compile(
        rb"(X" + re.escape(struct.pack("<I", len(name)) + name) + rb"(?:q.)?(?:X\x03\x00\x00\x00cpu(?:q.)?|h.))K.t", re.DOTALL
    )
    patched, count = pattern.subn(lambda m: m.group(1) + b"J" + struct.pack("<i", numel) + b"t", data_pkl)
    assert count == 1, f"storage {key!r} found {count} times"
    return patched


def linearcnn_checkpoint(model: nn.Module, initial: torch.Tensor, first_name: str) -> dict:
    """A training checkpoint in our format ("linearcnn-checkpoint", version 1), as the contract
    describes it, loadable with weights_only=True."""
    weight = dict(model.named_parameters())[f"{first_name}.weight"].detach()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {
        "format": "linearcnn-checkpoint",
        "format_version": 1,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "first_layer": {"name": first_name, "initial_weight": initial.clone()},
        "snapshots": {"steps": torch.tensor([0, 10]), "weights": torch.stack([initial, weight])},
        "config": {"lr": 0.1, "epochs": 2, "model": "tiny", "widths": [8, 8]},
        "seed": 0,
        # torch.__version__ is a TorchVersion (str subclass), kept as is: the loader tolerates it.
        "versions": {"linearcnn": "0.1.0", "torch": torch.__version__, "python": "3.11"},
        "epoch": 2,
        "step": 10,
        "metrics": {"loss": [1.0, 0.5]},
        "random_labels": None,
        "rng_state": torch.get_rng_state(),
    }


def onnx_head_first_model(stem_w: np.ndarray, head_w: np.ndarray, *, use_constants: bool = False):
    """ONNX graph applying a 3x3 `stem` conv then a 1x1 `head` conv to input X.

    Initializers list `head.weight` first (so name and storage order both point at the head), and
    the first Conv node in node order is a decoy that convolves an initializer, not the input.
    With `use_constants`, the weights come from Constant nodes (via an Identity) instead.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    initializers = [numpy_helper.from_array(np.ones((1, 3, 4, 4), np.float32), "decoy_in")]
    if use_constants:
        nodes += [
            helper.make_node(
                "Constant", [], ["w_head"], value=numpy_helper.from_array(head_w, "w_head_value")
            ),
            helper.make_node(
                "Constant",
                [],
                ["w_stem_raw"],
                value=numpy_helper.from_array(stem_w, "w_stem_value"),
            ),
            helper.make_node("Identity", ["w_stem_raw"], ["w_stem"]),
        ]
        head_name, stem_name = "w_head", "w_stem"
    else:
        initializers = [
            numpy_helper.from_array(head_w, "head.weight"),
            numpy_helper.from_array(stem_w, "stem.weight"),
            *initializers,
        ]
        head_name, stem_name = "head.weight", "stem.weight"
    nodes += [
        helper.make_node("Conv", ["decoy_in", head_name], ["decoy_out"], name="decoy_conv"),
        helper.make_node("Conv", ["X", stem_name], ["s"], name="stem_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", head_name], ["Y"], name="head_conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "head_first",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 8, 8]),
            helper.make_tensor_value_info("decoy_out", TensorProto.FLOAT, [1, 4, 4, 4]),
        ],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
