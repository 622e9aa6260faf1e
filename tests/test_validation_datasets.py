"""The validation suite on several data sets: one results folder and one report column each,
padding recorded and applied to the very images the patch statistics see, runs that missed
their training target kept out of every verdict, and a tally that counts what has a verdict."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from linearcnn.cli import main
from validation import claims, report
from validation.configs import CONFIGS
from validation.runs import data_slug, paper_dataset


def test_data_slugs_are_readable_and_name_the_padding(tmp_path):
    assert data_slug("builtin") == "builtin"
    assert data_slug("mnist:/data/fashion-mnist") == "fashion-mnist"
    assert data_slug("npz:/x/One_Split.npz", 2) == "one-split-pad2"
    assert data_slug("cifar10:/data/cifar-10-batches-py") == "cifar-10-batches-py"
    assert paper_dataset("cifar10:/data/anything") == "CIFAR-10"
    assert paper_dataset("folder:/data/celeba") == "CelebA"
    assert paper_dataset("builtin") is None


def independent_patch_eigenvalues(images: np.ndarray, pad: int, k: int = 3) -> np.ndarray:
    """Eigenvalues (descending, divided by the largest) of the uncentred 3x3 patch second moment of
    the images zero-padded after per-channel normalisation, with numpy only."""
    n, c, h, w = images.shape
    mean = images.astype(np.float64).mean(axis=(0, 2, 3))  # (C,)
    x = np.empty((n, c, h + 2 * pad, w + 2 * pad))  # (N, C, H+2p, W+2p)
    x[...] = mean[None, :, None, None]  # the border at the channel mean: 0 after normalisation
    x[:, :, pad : pad + h, pad : pad + w] = images
    x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True)
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, H', W', k, k)
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * k * k)  # (N H' W', C k k)
    values = np.linalg.eigvalsh(patches.T @ patches)[::-1]
    return values / values[0]


@pytest.mark.slow  # 12 small trainings (2 data sets x VGG11 and ResNet20 x 3 seeds): about 30 s on one core
def test_two_padded_data_sets_give_two_columns_and_their_own_folders(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    small = tmp_path / "small_28.npz"  # an MNIST-like shape, 3 channels: 28 px, padded to 32 px by --pad 2
    images = rng.random((40, 3, 28, 28)).astype(np.float32)
    np.savez(small, images=images, labels=rng.integers(0, 4, 40), test_images=rng.random((10, 3, 28, 28)).astype(np.float32),
             test_labels=rng.integers(0, 4, 10))
    monkeypatch.chdir(tmp_path)
    code = main(["validate", "--config", "smoke", "--only", "formula_fit", "--device", "cpu", "--data", f"npz:{small}",
                 "--data", "builtin", "--pad", "2"])
    assert code == 0
    out = tmp_path / "runs" / "validate" / "smoke"
    assert sorted(p.name for p in (out / "results").iterdir()) == ["builtin-pad2", "small-28-pad2"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["builtin-pad2", "small-28-pad2"]
    record = json.loads((out / "results" / "small-28-pad2" / "formula_fit.json").read_text())
    assert record["data"]["pad"] == 2 and record["data"]["image_shape"] == [3, 32, 32]
    assert all(f.startswith("small-28-pad2/") and (out / "figures" / f).is_file() for f in record["results"]["figures"])
    # the patch statistics are those of the padded images the networks trained on
    np.testing.assert_allclose(np.divide(record["results"]["eigenvalues"], record["results"]["eigenvalues"][0]),
                               independent_patch_eigenvalues(images, 2), rtol=1e-4, atol=1e-7)
    builtin = json.loads((out / "results" / "builtin-pad2" / "formula_fit.json").read_text())
    assert builtin["data"]["image_shape"] == [3, 36, 36]
    text = (out / "REPORT.md").read_text()
    assert "| claim | paper (its own data set) | ours: builtin-pad2 | ours: small-28-pad2 |" in text
    table = [line for line in text[: text.index("## Deviations")].splitlines()
             if line.startswith("| ") and not line.startswith(("| claim", "|---"))]
    assert [line.split(" | ")[0][2:] for line in table] == [c.claim for c in claims.CLAIMS]
    assert all(line.count(" | ") == 3 for line in table)  # claim, paper, two data sets
    assert "padded by 2 px each side" in text


# -------------------------------------------------------------------------------------------------
# constructed results


def _stat(mean: float | None, n: int = 3) -> dict:
    return {"mean": mean, "std": None if mean is None else 0.01, "n": n, "values": [mean] * 3}


def _run(arm: str, seed: int, converged: bool, labels: str = "true") -> dict:
    return {"arm": arm, "arch": "vgg11", "width": 32, "labels": labels, "lr": 0.01, "optimiser": "SGD (plain)",
            "frozen": False, "seed": seed, "steps": 80 if converged else 480, "epochs": 10 if converged else 60,
            "train_accuracy": 0.995 if converged else 0.7, "test_accuracy": 0.6, "displacement": 0.3,
            "target": 0.99, "converged": converged, "stop": {}}


def _records(slug: str, spec: str, *, seed_vs_seed: float, missed_seed: int | None, fit_flags: tuple[int, int]) -> dict:
    arm = "vgg11-w32-true-lr0.01"
    base = {"config": CONFIGS["cpu"].to_dict(), "device": "cpu (x, 2 threads)", "versions": {"torch": "t", "linearcnn": "l"},
            "seeds": [0, 1, 2], "wall_seconds": 1.0,
            "data": {"spec": spec, "slug": slug, "train_images": 100, "pad": 0, "paper_dataset": paper_dataset(spec)}}
    runs = [_run(arm, s, s != missed_seed) for s in (0, 1, 2)]
    views = {"init_subtracted": _stat(seed_vs_seed), "raw": _stat(0.5), "arms": [arm]}
    flagged, fits = fit_flags
    fit = {"correlation": _stat(None if flagged == fits else 0.95, fits - flagged), "tau": _stat(1.0),
           "fits": fits, "flagged": flagged}
    return {
        "consistency": {**base, "experiment": "consistency", "runs": runs, "results": {
            "seed_vs_seed": views, "width_vs_width": views, "trained_vs_init": views, "vgg_vs_resnet": views}},
        "formula_fit": {**base, "experiment": "formula_fit", "runs": runs[:0], "results": {
            "vgg11": {"init_subtracted": fit, "raw": fit, "arms": []}}},
    }


def test_not_converged_runs_and_flagged_fits_never_count_and_the_tally_counts_cells():
    results = {
        "builtin": _records("builtin", "builtin", seed_vs_seed=0.985, missed_seed=None, fit_flags=(1, 3)),
        "cifar10": _records("cifar10", "cifar10:/d", seed_vs_seed=0.93, missed_seed=2, fit_flags=(3, 3)),
    }
    cells = {claim.claim: by_data for claim, by_data in report.claim_cells(results)}
    seed = cells["Table 1: seed vs seed"]
    assert seed["builtin"].verdict == claims.REPRODUCES
    assert seed["cifar10"].verdict == claims.NOT_CONVERGED and seed["cifar10"].text == "not converged (1 of 3 runs)"
    fit = cells["Formula fit (3 seeds), VGG11"]
    assert fit["builtin"].verdict == claims.REPRODUCES  # 0.95 from the 2 fits left, vs CIFAR-10's 0.94 +- 0.01
    assert "1 of 3 fits at the search bound or degenerate" in fit["builtin"].text
    assert fit["cifar10"].verdict == claims.DOES_NOT  # no fit left: no agreement
    text = report.render_report(results)
    section = text[text.index("## Claims of PAPER.md"): text.index("Verdict rules")]
    header = next(line for line in section.splitlines() if line.startswith("| claim"))
    assert header == "| claim | paper (its own data set) | ours: builtin | ours: cifar10 |"
    rows = [line for line in section.splitlines() if line.startswith("| ") and line != header]
    names = [line.split(" | ")[0][2:] for line in rows]
    assert names == [c.claim for c in claims.CLAIMS]  # one row per claim, none twice
    # the paper's column holds only published numbers (each with its own data set), never ours
    for line, claim in zip(rows, claims.CLAIMS):
        assert line.split(" | ")[1] == "; ".join(f"{p.text} ({p.dataset})" for p in claim.paper)
    # the tally, counted here from the rendered cells
    ours = [cell for line in rows for cell in line.strip("| ").split(" | ")[2:]]
    with_verdict = [c for c in ours if re.search(r": (reproduces|partly|does not)$", c)]
    not_converged = [c for c in ours if c.startswith("not converged")]
    assert len(ours) == 2 * len(claims.CLAIMS)
    assert f"Tally over the {len(with_verdict)} (claim, data set) pairs with a verdict:" in text
    assert f"without a verdict: {len(not_converged)} not converged" in text
    assert len(not_converged) == 4  # Table 1 on cifar10
    # the per-arm table says which runs missed their target
    arm_rows = [line for line in text.splitlines() if line.startswith("| vgg11-w32-true-lr0.01 |")]
    assert arm_rows[0].endswith("| yes |") and arm_rows[1].endswith("| no (1 of 3 runs) |")


def test_superseded_flat_records_go_only_for_the_data_sets_measured_again(tmp_path):
    from validation.runner import RESULTS_FORMAT, _drop_superseded

    def record(name, spec):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"format": RESULTS_FORMAT, "experiment": name, "data": {"spec": spec}}))
        return path

    builtin = record("labels", "builtin")
    other = record("frozen", "npz:/somewhere/other.npz")
    foreign = tmp_path / "notes.json"
    foreign.write_text(json.dumps({"format": "something else", "data": {"spec": "builtin"}}))
    said = []
    _drop_superseded(tmp_path, {"builtin"}, said.append)
    assert not builtin.exists() and other.exists() and foreign.exists()
    assert len(said) == 1 and "labels.json" in said[0]


def test_a_negative_pad_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from linearcnn.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--config", "smoke", "--pad", "-1", "--only", "linear_cnn"]) == 2
    err = capsys.readouterr().err
    assert "--pad -1: expected an integer >= 0" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing half-written
