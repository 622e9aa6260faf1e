"""The CPU allocator setting training makes (`linearcnn.train.allocator`): freed blocks are kept.

Page faults are counted (`ru_minflt`), not time: a step that frees 45 MiB at the top of the heap
has glibc trim it by default and fault it in again next step; with the setting it is reused.
Each case runs in its own process, since the setting is process-wide.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linearcnn.train.allocator import SETTING

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is made only with glibc")

WORKLOAD = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from linearcnn.train.allocator import keep_freed_memory
    print(keep_freed_memory())
def step():
    blocks = [np.empty(15 * 2**20 // 8) for _ in range(3)]  # 3 x 15 MiB, freed together at the end
    for block in blocks:
        block.fill(1.0)
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, timeout=120, check=True)
    lines = done.stdout.split("\n")
    return (lines[0] if mode == "keep" else ""), int(lines[-2])


def test_freed_memory_is_reused_without_faulting_it_in_again() -> None:
    setting, kept = _faults("keep")
    _, default = _faults("default")
    assert setting == SETTING
    assert default > 20 * 2**20 // 4096, default  # by default glibc gives memory back: > 20 MiB faulted in again
    assert kept * 10 < default, (kept, default)


def test_a_cpu_run_records_the_setting(tmp_path: Path) -> None:
    from linearcnn.data import ImageDataset
    from linearcnn.train import TrainConfig, train

    images = np.random.default_rng(0).random((16, 3, 8, 8)).astype(np.float32)
    data = ImageDataset(images, np.arange(16) % 2, ["a", "b"], "tiny", "tiny images")
    train(TrainConfig(arch="vgg11-bn", width=4, epochs=1, batch_size=8, device="cpu", test=False, out=str(tmp_path / "run")),
          dataset=data)
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert recorded["cpu_allocator"] == SETTING and recorded["fused_update"] is True
    assert recorded["memory_format"] == "channels_last" and recorded["compiled"] is False
