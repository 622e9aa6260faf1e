"""What the measuring commands say about the weights as read: BatchNorm folded (`--fold-bn`), a
space-to-depth stem named instead of a bare channel mismatch."""

from __future__ import annotations

import json

import numpy as np
import torch

from linearcnn.cli import main
from linearcnn.energy import energy_profile
from linearcnn.patches import dataset_patch_stats


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fold_bn_folds_the_following_batchnorm(tmp_path, capsys):
    rng = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, 3, 3, generator=rng)
    gamma, var = torch.rand(6, generator=rng) + 0.5, torch.rand(6, generator=rng) + 0.1
    state = {"conv1.weight": weight, "bn1.weight": gamma, "bn1.bias": torch.zeros(6), "bn1.running_mean": torch.zeros(6),
             "bn1.running_var": var, "bn1.num_batches_tracked": torch.tensor(1), "fc.weight": torch.randn(10, 6)}
    path = tmp_path / "bn.pt"
    torch.save(state, path)
    code, out, err = _run(["profile", "-c", str(path), "--data", "builtin:100", "--fold-bn", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["weights_as"] == "BatchNorm-folded" and payload["batchnorm"] == "bn1"
    folded = (weight * (gamma / torch.sqrt(var + 1e-5))[:, None, None, None]).double().numpy()  # independent fold
    from linearcnn.data import load_dataset

    stats = dataset_patch_stats(load_dataset("builtin:100"), 3, device="cpu")
    np.testing.assert_allclose(payload["profile"], energy_profile(folded, stats.eigenvectors), rtol=1e-6)
    code, out, _ = _run(["profile", "-c", str(path), "--data", "builtin:100", "--json"], capsys)
    assert json.loads(out)["weights_as"] == "stored"


def test_fold_bn_with_init_is_one_line(tmp_path, capsys):
    state = {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.weight": torch.ones(4), "bn1.bias": torch.zeros(4),
             "bn1.running_mean": torch.zeros(4), "bn1.running_var": torch.ones(4)}
    path, init = tmp_path / "a.pt", tmp_path / "init.pt"
    torch.save(state, path)
    torch.save({**state, "conv1.weight": torch.randn(4, 3, 3, 3)}, init)
    code, _, err = _run(["fit", "-c", str(path), "--data", "builtin:100", "--fold-bn", "--init-checkpoint", str(init)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--fold-bn" in err and "not folded" in err


def test_a_focus_stem_is_named_instead_of_a_channel_mismatch(tmp_path, capsys):
    path = tmp_path / "yolo.pt"
    torch.save({"model.0.focus.conv.weight": torch.randn(8, 12, 3, 3)}, path)
    code, _, err = _run(["profile", "-c", str(path), "--data", "builtin:100"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "space-to-depth" in err and "Focus" in err and "12 input channels" in err


def test_profile_top_shows_the_leading_components(tmp_path, capsys):
    path = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1))}, path)
    code, out, err = _run(["profile", "-c", str(path), "--data", "builtin:100", "--top", "2"], capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["0", "1"] and "2 of 27 components" in out
    code, _, err = _run(["profile", "-c", str(path), "--data", "builtin:100", "--top", "0"], capsys)
    assert code == 2 and "--top" in err
