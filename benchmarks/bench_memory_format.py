"""Image memory layout of a CPU (or GPU) training step: channels_last against the default layout.

`linearcnn.train` trains the deep nets in channels_last on CUDA and on the CPU
(`linearcnn.train.config.channels_last_for`); this measures why. For each architecture and width,
one SGD step (forward, cross-entropy, backward, update) on a batch of random 32x32 images, the
same model and batch in both layouts, alternating layouts `--repeats` times so that both see the
same machine load; images/s of each and the ratio of their medians.

    python benchmarks/bench_memory_format.py                     # CPU, 2 threads
    python benchmarks/bench_memory_format.py --device cuda --steps 20

Writes benchmarks/results/memory_format.json (device, versions, every rate, the ratios, the command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from linearcnn.models import build_seeded_model
from linearcnn.records import versions

ROOT = Path(__file__).resolve().parents[1]
MODELS = (("vgg11-bn", 16), ("vgg11-bn", 32), ("vgg11-bn", 64), ("resnet20", 16), ("resnet20", 32), ("resnet20", 64))


def images_per_second(arch: str, width: int, channels_last: bool, batch: int, steps: int, device: torch.device) -> float:
    """Images/s of `steps` SGD steps after one warm-up step."""
    model = build_seeded_model(arch, 3, 10, seed=0, width=width).to(device)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)  # (B, 3, 32, 32)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)  # (B,)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory_format.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for arch, width in MODELS:
        rates: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
        for _ in range(args.repeats):
            for layout in rates:
                rates[layout].append(images_per_second(arch, width, layout == "channels_last", args.batch, args.steps, device))
        ratio = statistics.median(rates["channels_last"]) / statistics.median(rates["contiguous"])
        rows.append({"arch": arch, "width": width, "images_per_second": rates, "ratio_of_medians": ratio})
        print(f"{arch} width {width}: contiguous {[round(r) for r in rates['contiguous']]}, channels_last "
              f"{[round(r) for r in rates['channels_last']]} images/s; channels_last / contiguous {ratio:.2f}x")
    record = {"device": str(device), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "device": str(device)},
              "threads": args.threads, "batch": args.batch, "steps": args.steps,
              "versions": versions(), "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
              "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
