"""Hostile inputs of issue #10 that used to end in a traceback, each now one line naming the input.

* ONNX initializers whose data disagree with their declared shape (too few or too many bytes,
  typed data of the wrong length, negative or huge dimensions);
* state dicts whose first-layer weight is a meta-device or sparse tensor;
* an output the file system refuses (disk full, file too large, read-only folder): one line naming
  the output, exit code 2, no temporary file left behind;
* `simulate` on data with fewer patches than patch dimensions (it works: the zero eigenvalues get
  the formula's mu -> 0 limit) or with patches spanning a single direction (one line).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_fixtures import TinyCNN, linearcnn_checkpoint, onnx_head_first_model

from linearcnn.checkpoints import load_first_layer
from linearcnn.cli import main
from linearcnn.errors import LinearCNNInputError
from linearcnn.simulation_report import theory_profile

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
RNG = np.random.default_rng(10)
STEM = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
HEAD = RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)


def assert_one_line(code: int, err: str, *fragments: str) -> str:
    """Exit code 2 and one `error:` line holding every fragment (`warning:` lines aside)."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def one_line_error(call, *fragments: str) -> str:
    with pytest.raises(LinearCNNInputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --------------------------------------------------------------------------- ONNX tensor data


def _onnx_with_stem(tmp_path: Path, mutate) -> Path:
    model = onnx_head_first_model(STEM, HEAD)
    tensor = next(t for t in model.graph.initializer if t.name == "stem.weight")
    mutate(tensor)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _set_dims(tensor, dims):
    tensor.ClearField("dims")
    tensor.dims.extend(dims)


def _typed(tensor, count):
    tensor.ClearField("raw_data")
    tensor.float_data.extend([0.5] * count)


ONNX_MUTATIONS = {
    "raw_data 4 bytes short": (lambda t: setattr(t, "raw_data", t.raw_data[:-4]), "holds 428 bytes in raw_data; expected 432"),
    "raw_data 8 bytes long": (lambda t: setattr(t, "raw_data", t.raw_data + bytes(8)), "holds 440 bytes in raw_data; expected 432"),
    "raw_data not whole elements": (lambda t: setattr(t, "raw_data", t.raw_data[:-1]), "holds 431 bytes"),
    "float_data of 5 values": (lambda t: _typed(t, 5), "holds 5 values in float_data; expected 108"),
    "no data at all": (lambda t: t.ClearField("raw_data"), "holds 0 values in float_data; expected 108"),
    "negative dimension": (lambda t: _set_dims(t, [-4, 3, 3, 3]), "declares shape (-4, 3, 3, 3); expected dimensions >= 0"),
    "1e12-wide dimension": (lambda t: _set_dims(t, [4, 3, 3, 10**12]), "(36,000,000,000,000 elements of float32)"),
    "2^80 elements": (lambda t: _set_dims(t, [2**20] * 4), "holds 432 bytes in raw_data"),
    "float32 bytes labelled float16": (lambda t: setattr(t, "data_type", 10), "of float16) but holds 432 bytes"),
    "float32 bytes labelled double": (lambda t: setattr(t, "data_type", 11), "expected 864"),
}


@pytest.mark.parametrize("mutation", list(ONNX_MUTATIONS))
def test_onnx_tensor_data_disagreeing_with_its_shape_is_one_line(tmp_path, mutation):
    mutate, fragment = ONNX_MUTATIONS[mutation]
    path = _onnx_with_stem(tmp_path, mutate)
    one_line_error(lambda: load_first_layer(path), repr(str(path)), "ONNX tensor 'stem.weight'", fragment)


def test_onnx_tensor_with_matching_typed_data_still_loads(tmp_path):
    """The control: the checks refuse only disagreeing data (float_data of the right length loads)."""
    path = _onnx_with_stem(tmp_path, lambda t: (t.ClearField("raw_data"), t.float_data.extend(STEM.ravel().tolist())))
    first = load_first_layer(path)
    assert first.name == "stem"
    np.testing.assert_array_equal(first.weight, STEM.astype(np.float64))


def test_onnx_names_that_are_not_utf8_are_one_line(tmp_path):
    """Found by tests/test_fuzz.py: protobuf hands a name that is not valid UTF-8 over as bytes,
    which used to end in a TypeError deep in the name handling."""
    data = onnx_head_first_model(STEM, HEAD).SerializeToString()
    assert data.count(b"stem_conv") == 1
    path = tmp_path / "model.onnx"
    path.write_bytes(data.replace(b"stem_conv", b"stem_con\xb7"))  # same length: the message stays well formed
    one_line_error(lambda: load_first_layer(path), repr(str(path)), "ONNX node name b'stem_con\\xb7' is not valid UTF-8")


def test_onnx_bad_tensor_through_the_cli(tmp_path, capsys):
    path = _onnx_with_stem(tmp_path, lambda t: setattr(t, "raw_data", t.raw_data[:-4]))
    code = main(["profile", "--checkpoint", str(path), "--data", "builtin:16"])
    assert_one_line(code, capsys.readouterr().err, str(path), "stem.weight", "expected 432")


# --------------------------------------------------------------------------- meta and sparse tensors

WEIGHT = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))

VALUELESS = {
    "meta": (lambda: torch.empty(4, 3, 3, 3, device="meta"), "is on the meta device: it holds no values"),
    "sparse_coo": (lambda: WEIGHT.to_sparse(), "is sparse (sparse_coo); expected a dense tensor"),
    "sparse_csr": (lambda: WEIGHT.to_sparse_csr(), "is sparse (sparse_csr); expected a dense tensor"),
    "sparse_csc": (lambda: WEIGHT.to_sparse_csc(), "is sparse (sparse_csc); expected a dense tensor"),
    "sparse_bsr": (lambda: WEIGHT.to_sparse_bsr((3, 3)), "is sparse (sparse_bsr); expected a dense tensor"),
}


def test_zip_needing_a_newer_zip_version_is_one_line(tmp_path):
    """Found by tests/test_fuzz.py: zipfile raises NotImplementedError for a member that needs zip
    version 20.1 to extract; the format sniffing called it a traceback."""
    path = tmp_path / "ckpt.pt"
    torch.save({"conv.weight": WEIGHT}, path)
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first central-directory entry; bytes 6-7: version needed to extract
    data[central + 6:central + 8] = (201).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    one_line_error(lambda: load_first_layer(path), repr(str(path)), "zip archive is truncated or corrupt", "zip file version 20.1")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", list(VALUELESS))
def test_valueless_first_layer_is_one_line(tmp_path, kind, zip_format):
    make, fragment = VALUELESS[kind]
    path = tmp_path / "ckpt.pt"
    torch.save({"features.0.weight": make(), "fc.weight": torch.randn(2, 8)}, path, _use_new_zipfile_serialization=zip_format)
    one_line_error(lambda: load_first_layer(path), repr(str(path)), "tensor 'features.0.weight'", fragment)
    bare = tmp_path / "bare.pt"
    torch.save(make(), bare, _use_new_zipfile_serialization=zip_format)
    one_line_error(lambda: load_first_layer(bare), repr(str(bare)), fragment)


def test_valueless_initial_weights_of_a_training_checkpoint(tmp_path):
    model = TinyCNN()
    checkpoint = linearcnn_checkpoint(model, model.stem.weight.detach().clone(), "stem")
    checkpoint["first_layer"]["initial_weight"] = torch.empty(model.stem.weight.shape, device="meta")
    path = tmp_path / "run.pt"
    torch.save(checkpoint, path)
    one_line_error(lambda: load_first_layer(path), "initial weights of layer 'stem'", "is on the meta device")


def test_valueless_tensors_elsewhere_do_not_matter(tmp_path, capsys):
    """Only the chosen layer is read: a meta or sparse tensor in another entry is no error, and the
    weights are the dense stem's, value for value."""
    path = tmp_path / "ckpt.pt"
    torch.save({"stem.weight": WEIGHT, "later.weight": WEIGHT.to_sparse(), "head.weight": torch.empty(4, 4, 1, 1, device="meta")}, path)
    first = load_first_layer(path)
    assert first.name == "stem"
    np.testing.assert_array_equal(first.weight, WEIGHT.double().numpy())
    meta = tmp_path / "meta.pt"
    torch.save({"stem.weight": torch.empty(4, 3, 3, 3, device="meta")}, meta)
    code = main(["profile", "--checkpoint", str(meta), "--data", "builtin:16"])
    assert_one_line(code, capsys.readouterr().err, str(meta), "'stem.weight' is on the meta device")


# --------------------------------------------------------------------------- outputs the disk refuses


class _FullDisk:
    """A writable file handle on a full disk: every write and flush fails with ENOSPC."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)


@pytest.fixture
def full_folder(tmp_path, monkeypatch):
    """A folder on a 'full disk': files opened for writing in it fail on their first write."""
    folder = tmp_path / "full"
    folder.mkdir()
    real_open = builtins.open

    def open_on_full_disk(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and Path(file).resolve().parent == folder.resolve():
            return _FullDisk(handle)
        return handle

    monkeypatch.setattr(builtins, "open", open_on_full_disk)
    return folder


def _npy_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "w.npy"
    np.save(path, RNG.standard_normal((8, 3, 3, 3)))
    return path


FIT = ["fit", "--data", "builtin:32", "--bootstrap", "0", "--checkpoint"]
OUTPUT_COMMANDS = {
    "stats --out": lambda d, ck: (["stats", "--data", "builtin:32", "--kernel", "3", "--out", str(d / "s.npz")], "s.npz"),
    "stats --plot-eigenvectors": lambda d, ck: (
        ["stats", "--data", "builtin:32", "--kernel", "3", "--plot-eigenvectors", str(d / "e.png")], "e.png"),
    "fit --out": lambda d, ck: ([*FIT, str(ck), "--out", str(d / "p.json")], "p.json"),
    "fit --plot": lambda d, ck: ([*FIT, str(ck), "--plot", str(d / "p.png")], "p.png"),
    "data --grid": lambda d, ck: (["data", "builtin:16", "--grid", str(d / "g.png")], "g.png"),
    "simulate --out": lambda d, ck: (
        ["simulate", "--data", "builtin", "--limit", "8", "--steps", "1", "--filters", "4", "--device", "cpu", "--out", str(d / "sim.npz")],
        "sim.npz"),
    "derive --out": lambda d, ck: (["derive", "--out", str(d / "derivation.txt")], "derivation.txt"),
    "train --out": lambda d, ck: (
        ["train", "--arch", "linear", "--data", "builtin:16", "--epochs", "1", "--width", "4", "--quiet", "--out", str(d)],
        "checkpoint.pt"),
}


@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, full_folder, capsys, command):
    argv, name = OUTPUT_COMMANDS[command](full_folder, _npy_checkpoint(tmp_path))
    code = main(argv)
    assert_one_line(code, capsys.readouterr().err, f"cannot write {str(full_folder / name)!r}: No space left on device")
    assert sorted(os.listdir(full_folder)) == [], "a temporary or partial file was left behind"


def test_folder_turned_read_only_after_the_early_check(tmp_path, monkeypatch, capsys):
    """The output folder becomes read-only between the early check and the write (a long run): the
    temporary file cannot be created; one line, no traceback."""
    out = tmp_path / "ro"
    out.mkdir()
    real_os_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if out in Path(path).parents and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    code = main(["stats", "--data", "builtin:32", "--kernel", "3", "--out", str(out / "s.npz")])
    assert_one_line(code, capsys.readouterr().err, f"cannot write {str(out / 's.npz')!r}: Read-only file system")
    code = main(["train", "--arch", "linear", "--data", "builtin:16", "--epochs", "1", "--quiet", "--out", str(out / "run")])
    assert_one_line(code, capsys.readouterr().err, "cannot write", ".lock", "Read-only file system")
    assert os.listdir(out / "run") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code = main(["stats", "--data", "builtin:32", "--kernel", "3", "--out", str(out / "s.npz")])
        assert_one_line(code, capsys.readouterr().err, str(out / "s.npz"), "not writable")
        assert os.listdir(out) == []
    finally:
        out.chmod(0o755)


_FILE_SIZE_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # writes past 4 KB: EFBIG
from linearcnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["train --out", "stats --out"])
def test_a_real_file_size_limit_is_one_line(tmp_path, command):
    """The operating system refuses the write (RLIMIT_FSIZE: EFBIG from write(2)), in a fresh process:
    torch.save's own stream error and np.savez's both end as one line naming the output."""
    folder = tmp_path / "out"
    folder.mkdir()
    argv, name = OUTPUT_COMMANDS[command](folder, None)
    run = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert_one_line(run.returncode, run.stderr, f"cannot write {str(folder / name)!r}: File too large")
    assert sorted(os.listdir(folder)) == [], "a temporary or partial file was left behind"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("argv", [["derive"], ["data", "builtin:8", "--json"]], ids=["text", "json"])
def test_standard_output_on_a_full_disk_is_one_line(argv):
    """`linearcnn derive > /full/disk/file`: /dev/full refuses every write with ENOSPC."""
    script = "import sys; from linearcnn.cli import main; sys.argv[1:] = " + repr(argv) + "; main()"
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-c", script], cwd=REPO, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert_one_line(run.returncode, run.stderr, "cannot write standard output: No space left on device")
    assert "Exception ignored" not in run.stderr


# --------------------------------------------------------------------------- simulate on few patches


def test_theory_profile_takes_the_zero_eigenvalue_limit():
    mu = np.array([4.0, 1.0, 1e-3, 1e-9])
    for lr_patch, step in ((0.01, 10), (1.0, 10)):  # the discrete formula, then gradient flow
        with_zero = theory_profile(np.append(mu, 0.0), lr_patch=lr_patch, step=step)
        np.testing.assert_array_equal(with_zero[:-1], theory_profile(mu, lr_patch=lr_patch, step=step))
        assert with_zero[-1] == 0.0
        assert 0 < with_zero[-2] < 1e-3  # continuous at 0: ~ lr t sqrt(mu)
    with pytest.raises(LinearCNNInputError, match="at least one positive"):
        theory_profile(np.zeros(3), lr_patch=0.01, step=10)


def _tiny_npz(path: Path, n: int, size: int) -> str:
    rng = np.random.default_rng(n)
    np.savez(path, images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels=np.arange(n) % 2)
    return f"npz:{path}"


def test_simulate_with_fewer_patches_than_dimensions_works(tmp_path, capsys):
    """2 images of 4x4: 8 patches for 27 dimensions. The run completes; the zero eigenvalues are
    warned about and the profile along them is 0 (no patch varies there, so no filter moves)."""
    data = _tiny_npz(tmp_path / "tiny.npz", 2, 4)
    code = main(["simulate", "--data", data, "--steps", "1,10", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "only 8 patches for 27 dimensions" in captured.err
    result = json.loads(captured.out)
    for step in result["steps"]:
        assert step["theory_correlation"] is not None and np.isfinite(step["theory_correlation"])
        assert np.allclose(np.asarray(step["profile"])[8:], 0.0, atol=1e-12 * max(step["profile"]))


def test_simulate_with_patches_along_one_direction_is_one_line(tmp_path, capsys):
    data = _tiny_npz(tmp_path / "one.npz", 1, 3)  # one 3x3 image: a single patch
    code = main(["simulate", "--data", data, "--device", "cpu"])
    assert_one_line(code, capsys.readouterr().err, data, "too few patches", "1 patch(es)", "span 1 direction(s)", "expected at least 2",
                    "--kernel")


def test_a_nested_tensor_beside_the_weights_is_skipped(tmp_path):
    import torch

    from linearcnn.checkpoints import load_first_layer

    weight = torch.randn(4, 3, 3, 3)
    nested = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
    path = tmp_path / "nested.pt"
    torch.save({"extra": nested, "conv.weight": weight}, path)
    np.testing.assert_array_equal(load_first_layer(path).weight, weight.numpy())
    only = tmp_path / "only_nested.pt"
    torch.save({"conv.weight": nested}, only)
    with pytest.raises(LinearCNNInputError) as error:
        load_first_layer(only)
    assert "\n" not in str(error.value) and "only_nested.pt" in str(error.value)


def test_npz_class_names_beyond_unicode_are_one_line(tmp_path):
    from linearcnn.data import load_dataset

    names = np.frombuffer(b"\x00\x00\x11\x00" * 2, dtype="<U1")  # code point 0x110000: not Unicode
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8) + np.arange(2)[:, None, None, None], labels=[0, 1], classes=names)
    with pytest.raises(LinearCNNInputError) as error:
        load_dataset(f"npz:{path}")
    assert "\n" not in str(error.value) and "classes" in str(error.value)


def test_cifar_label_names_that_are_not_utf8_are_one_line(tmp_path):
    import pickle

    from linearcnn.data import load_dataset

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"\x86cat", b"dog"] + [b"x"] * 8}))
    with pytest.raises(LinearCNNInputError) as error:
        load_dataset(f"cifar10:{tmp_path}")
    assert "\n" not in str(error.value) and "UTF-8" in str(error.value)


def test_mat5_reader_reads_compressed_and_refuses_lying_sizes(tmp_path):
    import scipy.io

    from linearcnn.data.formats._mat5 import read_mat5

    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    y = np.array([[1.5], [2.0]])
    for compress in (False, True):
        path = tmp_path / f"m{compress}.mat"
        scipy.io.savemat(path, {"X": x, "y": y, "other": np.ones(3)}, do_compression=compress)
        found = read_mat5(path, ["X", "y"], max_values=100, where="m")
        assert set(found) == {"X", "y"} and found["X"].dtype == np.uint8 and found["y"].dtype == np.float64
        np.testing.assert_array_equal(found["X"], x)
        np.testing.assert_array_equal(found["y"], y)
    with pytest.raises(LinearCNNInputError, match="at most 10 values"):
        read_mat5(tmp_path / "mFalse.mat", ["X"], max_values=10, where="m")
    raw = bytearray((tmp_path / "mFalse.mat").read_bytes())
    raw[132:136] = (10**9).to_bytes(4, "little")  # the first element's byte count: far beyond the file
    (tmp_path / "bad.mat").write_bytes(bytes(raw))
    with pytest.raises(LinearCNNInputError, match="truncated or corrupt"):
        read_mat5(tmp_path / "bad.mat", ["X"], max_values=100, where="m")
