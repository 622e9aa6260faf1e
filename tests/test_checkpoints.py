"""Checkpoint loading: every format, the first-layer rule, safety, and one-line errors.

Every file is written here from a small torch model (or built directly with the ONNX helper API),
and the loader's answer is compared with the weights of the model's known first convolution.
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_fixtures import (
    MLP,
    DepthwiseNet,
    HeadFirstNet,
    RunsCommand,
    TinyCNN,
    TinyViT,
    TouchesFile,
    linearcnn_checkpoint,
    onnx_head_first_model,
    weights_of,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from linearcnn.checkpoints import (
    FirstLayer,
    canonical_name,
    detect_format,
    list_conv_layers,
    load_first_layer,
    load_init_weight,
    load_training_checkpoint,
    with_init_from,
)
from linearcnn.errors import LinearCNNInputError


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def save_state_dict(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- torch state dicts


def test_plain_state_dict_gives_the_stem(tmp_path: Path) -> None:
    model = TinyCNN()
    path = save_state_dict(tmp_path / "model.pt", model.state_dict())
    first = load_first_layer(path)
    assert isinstance(first, FirstLayer)
    assert (first.name, first.format, first.path) == ("stem", "torch-state-dict", str(path))
    assert first.weight.dtype == np.float64 and first.weight.shape == (8, 3, 3, 3)
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))
    assert first.init_weight is None
    assert list_conv_layers(path) == [("stem", (8, 3, 3, 3)), ("body", (8, 8, 3, 3))]


def test_data_parallel_and_compile_prefixes_are_stripped(tmp_path: Path) -> None:
    model = TinyCNN(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = {
            "dataparallel": nn.DataParallel(model).state_dict(),
            "compiled": torch.compile(model).state_dict(),
            "both": {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()},
        }
    assert next(iter(wrapped["dataparallel"])).startswith("module.")
    assert next(iter(wrapped["compiled"])).startswith("_orig_mod.")
    for label, state in wrapped.items():
        first = load_first_layer(save_state_dict(tmp_path / f"{label}.pt", state))
        assert first.name == "stem", label
        np.testing.assert_array_equal(first.weight, weights_of(model.stem))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}},
        lambda sd: {"model": sd, "args": {"lr": 0.1}},
        lambda sd: {"net": sd},
        lambda sd: {"network": sd},
        lambda sd: {"params": sd},
        lambda sd: {"ema": sd},
        lambda sd: {"model": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}},
        lambda sd: {"model": {"arch": "tiny", "width": 8}, "network": sd},
    ],
    ids=[
        "state_dict",
        "model_state_dict",
        "model",
        "net",
        "network",
        "params",
        "ema",
        "doubly-nested",
        "model-is-a-description",
    ],
)
def test_nested_checkpoints(tmp_path: Path, wrap: Callable[[dict], object]) -> None:
    model = TinyCNN(seed=2)
    first = load_first_layer(save_state_dict(tmp_path / "ckpt.pth", wrap(model.state_dict())))
    assert first.name == "stem"
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))


def test_live_model_wins_over_ema_and_optimizer_is_ignored(tmp_path: Path) -> None:
    live, ema = TinyCNN(seed=3), TinyCNN(seed=4)
    decoy = {"momentum": torch.full((8, 3, 3, 3), 7.0)}
    path = save_state_dict(tmp_path / "c.pt", {"ema": ema.state_dict(), "model": live.state_dict()})
    np.testing.assert_array_equal(load_first_layer(path).weight, weights_of(live.stem))
    # No wrapper key: the mapping is flattened, skipping optimizer state.
    path = save_state_dict(tmp_path / "d.pt", {"optimizer": decoy, "weights": live.state_dict()})
    first = load_first_layer(path)
    assert first.name == "weights.stem"
    np.testing.assert_array_equal(first.weight, weights_of(live.stem))


@pytest.mark.parametrize("torchvision_names", [False, True])
def test_vit_patch_embedding_is_the_first_layer(tmp_path: Path, torchvision_names: bool) -> None:
    model = TinyViT(torchvision_names=torchvision_names)
    first = load_first_layer(save_state_dict(tmp_path / "vit.pt", model.state_dict()))
    assert first.name == model.first_name
    assert first.weight.shape == (16, 3, 4, 4)
    np.testing.assert_array_equal(first.weight, weights_of(model.first_conv))


def test_legacy_serialization_and_half_precision(tmp_path: Path) -> None:
    model = TinyCNN(seed=5)
    half = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    path = tmp_path / "legacy.pt"
    torch.save(half, path, _use_new_zipfile_serialization=False)
    assert detect_format(path) == "torch-legacy"
    first = load_first_layer(path)
    np.testing.assert_array_equal(first.weight, half["stem.weight"].to(torch.float64).numpy())


def test_bare_tensor(tmp_path: Path) -> None:
    weight = TinyCNN(seed=6).stem.weight.detach()
    path = save_state_dict(tmp_path / "w.pt", weight)
    first = load_first_layer(path)
    assert first.name == "weight"
    np.testing.assert_array_equal(first.weight, weight.double().numpy())


def test_shape_rule_prefers_rgb_input_over_earlier_wider_conv(tmp_path: Path) -> None:
    # Registration order puts a 16-channel conv before the 3-channel stem.
    state = {"neck.weight": torch.randn(4, 16, 1, 1), **TinyCNN(seed=7).state_dict()}
    first = load_first_layer(save_state_dict(tmp_path / "s.pt", state))
    assert first.name == "stem"
    np.testing.assert_array_equal(first.weight, state["stem.weight"].double().numpy())


# --------------------------------------------------------------------------- our own format


def test_linearcnn_checkpoint_gives_recorded_layer_and_init(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Conv2d(6, 6, 3)))
    initial = torch.randn(6, 3, 5, 5) * 0.01
    path = save_state_dict(tmp_path / "run.pt", linearcnn_checkpoint(model, initial, "features.0"))
    first = load_first_layer(path)
    assert (first.name, first.format) == ("features.0", "linearcnn")
    np.testing.assert_array_equal(first.weight, weights_of(model.features[0]))
    np.testing.assert_array_equal(first.init_weight, initial.double().numpy())
    other = load_first_layer(path, layer="features.2")
    np.testing.assert_array_equal(other.weight, weights_of(model.features[2]))
    assert other.init_weight is None  # the stored initial weights belong to features.0 only


def test_linearcnn_checkpoint_unknown_version_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    ckpt = linearcnn_checkpoint(model, torch.zeros(4, 3, 3, 3), "0")
    ckpt["format_version"] = 99
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(save_state_dict(tmp_path / "v.pt", ckpt))
    assert_one_line_error(excinfo, "format_version 99")


def test_training_reader_and_measuring_loader_share_one_format_check(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    path = save_state_dict(tmp_path / "ok.pt", linearcnn_checkpoint(model, torch.zeros(4, 3, 3, 3), "0"))
    assert load_training_checkpoint(path)["first_layer"]["name"] == "0"  # the contract's file reads as a training checkpoint
    for change, needle in (({"format_version": 99}, "format_version 99"), ({"model_state_dict": None}, "lacks model_state_dict")):
        bad = save_state_dict(tmp_path / "bad.pt", {**linearcnn_checkpoint(model, torch.zeros(4, 3, 3, 3), "0"), **change})
        with pytest.raises(LinearCNNInputError) as by_training:
            load_training_checkpoint(bad)
        with pytest.raises(LinearCNNInputError) as by_measuring:
            load_first_layer(bad)
        assert assert_one_line_error(by_training, needle) == assert_one_line_error(by_measuring, needle)


# --------------------------------------------------------------------------- graph formats


@pytest.mark.parametrize("how", ["script", "trace", "freeze"])
def test_torchscript_uses_graph_order(tmp_path: Path, how: str) -> None:
    model = HeadFirstNet(seed=8).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "script":
            compiled = torch.jit.script(model)
        elif how == "trace":
            compiled = torch.jit.trace(model, torch.randn(1, 3, 8, 8))
        else:
            compiled = torch.jit.freeze(torch.jit.script(model))
        torch.jit.save(compiled, tmp_path / "model.pt")
    path = tmp_path / "model.pt"
    assert detect_format(path) == "torchscript"
    first = load_first_layer(path)
    assert first.format == "torchscript"
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))
    if how != "freeze":  # a frozen module keeps no attribute names
        assert first.name == "stem"
        assert list_conv_layers(path) == [("stem", (3, 3, 3, 3)), ("head", (4, 3, 1, 1))]
        np.testing.assert_array_equal(
            load_first_layer(path, layer="head").weight, weights_of(model.head)
        )
    # The same weights as a state dict: registration order and the shape rule both pick `head`,
    # which is why the graph matters.
    assert load_first_layer(save_state_dict(tmp_path / "sd.pt", model.state_dict())).name == "head"


@pytest.mark.parametrize("use_constants", [False, True], ids=["initializers", "constant-nodes"])
def test_onnx_uses_graph_order(tmp_path: Path, use_constants: bool) -> None:
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = HeadFirstNet(seed=9)
    stem_w = model.stem.weight.detach().numpy()  # (3, 3, 3, 3) float32
    head_w = model.head.weight.detach().numpy()  # (4, 3, 1, 1) float32
    proto = onnx_head_first_model(stem_w, head_w, use_constants=use_constants)
    onnx.checker.check_model(proto)
    # The graph really computes head(relu(stem(x))) (biases are zero in the graph).
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (y,) = ReferenceEvaluator(proto).run(["Y"], {"X": x})
    with torch.no_grad():
        expected = nn.functional.conv2d(
            torch.relu(nn.functional.conv2d(torch.from_numpy(x), model.stem.weight, padding=1)),
            model.head.weight,
        )
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)

    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    first = load_first_layer(path)
    assert first.format == "onnx"
    assert first.name == ("stem_conv" if use_constants else "stem")
    np.testing.assert_array_equal(first.weight, stem_w.astype(np.float64))
    names = [name for name, _ in list_conv_layers(path)]
    assert names[:2] == (["decoy_conv", "stem_conv"] if use_constants else ["head", "stem"])
    by_node_name = load_first_layer(path, layer="head_conv")
    np.testing.assert_array_equal(by_node_name.weight, head_w.astype(np.float64))


# --------------------------------------------------------------------------- safetensors, NumPy


def test_safetensors_sorted_names_and_depthwise_conv(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = DepthwiseNet(seed=10)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    # Sorted names put the depthwise "stages.0" (8, 1, 3, 3) before "stem" (8, 3, 3, 3).
    assert [n for n, _ in list_conv_layers(path)] == ["stages.0", "stem"]
    first = load_first_layer(path)
    assert (first.name, first.format) == ("stem", "safetensors")
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))


def test_npy_and_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    conv_a = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    conv_b = rng.standard_normal((4, 8, 1, 1))
    initial = rng.standard_normal((8, 3, 3, 3))
    np.save(tmp_path / "w.npy", conv_a)
    first = load_first_layer(tmp_path / "w.npy")
    assert (first.name, first.format) == ("weight", "npy")
    np.testing.assert_array_equal(first.weight, conv_a.astype(np.float64))

    np.savez(
        tmp_path / "w.npz",
        bias=rng.standard_normal(8),
        conv_b=conv_b,
        conv_a=conv_a,
        initial_weight=initial,
    )
    first = load_first_layer(tmp_path / "w.npz")
    assert (first.name, first.format) == ("conv_b", "npz")  # simply the first 4-D array
    np.testing.assert_array_equal(first.weight, conv_b)
    assert first.init_weight is None  # initial_weight has conv_a's shape
    chosen = load_first_layer(tmp_path / "w.npz", layer="conv_a")
    np.testing.assert_array_equal(chosen.weight, conv_a.astype(np.float64))
    np.testing.assert_array_equal(chosen.init_weight, initial)


def test_format_is_detected_from_content_not_suffix(tmp_path: Path) -> None:
    import onnx
    from safetensors.torch import save_file

    model = TinyCNN(seed=11)
    expected = weights_of(model.stem)
    save_file(model.state_dict(), str(tmp_path / "a.safetensors"))
    torch.save(model.state_dict(), tmp_path / "a.pt")
    np.save(tmp_path / "a.npy", expected)
    stem32 = model.stem.weight.detach().numpy()
    head = HeadFirstNet().head.weight.detach().numpy()
    onnx.save(onnx_head_first_model(stem32, head), tmp_path / "a.onnx")
    renamed = {
        "a.safetensors": ("weights.pt", "safetensors"),
        "a.pt": ("weights.onnx", "torch-zip"),
        "a.npy": ("weights.bin", "npy"),
        "a.onnx": ("weights.pth", "onnx"),
    }
    for source, (target, kind) in renamed.items():
        shutil.copy(tmp_path / source, tmp_path / target)
        assert detect_format(tmp_path / target) == kind
        np.testing.assert_array_equal(
            load_first_layer(tmp_path / target).weight, expected, err_msg=target
        )


# --------------------------------------------------------------------------- layer=


def test_layer_override_spellings(tmp_path: Path) -> None:
    model = TinyCNN(seed=12)
    path = save_state_dict(
        tmp_path / "m.pt", {"model": {f"model.{k}": v for k, v in model.state_dict().items()}}
    )
    for spelling in [
        "model.body",
        "model.body.weight",
        "module.model.body",
        "_orig_mod.model.body.weight",
        "body",
    ]:
        first = load_first_layer(path, layer=spelling)
        assert first.name == "model.body", spelling
        np.testing.assert_array_equal(first.weight, weights_of(model.body))


def test_layer_not_found_names_close_matches(tmp_path: Path) -> None:
    path = save_state_dict(tmp_path / "m.pt", TinyCNN().state_dict())
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path, layer="stme")
    assert_one_line_error(excinfo, "'stme'", "not found", "stem")
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path, layer="fc")
    assert_one_line_error(excinfo, "fc.weight", "(10, 8)", "4-D")
    two = {f"{branch}.{k}": v for branch in ("a", "b") for k, v in TinyCNN().state_dict().items()}
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(save_state_dict(tmp_path / "two.pt", two), layer="stem")
    assert_one_line_error(excinfo, "ambiguous", "a.stem", "b.stem")


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize("container", ["torch-zip", "torch-legacy", "plain-pickle", "nested"])
@pytest.mark.parametrize("payload", ["os.system", "Path.touch"])
def test_code_running_pickle_is_refused_without_running(
    tmp_path: Path, container: str, payload: str
) -> None:
    marker = tmp_path / "pwned"
    evil = RunsCommand(f"touch {marker}") if payload == "os.system" else TouchesFile(marker)
    state = {"stem.weight": torch.randn(4, 3, 3, 3), "evil": evil}
    path = tmp_path / "evil.pt"
    if container == "torch-zip":
        torch.save(state, path)
    elif container == "torch-legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif container == "nested":
        torch.save({"state_dict": state}, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=4))
    assert not marker.exists()
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path)
    assert_one_line_error(excinfo, "unsafe_load")
    assert excinfo.value.parameter == "unsafe_load"
    assert not marker.exists()
    with pytest.raises(LinearCNNInputError):
        list_conv_layers(path)
    assert not marker.exists()


def test_object_array_npy_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([TouchesFile(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path)
    assert_one_line_error(excinfo, "object arrays")
    assert not marker.exists()


def test_whole_pickled_module_needs_unsafe_load(tmp_path: Path) -> None:
    model = TinyCNN(seed=13)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path)
    assert_one_line_error(excinfo, "TinyCNN", "torch.save(model)", "pass unsafe_load")
    first = load_first_layer(path, unsafe_load=True)
    assert (first.name, first.format) == ("stem", "torch-module")
    np.testing.assert_array_equal(first.weight, weights_of(model.stem))
    torch.save({"model": TinyViT(seed=1), "epoch": 1}, tmp_path / "vit.pt")
    assert load_first_layer(tmp_path / "vit.pt", unsafe_load=True).name == "patch_embed.proj"


# --------------------------------------------------------------------------- bad input


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    from safetensors.torch import save_file

    model = TinyCNN()
    torch.save(model.state_dict(), tmp_path / "trunc.pt")
    torch.save(
        model.state_dict(), tmp_path / "trunc_legacy.pt", _use_new_zipfile_serialization=False
    )
    save_file(model.state_dict(), str(tmp_path / "trunc.safetensors"))
    np.save(tmp_path / "trunc.npy", weights_of(model.stem))
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    (tmp_path / "unknown.bin").write_bytes(b"hello, this is not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "a_dir").mkdir()
    torch.save(MLP().state_dict(), tmp_path / "mlp.pt")
    torch.save({"w": torch.randn(4, 3, 3, 3), "x": torch.ones(3)}, tmp_path / "ok.pt")
    torch.save({"w": torch.randint(0, 3, (4, 3, 3, 3))}, tmp_path / "ints.pt")
    nan = model.state_dict()
    nan["stem.weight"] = nan["stem.weight"].clone()
    nan["stem.weight"][0, 0, 0, 0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    inf = {"stem.weight": torch.full((2, 3, 3, 3), float("inf"))}
    torch.save(inf, tmp_path / "inf.pt")
    torch.save({"stem.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "zero.pt")
    return {
        "missing": (tmp_path / "nope.pt", ("does not exist",)),
        "directory": (tmp_path / "a_dir", ("is a directory",)),
        "empty": (tmp_path / "empty.pt", ("empty",)),
        "truncated zip": (_truncate(tmp_path / "trunc.pt"), ("truncated or corrupt",)),
        "truncated legacy": (_truncate(tmp_path / "trunc_legacy.pt"), ("truncated or corrupt",)),
        "truncated safetensors": (
            _truncate(tmp_path / "trunc.safetensors", 0.9),
            ("truncated or corrupt",),
        ),
        "truncated npy": (_truncate(tmp_path / "trunc.npy", 0.7), ("truncated or corrupt",)),
        "corrupt onnx": (tmp_path / "garbage.onnx", ("ONNX",)),
        "unknown": (tmp_path / "unknown.bin", ("unknown format", "safetensors")),
        "no conv": (tmp_path / "mlp.pt", ("no convolution", "fc1.weight (6, 12)")),
        "integer weights": (tmp_path / "ints.pt", ("no convolution", "w (4, 3, 3, 3)")),
        "nan": (tmp_path / "nan.pt", ("1 of 216", "NaN")),
        "inf": (tmp_path / "inf.pt", ("54 of 54", "infinite")),
        "zero": (tmp_path / "zero.pt", ("all 54 weights are zero",)),
    }


def test_bad_input_gives_one_line_errors(tmp_path: Path) -> None:
    cases = _bad_files(tmp_path)
    assert load_first_layer(tmp_path / "ok.pt").name == "w"  # the fixtures' writer works
    for label, (path, needles) in cases.items():
        with pytest.raises(LinearCNNInputError) as excinfo:
            load_first_layer(path)
        message = assert_one_line_error(excinfo, *needles)
        assert str(path) in message, (label, message)


# --------------------------------------------------------------------------- init_checkpoint


def test_init_weight_from_a_second_checkpoint(tmp_path: Path) -> None:
    trained, initial = TinyCNN(seed=14), TinyCNN(seed=15)
    path = save_state_dict(
        tmp_path / "trained.pt", {"module." + k: v for k, v in trained.state_dict().items()}
    )
    init_path = save_state_dict(tmp_path / "init.pt", initial.state_dict())
    first = with_init_from(load_first_layer(path), init_path)
    np.testing.assert_array_equal(first.weight, weights_of(trained.stem))
    np.testing.assert_array_equal(first.init_weight, weights_of(initial.stem))
    np.save(tmp_path / "init.npy", np.zeros((8, 3, 3, 3)))  # zero initialisation is allowed
    np.testing.assert_array_equal(
        load_init_weight(tmp_path / "init.npy", "stem"), np.zeros((8, 3, 3, 3))
    )
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_init_weight(init_path, "body", expected_shape=(8, 3, 3, 3))
    assert_one_line_error(excinfo, "(8, 8, 3, 3)", "(8, 3, 3, 3)")
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_init_weight(init_path, "stem_missing")
    assert_one_line_error(excinfo, "not found")


# --------------------------------------------------------------------------- canonical names

_component = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda s: s not in {"module", "_orig_mod"}
)


@given(
    parts=st.lists(_component, min_size=1, max_size=4),
    prefixes=st.lists(st.sampled_from(["module.", "_orig_mod."]), max_size=3),
    inner=st.booleans(),
)
def test_canonical_name_strips_wrappers_only(
    parts: list[str], prefixes: list[str], inner: bool
) -> None:
    name = ".".join(parts)
    wrapped = "".join(prefixes) + (name.replace(".", "._orig_mod.", 1) if inner else name)
    assert canonical_name(wrapped) == name
    assert canonical_name(canonical_name(wrapped)) == canonical_name(wrapped)
