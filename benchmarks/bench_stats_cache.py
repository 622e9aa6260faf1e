"""Benchmark: `linearcnn fit` with a cold and a warm patch-statistics cache (issue #11).

    .venv/bin/python benchmarks/bench_stats_cache.py                    # builtin, 3x3 and 7x7 layers
    .venv/bin/python benchmarks/bench_stats_cache.py --data builtin:2000 --kernels 3 --repeats 3

For each kernel size it writes a random first layer (16 filters, 3 x k x k, a plain state dict),
points `LINEARCNN_CACHE_DIR` at an empty temporary folder, and times whole `linearcnn fit`
processes (subprocess, wall clock, `--bootstrap 0 --json`): the first run computes the patch
statistics of the data set and saves them (`stats_cache: miss`), the runs after it read them back
(`hit`). Each is repeated --repeats times with a fresh cache (best of). Prints first and second
times and their ratio, checks that both print the same eigenvalues and profile, and writes
benchmarks/results/stats_cache.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _reference import machine_info

BIN = Path(sys.executable).with_name("linearcnn")


def timed_fit(checkpoint: Path, data: str, cache: Path) -> tuple[float, dict]:
    env = {**os.environ, "LINEARCNN_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    done = subprocess.run([str(BIN), "fit", "-c", str(checkpoint), "--data", data, "--bootstrap", "0", "--json"],
                          capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"linearcnn fit failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--kernels", default="3,7", help="comma-separated kernel sizes")
    parser.add_argument("--repeats", type=int, default=2, help="fresh caches per kernel (best of)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stats_cache.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for kernel in (int(k) for k in args.kernels.split(",")):
            torch.manual_seed(kernel)
            checkpoint = Path(scratch) / f"k{kernel}.pt"
            torch.save({"conv1.weight": torch.randn(16, 3, kernel, kernel)}, checkpoint)
            firsts, seconds = [], []
            for repeat in range(args.repeats):
                cache = Path(scratch) / f"cache-{kernel}-{repeat}"
                first_s, first = timed_fit(checkpoint, args.data, cache)
                second_s, second = timed_fit(checkpoint, args.data, cache)
                assert (first["stats_cache"], second["stats_cache"]) == ("miss", "hit"), (first["stats_cache"], second["stats_cache"])
                assert first["eigenvalues"] == second["eigenvalues"] and first["profile"] == second["profile"]
                firsts.append(first_s)
                seconds.append(second_s)
            row = {"kernel": kernel, "data": args.data, "first_s": min(firsts), "second_s": min(seconds),
                   "ratio": min(firsts) / min(seconds), "all_first_s": firsts, "all_second_s": seconds}
            rows.append(row)
            print(f"k={kernel}: first fit {row['first_s']:.2f} s (computes and caches), second {row['second_s']:.2f} s "
                  f"(reads the cache): {row['ratio']:.2f}x", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(["python", "benchmarks/bench_stats_cache.py", *sys.argv[1:]]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "repeats": args.repeats, "results": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
