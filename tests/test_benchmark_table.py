"""The README's benchmark table (`benchmarks/readme_table.py`): each results file kind's formatter on a
small hand-made file, unknown and broken files, the README block rewrite, and the README's block
against the committed `benchmarks/results`.

Each formatter test checks the ratio it prints against the one computed here from the file's
absolute numbers, so a formatter that reads the wrong field or inverts a ratio fails.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_table_module() -> ModuleType:
    """benchmarks/ is not a package: import readme_table.py from its path."""
    spec = importlib.util.spec_from_file_location("benchmarks_readme_table", ROOT / "benchmarks" / "readme_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


table = _load_table_module()

MACHINE = {"platform": "Linux-x86_64", "processor": "x86_64", "cpu_count": 4, "python": "3.11.7", "device": "cpu"}


def _row(tmp_path: Path, kind: str, data: Any) -> Any:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return table.row_for(path)


def _no_pipes(row: Any) -> None:
    for cell in row.cells():
        assert "\n" not in cell and "|" not in cell.replace("\\|", "")


# ------------------------------------------------------------------------------------- formatters
def test_patch_stats(tmp_path):
    ours_times, ref_seconds = [0.2, 0.25, 0.3], 40.0
    data = {
        "command": "python benchmarks/bench_patch_stats.py --images 500",
        "started": "2026-01-02 03:04:05",
        "machine": MACHINE,
        "load_average_at_start": [0.5, 1.0, 1.5],
        "images": 500,
        "kernel": 3,
        "side_by_side": {
            "ours": {"threads": 2, "times": ours_times, "eigenvalues": [1.0, 0.5], "peak_rss_mib": 200.0},
            "reference": {"times": [ref_seconds], "eigenvalues": [1.0, 0.5005], "peak_rss_mib": 5000.0},
        },
        "memory_flatness": [{"num_images": 1000, "peak_rss_mib": 300.2}, {"num_images": 100000, "peak_rss_mib": 301.4}],
        "large": {"anything": [1, 2, 3]},  # sections the formatter does not know are left alone
    }
    row = _row(tmp_path, "patch_stats", data)
    speedup = ref_seconds / statistics.median(ours_times)
    assert f"{speedup:.0f}x faster (40.0 s vs 250 ms median, 500 images, 3x3 patches)" in row.result
    assert f"{5000.0 / 200.0:.1f}x less peak memory (5,000 vs 200 MiB)" in row.result
    assert "eigenvalues equal to 1.0e-3 relative" in row.result
    assert "streamed 1,000 to 100,000 images in 300-301 MiB peak" in row.result
    assert row.benchmark == "patch statistics (`python benchmarks/bench_patch_stats.py --images 500`)"
    assert row.device == "CPU x86_64, 4 cores, 2 torch threads (load average 0.50 at start)"
    assert row.measured == "2026-01-02 03:04"
    assert "`benchmarks/baselines.py`" in row.baseline
    _no_pipes(row)


def test_patch_stats_old_file_without_reference_or_machine(tmp_path):
    """An older or --skip-reference file: no baseline run, no machine, no memory section."""
    row = _row(tmp_path, "patch_stats", {"command": "python benchmarks/bench_patch_stats.py --skip-reference",
                                         "side_by_side": {"ours": {"times": [0.5, 0.7, 0.6]}}})
    assert row.result == "ours only, no baseline run: 600 ms median"
    assert row.device == "not recorded" and row.measured == "-"


def test_patch_stats_with_another_reference_file(tmp_path):
    row = _row(tmp_path, "patch_stats", {"command": "python benchmarks/bench_patch_stats.py --reference authors.py"})
    assert "--reference" in row.baseline and "baselines.py" not in row.baseline
    assert row.result == "no result recorded"


def test_fit(tmp_path):
    rows: list[dict[str, Any]] = [
        {"reference_seconds": 6.0, "ours_seconds": 0.05, "reference_correlation": 0.8, "ours_correlation": 0.9},
        {"reference_seconds": 8.0, "ours_seconds": 0.04, "reference_correlation": 0.9, "ours_correlation": 0.9},
        {"reference_seconds": 10.0, "ours_seconds": 0.05, "reference_correlation": 0.7, "ours_correlation": 0.69},
    ]
    row = _row(tmp_path, "fit", {"command": "python benchmarks/bench_fit.py", "machine": MACHINE, "rows": rows})
    speedups = [r["reference_seconds"] / r["ours_seconds"] for r in rows]
    assert f"at least {min(speedups):.0f}x faster (median {statistics.median(speedups):.0f}x;" in row.result
    assert "at least 120x faster (median 200x;" in row.result
    assert "8.00 s vs 50.0 ms per fit, medians of 3 profiles" in row.result
    assert "a lower correlation on 1 of 3 profiles (by up to 1.0e-2)" in row.result
    assert row.device == "CPU x86_64, 4 cores" and row.measured == "-"


def test_fit_summary_only(tmp_path):
    row = _row(tmp_path, "fit", {"summary": {"min_speedup": 151.2, "median_speedup": 167.6, "ours_never_lower": True}})
    assert row.result == "at least 151x faster (median 168x); never a lower correlation"
    assert row.benchmark == "formula fit (`benchmarks/bench_fit.py`; its arguments are not recorded)"


def test_fit_speed(tmp_path):
    rows: list[dict[str, Any]] = [
        {"what": "fit", "d": 9, "seed": 0, "scalar_seconds": 0.004, "vectorised_seconds": 0.001, "delta_correlation": 1e-14,
         "relative_delta_tau": 2e-8},
        {"what": "fit", "d": 27, "seed": 0, "scalar_seconds": 0.006, "vectorised_seconds": 0.002, "delta_correlation": -3e-14,
         "relative_delta_tau": 1e-8},
        {"what": "raw fit", "d": 9, "seed": 0, "scalar_seconds": 0.05, "vectorised_seconds": 0.01, "delta_correlation": 0.0,
         "relative_delta_tau": 5e-7},
        {"what": "bootstrap x200", "d": 27, "seed": 0, "scalar_seconds": 1.2, "vectorised_seconds": 0.04,
         "interval_relative_delta": 4e-8},
        {"what": "raw bootstrap x20", "d": 9, "seed": 0, "scalar_seconds": 0.9, "vectorised_seconds": 0.1},
    ]
    data = {"benchmark": "fit_speed", "command": "python benchmarks/bench_fit.py --skip-reference", "machine": MACHINE, "rows": rows}
    row = _row(tmp_path, "fit_speed", data)
    fits = [r["scalar_seconds"] / r["vectorised_seconds"] for r in rows if r["what"] == "fit"]
    assert f"one-parameter fit {min(fits):.1f}-{max(fits):.1f}x" in row.result  # 3.0-4.0x
    assert f"two-parameter fit {0.05 / 0.01:.1f}x" in row.result
    assert f"200-resample bootstrap {1.2 / 0.04:.0f}x" in row.result
    assert f"two-parameter 20-resample bootstrap {0.9 / 0.1:.1f}x faster (9 to 27 components)" in row.result
    assert "same optimum to 3.0e-14 in correlation, 5.0e-7 in tau (relative), bootstrap intervals to 4.0e-8 (relative)" in row.result
    assert "200-resample bootstrap at d=27: 1.20 s vs 40.0 ms" in row.result


def test_fit_speed_falls_back_to_the_recorded_ratio(tmp_path):
    row = _row(tmp_path, "fit_speed", {"rows": [{"what": "fit", "d": 9, "ratio": 2.5}, {"what": "new kind", "ratio": 7.0}]})
    assert row.result == "one-parameter fit 2.5x, new kind 7.0x faster (9 components)"


def test_stats_cache(tmp_path):
    results = [{"kernel": 3, "data": "builtin", "first_s": 3.0, "second_s": 2.0},
               {"kernel": 7, "data": "builtin", "first_s": 4.5, "second_s": 1.5}]
    row = _row(tmp_path, "stats_cache", {"machine": MACHINE, "repeats": 2, "results": results})
    assert f"{3.0 / 2.0:.2f}x for 3x3 (2.00 s vs 3.00 s)" in row.result
    assert f"{4.5 / 1.5:.2f}x for 7x7 (1.50 s vs 4.50 s)" in row.result
    assert "data `builtin`, best of 2" in row.result
    assert row.benchmark == "patch-statistics cache (`benchmarks/bench_stats_cache.py`; its arguments are not recorded)"


def test_memory_format(tmp_path):
    contiguous, channels_last = [100.0, 120.0, 110.0], [130.0, 150.0, 140.0]
    data = {"device": "cpu", "threads": 2, "batch": 64, "command": "python benchmarks/bench_memory_format.py",
            "rows": [{"arch": "resnet20", "width": 16, "images_per_second": {"contiguous": contiguous, "channels_last": channels_last}},
                     {"arch": "vgg11-bn", "width": 32, "ratio_of_medians": 0.9}]}
    row = _row(tmp_path, "memory_format", data)
    expected = statistics.median(channels_last) / statistics.median(contiguous)
    assert f"resnet20 w16 {expected:.2f}x (140 vs 110 images/s)" in row.result
    assert "vgg11-bn w32 0.900x" in row.result and "at batch 64" in row.result
    assert row.device == "CPU, 2 torch threads"  # the file records no processor or cores: none invented


def test_simulate(tmp_path):
    data = {"command": "python benchmarks/bench_simulate.py", "machine": MACHINE, "config": {"steps": 1000, "threads": 1},
            "simulate_seconds": 0.01, "gd_float32_seconds": 20.0, "gd_float64_seconds": 50.0, "gd_mean_patch_features_seconds": 0.2,
            "float64": {"max_relative_error_filters": 5.4e-15}, "float32_cpu": {"max_relative_error_filters": 5.1e-5}}
    row = _row(tmp_path, "simulate", data)
    assert f"{20.0 / 0.01:,.0f}x faster than conv GD in float32, {50.0 / 0.01:,.0f}x than in float64" in row.result
    assert "(10.0 ms vs 20.0 s / 50.0 s, 1,000 steps)" in row.result
    assert f"{0.2 / 0.01:.1f}x faster than GD on mean-patch features (200 ms)" in row.result
    assert "filters equal to 5.4e-15 relative, float32 conv GD differs by 5.1e-5" in row.result
    assert row.baseline.startswith("1,000 steps of full-batch GD")
    assert row.device == "CPU x86_64, 4 cores, 1 torch thread"


def test_simulate_with_a_gpu(tmp_path):
    data = {"machine": {**MACHINE, "device": "cuda:NVIDIA H100 80GB HBM3"}, "simulate_seconds": 0.01, "gd_float32_seconds": 20.0,
            "gd_float32_cuda_seconds": 1.0, "float32_cuda": {"max_relative_error_filters": 2e-5}}
    row = _row(tmp_path, "simulate", data)
    assert f"{1.0 / 0.01:.0f}x faster than conv GD in float32 on the GPU (1.00 s)" in row.result
    assert "on the GPU by 2.0e-5" in row.result
    assert row.device == "NVIDIA H100 80GB HBM3; host CPU x86_64, 4 cores"


def test_train(tmp_path):
    data = {"device": "CPU x86_64, 2 cores, 2 torch threads", "date": "2026-11-30T21:10:31+00:00",
            "command": "python benchmarks/bench_train.py --steps 4", "batch_size": 256, "width": 64, "timed_steps": 4,
            "ours": {"images_per_second": 300.0, "precision": "float32"}, "reference_style": {"images_per_second": 200.0},
            "load_average_1min": {"before": 1.0, "after": 2.0}, "a_new_field": {"nested": [1, 2]}}
    row = _row(tmp_path, "train", data)
    assert row.result == f"{300.0 / 200.0:.2f}x faster (300 vs 200 images/s; VGG11-bn width 64, batch 256, 4 timed steps, ours float32)"
    assert row.device == "CPU x86_64, 2 cores, 2 torch threads (load average 1.00 before, 2.00 after)"
    assert row.measured == "2026-11-30 21:10 UTC"


def test_train_against_the_minimal_loop(tmp_path):
    rates = {"minimal": 1700.0, "minimal + channels_last": 2100.0, "ours": 2080.0, "ours --compile": 2300.0}
    data = {"device": "CPU x86_64, 2 cores, 2 torch threads", "date": "2026-12-06T19:00:00+00:00",
            "command": "python benchmarks/bench_train.py", "widths": [
                {"width": 16, "median_images_per_second": rates, "best": "ours --compile"},
                {"width": 64, "median_images_per_second": {"minimal": 200.0, "ours": 230.0}, "best": "ours"}]}
    row = _row(tmp_path, "train", data)
    assert f"width 16: ours {2080 / 1700:.2f}x the minimal loop (2,080 vs 1,700 images/s)" in row.result
    assert f"with --compile {2300 / 1700:.2f}x (2,300 images/s); fastest configuration tried: ours --compile" in row.result
    assert f"width 64: ours {230 / 200:.2f}x the minimal loop" in row.result
    assert "minimal hand-written loop" in row.baseline
    _no_pipes(row)


def test_train_old_file(tmp_path):
    row = _row(tmp_path, "train", {"ours": {"images_per_second": 50.0}, "reference_style": {"images_per_second": 40.0}})
    assert row.result == f"{50.0 / 40.0:.2f}x faster (50.0 vs 40.0 images/s)"
    assert row.measured == "-" and row.device == "not recorded"


def test_seeds(tmp_path):
    data = {"device": "CPU x86_64, 2 cores, 2 torch threads", "date": "2026-12-01T01:09:40+01:00",
            "command": "python benchmarks/bench_seeds.py --seeds 3", "arch": "vgg11-bn", "width": 16, "batch_size": 256,
            "timed_steps": 4, "seeds": 3, "one_after_another": {"seconds": 3.0, "images_per_second": 1000.0},
            "together": {"seconds": 4.0, "images_per_second": 750.0}, "ratio": 0.75, "load_average_1min": 1.5}
    row = _row(tmp_path, "seeds", data)
    assert row.result.startswith(f"{3.0 / 4.0:.3f}x: {4.0 / 3.0:.2f}x slower (750 vs 1,000 images/s; vgg11-bn, width 16")
    assert row.benchmark == "3 seeds together (`python benchmarks/bench_seeds.py --seeds 3`)"
    assert row.measured == "2026-12-01 00:09 UTC"  # converted to UTC
    faster = _row(tmp_path, "seeds", {**data, "together": {"seconds": 1.5}})
    assert faster.result.startswith(f"{3.0 / 1.5:.2f}x faster (vgg11-bn")


def test_every_formatter_survives_an_empty_and_a_mistyped_file(tmp_path):
    for kind in table.FORMATTERS:
        for data in ({}, {"rows": "x", "results": 3, "side_by_side": [], "machine": "?", "ours": None, "config": 1}):
            row = _row(tmp_path, kind, data)
            assert row.result == "no result recorded", (kind, row)
            _no_pipes(row)


# ------------------------------------------------------------------------- unknown and broken files
def test_unknown_results_file_gets_a_row(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"ours": {"images_per_second": 2.0}, "reference_style": {"images_per_second": 1.0}}))
    (tmp_path / "mystery.json").write_text(json.dumps({"command": "python benchmarks/bench_mystery.py", "machine": MACHINE}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "notes.txt").write_text("not a results file")
    lines = table.render_table(tmp_path).splitlines()
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| training throughput")  # known kinds first, then the rest by name
    mystery = next(line for line in lines if "mystery" in line)
    assert "no formatter for this results file" in mystery and "bench_mystery.py" in mystery and "CPU x86_64, 4 cores" in mystery
    assert "could not be read" in next(line for line in lines if "broken.json" in line)
    assert "not a JSON object" in next(line for line in lines if "list.json" in line)


def test_a_formatter_that_raises_gives_a_row(tmp_path, monkeypatch):
    def explode(data):
        raise KeyError("ratio")

    monkeypatch.setitem(table.FORMATTERS, "train", explode)
    row = _row(tmp_path, "train", {"command": "python benchmarks/bench_train.py"})
    assert "could not be formatted: KeyError" in row.result


def test_missing_files_give_no_row(tmp_path):
    lines = table.render_table(tmp_path).splitlines()
    assert lines == ["| " + " | ".join(table.HEADER) + " |", "|---|---|---|---|---|"]
    with pytest.raises(FileNotFoundError):
        table.render_table(tmp_path / "absent")


# -------------------------------------------------------------------------------- the README block
def _results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps({"ours": {"images_per_second": 3.0}, "reference_style": {"images_per_second": 2.0}}))
    return folder


def test_update_readme_rewrites_only_the_block(tmp_path):
    before = "# Title\r\n\nSome text | with a pipe.\n\n" + table.BLOCK_START + "\n"
    after = table.BLOCK_END + "\n\nMore text, no trailing newline"
    readme = tmp_path / "README.md"
    readme.write_bytes((before + "| stale | table |\n|---|---|\n" + after).encode())
    results = _results(tmp_path)
    assert table.update_readme(readme, results) is True
    written = readme.read_bytes().decode()
    assert written.startswith(before) and written.endswith(after)
    assert written[len(before):len(written) - len(after)] == table.render_table(results)
    assert table.readme_block(written) == table.render_table(results)
    assert table.update_readme(readme, results) is False  # already current: unchanged
    assert readme.read_bytes().decode() == written


def test_missing_markers_are_an_error(tmp_path, capsys):
    results = _results(tmp_path)
    for text in ("# no markers\n", table.BLOCK_START + "\n", table.BLOCK_END + "\n" + table.BLOCK_START + "\n",
                 table.BLOCK_START + "\n" + table.BLOCK_START + "\n" + table.BLOCK_END + "\n"):
        with pytest.raises(table.MarkersMissing):
            table.readme_block(text)
        readme = tmp_path / "README.md"
        readme.write_text(text)
        assert table.main(["--results", str(results), "--readme", str(readme)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert readme.read_text() == text


def test_cli_prints_checks_and_updates(tmp_path, capsys):
    results = _results(tmp_path)
    assert table.main(["--results", str(results)]) == 0
    assert capsys.readouterr().out == table.render_table(results)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + table.BLOCK_START + "\nold\n" + table.BLOCK_END + "\n")
    assert table.main(["--results", str(results), "--readme", str(readme), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "out of date" in err and err.count("\n") == 1
    assert table.main(["--results", str(results), "--readme", str(readme)]) == 0
    assert table.main(["--results", str(results), "--readme", str(readme), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


# --------------------------------------------------------------------------- the repository itself
def test_every_committed_results_file_has_a_formatter():
    lines = table.render_table(ROOT / "benchmarks" / "results").splitlines()[2:]
    assert lines, "benchmarks/results holds no results files"
    for line in lines:
        assert "no formatter" not in line and "could not be" not in line and "no result recorded" not in line, line


README_TEXT = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(table.BLOCK_START not in README_TEXT, reason="README.md has no benchmark block markers yet")
def test_readme_benchmark_table_is_current():
    assert table.is_current(README_TEXT, ROOT / "benchmarks" / "results"), (
        "README.md's benchmark table is out of date: run python benchmarks/readme_table.py --readme README.md")


def test_patch_stats_large_images_get_their_own_row(tmp_path):
    case = {"case": "224x224x3 images, k=11", "ours_seconds_per_image": 0.009, "baseline_seconds_per_image": 0.25,
            "ours_images": 2000, "baseline_images": 40, "ours_gflops": 37.0, "fraction_of_gemm_rate": 0.47,
            "max_rel_diff_to_baseline": 9e-16, "command": "python benchmarks/bench_patch_stats.py --large-only --large-cases 224:11"}
    path = tmp_path / "patch_stats.json"
    path.write_text(json.dumps({"large_images": {"started": "2026-12-06 19:12:02", "machine": MACHINE, "cases": [case]}}))
    (row,) = table.extra_rows_for(path)
    assert f"{0.25 / 0.009:.1f}x faster (9 vs 250 ms per image; ours on 2,000 images, the baseline on 40)" in row.result
    assert "47% of the measured float64 GEMM rate" in row.result and "9.0e-16" in row.result
    assert "--large-cases SIZE:K" in row.benchmark
    path.write_text(json.dumps({"images": 10}))
    assert table.extra_rows_for(path) == []

