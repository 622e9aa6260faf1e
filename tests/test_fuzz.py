"""Fuzzing every reader of user files: mutated valid files must load or fail with one line.

Each example starts from a valid small input of one kind (`fuzz_inputs.KINDS`: every checkpoint
format, every data format, the patch-statistics file), applies a hypothesis-drawn mutation (byte
flips, truncation, insertion, deletion, interesting integers over length fields, random content,
a zip member or a gzip file's content mutated and re-packed), and reads it in a worker process
(`fuzz_targets.FuzzWorker`) under an address-space limit of what importing torch takes plus
1 GiB, with a wall-clock limit. The only allowed outcomes are success and a one-line
`LinearCNNInputError`; any other exception (MemoryError included), a crash or a timeout fails the
example, and the message names the kind, the file or member touched and the mutation.

Profiles: the quick one (default, derandomized: CI sees the same examples every run) and
`LINEARCNN_FUZZ=thorough` (many more random examples per kind, `slow`), e.g.

    LINEARCNN_FUZZ=thorough pytest -p no:xdist tests/test_fuzz.py -k thorough
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from fuzz_inputs import GZIPPED, INTERESTING, KINDS, ZIPPED, files_of, mutate_file
from fuzz_targets import ALLOWED, FuzzWorker
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

THOROUGH = os.environ.get("LINEARCNN_FUZZ", "").lower() == "thorough"
QUICK_EXAMPLES = 100  # per kind; the whole file runs in well under a minute on two cores
THOROUGH_EXAMPLES = 1500
TIMEOUT_S = 30.0  # per file: a tiny file that takes longer is a finding
SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# --------------------------------------------------------------------------- strategies

positions = st.integers(min_value=0, max_value=1 << 20)
byte_op = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("number"), positions, st.sampled_from([1, 2, 4, 8]), st.sampled_from(INTERESTING), st.booleans()),
)
mutations = st.one_of(
    st.lists(byte_op, min_size=1, max_size=4),
    st.tuples(st.just("replace"), st.binary(max_size=512)).map(lambda op: [op]),
)


def levels(kind: str) -> st.SearchStrategy[str]:
    """Where a mutation lands: the raw bytes, a zip member (mostly, for archives: a flipped byte in
    a stored member would otherwise mostly meet the CRC check) or a gzip file's content."""
    if kind in ZIPPED:
        return st.sampled_from(["bytes", "member", "member", "member"])
    if kind in GZIPPED:
        return st.sampled_from(["bytes", "gunzip", "gunzip"])
    return st.just("bytes")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def worker():
    reader = FuzzWorker()
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, tuple[str, Path, Path]]:
    """kind -> (target, folder holding the valid input, the path the target reads)."""
    made = {}
    for kind, (target, build) in KINDS.items():
        folder = tmp_path_factory.mktemp(f"base-{kind}")
        made[kind] = (target, folder, build(folder))
    return made


def fuzz_one(bases, worker, scratch: Path, kind: str, file_index: int, level: str, member: int, ops, *, target: str | None = None) -> None:
    """Copy the valid input of `kind`, mutate one of its files, read it; assert an allowed outcome."""
    base_target, base_folder, base_path = bases[kind]
    folder = Path(tempfile.mkdtemp(dir=scratch))
    try:
        shutil.copytree(base_folder, folder, dirs_exist_ok=True)
        root = folder / base_path.relative_to(base_folder)
        files = files_of(root)
        touched = mutate_file(files[file_index % len(files)], (level, member), ops)
        result = worker.read(target or base_target, root, timeout=TIMEOUT_S)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert result["outcome"] in ALLOWED, (
        f"{kind}: {touched} mutated by {ops!r} ({level}) -> {result['outcome']}: {result.get('last_line')} "
        f"[{result.get('linearcnn_frame') or result.get('where', '')}]"
    )


def _fuzz(bases, worker, tmp_path, kind, data) -> None:
    fuzz_one(bases, worker, tmp_path, kind, data.draw(st.integers(0, 63), label="file"), data.draw(levels(kind), label="level"),
             data.draw(st.integers(0, 63), label="member"), data.draw(mutations, label="ops"))


# --------------------------------------------------------------------------- the harness itself


def test_every_valid_input_reads(bases, worker):
    """The starting points are valid: unmutated, every kind loads (else the fuzzing would only
    exercise the first error path)."""
    for kind, (target, _, path) in bases.items():
        result = worker.read(target, path)
        assert result["outcome"] == "ok", (kind, result)


def test_the_harness_reports_every_kind_of_failure(bases, worker, tmp_path):
    """Controls: a plain ValueError, a MemoryError past the address-space limit, a crash and a hang
    are each reported as what they are, and the worker comes back for the next file."""
    path = bases["npy"][2]
    value_error = worker.read("control:value_error", path)
    assert (value_error["outcome"], value_error["exception"]) == ("failure", "ValueError")
    memory = worker.read("control:memory", path)
    assert (memory["outcome"], memory["exception"]) == ("failure", "MemoryError")
    crash = worker.read("control:crash", path)
    assert crash["outcome"] == "crash" and crash["message"].endswith("exit code -6"), crash  # SIGABRT
    assert worker.read("control:hang", path, timeout=3)["outcome"] == "timeout"
    assert worker.read("checkpoint", path)["outcome"] == "ok"
    with pytest.raises(AssertionError, match=r"npy: w\.npy mutated by .*ValueError: a plain ValueError"):
        fuzz_one(bases, worker, tmp_path, "npy", 0, "bytes", 0, [("flip", 0, 0)], target="control:value_error")


def test_mutations_do_what_they_say(tmp_path):
    from fuzz_inputs import apply_ops

    data = bytes(range(10))
    assert apply_ops(data, [("flip", 12, 0xFF)]) == bytes([0, 1, 0xFD, 3, 4, 5, 6, 7, 8, 9])
    assert apply_ops(data, [("truncate", 3)]) == bytes([0, 1, 2])
    assert apply_ops(data, [("insert", 1, b"ab"), ("delete", 0, 2)]) == b"b" + bytes(range(1, 10))
    assert apply_ops(data, [("number", 2, 4, 0xFFFFFFFF, True)])[2:6] == b"\xff" * 4
    assert apply_ops(data, [("number", 0, 2, 1, True)])[:2] == b"\x00\x01"
    assert apply_ops(data, [("replace", b"xyz")]) == b"xyz"


# --------------------------------------------------------------------------- the fuzzing


#: What this suite found once, reproduced exactly and kept as regression tests:
#: (kind, file index, level, member, ops, what it was).
FOUND = [
    ("torch-legacy", 0, "bytes", 0, [("number", 28, 8, 1 << 30, False)],
     "linearcnn/checkpoints/_torch_load.py re-raises MemoryError: a legacy pickle whose header string length reads 2**30 "
     "makes pickle allocate 1 GiB"),
    ("torchscript", 0, "bytes", 0, [("number", 1757, 1, 8, False)],
     "linearcnn/checkpoints/_safe_unpickle.py:278: a member marked deflate-compressed raises zlib.error from zipfile"),
    ("npz", 0, "member", 0, [("overwrite", 8, b" ")],
     "linearcnn/_npz.py:108: a .npy header with an unclosed bracket raises tokenize.TokenError"),
    ("stats", 0, "member", 0, [("overwrite", 8, b" ")],
     "linearcnn/_npz.py:108: a .npy header with an unclosed bracket raises tokenize.TokenError"),
    ("data-npz", 0, "member", 0, [("overwrite", 8, b" ")],
     "linearcnn/_npz.py:108 (via data/formats/npz.py): a .npy header with an unclosed bracket raises tokenize.TokenError"),
    ("svhn", 1, "bytes", 0, [("number", 262165, 4, 0, False)],
     "scipy.io.loadmat crashed the interpreter (segmentation fault) on a damaged train_32x32.mat; now data/formats/_mat5.py"),
    ("folder-png", 1, "bytes", 0, [("flip", 33, 180)],
     "linearcnn/data/formats/folder.py:79: a PNG chunk length of 3 GB (the chunk after IHDR) makes Pillow's load raise MemoryError"),
]


@pytest.mark.parametrize(
    ("kind", "file_index", "level", "member", "ops"),
    [pytest.param(*case[:5], id=f"{case[0]}-{i}") for i, case in enumerate(FOUND)],
)
def test_what_the_fuzzer_found(bases, worker, tmp_path, kind, file_index, level, member, ops):
    fuzz_one(bases, worker, tmp_path, kind, file_index, level, member, ops)


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=QUICK_EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=SUPPRESSED,
          phases=[Phase.explicit, Phase.generate], print_blob=True)  # no shrinking: the examples are fixed, the message names them
@given(data=st.data())
def test_fuzz_quick(bases, worker, tmp_path, kind, data):
    _fuzz(bases, worker, tmp_path, kind, data)


@pytest.mark.slow
@pytest.mark.skipif(not THOROUGH, reason="set LINEARCNN_FUZZ=thorough")
@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=THOROUGH_EXAMPLES, deadline=None, suppress_health_check=SUPPRESSED, print_blob=True)
@given(data=st.data())
def test_fuzz_thorough(bases, worker, tmp_path, kind, data):
    _fuzz(bases, worker, tmp_path, kind, data)
