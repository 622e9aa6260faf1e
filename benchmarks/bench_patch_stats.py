"""Benchmark: patch statistics, ours vs the reference unfold + pca_lowrank, in one run.

    .venv/bin/python benchmarks/bench_patch_stats.py [--images 10000] [--max-images 1000000]
                                                      [--repeats 5] [--reference PATH]

1. Same images for both: `natural_like_images(--images)` (the reference's 1/f generator), saved
   once to a temporary .npy. Each method runs in its own fresh subprocess that loads that file,
   so peak resident memory (VmHWM, reset just before the call where the kernel allows) is the
   method's own, not the other's (workers run with MALLOC_MMAP_THRESHOLD_=1 MiB, see `spawn`).
   Wall and CPU seconds and the load average are recorded: the machine may be shared. The
   reference `reference_patch_pca` runs once (it takes tens of seconds); ours (`patch_stats(...,
   centered=True)`, as pca_lowrank centres the data) runs `--repeats` times. Eigenvalues are
   compared as ours vs s^2 / M (M = number of patches; pca_lowrank's singular values of the
   centred patch matrix), in the same (C, k, k) order.
2. Centred vs uncentred: on the same images normalised per channel (as training does) and on the
   built-in photo set, how far apart the two decompositions are.
3. Memory flatness: ours on 1e4, 1e5 and 1e6 images (capped by --max-images) streamed as
   generated batches (so it is not the data that fills memory), peak RSS of each run.

Prints a table and writes benchmarks/results/patch_stats.json with the machine information.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _reference import DEFAULT as DEFAULT_REFERENCE  # benchmarks/ is on sys.path: scripts run from it
from _reference import load_reference, machine_info

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "patch_stats.json"
STREAM_BATCH = 1000  # generated images per streamed batch


# ----------------------------------------------------------------------------- memory helpers
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _mib(kib: int) -> float:
    return kib / 1024.0


# ---------------------------------------------------------------------------------- workers
def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Runs inside a fresh subprocess; returns timings, memory and eigenvalues."""
    import torch

    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    if args.worker in ("reference", "ours"):
        images = torch.from_numpy(np.load(args.data))  # (N, C, H, W) float32
        num_patches = images.shape[0] * (images.shape[2] - args.kernel + 1) * (images.shape[3] - args.kernel + 1)
        if args.worker == "reference":
            ref = load_reference(args.reference)

            def run() -> np.ndarray:
                s, _ = ref.reference_patch_pca(images, args.kernel)
                return (s.double().numpy() ** 2) / num_patches  # centred covariance eigenvalues

        else:
            from linearcnn.patches import patch_stats

            patch_stats(images[:64], args.kernel, centered=True, device="cpu")  # warm-up (imports, MKL)

            def run() -> np.ndarray:
                return patch_stats(images, args.kernel, centered=True, device="cpu").eigenvalues

        result["rss_before_mib"] = _mib(_status_kib("VmRSS"))
        result["peak_reset"] = _reset_peak()
        result["load_average_before"] = os.getloadavg()
        times, cpu_times = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            eigenvalues = run()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        result.update(times=times, cpu_times=cpu_times, eigenvalues=eigenvalues.tolist(), num_patches=int(num_patches))
        result["load_average_after"] = os.getloadavg()
    else:  # stream
        ref = load_reference(args.reference)
        from linearcnn.patches import patch_stats

        generate_seconds = [0.0]

        def batches():
            made = 0
            seed = 0
            while made < args.images:
                count = min(STREAM_BATCH, args.images - made)
                start = time.perf_counter()
                batch = ref.natural_like_images(count, seed=seed)  # (count, 3, 32, 32)
                generate_seconds[0] += time.perf_counter() - start
                made += count
                seed += 1
                yield batch

        patch_stats(ref.natural_like_images(8), args.kernel, device="cpu")  # warm-up
        result["rss_before_mib"] = _mib(_status_kib("VmRSS"))
        result["peak_reset"] = _reset_peak()
        result["load_average_before"] = os.getloadavg()
        start = time.perf_counter()
        stats = patch_stats(batches(), args.kernel, centered=True, device="cpu", batch_size=STREAM_BATCH)
        total = time.perf_counter() - start
        result["load_average_after"] = os.getloadavg()
        result.update(total_seconds=total, generate_seconds=generate_seconds[0],
                      stats_seconds=total - generate_seconds[0], num_images=stats.num_images,
                      num_patches=stats.num_patches, top_eigenvalue=float(stats.eigenvalues[0]))
    # VmHWM: this process's peak since the reset (or since exec). Not ru_maxrss, which on Linux
    # keeps the parent's RSS at fork time across exec.
    result["peak_rss_mib"] = _mib(_status_kib("VmHWM"))
    return result


def spawn(mode: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--kernel", str(args.kernel)]
    if args.reference:
        command += ["--reference", args.reference]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    # A fixed malloc mmap threshold (for every method alike): glibc otherwise raises it after
    # freeing large blocks and keeps later freed temporaries (e.g. the image generator's FFT
    # buffers) in the heap, so peak RSS would grow with fragmentation rather than live memory.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20))
    completed = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        sys.exit(f"error: worker {mode} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------- centred vs uncentred
def centring_effect(images: np.ndarray, kernel: int) -> dict[str, Any]:
    """How far apart the uncentred and centred decompositions are, on several image sets."""
    from linearcnn.data import load_dataset, normalize_images
    from linearcnn.patches import patch_stats

    def compare(name: str, pixels: np.ndarray) -> dict[str, Any]:
        unc = patch_stats(pixels, kernel, centered=False, device="cpu")
        cen = patch_stats(pixels, kernel, centered=True, device="cpu")
        cosines = np.abs(np.sum(unc.eigenvectors * cen.eigenvectors, axis=0))  # |u_i . v_i|
        return {
            "images": name,
            "max_rel_eigenvalue_diff": float(np.max(np.abs(unc.eigenvalues - cen.eigenvalues) / cen.eigenvalues)),
            "top_rel_eigenvalue_diff": float((unc.eigenvalues[0] - cen.eigenvalues[0]) / cen.eigenvalues[0]),
            "mean_patch_share_of_trace": float(cen.mean @ cen.mean / np.trace(cen.second_moment)),
            "min_abs_cos_matching_eigenvectors": float(np.min(cosines)),
            "min_abs_cos_top5": float(np.min(cosines[:5])),
        }

    flat = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1).astype(np.float64)
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    rows = [compare("natural_like, normalised per channel", normalize_images(images, mean, std))]
    builtin = load_dataset("builtin")
    rows.append(compare("builtin photos, normalised per channel", builtin.normalized()))
    rows.append(compare("builtin photos, raw [0, 1] pixels", builtin.images))
    return {"rows": rows}


# ------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images for the side-by-side comparison")
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats for ours (the reference runs once)")
    parser.add_argument("--max-images", type=int, default=1_000_000, help="largest streamed run (1e4, 1e5, 1e6 up to this)")
    parser.add_argument("--reference", default=None, help=f"reference_method.py (default {DEFAULT_REFERENCE})")
    parser.add_argument("--skip-reference", action="store_true", help="only time ours (no ratios)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", choices=["reference", "ours", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from linearcnn._files import atomic_write_text, check_writable_file

    ref = load_reference(args.reference)  # fails early with a clear message if absent
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_writable_file(out, "results file")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    images = ref.natural_like_images(args.images).numpy()  # (N, 3, 32, 32) float32
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "started": started,
        "machine": machine_info(),
        "load_average_at_start": load_start,
        "images": args.images, "kernel": args.kernel, "image_shape": list(images.shape[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "images.npy")
        np.save(data, images)
        ours = spawn("ours", args, data=data, repeats=args.repeats)
        reference = None if args.skip_reference else spawn("reference", args, data=data, repeats=1)
    ours_median = float(np.median(ours["times"]))
    ours_min = float(np.min(ours["times"]))
    side = {"ours": ours, "ours_median_seconds": ours_median, "ours_min_seconds": ours_min}
    if reference is not None:
        ref_time = reference["times"][0]
        ours_ev, ref_ev = np.array(ours["eigenvalues"]), np.array(reference["eigenvalues"])
        side.update(
            reference=reference,
            reference_seconds=ref_time,
            speedup_median=ref_time / ours_median,
            speedup_best=ref_time / ours_min,
            reference_cpu_seconds=reference["cpu_times"][0],
            ours_median_cpu_seconds=float(np.median(ours["cpu_times"])),
            cpu_time_ratio=reference["cpu_times"][0] / float(np.median(ours["cpu_times"])),
            peak_rss_ratio=reference["peak_rss_mib"] / ours["peak_rss_mib"],
            peak_increment_ratio=(reference["peak_rss_mib"] - reference["rss_before_mib"])
            / max(ours["peak_rss_mib"] - ours["rss_before_mib"], 1e-3),
            max_rel_eigenvalue_diff=float(np.max(np.abs(ours_ev - ref_ev) / ours_ev)),
        )
    report["side_by_side"] = side
    report["centring"] = centring_effect(images, args.kernel)
    scales = [n for n in (10_000, 100_000, 1_000_000) if n <= args.max_images] or [args.max_images]
    report["memory_flatness"] = [spawn("stream", args, images=n) for n in scales]
    report["load_average_at_end"] = os.getloadavg()
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {out}")


def print_table(report: dict[str, Any]) -> None:
    side = report["side_by_side"]
    ours = side["ours"]
    print(f"\npatch statistics, {report['images']:,} natural-like {report['image_shape']} images, "
          f"k={report['kernel']}, {ours['threads']} threads, load average {report['load_average_at_start'][0]:.2f}")
    print(f"{'method':<34}{'seconds':>10}{'CPU s':>9}{'peak RSS MiB':>14}{'above start MiB':>17}")
    if "reference" in side:
        r = side["reference"]
        print(f"{'reference unfold + pca_lowrank':<34}{side['reference_seconds']:>10.2f}{r['cpu_times'][0]:>9.2f}"
              f"{r['peak_rss_mib']:>14.0f}{r['peak_rss_mib'] - r['rss_before_mib']:>17.0f}")
    print(f"{'ours patch_stats (median)':<34}{side['ours_median_seconds']:>10.3f}"
          f"{float(np.median(ours['cpu_times'])):>9.3f}"
          f"{ours['peak_rss_mib']:>14.0f}{ours['peak_rss_mib'] - ours['rss_before_mib']:>17.1f}")
    if "reference" in side:
        print(f"speed-up {side['speedup_median']:.1f}x (median; best {side['speedup_best']:.1f}x; "
              f"CPU time {side['cpu_time_ratio']:.1f}x less), "
              f"peak RSS {side['peak_rss_ratio']:.1f}x less (increment above start "
              f"{side['peak_increment_ratio']:.0f}x less), max relative eigenvalue difference "
              f"{side['max_rel_eigenvalue_diff']:.2e}")
    print("\ncentred vs uncentred")
    for row in report["centring"]["rows"]:
        print(f"  {row['images']:<42} max rel eigenvalue diff {row['max_rel_eigenvalue_diff']:.2e}, "
              f"mean patch share {row['mean_patch_share_of_trace']:.2e}, "
              f"min |cos| top-5 eigenvectors {row['min_abs_cos_top5']:.6f}")
    print("\nmemory flatness (ours, streamed generated batches)")
    print(f"{'images':>12}{'peak RSS MiB':>14}{'above start MiB':>17}{'stats s':>10}{'generate s':>12}")
    for row in report["memory_flatness"]:
        print(f"{row['num_images']:>12,}{row['peak_rss_mib']:>14.0f}{row['peak_rss_mib'] - row['rss_before_mib']:>17.1f}"
              f"{row['stats_seconds']:>10.2f}{row['generate_seconds']:>12.2f}")


if __name__ == "__main__":
    main()
