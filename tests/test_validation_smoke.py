"""The validation suite at tiny sizes: every experiment's code path, the report, the verdict rules."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from linearcnn.cli import main
from validation import claims, report
from validation.cells import format_stat
from validation.configs import CONFIGS
from validation.experiments import EXPERIMENTS
from validation.measures import mean_std, output_autocorrelation
from validation.runs import Arm

ROOT = Path(__file__).resolve().parents[1]
#: The committed record: what only `validate --publish` (never with the smoke config) may write.
RECORD = ("README.md", "validation/REPORT.md", "validation/results", "figures")
SMOKE = Path("runs/validate/smoke")  # where a smoke run writes, relative to its working directory


def file_hashes(root: Path, skip: str | None = None) -> dict[str, str]:
    """sha256 of every file under `root` (relative paths), leaving out the folder `skip`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and (skip is None or not p.relative_to(root).parts[0] == skip)}


def record_hashes(root: Path) -> dict[str, str]:
    """Hashes of the committed record under `root` (the README only by its generated block)."""
    out = {}
    for name in RECORD[1:]:
        path = root / name
        out.update(file_hashes(path) if path.is_dir() else {name: hashlib.sha256(path.read_bytes()).hexdigest()})
    out["README.md block"] = hashlib.sha256(report.readme_results_block((root / "README.md").read_text()).encode()).hexdigest()
    return out


def assert_is_a_drawn_figure(path: Path) -> None:
    """A PNG of a real figure: a sensible size in pixels, mostly background but with drawn content
    in several colours (a blank or single-colour image fails)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(np.int64)  # (H*W, 3)
    assert 300 <= width <= 4000 and 200 <= height <= 4000, (path.name, image.size)
    colours = np.unique(pixels @ np.array([1 << 16, 1 << 8, 1]))
    assert len(colours) >= 20, (path.name, len(colours))
    drawn = np.mean(np.any(pixels < 240, axis=1))  # non-white pixels: axes, text, curves, cells
    assert 0.01 < drawn < 0.99, (path.name, drawn)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One `smoke` run of every experiment through the CLI with its default outputs, its working
    directory a temporary folder holding a copy of the committed record (README.md,
    validation/REPORT.md, validation/results/, figures/); returns that folder's runs/validate/smoke.
    Records the hashes of every file outside runs/ there, and of the repository's own record,
    before and after the run (`root / "hashes.json"`)."""
    root = tmp_path_factory.mktemp("validate")
    work = root / "work"
    for name in RECORD:
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, target)
    # a checkpoint of our own for the 'external' experiment
    from linearcnn.train import TrainConfig, train

    for seed in (0, 1):
        train(TrainConfig(arch="vgg11", width=4, limit=20, epochs=1, batch_size=20, seed=seed, out=str(root / f"ext{seed}"),
                          device="cpu"))
    before = {"work": file_hashes(work), "repository": record_hashes(ROOT)}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        code = main(["validate", "--config", "smoke", "--device", "cpu",
                     "--checkpoints", f"{root / 'ext0' / 'checkpoint.pt'},{root / 'ext1' / 'checkpoint.pt'}"])
        assert code == 0
        code = main(["validate", "--config", "smoke", "--device", "cpu", "--only", "init"])  # only when named
    assert code == 0
    after = {"work": file_hashes(work, skip="runs"), "repository": record_hashes(ROOT)}
    (root / "hashes.json").write_text(json.dumps({"before": before, "after": after}))
    return work / SMOKE


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_smoke_run_writes_only_under_runs(smoke_run):
    hashes = json.loads((smoke_run.parents[3] / "hashes.json").read_text())
    assert hashes["after"]["work"] == hashes["before"]["work"]  # the copied record, byte for byte, and nothing new
    assert hashes["after"]["repository"] == hashes["before"]["repository"]
    written = {p.relative_to(smoke_run).parts[0] for p in smoke_run.rglob("*") if p.is_file()}
    assert written == {"results", "figures", "train", "REPORT.md"}


def test_smoke_config_refuses_to_publish(tmp_path, capsys, monkeypatch):
    """Before any training: --publish, or an explicit path into the record, is a one-line error."""
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--config", "smoke", "--publish"]) == 2
    assert main(["validate", "--config", "smoke", "--results", "validation/results"]) == 2
    assert main(["validate", "--config", "smoke", "--report-only", "--publish"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err
    assert "--publish" in err[0] and "smoke" in err[0] and "--results" in err[1]
    assert not any(tmp_path.iterdir())  # nothing written, not even runs/


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_every_experiment_writes_a_complete_result(smoke_run):
    for name in EXPERIMENTS:
        record = json.loads((smoke_run / "results" / "builtin" / f"{name}.json").read_text())
        assert "error" not in record["results"], record["results"].get("traceback")
        assert record["experiment"] == name
        assert record["seeds"] == [0, 1, 2]
        assert record["config"]["name"] == "smoke"
        assert record["data"]["spec"] == "builtin" and record["data"]["train_images"] == 40
        assert record["data"]["slug"] == "builtin" and record["data"]["pad"] == 0
        assert record["config"]["momentum"] == 0.0 and record["config"]["batch_size"] == 40
        assert record["device"].startswith("cpu")
        assert set(record["versions"]) >= {"linearcnn", "torch", "numpy", "python"}
        for figure in record["results"].get("figures", []):
            assert_is_a_drawn_figure(smoke_run / "figures" / figure)


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_init_experiment_starts_each_layer_where_asked(smoke_run):
    results = json.loads((smoke_run / "results" / "builtin" / "init.json").read_text())["results"]
    config = json.loads((smoke_run / "results" / "builtin" / "init.json").read_text())["config"]
    for family in ("vgg11", "resnet20"):
        arms = results["archs"][family]["per_init"]
        assert list(arms) == ["default", "whitening", "formula", "frozen-whitening"]
        for name in ("whitening", "formula", "frozen-whitening"):
            assert arms[name]["start"]["correlation"]["mean"] > 0.999  # the raw profile at step 0 is the requested one
        planned = results["archs"][family]["epochs"] * 1  # smoke: one step per epoch (40 images, batch 40)
        assert arms["formula"]["start"]["tau"]["mean"] == pytest.approx(config["lr"] * planned, rel=1e-3)
        assert arms["frozen-whitening"]["end"]["displacement"]["mean"] == 0.0
        assert arms["whitening"]["end"]["displacement"]["mean"] > 0.0
        assert arms["default"]["start"]["correlation"]["mean"] < 0.9  # a random layer is not on the family
        for arm in arms.values():
            assert set(arm["reach"]) == {f"train {t:g}" for t in config["init_train_thresholds"]} | {
                f"test {t:g}" for t in config["init_test_thresholds"]}
    assert "init" not in json.loads((smoke_run / "results" / "builtin" / "consistency.json").read_text())["experiment"]


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_smoke_numbers_are_consistent(smoke_run):
    results = report.load_results(smoke_run / "results")["builtin"]
    # the exact dynamics reproduce full-batch float64 training
    linear = results["linear_cnn"]["results"]["random"]["simulate_vs_train"]["max_rel_error_of_change"]
    assert linear["n"] == 3 and linear["mean"] < 1e-9
    # every similarity equals numpy's correlation of profiles recomputed here from the saved checkpoints
    consistency = results["consistency"]["results"]
    for key, pairs in independent_similarities(smoke_run).items():
        for view, expected in pairs.items():
            stat = consistency[key][view]
            assert stat["n"] == 3
            np.testing.assert_allclose(stat["values"], expected, rtol=1e-9, atol=1e-12, err_msg=f"{key} {view}")
    # a raw profile that still holds its init is the init profile plus a small change: trained vs init raw near 1
    assert consistency["trained_vs_init"]["raw"]["mean"] > 0.9
    frozen = results["frozen"]["results"]
    assert frozen["test_accuracy_difference"]["values"] == pytest.approx(
        np.subtract(frozen["frozen"]["test_accuracy"]["values"], frozen["learned"]["test_accuracy"]["values"]).tolist())
    external = results["external"]["results"]
    assert not external["skipped"] and len(external["checkpoints"]) == 2
    assert np.allclose(np.diag(external["raw_similarity"]), 1.0)


def independent_similarities(root: Path) -> dict[str, dict[str, list[float]]]:
    """consistency's seed pairs, recomputed: the first layers from the run's checkpoints, their
    energy profiles with numpy (e_i = sqrt(mean_k ((w_k - w0_k) . u_i)^2)), np.corrcoef."""
    from linearcnn.checkpoints import load_first_layer
    from linearcnn.data import load_dataset
    from linearcnn.patches import dataset_patch_stats

    smoke = CONFIGS["smoke"]
    stats = dataset_patch_stats(load_dataset("builtin", limit=smoke.train_limit, min_size=3), 3, device="cpu")
    u = stats.eigenvectors

    def views(arch: str, width: int, seed: int) -> dict[str, np.ndarray]:
        layer = load_first_layer(root / "train" / "builtin" / Arm(arch=arch, width=width).key / f"seed{seed}" / "checkpoint.pt")
        w, w0 = (np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in (layer.weight, layer.init_weight))
        energy = {name: np.sqrt(np.mean((m @ u) ** 2, axis=0)) for name, m in (("sub", w - w0), ("raw", w), ("init", w0))}
        return energy

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1])

    seeds = smoke.seeds
    vgg = [views(smoke.vgg_arch, smoke.vgg_width, s) for s in seeds]
    wide = [views(smoke.vgg_arch, smoke.vgg_wide_width, s) for s in seeds]
    resnet = [views("resnet20", smoke.resnet_width, s) for s in seeds]
    out = {}
    for view, key in (("init_subtracted", "sub"), ("raw", "raw")):
        out.setdefault("seed_vs_seed", {})[view] = [corr(vgg[i][key], vgg[j][key]) for i, j in combinations(range(3), 2)]
        out.setdefault("width_vs_width", {})[view] = [corr(a[key], b[key]) for a, b in zip(vgg, wide)]
        out.setdefault("vgg_vs_resnet", {})[view] = [corr(a[key], b[key]) for a, b in zip(vgg, resnet)]
        out.setdefault("trained_vs_init", {})[view] = [corr(a[key], a["init"]) for a in vgg]
    return out


def rule_verdict(ours: float | None, paper: float | None, spread: float | None, kind: str) -> str:
    """The verdict rules as the report states them, written out again here (not `claims.verdict`)."""
    if ours is None:
        return "not measured"
    if kind == "accuracy_gap":
        return "reproduces" if abs(ours) <= 0.02 else ("partly" if abs(ours) <= 0.05 else "does not")
    assert paper is not None
    if abs(ours - paper) <= max(0.05, spread or 0.0) + 1e-12:
        return "reproduces"

    def band(r: float) -> str:
        if r >= 0.7:
            return "high"
        if r <= -0.3:
            return "negative"
        return "near zero" if abs(r) < 0.3 else "moderate"

    return "partly" if band(ours) == band(paper) else "does not"


def nearest_published(claim: claims.Claim, ours: float) -> tuple[float, float | None]:
    """(value, spread) a measurement on data the paper did not use is judged against, as the report
    states it: the published number nearest ours."""
    numbers = [(p.value, p.spread) for p in claim.paper if p.value is not None]
    return min(numbers, key=lambda vs: abs(ours - vs[0]))


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_report_has_a_row_for_every_claim(smoke_run):
    text = (smoke_run / "REPORT.md").read_text()
    names = [c.claim for c in claims.CLAIMS]
    assert len(set(names)) == len(names) == 16
    section = text[text.index("## Claims of PAPER.md"):text.index("## Deviations")]
    table = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert [line.split(" | ")[0][2:] for line in table] == names  # every claim once, in order
    results = report.load_results(smoke_run / "results")
    records = results["builtin"]
    runs = {(r["arm"], r["seed"]): r for record in records.values() for r in record["runs"]}
    # smoke targets: random labels 1.0, never reached within the 2-epoch cap; true labels 0.01
    assert all(not r["converged"] and r["steps"] == 2 for r in runs.values() if r["labels"] == "random")
    assert all(r["converged"] == (r["train_accuracy"] >= 0.01) for r in runs.values() if r["labels"] == "true")
    cells = {claim.claim: by_data["builtin"] for claim, by_data in report.claim_cells(results)}
    arms = {  # the arms behind each measured claim, written out here
        "consistency": {"seed_vs_seed": ["vgg11-bn-w4-true-lr0.01"],
                        "width_vs_width": ["vgg11-bn-w4-true-lr0.01", "vgg11-bn-w6-true-lr0.01"],
                        "trained_vs_init": ["vgg11-bn-w4-true-lr0.01"],
                        "vgg_vs_resnet": ["vgg11-bn-w4-true-lr0.01", "resnet20-w4-true-lr0.01"],
                        "vgg_vs_resnet_momentum": ["vgg11-bn-w4-true-lr0.01-m0.9", "resnet20-w4-true-lr0.01-m0.9"]},
        "labels": {"random_vs_init": ["vgg11-bn-w4-random-lr0.01"],
                   "true_vs_random": ["vgg11-bn-w4-true-lr0.01", "vgg11-bn-w4-random-lr0.01"]},
    }
    for claim in claims.CLAIMS:
        if claim.source is None:
            assert cells[claim.claim].verdict == claims.NOT_MEASURED
            continue
        experiment, key = claim.source[:2]
        every_model = ["vgg11-bn-w4-true-lr0.01", "resnet20-w4-true-lr0.01", "vgg11-bn-w6-true-lr0.01",
                       "vgg11-bn-w4-true-lr0.01-m0.9", "resnet20-w4-true-lr0.01-m0.9"]
        behind = {"formula_fit": {"vgg11": ["vgg11-bn-w4-true-lr0.01"], "random_init": [],
                                  "every_model": [a for a in every_model
                                                  if all(r["converged"] for (arm, _), r in runs.items() if arm == a)]},
                  "binary_pairs": {"fit": ["vgg11-bn-w4-true-lr0.01-pair-0-1", "vgg11-bn-w4-true-lr0.01-pair-3-5"]},
                  "pca_labels": {"pca_vs_random": ["vgg11-bn-w4-true-lr0.01-pca-1", "vgg11-bn-w4-random-lr0.01"]},
                  "large_kernel": {"fit": ["resnet18-w4-true-lr0.01-m0.9-crop-16-k7"]},
                  "frozen": {"test_accuracy_difference": ["vgg11-bn-w4-true-lr0.01", "vgg11-bn-w4-true-lr0.01-frozen"]},
                  "linear_cnn": {"random": []}, **arms}[experiment][key]
        missed = [r for (arm, _), r in runs.items() if arm in behind and not r["converged"]]
        expected = claims.NOT_CONVERGED if missed else None
        assert (cells[claim.claim].verdict == claims.NOT_CONVERGED) == (expected is not None), claim.claim
        if missed:
            total = sum(arm in behind for arm, _ in runs)
            assert cells[claim.claim].text == f"not converged ({len(missed)} of {total} runs)"
    for name in ("Table 2: random-label vs init", "Table 2: true vs random labels"):
        assert cells[name].verdict == claims.NOT_CONVERGED
    measured = [c for c in cells.values() if c.verdict in claims.VERDICTS]
    assert {c.claim.claim for c in measured} >= {"Formula fit of the random initialisation", names[-1]}
    for cell in measured:  # the stated rule applied to the JSON's mean and the nearest published number
        value, spread = nearest_published(cell.claim, cell.ours["mean"])
        assert cell.verdict == rule_verdict(cell.ours["mean"], value, spread, cell.claim.kind), cell
    counts = {v: sum(c.verdict == v for c in cells.values()) for v in claims.VERDICTS}
    assert f"Tally over the {len(measured)} (claim, data set) pairs with a verdict: " in text
    assert ", ".join(f"{counts[v]} {v}" for v in claims.VERDICTS) in text
    for line in table:  # the rendered table carries each cell
        assert line.endswith(f" | {cells[line.split(' | ')[0][2:]].text} |"), line
    arm_rows = [line for line in text.splitlines() if line.startswith("| vgg11-bn-w4-random-lr0.01 |")]
    assert len(arm_rows) == 1 and arm_rows[0].endswith("| 1 | no (3 of 3 runs) |"), arm_rows
    assert "CPU, scaled down" in text and "GPU run (`--config gpu`) is pending" in text
    assert "linearcnn validate" in text


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_report_only_regenerates_from_json(smoke_run, tmp_path):
    out = tmp_path / "again.md"
    code = main(["validate", "--report-only", "--results", str(smoke_run / "results"), "--report", str(out),
                 "--figures", str(smoke_run / "figures")])
    assert code == 0
    assert out.read_text().splitlines()[:12] == (smoke_run / "REPORT.md").read_text().splitlines()[:12]


@pytest.mark.parametrize(
    ("ours", "paper", "spread", "expected"),
    [
        (0.96, 0.99, None, claims.REPRODUCES),     # within 0.05
        (0.94, 0.99, None, claims.REPRODUCES),     # exactly 0.05 away
        (0.93, 0.99, None, claims.PARTLY),         # 0.06 away, both high
        (0.45, 0.99, None, claims.DOES_NOT),       # moderate vs high
        (0.20, -0.13, 0.18, claims.PARTLY),        # 0.33 away but both near zero
        (0.04, -0.13, 0.18, claims.REPRODUCES),    # within the paper's +- 0.18
        (-0.45, 0.03, 0.22, claims.DOES_NOT),      # negative vs near zero
        (0.75, 0.90, 0.02, claims.PARTLY),         # both high, 0.15 away
        (None, 0.90, 0.02, claims.NOT_MEASURED),
    ],
)
def test_verdict_correlation_rules(ours, paper, spread, expected):
    assert claims.verdict(ours, paper, spread) == expected


def test_verdict_accuracy_gap_rules():
    assert claims.verdict(-0.015, 0.0, kind="accuracy_gap") == claims.REPRODUCES
    assert claims.verdict(0.04, 0.0, kind="accuracy_gap") == claims.PARTLY
    assert claims.verdict(-0.08, 0.0, kind="accuracy_gap") == claims.DOES_NOT


def test_report_applies_rules_to_constructed_results():
    """A hand-made results record: the cells must carry exactly the verdicts the rules give, on
    CIFAR-100 against the paper's CIFAR-100 number, never another data set's."""
    def stat(m):
        return {"mean": m, "std": 0.01, "n": 3, "values": [m] * 3}

    def views(sub, raw):
        return {"init_subtracted": stat(sub), "raw": stat(raw), "arms": ["vgg11-bn-w4-true-lr0.01"]}

    base = {"config": CONFIGS["cpu"].to_dict(), "device": "cpu (x, 2 threads)", "versions": {"torch": "t", "linearcnn": "l"},
            "seeds": [0, 1, 2], "wall_seconds": 1.0,
            "data": {"spec": "cifar100:/d", "slug": "cifar100", "train_images": 10, "paper_dataset": "CIFAR-100"}}
    results = {"cifar100": {
        "consistency": {**base, "experiment": "consistency", "results": {
            "seed_vs_seed": views(0.985, 0.5), "width_vs_width": views(0.90, 0.5), "trained_vs_init": views(0.6, 0.9),
            "vgg_vs_resnet": views(0.86, 0.1)}},
    }}
    cells = {claim.claim: by_data["cifar100"] for claim, by_data in report.claim_cells(results)}
    assert cells["Table 1: seed vs seed"].verdict == claims.REPRODUCES            # 0.985 vs 0.97
    assert cells["Table 1: width vs width"].verdict == claims.PARTLY              # 0.90 vs 0.98
    assert cells["Table 1: trained vs init"].verdict == claims.DOES_NOT           # 0.6 vs -0.04 +- 0.04
    assert cells["Table 1: VGG vs ResNet"].verdict == claims.PARTLY               # 0.86 vs 0.80: 0.06 away (CIFAR-10's 0.87 not used)
    assert cells["Table 1: VGG vs ResNet"].reference.dataset == "CIFAR-100"
    assert cells["Table 2: true vs random labels"].verdict == claims.NOT_MEASURED
    text = report.render_report(results)
    assert ("| Table 1: trained vs init | -0.13 +- 0.18 (CIFAR-10); -0.04 +- 0.04 (CIFAR-100); -0.18 +- 0.13 (CelebA) | "
            "0.60 +- 0.01 (n=3): does not |") in text
    assert "Tally over the 4 (claim, data set) pairs with a verdict: 1 reproduces, 2 partly, 1 does not;" in text


def test_output_autocorrelation_of_white_noise_and_of_smooth_images():
    rng = np.random.default_rng(0)
    identity = np.ones((1, 1, 1, 1))
    white = rng.standard_normal((20, 1, 32, 32))
    assert np.all(np.abs(output_autocorrelation(identity, white, [1, 2, 3])) < 0.03)
    # a 2-pixel box blur of white noise: lag-1 correlation 1/2, lag 2 and 3 zero (independent computation)
    blurred = white[..., :, 1:] + white[..., :, :-1]  # horizontal pairs
    lag = output_autocorrelation(identity, blurred, [1])[0]
    # vertical shift of horizontally blurred noise is uncorrelated: the average of (1/2, 0)
    assert lag == pytest.approx(0.25, abs=0.03)


def test_mean_std_skips_missing_values():
    stat = mean_std([1.0, None, 3.0])
    assert stat["mean"] == 2.0 and stat["std"] == 1.0 and stat["n"] == 2 and stat["values"] == [1.0, None, 3.0]


def test_unknown_config_and_experiment_are_one_line_errors(capsys, tmp_path):
    assert main(["validate", "--config", "huge", "--results", str(tmp_path)]) == 2
    assert main(["validate", "--config", "smoke", "--only", "tables", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "huge" in err[0] and "tables" in err[1]


def test_data_without_a_test_split_leaves_test_accuracy_unmeasured(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "one_split.npz"
    np.savez(path, images=rng.random((40, 3, 32, 32)).astype(np.float32), labels=rng.integers(0, 3, 40))
    code = main([
        "validate", "--config", "smoke", "--only", "frozen", "--data", f"npz:{path}", "--device", "cpu",
        "--results", str(tmp_path / "results"), "--figures", str(tmp_path / "figures"),
        "--report", str(tmp_path / "REPORT.md"), "--run-dir", str(tmp_path / "runs"),
    ])
    assert code == 0
    record = json.loads((tmp_path / "results" / "one-split" / "frozen.json").read_text())
    assert record["results"]["learned"]["test_accuracy"]["n"] == 0
    assert record["results"]["learned"]["train_accuracy"]["n"] == len(record["seeds"])
    row = next(line for line in (tmp_path / "REPORT.md").read_text().splitlines() if line.startswith("| Frozen random first layer"))
    assert "not measured" in row


def test_a_failed_experiment_is_recorded_and_the_command_exits_1(tmp_path, monkeypatch, capsys):
    def broken(ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(EXPERIMENTS, "external", broken)
    code = main([
        "validate", "--config", "smoke", "--only", "external", "--device", "cpu", "--results", str(tmp_path / "results"),
        "--figures", str(tmp_path / "figures"), "--report", str(tmp_path / "REPORT.md"), "--run-dir", str(tmp_path / "runs"),
    ])
    assert code == 1
    assert "external failed" in capsys.readouterr().err
    record = json.loads((tmp_path / "results" / "builtin" / "external.json").read_text())
    assert "planted failure" in record["results"]["error"]


def test_committed_report_and_readme_results_are_generated_from_the_committed_json():
    results = report.load_results(ROOT / "validation" / "results")
    assert results, "validation/results holds no results"
    expected_report = report.render_report(results, figures_dir=ROOT / "figures", report_dir=ROOT / "validation")
    assert (ROOT / "validation" / "REPORT.md").read_text() == expected_report, "stale: run python -m validation.report"
    readme_block = report.readme_results_block((ROOT / "README.md").read_text())
    assert readme_block == report.render_readme_results(results), "stale: run python -m validation.report --readme README.md"
    for line in readme_block.splitlines():  # every figure the README shows is committed
        if line.startswith("!["):
            assert (ROOT / line[line.index("(") + 1 : -1]).is_file(), line


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_readme_block_has_every_claim_once(smoke_run):
    results = report.load_results(smoke_run / "results")
    block = report.render_readme_results(results)
    assert block.startswith(report.README_START) and block.endswith(report.README_END)
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| claim"))
    table = []
    for line in lines[start + 2:]:  # the claims table: its rows up to the first line that is not one
        if not line.startswith("| "):
            break
        table.append(line)
    assert [line.split(" | ")[0][2:] for line in table] == [c.claim for c in claims.CLAIMS]
    if "init" in results["builtin"]:  # the experiment init has its own table after the claims
        assert "### First-layer initialisers" in block and block.count("| builtin | vgg11-bn") == 4
    assert "| claim | paper (its own data set) | ours: builtin |" in block
    for line in block.splitlines():  # the figures it shows are the run's own (figures/<data>/...)
        if line.startswith("!["):
            assert (smoke_run / line[line.index("(") + 1 : -1]).is_file(), line


def test_validation_is_an_installed_package_that_never_imports_the_cli(tmp_path):
    """Importable from anywhere (not only the repository root); `python -m validation` runs without the CLI."""
    script = (
        "import sys\n"
        "import validation.experiments, validation.report, validation.runner\n"
        "assert not [m for m in sys.modules if m.startswith('linearcnn.cli')], 'validation imported the CLI'\n"
        f"sys.exit(validation.runner.main(['--config', 'huge', '--results', {str(tmp_path / 'r')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: --config 'huge' is not known; expected one of smoke, cpu, gpu", done.stderr


@pytest.mark.slow  # the module's smoke run of every experiment: about 40 s on one core
def test_deviations_explained_quotes_the_json_and_links_drawn_figures(smoke_run):
    text = (smoke_run / "REPORT.md").read_text()
    section = text[text.index("## Deviations explained"):text.index("## Setting")]
    records = report.load_results(smoke_run / "results")["builtin"]
    labels = records["labels"]["results"]
    trajectories = records["trajectories"]["results"]
    linear = records["linear_cnn"]["results"]["random"]
    for stat in (labels["true_vs_random"]["init_subtracted"], trajectories["random_vs_true_at_nearest_tau"]["similarity"],
                 linear["last"]["corr_inv_sqrt_patch_eigenvalues"], linear["whitening_limit"]["predicted"]["one_draw"],
                 labels["views"]["learned_energy_share"]):
        assert format_stat(stat, 3 if stat is labels["views"]["learned_energy_share"] else 2) in section
    row = next(line for line in section.splitlines() if line.startswith("  | true vs random labels"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")][1:]
    assert cells == [f"{labels['true_vs_random'][v]['mean']:.2f}" for v in ("init_subtracted", "raw", "init_only")]
    # matched seeds share W0: the initial layers alone are identical, so that view is exactly 1
    assert labels["true_vs_random"]["init_only"]["mean"] == pytest.approx(1.0)
    for name in ("true_vs_random_matched_tau.png", "linear_cnn_whitening_limit.png", "raw_vs_init_subtracted.png"):
        link = next(line for line in section.splitlines() if line.startswith("![") and name in line)
        assert_is_a_drawn_figure(smoke_run / link[link.index("(") + 1:-1])
