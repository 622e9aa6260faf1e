"""`linearcnn fit | profile` defaults: the data and normalisation a `linearcnn train` checkpoint
recorded, and init-subtracted weights when the checkpoint stores its initial layer; every output
says which data and which weights it used, and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from linearcnn.cli import main


def write_gray_npz(path: Path, n: int = 64, size: int = 32, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    images = np.cumsum(np.cumsum(rng.normal(size=(n, size, size, 1)), axis=1), axis=2)  # smooth, 1 channel
    images = (images - images.min()) / (images.max() - images.min())
    np.savez(path, images=(images * 255).astype(np.uint8), labels=rng.integers(0, 4, size=n))
    return f"npz:{path}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch vgg11-bn run on a 1-channel npz set (64 images): (spec, checkpoint path)."""
    folder = tmp_path_factory.mktemp("run")
    spec = write_gray_npz(folder / "gray.npz")
    out = folder / "run"
    code = main(["train", "--arch", "vgg11-bn", "--width", "4", "--epochs", "1", "--limit", "64", "--data", spec,
                 "--out", str(out), "--quiet"])
    assert code == 0
    return spec, out / "checkpoint.pt"


def run_json(argv, capsys):
    code = main(argv + ["--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def independent_profile(spec: str, weights: np.ndarray) -> np.ndarray:
    """Max-normalised energy profile of `weights` (K, 1, 3, 3) on the 3x3 patches of the npz images
    normalised by their own mean and (ddof 0) std, computed here with unfold and numpy."""
    images = np.load(spec[4:])["images"].astype(np.float64) / 255  # (N, H, W, 1)
    x = torch.tensor(images).permute(0, 3, 1, 2)
    x = (x - x.mean()) / x.std(correction=0)
    patches = torch.nn.functional.unfold(x, 3).transpose(1, 2).reshape(-1, 9).numpy()
    _, u = np.linalg.eigh(patches.T @ patches / patches.shape[0])
    u = u[:, ::-1]  # descending eigenvalues
    profile = np.sqrt(np.mean((weights.reshape(len(weights), -1) @ u) ** 2, axis=0))
    return profile / profile.max()


def stored_first_layer(checkpoint: Path) -> tuple[np.ndarray, np.ndarray]:
    saved = torch.load(checkpoint, weights_only=True)
    name = saved["first_layer"]["name"]
    return (saved["model_state_dict"][f"{name}.weight"].double().numpy(),
            saved["first_layer"]["initial_weight"].double().numpy())


def normalised(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values / values.max()


def test_fit_without_data_uses_the_recorded_data_and_subtracts_the_stored_init(run, capsys):
    spec, checkpoint = run
    implicit = run_json(["fit", "-c", str(checkpoint), "--init", "--bootstrap", "0"], capsys)
    explicit = run_json(["fit", "-c", str(checkpoint), "--init", "--bootstrap", "0", "--data", spec], capsys)
    default = run_json(["fit", "-c", str(checkpoint), "--bootstrap", "0"], capsys)
    assert implicit["data"] == spec and implicit["data_source"] == f"{spec} (recorded in the checkpoint)"
    assert explicit["data_source"] == spec
    assert implicit["normalization"]["preset"] == "checkpoint"
    images = np.load(spec[4:])["images"].astype(np.float64) / 255
    assert implicit["normalization"]["mean"] == pytest.approx([images.mean()], rel=1e-6)
    assert implicit["normalization"]["std"] == pytest.approx([images.std()], rel=1e-6)
    assert implicit["image_size"] == [32, 32] and implicit["pad"] == 0
    # the recorded data and its recorded normalisation give the profile that --data gives
    np.testing.assert_allclose(implicit["profile"], explicit["profile"], rtol=1e-9)
    np.testing.assert_allclose(implicit["eigenvalues"], explicit["eigenvalues"], rtol=1e-9)
    # with neither --init nor --no-init our checkpoints are measured init-subtracted
    assert default["init_subtracted"] is True
    assert "the checkpoint stores its initial layer" in default["weights_note"]
    np.testing.assert_allclose(default["profile"], implicit["profile"], rtol=1e-12)
    weights, initial = stored_first_layer(checkpoint)
    np.testing.assert_allclose(normalised(default["profile"]), independent_profile(spec, weights - initial), atol=1e-6)


def test_no_init_and_raw_fit_measure_raw_weights(run, capsys):
    spec, checkpoint = run
    weights, _ = stored_first_layer(checkpoint)
    no_init = run_json(["fit", "-c", str(checkpoint), "--no-init", "--bootstrap", "0"], capsys)
    assert no_init["init_subtracted"] is False and no_init["weights_note"] == "raw weights: --no-init"
    np.testing.assert_allclose(normalised(no_init["profile"]), independent_profile(spec, weights), atol=1e-6)
    raw = run_json(["fit", "-c", str(checkpoint), "--raw", "--bootstrap", "0"], capsys)
    assert raw["init_subtracted"] is False and raw["family"].startswith("raw") and "--raw" in raw["weights_note"]
    raw_init = run_json(["fit", "-c", str(checkpoint), "--raw", "--init", "--bootstrap", "0"], capsys)
    assert raw_init["init_subtracted"] is True


def test_human_output_names_the_data_the_weights_and_the_legend(run, capsys):
    spec, checkpoint = run
    assert main(["fit", "-c", str(checkpoint), "--bootstrap", "20"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"data: {spec} (recorded in the checkpoint)" in out
    assert "weights: init-subtracted: the checkpoint stores its initial layer; --no-init for raw weights" in out
    assert "tau: the formula's gradient-flow time lr x steps" in out
    assert "bootstrap over the layer's filters (20 resamples" in out
    assert "spectral flatness: geometric / arithmetic mean" in out
    assert main(["profile", "-c", str(checkpoint)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"data: {spec} (recorded in the checkpoint)" in out and "32x32 px" in out


def test_profile_json_records_the_defaults(run, capsys):
    spec, checkpoint = run
    payload = run_json(["profile", "-c", str(checkpoint)], capsys)
    assert payload["data"] == spec and payload["init_subtracted"] is True and payload["image_size"] == [32, 32]


def test_missing_recorded_data_says_where_it_came_from(run, capsys, tmp_path):
    spec, checkpoint = run
    source = Path(spec[4:])
    moved = tmp_path / "moved.npz"
    source.rename(moved)
    try:
        code = main(["fit", "-c", str(checkpoint), "--bootstrap", "0"])
    finally:
        moved.rename(source)
    err = capsys.readouterr().err
    assert code == 2
    assert "recorded in the checkpoint" in err and "--data" in err and len(err.strip().splitlines()) == 1


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 2)


def test_a_plain_state_dict_falls_back_to_builtin_and_raw_weights(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "plain.pt"
    torch.save(TinyNet().state_dict(), path)
    payload = run_json(["fit", "-c", str(path), "--limit", "64", "--bootstrap", "0"], capsys)
    assert payload["data"] == "builtin" and payload["data_source"].startswith("builtin (the default")
    assert payload["init_subtracted"] is False
    assert payload["weights_note"].startswith("raw weights: the checkpoint stores no initial layer; pass --init-checkpoint")
    assert main(["fit", "-c", str(path), "--limit", "64", "--init"]) == 2  # nothing stored to subtract
