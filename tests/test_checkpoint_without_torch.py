"""Zip-format `torch.save` files read without torch (`_safe_unpickle.read_torch_save`).

The reference is torch itself: each file here is also read with `torch.load(weights_only=True)`
(the path taken when the torch-free reader declines), and both must give the same inventory and
the same weights bit for bit. What the narrow reader does not rebuild (metadata classes, hostile
globals) must make it decline, so that torch's refusal and message stay the only ones.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_fixtures import RunsCommand, TinyCNN, TinyViT, linearcnn_checkpoint, weights_of
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from linearcnn.checkpoints import _torch_pickle, load_first_layer
from linearcnn.checkpoints._safe_unpickle import StoredTensor, read_torch_save
from linearcnn.errors import LinearCNNInputError

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]


def _values(t: torch.Tensor) -> np.ndarray:
    """What the reader must return for `t`: its NumPy values (bfloat16 widened to float32)."""
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    order=st.randoms(use_true_random=False),
    step=st.integers(1, 3),
    offset=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_a_view_reads_as_torch_stores_it(tmp_path_factory, dtype, shape, order, step, offset, seed):
    """Any strided view of a larger storage: offset, permuted and stepped strides, any dtype."""
    generator = torch.Generator().manual_seed(seed)
    numel = int(np.prod(shape)) if shape else 1
    base = torch.randn(offset + step * max(numel, 1) + 3, generator=generator, dtype=torch.float64) * 50
    storage = base.to(dtype) if dtype != torch.bool else base > 0
    contiguous = [int(np.prod(shape[i + 1:])) * step for i in range(len(shape))]  # row-major, stepped
    axes = list(range(len(shape)))
    order.shuffle(axes)
    view = storage.as_strided(tuple(shape[a] for a in axes), tuple(contiguous[a] for a in axes), offset)
    path = tmp_path_factory.mktemp("view") / "view.pt"
    torch.save({"view": view, "whole": storage}, path)
    loaded = read_torch_save(path)
    assert isinstance(loaded["view"], StoredTensor) and loaded["view"].shape == tuple(view.shape)
    assert str(loaded["view"].dtype) == str(dtype) and loaded["view"].is_floating_point() == dtype.is_floating_point
    for key, tensor in (("view", view), ("whole", storage)):
        got, expected = loaded[key].read(path), _values(tensor)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def _torch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_torch_pickle, "read_torch_save", lambda path: None)


def _inventory(path: Path):
    return _torch_pickle.torch_pickle_inventory(path, unsafe_load=False, zip_format=True)


def _described(inv) -> tuple:
    """Everything an inventory says, with the weights read (the fetchers called)."""
    def batchnorm(candidate) -> tuple | None:
        bn = candidate.batchnorm() if candidate.batchnorm is not None else None
        if bn is None:
            return None
        return bn.name, bn.eps, bn.var().tobytes(), None if bn.gamma is None else bn.gamma().tobytes()

    candidates = [(c.name, c.key, c.shape, c.notes, c.fetch().tobytes(), batchnorm(c)) for c in inv.candidates]
    inits = {name: fetch().tobytes() for name, fetch in inv.init_weights.items()}
    return inv.format, inv.order, candidates, list(inv.other_tensors), inv.recorded_first, inits


def _files(tmp: Path) -> dict[str, Path]:
    """Checkpoints the way training scripts write them, each file holding only tensors and containers."""
    from linearcnn.models import build_seeded_model

    cnn, vit = TinyCNN(seed=3), TinyViT(seed=4)
    vgg = build_seeded_model("vgg11-bn", 3, 10, seed=1, width=8)
    with torch.no_grad():  # running statistics that are not the defaults
        for module in vgg.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    files = {
        "state dict": cnn.state_dict(),
        "with batchnorm": vgg.state_dict(),
        "nested with optimizer": {"model": cnn.state_dict(), "optimizer": torch.optim.SGD(cnn.parameters(), lr=0.1,
                                                                                          momentum=0.9).state_dict()},
        "parameters": {"stem.weight": cnn.stem.weight, "stem.bias": cnn.stem.bias},
        "vit": vit.state_dict(),
        "half": {k: v.half() for k, v in cnn.state_dict().items()},
        "bfloat16": {k: v.bfloat16() for k, v in cnn.state_dict().items()},
        "one tensor": cnn.stem.weight.detach(),
        "list": [cnn.body.weight.detach(), cnn.stem.weight.detach()],
        "transposed view": {"conv.weight": torch.randn(3, 8, 5, 5).transpose(0, 1)},
    }
    ours = linearcnn_checkpoint(cnn, torch.randn(8, 3, 3, 3), "stem")
    ours["versions"] = {k: str(v) for k, v in ours["versions"].items()}  # as training writes them: plain str
    files["linearcnn checkpoint"] = ours
    paths = {}
    for name, obj in files.items():
        paths[name] = tmp / (name.replace(" ", "_") + ".pt")
        torch.save(obj, paths[name])
    return paths


def test_inventories_are_torchs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _files(tmp_path)
    for name, path in paths.items():
        assert read_torch_save(path) is not None, f"{name}: the torch-free reader declined"
        fast = _described(_inventory(path))
        with monkeypatch.context() as patched:
            _torch_only(patched)
            reference = _described(_inventory(path))
        assert fast == reference, name


def test_first_layer_and_initial_weights_without_torch_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cnn = TinyCNN(seed=5)
    initial = torch.randn(8, 3, 3, 3, dtype=torch.float64).float()
    ours = linearcnn_checkpoint(cnn, initial, "stem")
    ours["versions"] = {k: str(v) for k, v in ours["versions"].items()}
    path = tmp_path / "run.pt"
    torch.save(ours, path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    first = load_first_layer(path)
    assert first.format == "linearcnn" and first.name == "stem"
    np.testing.assert_array_equal(first.weight, weights_of(cnn.stem))
    np.testing.assert_array_equal(first.init_weight, initial.double().numpy())


def test_metadata_is_left_to_torch(tmp_path: Path) -> None:
    """argparse.Namespace, TorchVersion: the narrow reader declines; torch's stand-ins read them."""
    cnn = TinyCNN(seed=6)
    for extra in ({"args": argparse.Namespace(lr=0.1)}, {"torch": torch.__version__}):
        path = tmp_path / "meta.pt"
        torch.save({"state_dict": cnn.state_dict(), **extra}, path)
        assert read_torch_save(path) is None
        np.testing.assert_array_equal(load_first_layer(path).weight, weights_of(cnn.stem))


def test_hostile_pickle_is_declined_and_refused_by_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pt"
    torch.save({"stem.weight": torch.randn(4, 3, 3, 3), "x": RunsCommand(f"touch {marker}")}, path)
    assert read_torch_save(path) is None
    with pytest.raises(LinearCNNInputError) as fast:
        load_first_layer(path)
    _torch_only(monkeypatch)
    with pytest.raises(LinearCNNInputError) as reference:
        load_first_layer(path)
    assert str(fast.value) == str(reference.value) and "system" in str(fast.value)
    assert not marker.exists()


@pytest.mark.parametrize("metadata", [False, True])
def test_a_short_storage_is_refused_in_one_line(tmp_path: Path, metadata: bool) -> None:
    """A storage entry shorter than its tensor declares: refused before torch maps it (its
    memory-mapped load reads past the entry), with or without metadata that torch must read."""
    from checkpoint_fixtures import rewrite_zip

    path = tmp_path / "sd.pt"
    torch.save({"stem.weight": torch.randn(4, 3, 3, 3), **({"args": argparse.Namespace(lr=1)} if metadata else {})}, path)
    damaged = rewrite_zip(path, tmp_path / "damaged.pt", {"data/0": b"\0" * 7})
    with pytest.raises(LinearCNNInputError) as error:
        load_first_layer(damaged)
    message = str(error.value)
    assert str(damaged) in message and "7 bytes" in message and len(message.splitlines()) == 1


def test_fit_with_a_warm_cache_never_imports_torch(tmp_path: Path) -> None:
    """The second `linearcnn fit` of a state dict (statistics from the on-disk cache) runs with
    torch made unimportable, and prints what the first run printed."""
    conv = nn.Conv2d(3, 6, 3)
    torch.save({"conv1.weight": conv.weight.detach(), "conv1.bias": conv.bias.detach()}, tmp_path / "sd.pt")
    data = tmp_path / "d.npz"
    images = np.random.default_rng(0).random((40, 3, 10, 10)).astype(np.float32)
    np.savez(data, images=images, labels=np.arange(40) % 4)
    args = ["fit", "-c", str(tmp_path / "sd.pt"), "--data", f"npz:{data}", "--bootstrap", "0", "--json"]
    env_code = (
        "import os, sys\n"
        f"os.environ['LINEARCNN_CACHE_DIR'] = {str(tmp_path / 'cache')!r}\n"
        "if sys.argv[1] == 'blocked':\n"
        "    class Block:\n"
        "        def find_spec(self, name, path=None, target=None):\n"
        "            if name == 'torch' or name.startswith('torch.'):\n"
        "                raise ImportError('torch is blocked in this test')\n"
        "    sys.meta_path.insert(0, Block())\n"
        "from linearcnn.cli import main\n"
        "code = main(sys.argv[2:])\n"
        "assert sys.argv[1] != 'blocked' or 'torch' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    first = subprocess.run([sys.executable, "-c", env_code, "free", *args], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", env_code, "blocked", *args], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    import json

    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a.pop("stats_cache", "miss") != "hit" and b.pop("stats_cache", "hit") == "hit"
    assert a == b
