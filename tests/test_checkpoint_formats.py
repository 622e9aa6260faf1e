"""Model formats beyond plain checkpoints: Hugging Face folders, quantized ONNX, space-to-depth
stems, BatchNorm folding and Keras files.

Every file is written here (safetensors, torch, the ONNX helper API or `torch.onnx.export`, h5py
in the layout Keras writes), and the loader's answer is compared with the exact weights written.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

from linearcnn.checkpoints import (
    detect_format,
    list_conv_layers,
    load_first_layer,
    stem_error,
    suspected_stem,
)
from linearcnn.errors import LinearCNNInputError


def one_line_error(path: Path, *needles: str, **kwargs: object) -> str:
    """The message of the `LinearCNNInputError` that loading `path` raises: one line, naming the file."""
    with pytest.raises(LinearCNNInputError) as excinfo:
        load_first_layer(path, **kwargs)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in (*needles,):
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def rand(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- Hugging Face folders


def resnet_tensors() -> dict[str, np.ndarray]:
    """A Hugging Face ResNet-like state dict: a 3-channel decoy sorts before the real stem."""
    return {
        "classifier.1.weight": rand(0, 10, 64),
        "resnet.embedder.embedder.convolution.weight": rand(1, 64, 3, 7, 7),
        "resnet.embedder.embedder.normalization.weight": rand(2, 64),
        "resnet.embedder.embedder.normalization.bias": rand(3, 64),
        "resnet.embedder.embedder.normalization.running_mean": rand(4, 64),
        "resnet.embedder.embedder.normalization.running_var": np.abs(rand(5, 64)) + 0.5,
        "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight": rand(6, 256, 64, 1, 1),
        "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight": rand(7, 64, 64, 1, 1),
        "a_decoy.convolution.weight": rand(8, 8, 3, 3, 3),
    }


def write_config(folder: Path, model_type: str) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["X"]}))


def test_huggingface_folder_with_model_safetensors(tmp_path: Path) -> None:
    tensors = resnet_tensors()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    write_config(tmp_path, "resnet")
    assert detect_format(tmp_path) == "huggingface"
    first = load_first_layer(tmp_path)
    assert (first.name, first.format, first.path) == ("resnet.embedder.embedder.convolution", "huggingface", str(tmp_path))
    assert "resnet" in first.selected_by and "config.json" in first.selected_by
    np.testing.assert_array_equal(first.weight, tensors["resnet.embedder.embedder.convolution.weight"].astype(np.float64))
    # without config.json the shape rule over sorted names picks the decoy, which sorts first
    (tmp_path / "config.json").unlink()
    assert load_first_layer(tmp_path).name == "a_decoy.convolution"


def test_huggingface_vit_and_convnext_layouts(tmp_path: Path) -> None:
    vit, convnext = tmp_path / "vit", tmp_path / "convnext"
    vit.mkdir(), convnext.mkdir()
    patch = rand(10, 768, 3, 16, 16)
    save_file({"vit.embeddings.patch_embeddings.projection.weight": patch, "vit.embeddings.cls_token": rand(11, 1, 1, 768),
               "vit.embeddings.position_embeddings": rand(12, 1, 197, 768)}, str(vit / "model.safetensors"))
    write_config(vit, "vit")
    first = load_first_layer(vit)
    assert first.name == "vit.embeddings.patch_embeddings.projection"
    np.testing.assert_array_equal(first.weight, patch.astype(np.float64))
    stem = rand(13, 96, 3, 4, 4)
    save_file({"convnext.embeddings.patch_embeddings.weight": stem,
               "convnext.embeddings.layernorm.weight": rand(14, 96),  # LayerNorm: never folded
               "convnext.encoder.stages.0.layers.0.dwconv.weight": rand(15, 96, 1, 7, 7)},
              str(convnext / "model.safetensors"))
    write_config(convnext, "convnext")
    first = load_first_layer(convnext, fold_bn=True)
    assert (first.name, first.bn_folded, first.weights_as) == ("convnext.embeddings.patch_embeddings", False, "stored")
    assert any("no BatchNorm" in note for note in first.notes)
    np.testing.assert_array_equal(first.weight, stem.astype(np.float64))


def test_huggingface_sharded_safetensors_reads_only_the_chosen_shard(tmp_path: Path, monkeypatch) -> None:
    tensors = resnet_tensors()
    shard_of = {key: ("model-00002-of-00002.safetensors" if "embedder" in key else "model-00001-of-00002.safetensors")
                for key in tensors}
    for shard in set(shard_of.values()):
        save_file({k: v for k, v in tensors.items() if shard_of[k] == shard}, str(tmp_path / shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shard_of}))
    write_config(tmp_path, "resnet")
    import safetensors

    opened: list[str] = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, path: str, **kwargs: object) -> None:
            self.inner = real_open(path, **kwargs)
            self.path = path

        def __enter__(self):
            handle = self.inner.__enter__()
            spy = self

            class Handle:
                def __getattr__(self, name: str):
                    if name == "get_tensor":
                        opened.append(Path(spy.path).name)
                    return getattr(handle, name)

            return Handle()

        def __exit__(self, *args: object) -> None:
            self.inner.__exit__(*args)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    first = load_first_layer(tmp_path, fold_bn=True)
    assert first.name == "resnet.embedder.embedder.convolution"
    assert set(opened) == {"model-00002-of-00002.safetensors"}  # weights and BatchNorm: one shard
    prefix = "resnet.embedder.embedder."
    scale = tensors[prefix + "normalization.weight"].astype(np.float64) / np.sqrt(
        tensors[prefix + "normalization.running_var"].astype(np.float64) + 1e-5)
    np.testing.assert_allclose(first.weight, tensors[prefix + "convolution.weight"] * scale[:, None, None, None],
                               rtol=1e-12)
    assert (first.bn_folded, first.batchnorm, first.weights_as) == (True, prefix + "normalization", "BatchNorm-folded")


def test_huggingface_folder_with_pytorch_model_bin(tmp_path: Path) -> None:
    state = {k: torch.from_numpy(v) for k, v in resnet_tensors().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    write_config(tmp_path, "resnet")
    first = load_first_layer(tmp_path)
    assert (first.name, first.format) == ("resnet.embedder.embedder.convolution", "huggingface")
    np.testing.assert_array_equal(first.weight, state["resnet.embedder.embedder.convolution.weight"].double().numpy())


@pytest.mark.parametrize("case", ["bad index json", "no weight_map", "shard outside", "missing shard",
                                  "key not in shard", "bad config", "config not object", "empty dir", "bin index only",
                                  "bin is not torch"])
def test_malformed_huggingface_folders(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    index = folder / "model.safetensors.index.json"
    save_file({"stem.weight": rand(0, 4, 3, 3, 3)}, str(folder / "shard.safetensors"))
    needles = {
        "bad index json": (str(index), "not valid JSON"),
        "no weight_map": (str(index), "no weight_map"),
        "shard outside": (str(index), "'../shard.safetensors'", "file name in the same folder"),
        "missing shard": (str(index), "'gone.safetensors'", "does not exist"),
        "key not in shard": (str(index), "'other.weight'", "does not hold it"),
        "bad config": (str(folder / "config.json"), "not valid JSON"),
        "config not object": (str(folder / "config.json"), "expected a JSON object"),
        "empty dir": (str(folder), "is a directory", "Hugging Face"),
        "bin index only": (str(folder), "pytorch_model.bin.index.json"),
        "bin is not torch": (str(folder / "pytorch_model.bin"), "not a torch.save file"),
    }[case]
    contents = {
        "bad index json": "{not json",
        "no weight_map": json.dumps({"metadata": {}}),
        "shard outside": json.dumps({"weight_map": {"stem.weight": "../shard.safetensors"}}),
        "missing shard": json.dumps({"weight_map": {"stem.weight": "gone.safetensors"}}),
        "key not in shard": json.dumps({"weight_map": {"stem.weight": "shard.safetensors",
                                                       "other.weight": "shard.safetensors"}}),
    }
    if case in contents:
        index.write_text(contents[case])
    elif case in ("bad config", "config not object"):
        save_file({"stem.weight": rand(0, 4, 3, 3, 3)}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text("[1, 2]" if case == "config not object" else "{'model_type': 1")
    elif case == "empty dir":
        (folder / "shard.safetensors").unlink()
    elif case == "bin index only":
        (folder / "pytorch_model.bin.index.json").write_text("{}")
    else:
        np.save(folder / "pytorch_model.bin.npy", rand(0, 2, 3, 3, 3))
        (folder / "pytorch_model.bin.npy").rename(folder / "pytorch_model.bin")
    one_line_error(folder, *needles)


# --------------------------------------------------------------------------- quantized ONNX


def save_onnx(path: Path, nodes: list, initializers: list, *, channels: int = 3) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, channels, 8, 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def quantize(w: np.ndarray, per_channel: bool, dtype: type = np.int8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero_point) of `w`: asymmetric, per tensor or per output channel (axis 0)."""
    info = np.iinfo(dtype)
    axes = (1, 2, 3) if per_channel else None
    lo, hi = np.minimum(w.min(axis=axes), 0), np.maximum(w.max(axis=axes), 0)
    scale = ((hi - lo) / (info.max - info.min)).astype(np.float32)
    zero = np.round(info.min - lo / scale).astype(dtype)
    shape = (-1, 1, 1, 1) if per_channel else ()
    q = np.clip(np.round(w / scale.reshape(shape)) + zero.reshape(shape), info.min, info.max).astype(dtype)
    return q, np.atleast_1d(scale) if per_channel else scale, np.atleast_1d(zero) if per_channel else zero


@pytest.mark.parametrize("op", ["QLinearConv", "QDQ", "ConvInteger"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantized_onnx_first_layer_is_dequantized(tmp_path: Path, op: str, per_channel: bool) -> None:
    from onnx import helper, numpy_helper

    w = rand(20, 8, 3, 3, 3)
    q, scale, zero = quantize(w, per_channel, np.uint8 if op == "ConvInteger" else np.int8)
    t = numpy_helper.from_array
    inits = [t(q, "w_q"), t(scale, "w_scale"), t(zero, "w_zp"), t(np.float32(0.05), "x_scale"),
             t(np.int8(0), "x_zp"), t(np.float32(0.1), "y_scale"), t(np.int8(0), "y_zp")]
    if op == "QLinearConv":
        nodes = [helper.make_node("QuantizeLinear", ["X", "x_scale", "x_zp"], ["xq"]),
                 helper.make_node("QLinearConv", ["xq", "x_scale", "x_zp", "w_q", "w_scale", "w_zp", "y_scale", "y_zp"],
                                  ["Y"], name="conv1")]
    elif op == "QDQ":
        nodes = [helper.make_node("QuantizeLinear", ["X", "x_scale", "x_zp"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_d"], axis=0),
                 helper.make_node("Conv", ["xd", "w_d"], ["Y"], name="conv1")]
    else:  # onnxruntime's dynamic quantization: ConvInteger -> Cast -> Mul by x_scale * w_scale
        nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["xq", "xs", "xz"]),
                 helper.make_node("ConvInteger", ["xq", "w_q", "xz", "w_zp"], ["ci"], name="conv1"),
                 helper.make_node("Cast", ["ci"], ["cf"], to=1),
                 helper.make_node("Mul", ["xs", "w_scale"], ["scales"]),
                 helper.make_node("Mul", ["cf", "scales"], ["Y"])]
    path = save_onnx(tmp_path / f"{op}.onnx", nodes, inits)
    first = load_first_layer(path)
    shape = (-1, 1, 1, 1) if per_channel else ()
    exact = (q.astype(np.float64) - zero.astype(np.float64).reshape(shape)) * scale.astype(np.float64).reshape(shape)
    np.testing.assert_array_equal(first.weight, exact)
    step = scale.astype(np.float64).reshape(shape)
    assert np.all(np.abs(first.weight - w) <= step * 0.5 + 1e-7)  # within half a quantization step
    assert first.quantization is not None and ("per-channel" if per_channel else "per-tensor") in first.quantization
    assert first.weights_as == "dequantized" and first.name == "conv1"


def test_convinteger_without_a_scale_is_in_quantization_steps(tmp_path: Path) -> None:
    from onnx import helper, numpy_helper

    q = np.arange(-13, 14, dtype=np.int8).reshape(1, 3, 3, 3)
    path = save_onnx(tmp_path / "ci.onnx", [helper.make_node("Cast", ["X"], ["x8"], to=3),
                                          helper.make_node("ConvInteger", ["x8", "w_q"], ["Y"])],
                     [numpy_helper.from_array(q, "w_q")])
    first = load_first_layer(path)
    np.testing.assert_array_equal(first.weight, q.astype(np.float64))
    assert "no weight scale found" in (first.quantization or "")


@pytest.mark.parametrize("case", ["scale count", "negative scale", "float scale type"])
def test_malformed_quantized_onnx(tmp_path: Path, case: str) -> None:
    from onnx import helper, numpy_helper

    q = np.ones((4, 3, 3, 3), np.int8)
    scale = {"scale count": np.full(3, 0.1, np.float32), "negative scale": np.float32(-0.1),
             "float scale type": np.int8(1)}[case]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_d"], axis=0),
             helper.make_node("Conv", ["X", "w_d"], ["Y"])]
    path = save_onnx(tmp_path / "bad.onnx", nodes, [numpy_helper.from_array(q, "w_q"),
                                                    numpy_helper.from_array(scale, "w_scale")])
    needle = {"scale count": "has 3 values; expected 1 or 4", "negative scale": "not a finite positive number",
              "float scale type": "not floating-point"}[case]
    one_line_error(path, str(path), needle)


# --------------------------------------------------------------------------- space-to-depth stems


class Focus(nn.Module):
    """YOLOv5's Focus stem: 2x2 pixel blocks stacked as channels, then a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.head(torch.relu(self.conv(x)))


def export(model: nn.Module, path: Path, channels: int = 3) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, channels, 8, 8),), str(path), dynamo=False, opset_version=17)
    return path


def test_focus_and_pixel_unshuffle_stems_are_refused_by_name(tmp_path: Path) -> None:
    focus = export(Focus(), tmp_path / "focus.onnx")
    message = one_line_error(focus, str(focus), "space-to-depth stem (Focus: Slice+Concat)",
                             "its 12 input channels are 2x2 pixel blocks of 3-channel images",
                             "not image patches")
    assert message.count("Focus") == 1
    unshuffle = export(nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 4, 3)), tmp_path / "unshuffle.onnx")
    one_line_error(unshuffle, "pixel_unshuffle: Reshape+Transpose+Reshape", "2x2 pixel blocks of 3-channel images")
    # the layers are still listed; a network without a stem is not refused
    assert [shape for _, shape in list_conv_layers(focus)] == [(8, 12, 3, 3), (4, 8, 1, 1)]
    plain = export(nn.Sequential(nn.Conv2d(3, 4, 3)), tmp_path / "plain.onnx")
    assert load_first_layer(plain).stem is None


def test_space_to_depth_node_is_refused(tmp_path: Path) -> None:
    from onnx import helper, numpy_helper

    path = save_onnx(tmp_path / "s2d.onnx", [helper.make_node("SpaceToDepth", ["X"], ["s"], blocksize=4),
                                           helper.make_node("Conv", ["s", "w"], ["Y"])],
                     [numpy_helper.from_array(rand(1, 4, 48, 1, 1), "w")])
    one_line_error(path, "(SpaceToDepth)", "its 48 input channels are 4x4 pixel blocks of 3-channel images")


def test_state_dict_stem_is_only_suspected_and_named_on_channel_mismatch(tmp_path: Path) -> None:
    w = rand(3, 8, 12, 3, 3)
    torch.save({"model.0.focus.conv.weight": torch.from_numpy(w)}, tmp_path / "yolo.pt")
    first = load_first_layer(tmp_path / "yolo.pt")  # no graph: loaded, with the suspicion recorded
    np.testing.assert_array_equal(first.weight, w.astype(np.float64))
    assert first.stem is not None and "Focus" in first.stem and "2x2 pixel blocks of 3-channel images" in first.stem
    error = stem_error(first, 3)
    assert error is not None and "the data have 3 channel(s)" in str(error) and "\n" not in str(error)
    assert stem_error(first, 12) is None  # 12-channel data: nothing to explain
    assert suspected_stem("features.0", 12) is None and suspected_stem("stem.conv", 3) is None
    assert suspected_stem("stem.conv", 48) is not None


# --------------------------------------------------------------------------- BatchNorm folding


def bn_scale(bn: nn.BatchNorm2d) -> np.ndarray:
    return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()


def trained_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=generator))
        bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
        bn.running_mean.copy_(torch.randn(channels, generator=generator))
    return bn


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, bias=False)
        self.bn1 = trained_bn(8, 1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.bn1(self.conv1(x))))


def test_fold_bn_state_dicts(tmp_path: Path) -> None:
    model = ConvBN()
    torch.save(model.state_dict(), tmp_path / "convbn.pt")
    stored = model.conv1.weight.detach().double().numpy()
    plain = load_first_layer(tmp_path / "convbn.pt")
    assert (plain.bn_folded, plain.weights_as) == (False, "stored")
    np.testing.assert_array_equal(plain.weight, stored)
    folded = load_first_layer(tmp_path / "convbn.pt", fold_bn=True)
    assert (folded.bn_folded, folded.batchnorm) == (True, "bn1")
    np.testing.assert_allclose(folded.weight, stored * bn_scale(model.bn1)[:, None, None, None], rtol=1e-6)
    # torchvision-style Sequential: features.1 follows features.0 in stored order
    seq = nn.Sequential(nn.Conv2d(3, 6, 3), trained_bn(6, 2), nn.ReLU(), nn.Conv2d(6, 2, 1))
    torch.save({"features." + k: v for k, v in seq.state_dict().items()}, tmp_path / "seq.pt")
    folded = load_first_layer(tmp_path / "seq.pt", fold_bn=True)
    assert folded.batchnorm == "features.1"
    np.testing.assert_allclose(folded.weight, weights_of(seq[0]) * bn_scale(seq[1])[:, None, None, None], rtol=1e-6)
    # a BatchNorm with a different number of channels is not this layer's
    state = {"conv1.weight": torch.randn(8, 3, 3, 3), "bn1.running_mean": torch.zeros(4),
             "bn1.running_var": torch.ones(4), "bn1.weight": torch.ones(4)}
    torch.save(state, tmp_path / "mismatch.pt")
    assert load_first_layer(tmp_path / "mismatch.pt", fold_bn=True).bn_folded is False


def weights_of(conv: nn.Module) -> np.ndarray:
    return conv.weight.detach().double().numpy()


def test_fold_bn_onnx_and_folded_export_note(tmp_path: Path) -> None:
    from onnx import helper, numpy_helper

    w, gamma, var = rand(30, 4, 3, 3, 3), rand(31, 4), np.abs(rand(32, 4)) + 0.2
    t = numpy_helper.from_array
    nodes = [helper.make_node("Conv", ["X", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["Y"], name="bn", epsilon=1e-3)]
    path = save_onnx(tmp_path / "bn.onnx", nodes, [t(w, "w"), t(gamma, "g"), t(rand(33, 4), "b"), t(rand(34, 4), "m"),
                                                  t(var, "v")])
    folded = load_first_layer(path, fold_bn=True)
    assert (folded.bn_folded, folded.batchnorm) == (True, "bn")
    eps = float(np.float32(1e-3))  # ONNX stores the attribute as float32
    expected = w.astype(np.float64) * (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))[:, None, None, None]
    np.testing.assert_allclose(folded.weight, expected, rtol=1e-12)
    # an eval-mode export folds the BatchNorm itself: Conv with bias -> Relu, no BatchNormalization left
    exported = export(ConvBN(), tmp_path / "exported.onnx")
    first = load_first_layer(exported)
    note = "BatchNorm appears folded into this Conv by the export (per-filter scales differ from the unfolded layer)"
    assert note in first.notes
    model = ConvBN()
    np.testing.assert_allclose(first.weight, weights_of(model.conv1) * bn_scale(model.bn1)[:, None, None, None],
                               rtol=1e-5, atol=1e-6)
    assert note not in load_first_layer(path).notes  # a BatchNormalization follows: nothing folded


# --------------------------------------------------------------------------- Keras

try:
    import h5py
except ImportError:  # the `keras` extra is optional; the test extra installs it
    h5py = None
requires_h5py = pytest.mark.skipif(h5py is None, reason="needs h5py (pip install 'linearcnn[keras]')")

KERAS3_CONFIG = {
    "module": "keras", "class_name": "Sequential",
    "config": {"name": "sequential", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "input_layer", "batch_shape": [None, 8, 8, 3]}},
        {"module": "keras.layers", "class_name": "Conv2DTranspose", "config": {"name": "a_transposed", "filters": 3}},
        {"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "conv2d", "filters": 8}},
        {"module": "keras.layers", "class_name": "BatchNormalization",
         "config": {"name": "batch_normalization", "epsilon": 0.01, "center": True, "scale": True}},
        {"module": "keras.layers", "class_name": "DepthwiseConv2D", "config": {"name": "depthwise_conv2d"}},
        {"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "conv2d_1", "filters": 4}},
    ]},
}


def keras3_weights() -> dict[str, np.ndarray]:
    """Datasets of a Keras 3 `model.weights.h5` for KERAS3_CONFIG (kernels HWIO)."""
    return {
        "layers/a_transposed/vars/0": rand(40, 3, 3, 3, 3),  # a 3-channel decoy that sorts first
        "layers/conv2d/vars/0": rand(41, 3, 3, 3, 8),
        "layers/conv2d/vars/1": rand(42, 8),
        "layers/batch_normalization/vars/0": rand(43, 8),  # gamma
        "layers/batch_normalization/vars/1": rand(44, 8),  # beta
        "layers/batch_normalization/vars/2": rand(45, 8),  # moving_mean
        "layers/batch_normalization/vars/3": np.abs(rand(46, 8)) + 0.3,  # moving_variance
        "layers/depthwise_conv2d/vars/0": rand(47, 3, 3, 8, 1),
        "layers/conv2d_1/vars/0": rand(48, 1, 1, 8, 4),
        "optimizer/vars/0": np.zeros((), np.float32),
    }


def write_h5(target: Path | io.BytesIO, datasets: dict[str, np.ndarray], attrs: dict[str, object] | None = None) -> None:
    with h5py.File(target, "w") as handle:
        handle.create_group("vars")
        for name, values in datasets.items():
            handle.create_dataset(name, data=values)
        for name, value in (attrs or {}).items():
            handle.attrs[name] = value


def write_keras(path: Path, datasets: dict[str, np.ndarray], config: object = KERAS3_CONFIG) -> Path:
    buffer = io.BytesIO()
    write_h5(buffer, datasets)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
        archive.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def hwio(kernel: np.ndarray) -> np.ndarray:
    return np.transpose(kernel.astype(np.float64), (3, 2, 0, 1))


@requires_h5py
def test_keras3_file_first_layer_and_bn_folding(tmp_path: Path) -> None:
    datasets = keras3_weights()
    path = write_keras(tmp_path / "model.keras", datasets)
    assert detect_format(path) == "keras"
    first = load_first_layer(path)
    assert (first.name, first.format, first.weight.shape) == ("conv2d", "keras", (8, 3, 3, 3))
    np.testing.assert_array_equal(first.weight, hwio(datasets["layers/conv2d/vars/0"]))
    assert [name for name, _ in list_conv_layers(path)] == ["conv2d", "conv2d_1"]  # depthwise, transposed: not Conv2D
    folded = load_first_layer(path, fold_bn=True)
    bn = "layers/batch_normalization/vars/"
    scale = datasets[bn + "0"].astype(np.float64) / np.sqrt(datasets[bn + "3"].astype(np.float64) + 0.01)
    np.testing.assert_allclose(folded.weight, hwio(datasets["layers/conv2d/vars/0"]) * scale[:, None, None, None],
                               rtol=1e-12)
    assert (folded.bn_folded, folded.batchnorm) == (True, "batch_normalization")


@requires_h5py
def test_keras3_weights_h5_without_config_uses_the_shape_rule(tmp_path: Path) -> None:
    datasets = {k: v for k, v in keras3_weights().items() if "a_transposed" not in k}
    write_h5(tmp_path / "model.weights.h5", datasets)
    assert detect_format(tmp_path / "model.weights.h5") == "keras-h5"
    first = load_first_layer(tmp_path / "model.weights.h5")
    assert (first.name, first.format) == ("conv2d", "keras-h5")
    np.testing.assert_array_equal(first.weight, hwio(datasets["layers/conv2d/vars/0"]))


@requires_h5py
def test_legacy_keras_h5(tmp_path: Path) -> None:
    kernel, head = rand(50, 5, 5, 1, 6), rand(51, 1, 1, 6, 2)
    gamma, var = rand(52, 6), np.abs(rand(53, 6)) + 0.5
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Conv2D", "config": {"name": "conv2d"}},
        {"class_name": "BatchNormalization", "config": {"name": "batch_normalization"}},  # default epsilon 1e-3
        {"class_name": "Conv2D", "config": {"name": "conv2d_1"}}]}}
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        weights = handle.create_group("model_weights")
        weights.attrs["layer_names"] = [b"conv2d", b"batch_normalization", b"conv2d_1"]
        for layer, values in (("conv2d", {"kernel:0": kernel, "bias:0": rand(54, 6)}),
                              ("batch_normalization", {"gamma:0": gamma, "beta:0": rand(55, 6),
                                                       "moving_mean:0": rand(56, 6), "moving_variance:0": var}),
                              ("conv2d_1", {"kernel:0": head})):
            group = weights.create_group(layer)
            group.attrs["weight_names"] = [f"{layer}/{name}".encode() for name in values]
            for name, value in values.items():
                group.create_dataset(f"{layer}/{name}", data=value)
    first = load_first_layer(path, fold_bn=True)
    assert (first.name, first.format, first.batchnorm) == ("conv2d", "keras-h5", "batch_normalization")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3)
    np.testing.assert_allclose(first.weight, hwio(kernel) * scale[:, None, None, None], rtol=1e-12)
    np.testing.assert_array_equal(load_first_layer(path).weight, hwio(kernel))


def test_keras_without_h5py_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:  # written without h5py: the reader stops before the member
        archive.writestr("config.json", json.dumps(KERAS3_CONFIG))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(100))
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    one_line_error(path, str(path), "reading .keras/.h5 needs h5py: pip install 'linearcnn[keras]'")


@requires_h5py
@pytest.mark.parametrize("case", ["truncated h5", "external link", "integer kernel", "missing layer group",
                                  "bad config", "corrupt member", "too many values"])
def test_malformed_keras_files(tmp_path: Path, case: str, monkeypatch) -> None:
    path = tmp_path / ("model.keras" if case in ("bad config", "corrupt member") else "model.h5")
    if case == "truncated h5":
        write_h5(path, keras3_weights())
        path.write_bytes(path.read_bytes()[:3000])
        needles: tuple[str, ...] = ("cannot read HDF5 weights",)
    elif case == "external link":
        write_h5(tmp_path / "other.h5", {"x": rand(0, 3, 3, 3, 4)})
        write_h5(path, {"layers/conv2d/vars/1": rand(1, 4)})
        with h5py.File(path, "a") as handle:
            handle["layers/conv2d/vars"]["0"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
        needles = ("ExternalLink", "expected data stored in the file")
    elif case == "integer kernel":
        write_h5(path, {"layers/conv2d/vars/0": np.ones((3, 3, 3, 4), np.int32)})
        needles = ("dtype int32", "expected floating-point weights")
    elif case == "missing layer group":
        write_h5(path, {}, {"layer_names": [b"conv2d"]})
        needles = ("layer_names lists 'conv2d'",)
    elif case == "bad config":
        write_keras(path, keras3_weights(), config="{nope")
        needles = ("model config is not valid JSON",)
    elif case == "corrupt member":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(200))
        needles = ("cannot read HDF5 weights",)
    else:
        import linearcnn.checkpoints._keras as keras_reader

        monkeypatch.setattr(keras_reader, "MAX_ELEMENTS", 100)
        write_h5(path, {"layers/conv2d/vars/0": rand(2, 3, 3, 3, 8)})
        needles = ("216 values; expected at most 100",)
    one_line_error(path, str(path), *needles)
