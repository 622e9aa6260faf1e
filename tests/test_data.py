"""Tests for linearcnn.data: every loader against files written here in the format's own layout,
the builtin photo set, the statistics helpers and the `linearcnn data` command.

Expected pixel values are built independently of the loaders (e.g. CIFAR rows are assembled
plane by plane, IDX headers packed by hand), and compared exactly.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import linearcnn
from linearcnn.cli import main
from linearcnn.data import (
    BUILTIN_CLASSES,
    DATA_KINDS,
    ImageDataset,
    builtin_layout,
    has_test_split,
    load_dataset,
    normalize_images,
    parse_data_spec,
    spectrum_exponent,
    to_unit_float,
)
from linearcnn.data._builtin import PHOTOS, photo_path
from linearcnn.errors import LinearCNNInputError

RNG = np.random.default_rng(12345)


def random_uint8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


# --------------------------------------------------------------------------- writers


def cifar_row(image: np.ndarray) -> np.ndarray:
    """The CIFAR row of one (3, 32, 32) image: 1024 red values, 1024 green, 1024 blue, each plane
    in row-major order (the format's definition)."""
    return np.concatenate([image[0].ravel(), image[1].ravel(), image[2].ravel()])


def write_pickle(path: Path, content: dict, protocol: int = 2) -> None:
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=protocol)


def py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle written byte by byte the way Python 2's cPickle wrote the real CIFAR
    files: str as (SHORT_)BINSTRING, arrays through numpy.core.multiarray._reconstruct.
    Handles dicts, lists, bytes, ints and uint8 arrays."""
    out = bytearray(b"\x80\x02")

    def string(value: bytes) -> None:
        if len(value) < 256:
            out.extend(b"U" + bytes([len(value)]) + value)
        else:
            out.extend(b"T" + struct.pack("<I", len(value)) + value)

    def write(value: object) -> None:
        if isinstance(value, dict):
            out.extend(b"}(")
            for key, item in value.items():
                write(key)
                write(item)
            out.extend(b"u")
        elif isinstance(value, list):
            out.extend(b"](")
            for item in value:
                write(item)
            out.extend(b"e")
        elif isinstance(value, bytes):
            string(value)
        elif isinstance(value, int):
            out.extend(b"J" + struct.pack("<i", value))
        elif isinstance(value, np.ndarray) and value.dtype == np.uint8:
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")
            string(b"b")
            out.extend(
                b"\x87R(K\x01(" + b"".join(b"J" + struct.pack("<i", d) for d in value.shape) + b"t"
            )
            out.extend(b"cnumpy\ndtype\n")
            string(b"u1")
            out.extend(b"K\x00K\x01\x87R(K\x03")
            string(b"|")
            out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            string(value.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(value))

    write(obj)
    return bytes(out + b".")


def write_cifar10(
    folder: Path, per_batch: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Five train batches and a test batch, written as Python 2 wrote the real files."""
    folder.mkdir(parents=True)
    train_images = random_uint8(5 * per_batch, 3, 32, 32)
    train_labels = RNG.integers(0, 10, size=5 * per_batch)
    test_images = random_uint8(per_batch, 3, 32, 32)
    test_labels = RNG.integers(0, 10, size=per_batch)
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        batch = {
            b"batch_label": b"training batch",
            b"labels": [int(v) for v in train_labels[rows]],
            b"data": np.stack([cifar_row(im) for im in train_images[rows]]),
        }
        (folder / f"data_batch_{b + 1}").write_bytes(py2_pickle(batch))
    test = {
        b"data": np.stack([cifar_row(im) for im in test_images]),
        b"labels": [int(v) for v in test_labels],
    }
    (folder / "test_batch").write_bytes(py2_pickle(test))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": names, b"num_vis": 3072}))
    return train_images, train_labels, test_images, test_labels


def idx_bytes(array: np.ndarray) -> bytes:
    """Pack an unsigned-byte IDX file by hand: 0, 0, 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --------------------------------------------------------------------------- specs


def test_parse_data_spec_kinds_and_paths(tmp_path):
    assert parse_data_spec("builtin").kind == "builtin"
    assert parse_data_spec("builtin:500").size == 500
    spec = parse_data_spec(f"cifar10:{tmp_path}")
    assert (spec.kind, spec.path) == ("cifar10", tmp_path)
    assert parse_data_spec("NPZ:~/x.npz").path == Path("~/x.npz").expanduser()
    assert set(DATA_KINDS) == {"builtin", "cifar10", "cifar100", "svhn", "mnist", "folder", "npz"}


@pytest.mark.parametrize(
    "spec", ["imagenet:/x", "/data/cifar", "cifar10", "npz:", "builtin:zero", "builtin:-3"]
)
def test_parse_data_spec_rejects(spec):
    with pytest.raises(LinearCNNInputError) as info:
        parse_data_spec(spec)
    assert "\n" not in str(info.value)


def test_unknown_kind_lists_valid_kinds(capsys):
    code, _, err = run_cli(["data", "imagenet:/x"], capsys)
    assert_one_line_error(code, err, "unknown kind 'imagenet'", *DATA_KINDS.values())


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("inner", [True, False])
def test_cifar10_round_trip(tmp_path, inner):
    folder = tmp_path / "cifar-10-batches-py"
    train_images, train_labels, test_images, test_labels = write_cifar10(folder)
    root = folder if inner else tmp_path
    train = load_dataset(f"cifar10:{root}")
    np.testing.assert_array_equal(train.images, train_images.astype(np.float32) / 255)
    np.testing.assert_array_equal(train.labels, train_labels)
    assert train.classes == [f"class{i}" for i in range(10)]
    test = load_dataset(f"cifar10:{root}", train=False)
    np.testing.assert_array_equal(test.images, test_images.astype(np.float32) / 255)
    np.testing.assert_array_equal(test.labels, test_labels)
    limited = load_dataset(f"cifar10:{root}", limit=6)  # spans two batches of four
    np.testing.assert_array_equal(limited.images, train_images[:6].astype(np.float32) / 255)
    assert limited.images.dtype == np.float32 and limited.labels.dtype == np.int64


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = {split: random_uint8(5, 3, 32, 32) for split in ("train", "test")}
    labels = {split: RNG.integers(0, 100, size=5) for split in ("train", "test")}
    for split in ("train", "test"):
        write_pickle(
            folder / split,
            {
                "data": np.stack([cifar_row(im) for im in images[split]]),
                "fine_labels": [int(v) for v in labels[split]],
                "coarse_labels": [0] * 5,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )
    write_pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)]})
    for split in ("train", "test"):
        data = load_dataset(f"cifar100:{tmp_path}", train=split == "train")
        np.testing.assert_array_equal(data.images, images[split].astype(np.float32) / 255)
        np.testing.assert_array_equal(data.labels, labels[split])
        assert data.classes[7] == "fine7" and len(data.classes) == 100


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    write_pickle(folder / "train", {"data": Exploit(), "fine_labels": [0]})
    code, _, err = run_cli(["data", f"cifar100:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "refusing to load", "system")


def test_cifar10_missing_files_are_named(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").unlink()
    code, _, err = run_cli(["data", f"cifar10:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "lacks data_batch_3")
    code, _, err = run_cli(
        ["data", f"cifar10:{tmp_path}", "--test"], capsys
    )  # test split is complete
    assert code == 0, err


def test_cifar10_corrupt_and_inconsistent_batches(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(garbage")
    code, _, err = run_cli(["data", f"cifar10:{folder}", "--test"], capsys)
    assert_one_line_error(code, err, "test_batch", "not a readable CIFAR python batch")
    write_pickle(folder / "test_batch", {b"data": random_uint8(3, 3072), b"labels": [1, 2]})
    code, _, err = run_cli(["data", f"cifar10:{folder}", "--test"], capsys)
    assert_one_line_error(code, err, "2 labels for 3 images")
    write_pickle(folder / "test_batch", {b"data": random_uint8(3, 100), b"labels": [1, 2, 3]})
    code, _, err = run_cli(["data", f"cifar10:{folder}", "--test"], capsys)
    assert_one_line_error(code, err, "expected uint8 (N, 3072)")


# --------------------------------------------------------------------------- SVHN


def test_svhn_round_trip(tmp_path):
    images = {split: random_uint8(32, 32, 3, 6) for split in ("train", "test")}  # H x W x C x N
    digits = {"train": np.array([1, 10, 3, 10, 9, 5]), "test": np.array([10, 2, 2, 7, 1, 4])}
    for split in ("train", "test"):
        scipy.io.savemat(
            tmp_path / f"{split}_32x32.mat", {"X": images[split], "y": digits[split][:, None]}
        )
    for split in ("train", "test"):
        data = load_dataset(f"svhn:{tmp_path}", train=split == "train")
        assert data.images.shape == (6, 3, 32, 32)
        for n in range(6):
            for c in range(3):
                np.testing.assert_array_equal(
                    data.images[n, c], images[split][:, :, c, n].astype(np.float32) / 255
                )
        expected_labels = [0 if d == 10 else d for d in digits[split]]  # "10" is the digit zero
        assert data.labels.tolist() == expected_labels
    assert load_dataset(f"svhn:{tmp_path}", limit=2).labels.tolist() == [1, 0]


def test_svhn_bad_files(tmp_path, capsys):
    code, _, err = run_cli(["data", f"svhn:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "lacks train_32x32.mat")
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(50))
    code, _, err = run_cli(["data", f"svhn:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "train_32x32.mat")
    scipy.io.savemat(
        tmp_path / "train_32x32.mat", {"X": random_uint8(32, 32, 3, 4), "y": np.ones((3, 1))}
    )
    code, _, err = run_cli(["data", f"svhn:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "3 labels for 4 images")


# --------------------------------------------------------------------------- MNIST-like IDX


@pytest.mark.parametrize("layout", ["raw", "gz", "raw-subfolder"])
def test_mnist_round_trip(tmp_path, layout):
    folder = tmp_path / "raw" if layout == "raw-subfolder" else tmp_path
    folder.mkdir(exist_ok=True)
    sets = {}
    for prefix, count in (("train", 7), ("t10k", 3)):
        pixels = random_uint8(count, 5, 6)  # non-square: catches swapped H and W
        labels = RNG.integers(0, 10, size=count).astype(np.uint8)
        sets[prefix] = (pixels, labels)
        for kind, array in (("images-idx3", pixels), ("labels-idx1", labels)):
            payload = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if layout == "gz":
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
    for prefix, train in (("train", True), ("t10k", False)):
        data = load_dataset(f"mnist:{tmp_path}", train=train)
        pixels, labels = sets[prefix]
        np.testing.assert_array_equal(data.images, pixels[:, None].astype(np.float32) / 255)
        np.testing.assert_array_equal(data.labels, labels)
        assert data.images.shape[1] == 1 and data.classes == [str(d) for d in range(10)]


def test_mnist_truncated_and_corrupt(tmp_path, capsys):
    pixels, labels = random_uint8(4, 28, 28), np.arange(4, dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels)[:-10])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    code, _, err = run_cli(["data", f"mnist:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "truncated")
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(pixels))[:-20])
    code, _, err = run_cli(["data", f"mnist:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(random_uint8(5, 28, 28)))
    )
    code, _, err = run_cli(["data", f"mnist:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "4 labels for 5 images")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(b"\x08\x03\x00\x00" + bytes(20))
    )
    code, _, err = run_cli(["data", f"mnist:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "not an IDX file")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["data", f"mnist:{empty}"], capsys)
    assert_one_line_error(code, err, "lacks train-images-idx3-ubyte")


# --------------------------------------------------------------------------- image folders


def test_folder_round_trip_rgb_and_gray(tmp_path):
    rgb = {name: [random_uint8(12, 10, 3) for _ in range(3)] for name in ("b_dogs", "a_cats")}
    for name, pictures in rgb.items():
        for i, picture in enumerate(pictures):
            write_png(tmp_path / "rgb" / name / f"{i}.png", picture)
    (tmp_path / "rgb" / "a_cats" / "notes.txt").write_text("ignored")
    data = load_dataset(f"folder:{tmp_path / 'rgb'}")
    assert data.classes == ["a_cats", "b_dogs"]  # sorted sub-folders
    expected = (
        np.stack([p.transpose(2, 0, 1) for p in rgb["a_cats"] + rgb["b_dogs"]]).astype(np.float32)
        / 255
    )
    np.testing.assert_array_equal(data.images, expected)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    gray = [random_uint8(9, 11) for _ in range(2)]
    for i, picture in enumerate(gray):
        write_png(tmp_path / "gray" / "only" / f"{i}.png", picture)
    data = load_dataset(f"folder:{tmp_path / 'gray'}")
    np.testing.assert_array_equal(data.images, np.stack(gray)[:, None].astype(np.float32) / 255)
    # a 16-bit grey PNG beside an RGBA one: three channels, grey repeated at 16-bit precision
    deep = RNG.integers(0, 65536, size=(7, 5)).astype(np.uint16)
    rgba = random_uint8(7, 5, 4)
    write_png(tmp_path / "mixed" / "k" / "deep.png", deep)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mixed" / "k" / "rgba.png")
    data = load_dataset(f"folder:{tmp_path / 'mixed'}")
    assert data.images.shape == (2, 3, 7, 5)
    for c in range(3):
        np.testing.assert_array_equal(data.images[0, c], deep.astype(np.float32) / 65535)
        np.testing.assert_array_equal(data.images[1, c], rgba[:, :, c].astype(np.float32) / 255)


def test_folder_common_size_rule_and_splits(tmp_path):
    small = [random_uint8(8, 6, 3) for _ in range(2)]  # 6 wide, 8 high: the common size
    for i, picture in enumerate(small):
        write_png(tmp_path / "train" / "x" / f"{i}.png", picture)
    write_png(tmp_path / "train" / "y" / "big.png", np.full((24, 30, 3), (200, 100, 50), np.uint8))
    write_png(tmp_path / "test" / "x" / "t.png", small[0])
    data = load_dataset(f"folder:{tmp_path}")  # train/ and test/ are the splits
    assert data.images.shape == (3, 3, 8, 6) and data.classes == ["x", "y"]
    # the larger, uniformly coloured image is centre-cropped and shrunk: still uniform
    np.testing.assert_allclose(
        data.images[2],
        np.array([200, 100, 50])[:, None, None] / 255 * np.ones((3, 8, 6)),
        atol=1e-5,
    )
    test = load_dataset(f"folder:{tmp_path}", train=False)
    np.testing.assert_array_equal(
        test.images[0], small[0].transpose(2, 0, 1).astype(np.float32) / 255
    )


def test_folder_bad_inputs(tmp_path, capsys):
    write_png(tmp_path / "ok" / "a" / "0.png", random_uint8(8, 8, 3))
    write_png(tmp_path / "ok" / "a" / "1.png", random_uint8(8, 8, 3))
    write_png(tmp_path / "ok" / "b" / "2.png", random_uint8(5, 8, 3))  # too small
    code, _, err = run_cli(["data", f"folder:{tmp_path / 'ok'}"], capsys)
    assert_one_line_error(code, err, "2.png", "smaller than the folder's common size 8x8")
    (tmp_path / "ok" / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run_cli(["data", f"folder:{tmp_path / 'ok'}"], capsys)
    assert_one_line_error(code, err, "2.png", "cannot be read")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["data", f"folder:{tmp_path / 'empty'}"], capsys)
    assert_one_line_error(code, err, "no sub-folders and no images")
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "loose.png", random_uint8(8, 8, 3))
    flat = load_dataset(f"folder:{tmp_path / 'flat'}")  # images without class folders: unlabelled
    assert len(flat) == 1 and flat.labels is None
    (tmp_path / "hollow" / "empty_class").mkdir(parents=True)
    code, _, err = run_cli(["data", f"folder:{tmp_path / 'hollow'}"], capsys)
    assert_one_line_error(code, err, "empty_class", "holds no images")
    code, _, err = run_cli(["data", f"folder:{tmp_path / 'flat' / 'loose.png'}"], capsys)
    assert_one_line_error(code, err, "is a file; expected a folder")


# --------------------------------------------------------------------------- npz


def test_npz_layouts_and_dtypes(tmp_path):
    nhwc = random_uint8(4, 9, 7, 3)
    labels = np.array([2, 0, 1, 2])
    np.savez(tmp_path / "nhwc.npz", images=nhwc, labels=labels, classes=np.array(["p", "q", "r"]))
    data = load_dataset(f"npz:{tmp_path / 'nhwc.npz'}")
    for n in range(4):
        for c in range(3):
            np.testing.assert_array_equal(
                data.images[n, c], nhwc[n, :, :, c].astype(np.float32) / 255
            )
    assert data.labels.tolist() == [2, 0, 1, 2] and data.classes == ["p", "q", "r"]

    nchw = RNG.random((5, 1, 6, 8)).astype(np.float32)  # floats in [0, 1] are kept as they are
    np.savez(tmp_path / "nchw.npz", images=nchw)
    data = load_dataset(f"npz:{tmp_path / 'nchw.npz'}")
    np.testing.assert_array_equal(data.images, nchw)
    assert data.labels is None and data.classes == []

    on_255 = np.round(RNG.random((3, 3, 8, 8)) * 255)  # float64 on the 0..255 scale
    on_255[0, 0, 0, 0] = 255.0
    np.savez(tmp_path / "f255.npz", images=on_255, labels=np.array([0.0, 1.0, 1.0]))
    data = load_dataset(f"npz:{tmp_path / 'f255.npz'}", limit=2)
    np.testing.assert_allclose(data.images, on_255[:2] / 255, rtol=0, atol=1e-7)
    assert data.labels.tolist() == [0, 1] and data.classes == ["0", "1"]

    gray3d = random_uint8(2, 10, 10)
    np.savez(tmp_path / "gray.npz", images=gray3d)
    np.testing.assert_array_equal(
        load_dataset(f"npz:{tmp_path / 'gray.npz'}").images, gray3d[:, None] / np.float32(255)
    )


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"pixels": np.zeros((2, 8, 8, 3), np.uint8)}, "expected 'images'"),
        ({"images": np.zeros((2, 64), np.uint8)}, "expected NxHxWxC"),
        ({"images": np.zeros((2, 8, 8, 5), np.uint8)}, "1 or 3 channels"),
        ({"images": np.zeros((3, 8, 8, 3), np.uint8), "labels": np.array([0, 1])}, "for 3 images"),
        ({"images": np.zeros((0, 8, 8, 3), np.uint8)}, "is empty"),
        ({"images": -np.ones((2, 8, 8, 3), np.float32)}, "expected [0, 1]"),
        ({"images": np.full((2, 8, 8, 3), np.nan, np.float32)}, "NaN"),
        (
            {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.array([0.5, 1.0])},
            "integer class indices",
        ),
    ],
)
def test_npz_bad_inputs(tmp_path, capsys, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code, _, err = run_cli(["data", f"npz:{path}"], capsys)
    assert_one_line_error(code, err, fragment)


def test_npz_path_problems(tmp_path, capsys):
    code, _, err = run_cli(["data", f"npz:{tmp_path / 'missing.npz'}"], capsys)
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run_cli(["data", f"npz:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "is a folder")
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 truncated zip")
    code, _, err = run_cli(["data", f"npz:{tmp_path / 'cut.npz'}"], capsys)
    assert_one_line_error(code, err, "cannot be read")


def test_min_size_and_limit_checks(tmp_path):
    np.savez(tmp_path / "tiny.npz", images=random_uint8(2, 4, 4, 3))
    with pytest.raises(LinearCNNInputError, match="4x4 images; at least 5x5 needed"):
        load_dataset(f"npz:{tmp_path / 'tiny.npz'}", min_size=5)
    with pytest.raises(LinearCNNInputError, match="limit 0"):
        load_dataset("builtin", limit=0)


# --------------------------------------------------------------------------- test splits


def unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 NHWC pixels as the loaders return them: float32 NCHW / 255."""
    return pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)


def test_npz_train_and_test_splits(tmp_path):
    train_px, test_px = random_uint8(5, 6, 7, 3), random_uint8(3, 6, 7, 3)
    train_y, test_y = np.array([0, 2, 1, 2, 0]), np.array([4, 0, 3])  # test has the larger label
    path = tmp_path / "both.npz"
    np.savez(path, images=train_px, labels=train_y, test_images=test_px, test_labels=test_y)
    train = load_dataset(f"npz:{path}")
    test = load_dataset(f"npz:{path}", train=False)
    np.testing.assert_array_equal(train.images, unit(train_px))
    np.testing.assert_array_equal(test.images, unit(test_px))
    assert train.labels.tolist() == train_y.tolist() and test.labels.tolist() == test_y.tolist()
    # one class list for both splits, from the largest label of either
    assert train.classes == test.classes == ["0", "1", "2", "3", "4"]
    assert "train split" in train.description and "test split" in test.description
    limited = load_dataset(f"npz:{path}", train=False, limit=2)
    np.testing.assert_array_equal(limited.images, unit(test_px[:2]))
    assert limited.labels.tolist() == test_y[:2].tolist()
    # `classes` names both splits; an unlabelled test split next to a labelled train split
    names = np.array(["a", "b", "c", "d", "e", "f"])
    np.savez(path, images=train_px, labels=train_y, classes=names, test_images=test_px[..., :1])
    test = load_dataset(f"npz:{path}", train=False)
    np.testing.assert_array_equal(test.images, unit(test_px[..., :1]))  # its own layout rules
    assert test.labels is None
    assert load_dataset(f"npz:{path}").classes == list(names)


def test_npz_train_arrays_may_be_called_train_images(tmp_path):
    pixels, labels = random_uint8(4, 8, 8, 3), np.array([1, 0, 1, 1])
    np.savez(tmp_path / "a.npz", train_images=pixels, train_labels=labels, test_images=pixels[:1])
    data = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    np.testing.assert_array_equal(data.images, unit(pixels))
    assert data.labels.tolist() == labels.tolist() and data.classes == ["0", "1"]
    np.savez(tmp_path / "b.npz", images=pixels, train_images=pixels)
    with pytest.raises(LinearCNNInputError, match="both 'images' and 'train_images'"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")
    np.savez(tmp_path / "c.npz", images=pixels, train_labels=labels)
    with pytest.raises(
        LinearCNNInputError, match="'train_labels' beside 'images'; expected 'labels'"
    ):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")


def test_npz_without_test_split_refuses_train_false(tmp_path, capsys):
    path = tmp_path / "train_only.npz"
    np.savez(path, images=random_uint8(3, 8, 8, 3), labels=np.array([0, 1, 0]))
    with pytest.raises(LinearCNNInputError) as caught:
        load_dataset(f"npz:{path}", train=False)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "has no test split; expected 'test_images'" in message
    code, _, err = run_cli(["data", f"npz:{path}", "--test"], capsys)
    assert_one_line_error(code, err, "has no test split", "'test_images'")
    # test labels without test images are no test split either
    np.savez(path, images=random_uint8(3, 8, 8, 3), test_labels=np.array([0, 1]))
    code, _, err = run_cli(["data", f"npz:{path}", "--test"], capsys)
    assert_one_line_error(code, err, "has no test split")


@pytest.mark.parametrize(
    ("arrays", "train", "fragment"),
    [
        (
            {"test_images": np.zeros((3, 8, 8, 3), np.uint8), "test_labels": np.array([0, 1])},
            False,
            "'test_labels' has shape (2,) for 3 images",
        ),
        ({"test_images": np.zeros((2, 8, 8, 5), np.uint8)}, False, "'test_images' has shape"),
        (  # a malformed test split is an error whichever split is read
            {"test_images": np.zeros((2, 8, 8, 3), np.uint8), "test_labels": np.array([0.5, 1])},
            True,
            "'test_labels' are float64; expected integer class indices",
        ),
        (
            {
                "test_images": np.zeros((2, 8, 8, 3), np.uint8),
                "test_labels": np.array([0, 3]),
                "labels": np.array([0, 1]),
                "classes": np.array(["x", "y"]),
            },
            False,
            "2 'classes' names for labels up to 3",
        ),
    ],
)
def test_npz_bad_test_split(tmp_path, capsys, arrays, train, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 8, 8, 3), np.uint8), **arrays)
    code, _, err = run_cli(["data", f"npz:{path}", *([] if train else ["--test"])], capsys)
    assert_one_line_error(code, err, fragment)


def test_folder_without_splits_refuses_train_false(tmp_path, capsys):
    write_png(tmp_path / "flat" / "a" / "0.png", random_uint8(8, 8, 3))
    write_png(tmp_path / "only_train" / "train" / "a" / "0.png", random_uint8(8, 8, 3))
    for name in ("flat", "only_train"):
        with pytest.raises(
            LinearCNNInputError, match="has no test split; expected 'train' and 'test'"
        ):
            load_dataset(f"folder:{tmp_path / name}", train=False)
        code, _, err = run_cli(["data", f"folder:{tmp_path / name}", "--test"], capsys)
        assert_one_line_error(code, err, "has no test split", "(or 'val')")
    # the training images are still there
    assert load_dataset(f"folder:{tmp_path / 'flat'}").classes == ["a"]


def test_folder_test_split_uses_the_train_classes(tmp_path, capsys):
    pictures = {name: random_uint8(8, 8, 3) for name in ("a", "b", "c")}
    for name, picture in pictures.items():
        write_png(tmp_path / "train" / name / "0.png", picture)
    write_png(tmp_path / "val" / "a" / "0.png", pictures["a"])
    write_png(tmp_path / "val" / "c" / "0.png", pictures["c"])  # no images of class b
    test = load_dataset(f"folder:{tmp_path}", train=False)  # val/ is the test split
    assert test.classes == ["a", "b", "c"] and test.labels.tolist() == [0, 2]
    np.testing.assert_array_equal(test.images, unit(np.stack([pictures["a"], pictures["c"]])))
    assert "(val split)" in test.description
    write_png(tmp_path / "val" / "d" / "0.png", pictures["a"])
    code, _, err = run_cli(["data", f"folder:{tmp_path}", "--test"], capsys)
    assert_one_line_error(code, err, "['d'] that the train split lacks")


def test_has_test_split_for_every_kind(tmp_path):
    assert has_test_split("builtin") and has_test_split("builtin:10")
    assert linearcnn.has_test_split is has_test_split  # the facade

    write_cifar10(tmp_path / "c10" / "cifar-10-batches-py")
    assert has_test_split(f"cifar10:{tmp_path / 'c10'}")
    assert has_test_split(f"cifar10:{tmp_path / 'c10' / 'cifar-10-batches-py'}")
    (tmp_path / "c10" / "cifar-10-batches-py" / "test_batch").unlink()
    assert not has_test_split(f"cifar10:{tmp_path / 'c10'}")

    (tmp_path / "c100" / "cifar-100-python").mkdir(parents=True)
    (tmp_path / "c100" / "cifar-100-python" / "train").write_bytes(b"")
    assert not has_test_split(f"cifar100:{tmp_path / 'c100'}")
    (tmp_path / "c100" / "cifar-100-python" / "test").write_bytes(b"")  # names only: not parsed
    assert has_test_split(f"cifar100:{tmp_path / 'c100'}")

    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"")
    assert not has_test_split(f"svhn:{tmp_path / 'svhn'}")
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"")
    assert has_test_split(f"svhn:{tmp_path / 'svhn'}")

    raw = tmp_path / "mnist" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    assert not has_test_split(f"mnist:{tmp_path / 'mnist'}")  # labels missing
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"")
    assert has_test_split(f"mnist:{tmp_path / 'mnist'}")

    write_png(tmp_path / "folder" / "train" / "a" / "0.png", random_uint8(8, 8, 3))
    assert not has_test_split(f"folder:{tmp_path / 'folder'}")
    (tmp_path / "folder" / "val").mkdir()
    assert has_test_split(f"folder:{tmp_path / 'folder'}")

    np.savez(tmp_path / "one.npz", images=random_uint8(2, 8, 8, 3))
    np.savez(
        tmp_path / "two.npz", images=random_uint8(2, 8, 8, 3), test_images=random_uint8(1, 8, 8, 3)
    )
    assert not has_test_split(f"npz:{tmp_path / 'one.npz'}")
    assert has_test_split(f"npz:{tmp_path / 'two.npz'}")


def test_has_test_split_reads_no_npz_array(tmp_path, monkeypatch):
    path = tmp_path / "two.npz"
    np.savez(path, images=random_uint8(2, 8, 8, 3), test_images=random_uint8(1, 8, 8, 3))

    def refuse(self, key):
        raise AssertionError(f"array {key!r} was read")

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", refuse)
    assert has_test_split(f"npz:{path}")


@pytest.mark.parametrize(
    "spec",
    [
        "imagenet:/x",
        "builtin:0",
        "npz",
        "npz:{tmp}/missing.npz",
        "npz:{tmp}",
        "npz:{tmp}/cut.npz",
        "cifar10:{tmp}/missing",
        "folder:{tmp}/cut.npz",
        "mnist:{tmp}/cut.npz",
    ],
)
def test_has_test_split_raises_what_load_dataset_raises(tmp_path, spec):
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 truncated zip")
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(LinearCNNInputError) as expected:
        load_dataset(spec, train=False)
    with pytest.raises(LinearCNNInputError) as got:
        has_test_split(spec)
    assert str(got.value) == str(expected.value)


# --------------------------------------------------------------------------- pixel rules, stats


def test_to_unit_float_rules():
    np.testing.assert_array_equal(to_unit_float(np.array([0, 65535], np.uint16), "x"), [0.0, 1.0])
    np.testing.assert_array_equal(
        to_unit_float(np.array([0, 51, 255], np.int64), "x"),
        np.array([0, 51, 255], np.float32) / 255,
    )
    np.testing.assert_array_equal(to_unit_float(np.array([0.0, 0.5, 1.0]), "x"), [0.0, 0.5, 1.0])
    for bad in (
        np.array([0, 256]),
        np.array([-0.1, 0.5]),
        np.array([0.0, 300.0]),
        np.array([np.inf]),
    ):
        with pytest.raises(LinearCNNInputError):
            to_unit_float(bad, "x")


def test_channel_stats_and_normalisation():
    images = (
        RNG.random((7, 3, 5, 4)).astype(np.float32)
        * np.array([1.0, 0.5, 0.2], np.float32)[:, None, None]
    )
    data = ImageDataset(images, np.array([0, 1, 0, 1, 0, 1, 1]), ["a", "b"], "test", "synthetic")
    mean, std = data.channel_stats()
    as64 = images.astype(np.float64)
    reference_mean = np.array([as64[:, c].mean() for c in range(3)])
    reference_std = np.array(
        [np.sqrt(((as64[:, c] - reference_mean[c]) ** 2).mean()) for c in range(3)]
    )
    np.testing.assert_allclose(mean, reference_mean, rtol=1e-12)
    np.testing.assert_allclose(std, reference_std, rtol=1e-12)
    assert mean.dtype == np.float64 and mean.shape == (3,)
    normalised = data.normalized()
    assert normalised.dtype == np.float32 and normalised.shape == images.shape
    np.testing.assert_allclose(normalised.astype(np.float64).mean(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(normalised.astype(np.float64).std(axis=(0, 2, 3)), 1, atol=1e-5)
    given = normalize_images(images, [0.5, 0.25, 0.1], [2.0, 4.0, 0.5])
    np.testing.assert_allclose(given[:, 1], (as64[:, 1] - 0.25) / 4.0, atol=1e-6)
    with pytest.raises(LinearCNNInputError, match="std > 0"):
        normalize_images(images, [0, 0, 0], [1, 0, 1])
    with pytest.raises(LinearCNNInputError, match="one value per channel"):
        normalize_images(images, [0, 0], [1, 1])
    summary = data.summary()
    assert summary["count"] == 7 and summary["shape"] == [3, 5, 4]
    assert summary["classes"] == [{"name": "a", "count": 3}, {"name": "b", "count": 4}]
    json.dumps(summary)  # serialisable


def test_dataset_rejects_inconsistent_labels():
    with pytest.raises(LinearCNNInputError, match="one label per image"):
        ImageDataset(np.zeros((3, 1, 4, 4), np.float32), np.array([0, 1]), ["a", "b"], "x", "")
    with pytest.raises(LinearCNNInputError, match="class names"):
        ImageDataset(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 2]), ["a", "b"], "x", "")


def test_save_grid_writes_tiles(tmp_path):
    images = random_uint8(5, 3, 16, 16)
    data = ImageDataset(images.astype(np.float32) / 255, None, [], "x", "")
    path = tmp_path / "grid.png"
    data.save_grid(path, n=5)
    grid = np.asarray(Image.open(path))
    # 5 images -> 3 columns x 2 rows of 64-pixel tiles (16 pixels enlarged 4x) with 2-pixel gaps
    assert grid.shape == (2 * 66 + 2, 3 * 66 + 2, 3)
    np.testing.assert_array_equal(grid[2:66:4, 2:66:4], images[0].transpose(1, 2, 0))
    np.testing.assert_array_equal(grid[68:132:4, 2:66:4], images[3].transpose(1, 2, 0))
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary files left
    with pytest.raises(LinearCNNInputError, match=r"\.png"):
        data.save_grid(tmp_path / "grid.jpg")


# --------------------------------------------------------------------------- builtin


@pytest.mark.slow
def test_builtin_shape_range_labels_and_determinism():
    first = load_dataset("builtin")
    assert first.images.shape == (10_000, 3, 32, 32) and first.images.dtype == np.float32
    assert first.images.min() >= 0.0 and first.images.max() <= 1.0 and first.images.max() > 0.9
    np.testing.assert_array_equal(first.images * 255, np.round(first.images * 255))  # 8-bit values
    assert first.classes == BUILTIN_CLASSES and len(first.classes) == 10
    assert np.bincount(first.labels, minlength=10).tolist() == [1000] * 10
    again = load_dataset("builtin")
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    again.images[0] = 0  # callers own their copy: the cache is untouched
    assert load_dataset("builtin", limit=1).images.max() > 0
    other = load_dataset("builtin", seed=1, limit=500)
    assert not np.array_equal(other.images, first.images[:500])
    assert np.mean(np.any(other.images != first.images[:500], axis=(1, 2, 3))) > 0.9
    # the first N images are the same for every requested size
    small = load_dataset("builtin:200")
    np.testing.assert_array_equal(small.images, first.images[:200])
    assert np.bincount(small.labels, minlength=10).tolist() == [20] * 10


def test_builtin_splits_come_from_disjoint_halves():
    train = load_dataset("builtin", limit=2000)
    test = load_dataset("builtin", train=False)
    assert test.images.shape == (2000, 3, 32, 32)
    train_layout, test_layout = builtin_layout(2000, 0, True), builtin_layout(2000, 0, False)
    widths = np.array(
        [Image.open(photo_path(package, path)).size[0] for _, package, path in PHOTOS]
    )
    assert np.all(train_layout.box[:, 2] <= widths[train_layout.label] // 2 + 1e-9)
    assert np.all(test_layout.box[:, 0] >= widths[test_layout.label] // 2 - 1e-9)
    train_rows = {image.tobytes() for image in (train.images * 255).astype(np.uint8)}
    assert not any(image.tobytes() in train_rows for image in (test.images * 255).astype(np.uint8))


@pytest.mark.parametrize(("train", "crop"), [(True, 32), (False, 32), (True, 64)])
def test_builtin_crops_match_their_source_boxes(train, crop):
    """Independent reconstruction: shrink the recorded source box of the photo with Pillow and
    compare after a per-channel gain (the photometric jitter); a box two output pixels off
    must fit far worse. Larger crops (`builtin:N@64`) too."""
    data = load_dataset("builtin" if crop == 32 else f"builtin:60@{crop}", seed=3, limit=60, train=train)
    assert data.images.shape == (60, 3, crop, crop)
    layout = builtin_layout(60, 3, train, crop)
    photos = [Image.open(photo_path(package, path)).convert("RGB") for _, package, path in PHOTOS]

    def misfit(index: int, box: np.ndarray) -> float:
        reference = np.asarray(
            photos[data.labels[index]].resize((crop, crop), Image.Resampling.LANCZOS, box=tuple(box))
        )
        reference = reference.astype(np.float64).transpose(2, 0, 1) / 255  # (3, crop, crop)
        if layout.flip[index]:
            reference = reference[..., ::-1]
        image = data.images[index].astype(np.float64)
        gain = (reference * image).sum(axis=(1, 2)) / np.maximum(
            (reference**2).sum(axis=(1, 2)), 1e-12
        )
        return float(np.abs(image - gain[:, None, None] * reference).mean())

    right, wrong = [], []
    for index in range(60):
        box = layout.box[index]
        right.append(misfit(index, box))
        step = 2 * (box[2] - box[0]) / crop
        shifted = box + (
            np.array([step, 0, step, 0]) if box[0] >= step else np.array([-step, 0, -step, 0])
        )
        shifted[[0, 2]] = np.clip(shifted[[0, 2]], 0, photos[data.labels[index]].size[0])
        wrong.append(misfit(index, shifted))
    assert max(right) < 0.005, max(right)
    assert np.median(wrong) > 5 * max(right)


def test_spectrum_exponent_recovers_synthetic_power_laws():
    rng = np.random.default_rng(7)
    side = 96
    frequency = np.fft.fftfreq(side)
    radius = np.hypot(frequency[:, None], frequency[None, :])
    radius[0, 0] = 1.0
    for beta in (1.5, 2.0, 2.5):
        amplitude = radius ** (-beta / 2)
        amplitude[0, 0] = 0.0
        fields = [
            np.fft.ifft2(
                amplitude * (rng.normal(size=(side, side)) + 1j * rng.normal(size=(side, side)))
            ).real
            for _ in range(60)
        ]
        crops = np.stack(
            [field[y : y + 32, x : x + 32] for field in fields for y, x in ((0, 0), (40, 50))]
        )
        fit = spectrum_exponent(crops[:, None])  # (N, 1, 32, 32), non-periodic crops
        assert abs(fit.power_exponent - beta) < 0.1, (beta, fit.power_exponent)
        assert fit.amplitude_exponent == pytest.approx(fit.power_exponent / 2)


def test_builtin_spectrum_is_natural_image_like():
    """Natural photos have power ~ 1/f^beta with beta about 2 (1.88 +- 0.43 across photos);
    white noise has 0. The builtin crops must fall in the natural range."""
    fit = spectrum_exponent(load_dataset("builtin", limit=2000).images)
    assert 1.8 < fit.power_exponent < 3.0 and fit.r_squared > 0.98


# --------------------------------------------------------------------------- CLI


def test_cli_summary_json_grid_and_spectrum(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code, out, err = run_cli(
        [
            "data",
            "builtin",
            "--limit",
            "30",
            "--test",
            "--json",
            "--grid",
            str(grid),
            "--grid-size",
            "9",
            "--spectrum",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["count"] == 30 and summary["shape"] == [3, 32, 32]
    assert sum(item["count"] for item in summary["classes"]) == 30
    assert "test split" in summary["description"] and "power_exponent" in summary["spectrum"]
    assert Image.open(grid).size == (3 * 66 + 2, 3 * 66 + 2)
    code, out, err = run_cli(["data", "--limit", "20"], capsys)
    assert code == 0, err
    assert "channel mean" in out and "astronaut 2" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["data", "builtin", "--limit", "0"], "limit 0"),
        (["data", "builtin", "--grid", "/no/such/folder/g.png"], "does not exist"),
        (["data", "builtin", "--grid", "grid.jpg"], "expected a name ending in .png"),
        (["data", "cifar10:/no/such/folder"], "does not exist"),
        (["data", "folder"], "needs a path"),
    ],
)
def test_cli_bad_arguments(argv, fragment, capsys):
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, fragment)


def test_cli_file_where_folder_expected(tmp_path, capsys):
    path = tmp_path / "file.bin"
    path.write_bytes(b"x")
    for kind in ("cifar10", "cifar100", "svhn", "mnist", "folder"):
        code, _, err = run_cli(["data", f"{kind}:{path}"], capsys)
        assert_one_line_error(code, err, "is a file; expected a folder")


def test_padded_border_is_zero_after_normalisation_and_keeps_the_images():
    """28x28 -> 32x32: the centre is the original, the border is the channel mean, so the
    normalised border is 0 (the set's own statistics for train, the train statistics for test)."""
    rng = np.random.default_rng(0)
    train = ImageDataset(rng.random((6, 2, 28, 28)).astype(np.float32), np.arange(6) % 2, ["a", "b"], "npz:x", "t")
    test = ImageDataset(rng.random((3, 2, 28, 28)).astype(np.float32), np.arange(3) % 2, ["a", "b"], "npz:x", "t")
    padded = train.padded(2)
    assert padded.images.shape == (6, 2, 32, 32) and padded.spec == "npz:x"
    np.testing.assert_array_equal(padded.images[:, :, 2:30, 2:30], train.images)
    mean = train.images.astype(np.float64).mean(axis=(0, 2, 3))  # computed here, not by channel_stats
    np.testing.assert_allclose(padded.channel_stats()[0], mean, rtol=1e-6)
    normalised = padded.normalized()
    border = np.ones((32, 32), dtype=bool)
    border[2:30, 2:30] = False
    assert np.max(np.abs(normalised[:, :, border])) < 1e-5
    test_padded = test.padded(2, fill=padded.channel_stats()[0])
    normalised_test = test_padded.normalized(*padded.channel_stats())
    assert np.max(np.abs(normalised_test[:, :, border])) < 1e-5
    assert train.padded(0) is train
    with pytest.raises(LinearCNNInputError):
        train.padded(-1)


def test_a_huge_label_is_refused_without_allocating_a_class_per_index(tmp_path, capsys):
    # One damaged label used to make the loader build a class name per possible index (OOM at 2**40).
    images = random_uint8(3, 8, 8, 3)
    np.savez(tmp_path / "huge.npz", images=images, labels=np.array([0, 1, 2**40], dtype=np.int64))
    code, _, err = run_cli(["data", f"npz:{tmp_path / 'huge.npz'}"], capsys)
    assert_one_line_error(code, err, "label 1099511627776 is not a class index")
    pixels = random_uint8(2, 28, 28)
    labels = np.array([3, 2**31 - 1], dtype=">i4")  # an int32 IDX labels file (type 0x0C)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + labels.tobytes())
    code, _, err = run_cli(["data", f"mnist:{tmp_path}"], capsys)
    assert_one_line_error(code, err, "label 2147483647 is not a class index")
    np.savez(tmp_path / "fine.npz", images=images, labels=np.array([0, 1, 99_999]))
    assert len(load_dataset(f"npz:{tmp_path / 'fine.npz'}").classes) == 100_000


def test_a_fifo_is_refused_instead_of_read_forever(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    code, _, err = run_cli(["data", f"npz:{fifo}"], capsys)
    assert_one_line_error(code, err, "is not a regular file")
    code, _, err = run_cli(["profile", "--checkpoint", str(fifo)], capsys)
    assert_one_line_error(code, err, "is not a regular file")


def test_builtin_size_has_a_ceiling(capsys):
    code, _, err = run_cli(["data", "builtin:1000000000"], capsys)
    assert_one_line_error(code, err, "N <= 100,000")


def test_constant_images_name_the_data_set_not_the_normalisation(tmp_path, capsys):
    np.savez(tmp_path / "flat.npz", images=np.full((6, 8, 8, 3), 128, np.uint8), labels=np.arange(6) % 2)
    for argv in (["stats", "--data", f"npz:{tmp_path / 'flat.npz'}"],
                 ["train", "--data", f"npz:{tmp_path / 'flat.npz'}", "--arch", "linear", "--epochs", "1", "--quiet"]):
        code, _, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, "flat.npz': channel 0, 1, 2 has the same value in every pixel")
    code, out, _ = run_cli(["data", f"npz:{tmp_path / 'flat.npz'}"], capsys)
    assert code == 0 and "0.0000" in out  # the summary still shows a std of 0
