"""Patch statistics equal an independent float64 computation, on both streaming passes (the
per-pixel neighbour products and the image-row products), for any shape, kernel and chunking."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import linearcnn.patches._stream as stream_module
from linearcnn.errors import LinearCNNInputError
from linearcnn.patches import patch_stats
from linearcnn.patches._inputs import batches
from linearcnn.patches._rows import row_chunk, row_plan
from linearcnn.patches._stream import choose_method, operations_per_image, stream_moments


def sliding_moments(images: np.ndarray, k: int, centered: bool) -> tuple[np.ndarray, np.ndarray]:
    """(second moment or covariance, mean) of all stride-1 k x k patches, from numpy's sliding
    windows and one float64 matrix product (patches in (C, k, k) order)."""
    c = images.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(images.astype(np.float64), (k, k), axis=(2, 3))  # (n, C, h', w', k, k)
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)  # (M, d)
    mean = patches.mean(axis=0)
    moment = patches.T @ patches / patches.shape[0]
    if centered:
        moment = moment - np.outer(mean, mean)
    return moment, mean


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@contextlib.contextmanager
def forced(method: str | None, row_budget: int | None = None, threads: int | None = None) -> Iterator[None]:
    """Force the streaming pass (and the row pass's buffer budget, torch's thread count)."""
    saved = stream_module._METHOD, stream_module._ROW_BUDGET_BYTES, torch.get_num_threads()
    try:
        stream_module._METHOD = method
        if row_budget is not None:
            stream_module._ROW_BUDGET_BYTES = row_budget
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        stream_module._METHOD, stream_module._ROW_BUDGET_BYTES = saved[0], saved[1]
        torch.set_num_threads(saved[2])


def quiet_stats(images, k, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny cases: fewer patches than dimensions
        return patch_stats(images, k, device="cpu", **options)


@settings(deadline=None, max_examples=60)
@given(
    n=st.integers(1, 5), c=st.integers(1, 4), k=st.integers(1, 7), extra_h=st.integers(0, 10),
    extra_w=st.integers(0, 40), centered=st.booleans(), method=st.sampled_from(["lags", "rows"]),
    batch=st.integers(1, 4), budget=st.sampled_from([1, 2**14, None]), threads=st.sampled_from([1, 2]),
    split=st.booleans(), offset=st.sampled_from([0.0, 3.0]), seed=st.integers(0, 2**16),
)
def test_moments_equal_sliding_windows(n, c, k, extra_h, extra_w, centered, method, batch, budget, threads, split,
                                       offset, seed):
    """Any shape (k up to the image size), channels 1-4, centred or not, either pass, any chunk
    and band size (budget 1: one image and one image row at a time), one or two worker threads,
    images given at once or as a stream of uneven batches."""
    h, w = k + extra_h, k + extra_w
    images = np.random.default_rng(seed).normal(size=(n, c, h, w)) + offset
    source = [images[:1], images[1:]] if split else images
    with forced(method, budget, threads):
        stats = quiet_stats(source, k, centered=centered, batch_size=batch)
    moment, mean = sliding_moments(images, k, centered)
    assert stats.num_patches == n * (h - k + 1) * (w - k + 1) and stats.num_images == n
    assert rel_err(stats.second_moment, moment) < 1e-10
    assert rel_err(stats.mean, mean) < 1e-10


@pytest.mark.parametrize("method", ["lags", "rows"])
@pytest.mark.parametrize(
    "shape, k",
    [
        ((2, 3, 9, 9), 9),  # k equal to the image: one patch per image
        ((3, 2, 7, 30), 7),  # one patch row
        ((3, 2, 30, 7), 7),  # one patch column
        ((2, 1, 13, 13), 7),  # k > half the image: no row or column shared by every patch offset
        ((2, 4, 40, 45), 3),  # several column blocks in the row pass
        ((4, 3, 5, 5), 1),  # k = 1
        ((2, 1, 64, 64), 16),
    ],
)
def test_edge_shapes_both_passes(shape, k, method):
    images = np.random.default_rng(sum(shape) + k).uniform(-1, 2, size=shape)
    for centered in (False, True):
        with forced(method):
            stats = quiet_stats(images, k, centered=centered, batch_size=3)
        moment, mean = sliding_moments(images, k, centered)
        assert rel_err(stats.second_moment, moment) < 1e-12
        assert rel_err(stats.mean, mean) < 1e-12


def test_row_pass_reads_any_layout_and_dtype():
    """The row pass reads the input through its strides: channels-last and sliced tensors,
    uint8, bool, float32 and float64 all give the float64 numbers of the same pixels."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(5, 3, 20, 26), dtype=np.uint8)
    expected, _ = sliding_moments(pixels, 5, False)
    whole = torch.from_numpy(pixels)
    inputs = [pixels, pixels.astype(np.float32), whole.to(memory_format=torch.channels_last),
              whole.double().permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)]
    with forced("rows"):
        for images in inputs:
            assert rel_err(quiet_stats(images, 5).second_moment, expected) < 1e-13
        padded = torch.zeros(7, 4, 23, 30, dtype=torch.float64)
        padded[1:6, 1:, 2:22, 3:29] = whole.double()
        assert rel_err(quiet_stats(padded[1:6, 1:, 2:22, 3:29], 5).second_moment, expected) < 1e-13
        flags = pixels > 128
        expected_flags, _ = sliding_moments(flags.astype(np.float64), 5, False)
        assert rel_err(quiet_stats(flags, 5).second_moment, expected_flags) < 1e-13


def test_row_pass_centred_keeps_digits_under_a_large_offset():
    images = np.random.default_rng(4).normal(size=(6, 2, 30, 30))
    with forced("rows"):
        base = quiet_stats(images, 7, centered=True)
        shifted = quiet_stats(images + 1e4, 7, centered=True)
    assert rel_err(shifted.second_moment, base.second_moment) < 1e-10
    np.testing.assert_allclose(shifted.mean, base.mean + 1e4, rtol=1e-14)


def test_row_pass_deterministic_across_runs_and_close_across_threads():
    images = np.random.default_rng(5).normal(size=(70, 3, 24, 24))
    with forced("rows", row_budget=2**16, threads=2):
        first = quiet_stats(images, 5, batch_size=16)
        second = quiet_stats(images, 5, batch_size=16)
    with forced("rows", row_budget=2**16, threads=1):
        single = quiet_stats(images, 5, batch_size=16)
    np.testing.assert_array_equal(first.second_moment, second.second_moment)
    assert rel_err(first.second_moment, single.second_moment) < 1e-14


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_row_pass_nan_or_inf_pixels_raise_one_line(bad):
    images = np.random.default_rng(8).normal(size=(5, 2, 12, 12))
    images[3, 1, 2, 4] = bad
    with forced("rows"), pytest.raises(LinearCNNInputError, match=r"images 2 to 3 \(in images\[2:4\]\) contain 1 NaN or Inf") as info:
        patch_stats(images, 3, batch_size=2, device="cpu")
    assert "\n" not in str(info.value)
    with forced("rows", threads=2), pytest.raises(LinearCNNInputError, match=r"contain 1 NaN or Inf"):
        patch_stats(torch.from_numpy(images), 3, centered=True, batch_size=2, device="cpu")
    with forced("rows"), pytest.raises(LinearCNNInputError, match="overflow"):
        patch_stats(np.full((2, 1, 6, 6), 1e200), 2, device="cpu")


@pytest.mark.parametrize("method", ["lags", "rows"])
def test_operation_count_matches_the_plan(method):
    """The pass counts its own operations: n x `operations_per_image` (the neighbour pass with
    its maps kept, so without per-chunk tables)."""
    images = torch.from_numpy(np.random.default_rng(6).normal(size=(9, 3, 20, 22)))
    with forced(method, row_budget=2**17):
        moments = stream_moments(batches(images, 4)[0], 9, 5, centered=False, batch_size=4, device=torch.device("cpu"),
                                 progress=False)
    assert moments.method == method
    assert moments.operations == 9 * operations_per_image((3, 20, 22), 5, method)


def test_method_rule_and_row_plan():
    assert choose_method((3, 32, 32), 3) == "lags"
    assert choose_method((3, 224, 224), 11) == "rows" and choose_method((3, 224, 224), 3) == "rows"
    plan = row_plan(3, 224, 224, 11)
    assert plan.k - 1 + plan.phase * plan.blocks <= 224 - plan.k + 1  # the core lies in every patch's column range
    assert plan.edge_rows == tuple(range(10)) + tuple(range(214, 224))
    images, band = row_chunk(plan, 512, 32 * 2**20)
    assert (band + plan.k - 1) * plan.row_bytes(images) <= 32 * 2**20 and band >= plan.k
    narrow = row_plan(2, 8, 8, 5)  # no core columns: all strips
    assert narrow.blocks == 0 and narrow.strips[-1][:2] == (4, 8)
