"""The on-disk patch-statistics cache (`linearcnn.patches._cache`): a second `fit` reads it instead
of measuring, a changed data file or option misses it, a damaged file is rewritten, and nothing
ever fails because of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import linearcnn.patches
from linearcnn.cli import main
from linearcnn.patches import PatchStats


def write_npz(path: Path, seed: int = 0, n: int = 32) -> str:
    rng = np.random.default_rng(seed)
    images = np.cumsum(np.cumsum(rng.normal(size=(n, 12, 12, 3)), axis=1), axis=2)
    images = (images - images.min()) / (images.max() - images.min())
    np.savez(path, images=(images * 255).astype(np.uint8))
    return f"npz:{path}"


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "net.pt"
    torch.save(TinyNet().state_dict(), checkpoint)
    return write_npz(tmp_path / "data.npz"), checkpoint


@pytest.fixture()
def spy(monkeypatch):
    """Counts the calls of the patch-statistics computation the measuring code makes."""
    calls = []
    real = linearcnn.patches.dataset_patch_stats

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(linearcnn.patches, "dataset_patch_stats", counting)
    return calls


def fit_json(argv, capsys) -> dict:
    code = main(["fit", "--bootstrap", "0", "--json", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def cached_files() -> list[Path]:
    return sorted((Path(os.environ["LINEARCNN_CACHE_DIR"]) / "patch-stats").glob("*.npz"))


def test_the_suite_never_writes_the_real_cache():
    cache = Path(os.environ["LINEARCNN_CACHE_DIR"])
    assert cache.is_dir() and Path.home() / ".cache" not in cache.parents


def test_second_fit_reads_the_cache(setup, spy, capsys):
    data, checkpoint = setup
    first = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    assert first["stats_cache"] == "miss" and len(spy) == 1 and len(cached_files()) == 1
    second = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    assert second["stats_cache"] == "hit" and len(spy) == 1  # not measured again
    for key in ("eigenvalues", "profile", "correlation", "normalization", "image_size"):
        assert second[key] == first[key]
    saved = PatchStats.load(cached_files()[0])
    assert saved.data_spec == data and saved.kernel_size == 3 and saved.channels == 3


def test_a_changed_data_file_or_option_misses(setup, spy, capsys, tmp_path):
    data, checkpoint = setup
    first = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    fit_json(["-c", str(checkpoint), "--data", data, "--limit", "16"], capsys)
    fit_json(["-c", str(checkpoint), "--data", data, "--centered"], capsys)
    assert len(spy) == 3 and len(cached_files()) == 3
    path = Path(data[4:])
    write_npz(path, seed=1)  # new content, same name
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # a coarse file-system clock still sees the change
    changed = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    assert changed["stats_cache"] == "miss" and len(spy) == 4
    assert changed["eigenvalues"] != first["eigenvalues"]
    # a different path to the same file reads the same entry: the key holds the absolute path
    relative = os.path.relpath(path)
    again = fit_json(["-c", str(checkpoint), "--data", f"npz:{relative}"], capsys)
    assert again["stats_cache"] == "hit" and len(spy) == 4


def test_a_damaged_cache_file_is_ignored_and_rewritten(setup, spy, capsys):
    data, checkpoint = setup
    first = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    (entry,) = cached_files()
    entry.write_bytes(b"PK\x03\x04 not an archive")
    again = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    assert again["stats_cache"] == "miss" and len(spy) == 2 and again["eigenvalues"] == first["eigenvalues"]
    assert PatchStats.load(entry).kernel_size == 3  # rewritten whole


def test_no_cache_and_an_unwritable_cache(setup, spy, capsys, monkeypatch, tmp_path):
    data, checkpoint = setup
    off = fit_json(["-c", str(checkpoint), "--data", data, "--no-cache"], capsys)
    assert off["stats_cache"] == "off" and cached_files() == []
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("LINEARCNN_CACHE_DIR", str(blocker))
    code = main(["fit", "--bootstrap", "0", "--json", "-c", str(checkpoint), "--data", data])
    captured = capsys.readouterr()
    assert code == 0 and "not cached" in captured.err
    assert json.loads(captured.out)["eigenvalues"] == off["eigenvalues"]


def test_stats_command_shares_the_cache(setup, spy, capsys):
    data, checkpoint = setup
    assert main(["stats", "--data", data, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["stats_cache"] == "miss"
    fitted = fit_json(["-c", str(checkpoint), "--data", data], capsys)
    assert fitted["stats_cache"] == "hit" and len(spy) == 1
    np.testing.assert_allclose(fitted["eigenvalues"], stats["eigenvalues"], rtol=0)
