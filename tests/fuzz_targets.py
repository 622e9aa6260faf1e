"""The fuzzing harness's reading side: a worker process that reads files through the library's
entry points under an address-space limit, and the client the tests drive it with.

Run as a script (`python tests/fuzz_targets.py`), the worker imports everything once, sets
`RLIMIT_AS` to what it then maps plus `--headroom` bytes, and answers one JSON line per request
line `{"target": ..., "path": ...}`:

    {"outcome": "ok" | "input_error" | "failure", "exception": type name, "message": first line,
     "where": last traceback frame, "last_line": the traceback's last line}

`input_error` is a `LinearCNNInputError` (the one allowed failure); `failure` is anything else,
`MemoryError` included. The client (`FuzzWorker`) adds the outcomes the worker cannot report
itself: `crash` (the process died: a segfault, an abort) and `timeout` (no answer within the
wall-clock limit; the process is killed). After either it starts a fresh worker.

Targets (`TARGETS`): `checkpoint` (`load_first_layer`), `data:KIND` (`load_dataset("KIND:PATH")`
plus `has_test_split`), `stats` (`PatchStats.load`), and the controls that prove the harness can
fail: `control:value_error`, `control:memory`, `control:hang`, `control:crash`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ALLOWED = ("ok", "input_error")
#: Address space a worker may map beyond what importing torch and the readers took.
DEFAULT_HEADROOM = 1 << 30


# --------------------------------------------------------------------------- worker side


def _read_checkpoint(path: str) -> None:
    from linearcnn.checkpoints import load_first_layer

    load_first_layer(path)


def _read_data(kind: str, path: str) -> None:
    from linearcnn.data import has_test_split, load_dataset

    load_dataset(f"{kind}:{path}")
    has_test_split(f"{kind}:{path}")


def _read_stats(path: str) -> None:
    from linearcnn.patches import PatchStats

    PatchStats.load(path)


def _control(kind: str) -> None:
    if kind == "value_error":
        raise ValueError("a plain ValueError: the harness must call this a failure")
    if kind == "memory":
        bytearray(1 << 40)  # beyond the address-space limit: MemoryError
    if kind == "hang":
        time.sleep(3600)
    if kind == "crash":
        os.abort()


TARGETS = ("checkpoint", "stats", "data:npz", "data:mnist", "data:cifar10", "data:cifar100", "data:folder", "data:svhn")


def read_target(target: str, path: str) -> None:
    """Read `path` as `target` through the library's entry point."""
    kind, _, detail = target.partition(":")
    if kind == "checkpoint":
        _read_checkpoint(path)
    elif kind == "data":
        _read_data(detail, path)
    elif kind == "stats":
        _read_stats(path)
    elif kind == "control":
        _control(detail)
    else:
        raise KeyError(f"unknown fuzz target {target!r}")


def outcome_of(target: str, path: str) -> dict[str, Any]:
    """What reading `path` as `target` did, as a JSON-ready dict (never raises)."""
    import warnings

    from linearcnn.errors import LinearCNNInputError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_target(target, path)
    except LinearCNNInputError as exc:
        message = str(exc)
        if "\n" in message:  # the project rule: one line
            return {"outcome": "failure", "exception": "LinearCNNInputError (multi-line)", "message": message[:400],
                    "where": "", "last_line": message.splitlines()[0][:200]}
        return {"outcome": "input_error", "message": message[:400]}
    except BaseException as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        ours = [f for f in frames if "/linearcnn/" in f.filename]
        last_ours = f"{ours[-1].filename.split('/linearcnn/', 1)[1]}:{ours[-1].lineno}" if ours else ""
        first_line = (str(exc).splitlines() or [""])[0]
        return {"outcome": "failure", "exception": type(exc).__name__, "message": first_line[:400], "where": where,
                "linearcnn_frame": last_ours, "last_line": f"{type(exc).__name__}: {first_line[:200]}"}
    return {"outcome": "ok"}


def _mapped_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def worker_main(headroom: int) -> None:
    """Import every reader, limit the address space, then answer requests until stdin closes."""
    import resource

    import numpy as np
    import torch

    import linearcnn.checkpoints
    import linearcnn.data
    import linearcnn.patches  # noqa: F401

    for module in ("onnx", "safetensors.torch", "scipy.io", "PIL.PngImagePlugin", "gzip"):
        __import__(module)
    torch.set_num_threads(1)
    torch.ones(4) @ torch.ones(4)  # the thread pool exists before the limit is measured
    np.ones(4) @ np.ones(4)
    baseline = _mapped_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (baseline + headroom, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash found is reported, not dumped
    sys.stdout.write(json.dumps({"ready": True, "baseline": baseline}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.write(json.dumps(outcome_of(request["target"], request["path"])) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- client side


class FuzzWorker:
    """A worker process (see the module docstring) restarted after a crash or a timeout."""

    def __init__(self, *, headroom: int = DEFAULT_HEADROOM, startup_timeout: float = 120.0) -> None:
        self.headroom = headroom
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.starts = 0

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        with tempfile.TemporaryFile("w+") as errors:  # the worker's stderr, shown if it cannot start
            process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--headroom", str(self.headroom)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=REPO, env=env,
            )
            ready = self._answer(process, self.startup_timeout)
            if not (ready or {}).get("ready"):
                process.kill()
                process.wait()
                errors.seek(0)
                raise RuntimeError(f"the fuzz worker did not start: {ready}; its stderr ends: {errors.read()[-2000:]}")
        self.starts += 1
        return process

    @staticmethod
    def _answer(process: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
        """The next JSON line of `process`; None on timeout, {"eof": True} when its output ended."""
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        line = process.stdout.readline()
        return json.loads(line) if line else {"eof": True}

    def _stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        return process.wait()

    def read(self, target: str, path: str | os.PathLike[str], *, timeout: float = 30.0) -> dict[str, Any]:
        """The outcome of reading `path` as `target` (see the module docstring)."""
        if self.process is None or self.process.poll() is not None:
            self._stop()
            self.process = self._start()
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"target": target, "path": str(path)}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self._answer(self.process, timeout)
        if answer is None:  # still running: killed
            self._stop()
            return {"outcome": "timeout", "exception": "timeout", "message": f"no answer within {timeout:g} s", "last_line": "timeout"}
        if answer.get("eof"):  # its output ended: it died (a negative code is the signal)
            try:
                code = self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            self._stop()
            return {"outcome": "crash", "exception": "crash", "message": f"the worker died with exit code {code}",
                    "last_line": f"exit code {code}"}
        if answer["outcome"] == "failure" and answer.get("exception") == "MemoryError":
            self._stop()  # a worker that ran out of memory may be in a bad state
        return answer

    def close(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
        self._stop()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    worker_main(int(arguments[arguments.index("--headroom") + 1]) if "--headroom" in arguments else DEFAULT_HEADROOM)
