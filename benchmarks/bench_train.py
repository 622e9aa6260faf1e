"""Training throughput: our loop (`linearcnn.train.train`) against a reference-style loop, one run.

The reference-style loop is what the authors' code and most tutorials do: a torchvision-like
dataset of uint8 images converted and normalised per sample in DataLoader workers, float32, no
channels_last, and `.item()` on the loss and the accuracy every step (a host-device sync per
step). Ours keeps the normalised data on the device, syncs once per epoch, and on CUDA uses bf16
autocast and channels_last. Both train VGG11-bn on the same synthetic 1/f images (32x32, random
labels, 10 classes) from the same initialisation, on the same device, in one process. Each runs
one warm-up epoch and one timed epoch of `--steps` steps; images/s = images / seconds of the
timed epoch (for the reference loop the epoch includes starting its DataLoader workers, as every
epoch of it does).

    python benchmarks/bench_train.py --steps 4                 # CPU here: small counts
    python benchmarks/bench_train.py --steps 50 --device cuda  # the GPU measurement

Writes benchmarks/results/train.json (device, versions, both rates, their ratio, the command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import load_reference, machine_info  # noqa: E402  (found through the sys.path entry above)


class ReferenceStyleDataset(torch.utils.data.Dataset):
    """uint8 (N, H, W, C) images -> per-sample float tensor, normalised per channel (ToTensor + Normalize)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, mean: np.ndarray, std: np.ndarray):
        self.pixels, self.labels = pixels, labels
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.pixels[index]).permute(2, 0, 1).float().div(255)  # (C, H, W)
        return (image - self.mean) / self.std, int(self.labels[index])


def reference_epoch(model, optimizer, loader, device) -> tuple[float, int]:
    """One epoch the reference way; returns (seconds, images)."""
    model.train()
    started = time.perf_counter()
    seen = 0
    running_loss = correct = 0.0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        outputs = model(images)
        loss = F.cross_entropy(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # SYNC every step, as the reference does
        correct += (outputs.argmax(1) == labels).sum().item()  # SYNC again
        seen += labels.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, seen


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop (one epoch)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64, help="VGG11 first-layer width (64: the standard net)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reference", default=None, help="a Python file defining the baseline "
                        "(default: benchmarks/baselines.py, our implementation of the authors' method)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    args = parser.parse_args(argv)

    from linearcnn.data import ImageDataset
    from linearcnn.device import resolve_device
    from linearcnn.models import build_model
    from linearcnn.train import TrainConfig, train

    reference = load_reference(args.reference)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the machine skews CPU timings
    device = resolve_device(args.device)
    n = args.steps * args.batch_size
    raw = reference.natural_like_images(n, size=32, channels=3, seed=0).numpy()  # (N, 3, 32, 32)
    low, high = np.percentile(raw, [0.5, 99.5])
    unit = np.clip((raw - low) / (high - low), 0, 1)
    pixels = np.round(unit * 255).astype(np.uint8)  # (N, 3, 32, 32), what a CIFAR-like file holds
    labels = np.random.default_rng(0).integers(0, 10, n)
    dataset = ImageDataset(pixels.astype(np.float32) / 255, labels, [str(i) for i in range(10)], "synthetic-1/f", "benchmark images")
    mean, std = dataset.channel_stats()

    # Ours: warm-up epoch + timed epoch inside one train() call.
    config = TrainConfig(arch="vgg11-bn", epochs=2, batch_size=args.batch_size, width=args.width, device=args.device)
    started = time.perf_counter()
    result = train(config, dataset=dataset)
    ours_total = time.perf_counter() - started
    ours_rate = result.metrics["images_per_second"][1]

    # Reference style: same model and initialisation, float32, DataLoader workers, .item() per step.
    torch.manual_seed(0)
    model = build_model("vgg11-bn", 3, 10, width=args.width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(
        ReferenceStyleDataset(pixels.transpose(0, 2, 3, 1).copy(), labels, mean, std), batch_size=args.batch_size,
        shuffle=True, num_workers=args.workers, pin_memory=device.type == "cuda",
    )
    started = time.perf_counter()
    reference_epoch(model, optimizer, loader, device)  # warm-up
    seconds, seen = reference_epoch(model, optimizer, loader, device)
    reference_total = time.perf_counter() - started
    reference_rate = seen / seconds

    record = {
        "benchmark": "training throughput, VGG11-bn, 32x32, our loop vs reference-style loop",
        "device": device_description(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {k: str(v) for k, v in machine_info().items()},
        "command": "python benchmarks/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "batch_size": args.batch_size, "width": args.width, "timed_steps": args.steps, "reference_workers": args.workers,
        "ours": {"images_per_second": ours_rate, "precision": "bf16 autocast + channels_last" if device.type == "cuda" else "float32",
                 "wall_seconds_incl_setup_and_warmup": ours_total},
        "reference_style": {"images_per_second": reference_rate, "wall_seconds_incl_warmup": reference_total},
        "ratio": ours_rate / reference_rate,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{record['device']}: ours {ours_rate:,.0f} images/s, reference-style {reference_rate:,.0f} images/s, "
          f"ratio {record['ratio']:.2f}x  ({out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
