"""Training throughput on one device: `linearcnn train` against a minimal hand-written loop, and the
best configuration tried, in one run.

The minimal loop is what one writes by hand for the same model: the normalised images in one
float32 tensor, a random permutation per epoch, `zero_grad` / forward / cross-entropy / backward /
SGD step, nothing else (no DataLoader, no per-step `.item()`). Its variants are the speed settings
ours may use: channels_last, a fused SGD update, `torch.compile`, and glibc keeping freed memory
(`linearcnn.train.allocator`). Ours is `linearcnn.train.train` as a user runs it (its defaults:
channels_last where it measured faster, the fused update, the allocator setting on the CPU), and
"ours --compile" the same with `torch.compile` (off by default: it did not pay on the CPU).

VGG11-bn on the same synthetic 1/f images (32x32, 10 random classes), same initialisation (seed
0), batch 256, at widths 16 and 64. Every configuration runs in a fresh process (the allocator
setting is process-wide), `--steps` timed steps after warm-up steps, and the configurations
alternate `--repeats` times so that all see the same machine load; the medians are compared.
Compile time (first call) is reported apart and never timed as steps.

    python benchmarks/bench_train.py                           # CPU: widths 16 and 64
    python benchmarks/bench_train.py --device cuda --steps 50  # a GPU

Writes benchmarks/results/train.json (device, versions, every rate, the ratios, the command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import load_reference, machine_info  # noqa: E402  (found through the sys.path entry above)

MINIMAL_VARIANTS = ("minimal", "minimal + channels_last", "minimal + channels_last + fused SGD", "minimal + channels_last + compile",
                    "minimal + channels_last + fused SGD + kept memory")
OURS = ("ours", "ours --compile")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class MinimalLoop:
    """The hand-written loop (module docstring) in one of `MINIMAL_VARIANTS`; `run(steps)` -> images/s."""

    def __init__(self, variant: str, images: torch.Tensor, labels: torch.Tensor, width: int, batch: int, device: torch.device):
        from linearcnn.models import build_seeded_model

        self.batch, self.device = batch, device
        channels_last = "channels_last" in variant
        if "kept memory" in variant:  # glibc keeps freed blocks (what ours does on the CPU)
            from linearcnn.train.allocator import keep_freed_memory

            keep_freed_memory()
        model = build_seeded_model("vgg11-bn", 3, 10, seed=0, width=width).to(device)
        self.images = images.to(device)  # (N, 3, 32, 32), normalised
        if channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.labels = labels.to(device)  # (N,)
        fused = {"fused": True} if "fused" in variant else {}
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, **fused)
        self.model = torch.compile(model) if "compile" in variant else model
        self.order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(0)).to(device)
        self.position = 0
        started = time.perf_counter()
        self.run(2)  # warm-up (and the compile, for the compiled variant)
        self.first_seconds = time.perf_counter() - started

    def _step(self) -> None:
        n = len(self.labels)
        if self.position + self.batch > n:
            self.position = 0
        rows = self.order[self.position:self.position + self.batch]
        self.position += self.batch
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.images[rows]), self.labels[rows]).backward()
        self.optimizer.step()

    def run(self, steps: int) -> float:
        _sync(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            self._step()
        _sync(self.device)
        return steps * self.batch / (time.perf_counter() - started)


def ours_rate(dataset: Any, width: int, batch: int, steps: int, device: str, compile_model: bool | None) -> tuple[float, float, bool]:
    """(images/s of the second epoch, seconds of the first, whether it compiled) of `linearcnn.train.train`."""
    from linearcnn.train import TrainConfig, train

    config = TrainConfig(arch="vgg11-bn", epochs=2, batch_size=batch, width=width, device=device, test=False, compile=compile_model)
    result = train(config, dataset=dataset)
    return float(result.metrics["images_per_second"][1]), float(result.metrics["seconds"][0]), bool(result.data_info.get("compiled"))


def run_one(name: str, width: int, dataset: Any, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One configuration in this process: {"rate": images/s, "first_seconds": warm-up or first epoch, "compiled": ...}."""
    if name in OURS:
        rate, seconds, did = ours_rate(dataset, width, args.batch_size, args.steps, args.device, name == "ours --compile")
        return {"rate": rate, "first_seconds": seconds, "compiled": did}
    images = torch.from_numpy(np.ascontiguousarray(dataset.normalized()))
    labels = torch.as_tensor(dataset.labels, dtype=torch.int64)
    loop = MinimalLoop(name, images, labels, width, args.batch_size, device)
    return {"rate": loop.run(args.steps), "first_seconds": loop.first_seconds}


def measure_width(width: int, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Every configuration at one width, alternating, `args.repeats` times; each run in a fresh
    process (`--one`), so that no setting one makes (ours' allocator) carries over to another."""
    names = [n for n in (*MINIMAL_VARIANTS, *OURS) if n not in args.skip]
    rates: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, float] = {}
    compiled: dict[str, bool] = {}
    for _ in range(args.repeats):
        for name in names:
            done = subprocess.run([sys.executable, __file__, *argv, "--one", name, "--widths", str(width)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{name} at width {width} failed: {done.stderr.strip()[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rates[name].append(result["rate"])
            first.setdefault(name, result["first_seconds"])
            if "compiled" in result:
                compiled[name] = result["compiled"]
    medians = {name: statistics.median(values) for name, values in rates.items()}
    best = max(medians, key=lambda name: medians[name])
    return {
        "width": width, "rates": rates, "median_images_per_second": medians, "first_epoch_or_warmup_seconds": first,
        "ours_compiled": compiled, "best": best,
        "ours_over_minimal": medians["ours"] / medians["minimal"],
        "ours_compiled_over_minimal": medians.get("ours --compile", float("nan")) / medians["minimal"],
        "ours_over_best": medians["ours"] / medians[best],
        "ours_compiled_over_best": medians.get("ours --compile", float("nan")) / medians[best],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration and repeat (one epoch of ours)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds over the configurations")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--widths", default="16,64", help="VGG11-bn first-layer widths (64: the standard net)")
    parser.add_argument("--skip", action="append", default=[], help="a configuration to leave out (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reference", default=None, help="a Python file defining `natural_like_images` "
                        "(default: benchmarks/baselines.py)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print its rate
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)

    from linearcnn.data import ImageDataset
    from linearcnn.device import resolve_device

    reference = load_reference(args.reference)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the machine skews CPU timings
    device = resolve_device(args.device)
    n = args.steps * args.batch_size
    raw = reference.natural_like_images(n, size=32, channels=3, seed=0).numpy()  # (N, 3, 32, 32)
    low, high = np.percentile(raw, [0.5, 99.5])
    unit = np.clip((raw - low) / (high - low), 0, 1).astype(np.float32)
    labels = np.random.default_rng(0).integers(0, 10, n)
    dataset = ImageDataset(unit, labels, [str(i) for i in range(10)], "synthetic-1/f", "benchmark images")
    widths = [int(w) for w in args.widths.split(",")]
    if args.one is not None:
        print(json.dumps(run_one(args.one, widths[0], dataset, args, device)))
        return 0
    record = {
        "benchmark": "training throughput, VGG11-bn, 32x32: linearcnn train vs a minimal hand-written loop and its variants",
        "device": device_description(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {k: str(v) for k, v in machine_info().items()},
        "command": "python benchmarks/bench_train.py " + " ".join(argv),
        "batch_size": args.batch_size, "timed_steps": args.steps, "repeats": args.repeats,
        "widths": [measure_width(w, args, argv) for w in widths],
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(record["device"])
    for w in record["widths"]:
        rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in w["median_images_per_second"].items())
        print(f"width {w['width']}: images/s {rates}; ours / minimal {w['ours_over_minimal']:.2f}x, ours --compile / minimal "
              f"{w['ours_compiled_over_minimal']:.2f}x, best: {w['best']} (ours / best {w['ours_over_best']:.2f}, --compile / best "
              f"{w['ours_compiled_over_best']:.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
