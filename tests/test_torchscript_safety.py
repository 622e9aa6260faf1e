"""TorchScript archives are read as data: their weights and convolution order come out as
`torch.jit.load` would give them, nothing from the file runs, and a bad archive is refused in one
line naming the file.

The hostile archives are real `torch.jit.save` files of modules whose scripted `__setstate__`
prints a marker (and, for one, then loops forever); control tests show that `torch.jit.load`
does run it, so the safety tests can fail.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_fixtures import (
    HOSTILE_MARKER,
    DepthwiseNet,
    HangsOnLoad,
    HeadFirstNet,
    PrintsOnLoad,
    RunsCommand,
    TinyCNN,
    TouchesFile,
    WithHostileTail,
    rewrite_zip,
    weights_of,
    with_storage_numel,
)
from torch import nn

from linearcnn.checkpoints import list_conv_layers, load_first_layer
from linearcnn.checkpoints._torchscript import torchscript_inventory
from linearcnn.cli import main
from linearcnn.errors import LinearCNNInputError
from linearcnn.models import build_model

REPO = Path(__file__).resolve().parents[1]


def save_script(model: nn.Module, path: Path, how: str = "script") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "script":
            compiled = torch.jit.script(model)
        elif how == "trace":
            compiled = torch.jit.trace(model, torch.randn(1, 3, 16, 16))
        else:
            compiled = torch.jit.freeze(torch.jit.script(model))
        torch.jit.save(compiled, path)
    return path


def conv_call_order(model: nn.Module) -> list[str]:
    """Names of the Conv2d modules in the order an eager forward pass calls them (forward hooks)."""
    order: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: order.append(name) if name not in order else None)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    for hook in hooks:
        hook.remove()
    return order


def write_npz_data(path: Path) -> str:
    rng = np.random.default_rng(0)
    images = (rng.random((16, 12, 12, 3)) * 255).astype(np.uint8)
    np.savez(path, images=images, labels=rng.integers(0, 4, size=16))
    return f"npz:{path}"


# --------------------------------------------------------------------------- read as torch would


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("arch", ["vgg11", "resnet20"])
def test_deep_archives_give_the_state_dict_and_the_call_order(tmp_path: Path, arch: str, how: str) -> None:
    torch.manual_seed(3)
    model = build_model(arch, 3, 10, width=8).eval()
    path = save_script(model, tmp_path / f"{arch}.pt", how)
    state = model.state_dict()
    calls = conv_call_order(model)
    layers = list_conv_layers(path)
    assert [name for name, _ in layers] == calls  # graph order, from the code read as text
    first = load_first_layer(path)
    assert (first.name, first.format) == (calls[0], "torchscript")
    for name, shape in layers:
        expected = state[f"{name}.weight"].to(torch.float64).numpy()
        assert shape == expected.shape
        np.testing.assert_array_equal(load_first_layer(path, layer=name).weight, expected)


@pytest.mark.parametrize("how", ["script", "trace", "freeze"])
@pytest.mark.parametrize("make", [HeadFirstNet, DepthwiseNet, TinyCNN], ids=["head-first", "depthwise", "tiny"])
def test_text_reading_agrees_with_the_compiled_graph(tmp_path: Path, make: type[nn.Module], how: str) -> None:
    """The convolution order read from the code text equals the one `torch.jit.load`'s compiled
    graph gives (the `unsafe_load` reader): two independent readings of one archive."""
    path = save_script(make().eval(), tmp_path / "model.pt", how)
    safe, compiled = torchscript_inventory(path), torchscript_inventory(path, unsafe_load=True)
    assert [(c.name, c.shape) for c in safe.candidates] == [(c.name, c.shape) for c in compiled.candidates]
    assert safe.graph_first == compiled.graph_first is not None
    for ours, theirs in zip(safe.candidates, compiled.candidates, strict=True):
        np.testing.assert_array_equal(ours.fetch(), theirs.fetch())


def test_default_reading_never_calls_torch_jit_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = HeadFirstNet(seed=4).eval()
    path = save_script(model, tmp_path / "model.pt")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    first = load_first_layer(path)
    assert first.name == "stem"
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))


def test_unsafe_load_is_the_only_way_to_torch_jit_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = HeadFirstNet(seed=5).eval()
    path = save_script(model, tmp_path / "model.pt")
    calls: list[object] = []
    real_load = torch.jit.load

    def counting_load(*args: object, **kwargs: object) -> object:
        calls.append(args[0])
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.jit, "load", counting_load)
    safe = load_first_layer(path)
    assert calls == []
    unsafe = load_first_layer(path, unsafe_load=True)
    assert len(calls) == 1
    assert unsafe.name == safe.name == "stem"
    np.testing.assert_array_equal(unsafe.weight, safe.weight)


# --------------------------------------------------------------------------- hostile archives


def test_control_torch_jit_load_runs_the_archive_setstate(tmp_path: Path) -> None:
    path = save_script(WithHostileTail(PrintsOnLoad()), tmp_path / "prints.pt")
    done = subprocess.run(
        [sys.executable, "-c", f"import torch; torch.jit.load({str(path)!r})"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert HOSTILE_MARKER in done.stdout


def test_hostile_setstate_is_not_run_and_the_layer_is_measured(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = WithHostileTail(PrintsOnLoad(), seed=5).eval()
    path = save_script(model, tmp_path / "prints.pt")
    first = load_first_layer(path)
    assert first.name == "stem"
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))
    assert main(["profile", "--checkpoint", str(path), "--data", write_npz_data(tmp_path / "d.npz"), "--json"]) == 0
    captured = capfd.readouterr()  # file-descriptor level: TorchScript's print writes there
    assert HOSTILE_MARKER not in captured.out + captured.err
    assert '"stem"' in captured.out


def test_control_torch_jit_load_hangs_on_the_looping_archive(tmp_path: Path) -> None:
    path = save_script(WithHostileTail(HangsOnLoad()), tmp_path / "hangs.pt")
    code = f"import torch; print('loading', flush=True); torch.jit.load({str(path)!r}); print('loaded', flush=True)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(2)]  # 'loading', then the marker
        assert lines == ["loading", HOSTILE_MARKER]
        time.sleep(1.0)
        assert process.poll() is None  # still inside __setstate__'s loop
    finally:
        process.kill()
        process.wait()


def test_looping_setstate_is_not_run(tmp_path: Path) -> None:
    model = WithHostileTail(HangsOnLoad(), seed=6).eval()
    path = save_script(model, tmp_path / "hangs.pt")
    code = (
        "import sys; from linearcnn.checkpoints import load_first_layer; "
        f"first = load_first_layer({str(path)!r}); print(first.name); sys.stdout.flush(); "
        "import numpy; numpy.save(sys.argv[1], first.weight)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "w.npy")], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stem"]
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), weights_of(model.stem))


# --------------------------------------------------------------------------- malformed archives


def _entry(path: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(name)


def _malformed(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A broken copy of a scripted TinyCNN archive, and a word its error must contain."""
    good = save_script(TinyCNN(seed=7).eval(), tmp_path / "good.pt")
    bad = tmp_path / f"bad-{kind}.pt"
    stem_bytes = 8 * 3 * 3 * 3 * 4  # the stem weight, storage data/0, float32
    if kind == "truncated-storage":
        return rewrite_zip(good, bad, {"/data/0": _entry(good, "/data/0")[: stem_bytes // 2]}), "bytes"
    if kind == "missing-storage":
        return rewrite_zip(good, bad, {"/data/1": None}), "missing"
    if kind == "declared-larger":
        data = with_storage_numel(_entry(good, "/data.pkl"), "0", 8 * 3 * 3 * 3 + 1000)
        return rewrite_zip(good, bad, {"/data.pkl": data}), "declares"
    if kind == "os-system":
        return rewrite_zip(good, bad, {"/data.pkl": pickle.dumps(RunsCommand("echo " + HOSTILE_MARKER), protocol=2)}), "system"
    if kind == "path-touch":
        data = pickle.dumps(TouchesFile(tmp_path / "touched"), protocol=4)
        return rewrite_zip(good, bad, {"/data.pkl": data}), "touch"
    if kind == "not-a-pickle":
        return rewrite_zip(good, bad, {"/data.pkl": b"\x80\x02garbage"}), "pickle"
    if kind == "flipped-byte":  # same size, wrong content: the zip's CRC-32 catches it when read
        raw = bytearray(good.read_bytes())
        with zipfile.ZipFile(good) as archive:
            info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("/data/0")))
        name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        raw[info.header_offset + 30 + name_length + extra_length] ^= 0xFF
        bad.write_bytes(bytes(raw))
        return bad, "CRC"
    if kind == "cut-file":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return bad, "corrupt"
    raise AssertionError(kind)


MALFORMED = [
    "truncated-storage",
    "missing-storage",
    "declared-larger",
    "flipped-byte",
    "os-system",
    "path-touch",
    "not-a-pickle",
    "cut-file",
]


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_archive_is_refused_in_one_line(tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    path, word = _malformed(tmp_path, kind)
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and word in message, message
    assert not (tmp_path / "touched").exists()
    assert HOSTILE_MARKER not in capfd.readouterr().out


@pytest.mark.parametrize("kind", ["declared-larger", "os-system"])
def test_malformed_archive_exits_2_through_the_cli(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, word = _malformed(tmp_path, kind)
    assert main(["profile", "--checkpoint", str(path), "--data", write_npz_data(tmp_path / "d.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(path) in err and word in err, err


def test_tensor_views_must_fit_their_storage() -> None:
    from linearcnn.checkpoints._safe_unpickle import STORAGE_TYPES, ArchiveError, StorageRef, _rebuild_tensor

    storage = StorageRef("m/data/0", STORAGE_TYPES["FloatStorage"], 10)
    assert _rebuild_tensor(storage, 4, (2, 3), (3, 1), False).shape == (2, 3)  # last element: 4 + 3 + 2 = 9
    for offset, size, stride in [(5, (2, 3), (3, 1)), (0, (11,), (1,)), (0, (20,), (0,)), (-1, (2,), (1,)), (0, (2, 2), (1,))]:
        with pytest.raises(ArchiveError):
            _rebuild_tensor(storage, offset, size, stride, False)
