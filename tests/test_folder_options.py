"""Folders as found: flat (unlabelled) folders, mixed sizes with `--image-size N` (short side to N,
centre crop), `--channels 1|3`, `--pad N` (zero after normalisation) and `--norm data|imagenet`,
for `stats | profile | fit | compare | data`; every output records the image size and normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from linearcnn.cli import main
from linearcnn.data import load_dataset
from linearcnn.measurement import IMAGENET_MEAN, IMAGENET_STD

SIZES = [(100, 80), (90, 120), (64, 64), (150, 200), (128, 64), (70, 70)]  # (width, height)


def smooth_rgb(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.cumsum(np.cumsum(rng.normal(size=(height, width, 3)), axis=0), axis=1)
    image -= image.min()
    return (255 * image / image.max()).astype(np.uint8)  # (H, W, 3)


@pytest.fixture()
def flat(tmp_path) -> Path:
    """A flat folder of mixed-size JPEGs (no class sub-folders) and one PNG kept for exact checks."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (width, height) in enumerate(SIZES):
        Image.fromarray(smooth_rgb(width, height, i)).save(folder / f"img{i}.jpg", quality=95)
    return folder


def run_json(argv, capsys) -> dict:
    code = main(argv + ["--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def layer_checkpoint(path: Path, channels: int = 3, kernel: int = 7) -> Path:
    torch.manual_seed(0)
    torch.save({"conv1.weight": torch.randn(8, channels, kernel, kernel)}, path)
    return path


def test_a_flat_folder_of_mixed_sizes_fits_at_an_image_size(flat, tmp_path, capsys):
    checkpoint = layer_checkpoint(tmp_path / "layer.pt")
    payload = run_json(["fit", "-c", str(checkpoint), "--data", f"folder:{flat}", "--image-size", "64",
                        "--bootstrap", "0"], capsys)
    assert payload["image_size"] == [64, 64] and payload["resize"] == 64 and payload["pad"] == 0
    assert payload["patch_shape"] == [3, 7, 7] and payload["normalization"]["preset"] == "data"
    assert np.isfinite(payload["correlation"])
    data = load_dataset(f"folder:{flat}", image_size=64)
    assert data.images.shape == (len(SIZES), 3, 64, 64) and data.labels is None and data.classes == []
    assert payload["normalization"]["mean"] == pytest.approx(data.channel_stats()[0].tolist(), rel=1e-9)
    assert main(["fit", "-c", str(checkpoint), "--data", f"folder:{flat}", "--image-size", "64"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "64x64 px" in out and "norm data" in out


def test_resize_is_short_side_then_centre_crop(flat):
    data = load_dataset(f"folder:{flat}", image_size=64)
    decoded = [np.asarray(Image.open(flat / f"img{i}.jpg").convert("RGB")).astype(np.float32) / 255 for i in (2, 4)]
    # 64x64 is kept as it is; 128 wide x 64 high has a short side of 64: only its centre columns are kept
    np.testing.assert_allclose(data.images[2], decoded[0].transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_allclose(data.images[4], decoded[1][:, 32:96].transpose(2, 0, 1), atol=1e-6)
    # a resized image keeps its mean brightness (bilinear resampling is an average)
    big = np.asarray(Image.open(flat / "img3.jpg").convert("RGB")).astype(np.float64) / 255  # 200 high x 150 wide
    top = (200 - 150) // 2
    centre = big[top : top + 150]  # the centre square, before shrinking
    assert abs(float(data.images[3].mean()) - centre.mean()) < 0.01


def test_mixed_sizes_without_an_image_size_say_how(flat, capsys):
    assert main(["data", f"folder:{flat}"]) == 2
    err = capsys.readouterr().err
    assert "--image-size" in err and len(err.strip().splitlines()) == 1
    summary = run_json(["data", f"folder:{flat}", "--image-size", "32", "--channels", "1"], capsys)
    assert summary["shape"] == [1, 32, 32] and summary["labelled"] is False


def test_channels_convert_by_luma(flat):
    colour = load_dataset(f"folder:{flat}", image_size=64)
    gray = load_dataset(f"folder:{flat}", image_size=64, channels=1)
    assert gray.images.shape == (len(SIZES), 1, 64, 64)
    rgb = np.asarray(Image.open(flat / "img2.jpg").convert("RGB")).astype(np.float64) / 255  # 64x64: no resize
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray.images[2, 0], luma, atol=1 / 255)  # Pillow rounds "L" to 8 bits
    builtin = load_dataset("builtin", limit=4)
    converted = load_dataset("builtin", limit=4, channels=1)
    expected = np.tensordot(np.array([0.299, 0.587, 0.114]), builtin.images.astype(np.float64), axes=([0], [1]))
    np.testing.assert_allclose(converted.images[:, 0], expected, atol=1e-6)
    np.testing.assert_array_equal(load_dataset(f"folder:{flat}", image_size=64, channels=3).images, colour.images)
    spread = load_dataset(f"folder:{flat}", image_size=64, channels=1)  # grey -> RGB repeats the plane
    np.savez(flat.parent / "gray.npz", images=(spread.images * 255).round().astype(np.uint8))
    repeated = load_dataset(f"npz:{flat.parent / 'gray.npz'}", channels=3).images
    assert repeated.shape == (len(SIZES), 3, 64, 64) and np.array_equal(repeated[:, 0], repeated[:, 2])
    assert load_dataset("builtin", limit=4, image_size=16).images.shape == (4, 3, 16, 16)


def independent_eigenvalues(images: np.ndarray, mean, std, pad: int) -> np.ndarray:
    """Eigenvalues (descending) of the 3x3 patch second moment of `images` (N, C, H, W) normalised
    by `mean`/`std`, then zero-padded by `pad`, computed here with unfold and numpy."""
    x = torch.tensor(images, dtype=torch.float64)
    x = (x - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    patches = torch.nn.functional.unfold(x, 3).transpose(1, 2).reshape(-1, x.shape[1] * 9).numpy()
    return np.linalg.eigvalsh(patches.T @ patches / patches.shape[0])[::-1]


def test_pad_and_norm_presets_match_an_independent_computation(flat, capsys):
    data = load_dataset(f"folder:{flat}", image_size=32)
    images = data.images.astype(np.float64)
    own_mean, own_std = data.channel_stats()
    padded = run_json(["stats", "--data", f"folder:{flat}", "--image-size", "32", "--pad", "2"], capsys)
    assert padded["image_size"] == [36, 36] and padded["pad"] == 2
    np.testing.assert_allclose(padded["eigenvalues"], independent_eigenvalues(images, own_mean, own_std, 2),
                               rtol=1e-6, atol=1e-9)
    imagenet = run_json(["stats", "--data", f"folder:{flat}", "--image-size", "32", "--norm", "imagenet"], capsys)
    assert imagenet["normalization"] == {"preset": "imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    np.testing.assert_allclose(imagenet["eigenvalues"], independent_eigenvalues(images, IMAGENET_MEAN, IMAGENET_STD, 0),
                               rtol=1e-6, atol=1e-9)


def test_options_reach_profile_and_compare(flat, tmp_path, capsys):
    one = layer_checkpoint(tmp_path / "one.pt", channels=1, kernel=3)
    two = layer_checkpoint(tmp_path / "two.pt", channels=1, kernel=3)
    common = ["--data", f"folder:{flat}", "--image-size", "24", "--channels", "1", "--pad", "1"]
    profile = run_json(["profile", "-c", str(one), *common], capsys)
    assert profile["image_size"] == [26, 26] and profile["pad"] == 1 and profile["patch_shape"] == [1, 3, 3]
    compared = run_json(["compare", str(one), str(two), *common], capsys)
    assert compared["image_size"] == [26, 26] and compared["normalization"]["preset"] == "data"
    np.testing.assert_allclose(np.diag(compared["correlation_matrix"]), 1.0)


def test_a_large_kernel_warns_and_bad_options_are_one_line(flat, tmp_path, capsys):
    checkpoint = layer_checkpoint(tmp_path / "layer.pt")
    assert main(["fit", "-c", str(checkpoint), "--data", f"folder:{flat}", "--image-size", "16", "--bootstrap", "0"]) == 0
    assert "larger than 1/4 of the 16x16 images" in capsys.readouterr().err
    gray = layer_checkpoint(tmp_path / "gray.pt", channels=1, kernel=3)
    for argv, words in [
        (["--norm", "imagenet", "--channels", "1"], "imagenet needs 3 channels"),
        (["--norm", "median"], "--norm"),
        (["--image-size", "0"], "--image-size 0"),
        (["--pad", "-1"], "--pad -1"),
    ]:
        assert main(["fit", "-c", str(gray), "--data", f"folder:{flat}", "--image-size", "16", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
