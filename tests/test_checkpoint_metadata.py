"""Real training checkpoints (timm, torchvision references, Lightning, numpy metadata) load safely.

Their weights sit next to harmless metadata (`argparse.Namespace`, `pathlib` paths, numpy scalars)
that plain `torch.load(weights_only=True)` refuses. The loader rebuilds that metadata with checking
stand-ins (`linearcnn/checkpoints/_metadata.py`) and must still refuse, in one line naming the
class and before anything runs, a malicious object hidden next to it. Each refusal test has a
control: the same file loaded with plain pickle (`torch.load(weights_only=False)`) does run the
payload, so the marker's absence means something.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import pathlib
import pickle
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pytest
import torch
from checkpoint_fixtures import RunsCommand, TinyCNN, TouchesFile, weights_of

from linearcnn.checkpoints import _metadata, load_first_layer
from linearcnn.checkpoints._torch_load import torch_load
from linearcnn.cli import main
from linearcnn.errors import LinearCNNInputError

FORMATS = ["zip", "legacy"]


def save(obj: Any, path: Path, fmt: str = "zip") -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def optimizer_state(model: torch.nn.Module) -> dict[str, Any]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def timm_checkpoint(model: torch.nn.Module) -> dict[str, Any]:
    """Shaped like timm's `CheckpointSaver` output."""
    args = argparse.Namespace(model="tinycnn", lr=0.1, epochs=300, data_dir="/data/imagenet", amp=True, mean=None, drop_path=0.1)
    return {
        "epoch": 12,
        "arch": "tinycnn",
        "state_dict": model.state_dict(),
        "optimizer": optimizer_state(model),
        "version": 2,
        "args": args,
        "metric": 71.3,
    }


def torchvision_checkpoint(model: torch.nn.Module) -> dict[str, Any]:
    """Shaped like torchvision's references/classification/train.py checkpoints."""
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(sgd, step_size=30)
    args = argparse.Namespace(model="resnet18", device="cuda", batch_size=32, lr=0.1, output_dir=".", distributed=False)
    return {"model": model.state_dict(), "optimizer": sgd.state_dict(), "lr_scheduler": scheduler.state_dict(), "epoch": 4, "args": args}


def lightning_checkpoint(model: torch.nn.Module) -> dict[str, Any]:
    """Shaped like a PyTorch Lightning checkpoint, with a `pathlib` hyper-parameter."""
    return {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.3), "dirpath": "/runs/x"}},
        "optimizer_states": [optimizer_state(model)],
        "lr_schedulers": [{"step_size": 30, "gamma": 0.1, "last_epoch": 3}],
        "hyper_parameters": {"data_dir": pathlib.PosixPath("/data/cifar10"), "out": pathlib.PureWindowsPath(r"C:\runs\x"), "lr": 0.01},
        "hparams_name": "kwargs",
    }


def numpy_checkpoint(model: torch.nn.Module) -> dict[str, Any]:
    """numpy scalars and arrays in the metadata, as scripts that log with numpy save them."""
    return {
        "model_state_dict": model.state_dict(),
        "epoch": np.int64(7),
        "metric": np.float64(0.9),
        "best": np.float32(0.5),
        "is_best": np.bool_(True),
        "history": np.array([0.5, 0.7, 0.9]),
        "numpy_rng": np.random.RandomState(0).get_state(),
    }


SHAPES = {"timm": timm_checkpoint, "torchvision": torchvision_checkpoint, "lightning": lightning_checkpoint, "numpy": numpy_checkpoint}


def one_line_refusal(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# --------------------------------------------------------------------------- real checkpoints load


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_training_checkpoint_with_metadata_loads_its_first_layer(tmp_path: Path, shape: str, fmt: str) -> None:
    model = TinyCNN(seed=3)
    path = save(SHAPES[shape](model), tmp_path / f"{shape}.pth", fmt)
    with pytest.raises(pickle.UnpicklingError):  # the control: torch's own safe load refuses the metadata
        torch.load(path, weights_only=True)
    first = load_first_layer(path)
    assert first.name == ("model.stem" if shape == "lightning" else "stem")
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_cli_profiles_training_checkpoint_with_metadata(tmp_path: Path, shape: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(SHAPES[shape](TinyCNN(seed=3)), tmp_path / f"{shape}.pth")
    code = main(["profile", "--checkpoint", str(path), "--data", "builtin:200"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_comes_back_as_plain_values(tmp_path: Path, fmt: str) -> None:
    utc = datetime.timezone.utc
    meta = {
        "args": argparse.Namespace(lr=0.1, name="x", sizes=[1, 2], path=pathlib.PosixPath("/a/b")),
        "posix": pathlib.PurePosixPath("rel/p"),
        "windows": pathlib.PureWindowsPath(r"C:\x\y"),
        "f64": np.float64(0.9),
        "i64": np.int64(-3),
        "u8": np.uint8(200),
        "c128": np.complex128(1 - 2j),
        "text": np.str_("ab"),
        "flag": np.bool_(False),
        "dtype": np.dtype("float32"),
        "matrix": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
        "empty": np.zeros((0, 4)),
        "names": np.array(["a", "bc"]),
        "when": datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=utc),
        "naive": datetime.datetime(2024, 5, 6),
        "day": datetime.date(2024, 5, 6),
        "took": datetime.timedelta(days=1, seconds=2, microseconds=3),
        "groups": collections.defaultdict(list, {"a": [1, 2]}),
        "counts": collections.defaultdict(int),
        "ordered": collections.OrderedDict(b=1, a=2),
        "frozen": frozenset({1, 2}),
        "nothing": b"",
    }
    path = save({"stem.weight": torch.ones(2, 3, 1, 1), **meta}, tmp_path / "m.pt", fmt)
    loaded = torch_load(path, unsafe_load=False, zip_format=fmt == "zip")
    args = loaded["args"]
    assert isinstance(args, argparse.Namespace) and type(args) is _metadata.Namespace and args == meta["args"]
    assert vars(args) == {"lr": 0.1, "name": "x", "sizes": [1, 2], "path": PurePosixPath("/a/b")}
    assert type(args.path) is PurePosixPath  # pure: a path value, no file-system methods
    assert (type(loaded["posix"]), type(loaded["windows"])) == (PurePosixPath, PureWindowsPath)
    assert loaded["windows"] == PureWindowsPath(r"C:\x\y")
    for key in ("f64", "i64", "u8", "c128", "text", "flag"):
        assert type(loaded[key]) is type(meta[key]) and loaded[key] == meta[key], key
    assert isinstance(loaded["dtype"], _metadata.NumpyDType) and loaded["dtype"].dtype == np.dtype("float32")
    for key in ("matrix", "fortran", "empty", "names"):
        array = loaded[key]
        assert isinstance(array, _metadata.CheckedArray) and array.dtype == meta[key].dtype, key
        np.testing.assert_array_equal(array, meta[key])
    assert loaded["fortran"].flags.f_contiguous
    for key in ("when", "naive", "day", "took", "ordered", "frozen", "nothing"):
        assert type(loaded[key]) is type(meta[key]) and loaded[key] == meta[key], key
    assert loaded["groups"] == {"a": [1, 2]} and loaded["counts"] == {}  # defaultdicts come back as dicts


# --------------------------------------------------------------------------- malicious objects next to metadata


class EvilPath(type(Path())):  # type: ignore[misc]
    """A Path subclass whose construction (as unpickling does it) touches the file it names."""

    def __new__(cls, *parts: Any) -> EvilPath:
        if parts and str(parts[-1]) == "MARKER":
            Path(*parts).touch()
        return super().__new__(cls, *parts)


class Namespace(argparse.Namespace):
    """Named like the allowed `argparse.Namespace`, but in this module: its `__setstate__` runs on unpickling."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def make_default() -> list[Any]:
    return []


class Crafted:
    """Pickles as the given `__reduce__` tuple: how a hand-written malicious pickle looks."""

    def __init__(self, reduced: tuple[Any, ...]) -> None:
        self.reduced = reduced

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reduced


def hostile_payload(kind: str, marker: Path) -> tuple[Any, str]:
    """(metadata value hiding the payload, what the refusal must name)."""
    if kind == "namespace-os-system":
        return argparse.Namespace(lr=0.1, hook=RunsCommand(f"touch {marker}")), f"{os.system.__module__}.system"
    if kind == "namespace-path-touch":  # Path.touch pickles as getattr(Path, "touch"): getattr is refused first
        return argparse.Namespace(out=pathlib.PosixPath("/tmp"), hook=TouchesFile(marker)), "builtins.getattr"
    if kind == "path-subclass":  # building it touches the marker; `hostile_checkpoint` removes it
        return {"data_dir": pathlib.PosixPath("/data"), "out": EvilPath(marker.parent, "MARKER")}, f"{__name__}.EvilPath"
    if kind == "same-name-namespace":
        return Namespace(lr=0.1, marker=str(marker)), f"{__name__}.Namespace"
    if kind == "defaultdict-getcwd":
        return collections.defaultdict(os.getcwd), f"{os.getcwd.__module__}.getcwd"
    if kind == "defaultdict-function":
        return collections.defaultdict(make_default), f"{__name__}.make_default"
    if kind == "defaultdict-ordereddict":
        return collections.defaultdict(collections.OrderedDict), "default_factory collections.OrderedDict"
    if kind == "namespace-called":
        return Crafted((argparse.Namespace, ("x",))), "argparse.Namespace"
    if kind == "namespace-dunder":
        return Crafted((argparse.Namespace, (), {"__class__": 1})), "argparse.Namespace attribute '__class__'"
    if kind == "path-not-strings":
        return Crafted((pathlib.PurePosixPath, (1, 2))), "pathlib.PurePosixPath"
    if kind == "numpy-short-scalar":
        return Crafted((np.float64(0).__reduce__()[0], (np.dtype("f8"), b"123"))), "numpy scalar"
    if kind == "numpy-amplified-array":
        reconstruct = np.zeros(1).__reduce__()[0]
        return Crafted((reconstruct, (np.ndarray, (0,), b"b"), (1, (10**8,), np.dtype("f8"), False, b"\0" * 8))), "numpy.ndarray"
    if kind == "numpy-object-array":
        return np.array([1, "x"], dtype=object), "numpy.dtype 'O8'"
    raise AssertionError(kind)


#: Payloads that run something when plain pickle loads them (the others are refused shapes).
RUNS_CODE = ["namespace-os-system", "namespace-path-touch", "path-subclass", "same-name-namespace"]
HOSTILE = RUNS_CODE + [
    "defaultdict-getcwd",
    "defaultdict-function",
    "defaultdict-ordereddict",
    "namespace-called",
    "namespace-dunder",
    "path-not-strings",
    "numpy-short-scalar",
    "numpy-amplified-array",
    "numpy-object-array",
]


def hostile_checkpoint(tmp_path: Path, kind: str, fmt: str = "zip") -> tuple[Path, Path, str]:
    """A timm-shaped checkpoint whose metadata hides payload `kind`: (file, marker, class named)."""
    marker = tmp_path / "MARKER"
    payload, named = hostile_payload(kind, marker)
    checkpoint = timm_checkpoint(TinyCNN(seed=1))
    checkpoint["extra"] = payload
    path = save(checkpoint, tmp_path / f"{kind}.pth", fmt)
    if marker.exists():  # building the payload may have touched it (EvilPath does, by design)
        marker.unlink()
    return path, marker, named


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_malicious_object_next_to_metadata_is_refused_before_running(tmp_path: Path, kind: str, fmt: str) -> None:
    path, marker, named = hostile_checkpoint(tmp_path, kind, fmt)
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path)
    one_line_refusal(excinfo, str(path), named, "unsafe_load")
    assert excinfo.value.parameter == "unsafe_load"
    assert not marker.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_cli_refuses_malicious_metadata_in_one_line(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, marker, named = hostile_checkpoint(tmp_path, kind)
    code = main(["profile", "--checkpoint", str(path), "--data", "builtin:200"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert named in err and "--unsafe-load" in err and "Traceback" not in err, err
    assert not marker.exists()


@pytest.mark.parametrize("kind", RUNS_CODE)
def test_control_plain_pickle_runs_the_payload(tmp_path: Path, kind: str) -> None:
    """Without the safe loader the same file does run its payload: the refusal tests can fail."""
    path, marker, _ = hostile_checkpoint(tmp_path, kind)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # plain pickle
    assert marker.exists()


def test_whole_model_refusal_names_the_class_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": TinyCNN(seed=2), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path)
    one_line_refusal(excinfo, str(path), "checkpoint_fixtures.TinyCNN", "save model.state_dict()", "unsafe_load")


def test_numpy_1_module_names_load_too(tmp_path: Path) -> None:
    """numpy 1 pickles its scalars and arrays as `numpy.core.multiarray.*` (numpy 2: `numpy._core`)."""
    model = TinyCNN(seed=5)
    path = save(numpy_checkpoint(model), tmp_path / "np2.pth", "legacy")
    old = path.with_name("np1.pth")
    old.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))  # GLOBAL names end at a newline
    assert b"numpy.core.multiarray\nscalar" in old.read_bytes() and b"numpy._core" not in old.read_bytes()
    loaded = torch_load(old, unsafe_load=False, zip_format=False)
    assert type(loaded["metric"]) is np.float64 and loaded["metric"] == 0.9
    np.testing.assert_array_equal(loaded["history"], [0.5, 0.7, 0.9])
    np.testing.assert_array_equal(load_first_layer(old).weight, weights_of(model.stem))


def test_loading_leaves_torch_safe_globals_as_they_were(tmp_path: Path) -> None:
    def registered() -> list[str]:  # torch may restore the list in another order; its members must not change
        return sorted(map(repr, torch.serialization.get_safe_globals()))

    before = registered()
    load_first_layer(save(timm_checkpoint(TinyCNN()), tmp_path / "t.pth"))
    assert registered() == before
    with pytest.raises(pickle.UnpicklingError):  # a plain torch.load afterwards is as strict as before
        torch.load(tmp_path / "t.pth", weights_only=True)
