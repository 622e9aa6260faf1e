"""Benchmark: fitting the formula, in one run: the vectorised search against the scalar search it
replaced, and against the reference grid search.

    .venv/bin/python benchmarks/bench_fit.py                      # both comparisons
    .venv/bin/python benchmarks/bench_fit.py --skip-reference     # only vectorised vs scalar
    .venv/bin/python benchmarks/bench_fit.py --sizes 9,27,147,768 --bootstrap 200 --raw-bootstrap 20

Vectorised vs scalar (issue #14): `scalar_fit` below is the search of `fit_formula` before it
was vectorised (one bounded Brent search per grid maximum, one formula evaluation per Python
call; Nelder-Mead for the raw family), kept here as the baseline. For d = --sizes components and
--profiles synthetic profiles each (formula at a random tau times folded-Gaussian noise), it times
both (interleaved, best of --repeats) for the one-parameter and the raw (two-parameter) fit, and
the bootstrap of `fit_filters` (64 filters, --bootstrap resamples; --raw-bootstrap for the raw
family) against the per-resample loop, and prints the ratios (scalar seconds / vectorised
seconds), the largest |delta correlation| (vectorised - scalar) and |delta tau| / tau, and the
largest relative difference of the bootstrap intervals. Writes benchmarks/results/fit_speed.json.

Reference (PAPER.md section 5): for each of --profiles profiles (d = 27) it times `reference_fit`
(a Python loop over 19,960 step counts, `--reference PATH` for another baseline file) and
`linearcnn.fit_formula` on the same profile, and compares the correlations. Ours fits the same
discrete family as the reference (lr = its x / eigenvalue) and also the gradient-flow family.
Writes benchmarks/results/fit.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from _reference import load_reference, machine_info, measured_at
from scipy.optimize import minimize, minimize_scalar

from linearcnn._fit_search import EARLY_X, RATIO_MAX, RATIO_MIN, WHITE_X
from linearcnn.energy import energy_profile, pearson
from linearcnn.fit import fit_filters, fit_formula
from linearcnn.theory import gradient_flow_profile
from linearcnn.theory.numeric import evaluate_unchecked

RESULTS = Path(__file__).resolve().parent / "results" / "fit.json"
SPEED_RESULTS = Path(__file__).resolve().parent / "results" / "fit_speed.json"


def _command() -> str:
    """The command line that ran this benchmark, as recorded in its results."""
    return " ".join(["python", "benchmarks/bench_fit.py", *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=5, help="synthetic profiles per size (and for the reference)")
    parser.add_argument("--sizes", default="9,27,147,768", help="components d of the vectorised-vs-scalar comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats, best of (the raw fit: a third as many)")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples of the bootstrap comparison")
    parser.add_argument("--raw-bootstrap", type=int, default=20, help="resamples of the raw-family bootstrap comparison")
    parser.add_argument("--skip-scalar", action="store_true", help="skip the vectorised-vs-scalar comparison")
    parser.add_argument("--skip-reference", action="store_true", help="skip the comparison with the reference grid search")
    parser.add_argument("--reference", default=None, help="a Python file defining the reference baseline")
    parser.add_argument("--reference-repeats", type=int, default=20, help="timing repeats for ours against the reference (median)")
    args = parser.parse_args()
    fit_formula(np.array([3.0, 2.0, 1.0]), np.array([1.0, 0.5, 0.1]))  # warm-up: SymPy derivation + lambdify
    if not args.skip_scalar:
        compare_scalar(args)
    if not args.skip_reference:
        compare_reference(args)


def _best_of(repeats: int, *calls):
    """Best-of-`repeats` seconds of each call, the calls interleaved within every repeat."""
    best = [math.inf] * len(calls)
    for _ in range(repeats):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def compare_scalar(args: argparse.Namespace) -> None:
    """The vectorised search against the scalar one it replaced: benchmarks/results/fit_speed.json."""
    rows = []
    for d in (int(s) for s in args.sizes.split(",")):
        for seed in range(args.profiles):
            rng = np.random.default_rng(1000 * d + seed)
            mu = np.sort(10 ** rng.uniform(-4, 0, d))[::-1]
            profile = gradient_flow_profile(mu, 10 ** rng.uniform(0.5, 4)) * np.abs(1 + 0.3 * rng.normal(size=d))
            for raw in (False, True):
                old_s, new_s = _best_of(max(1, args.repeats // 3) if raw else args.repeats,
                                        partial(scalar_fit, profile, mu, raw=raw), partial(fit_formula, profile, mu, raw=raw))
                log_tau, _, old_corr = scalar_fit(profile, mu, raw=raw)
                new = fit_formula(profile, mu, raw=raw)
                rows.append({"what": "raw fit" if raw else "fit", "d": d, "seed": seed, "scalar_seconds": old_s,
                             "vectorised_seconds": new_s, "ratio": old_s / new_s, "delta_correlation": new.correlation - old_corr,
                             "relative_delta_tau": abs(new.tau / math.exp(log_tau) - 1)})
        rng = np.random.default_rng(d)
        mu = np.sort(10 ** rng.uniform(-4, 0, d))[::-1]
        u = np.linalg.qr(rng.normal(size=(d, d)))[0]  # (d, d) orthonormal eigenvectors
        w = (rng.normal(size=(64, d)) * gradient_flow_profile(mu, 30.0)) @ u.T  # (K, d) filters
        for raw, resamples in ((False, args.bootstrap), (True, args.raw_bootstrap)):
            if resamples <= 0:
                continue
            start = time.perf_counter()
            scalar_fit(energy_profile(w, u), mu, raw=raw)  # the point fit, as fit_filters does first
            old_interval = scalar_bootstrap(w, mu, u, raw=raw, resamples=resamples)
            old_s = time.perf_counter() - start
            start = time.perf_counter()
            new = fit_filters(w, mu, u, raw=raw, bootstrap=resamples)
            new_s = time.perf_counter() - start
            rows.append({"what": f"{'raw ' if raw else ''}bootstrap x{resamples}", "d": d, "seed": 0, "scalar_seconds": old_s,
                         "vectorised_seconds": new_s, "ratio": old_s / new_s,
                         "interval_relative_delta": max(abs(n / o - 1) for key in ("correlation", "tau")
                                                        for n, o in zip(new.interval[key], old_interval[key]))})
        for r in (r for r in rows if r["d"] == d):
            extra = (f"d corr {r['delta_correlation']:+.1e}  |d tau|/tau {r['relative_delta_tau']:.1e}" if "delta_correlation" in r
                     else f"intervals differ by {r['interval_relative_delta']:.1e} (relative)")
            print(f"d={d:4d} {r['what']:<20} scalar {r['scalar_seconds'] * 1e3:9.2f} ms  vectorised {r['vectorised_seconds'] * 1e3:8.2f} ms"
                  f"  ratio {r['ratio']:6.1f}x  {extra}", flush=True)
    fits = [r for r in rows if "delta_correlation" in r]
    summary = {
        **{f"median_ratio_{what.replace(' ', '_')}": float(np.median([r["ratio"] for r in fits if r["what"] == what]))
           for what in ("fit", "raw fit")},
        "ratio_by_row": {f"{r['what']} d={r['d']} seed={r['seed']}": round(r["ratio"], 2) for r in rows},
        "max_abs_delta_correlation": max(abs(r["delta_correlation"]) for r in fits),
        "min_delta_correlation": min(r["delta_correlation"] for r in fits),
        "max_relative_delta_tau": max(r["relative_delta_tau"] for r in fits),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "ratio_by_row"}, indent=2))
    SPEED_RESULTS.parent.mkdir(exist_ok=True)
    SPEED_RESULTS.write_text(json.dumps({"benchmark": "fit_speed", "command": _command(), "date": measured_at(),
                                         "machine": machine_info(), "summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"wrote {SPEED_RESULTS}")


def compare_reference(args: argparse.Namespace) -> None:
    """Ours against the reference grid search (as before issue #14): benchmarks/results/fit.json."""
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
        for _ in range(args.reference_repeats):
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
    RESULTS.write_text(json.dumps({"benchmark": "fit", "command": _command(), "date": measured_at(),
                                   "machine": machine_info(), "summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")



# --------------------------------------------------------------------------------------------
# the scalar search the vectorised one replaced (linearcnn/fit.py before issue #14), kept here
# as the baseline: the same grid, then one bounded Brent search per grid maximum, one formula
# evaluation per Python call (and Nelder-Mead for the raw family's second parameter)


def scalar_fit(profile, mu, *, lr=None, raw=False, grid_points=384):
    """(log tau, r or None, correlation) of the pre-#14 `fit_formula` search, step for step."""
    p = np.asarray(profile, dtype=np.float64)
    lo, hi = math.log(EARLY_X / mu.max()), math.log(WHITE_X / mu.min())
    grid = np.linspace(lo, hi, grid_points)

    def family(log_tau, ratio=0.0):
        tau = np.exp(log_tau)
        base = evaluate_unchecked("flow_profile", mu, [tau]) if lr is None else evaluate_unchecked("profile_stable", mu, [lr, tau / lr])
        if not raw:
            return base
        init_ratio = np.asarray(ratio) * np.max(base, axis=-1)
        if lr is None:
            return evaluate_unchecked("raw_flow_profile", mu, [tau, init_ratio])
        return evaluate_unchecked("raw_profile_stable", mu, [lr, tau / lr, init_ratio])

    def scores_of(candidates):
        return pearson(candidates, p, undefined=0.0)

    def one(lt):
        return scores_of(family(np.atleast_1d(lt)))[0]

    scores = scores_of(family(grid))
    best_log_tau, best_ratio = _refine_1d(one, grid, scores), None
    if raw:
        candidates = [(one(best_log_tau), best_log_tau, 0.0)]
        log_tau_2d, ratio_2d = np.meshgrid(grid[::4], np.logspace(-3, 2, 40), indexing="ij")
        scores_2d = scores_of(family(log_tau_2d.ravel(), ratio_2d.ravel()))
        i = int(np.argmax(scores_2d))
        candidates.append((scores_2d[i], float(log_tau_2d.ravel()[i]), float(ratio_2d.ravel()[i])))
        log_r_lo, log_r_hi = math.log(RATIO_MIN), math.log(RATIO_MAX)

        def negative(params):
            lt = float(np.clip(params[0], lo, hi))
            ratio = math.exp(float(np.clip(params[1], log_r_lo, log_r_hi)))
            return -scores_of(family(np.array([lt]), np.array([ratio])))[0]

        for _, lt, ratio in list(candidates):
            start = np.array([lt, math.log(min(max(ratio, RATIO_MIN), RATIO_MAX))])
            refined = minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-13, "maxiter": 600})
            candidates.append((-refined.fun, float(np.clip(refined.x[0], lo, hi)),
                               math.exp(float(np.clip(refined.x[1], log_r_lo, log_r_hi)))))
        _, best_log_tau, best_ratio = max(candidates, key=lambda c: c[0])
    fitted = family(np.array([best_log_tau]), np.array([best_ratio or 0.0]))[0]
    return best_log_tau, best_ratio, float(scores_of(fitted[None, :])[0])


def _refine_1d(score, grid, scores, starts=3):
    best_x, best_s = float(grid[int(np.argmax(scores))]), float(np.max(scores))
    step = grid[1] - grid[0]
    local_max = np.flatnonzero((scores >= np.roll(scores, 1)) & (scores >= np.roll(scores, -1))
                               | (np.arange(grid.size) == 0) | (np.arange(grid.size) == grid.size - 1))
    for i in sorted(local_max, key=lambda k: -scores[k])[:starts]:
        a, b = max(grid[0], grid[i] - step), min(grid[-1], grid[i] + step)
        res = minimize_scalar(lambda lt: -score(lt), bounds=(a, b), method="bounded", options={"xatol": 1e-7})
        if -res.fun > best_s:
            best_x, best_s = float(res.x), float(-res.fun)
    return best_x


def scalar_bootstrap(w, mu, u, *, raw=False, resamples=200, seed=0):
    """The pre-#14 bootstrap of `fit_filters`: one profile and one scalar fit per resample."""
    rng = np.random.default_rng(seed)
    correlations, taus = [], []
    for _ in range(resamples):
        profile = energy_profile(w[rng.integers(0, w.shape[0], size=w.shape[0])], u)
        if np.ptp(profile) == 0:
            continue
        log_tau, _, correlation = scalar_fit(profile, mu, raw=raw, grid_points=128)
        correlations.append(correlation)
        taus.append(math.exp(log_tau))
    return {"correlation": np.percentile(correlations, [2.5, 97.5]).tolist(), "tau": np.percentile(taus, [2.5, 97.5]).tolist()}


if __name__ == "__main__":
    main()
