"""Benchmark: exact linear-CNN dynamics (`linearcnn.dynamics.simulate`) vs running gradient descent.

    .venv/bin/python benchmarks/bench_simulate.py [--data builtin] [--limit 500] [--filters 16]
        [--kernel 3] [--steps 1000] [--lr 0.01] [--threads 1] [--out benchmarks/results/simulate.json]

Both sides start from the same data, targets and initial filters, built as `linearcnn train
--arch linear` builds them (per-channel normalisation, y = +-1 by class parity, seeded init):

(a) the baseline: `--steps` full-batch GD steps of `LinearCNN` in torch on the CPU (MSELoss,
    torch.optim.SGD), timed in float64 (the precision of the comparison) and in float32 (torch's
    fast convolution path, what training would use); the filters are kept at 1, 10, 100, ...;
(a') the strong baseline: the same GD in float64 on precomputed mean-patch features
    (`run_feature_gd`; the linear CNN is exactly linear in them), feature pass included;
(b) `simulate`: one moment pass over the same data, eigh of A, closed form at the same step
    counts. Timed warm (median of `--repeats`); the first call in a process also pays the one-off
    SymPy derivation behind `growth_factor`, reported separately as `simulate_cold_seconds`.

Reports the speedups (goal >= 100x against the faster baseline) and the largest relative error of
the filters (and of their change from the initialisation) between (a) and (b), float64 and
float32. With CUDA present it also runs the float32 GD on the GPU and reports its error.
`--threads` sets torch's CPU threads for both sides (1 by default: on a shared machine more threads
than free cores make every step many times slower and the ratio meaningless).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _reference import machine_info, measured_at

from linearcnn._files import atomic_write_text
from linearcnn.data import load_dataset
from linearcnn.dynamics import simulate
from linearcnn.models import build_model, first_layer
from linearcnn.train import TrainConfig, prepare_training_data

RESULTS = Path(__file__).resolve().parent / "results" / "simulate.json"


def snapshot_steps(total: int) -> list[int]:
    """0, 1, 10, 100, ... up to and including `total`."""
    steps = [0] + [10**i for i in range(int(math.log10(total)) + 1) if 10**i < total] + [total]
    return sorted(set(steps))


def run_gd(images: torch.Tensor, targets: torch.Tensor, initial: torch.Tensor, lr: float, steps: list[int],
           dtype: torch.dtype, device: str = "cpu") -> tuple[np.ndarray, float]:
    """Full-batch GD of LinearCNN; returns the filters at `steps` (float64) and the seconds it took."""
    k_out, channels, k, _ = initial.shape
    model = build_model("linear", channels, 2, width=k_out, kernel_size=k).to(device=device, dtype=dtype)
    with torch.no_grad():
        model.conv.weight.copy_(initial)
    x = images.to(device=device, dtype=dtype)  # (N, C, H, W)
    y = targets.to(device=device, dtype=dtype)  # (N,)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.MSELoss()
    keep = set(steps)
    kept = {0: model.conv.weight.detach().clone()} if 0 in keep else {}
    if device != "cpu":
        torch.cuda.synchronize()  # sync: start the clock with an idle device
    start = time.perf_counter()
    for step in range(1, max(steps) + 1):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if step in keep:
            kept[step] = model.conv.weight.detach().clone()
    if device != "cpu":
        torch.cuda.synchronize()  # sync: stop the clock when the device is done
    seconds = time.perf_counter() - start
    return np.stack([kept[s].double().cpu().numpy() for s in steps]), seconds


def run_feature_gd(images: torch.Tensor, targets: torch.Tensor, initial: torch.Tensor, lr: float, steps: list[int]
                   ) -> tuple[np.ndarray, float]:
    """The strong baseline: the same full-batch GD in float64, on precomputed mean-patch features.

    The linear CNN's output is mean_k(w_k) . pbar(x) exactly (`linearcnn.patches.mean_patches`), so
    GD needs only the (N, d) features: one pass over the images (timed), then each step is two small
    matrix products. Returns the filters at `steps` and the seconds (feature pass included)."""
    from linearcnn.patches import mean_patches

    k_out, _, k, _ = initial.shape
    start = time.perf_counter()
    features = mean_patches(images.double(), k)  # (N, d)
    weights = initial.reshape(k_out, -1).clone().requires_grad_(True)  # (K, d)
    optimizer = torch.optim.SGD([weights], lr=lr)
    loss_fn = torch.nn.MSELoss()
    y = targets.double()  # (N,)
    keep = set(steps)
    kept = {0: weights.detach().clone()} if 0 in keep else {}
    for step in range(1, max(steps) + 1):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(features @ weights.mean(dim=0), y).backward()
        optimizer.step()
        if step in keep:
            kept[step] = weights.detach().clone()
    seconds = time.perf_counter() - start
    return np.stack([kept[s].reshape(initial.shape).numpy() for s in steps]), seconds


def errors(predicted: np.ndarray, actual: np.ndarray, initial: np.ndarray) -> dict[str, float]:
    """Largest relative Frobenius error over the steps, of the filters and of their change."""
    filters, changes = [], []
    for p, a in zip(predicted, actual):
        filters.append(np.linalg.norm(p - a) / np.linalg.norm(a))
        change = np.linalg.norm(a - initial)
        if change > 0:
            changes.append(np.linalg.norm((p - initial) - (a - initial)) / change)
    return {"max_relative_error_filters": float(max(filters)), "max_relative_error_change": float(max(changes, default=0.0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--labels", default="true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = TrainConfig(arch="linear", data=args.data, labels=args.labels, lr=args.lr, seed=args.seed,
                         width=args.filters, kernel_size=args.kernel, limit=args.limit, precision="float64",
                         device="cpu").validate().resolved()
    dataset = load_dataset(config.data, limit=config.limit)
    data = prepare_training_data(config, dataset, torch.device("cpu"), torch.float64)
    with torch.random.fork_rng(devices=[]):  # the initial filters of `linearcnn train --seed`
        torch.manual_seed(config.seed)
        initial = first_layer(build_model("linear", data.images.shape[1], 2, width=args.filters,
                                          kernel_size=args.kernel, init_std=config.init_std)).weight.detach().double()
    steps = snapshot_steps(args.steps)
    n = data.images.shape[0]
    print(f"{args.data}: {n} images {tuple(data.images.shape[1:])}, {args.filters} filters {args.kernel}x{args.kernel}, "
          f"lr {args.lr}, {args.steps} steps, {torch.get_num_threads()} thread(s)", flush=True)

    start = time.perf_counter()
    sim = simulate(data.images, data.targets, initial, args.lr, steps, device="cpu")
    cold = time.perf_counter() - start
    warm_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sim = simulate(data.images, data.targets, initial, args.lr, steps, device="cpu")
        warm_times.append(time.perf_counter() - start)
    warm = float(np.median(warm_times))
    print(f"simulate: {warm * 1e3:.1f} ms warm (median of {args.repeats}), {cold:.2f} s cold (first call, SymPy derivation)",
          flush=True)

    gd64, seconds64 = run_gd(data.images, data.targets, initial, args.lr, steps, torch.float64)
    print(f"torch GD float64: {seconds64:.1f} s for {args.steps} steps", flush=True)
    gd32, seconds32 = run_gd(data.images, data.targets, initial, args.lr, steps, torch.float32)
    print(f"torch GD float32: {seconds32:.1f} s for {args.steps} steps", flush=True)
    features_gd, seconds_features = run_feature_gd(data.images, data.targets, initial, args.lr, steps)
    print(f"GD on mean-patch features, float64: {seconds_features:.3f} s for {args.steps} steps", flush=True)
    w0 = initial.numpy()
    result = {
        "benchmark": "simulate",
        "command": "python " + " ".join(sys.argv),
        "date": measured_at(),
        "machine": machine_info(),
        "config": {**vars(args), "out": str(args.out), "num_images": n, "steps_compared": steps,
                   "max_stable_lr": sim.max_stable_lr, "eta_times_max_eigenvalue": sim.eta * float(sim.a_eigenvalues[0]),
                   "threads": torch.get_num_threads()},
        "simulate_seconds": warm,
        "simulate_cold_seconds": cold,
        "gd_float64_seconds": seconds64,
        "gd_float32_seconds": seconds32,
        "speedup_vs_float64": seconds64 / warm,
        "speedup_vs_float32": seconds32 / warm,
        "speedup_vs_float32_cold": seconds32 / cold,
        "gd_mean_patch_features_seconds": seconds_features,
        "speedup_vs_mean_patch_features": seconds_features / warm,
        "mean_patch_features": errors(sim.filters, features_gd, w0),
        "float64": errors(sim.filters, gd64, w0),
        "float32_cpu": errors(sim.filters, gd32, w0),
    }
    if torch.cuda.is_available():
        gd_cuda, seconds_cuda = run_gd(data.images, data.targets, initial, args.lr, steps, torch.float32, "cuda")
        result["gd_float32_cuda_seconds"] = seconds_cuda
        result["float32_cuda"] = errors(sim.filters, gd_cuda, w0)
    result["speedup"] = min(result["speedup_vs_float64"], result["speedup_vs_float32"])
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "config")}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
