"""Hostile input files of a few MB are refused (or read correctly) within bounded memory (issue #10).

Each crafted file is a decompression bomb or declares far more data than it holds: deflated zeros
in an `.npz` (checkpoint or data set), a torch zip checkpoint (a storage, or `data.pkl`), a gzip
IDX file, a compressed `.mat`, a pickle of a million empty dicts, a 1-bit PNG of 95-182 Mpx.
Before the fix each took 1.3-6.3 GB. The CLI runs in a child of a small wrapper process, which
reports the child's peak resident memory (`ru_maxrss` of RUSAGE_CHILDREN, measured after the child
ends, so torch's large *virtual* mappings do not count and no earlier child of pytest does);
the tests assert that peak is well below what the bombs would decompress to, and that the
outcome is exit code 2 with a one-line error naming the file, or a correct read of `--limit` images.
Legitimate files still load exactly as `np.load` / a full read gives them.
"""

from __future__ import annotations

import collections
import gzip
import io
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from linearcnn._npz import npz_members, read_npz
from linearcnn.data import load_dataset
from linearcnn.data.formats.mnist import read_idx
from linearcnn.errors import LinearCNNInputError

#: Peak resident memory allowed to a `linearcnn data` run on a hostile file: the CLI alone peaks
#: near 50 MB; every bomb below decompresses to more than 1 GB.
DATA_PEAK_MB = 400
#: The same for `linearcnn profile` (importing torch alone peaks near 230 MB).
PROFILE_PEAK_MB = 600
#: Bytes of zeros in each bomb: 1.2 GB, about 1.2 MB once deflated.
BOMB_BYTES = 1_200_000_000
_CHUNK = 2**20

_WRAPPER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
sys.stdout.write(f"{done.returncode} {peak}\\n" + done.stderr)
"""


def run_measured(*args: str) -> tuple[int, int, str]:
    """(exit code, peak resident MB, stderr) of `linearcnn ARGS` run in a child of a wrapper."""
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "linearcnn", *args],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    first, _, err = out.partition("\n")
    code, peak = (int(word) for word in first.split())
    return code, peak, err


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --------------------------------------------------------------------------- crafting


def deflate_zeros(prefix: bytes, zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of `prefix` then `zeros` zero bytes, and the CRC-32 of that content.
    One deflated MiB of zeros is repeated (a full flush resets the compressor between copies)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    zero = bytes(_CHUNK)
    block = compressor.compress(zero) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = bytes(zeros % _CHUNK)
    body = head + block * (zeros // _CHUNK) + compressor.compress(tail) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(zeros // _CHUNK):
        crc = zlib.crc32(zero, crc)
    return body, zlib.crc32(tail, crc)


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip written by hand from (name, stored bytes, crc, uncompressed size, method) members."""
    out, central = bytearray(), bytearray()
    for name, data, crc, size, method in members:
        offset, encoded = len(out), name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0)
        out += encoded + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0, 0, 0, 0, 0, offset
        ) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central) + end)
    return path


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def zero_member(name: str, shape: tuple[int, ...], dtype: str) -> tuple[str, bytes, int, int, int]:
    """A deflated `.npy` member of zeros (the header is honest: sizes all agree)."""
    head = npy_header(shape, dtype)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    data, crc = deflate_zeros(head, size)
    return (name + ".npy", data, crc, len(head) + size, zipfile.ZIP_DEFLATED)


def stored_member(name: str, array: np.ndarray) -> tuple[str, bytes, int, int, int]:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    data = buffer.getvalue()
    return (name + ".npy", data, zlib.crc32(data), len(data), zipfile.ZIP_STORED)


def torch_zip(path: Path, numel: int, *, pickle_zeros: int = 0) -> Path:
    """A torch.save zip whose float32 storage of `numel` zeros is deflated, or (`pickle_zeros`)
    whose data.pkl is that many deflated zero bytes."""
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.ones(2, 3, 3, 3)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    top = next(name.split("/")[0] for name in entries if name.endswith("data.pkl"))

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):  # what torch.save writes for a tensor of `numel` elements
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, (numel,), (1,), False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None

    structure = io.BytesIO()
    Pickler(structure, protocol=2).dump({"conv1.weight": Tensor()})
    members = []
    for name, data in entries.items():
        if name == f"{top}/data.pkl" and pickle_zeros:
            body, crc = deflate_zeros(b"", pickle_zeros)
            members.append((name, body, crc, pickle_zeros, zipfile.ZIP_DEFLATED))
        elif name == f"{top}/data.pkl":
            data = structure.getvalue()
            members.append((name, data, zlib.crc32(data), len(data), zipfile.ZIP_STORED))
        elif name == f"{top}/data/0" and not pickle_zeros:
            body, crc = deflate_zeros(b"", numel * 4)
            members.append((name, body, crc, numel * 4, zipfile.ZIP_DEFLATED))
        else:
            members.append((name, data, zlib.crc32(data), len(data), zipfile.ZIP_STORED))
    return write_zip(path, members)


def gzip_zeros(prefix: bytes, zeros: int) -> bytes:
    body, crc = deflate_zeros(prefix, zeros)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, (len(prefix) + zeros) % 2**32)


def png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A 1-bit grayscale PNG of width x height black pixels (a few KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def mat_of_zeros(path: Path, images: int) -> Path:
    """A MATLAB v5 file holding compressed uint8 X (32, 32, 3, images) of zeros and y of ones."""

    def element(kind: int, data: bytes) -> bytes:
        return struct.pack("<II", kind, len(data)) + data + bytes((-len(data)) % 8)

    def matrix_head(name: bytes, dims: tuple[int, ...], size: int) -> bytes:
        fields = element(6, struct.pack("<II", 9, 0)) + element(5, struct.pack(f"<{len(dims)}i", *dims))
        fields += struct.pack("<I", (len(name) << 16) | 1) + name.ljust(4, b"\0")
        return struct.pack("<II", 14, len(fields) + 8 + size + (-size) % 8) + fields + struct.pack("<II", 2, size)

    size = 32 * 32 * 3 * images
    head = matrix_head(b"X", (32, 32, 3, images), size)
    raw, _ = deflate_zeros(head, size)
    adler = zlib.adler32(head)
    for _ in range(size // _CHUNK):
        adler = zlib.adler32(bytes(_CHUNK), adler)
    x = b"\x78\xda" + raw + struct.pack(">I", zlib.adler32(bytes(size % _CHUNK), adler))
    y = zlib.compress(matrix_head(b"y", (images, 1), images) + bytes([1]) * images + bytes((-images) % 8))
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + struct.pack("<II", 15, len(x)) + x + struct.pack("<II", 15, len(y)) + y)
    return path


# --------------------------------------------------------------------------- checkpoints


def test_npz_checkpoint_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.npz", [zero_member("conv1", (BOMB_BYTES // 8 // 1000, 10, 10, 10), "<f8")])
    assert path.stat().st_size < 2_000_000
    code, peak, err = run_measured("profile", "-c", str(path))
    assert_refused(code, err, str(path), "'conv1'", "expected at most")
    assert peak < PROFILE_PEAK_MB, peak


@pytest.mark.parametrize("part", ["storage", "data.pkl"])
def test_torch_zip_bombs_are_refused_in_bounded_memory(tmp_path: Path, part: str) -> None:
    if part == "storage":
        path = torch_zip(tmp_path / "bomb.pt", BOMB_BYTES // 4)
        fragments: tuple[str, ...] = ("decompress", "decompression bomb")
    else:
        path = torch_zip(tmp_path / "bomb.pt", 54, pickle_zeros=BOMB_BYTES)
        fragments = ("data.pkl", "expected at most")
    assert path.stat().st_size < 2_000_000
    code, peak, err = run_measured("profile", "-c", str(path))
    assert_refused(code, err, str(path), *fragments)
    assert peak < PROFILE_PEAK_MB, peak


def test_npz_checkpoint_reads_arrays_lazily_and_exactly(tmp_path: Path) -> None:
    from linearcnn.checkpoints import load_first_layer

    rng = np.random.default_rng(0)
    conv = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    big = np.asfortranarray(rng.standard_normal((40, 30)))
    np.savez_compressed(tmp_path / "w.npz", stem=conv, head=big, bias=np.zeros(100_000))
    first = load_first_layer(tmp_path / "w.npz")
    np.testing.assert_array_equal(first.weight, conv.astype(np.float64))
    with np.load(tmp_path / "w.npz") as reference:
        ours = read_npz(tmp_path / "w.npz", "test")
        assert list(ours) == list(reference.files)
        for name in reference.files:
            assert ours[name].dtype == reference[name].dtype
            np.testing.assert_array_equal(ours[name], reference[name])
    rows = read_npz(tmp_path / "w.npz", "test", names=["head", "stem"], rows={"head": 7, "stem": 2})
    np.testing.assert_array_equal(rows["head"], big[:7])  # Fortran order: read whole, then cut
    np.testing.assert_array_equal(rows["stem"], conv[:2])


def test_npz_headers_that_lie_are_refused_before_allocation(tmp_path: Path) -> None:
    head = npy_header((10**11,), "<f8")  # declares 800 GB, holds 16 bytes
    data = head + bytes(16)
    path = write_zip(tmp_path / "lie.npz", [("x.npy", data, zlib.crc32(data), len(data), zipfile.ZIP_STORED)])
    with pytest.raises(LinearCNNInputError, match="holds 16 bytes") as excinfo:
        npz_members(path, "file 'lie.npz'")
    assert "\n" not in str(excinfo.value)
    long_header = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + bytes(64)  # a 2 GB header
    path = write_zip(tmp_path / "long.npz", [("x.npy", long_header, zlib.crc32(long_header), len(long_header), 0)])
    with pytest.raises(LinearCNNInputError, match="header; expected at most"):
        npz_members(path, "file 'long.npz'")


# --------------------------------------------------------------------------- data sets


def test_npz_data_bomb_reads_only_the_limit(tmp_path: Path) -> None:
    labels = np.arange(BOMB_BYTES // 1024) % 10
    path = write_zip(
        tmp_path / "bomb.npz",
        [zero_member("images", (BOMB_BYTES // 1024, 32, 32, 1), "|u1"), stored_member("labels", labels.astype(np.uint8))],
    )
    assert path.stat().st_size < 3_000_000
    code, peak, err = run_measured("data", f"npz:{path}", "--limit", "10")
    assert code == 0 and "Traceback" not in err, err
    assert peak < DATA_PEAK_MB, peak
    code, peak, err = run_measured("data", f"npz:{path}")
    assert_refused(code, err, str(path), "'images'", "expected at most")
    assert peak < DATA_PEAK_MB, peak
    data = load_dataset(f"npz:{path}", limit=10)
    assert data.images.shape == (10, 1, 32, 32) and not data.images.any()
    np.testing.assert_array_equal(data.labels, labels[:10])


def test_npz_data_within_the_ceiling_is_refused_beyond_the_inflation_bound(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.npz", [zero_member("images", (200_000, 32, 32, 1), "|u1")])  # 205 MB of zeros
    code, peak, err = run_measured("data", f"npz:{path}")
    assert_refused(code, err, str(path), "decompression bomb")
    assert peak < DATA_PEAK_MB, peak


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_data_loads_as_before(tmp_path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 9, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 12)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "d.npz", images=images, labels=labels, classes=np.array(["a", "b", "c", "d"]))
    expected = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    for limit in (None, 5):
        data = load_dataset(f"npz:{tmp_path / 'd.npz'}", limit=limit)
        np.testing.assert_array_equal(data.images, expected[:limit])
        np.testing.assert_array_equal(data.labels, labels[:limit])
        assert data.classes == ["a", "b", "c", "d"]


def test_mnist_gzip_bomb_reads_only_the_limit(tmp_path: Path) -> None:
    count = BOMB_BYTES // 784
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip_zeros(struct.pack(">BBBBIII", 0, 0, 8, 3, count, 28, 28), count * 784))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip_zeros(struct.pack(">BBBBI", 0, 0, 8, 1, count), count))
    code, peak, err = run_measured("data", f"mnist:{tmp_path}", "--limit", "10")
    assert code == 0 and "Traceback" not in err, err
    assert peak < DATA_PEAK_MB, peak
    code, peak, err = run_measured("data", f"mnist:{tmp_path}")
    assert_refused(code, err, "train-images-idx3-ubyte.gz", "expected at most")
    assert peak < DATA_PEAK_MB, peak


def test_mnist_limited_read_equals_the_full_read(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 9, 28, 28) + pixels.tobytes()))
    np.testing.assert_array_equal(read_idx(path), pixels)
    np.testing.assert_array_equal(read_idx(path, rows=4), pixels[:4])
    path.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 9, 28, 28) + pixels.tobytes() + b"extra"))
    with pytest.raises(LinearCNNInputError, match="truncated or corrupt"):
        read_idx(path)


@pytest.mark.parametrize(("width", "height"), [(10_000, 9_500), (14_000, 13_000)])  # Pillow warns / raises
def test_png_bombs_are_refused_in_one_line(tmp_path: Path, width: int, height: int) -> None:
    (tmp_path / "a").mkdir()
    path = png_of_zeros(tmp_path / "a" / "bomb.png", width, height)
    assert path.stat().st_size < 30_000
    code, peak, err = run_measured("data", f"folder:{tmp_path}", "--limit", "10")
    assert_refused(code, err, str(path), "pixels")
    assert peak < DATA_PEAK_MB, peak


def test_png_at_the_pixel_ceiling_is_read_in_bounded_memory(tmp_path: Path) -> None:
    from linearcnn.data.formats._common import MAX_PICTURE_PIXELS

    (tmp_path / "a").mkdir()
    side = int(MAX_PICTURE_PIXELS**0.5)
    png_of_zeros(tmp_path / "a" / "big.png", side, side)
    code, peak, err = run_measured("data", f"folder:{tmp_path}")
    assert code == 0, err
    assert peak < 2 * DATA_PEAK_MB, peak  # the ceiling's stated cost: ~25 bytes per pixel
    png_of_zeros(tmp_path / "a" / "big.png", side + 1, side + 1)
    code, _, err = run_measured("data", f"folder:{tmp_path}")
    assert_refused(code, err, "big.png", f"expected at most {MAX_PICTURE_PIXELS:,} pixels")


def test_svhn_mat_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = mat_of_zeros(tmp_path / "train_32x32.mat", BOMB_BYTES // 3072)
    assert path.stat().st_size < 2_000_000
    code, peak, err = run_measured("data", f"svhn:{tmp_path}", "--limit", "10")
    assert_refused(code, err, str(path), "decompression bomb")
    assert peak < DATA_PEAK_MB, peak
    (tmp_path / "small").mkdir()
    mat_of_zeros(tmp_path / "small" / "train_32x32.mat", 20)
    data = load_dataset(f"svhn:{tmp_path / 'small'}", limit=5)
    assert data.images.shape == (5, 3, 32, 32) and data.labels.tolist() == [1] * 5


def test_cifar_pickle_of_many_objects_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test_batch").write_bytes(b"\x80\x02(" + b"}" * 4_000_000 + b"l.")  # 4 MB: 350 MB unpickled
    code, peak, err = run_measured("data", f"cifar10:{tmp_path}", "--test")
    assert_refused(code, err, "test_batch", "pickle opcodes")
    assert peak < DATA_PEAK_MB, peak
