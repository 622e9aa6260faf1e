"""Benchmark: patch statistics, ours vs the reference unfold + pca_lowrank, in one run; and large
images and kernels against float64 unfold + matmul, with the arithmetic rate.

    .venv/bin/python benchmarks/bench_patch_stats.py [--images 10000] [--max-images 1000000]
                                                      [--repeats 5] [--reference PATH]
                                                      [--large-only] [--large-cases 224:7,224:11,224:16,32:3]
                                                      [--large-images 2000] [--baseline-images 40]

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
4. Large images (`--large-only` runs only this section and updates only its entry in the results
   file): for each case SIZE:K of `--large-cases` (default 224x224x3 images with k = 7, 11, 16 and
   32x32x3 with k = 3), ours (`patch_stats(..., centered=False)`, the uncentred E[p p^T]) on
   `--large-images` natural-like images (default 2,000: passes over a pool of `--pool` distinct
   generated images, made before the clock starts) against the baseline, float64
   `torch.nn.functional.unfold` of the images then `patches^T @ patches` (per image, summed, in
   batches that keep the float64 patches under 512 MiB),
   timed on the first `--baseline-images` of them (default 40) and compared per image; images
   of 64 px or less: both on `--small-images` (default 10,000), best of 3. Reported per case: seconds per image of each, the
   ratio, ours' own operation count per image (`linearcnn.patches._stream.operations_per_image`:
   2 M N K of its matrix products plus the pixel sums) and its rate in GFLOP/s, that rate as a
   fraction of the float64 GEMM rate measured in the same run (best of 5 2048x2048 float64
   matmuls, at torch's thread count and at 1 thread; the larger is the reference), the largest
   difference of ours' matrix (on the baseline's images) from the baseline's relative to its
   largest entry, and the load average before and after (the machine may be shared).

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


# -------------------------------------------------------------------------------- large images
BASELINE_BATCH_BYTES = 512 * 2**20  # largest float64 patch matrix of one baseline batch


def gemm_rate() -> dict[str, Any]:
    """Best-of-5 float64 2048x2048 matmul rate, at torch's thread count and at one thread."""
    import torch

    size = 2048
    a = torch.randn(size, size, dtype=torch.float64)
    b = torch.randn(size, size, dtype=torch.float64)
    threads = torch.get_num_threads()
    rates = {}
    try:
        for count in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(count)
            a @ b  # warm-up
            best = min(_seconds(lambda: a @ b) for _ in range(5))
            rates[count] = 2 * size**3 / best / 1e9
    finally:
        torch.set_num_threads(threads)
    return {"gflops_by_threads": {str(t): r for t, r in rates.items()}, "gflops": max(rates.values()), "size": size}


def _seconds(run, cpu: list[float] | None = None) -> float:
    """Wall seconds of run(); its process CPU seconds are appended to `cpu` if given."""
    start, cpu_start = time.perf_counter(), time.process_time()
    run()
    if cpu is not None:
        cpu.append(time.process_time() - cpu_start)
    return time.perf_counter() - start


def unfold_matmul(images, kernel: int):
    """The baseline: float64 unfold of the images, then patches^T @ patches (summed over batches
    that keep the patch matrix under BASELINE_BATCH_BYTES), in whichever of two forms ran faster
    for that image size here. Returns (sum of p p^T, number of patches)."""
    import torch

    n, c, h, w = images.shape
    d, per_image = c * kernel * kernel, (h - kernel + 1) * (w - kernel + 1)
    step = max(1, min(512, BASELINE_BATCH_BYTES // (8 * d * per_image)))
    total = torch.zeros((d, d), dtype=torch.float64)
    for start in range(0, n, step):
        patches = torch.nn.functional.unfold(images[start : start + step].double(), kernel)  # (b, d, L)
        if h * w > 64 * 64:  # large images: per image (d, L) @ (L, d), no transposed copy (faster here)
            total += torch.bmm(patches, patches.transpose(1, 2)).sum(dim=0)
        else:  # small images: one (b L, d) patch matrix, one product (a batched product of tiny ones is slower)
            rows = patches.transpose(1, 2).reshape(-1, d)
            total += rows.T @ rows
    return total, n * per_image


def large_case(size: int, kernel: int, args: argparse.Namespace, gemm: dict[str, Any]) -> dict[str, Any]:
    import torch
    from _reference import load_reference

    from linearcnn.patches import patch_stats
    from linearcnn.patches._stream import choose_method, operations_per_image

    ref = load_reference(args.reference)
    large = size > 64
    images = args.large_images if large else args.small_images
    pool_size = min(args.pool, images) if large else images
    baseline_images = args.baseline_images if large else images  # small images: the baseline is quick
    pool = ref.natural_like_images(max(pool_size, baseline_images), size=size, seed=7)  # (P, 3, S, S) float32
    shape = (int(pool.shape[1]), size, size)
    method = choose_method(shape, kernel)

    def ours_batches():
        done = 0
        while done < images:
            for start in range(0, pool_size, 500):
                count = min(500, pool_size - start, images - done)
                if count <= 0:
                    return
                yield pool[start : start + count]
                done += count

    patch_stats(pool[:8], kernel, device="cpu")  # warm-up (imports, MKL)
    load_before = os.getloadavg()
    ours_times: list[float] = []
    ours_cpu: list[float] = []
    while len(ours_times) < 3 and (not ours_times or sum(ours_times) < 2.0):  # best of up to 3 for quick cases
        ours_times.append(_seconds(lambda: patch_stats(ours_batches(), kernel, device="cpu"), ours_cpu))
    best = int(np.argmin(ours_times))
    ours_per_image = ours_times[best] / images
    subset = pool[:baseline_images]
    baseline_times: list[float] = []
    baseline_cpu: list[float] = []
    for _ in range(1 if large else 3):
        baseline_times.append(_seconds(lambda: unfold_matmul(subset, kernel), baseline_cpu))
    baseline_seconds = min(baseline_times)
    load_after = os.getloadavg()
    gemm_after = gemm_rate()
    base_sum, count = unfold_matmul(subset, kernel)
    base_matrix = (base_sum / count).numpy()
    ours_matrix = patch_stats(subset, kernel, device="cpu").second_moment
    ops = operations_per_image(shape, kernel, method)
    d = shape[0] * kernel * kernel
    baseline_ops = 2 * d * d * (size - kernel + 1) ** 2  # its matmul alone
    baseline_per_image = baseline_seconds / baseline_images
    rate = ops / ours_per_image / 1e9
    return {
        "case": f"{size}x{size}x{shape[0]} images, k={kernel}",
        "image_size": size, "kernel": kernel, "method": method, "threads": torch.get_num_threads(),
        "ours_images": images, "ours_distinct_images": pool_size, "ours_seconds": ours_times,
        "ours_seconds_per_image": ours_per_image,
        "baseline_images": baseline_images, "baseline_seconds": baseline_seconds,
        "baseline_seconds_per_image": baseline_per_image,
        "speedup_per_image": baseline_per_image / ours_per_image,
        "ours_cpu_seconds": ours_cpu, "baseline_cpu_seconds": baseline_cpu,
        "ours_operations_per_image": ops, "ours_gflops": rate, "gemm_gflops": gemm["gflops"],
        "gemm_gflops_after_case": gemm_after["gflops"],
        "fraction_of_gemm_rate": rate / gemm["gflops"],
        # Load-robust variant: ours' operations per CPU-second against the one-thread GEMM rate.
        "ours_gflops_per_cpu_second": ops * images / ours_cpu[best] / 1e9,
        "fraction_of_one_thread_gemm_per_cpu_second": ops * images / ours_cpu[best] / 1e9
        / gemm["gflops_by_threads"]["1"],
        "baseline_operations_per_image": baseline_ops, "baseline_gflops": baseline_ops / baseline_per_image / 1e9,
        "max_rel_diff_to_baseline": float(np.max(np.abs(ours_matrix - base_matrix)) / np.max(np.abs(base_matrix))),
        "load_average_before": load_before, "load_average_after": load_after,
    }


def large_images_section(args: argparse.Namespace) -> dict[str, Any]:
    gemm = gemm_rate()
    cases = []
    for spec in args.large_cases.split(","):
        size, kernel = (int(part) for part in spec.split(":"))
        cases.append(large_case(size, kernel, args, gemm))
        cases[-1]["command"] = " ".join([Path(sys.executable).name] + sys.argv)  # cases of other runs are kept
        print_large_case(cases[-1])
    return {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "gemm": gemm,
        "note": ("ours times --large-images images (passes over a pool of distinct generated images, made before the "
                 "clock starts); the baseline (float64 unfold + patches^T @ patches) is timed on the first "
                 "--baseline-images of them; both compared per image. Images of 64 px or less: both on --small-images "
                 "images, best of 3. The machine may be shared: see the load averages."),
        "cases": cases,
    }


def print_large_case(row: dict[str, Any]) -> None:
    print(f"{row['case']:<28} {row['method']:<5} ours {row['ours_seconds_per_image'] * 1e3:8.3f} ms/img "
          f"({row['ours_images']} imgs)  unfold+matmul {row['baseline_seconds_per_image'] * 1e3:8.2f} ms/img "
          f"({row['baseline_images']} imgs)  {row['speedup_per_image']:6.1f}x  {row['ours_gflops']:5.1f} GFLOP/s "
          f"= {100 * row['fraction_of_gemm_rate']:4.1f}% of GEMM {row['gemm_gflops']:.1f} "
          f"(per CPU-second {100 * row['fraction_of_one_thread_gemm_per_cpu_second']:.0f}% of 1-thread GEMM)  "
          f"max rel diff {row['max_rel_diff_to_baseline']:.1e}  load {row['load_average_before'][0]:.2f}"
          f"->{row['load_average_after'][0]:.2f}", flush=True)


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
    parser.add_argument("--large-only", action="store_true",
                        help="only the large-image section (updates only its entry in the results file)")
    parser.add_argument("--large-cases", default="224:7,224:11,224:16,32:3", help="SIZE:K,... image size and kernel")
    parser.add_argument("--large-images", type=int, default=2000, help="images ours is timed on, per case")
    parser.add_argument("--baseline-images", type=int, default=40,
                        help="images the unfold + matmul baseline is timed on (images above 64 px)")
    parser.add_argument("--small-images", type=int, default=10_000,
                        help="images of 64 px or less, for ours and the baseline (a pass takes milliseconds)")
    parser.add_argument("--pool", type=int, default=250, help="distinct generated images of more than 64 px, cycled")
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
    if args.large_only:
        previous = json.loads(out.read_text()) if out.is_file() else {}
        large = large_images_section(args)
        kept = {row["case"]: row for row in previous.get("large_images", {}).get("cases", [])}
        kept.update({row["case"]: row for row in large["cases"]})  # cases not rerun keep their last numbers
        large["cases"] = sorted(kept.values(), key=lambda row: (-row["image_size"], row["kernel"]))
        previous["large_images"] = large
        atomic_write_text(out, json.dumps(previous, indent=2) + "\n")
        print(f"wrote {out} (large_images only)")
        return
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
    print("\nlarge images: ours vs float64 unfold + matmul")
    report["large_images"] = large_images_section(args)
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
