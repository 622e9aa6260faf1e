"""Tests for the small shared helpers: atomic file writes (`linearcnn._files`) and the numeric
input conversion (`linearcnn._arrays`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from linearcnn._arrays import finite_float64
from linearcnn._files import atomic_save, atomic_write_bytes, atomic_write_text
from linearcnn.dynamics import check_steps
from linearcnn.energy import energy_profile
from linearcnn.errors import LinearCNNInputError


def test_atomic_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    assert atomic_write_text(target, "new \u00e9") == target
    assert target.read_bytes() == "new \u00e9".encode()
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    array = np.arange(6.0).reshape(2, 3)
    atomic_save(tmp_path / "a.npz", lambda tmp: np.savez(tmp, x=array))
    with np.load(tmp_path / "a.npz") as archive:  # exactly at the path: no second .npz appended
        np.testing.assert_array_equal(archive["x"], array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "out.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def fail(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_finite_float64_converts_and_rejects():
    values = finite_float64(torch.tensor([[1, 2], [3, 4]], dtype=torch.int32), "x")
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(finite_float64([True, False], "x"), [1.0, 0.0])
    for bad, fragment in [
        (np.array([1.0, np.inf]), "weights contains NaN or Inf"),
        (np.array(["1", "2"]), "weights has dtype <U1; expected real numbers"),
        (np.array([1 + 2j]), "expected real numbers"),
        ([[1.0], [2.0, 3.0]], "weights is not an array of numbers"),
    ]:
        with pytest.raises(LinearCNNInputError, match=fragment):
            finite_float64(bad, "weights")
    # the one conversion behind energy and dynamics inputs
    with pytest.raises(LinearCNNInputError, match="weights contains NaN"):
        energy_profile(np.full((2, 4), np.nan), np.eye(4))
    with pytest.raises(LinearCNNInputError, match="steps has dtype"):
        check_steps(np.array(["10"]))
    np.testing.assert_array_equal(check_steps(torch.tensor([0, 10])), [0.0, 10.0])


def test_atomic_writes_give_files_the_mode_a_plain_open_gives(tmp_path):
    import os

    from linearcnn._files import atomic_save, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_save(tmp_path / "b.npz", lambda tmp: open(tmp, "wb").close())
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(old)
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain == 0o644
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == plain
    assert (tmp_path / "b.npz").stat().st_mode & 0o777 == plain
