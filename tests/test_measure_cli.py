"""End to end: `linearcnn stats | profile | fit | compare` on small data and checkpoints made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from linearcnn.cli import main


def write_npz_data(path: Path, n: int = 64, channels: int = 3, size: int = 12, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    # Smooth-ish random images: cumulative sums give a decaying spectrum, like natural images.
    images = np.cumsum(np.cumsum(rng.normal(size=(n, size, size, channels)), axis=1), axis=2)
    images = (images - images.min()) / (images.max() - images.min())
    np.savez(path, images=(images * 255).astype(np.uint8), labels=rng.integers(0, 4, size=n))
    return f"npz:{path}"


class TinyNet(nn.Module):
    def __init__(self, channels: int = 3, width: int = 16, kernel: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, kernel)
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        return self.head(self.stem(x).mean(dim=(2, 3)))


@pytest.fixture()
def setup(tmp_path):
    data = write_npz_data(tmp_path / "data.npz")
    torch.manual_seed(0)
    initial = TinyNet()
    trained = TinyNet()
    trained.load_state_dict(initial.state_dict())
    with torch.no_grad():
        trained.stem.weight.add_(0.3 * torch.randn_like(trained.stem.weight))
    init_path, ckpt_path = tmp_path / "init.pt", tmp_path / "trained.pt"
    torch.save(initial.state_dict(), init_path)
    torch.save({"model_state_dict": trained.state_dict(), "epoch": 3}, ckpt_path)
    return data, ckpt_path, init_path, trained


def run_json(argv, capsys):
    code = main(argv + ["--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def independent_patch_pca(data: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the second moment of all 3x3 patches of the
    normalised images, computed here with unfold and numpy (ddof=0 channel std, as the package)."""
    images = np.load(Path(data[4:]))["images"].astype(np.float64) / 255  # (N, H, W, C)
    x = torch.tensor(images).permute(0, 3, 1, 2)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), correction=0)
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    patches = torch.nn.functional.unfold(x, 3).transpose(1, 2).reshape(-1, 27).numpy()
    second = patches.T @ patches / patches.shape[0]
    mu, u = np.linalg.eigh(second)
    return mu[::-1], u[:, ::-1]


def rms_profile(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """e_i = sqrt(mean_k (w_k . u_i)^2), max-normalised (energy.py's definition)."""
    w = weights.reshape(len(weights), -1)  # (K, 27)
    profile = np.sqrt(np.mean((w @ u) ** 2, axis=0))
    return profile / profile.max()


def test_fit_json_has_required_fields_and_matches_independent_profile(setup, capsys, tmp_path):
    data, ckpt, _, trained = setup
    plot = tmp_path / "fit.png"
    out = run_json(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "20", "--plot", str(plot)], capsys)
    for key in ["layer", "filters", "patch_shape", "correlation", "tau", "profile", "formula_profile",
                "init_subtracted", "data", "whitening", "correlation_ci95"]:
        assert key in out
    assert out["layer"] == "stem" and out["filters"] == 16 and out["patch_shape"] == [3, 3, 3]
    assert out["init_subtracted"] is False and out["data"] == data
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Independent check of the profile: our own patch moments (unfold) and projection.
    stats = run_json(["stats", "--data", data, "--kernel", "3"], capsys)
    mu, u = independent_patch_pca(data)
    np.testing.assert_allclose(stats["eigenvalues"], mu, rtol=1e-6, atol=1e-12)  # measured: 8.5e-8
    w = trained.stem.weight.detach().double().numpy()
    # The eigenvectors carry the moments' rounding divided by the eigenvalue gaps (smallest relative
    # gap 0.4% here): measured agreement 1.4e-6.
    np.testing.assert_allclose(np.asarray(out["profile"]), rms_profile(w, u), rtol=5e-6, atol=1e-9)


def test_fit_with_init_checkpoint_subtracts_initial_weights(setup, capsys):
    data, ckpt, init, trained = setup
    sub = run_json(["fit", "--checkpoint", str(ckpt), "--data", data, "--init-checkpoint", str(init),
                    "--bootstrap", "0"], capsys)
    assert sub["init_subtracted"] is True
    initial = torch.load(init, weights_only=True)["stem.weight"].double().numpy()  # (16, 3, 3, 3)
    delta = trained.stem.weight.detach().double().numpy() - initial
    assert np.abs(delta).max() > 0.1  # the change is not negligible next to the weights
    _, u = independent_patch_pca(data)
    np.testing.assert_allclose(np.asarray(sub["profile"]), rms_profile(delta, u), rtol=5e-6, atol=1e-9)  # measured: 8e-7
    raw = run_json(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "0"], capsys)
    assert np.max(np.abs(np.asarray(raw["profile"]) - rms_profile(delta, u))) > 1e-2  # the check can tell them apart


def test_fit_raw_two_parameter_fits_at_least_as_well(setup, capsys):
    data, ckpt, _, _ = setup
    one = run_json(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "0"], capsys)
    two = run_json(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "0", "--raw"], capsys)
    assert two["family"] == "raw_gradient_flow"
    assert two["correlation"] >= one["correlation"] - 1e-9


def test_human_output_is_a_table(setup, capsys):
    data, ckpt, _, _ = setup
    assert main(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert "correlation" in text and "stem" in text and "tau" in text


def test_compare_writes_heatmap_and_json(setup, capsys, tmp_path):
    data, ckpt, init, _ = setup
    heat, out = tmp_path / "heat.png", tmp_path / "cmp.json"
    res = run_json(["compare", str(ckpt), str(init), str(ckpt), "--data", data, "--plot", str(heat), "--out", str(out)], capsys)
    matrix = np.asarray(res["correlation_matrix"])
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T)
    assert matrix[0, 2] == pytest.approx(1.0)
    assert heat.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(out.read_text())["correlation_matrix"] == res["correlation_matrix"]


def test_profile_and_stats_with_saved_stats(setup, capsys, tmp_path):
    data, ckpt, _, _ = setup
    saved = tmp_path / "stats.npz"
    assert main(["stats", "--data", data, "--kernel", "3", "--out", str(saved)]) == 0
    capsys.readouterr()
    a = run_json(["profile", "--checkpoint", str(ckpt), "--stats", str(saved)], capsys)
    b = run_json(["profile", "--checkpoint", str(ckpt), "--data", data], capsys)
    np.testing.assert_allclose(a["profile"], b["profile"], rtol=1e-10)


@pytest.mark.parametrize(
    "argv_fn, words",
    [
        (lambda d, c, t: ["fit", "--checkpoint", str(t / "missing.pt"), "--data", d], "missing.pt"),
        (lambda d, c, t: ["fit", "--checkpoint", str(t), "--data", d], "directory"),
        (lambda d, c, t: ["fit", "--checkpoint", str(c), "--data", "imagenet:/x"], "imagenet"),
        (lambda d, c, t: ["fit", "--checkpoint", str(c), "--data", "npz:" + str(t / "nope.npz")], "nope.npz"),
        (lambda d, c, t: ["fit", "--checkpoint", str(c), "--data", d, "--layer", "nonexistent"], "nonexistent"),
        (lambda d, c, t: ["fit", "--checkpoint", str(c), "--data", d, "--init"], "--init"),
        (lambda d, c, t: ["fit", "--checkpoint", str(c), "--data", d, "--plot", str(t / "no" / "x.png")], "does not exist"),
        (lambda d, c, t: ["compare", str(c), "--data", d], "at least 2"),
    ],
)
def test_bad_input_one_line_exit_2(setup, tmp_path, capsys, argv_fn, words):
    data, ckpt, _, _ = setup
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv_fn(data, ckpt, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert words in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


def test_channel_mismatch_names_both(setup, tmp_path, capsys):
    _, ckpt, _, _ = setup
    gray = write_npz_data(tmp_path / "gray.npz", channels=1)
    assert main(["fit", "--checkpoint", str(ckpt), "--data", gray]) == 2
    err = capsys.readouterr().err
    assert "3" in err and "1" in err and "channel" in err


def test_kernel_larger_than_images(tmp_path, capsys):
    data = write_npz_data(tmp_path / "small.npz", size=4)
    net = TinyNet(kernel=5)
    torch.save(net.state_dict(), tmp_path / "k5.pt")
    assert main(["fit", "--checkpoint", str(tmp_path / "k5.pt"), "--data", data]) == 2
    assert "larger" in capsys.readouterr().err


def whitening_checkpoint(data: str, path: Path) -> np.ndarray:
    """A 27-filter layer W = U diag(1/sqrt(mu)) U^T on the data's own patch PCA (computed here):
    its energy profile is 1/sqrt(mu), the whitening limit that no finite tau reaches."""
    mu, u = independent_patch_pca(data)
    net = TinyNet(width=27)
    bank = u @ np.diag(1 / np.sqrt(mu)) @ u.T  # (27, 27) rows are filters
    with torch.no_grad():
        net.stem.weight.copy_(torch.tensor(bank).reshape(27, 3, 3, 3))
    torch.save(net.state_dict(), path)
    return mu


def test_fit_and_profile_flag_an_optimum_at_the_search_bound(setup, capsys, tmp_path):
    data = setup[0]
    ckpt = tmp_path / "white.pt"
    mu = whitening_checkpoint(data, ckpt)
    fitted = run_json(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "0"], capsys)
    assert fitted["at_bound"] is True and fitted["degenerate"] is False
    low, high = fitted["search_range"]["tau"]
    assert high == pytest.approx(1e4 / mu.min(), rel=1e-5) and low == pytest.approx(1e-4 / mu.max(), rel=1e-5)
    assert fitted["warnings"] and all(isinstance(w, str) for w in fitted["warnings"])
    assert "upper end" in fitted["warnings"][0]
    profiled = run_json(["profile", "--checkpoint", str(ckpt), "--data", data], capsys)
    assert (profiled["at_bound"], profiled["degenerate"], profiled["warnings"]) == (True, False, fitted["warnings"])
    assert profiled["fit_correlation"] == pytest.approx(fitted["correlation"], abs=1e-12)
    # Human output: the warning on stderr, and the table does not present the correlation as agreement.
    assert main(["fit", "--checkpoint", str(ckpt), "--data", data, "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    assert f"warning: {fitted['warnings'][0]}" in captured.err
    assert "not agreement: at search bound" in captured.out
    assert main(["profile", "--checkpoint", str(ckpt), "--data", data]) == 0
    captured = capsys.readouterr()
    assert "warning: " in captured.err and "not agreement" in captured.out


def test_an_honest_fit_carries_clear_flags(setup, capsys, tmp_path):
    # A layer whose filters have the formula's profile at a mid-range tau (components drawn around it).
    data = setup[0]
    mu, u = independent_patch_pca(data)
    tau = 3.0 / np.sqrt(mu.max() * mu.min())  # tau mu spans 3/sqrt(cond) .. 3 sqrt(cond): mid-range
    coefficients = np.random.default_rng(0).normal(size=(2000, 27)) * (-np.expm1(-tau * mu) / np.sqrt(mu))
    net = TinyNet(width=2000)
    with torch.no_grad():
        net.stem.weight.copy_(torch.tensor(coefficients @ u.T).reshape(2000, 3, 3, 3))
    torch.save(net.state_dict(), tmp_path / "honest.pt")
    out = run_json(["fit", "--checkpoint", str(tmp_path / "honest.pt"), "--data", data, "--bootstrap", "10"], capsys)
    assert out["at_bound"] is False and out["degenerate"] is False and out["warnings"] == [], out["warnings"]
    assert out["tau"] == pytest.approx(tau, rel=0.3)
    assert main(["fit", "--checkpoint", str(tmp_path / "honest.pt"), "--data", data, "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "not agreement" not in captured.out


def test_fit_is_scale_free_even_at_the_ends_of_float64(tmp_path, capsys):
    # The profile is homogeneous in the weights: x1e200 and x1e-200 must measure like x1.
    w = np.random.default_rng(0).normal(size=(16, 3, 3, 3))
    results = []
    for factor in (1.0, 1e200, 1e-200):
        path = tmp_path / f"w{factor:g}.npz"
        np.savez(path, **{"conv1.weight": w * factor})
        assert main(["fit", "--checkpoint", str(path), "--limit", "64", "--json"]) == 0
        captured = capsys.readouterr()
        assert "overflow" not in captured.err and "underflow" not in captured.err
        results.append(json.loads(captured.out))
    for other in results[1:]:
        assert other["correlation"] == pytest.approx(results[0]["correlation"], abs=1e-9)
        assert other["tau"] == pytest.approx(results[0]["tau"], rel=1e-6)
        assert other["whitening"]["spectral_flatness"] == pytest.approx(results[0]["whitening"]["spectral_flatness"], rel=1e-9)


def test_output_names_must_match_what_is_written_and_differ(tmp_path, capsys):
    path = tmp_path / "w.npz"
    np.savez(path, **{"conv1.weight": np.random.default_rng(1).normal(size=(8, 3, 3, 3))})
    base = ["fit", "--checkpoint", str(path), "--limit", "32"]
    cases = [
        (["--plot", str(tmp_path / "p.jpg")], "expected a name ending in .png or .pdf or .svg"),
        (["--plot", str(tmp_path / "same.png"), "--out", str(tmp_path / "same.png")], "name the same file"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not any(p.suffix in (".jpg", ".png") for p in tmp_path.iterdir())  # nothing half-written
    assert main(["simulate", "--limit", "8", "--out", str(tmp_path / "sim.json")]) == 2
    assert "expected a name ending in .npz" in capsys.readouterr().err
    assert main(base + ["--plot", str(tmp_path / "fit.svg")]) == 0
    capsys.readouterr()
    assert (tmp_path / "fit.svg").read_text().lstrip().startswith("<?xml")


def test_a_repeated_warning_is_printed_once_with_its_count(tmp_path, capsys):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, size=(40, 12, 12, 1), dtype=np.uint8)
    np.savez(tmp_path / "gray3.npz", images=np.repeat(gray, 3, axis=3))  # three equal channels: rank-deficient patches
    np.savez(tmp_path / "w.npz", **{"conv1.weight": rng.normal(size=(8, 3, 3, 3))})
    code = main(["fit", "--checkpoint", str(tmp_path / "w.npz"), "--data", f"npz:{tmp_path / 'gray3.npz'}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and lines, err
    assert any("rank" in line for line in lines)
    stems = [line.rsplit(" (x", 1)[0] for line in lines]
    assert len(stems) == len(set(stems)), lines  # each distinct warning once


def test_a_layer_without_filters_says_so(tmp_path, capsys):
    np.savez(tmp_path / "empty.npz", **{"conv1.weight": np.zeros((0, 3, 3, 3))})
    assert main(["profile", "--checkpoint", str(tmp_path / "empty.npz"), "--limit", "16"]) == 2
    err = capsys.readouterr().err
    assert "has no weights (shape (0, 3, 3, 3)); expected at least one filter" in err and len(err.strip().splitlines()) == 1
