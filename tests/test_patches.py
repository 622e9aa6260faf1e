"""Patch statistics: exact against brute force, streaming, eigen-decomposition, files, errors."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import linearcnn.patches._stream as stream_module
from linearcnn.errors import LinearCNNInputError
from linearcnn.patches import PatchStats, dataset_patch_stats, patch_stats


def brute_force_moments(images: np.ndarray, k: int, centered: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Second moment (or covariance) and mean of all patches, by explicit loops over positions."""
    n, c, h, w = images.shape
    d = c * k * k
    total = np.zeros((d, d))
    total_sum = np.zeros(d)
    count = 0
    for i in range(n):
        for y in range(h - k + 1):
            for x in range(w - k + 1):
                p = images[i, :, y : y + k, x : x + k].astype(np.float64).ravel()  # (C, k, k) order
                total += np.outer(p, p)
                total_sum += p
                count += 1
    mean = total_sum / count
    moment = total / count
    if centered:
        moment = moment - np.outer(mean, mean)
    return moment, mean, count


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


SHAPES = [  # (N, C, k, H, W)
    (3, 3, 3, 8, 8),
    (2, 1, 1, 5, 4),
    (4, 2, 4, 6, 9),
    (2, 3, 5, 5, 7),  # k == H: one patch row
    (5, 4, 2, 3, 2),  # k == W
    (3, 1, 3, 3, 3),  # one patch per image
]


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_moments_equal_brute_force(shape, centered):
    n, c, k, h, w = shape
    images = np.random.default_rng(sum(shape)).normal(size=(n, c, h, w)) + 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny cases have fewer patches than dimensions
        stats = patch_stats(images, k, centered=centered, device="cpu")
    moment, mean, count = brute_force_moments(images, k, centered)
    assert stats.num_patches == count == n * (h - k + 1) * (w - k + 1)
    assert stats.second_moment.shape == (c * k * k, c * k * k)
    assert rel_err(stats.second_moment, moment) < 1e-13, (stats.second_moment, moment)
    np.testing.assert_allclose(stats.mean, mean, rtol=0, atol=1e-13)
    assert (stats.channels, stats.kernel_size, stats.centered, stats.num_images) == (c, k, centered, n)
    assert stats.image_size == (h, w)


@given(
    n=st.integers(1, 4), c=st.integers(1, 3), k=st.integers(1, 4), extra_h=st.integers(0, 4),
    extra_w=st.integers(0, 4), centered=st.booleans(), seed=st.integers(0, 2**16),
)
def test_moments_equal_unfold_property(n, c, k, extra_h, extra_w, centered, seed):
    """Any shape: equal to torch.nn.functional.unfold + a float64 matrix product."""
    h, w = k + extra_h, k + extra_w
    images = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 2, size=(n, c, h, w)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = patch_stats(images, k, centered=centered, batch_size=3, device="cpu")
    unfolded = torch.nn.functional.unfold(images, k).transpose(1, 2).reshape(-1, c * k * k).numpy()  # (M, d)
    mean = unfolded.mean(axis=0)
    expected = unfolded.T @ unfolded / unfolded.shape[0]
    if centered:
        expected = expected - np.outer(mean, mean)
    assert rel_err(stats.second_moment, expected) < 1e-12
    np.testing.assert_allclose(stats.mean, mean, rtol=0, atol=1e-12)


def test_streamed_uneven_batches_equal_all_at_once():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(14, 3, 9, 7)).astype(np.float32)
    whole = patch_stats(images, 3, centered=True, device="cpu")
    pieces = [images[:1], torch.from_numpy(images[1:5]), images[5:5], images[5:7], torch.from_numpy(images[7:])]
    streamed = patch_stats(iter(pieces), 3, centered=True, batch_size=4, device="cpu")
    assert streamed.num_patches == whole.num_patches and streamed.num_images == 14
    assert rel_err(streamed.second_moment, whole.second_moment) < 1e-13
    np.testing.assert_allclose(streamed.mean, whole.mean, rtol=0, atol=1e-14)
    np.testing.assert_allclose(streamed.eigenvalues, whole.eigenvalues, rtol=1e-12)


def test_per_chunk_reduction_and_small_chunks_equal_default(monkeypatch):
    """The path for large images (maps reduced after every chunk) gives the same numbers."""
    images = np.random.default_rng(2).normal(size=(40, 2, 10, 8))
    default = patch_stats(images, 4, device="cpu")
    monkeypatch.setattr(stream_module, "_MAP_BUDGET_BYTES", 0)
    monkeypatch.setattr(stream_module, "_CPU_WINDOW_VALUES", 1)  # 16-image chunks
    reduced = patch_stats(images, 4, device="cpu")
    assert rel_err(reduced.second_moment, default.second_moment) < 1e-13
    brute, _, _ = brute_force_moments(images, 4, False)
    assert rel_err(reduced.second_moment, brute) < 1e-13


def test_integer_and_float32_inputs_match_float64():
    pixels = np.random.default_rng(3).integers(0, 256, size=(3, 3, 6, 6), dtype=np.uint8)
    as_uint8 = patch_stats(pixels, 2, device="cpu")
    as_float = patch_stats(pixels.astype(np.float64), 2, device="cpu")
    as_uint16 = patch_stats(pixels.astype(np.uint16), 2, device="cpu")
    flipped = patch_stats(np.flip(pixels, axis=0), 2, device="cpu")  # negative strides; same patch set
    for other in (as_uint8, as_uint16, flipped):
        assert rel_err(other.second_moment, as_float.second_moment) < 1e-14


def test_centered_is_shift_invariant_without_cancellation():
    """Covariance of images + 1e4 equals that of the images: the shift trick keeps the digits
    (a plain E[pp^T] - m m^T would lose about 8 of them here)."""
    images = np.random.default_rng(4).normal(size=(6, 2, 8, 8))
    base = patch_stats(images, 3, centered=True, device="cpu")
    shifted = patch_stats(images + 1e4, 3, centered=True, device="cpu")
    assert rel_err(shifted.second_moment, base.second_moment) < 1e-10
    np.testing.assert_allclose(shifted.mean, base.mean + 1e4, rtol=1e-14)
    np.testing.assert_allclose(shifted.eigenvalues, base.eigenvalues, rtol=1e-9)


def test_eigenvectors_orthonormal_descending_and_reconstruct():
    images = np.random.default_rng(5).normal(size=(5, 3, 8, 8)).cumsum(axis=2)  # correlated pixels
    stats = patch_stats(images, 3, centered=False, device="cpu")
    u, lam = stats.eigenvectors, stats.eigenvalues
    d = 27
    np.testing.assert_allclose(u.T @ u, np.eye(d), atol=1e-12)
    assert np.all(np.diff(lam) <= 0) and np.all(lam >= 0)
    assert rel_err(u @ np.diag(lam) @ u.T, stats.second_moment) < 1e-12
    # Eigenvalues equal the variances of the patches along the eigenvectors (PAPER Sec. 1).
    unfolded = torch.nn.functional.unfold(torch.from_numpy(images), 3).transpose(1, 2).reshape(-1, d).numpy()
    np.testing.assert_allclose(np.mean((unfolded @ u) ** 2, axis=0), lam, rtol=1e-10)
    # Sign convention: the largest-magnitude entry of each eigenvector is positive.
    assert np.all(u[np.argmax(np.abs(u), axis=0), np.arange(d)] > 0)
    np.testing.assert_allclose(stats.stds, np.sqrt(lam))


def test_save_load_round_trip(tmp_path):
    images = np.random.default_rng(6).normal(size=(4, 3, 7, 7))
    stats = patch_stats(images, 3, centered=True, device="cpu")
    stats.channel_mean = np.array([0.1, 0.2, 0.3])
    stats.channel_std = np.array([1.0, 2.0, 3.0])
    stats.data_spec = "builtin:4"
    path = tmp_path / "stats.npz"
    stats.save(path)
    loaded = PatchStats.load(path)
    for name in ("eigenvalues", "eigenvectors", "second_moment", "mean", "channel_mean", "channel_std"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    for name in ("num_patches", "channels", "kernel_size", "centered", "data_spec", "num_images", "image_size"):
        assert getattr(loaded, name) == getattr(stats, name)
    assert loaded.extra["versions"]["numpy"] == np.__version__
    # Without normalisation and under a name without the .npz suffix.
    plain = patch_stats(images, 2, device="cpu")
    other = tmp_path / "stats.bin"
    plain.save(other)
    again = PatchStats.load(other)
    assert again.channel_mean is None and again.channel_std is None
    np.testing.assert_array_equal(again.second_moment, plain.second_moment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.bin", "stats.npz"]  # no temporaries left


def _good_arrays(tmp_path):
    stats = patch_stats(np.random.default_rng(7).normal(size=(2, 1, 5, 5)), 2, device="cpu")
    path = tmp_path / "good.npz"
    stats.save(path)
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda a: a.pop("eigenvectors"), "lacks eigenvectors"),
        (lambda a: a.update(meta=np.array('{"format": "something-else"}')), "format"),
        (lambda a: a.update(meta=np.array("not json")), "metadata"),
        (lambda a: a.update(eigenvalues=a["eigenvalues"][:2]), "shape"),
        (lambda a: a.update(mean=np.full(4, np.nan)), "NaN"),
        (lambda a: a.update(eigenvalues=a["eigenvalues"][::-1].copy()), "descending"),
        (lambda a: a.update(channel_std=np.ones(3)), "channel_std"),
    ],
)
def test_load_rejects_bad_files(tmp_path, mutate, words):
    arrays = _good_arrays(tmp_path)
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(LinearCNNInputError, match=words) as info:
        PatchStats.load(path)
    assert "\n" not in str(info.value)


def test_load_rejects_garbage_truncated_pickled_and_missing(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    arrays = _good_arrays(tmp_path)
    good = tmp_path / "good.npz"
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    pickled = tmp_path / "pickled.npz"
    arrays["mean"] = np.array([{"a": 1}], dtype=object)
    np.savez(pickled, **arrays)
    for path, words in [(garbage, "not a readable"), (truncated, "not a readable"), (pickled, "holds Python objects"),
                        (tmp_path / "absent.npz", "does not exist"), (tmp_path, "not a file")]:
        with pytest.raises(LinearCNNInputError, match=words):
            PatchStats.load(path)
    assert zipfile.is_zipfile(good)


def test_save_checks_the_path_first(tmp_path):
    stats = patch_stats(np.ones((1, 1, 3, 3)) + np.arange(9).reshape(3, 3), 1, device="cpu")
    with pytest.raises(LinearCNNInputError, match="directory"):
        stats.save(tmp_path)
    with pytest.raises(LinearCNNInputError, match="does not exist"):
        stats.save(tmp_path / "missing" / "s.npz")


@pytest.mark.parametrize(
    "images, kernel, words",
    [
        (np.zeros((2, 3, 4, 4)), 5, "kernel_size 5 is larger than the 4x4 images"),
        (np.zeros((2, 3, 8, 4)), 5, "larger than the 8x4 images"),
        (np.zeros((2, 3, 4, 4)), 0, "kernel_size must be an integer >= 1, got 0"),
        (np.zeros((2, 3, 4, 4)), 2.5, "kernel_size must be an integer"),
        (np.zeros((3, 4, 4)), 2, "3-D"),
        (np.zeros((2, 2, 3, 4, 4)), 2, "5-D"),
        (np.zeros((0, 3, 4, 4)), 2, "no images"),
        (iter([]), 2, "no images"),
        ("images.npy", 2, "expected an (N, C, H, W) array"),
        (np.zeros((2, 1, 4, 4), dtype=complex), 2, "real numbers"),
        ([np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 5, 4))], 2, "batch 1 of images has images of shape"),
        ([np.zeros((2, 1, 4, 4)), np.zeros((1, 4, 4))], 2, "batch 1 of images has shape"),
    ],
)
def test_bad_input_raises_one_line(images, kernel, words):
    with pytest.raises(LinearCNNInputError) as info:
        patch_stats(images, kernel, device="cpu")
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels_raise(bad):
    images = np.random.default_rng(8).normal(size=(5, 2, 6, 6))
    images[3, 1, 2, 4] = bad
    with pytest.raises(LinearCNNInputError, match=r"images 2 to 3 \(in images\[2:4\]\) contain 1 NaN or Inf"):
        patch_stats(images, 3, batch_size=2, device="cpu")
    with pytest.raises(LinearCNNInputError, match=r"images 0 to 4 .* contain 1 NaN or Inf"):
        patch_stats(torch.from_numpy(images), 3, centered=True, device="cpu")


def test_worker_threads_deterministic_and_restored():
    """Several CPU threads: same numbers as one thread (to rounding), bitwise repeatable, and
    torch's thread setting is restored, also after an error."""
    images = np.random.default_rng(12).normal(size=(40, 3, 10, 10))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = patch_stats(images, 3, batch_size=8, device="cpu")
        torch.set_num_threads(3)
        first = patch_stats(images, 3, batch_size=8, device="cpu")
        second = patch_stats(images, 3, batch_size=8, device="cpu")
        assert torch.get_num_threads() == 3
        np.testing.assert_array_equal(first.second_moment, second.second_moment)
        assert rel_err(first.second_moment, single.second_moment) < 1e-14
        bad = images.copy()
        bad[-1, 0, 0, 0] = np.nan
        with pytest.raises(LinearCNNInputError, match="images 32 to 39"):
            patch_stats(bad, 3, batch_size=8, device="cpu")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(previous)


def test_huge_pixels_overflow_is_an_error():
    with pytest.raises(LinearCNNInputError, match="overflow"):
        patch_stats(np.full((2, 1, 4, 4), 1e200), 2, device="cpu")


def test_bad_arguments_raise():
    images = np.zeros((1, 1, 4, 4))
    with pytest.raises(LinearCNNInputError, match="batch_size"):
        patch_stats(images, 2, batch_size=0)
    with pytest.raises(LinearCNNInputError, match="device 'tpu"):
        patch_stats(images, 2, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LinearCNNInputError, match="CUDA is not available"):
            patch_stats(images, 2, device="cuda")
    with pytest.raises(LinearCNNInputError, match="centered"):
        patch_stats(images, 2, centered="yes")


def test_constant_images_warn_and_stay_finite():
    images = np.full((3, 2, 6, 6), 0.5)
    with pytest.warns(UserWarning, match="rank-deficient"):
        uncentred = patch_stats(images, 3, device="cpu")
    assert np.all(np.isfinite(uncentred.eigenvalues)) and np.all(np.isfinite(uncentred.eigenvectors))
    np.testing.assert_allclose(uncentred.eigenvalues[0], 0.25 * 18)  # rank one: 0.25 * 11^T
    np.testing.assert_allclose(uncentred.eigenvalues[1:], 0, atol=1e-14)
    with pytest.warns(UserWarning, match="all patch moments are zero"):
        centred = patch_stats(images, 3, centered=True, device="cpu")
    assert np.all(centred.eigenvalues == 0) and np.all(np.isfinite(centred.eigenvectors))
    np.testing.assert_allclose(centred.eigenvectors.T @ centred.eigenvectors, np.eye(18), atol=1e-12)


def test_fewer_patches_than_dimensions_warns():
    images = np.random.default_rng(9).normal(size=(2, 3, 3, 4))  # 2 x 1 x 2 = 4 patches, d = 27
    with pytest.warns(UserWarning, match="only 4 patches for 27 dimensions"):
        stats = patch_stats(images, 3, device="cpu")
    assert stats.num_patches == 4
    assert np.all(np.isfinite(stats.eigenvalues)) and np.all(stats.eigenvalues >= 0)
    assert np.sum(stats.eigenvalues > 1e-12) == 4


def test_progress_bar_gives_the_same_numbers(capsys):
    images = np.random.default_rng(10).normal(size=(6, 1, 6, 6))
    quiet = patch_stats(images, 2, device="cpu", batch_size=2)
    loud = patch_stats(images, 2, device="cpu", progress=True, batch_size=2)
    np.testing.assert_array_equal(loud.second_moment, quiet.second_moment)
    assert capsys.readouterr().out == ""  # the bar never writes to stdout


def test_dataset_patch_stats_normalises_like_training():
    from linearcnn.data import ImageDataset, normalize_images

    rng = np.random.default_rng(11)
    images = rng.uniform(0, 1, size=(5, 3, 7, 6)).astype(np.float32)
    images[:, 1] *= 0.3
    dataset = ImageDataset(images, None, [], "test:tiny", "five random images")
    stats = dataset_patch_stats(dataset, 3, batch_size=2, device="cpu")
    mean = images.astype(np.float64).mean(axis=(0, 2, 3))
    std = images.astype(np.float64).std(axis=(0, 2, 3))
    np.testing.assert_allclose(stats.channel_mean, mean, rtol=1e-10)
    np.testing.assert_allclose(stats.channel_std, std, rtol=1e-10)
    assert stats.data_spec == "test:tiny" and not stats.centered
    expected, _, _ = brute_force_moments(normalize_images(images, mean, std), 3, False)
    assert rel_err(stats.second_moment, expected) < 1e-12
    with pytest.raises(LinearCNNInputError, match="kernel_size 8 is larger than the 7x6 images"):
        dataset_patch_stats(dataset, 8, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    images = torch.randn(37, 3, 16, 16)
    cpu = patch_stats(images, 5, centered=True, device="cpu")
    gpu = patch_stats(images.cuda(), 5, centered=True, device="cuda", batch_size=16)
    assert rel_err(gpu.second_moment, cpu.second_moment) < 1e-12
    np.testing.assert_allclose(gpu.eigenvalues, cpu.eigenvalues, rtol=1e-10)


def test_load_checks_declared_array_sizes_before_allocating(tmp_path):
    # A few bytes that declare 1e11 float64 elements used to make numpy try to allocate 800 GB.
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 1_000_000)})
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr("second_moment.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(LinearCNNInputError, match=r"declares shape \(100000, 1000000\).*expected at most"):
        PatchStats.load(bomb)
    short = tmp_path / "short.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (3, 3)})
    with zipfile.ZipFile(short, "w") as archive:
        archive.writestr("second_moment.npy", header.getvalue() + b"\0" * 16)  # 16 bytes, not 72
    with pytest.raises(LinearCNNInputError, match="holds 16 bytes; expected 72"):
        PatchStats.load(short)
