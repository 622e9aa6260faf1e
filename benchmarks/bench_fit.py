"""Benchmark: fitting the formula, ours vs the reference grid search, in one run.

    .venv/bin/python benchmarks/bench_fit.py [--profiles 5] [--reference PATH]

For each of several synthetic profiles (formula profile at a random tau, multiplied by
folded-Gaussian noise, d = 27 = 3x3x3 patches) it times `reference_fit` (a Python loop over
19,960 step counts) and `linearcnn.fit_formula` on the same profile, and compares the
correlations. Ours fits the same discrete family as the reference (lr = its x / eigenvalue) and
also the gradient-flow family. Writes benchmarks/results/fit.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _reference import load_reference, machine_info

from linearcnn.fit import fit_formula
from linearcnn.theory import gradient_flow_profile

RESULTS = Path(__file__).resolve().parent / "results" / "fit.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=5)
    parser.add_argument("--reference", default=None)
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats for ours (median)")
    args = parser.parse_args()
    ref = load_reference(args.reference)
    num_images, patches_per_image = 10_000, 900
    rows = []
    fit_formula(np.array([3.0, 2.0, 1.0]), np.array([1.0, 0.5, 0.1]))  # warm-up: SymPy derivation + lambdify
    for seed in range(args.profiles):
        rng = np.random.default_rng(seed)
        mu = np.sort(10 ** rng.uniform(-4, 0, 27))[::-1]
        tau = 10 ** rng.uniform(0.5, 4)
        profile = gradient_flow_profile(mu, tau) * np.abs(1 + 0.3 * rng.normal(size=mu.size))
        singular = np.sqrt(mu * num_images * patches_per_image)
        lr_equiv = 1e-7 * patches_per_image / 2  # the reference's x = lr_equiv * mu
        start = time.perf_counter()
        ref_corr, ref_step, _ = ref.reference_fit(profile, singular, num_images)
        ref_time = time.perf_counter() - start
        ours_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = fit_formula(profile, mu, lr=lr_equiv)
            ours_times.append(time.perf_counter() - start)
        flow = fit_formula(profile, mu)
        rows.append({
            "seed": seed, "true_tau": tau,
            "reference_seconds": ref_time, "reference_correlation": float(ref_corr), "reference_step": ref_step,
            "ours_seconds": float(np.median(ours_times)), "ours_correlation": ours.correlation,
            "ours_steps": ours.steps, "ours_gradient_flow_correlation": flow.correlation,
            "speedup": ref_time / float(np.median(ours_times)),
            "correlation_gain": ours.correlation - float(ref_corr),
        })
        r = rows[-1]
        print(f"profile {seed}: reference {r['reference_seconds']:.2f} s corr {r['reference_correlation']:.6f} | "
              f"ours {r['ours_seconds']*1e3:.1f} ms corr {r['ours_correlation']:.6f} | speedup {r['speedup']:.0f}x")
    summary = {
        "min_speedup": min(r["speedup"] for r in rows),
        "median_speedup": float(np.median([r["speedup"] for r in rows])),
        "min_correlation_gain": min(r["correlation_gain"] for r in rows),
        "ours_never_lower": all(r["correlation_gain"] >= -1e-12 for r in rows),
    }
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "fit", "command": "python benchmarks/bench_fit.py",
                                   "machine": machine_info(), "summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
