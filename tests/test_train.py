"""Training: every arch trains, the linear loop equals independent numpy gradient descent, the
stability bound equals the autograd Hessian, checkpoints are complete and load with
weights_only, resume is bit-exact, DDP equals one process, and bad input is one line + exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from linearcnn.errors import LinearCNNInputError
from linearcnn.models import ARCHS, build_model
from linearcnn.train import (
    TrainConfig,
    check_linear_lr,
    draw_random_labels,
    final_metrics,
    linear_gd_hessian_max_eigenvalue,
    load_training_checkpoint,
    model_from_checkpoint,
    parity_targets,
    train,
    train_seeds,
)

CHECKPOINT_KEYS = {
    "format", "format_version", "model_state_dict", "optimizer_state_dict", "first_layer", "snapshots", "config",
    "seed", "versions", "epoch", "step", "metrics", "random_labels", "rng_state",
}


def make_dataset(n: int = 20, channels: int = 3, size: int = 16, classes: int = 4, seed: int = 0, labelled: bool = True):
    from linearcnn.data import ImageDataset

    rng = np.random.default_rng(seed)
    images = rng.random((n, channels, size, size), dtype=np.float32)
    labels = rng.integers(0, classes, n) if labelled else None
    names = [f"class{i}" for i in range(classes)] if labelled else []
    return ImageDataset(images, labels, names, "synthetic", "uniform noise for tests")


def write_npz(path: Path, n: int = 12, channels: int = 3, size: int = 8, classes: int = 2, labelled: bool = True, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    arrays = {"images": rng.random((n, channels, size, size)).astype(np.float32)}
    if labelled:
        arrays["labels"] = rng.integers(0, classes, n)
        arrays["classes"] = np.array([f"c{i}" for i in range(classes)])
    np.savez(path, **arrays)
    return f"npz:{path}"


def first_weight(model: torch.nn.Module, name: str) -> torch.Tensor:
    return model.state_dict()[f"{name}.weight"].detach().cpu()


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_trains_a_few_steps(arch: str) -> None:
    data = make_dataset()
    result = train(TrainConfig(arch=arch, steps=3, batch_size=8, width=4, lr=0.05, device="cpu"), dataset=data)
    assert result.step == 3
    assert all(np.isfinite(result.metrics["step_loss"])) and len(result.metrics["step_loss"]) == 3
    moved = (first_weight(result.model, result.first_layer) - result.initial_first_layer).abs().max().item()
    assert moved > 0, f"{arch}: first layer did not move"


def test_frozen_first_layer_stays_at_init_while_the_rest_learns() -> None:
    data = make_dataset()
    result = train(TrainConfig(arch="vgg11-bn", steps=3, batch_size=8, width=4, freeze_first_layer=True), dataset=data)
    assert torch.equal(first_weight(result.model, "features.0"), result.initial_first_layer)
    assert result.metrics["first_layer_displacement"] == [0.0]  # one epoch (3 steps of 8 of 20 images), nothing moved
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = build_model("vgg11-bn", 3, 4, width=4)
    assert torch.equal(fresh.features[0].weight, result.initial_first_layer)  # init comes from the seed
    assert not torch.equal(fresh.classifier.weight, result.model.classifier.weight)


def numpy_linear_gd(images: np.ndarray, targets: np.ndarray, init: np.ndarray, lr: float, steps: int):
    """Full-batch GD on L = mean_n (mean_k w_k . pbar_n - y_n)^2, written from the definitions.

    Returns the filters after every step (steps + 1, K, d) and the loss before every step (steps,)."""
    k = init.shape[-1]
    windows = sliding_window_view(images, (k, k), axis=(2, 3))  # (N, C, H-k+1, W-k+1, k, k)
    pbar = windows.mean(axis=(2, 3)).reshape(images.shape[0], -1)  # (N, d)
    filters = init.reshape(init.shape[0], -1).copy()  # (K, d)
    history, losses = [filters.copy()], []
    for _ in range(steps):
        residual = pbar @ filters.mean(axis=0) - targets  # (N,)
        losses.append(np.mean(residual**2))
        gradient = 2.0 / (len(targets) * filters.shape[0]) * residual @ pbar  # same for every filter
        filters = filters - lr * gradient[None, :]
        history.append(filters.copy())
    return np.stack(history), np.array(losses)


def test_linear_full_batch_training_equals_numpy_gradient_descent() -> None:
    data = make_dataset(n=10, channels=2, size=6, classes=3, seed=5)
    config = TrainConfig(arch="linear", epochs=12, batch_size=10_000, width=3, kernel_size=3, lr=2.0,
                         init_std=0.1, precision="float64", snapshot_every=4)
    result = train(config, dataset=data)
    targets = np.where(data.labels % 2 == 0, 1.0, -1.0)  # the documented +-1 parity targets
    history, losses = numpy_linear_gd(data.normalized().astype(np.float64), targets,
                                      result.initial_first_layer.numpy(), lr=2.0, steps=12)
    final = first_weight(result.model, "conv").numpy().reshape(3, -1)
    assert np.abs(final - history[0]).max() > 1e-3  # training really moved the filters
    np.testing.assert_allclose(final, history[-1], rtol=1e-10, atol=1e-13)
    assert result.snapshot_steps.tolist() == [0, 4, 8, 12]
    np.testing.assert_allclose(result.snapshot_weights.numpy().reshape(4, 3, -1), history[[0, 4, 8, 12]], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(result.metrics["step_loss"], losses, rtol=1e-10)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("arch", "classes"), [("linear", 2), ("linear-multi", 3)])
def test_stability_bound_equals_the_autograd_hessian(arch: str, classes: int) -> None:
    rng = np.random.default_rng(6)
    images = torch.from_numpy(rng.normal(size=(7, 2, 5, 5)))
    torch.manual_seed(0)
    model = build_model(arch, 2, classes, width=3, kernel_size=2, init_std=0.1).double()
    targets = torch.from_numpy(rng.normal(size=(7,) if arch == "linear" else (7, classes)))
    weight = model.conv.weight.detach().clone()

    def loss(w: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, {"conv.weight": w}, (images,))
        return ((out - targets) ** 2).mean()

    hessian = torch.autograd.functional.hessian(loss, weight).reshape(weight.numel(), weight.numel())
    expected = torch.linalg.eigvalsh(hessian)[-1].item()
    assert linear_gd_hessian_max_eigenvalue(model, images) == pytest.approx(expected, rel=1e-10)


def test_unstable_lr_is_rejected_one_line_and_the_bound_is_sharp(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_dataset(n=16, channels=1, size=8, classes=2, seed=7)
    base = TrainConfig(arch="linear", epochs=60, batch_size=10_000, width=2, precision="float64")
    model = build_model("linear", 1, 2, width=2).double()
    images = torch.from_numpy(data.normalized()).double()
    bound = check_linear_lr(base.resolved(), model, images)
    assert bound == pytest.approx(2.0 / linear_gd_hessian_max_eigenvalue(model, images))
    with pytest.raises(LinearCNNInputError) as info:
        train(TrainConfig(**{**base.to_dict(), "lr": 1.01 * bound, "epochs": 1}), dataset=data)
    assert "unstable" in str(info.value) and "\n" not in str(info.value)
    stable = train(TrainConfig(**{**base.to_dict(), "lr": 0.9 * bound}), dataset=data).metrics["step_loss"]
    assert np.isfinite(stable).all() and stable[-1] < 0.5 * stable[0]
    monkeypatch.setattr("linearcnn.train.loop.check_linear_lr", lambda *args: None)  # train past the bound anyway
    unstable = train(TrainConfig(**{**base.to_dict(), "lr": 1.05 * bound}), dataset=data).metrics["step_loss"]
    assert unstable[-1] > 100 * unstable[0]  # just above the bound, gradient descent diverges


def test_checkpoint_loads_with_weights_only_and_holds_everything(tmp_path: Path) -> None:
    data = make_dataset(n=20, classes=4)
    config = TrainConfig(arch="vgg11-bn", labels="random", steps=5, batch_size=8, width=4, snapshot_every=2, out=str(tmp_path / "run"))
    result = train(config, dataset=data)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert CHECKPOINT_KEYS <= set(checkpoint)
    assert checkpoint["format"] == "linearcnn-checkpoint" and checkpoint["format_version"] == 1
    assert checkpoint["first_layer"]["name"] == "features.0"
    assert torch.equal(checkpoint["first_layer"]["initial_weight"], result.initial_first_layer)
    assert checkpoint["snapshots"]["steps"].tolist() == [0, 2, 4]
    assert checkpoint["snapshots"]["weights"].shape == (3, 4, 3, 3, 3)
    assert torch.equal(checkpoint["snapshots"]["weights"][0], result.initial_first_layer)
    for name, value in result.model.state_dict().items():
        assert torch.equal(checkpoint["model_state_dict"][name], value.cpu()), name
    assert checkpoint["optimizer_state_dict"]["param_groups"][0]["lr"] == 0.01
    assert checkpoint["seed"] == 0 and checkpoint["step"] == 5 and checkpoint["epoch"] == 1
    assert checkpoint["config"]["arch"] == "vgg11-bn" and checkpoint["config"]["width"] == 4
    assert set(checkpoint["versions"]) >= {"linearcnn", "torch", "python"}
    assert torch.equal(checkpoint["random_labels"], draw_random_labels(20, 4, 0))
    assert len(checkpoint["metrics"]["step_loss"]) == 5
    assert isinstance(checkpoint["rng_state"]["torch"], torch.Tensor)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["step"] == 5 and summary["config"]["labels"] == "random"
    assert summary["memory_format"] == "channels_last"  # the deep nets train in channels_last on the CPU too
    rebuilt = model_from_checkpoint(checkpoint).eval()
    result.model.eval()
    x = torch.from_numpy(data.normalized()[:3])
    # the same layout gives the same kernels, so the rebuilt model must agree bit for bit
    assert torch.equal(rebuilt(x), result.model.to(memory_format=torch.contiguous_format)(x))


def test_our_checkpoint_reads_with_the_checkpoint_loader(tmp_path: Path) -> None:
    from linearcnn.checkpoints import load_first_layer

    result = train(TrainConfig(arch="resnet20", steps=2, batch_size=8, width=4, out=str(tmp_path)), dataset=make_dataset())
    layer = load_first_layer(tmp_path / "checkpoint.pt")
    assert layer.name == "conv1"
    np.testing.assert_array_equal(layer.weight, first_weight(result.model, "conv1").double().numpy())
    np.testing.assert_array_equal(layer.init_weight, result.initial_first_layer.double().numpy())


def _comparable(checkpoint: dict) -> dict:
    metrics = {k: v for k, v in checkpoint["metrics"].items() if k not in ("seconds", "images_per_second")}
    return {
        "model": checkpoint["model_state_dict"], "optimizer": checkpoint["optimizer_state_dict"]["state"],
        "snapshots": checkpoint["snapshots"], "metrics": metrics, "step": checkpoint["step"], "epoch": checkpoint["epoch"],
    }


def _assert_equal_nested(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_nested(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_is_bit_exact_at_an_epoch_end_and_inside_an_epoch(tmp_path: Path, optimizer: str) -> None:
    data = make_dataset(n=20)  # batch 8: 3 steps per epoch, the last one partial
    base = {"arch": "vgg11-bn", "labels": "random", "batch_size": 8, "width": 4, "lr": 0.02, "optimizer": optimizer,
            "momentum": 0.9 if optimizer == "sgd" else 0.0, "snapshot_every": 2}
    train(TrainConfig(**base, epochs=2, out=str(tmp_path / "whole")), dataset=data)
    train(TrainConfig(**base, epochs=1, out=str(tmp_path / "epoch")), dataset=data)
    train(TrainConfig(**base, epochs=2, out=str(tmp_path / "epoch"), resume=True), dataset=data)
    train(TrainConfig(**base, epochs=2, steps=4, out=str(tmp_path / "inside")), dataset=data)
    train(TrainConfig(**base, epochs=2, out=str(tmp_path / "inside"), resume=True), dataset=data)
    whole = _comparable(load_training_checkpoint(tmp_path / "whole" / "checkpoint.pt"))
    assert whole["step"] == 6 and whole["epoch"] == 2
    for name in ("epoch", "inside"):
        _assert_equal_nested(whole, _comparable(load_training_checkpoint(tmp_path / name / "checkpoint.pt")), name)


def test_random_labels_are_reproducible_from_the_seed_and_stored() -> None:
    assert torch.equal(draw_random_labels(500, 10, 3), draw_random_labels(500, 10, 3))
    assert not torch.equal(draw_random_labels(500, 10, 3), draw_random_labels(500, 10, 4))
    counts = torch.bincount(draw_random_labels(5000, 10, 0), minlength=10)
    assert counts.min() > 400 and counts.max() < 600  # uniform over the classes (binomial sd 21)
    data = make_dataset(n=20, classes=4)
    first = train(TrainConfig(arch="resnet20", labels="random", steps=1, width=4, seed=1), dataset=data)
    again = train(TrainConfig(arch="resnet20", labels="random", steps=1, width=4, seed=1), dataset=data)
    fixed = train(TrainConfig(arch="resnet20", labels="random", steps=1, width=4, seed=2, label_seed=1), dataset=data)
    assert torch.equal(first.random_labels, draw_random_labels(20, 4, 1))
    assert torch.equal(first.random_labels, again.random_labels)
    assert torch.equal(fixed.random_labels, first.random_labels)
    assert not torch.equal(fixed.initial_first_layer, first.initial_first_layer)
    linear = train(TrainConfig(arch="linear", labels="random", steps=1, width=2, seed=1), dataset=data)
    assert torch.equal(linear.random_labels, draw_random_labels(20, 2, 1))
    assert train(TrainConfig(arch="linear", steps=1, width=2), dataset=data).random_labels is None


def test_parity_targets_are_plus_one_for_even_and_minus_one_for_odd_classes() -> None:
    assert parity_targets(torch.tensor([0, 1, 2, 3, 4])).tolist() == [1.0, -1.0, 1.0, -1.0, 1.0]


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_equals_one_process(tmp_path: Path) -> None:
    from linearcnn.cli import main

    spec = write_npz(tmp_path / "data.npz", n=12, channels=3, size=8)
    base = ["train", "--arch", "linear", "--data", spec, "--epochs", "3", "--precision", "float64", "--lr", "0.5",
            "--width", "4", "--quiet"]
    runs = {"full": ["--batch-size", "1000"], "mini": ["--batch-size", "5", "--momentum", "0.9"]}
    script = tmp_path / "ddp_run.py"
    script.write_text(
        "import sys\nfrom linearcnn.cli import main\n"
        f"base = {base!r}\nruns = {runs!r}\n"
        "for name, extra in runs.items():\n"
        "    code = main(base + extra + ['--out', sys.argv[1] + '/' + name])\n"
        "    if code:\n        sys.exit(code)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("cpu x2") == 2, done.stdout + done.stderr[-3000:]  # rank 0 alone reports
    for name, extra in runs.items():
        assert main(base + extra + ["--out", str(tmp_path / "one" / name)]) == 0
        single = load_training_checkpoint(tmp_path / "one" / name / "checkpoint.pt")
        ddp = load_training_checkpoint(tmp_path / "ddp" / name / "checkpoint.pt")
        assert single["step"] == ddp["step"] > 0
        a, b = single["model_state_dict"]["conv.weight"], ddp["model_state_dict"]["conv.weight"]
        assert (a - single["first_layer"]["initial_weight"]).abs().max() > 1e-3
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ddp["metrics"]["step_loss"], single["metrics"]["step_loss"], rtol=1e-12)
        np.testing.assert_allclose(ddp["metrics"]["first_layer_displacement"], single["metrics"]["first_layer_displacement"], rtol=1e-12)
        assert json.loads((tmp_path / "ddp" / name / "metrics.json").read_text())["world_size"] == 2
        assert sorted(p.name for p in (tmp_path / "ddp" / name).iterdir()) == ["checkpoint.pt", "metrics.json"]


def test_cli_trains_and_writes_checkpoint_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from linearcnn.cli import main

    spec = write_npz(tmp_path / "data.npz", n=12, channels=1, size=8)
    out = tmp_path / "run"
    code = main(["train", "--arch", "linear", "--data", spec, "--epochs", "3", "--batch-size", "1000", "--lr", "0.5",
                 "--width", "4", "--snapshot-every", "1", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "linear seed 0" in captured.out and "3 steps" in captured.out
    checkpoint = load_training_checkpoint(out / "checkpoint.pt")
    assert checkpoint["snapshots"]["steps"].tolist() == [0, 1, 2, 3]
    assert checkpoint["data"]["channels"] == 1 and checkpoint["data"]["spec"] == spec
    code = main(["train", "--arch", "linear-multi", "--data", spec, "--labels", "random", "--num-classes", "3", "--epochs", "2",
                 "--batch-size", "5", "--seeds", "0,1", "--width", "4", "--out", str(tmp_path / "seeds"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((tmp_path / "seeds" / "metrics.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["runs"]) == 2
    assert summary["loss_mean"] == pytest.approx(np.mean([r["loss"] for r in summary["runs"]]))
    for seed, run in zip((0, 1), summary["runs"]):  # no target: converged once the epochs are done
        assert run["converged"] is True and run["reached_step"] == 6 and run["reached_epoch"] == 2  # 12 images, batch 5
        per_seed = json.loads((tmp_path / "seeds" / f"seed{seed}" / "metrics.json").read_text())
        assert run["first_layer_displacement"] == per_seed["metrics"]["first_layer_displacement"][-1] > 0
    code = main(["train", "--arch", "linear", "--data", spec, "--until-loss", "1e-9", "--max-epochs", "2", "--batch-size", "1000",
                 "--lr", "0.5", "--width", "4", "--out", str(tmp_path / "target"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and "2 epochs" in captured.out and "not converged (until_loss 1e-09 not reached in 2 epochs)" in captured.out
    assert json.loads((tmp_path / "target" / "metrics.json").read_text())["converged"] is False
    labels = [load_training_checkpoint(tmp_path / "seeds" / f"seed{s}" / "checkpoint.pt")["random_labels"] for s in (0, 1)]
    assert torch.equal(labels[0], draw_random_labels(12, 3, 0)) and torch.equal(labels[1], draw_random_labels(12, 3, 1))


def _bad(tmp_path: Path, case: str) -> tuple[list[str], Path]:
    spec = write_npz(tmp_path / "data.npz", n=12, channels=3, size=8)
    out = tmp_path / "out"
    base = ["train", "--data", spec, "--epochs", "1", "--width", "4", "--quiet", "--out", str(out)]
    if case == "unknown arch":
        return base + ["--arch", "alexnet"], out
    if case == "kernel larger than images":
        return base + ["--arch", "vgg11", "--kernel-size", "9"], out
    if case == "unstable lr":
        return base + ["--arch", "linear", "--lr", "1e6", "--batch-size", "1000"], out
    if case == "unwritable out":
        (tmp_path / "afile").write_text("x")
        return base[:-1] + [str(tmp_path / "afile" / "run"), "--arch", "linear"], tmp_path / "afile" / "run"
    if case == "labels true without labels":
        spec = write_npz(tmp_path / "nolabels.npz", labelled=False)
        return ["train", "--data", spec, "--arch", "linear", "--out", str(out), "--quiet"], out
    if case == "bad seeds":
        return base + ["--arch", "linear", "--seeds", "0,x"], out
    if case == "bad choice":
        return base + ["--arch", "linear", "--optimizer", "lbfgs"], out
    if case == "sync-bn on without CUDA":
        return base + ["--arch", "vgg11-bn", "--sync-bn", "on", "--device", "cpu"], out
    if case == "bad test limit":
        return base + ["--arch", "linear", "--test-limit", "0"], out
    if case == "bad test every":
        return base + ["--arch", "linear", "--test-every", "-1"], out
    if case == "test split of another size":
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "splits.npz", images=rng.random((12, 3, 8, 8)).astype(np.float32), labels=rng.integers(0, 2, 12),
                 test_images=rng.random((5, 3, 6, 6)).astype(np.float32), test_labels=rng.integers(0, 2, 5))
        return ["train", "--data", f"npz:{tmp_path / 'splits.npz'}", "--arch", "linear", "--lr", "0.1", "--epochs", "1",
                "--width", "4", "--quiet", "--out", str(out)], out
    if case == "train accuracy above 1":
        return base + ["--arch", "linear", "--until-train-acc", "1.5"], out
    if case == "loss target 0":
        return base + ["--arch", "linear", "--until-loss", "0"], out
    if case == "two targets":
        return base + ["--arch", "linear", "--until-loss", "0.1", "--until-train-acc", "0.9"], out
    if case == "target with steps":
        return base + ["--arch", "linear", "--until-loss", "0.1", "--steps", "3"], out
    if case == "max epochs without a target":
        return base + ["--arch", "linear", "--max-epochs", "3"], out
    if case == "max epochs 0":
        return base + ["--arch", "linear", "--until-loss", "0.1", "--max-epochs", "0"], out
    if case == "together with compile":
        return base + ["--arch", "linear", "--seeds", "0,1", "--together", "--compile"], out
    out.mkdir()
    if case == "foreign checkpoint":
        torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, out / "checkpoint.pt")
        return base + ["--arch", "linear", "--resume"], out
    assert main_ok(base + ["--arch", "linear", "--lr", "0.1"])
    if case == "checkpoint exists":
        return base + ["--arch", "linear", "--lr", "0.1"], out
    if case == "resume other config":
        return base + ["--arch", "linear", "--lr", "0.2", "--resume", "--epochs", "2"], out
    if case == "resume other arch":
        return base + ["--arch", "vgg11", "--resume", "--epochs", "2"], out
    if case == "resume channel mismatch":
        write_npz(tmp_path / "data.npz", n=12, channels=1, size=8)  # same spec, other images
        return base + ["--arch", "linear", "--lr", "0.1", "--resume", "--epochs", "2"], out
    raise AssertionError(case)


def main_ok(argv: list[str]) -> bool:
    from linearcnn.cli import main

    return main(argv) == 0


BAD_CASES = {
    "unknown arch": "alexnet",
    "kernel larger than images": "larger than the images",
    "unstable lr": "unstable",
    "unwritable out": "cannot be created",
    "labels true without labels": "has no labels",
    "bad seeds": "--seeds",
    "bad choice": "--optimizer",
    "sync-bn on without CUDA": "--sync-bn on needs CUDA",
    "bad test limit": "--test-limit",
    "together with compile": "--together",
    "train accuracy above 1": "--until-train-acc must be in (0, 1], got 1.5",
    "loss target 0": "--until-loss must be a positive number, got 0.0",
    "two targets": "--until-loss and --until-train-acc are two stopping rules",
    "target with steps": "--steps does not combine with --until-loss; bound the run with --max-epochs",
    "max epochs without a target": "--max-epochs is the cap of a run with a target (--until-train-acc or --until-loss)",
    "max epochs 0": "--max-epochs must be a positive integer, got 0",
    "bad test every": "--test-every",
    "test split of another size": "test split",
    "foreign checkpoint": "format",
    "checkpoint exists": "--resume",
    "resume other config": "lr=",
    "resume other arch": "arch=",
    "resume channel mismatch": "channel",
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    from linearcnn.cli import main

    argv, out = _bad(tmp_path, case)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()} if out.is_dir() else {}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert BAD_CASES[case] in err, err
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()} if out.is_dir() else {}
    assert sorted(after) == before and after == mtimes  # nothing written or half-written


@pytest.mark.parametrize(("change", "parameter", "message"), [
    ({"lr": -1.0}, "lr", "lr must be a positive number, got -1.0"),
    ({"batch_size": 0}, "batch_size", "batch_size must be a positive integer, got 0"),
    ({"sync_bn": "maybe"}, "sync_bn", "sync_bn 'maybe' is not valid; expected one of auto, on, off"),
    ({"until_train_acc": 1.5}, "until_train_acc", "until_train_acc must be in (0, 1], got 1.5"),
    ({"until_loss": -1.0}, "until_loss", "until_loss must be a positive number, got -1.0"),
])
def test_library_errors_name_the_parameter_and_the_cli_shows_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture, change: dict, parameter: str, message: str
) -> None:
    from linearcnn.cli import main

    with pytest.raises(LinearCNNInputError) as info:
        TrainConfig(**change).validate()
    assert (str(info.value), info.value.parameter) == (message, parameter)
    flag = "--" + parameter.replace("_", "-")
    assert main(["train", f"{flag}={next(iter(change.values()))}", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: {flag}{message[len(parameter):]}\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_a_gpu_is_bad_input() -> None:
    with pytest.raises(LinearCNNInputError, match="CUDA is not available"):
        train(TrainConfig(arch="linear", device="cuda", steps=1), dataset=make_dataset())


def test_train_seeds_rejects_repeated_seeds() -> None:
    with pytest.raises(LinearCNNInputError, match="repeats"):
        train_seeds(TrainConfig(arch="linear"), [1, 1], dataset=make_dataset())


def test_test_split_metrics_equal_an_independent_evaluation() -> None:
    data, held_out = make_dataset(n=24, classes=3), make_dataset(n=10, classes=3, seed=7)
    config = TrainConfig(arch="vgg11-bn", batch_size=8, lr=0.05, width=4, epochs=2, precision="float64")
    result = train(config, dataset=data, test_dataset=held_out)
    assert result.metrics["test_step"] == [3, 6] and result.data_info["test"]["num_images"] == 10
    # independent: numpy normalisation with the training set's own statistics, the model in eval mode
    train_images = data.images.astype(np.float64)
    mean = train_images.mean(axis=(0, 2, 3), keepdims=True)
    std = train_images.std(axis=(0, 2, 3), keepdims=True)
    x = torch.from_numpy((held_out.images.astype(np.float64) - mean) / std)
    model = result.model.eval()
    with torch.no_grad():
        logits = model(x)
    labels = torch.as_tensor(held_out.labels)
    assert result.metrics["test_accuracy"][-1] == pytest.approx(float((logits.argmax(1) == labels).double().mean()), abs=1e-12)
    expected_loss = float(torch.nn.functional.cross_entropy(logits, labels))
    assert result.metrics["test_loss"][-1] == pytest.approx(expected_loss, rel=1e-6)
    # the test pass changes nothing in training (BatchNorm statistics included)
    blind = train(TrainConfig(**{**config.to_dict(), "test": False}), dataset=data, test_dataset=held_out)
    assert blind.metrics["test_step"] == []
    for name, value in blind.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name


def test_linear_test_accuracy_is_the_sign_agreement_with_the_label_parity() -> None:
    data, held_out = make_dataset(n=16, classes=4), make_dataset(n=11, classes=4, seed=3)
    result = train(TrainConfig(arch="linear", steps=5, batch_size=100, lr=0.5, width=3, precision="float64", test_limit=9),
                   dataset=data, test_dataset=held_out)
    mean = data.images.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    std = data.images.astype(np.float64).std(axis=(0, 2, 3), keepdims=True)
    x = torch.from_numpy((held_out.images[:9].astype(np.float64) - mean) / std)
    with torch.no_grad():
        out = result.model(x)
    parity = 1.0 - 2.0 * (torch.as_tensor(held_out.labels[:9]) % 2)
    assert result.metrics["test_step"] == [1, 2, 3, 4, 5]  # full batch: every step ends an epoch
    assert result.metrics["test_accuracy"][-1] == pytest.approx(float((torch.sign(out) == parity).double().mean()))
    assert result.metrics["test_loss"][-1] == pytest.approx(float(((out - parity) ** 2).mean()), rel=1e-6)  # float32 normalised data


def test_checkpoint_from_before_the_newer_settings_still_resumes(tmp_path: Path) -> None:
    data = make_dataset(n=12)
    config = TrainConfig(arch="linear", batch_size=4, width=2, lr=0.1, steps=2, out=str(tmp_path / "run"))
    train(config, dataset=data)
    path = tmp_path / "run" / "checkpoint.pt"
    old = load_training_checkpoint(path)
    for key in ("sync_bn", "test", "test_limit"):
        del old["config"][key]  # a checkpoint written before these settings existed
    for key in ("test_step", "test_loss", "test_accuracy", "first_layer_displacement"):
        del old["metrics"][key]
    del old["stop"], old["converged"]
    torch.save(old, path)
    resumed = train(TrainConfig(**{**config.to_dict(), "steps": 4, "resume": True}), dataset=data)
    assert resumed.step == 4 and len(resumed.metrics["step_loss"]) == 4
    assert len(resumed.metrics["first_layer_displacement"]) == len(resumed.metrics["epoch"]) == 1 and resumed.converged


def test_test_every_and_a_resumed_finished_run_gets_its_test_pass(tmp_path: Path) -> None:
    data, held_out = make_dataset(n=12, classes=3), make_dataset(n=6, classes=3, seed=2)
    base = {"arch": "vgg11", "batch_size": 4, "lr": 0.05, "width": 4, "out": str(tmp_path / "run")}
    every = train(TrainConfig(**base, epochs=5, test_every=2), dataset=data, test_dataset=held_out)
    assert every.metrics["test_step"] == [6, 12, 15]  # epochs 2 and 4, and the end (3 steps per epoch)
    blind = train(TrainConfig(**{**base, "out": str(tmp_path / "blind")}, epochs=2, test=False), dataset=data)
    assert blind.metrics["test_step"] == []
    resumed = train(TrainConfig(**{**base, "out": str(tmp_path / "blind")}, epochs=2, resume=True), dataset=data,
                    test_dataset=held_out)
    assert resumed.step == 6 and resumed.metrics["test_step"] == [6]
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, blind.model.state_dict()[name]), name  # no training happened, the test pass changed nothing
    stored = load_training_checkpoint(tmp_path / "blind" / "checkpoint.pt")
    assert stored["metrics"]["test_accuracy"] == resumed.metrics["test_accuracy"]


# Stopping rules and the first layer's displacement ---------------------------------------------------------------------------------

STOP_BASE = {"arch": "vgg11-bn", "width": 4, "batch_size": 8, "lr": 0.05, "momentum": 0.9, "precision": "float64", "test": False}


def _target_at(values: list[float], higher_is_better: bool) -> tuple[float, int]:
    """A target first met at a later epoch than the first (a value of the curve itself), and the index of that epoch."""
    best = np.maximum.accumulate(values) if higher_is_better else np.minimum.accumulate(values)
    index = next(i for i in range(len(values) - 1, 0, -1) if best[i] != best[i - 1])  # the last new record
    return float(values[index]), index


@pytest.mark.parametrize(("rule", "key", "higher"), [("until_train_acc", "accuracy", True), ("until_loss", "loss", False)])
def test_a_target_stops_at_the_first_epoch_that_meets_it_and_a_low_cap_does_not_converge(
    tmp_path: Path, rule: str, key: str, higher: bool
) -> None:
    data = make_dataset(n=24, size=8, classes=3)  # batch 8: 3 steps per epoch
    reference = train(TrainConfig(**STOP_BASE, epochs=8), dataset=data)  # no target: the curve to compare with
    assert reference.converged and reference.stop["rule"] == "epochs" and reference.stop["reached_step"] == 24
    target, index = _target_at(reference.metrics[key], higher)
    met = [v >= target if higher else v <= target for v in reference.metrics[key]]
    assert met.index(True) == index >= 1  # earlier epochs all fall short
    run = tmp_path / "run"
    stopped = train(TrainConfig(**STOP_BASE, **{rule: target}, max_epochs=8, out=str(run)), dataset=data)
    assert stopped.epoch == index + 1 and stopped.step == 3 * (index + 1)
    assert stopped.metrics[key] == reference.metrics[key][: index + 1]  # the same run, cut at the epoch that met the target
    assert stopped.converged and stopped.stop == {"rule": rule, "target": target, "reached": True, "reached_step": 3 * (index + 1),
                                                  "reached_epoch": index + 1, "max_epochs": 8}
    summary = json.loads((run / "metrics.json").read_text())
    checkpoint = load_training_checkpoint(run / "checkpoint.pt")
    assert summary["stop"] == checkpoint["stop"] == stopped.stop and summary["converged"] is checkpoint["converged"] is True
    capped = train(TrainConfig(**STOP_BASE, **{rule: target}, max_epochs=index, out=str(tmp_path / "capped")), dataset=data)
    assert capped.epoch == index and not capped.converged
    assert capped.stop["reached"] is False and capped.stop["reached_step"] is None and capped.stop["max_epochs"] == index
    assert json.loads((tmp_path / "capped" / "metrics.json").read_text())["converged"] is False
    # resuming with a larger cap goes on, bit for bit the run that was never capped; resuming a converged run does nothing
    resumed = train(TrainConfig(**STOP_BASE, **{rule: target}, max_epochs=8, out=str(tmp_path / "capped"), resume=True), dataset=data)
    assert resumed.stop == stopped.stop and resumed.metrics[key] == stopped.metrics[key]
    again = train(TrainConfig(**STOP_BASE, **{rule: target}, max_epochs=20, out=str(run), resume=True), dataset=data)
    assert again.step == stopped.step and again.stop == {**stopped.stop, "max_epochs": 20}
    for name, value in stopped.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name


def test_first_layer_displacement_is_the_relative_distance_from_init_at_every_epoch(tmp_path: Path) -> None:
    data = make_dataset(n=24, size=8, classes=3)  # 3 steps per epoch
    result = train(TrainConfig(**STOP_BASE, epochs=4, snapshot_every=3, out=str(tmp_path)), dataset=data)
    checkpoint = load_training_checkpoint(tmp_path / "checkpoint.pt")
    w0 = checkpoint["first_layer"]["initial_weight"].numpy()  # (K, C, k, k)
    final = checkpoint["model_state_dict"]["features.0.weight"].numpy()
    snapshots = checkpoint["snapshots"]["weights"].numpy()  # (5, K, C, k, k) at steps 0, 3, ..., 12: the epoch ends
    assert checkpoint["snapshots"]["steps"].tolist() == [0, 3, 6, 9, 12]
    expected = [np.linalg.norm(w - w0) / np.linalg.norm(w0) for w in snapshots[1:]]
    assert expected[-1] > 0.1  # the first layer really moved
    np.testing.assert_allclose(result.metrics["first_layer_displacement"], expected, rtol=1e-12)
    np.testing.assert_allclose(checkpoint["metrics"]["first_layer_displacement"], expected, rtol=1e-12)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["final"]["first_layer_displacement"] == pytest.approx(np.linalg.norm(final - w0) / np.linalg.norm(w0), rel=1e-12)
    inside = train(TrainConfig(**STOP_BASE, steps=5), dataset=data)  # ends inside epoch 2: the final value is at step 5
    w5 = first_weight(inside.model, "features.0").numpy()
    w0 = inside.initial_first_layer.numpy()
    assert final_metrics(inside)["first_layer_displacement"] == pytest.approx(np.linalg.norm(w5 - w0) / np.linalg.norm(w0), rel=1e-12)
    assert len(inside.metrics["first_layer_displacement"]) == 1 and inside.stop["reached_epoch"] == 1


def test_a_first_layer_that_is_no_longer_finite_stops_the_run_even_with_a_finite_loss():
    from linearcnn.train.metrics import book_segment, empty_metrics

    totals = [2.3 * 8, 1.0, 8.0, 0.0, 0.0, float("inf"), 2.3]  # loss finite, displacement inf
    with pytest.raises(LinearCNNInputError, match="first layer is no longer finite") as info:
        book_segment(empty_metrics(), totals, step=1, epoch=1, elapsed=1.0, test=None, lr=0.1)
    assert info.value.parameter == "lr"


def test_weight_decay_must_be_finite(capsys):
    from linearcnn.cli import main

    code = main(["train", "--arch", "linear", "--weight-decay", "inf", "--epochs", "1"])
    assert code == 2 and "--weight-decay must be a finite number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", str(2**64)], "--seed must be an integer in [0, 2**63 - 1]"),
        (["--num-classes", str(10**12)], "--num-classes must be at most 100,000"),
        (["--width", str(10**9)], "--width must be at most 16,384"),
        (["--kernel-size", "1000"], "--kernel-size must be at most 64"),
        (["--seeds", f"0,{2**70}"], "--seeds '0,"),
    ],
)
def test_absurd_sizes_and_seeds_are_one_line_errors_before_anything_is_written(tmp_path, capsys, argv, message):
    from linearcnn.cli import main

    out = tmp_path / "out"
    code = main(["train", "--arch", "linear", "--epochs", "1", "--limit", "8", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_a_second_run_into_a_locked_out_exits_2_and_the_lock_dies_with_its_run(tmp_path, capsys):
    import os

    from linearcnn.cli import main
    from linearcnn.train.run_files import OutLock

    out = tmp_path / "out"
    out.mkdir()
    argv = ["train", "--arch", "linear", "--epochs", "1", "--limit", "16", "--data", "builtin", "--out", str(out), "--quiet"]
    held = OutLock(out)  # stands for another run training into `out`
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"is in use by another training run (process {os.getpid()})" in err and "--out" in err
        assert not (out / "checkpoint.pt").exists()
    finally:
        held.release()
    assert main(argv) == 0  # released: the folder is free again
    capsys.readouterr()
    assert (out / "checkpoint.pt").exists()
    OutLock(out).release()  # and the finished run let go of it


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda c: c.pop("epoch"), "'epoch'"),
        (lambda c: c.__setitem__("step", "7"), "'step'"),
        (lambda c: c["snapshots"].__setitem__("weights", torch.zeros(5, 1)), "'snapshots'"),
        (lambda c: c.pop("partial_epoch"), "'partial_epoch'"),
        (lambda c: c["rng_state"].__setitem__("torch", torch.zeros(3)), "'rng_state.torch'"),
        (lambda c: c["first_layer"].__setitem__("initial_weight", [1, 2]), "'first_layer.initial_weight'"),
        (lambda c: c["model_state_dict"].__setitem__("conv.weight", torch.zeros(1)), "do not fit this model"),
        (lambda c: c.__setitem__("optimizer_state_dict", {"state": {}, "param_groups": []}), "optimizer state does not fit"),
    ],
)
def test_resume_from_a_damaged_checkpoint_is_one_line(tmp_path, capsys, damage, field):
    from linearcnn.cli import main

    out = tmp_path / "out"
    argv = ["train", "--arch", "linear", "--limit", "16", "--out", str(out), "--quiet"]
    assert main([*argv, "--epochs", "1"]) == 0
    capsys.readouterr()
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    damage(checkpoint)
    torch.save(checkpoint, out / "checkpoint.pt")
    assert main([*argv, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert field in err and err.startswith("error: --resume") and len(err.strip().splitlines()) == 1, err


def test_a_run_killed_in_its_first_steps_resumes_to_the_uninterrupted_result(tmp_path: Path, monkeypatch) -> None:
    from linearcnn.train import stepper as stepper_module

    data = make_dataset(n=20)
    base = {"arch": "vgg11-bn", "labels": "random", "batch_size": 8, "width": 4, "lr": 0.02, "momentum": 0.9, "epochs": 2}
    train(TrainConfig(**base, out=str(tmp_path / "whole")), dataset=data)
    real_step = stepper_module.SingleStepper.step
    calls = {"n": 0}

    def dies_at_the_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process killed long before the first periodic checkpoint
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(stepper_module.SingleStepper, "step", dies_at_the_second_step)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**base, out=str(tmp_path / "killed")), dataset=data)
    monkeypatch.setattr(stepper_module.SingleStepper, "step", real_step)
    left = load_training_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert left["step"] == 0  # the step-0 checkpoint written before training
    train(TrainConfig(**base, out=str(tmp_path / "killed"), resume=True), dataset=data)
    whole = _comparable(load_training_checkpoint(tmp_path / "whole" / "checkpoint.pt"))
    _assert_equal_nested(whole, _comparable(load_training_checkpoint(tmp_path / "killed" / "checkpoint.pt")), "killed")


def test_sigterm_ends_the_step_saves_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, monkeypatch) -> None:
    import os
    import signal

    from linearcnn.train import stepper as stepper_module
    from linearcnn.train.loop import TrainingStopped

    data = make_dataset(n=20)  # batch 8: 3 steps per epoch
    base = {"arch": "vgg11-bn", "labels": "random", "batch_size": 8, "width": 4, "lr": 0.02, "momentum": 0.9, "epochs": 2,
            "snapshot_every": 2}
    train(TrainConfig(**base, out=str(tmp_path / "whole")), dataset=data)
    real_step = stepper_module.SingleStepper.step
    calls = {"n": 0}

    def terminated_during_the_fifth_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the step runs
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(stepper_module.SingleStepper, "step", terminated_during_the_fifth_step)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 5"):
        train(TrainConfig(**base, out=str(tmp_path / "stopped")), dataset=data)
    assert signal.getsignal(signal.SIGTERM) is handler  # the run's handler is gone again
    monkeypatch.setattr(stepper_module.SingleStepper, "step", real_step)
    left = load_training_checkpoint(tmp_path / "stopped" / "checkpoint.pt")
    assert (left["step"], left["epoch"], left["epoch_step"]) == (5, 1, 2)  # inside the second epoch
    train(TrainConfig(**base, out=str(tmp_path / "stopped"), resume=True), dataset=data)
    whole = _comparable(load_training_checkpoint(tmp_path / "whole" / "checkpoint.pt"))
    _assert_equal_nested(whole, _comparable(load_training_checkpoint(tmp_path / "stopped" / "checkpoint.pt")), "stopped")


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    from linearcnn.cli import main

    code = main(["train", "--arch", "vgg11-bn", "--width", "4", "--epochs", "2", "--limit", "40", "--batch-size", "20",
                 "--no-test", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "step" in line]
    assert code == 0 and lines, err
    assert lines[-1].split(": step ")[1].startswith("4/4 ")  # the final state, as plain text (no bar codes)
    assert "\x1b[" not in err
    code = main(["train", "--arch", "vgg11-bn", "--width", "4", "--epochs", "1", "--limit", "40", "--no-test", "--quiet",
                 "--out", str(tmp_path / "quiet")])
    assert code == 0 and ": step " not in capsys.readouterr().err


def test_compile_only_when_asked(tmp_path):
    assert TrainConfig().compile is False  # measured no faster on the CPU (bench_train)
    train(TrainConfig(arch="vgg11-bn", width=4, steps=1, batch_size=10, test=False, out=str(tmp_path / "run")), dataset=make_dataset())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["compiled"] is False


def test_channels_last_where_it_measured_faster():
    from linearcnn.train.config import CPU_CHANNELS_LAST_MAX_VGG_WIDTH, channels_last_for

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert channels_last_for(TrainConfig(arch="vgg11-bn", width=CPU_CHANNELS_LAST_MAX_VGG_WIDTH), cpu)
    assert not channels_last_for(TrainConfig(arch="vgg11-bn", width=64), cpu)  # 0.93x on the CPU
    assert not channels_last_for(TrainConfig(arch="vgg11"), cpu)  # its default width is 64
    assert channels_last_for(TrainConfig(arch="vgg11-bn", width=64), cuda)
    assert channels_last_for(TrainConfig(arch="resnet20", width=64), cpu)
    assert not channels_last_for(TrainConfig(arch="linear"), cpu)
