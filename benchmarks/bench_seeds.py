"""Several seeds: trained together (`--together`, one vmapped stack) against one after another.

Both ways train the same S independent VGG11-bn models (seeds 0..S-1, random labels, 10 classes)
on the same synthetic 1/f images (32x32) on the same device, in one process, through
`linearcnn.train.train_seeds`: one warm-up epoch and one timed epoch of `--steps` steps each.
The time of a way is the timed epoch's seconds (for one after another: summed over the seeds);
the ratio is one-after-another seconds / together seconds (> 1: together is faster).

    python benchmarks/bench_seeds.py --seeds 3 --steps 4 --width 16               # CPU here
    python benchmarks/bench_seeds.py --seeds 8 --steps 50 --width 16 --device cuda # the GPU measurement

Writes benchmarks/results/seeds.json (device, versions, both times, the ratio, the command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import load_reference, machine_info  # noqa: E402  (found through the sys.path entry above)
from bench_train import device_description  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of models (seeds 0..S-1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (one epoch)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=16, help="VGG11 first-layer width")
    parser.add_argument("--arch", default="vgg11-bn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reference", default=None, help="a Python file defining the baseline "
                        "(default: benchmarks/baselines.py, our implementation of the authors' method)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seeds.json"))
    args = parser.parse_args(argv)

    from linearcnn.data import ImageDataset
    from linearcnn.device import resolve_device
    from linearcnn.train import TrainConfig, train_seeds

    reference = load_reference(args.reference)
    device = resolve_device(args.device)
    n = args.steps * args.batch_size
    raw = reference.natural_like_images(n, size=32, channels=3, seed=0).numpy()  # (N, 3, 32, 32)
    low, high = np.percentile(raw, [0.5, 99.5])
    images = np.clip((raw - low) / (high - low), 0, 1).astype(np.float32)
    dataset = ImageDataset(images, None, [], "synthetic-1/f", "benchmark images")
    config = TrainConfig(arch=args.arch, labels="random", num_classes=10, epochs=2, batch_size=args.batch_size,
                         width=args.width, device=args.device, test=False)
    seeds = list(range(args.seeds))
    apart = train_seeds(config, seeds, dataset=dataset)
    together = train_seeds(config, seeds, together=True, dataset=dataset)
    apart_seconds = sum(r.metrics["seconds"][1] for r in apart)
    together_seconds = together[0].metrics["seconds"][1]
    images_timed = n * len(seeds)
    record = {
        "benchmark": f"{len(seeds)} seeds of {args.arch}: trained together (vmap) vs one after another",
        "device": device_description(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {k: str(v) for k, v in machine_info().items()},
        "command": "python benchmarks/bench_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "arch": args.arch, "width": args.width, "batch_size": args.batch_size, "timed_steps": args.steps, "seeds": len(seeds),
        "precision": together[0].config.precision,
        "one_after_another": {"seconds": apart_seconds, "images_per_second": images_timed / apart_seconds},
        "together": {"seconds": together_seconds, "images_per_second": images_timed / together_seconds},
        "ratio": apart_seconds / together_seconds,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{record['device']}: {len(seeds)} x {args.arch} width {args.width}: one after another "
          f"{record['one_after_another']['images_per_second']:,.0f} images/s, together "
          f"{record['together']['images_per_second']:,.0f} images/s, ratio {record['ratio']:.2f}x  ({out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
