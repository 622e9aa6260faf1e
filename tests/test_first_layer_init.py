"""First-layer initialisers (`linearcnn train --first-layer-init`): the step-0 layer of every
architecture has the requested energy profile, measured independently (projections on the
eigenvectors of patch moments computed here with numpy), the default init's norm, a seeded random
orientation; frozen-whitening stays put; what was done is recorded; bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from linearcnn.errors import LinearCNNInputError
from linearcnn.first_layer_init import (
    WHITENING_EPS,
    equal_norm_frame,
    frame_residual,
    parse_first_layer_init,
    profile_filters,
)
from linearcnn.models import ARCHS, build_seeded_model, first_layer
from linearcnn.train import TrainConfig, load_training_checkpoint, train


def smooth_dataset(n: int = 12, channels: int = 3, size: int = 12, seed: int = 0, smoothing: int = 2, classes: int = 3):
    """Images with correlated neighbouring pixels (random walks along both axes): an anisotropic patch spectrum."""
    from linearcnn.data import ImageDataset

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, channels, size + smoothing, size + smoothing))
    for axis in (2, 3):
        images = np.cumsum(images, axis=axis)
    images = images[:, :, smoothing:, smoothing:]
    images = images + 0.3 * rng.standard_normal((channels, 1, 1))  # channels correlated with each other
    labels = np.arange(n) % classes
    return ImageDataset(images.astype(np.float32), labels, [f"c{i}" for i in range(classes)], "synthetic", "smooth test images")


def independent_moments(dataset, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the uncentred second moment of all stride-1
    patches of the per-channel normalised images, by numpy alone."""
    images = np.asarray(dataset.images, dtype=np.float64)
    mean = images.mean(axis=(0, 2, 3), keepdims=True)
    std = images.std(axis=(0, 2, 3), keepdims=True)
    normalised = (images - mean) / std
    windows = sliding_window_view(normalised, (kernel, kernel), axis=(2, 3))  # (N, C, H', W', k, k)
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * kernel * kernel)
    moment = patches.T @ patches / patches.shape[0]
    values, vectors = np.linalg.eigh(moment)
    return values[::-1].clip(min=0), vectors[:, ::-1]


def measured_profile(weights: torch.Tensor, eigenvectors: np.ndarray) -> np.ndarray:
    w = weights.detach().double().reshape(weights.shape[0], -1).numpy()
    return np.sqrt(np.mean((w @ eigenvectors) ** 2, axis=0))


def first_layer_at_step0(arch: str, init: str, dataset, *, seed: int = 0, width: int = 8, **extra):
    config = TrainConfig(arch=arch, steps=1, lr=1e-4 if arch.startswith("linear") else 0.01, batch_size=4, seed=seed,
                         width=width, test=False, first_layer_init=init, **extra)
    return train(config, dataset=dataset)


def closed_form(init: str, eigenvalues: np.ndarray, tau: float | None = None) -> np.ndarray:
    mu = eigenvalues + WHITENING_EPS * eigenvalues.mean()
    if "whitening" in init:
        return 1 / np.sqrt(mu)
    return -np.expm1(-tau * mu) / np.sqrt(mu)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("init", ["whitening", "formula", "formula:0.7"])
def test_every_architecture_starts_with_the_requested_profile(arch, init):
    dataset = smooth_dataset(size=14 if arch == "resnet18" else 10)
    result = first_layer_at_step0(arch, init, dataset)
    kernel = result.initial_first_layer.shape[-1]
    eigenvalues, eigenvectors = independent_moments(dataset, kernel)
    profile = measured_profile(result.initial_first_layer, eigenvectors)
    tau = 0.7 if init == "formula:0.7" else result.config.lr * 1  # predicted: lr x the one planned step
    expected = closed_form(init, eigenvalues, tau)
    np.testing.assert_allclose(profile / profile.max(), expected / expected.max(), rtol=2e-4, atol=2e-5)
    correlation = np.corrcoef(profile, 1 / np.sqrt(eigenvalues) if "whitening" in init else expected)[0, 1]
    assert correlation >= 0.999
    default = first_layer(build_seeded_model(arch, 3, 3, seed=0, width=8, kernel_size=kernel)).weight
    assert float(result.initial_first_layer.norm()) == pytest.approx(float(default.detach().norm()), rel=1e-5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels=st.integers(1, 3), width=st.integers(1, 40), seed=st.integers(0, 2**32), kernel=st.sampled_from([2, 3]),
       smoothing=st.integers(1, 4), tau=st.floats(1e-3, 1e3))
def test_profiles_hold_on_drawn_data(channels, width, seed, kernel, smoothing, tau):
    """Any filter count (below, at and above the patch dimension), channels, kernels and spectra."""
    dataset = smooth_dataset(n=6, channels=channels, size=8, seed=seed % 1000, smoothing=smoothing)
    eigenvalues, eigenvectors = independent_moments(dataset, kernel)
    for init in ("whitening", f"formula:{tau!r}"):
        result = first_layer_at_step0("vgg11-bn", init, dataset, seed=seed, width=width, kernel_size=kernel)
        profile = measured_profile(result.initial_first_layer, eigenvectors)
        expected = closed_form(init, eigenvalues, tau)
        np.testing.assert_allclose(profile / profile.max(), expected / expected.max(), rtol=1e-3, atol=1e-5)


def test_whitening_bank_whitens_the_patches():
    """K = d filters: the outputs' covariance over the patches is a multiple of the identity (up to the ridge)."""
    dataset = smooth_dataset(channels=1, size=16)
    result = first_layer_at_step0("vgg11-bn", "whitening", dataset, width=9)
    eigenvalues, eigenvectors = independent_moments(dataset, 3)
    moment = eigenvectors @ np.diag(eigenvalues) @ eigenvectors.T
    w = result.initial_first_layer.double().reshape(9, -1).numpy()
    outputs = w @ moment @ w.T
    ridge = eigenvalues / (eigenvalues + WHITENING_EPS * eigenvalues.mean())
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(outputs)) / outputs.trace() * 9, np.sort(ridge) / ridge.mean(), rtol=1e-4)


def test_orientation_is_random_per_seed_and_reproducible():
    dataset = smooth_dataset()
    a = first_layer_at_step0("vgg11-bn", "whitening", dataset, seed=1).initial_first_layer
    b = first_layer_at_step0("vgg11-bn", "whitening", dataset, seed=1).initial_first_layer
    c = first_layer_at_step0("vgg11-bn", "whitening", dataset, seed=2).initial_first_layer
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)
    # the same energy profile though (each at its own seed's default-init norm)
    _, vectors = independent_moments(dataset, 3)
    pa, pc = measured_profile(a, vectors), measured_profile(c, vectors)
    np.testing.assert_allclose(pa / pa.max(), pc / pc.max(), rtol=1e-4)


@pytest.mark.parametrize("filters,dim", [(4, 27), (9, 9), (40, 27), (1, 5), (26, 27)])
def test_frames_have_equal_column_norms_and_are_tight(filters, dim):
    frame = equal_norm_frame(filters, dim, np.random.default_rng(3))
    np.testing.assert_allclose(np.linalg.norm(frame, axis=0), 1.0, rtol=1e-12)
    if filters > 1:
        assert frame_residual(frame) < 1e-6  # the alternating projections stop at FRAME_TOLERANCE or FRAME_ROUNDS
    profile = np.linspace(1, 3, dim)
    basis, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((dim, dim)))
    weights, _ = profile_filters(profile, basis, filters, np.random.default_rng(5))
    measured = np.sqrt(np.mean((weights @ basis) ** 2, axis=0))
    np.testing.assert_allclose(measured / measured.max(), profile / profile.max(), rtol=1e-10)


def test_frozen_whitening_stays_put_and_the_rest_trains(tmp_path):
    dataset = smooth_dataset(n=16)
    config = TrainConfig(arch="vgg11-bn", steps=3, batch_size=8, width=8, test=False, first_layer_init="frozen-whitening",
                         out=str(tmp_path / "run"))
    result = train(config, dataset=dataset)
    assert result.config.freeze_first_layer
    assert torch.equal(first_layer(result.model).weight.detach().cpu(), result.initial_first_layer)
    whitened = first_layer_at_step0("vgg11-bn", "whitening", dataset, width=8).initial_first_layer
    assert torch.equal(result.initial_first_layer, whitened)
    trained = first_layer_at_step0("vgg11-bn", "default", dataset, width=8).model
    assert not torch.equal(result.model.state_dict()["classifier.weight"], trained.state_dict()["classifier.weight"])
    checkpoint = load_training_checkpoint(result.checkpoint_path)
    record = checkpoint["first_layer"]["init"]
    assert record["name"] == "frozen-whitening" and record["frozen"] and record["eps_relative"] == WHITENING_EPS
    assert record["patch_stats"]["num_patches"] == 16 * 10 * 10
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["first_layer_init"]["name"] == "frozen-whitening"


def test_formula_tau_is_predicted_from_the_planned_steps(tmp_path):
    dataset = smooth_dataset(n=20)
    config = TrainConfig(arch="vgg11-bn", epochs=3, batch_size=8, width=8, lr=0.05, test=False, first_layer_init="formula",
                         out=str(tmp_path / "a"))
    record = load_training_checkpoint(train(config, dataset=dataset).checkpoint_path)["first_layer"]["init"]
    assert record["planned_steps"] == 3 * 3 and record["tau"] == pytest.approx(0.05 * 9) and record["tau_source"] == "predicted"
    capped = TrainConfig(arch="vgg11-bn", until_train_acc=1.0, max_epochs=2, batch_size=10, width=8, lr=0.05, test=False,
                         first_layer_init="formula:4", out=str(tmp_path / "b"))
    record = load_training_checkpoint(train(capped, dataset=dataset).checkpoint_path)["first_layer"]["init"]
    assert record["tau"] == 4.0 and record["tau_source"] == "given"


def test_resume_keeps_the_initialisation(tmp_path):
    dataset = smooth_dataset(n=16)
    base = {"arch": "resnet20", "batch_size": 8, "width": 8, "test": False, "first_layer_init": "formula:2", "out": str(tmp_path / "r")}
    once = train(TrainConfig(steps=4, **base), dataset=dataset)
    train(TrainConfig(steps=2, overwrite=True, **base), dataset=dataset)
    resumed = train(TrainConfig(steps=4, resume=True, **base), dataset=dataset)
    assert torch.equal(resumed.initial_first_layer, once.initial_first_layer)
    torch.testing.assert_close(first_layer(resumed.model).weight, first_layer(once.model).weight)


def test_init_stats_file_is_used_and_must_fit(tmp_path):
    from linearcnn.patches import dataset_patch_stats

    dataset = smooth_dataset()
    other = smooth_dataset(seed=9, smoothing=4)
    stats = dataset_patch_stats(other, 3)
    stats.save(tmp_path / "stats.npz")
    result = first_layer_at_step0("vgg11-bn", "whitening", dataset, init_stats=str(tmp_path / "stats.npz"))
    eigenvalues, eigenvectors = independent_moments(other, 3)
    profile = measured_profile(result.initial_first_layer, eigenvectors)
    np.testing.assert_allclose(profile / profile.max(), closed_form("whitening", eigenvalues) / closed_form("whitening", eigenvalues).max(),
                               rtol=1e-3)
    dataset_patch_stats(smooth_dataset(channels=1), 3).save(tmp_path / "gray.npz")
    with pytest.raises(LinearCNNInputError, match="1-channel 3x3 patches; the first layer has 3-channel 3x3"):
        first_layer_at_step0("vgg11-bn", "whitening", dataset, init_stats=str(tmp_path / "gray.npz"))


@pytest.mark.parametrize("text,message", [
    ("orthogonal", "first_layer_init 'orthogonal' is not valid; expected default, whitening, formula"),
    ("formula:-1", "tau must be a positive finite number, got '-1'"),
    ("formula:nan", "tau must be a positive finite number"),
    ("formula:", "tau must be a positive finite number, got ''"),
    ("whitening:3", "first_layer_init 'whitening:3' is not valid"),
])
def test_bad_names_are_refused(text, message):
    with pytest.raises(LinearCNNInputError, match=message.replace("(", r"\(")):
        parse_first_layer_init(text)
    with pytest.raises(LinearCNNInputError):
        TrainConfig(first_layer_init=text).validate()


def test_config_combinations_are_checked():
    with pytest.raises(LinearCNNInputError, match="init_stats is read by a whitening or formula"):
        TrainConfig(init_stats="x.npz").validate()
    with pytest.raises(LinearCNNInputError, match="first_layer_init frozen-whitening with arch linear leaves nothing to train"):
        TrainConfig(arch="linear", first_layer_init="frozen-whitening").validate()


@pytest.mark.parametrize("args,expected", [
    (["--first-layer-init", "formula:-2"], "--first-layer-init 'formula:-2': tau must be a positive finite number"),
    (["--first-layer-init", "pca"], "--first-layer-init 'pca' is not valid"),
    (["--init-stats", "gray.npz", "--first-layer-init", "whitening"],
     "--init-stats 'gray.npz' holds statistics of 1-channel 3x3 patches; the first layer has 3-channel 3x3 filters"),
    (["--init-stats", "missing.npz", "--first-layer-init", "whitening"], "missing.npz"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, expected):
    from linearcnn.patches import dataset_patch_stats

    dataset_patch_stats(smooth_dataset(channels=1), 3).save(tmp_path / "gray.npz")
    done = subprocess.run(
        [sys.executable, "-m", "linearcnn", "train", "--arch", "vgg11-bn", "--width", "4", "--limit", "20", "--steps", "1",
         "--out", str(tmp_path / "out"), "-q", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (Path(tmp_path) / "out" / "checkpoint.pt").exists()
