"""Seeds trained together (one vmapped stack) equal the same seeds trained one after another; their
checkpoints are ordinary one-model checkpoints (fit, resume either way); a stopping target stops
each seed where it is reached; bad combinations are one line and exit code 2."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import torch

from linearcnn.errors import LinearCNNInputError
from linearcnn.train import TrainConfig, load_training_checkpoint, train_seeds
from linearcnn.train.stepper import optimizer_state_slice, stack_optimizer_states
from tests.devices import TEST_DEVICE
from tests.test_train import make_dataset

SEEDS = [0, 3, 5]

CASES = {
    "linear full batch": {"arch": "linear", "batch_size": 1000, "lr": 0.3, "width": 3, "labels": "random"},
    "linear-multi minibatch": {"arch": "linear-multi", "batch_size": 7, "lr": 0.3, "width": 3, "momentum": 0.9, "readout": "trainable"},
    "vgg11-bn random labels": {"arch": "vgg11-bn", "batch_size": 8, "lr": 0.05, "width": 4, "labels": "random", "momentum": 0.9,
                               "weight_decay": 1e-3},
    "resnet20 adam": {"arch": "resnet20", "batch_size": 8, "lr": 1e-3, "width": 4, "optimizer": "adam"},
    "vgg11 frozen first layer": {"arch": "vgg11", "batch_size": 8, "lr": 0.05, "width": 4, "freeze_first_layer": True},
}


def _close(a: torch.Tensor, b: torch.Tensor, where: str) -> None:
    if a.is_floating_point():
        scale = max(float(b.abs().max()), 1e-30)
        assert float((a - b).abs().max()) <= 1e-10 * scale + 1e-14, where  # 1e-14: parameters that stay at 0 (bias before BN)
    else:
        assert torch.equal(a, b), where


@pytest.mark.parametrize("case", list(CASES))
def test_together_equals_one_after_another(tmp_path: Path, case: str) -> None:
    data, held_out = make_dataset(n=20, classes=4), make_dataset(n=9, classes=4, seed=1)
    config = TrainConfig(**CASES[case], epochs=2, precision="float64", snapshot_every=2, device=TEST_DEVICE)
    apart = train_seeds(config, SEEDS, dataset=data, test_dataset=held_out)
    together = train_seeds(config, SEEDS, together=True, dataset=data, test_dataset=held_out)
    for one, other in zip(apart, together):
        assert one.config.seed == other.config.seed and one.step == other.step == 2 * -(-20 // min(config.batch_size, 20))
        assert torch.equal(one.initial_first_layer, other.initial_first_layer)
        state = {k: v.cpu() for k, v in one.model.state_dict().items()}
        stacked_state = {k: v.cpu() for k, v in other.model.state_dict().items()}
        assert state.keys() == stacked_state.keys()
        for name in state:
            _close(stacked_state[name], state[name], f"{case} seed {one.config.seed} {name}")
        moved = (state[f"{one.first_layer}.weight"] - one.initial_first_layer).abs().max()
        assert (moved == 0) == bool(config.freeze_first_layer)
        assert torch.equal(one.snapshot_steps, other.snapshot_steps)
        _close(other.snapshot_weights, one.snapshot_weights, f"{case} snapshots")
        for key in ("step_loss", "loss", "accuracy", "test_loss", "test_accuracy"):
            _close(torch.tensor(other.metrics[key]), torch.tensor(one.metrics[key]), f"{case} {key}")
        assert other.metrics["test_step"] == one.metrics["test_step"] == [one.step // 2, one.step]  # every epoch end
    # the seeds really differ from one another (independent models, not one model three times)
    assert not torch.equal(together[0].initial_first_layer, together[1].initial_first_layer)


def test_together_checkpoints_resume_either_way(tmp_path: Path) -> None:
    data = make_dataset(n=20, classes=4)
    base = {"arch": "vgg11-bn", "batch_size": 8, "lr": 0.05, "width": 4, "momentum": 0.9, "labels": "random",
            "precision": "float64", "snapshot_every": 2, "test": False}
    train_seeds(TrainConfig(**base, epochs=2, out=str(tmp_path / "whole")), SEEDS, dataset=data)
    train_seeds(TrainConfig(**base, epochs=2, steps=4, out=str(tmp_path / "split")), SEEDS, together=True, dataset=data)
    train_seeds(TrainConfig(**base, epochs=2, out=str(tmp_path / "split"), resume=True), SEEDS, dataset=data)
    train_seeds(TrainConfig(**base, epochs=1, out=str(tmp_path / "back")), SEEDS, dataset=data)
    train_seeds(TrainConfig(**base, epochs=2, out=str(tmp_path / "back"), resume=True), SEEDS, together=True, dataset=data)
    for seed in SEEDS:
        whole = load_training_checkpoint(tmp_path / "whole" / f"seed{seed}" / "checkpoint.pt")
        for name in ("split", "back"):
            other = load_training_checkpoint(tmp_path / name / f"seed{seed}" / "checkpoint.pt")
            assert other["step"] == whole["step"] == 6 and other["epoch"] == 2
            for key, value in whole["model_state_dict"].items():
                _close(other["model_state_dict"][key], value, f"{name} seed {seed} {key}")
            _close(other["snapshots"]["weights"], whole["snapshots"]["weights"], f"{name} snapshots")
            _close(torch.tensor(other["metrics"]["step_loss"]), torch.tensor(whole["metrics"]["step_loss"]), f"{name} losses")
            assert torch.equal(other["random_labels"], whole["random_labels"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_slices_are_the_states_of_optimizers_run_apart(optimizer: str) -> None:
    def make(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
        return torch.optim.Adam(params, lr=0.1, weight_decay=0.01)

    torch.manual_seed(0)
    start = [torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)]
    stacked = [p.clone().requires_grad_() for p in start]
    apart = [[p[s].clone().requires_grad_() for p in start] for s in range(3)]
    together, alone = make(stacked), [make(params) for params in apart]
    for _ in range(3):
        together.zero_grad()
        sum((p**3).sum() for p in stacked).backward()  # the sum of the three models' losses
        together.step()
        for params, opt in zip(apart, alone):
            opt.zero_grad()
            sum((p**3).sum() for p in params).backward()
            opt.step()
    state = together.state_dict()
    for s, opt in enumerate(alone):
        torch.testing.assert_close(stacked[0][s], apart[s][0], rtol=1e-12, atol=1e-14)
        mine, theirs = optimizer_state_slice(state, stacked, s), opt.state_dict()
        assert mine["param_groups"] == theirs["param_groups"]
        for slot, entry in theirs["state"].items():
            for key, value in entry.items():
                torch.testing.assert_close(torch.as_tensor(mine["state"][slot][key]), torch.as_tensor(value), rtol=1e-12, atol=1e-14)
    back = stack_optimizer_states([optimizer_state_slice(state, stacked, s) for s in range(3)], stacked)
    for slot, entry in state["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(back["state"][slot][key]), torch.as_tensor(value)), (slot, key)


def test_together_refuses_compile_and_torchrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = make_dataset(n=8)
    with pytest.raises(LinearCNNInputError, match="compile"):
        train_seeds(TrainConfig(arch="linear", steps=1, width=2, compile=True), [0, 1], together=True, dataset=data)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LinearCNNInputError, match="torchrun"):
        train_seeds(TrainConfig(arch="linear", steps=1, width=2), [0, 1], together=True, dataset=data)
    monkeypatch.delenv("WORLD_SIZE")
    assert not any(tmp_path.iterdir())


def test_together_resume_needs_every_seed_at_the_same_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from linearcnn.cli import main

    data = make_dataset(n=8)
    base = TrainConfig(arch="linear", batch_size=4, width=2, lr=0.1, test=False, out=str(tmp_path / "run"))
    train_seeds(TrainConfig(**{**base.to_dict(), "steps": 2}), [0, 1], together=True, dataset=data)
    (tmp_path / "run" / "seed1" / "checkpoint.pt").unlink()  # seed 1 would start over, seed 0 continue
    with pytest.raises(LinearCNNInputError, match="different steps"):
        train_seeds(TrainConfig(**{**base.to_dict(), "steps": 4, "resume": True}), [0, 1],
                    together=True, dataset=data)
    code = main(["train", "--arch", "linear", "--seeds", "0,1", "--together", "--compile", "--steps", "1", "--out",
                 str(tmp_path / "cli"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "--compile" in captured.err
    assert not (tmp_path / "cli").exists()


def test_a_target_stops_each_seed_where_it_is_reached_together_or_one_after_another(tmp_path: Path) -> None:
    data = make_dataset(n=20, classes=4)  # batch 7: 3 steps per epoch
    config = TrainConfig(**CASES["linear-multi minibatch"], epochs=8, precision="float64", test=False)
    reference = train_seeds(config, SEEDS, dataset=data)  # no target: each seed's loss curve
    curves = [r.metrics["loss"] for r in reference]
    values = sorted(v for curve in curves for v in curve)
    # a loss target halfway between two recorded losses (far from rounding), met first at different epochs by the seeds
    candidates = [(a + b) / 2 for a, b in itertools.pairwise(values) if b - a > 1e-6 * b]

    def first_epochs(target: float) -> list[int | None]:
        return [next((i + 1 for i, v in enumerate(curve) if v <= target), None) for curve in curves]

    target = max((t for t in candidates if None not in first_epochs(t)), key=lambda t: len(set(first_epochs(t))))
    reached = first_epochs(target)
    assert len(set(reached)) > 1, reached  # the stack runs on for the seeds that reach the target later
    target_config = TrainConfig(**{**config.to_dict(), "until_loss": target, "max_epochs": 8})
    apart = train_seeds(target_config, SEEDS, dataset=data)
    together = train_seeds(TrainConfig(**{**target_config.to_dict(), "out": str(tmp_path / "together")}), SEEDS, together=True,
                           dataset=data)
    for seed, epoch, one, other in zip(SEEDS, reached, apart, together):
        assert epoch is not None
        assert one.stop["reached_epoch"] == other.stop["reached_epoch"] == epoch, seed
        assert one.stop["reached_step"] == other.stop["reached_step"] == 3 * epoch, seed
        assert one.converged and other.converged and one.step == 3 * epoch  # alone, each seed stops on its own
        assert other.step == 3 * max(reached)  # together, the stack stops when every seed has reached the target
        _close(torch.tensor(other.metrics["loss"][:epoch]), torch.tensor(one.metrics["loss"]), f"seed {seed} losses")
    summary = json.loads((tmp_path / "together" / "metrics.json").read_text())
    assert summary["converged"] is True and summary["stop_rule"] == "until_loss"
    assert [run["reached_step"] for run in summary["runs"]] == [3 * e for e in reached]
    for run, result in zip(summary["runs"], together):
        assert run["converged"] is True and run["reached_epoch"] == result.stop["reached_epoch"]
        assert run["first_layer_displacement"] == result.metrics["first_layer_displacement"][-1] > 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_resumed_optimizer_state_takes_its_parameters_layout(optimizer: str) -> None:
    """A contiguous state (as a stacked run saves it) resumed by a channels_last parameter with the
    fused update must give what the for-loop update gives a contiguous parameter."""
    from linearcnn.train.stepper import _load_optimizer_state, fused_update

    def make(param: torch.Tensor, fused: bool | None) -> torch.optim.Optimizer:
        if optimizer == "sgd":
            return torch.optim.SGD([param], lr=0.1, momentum=0.9, fused=fused)
        return torch.optim.Adam([param], lr=0.1, fused=fused)

    def resumed_run(param: torch.Tensor, fused: bool | None) -> torch.Tensor:
        state = copy.deepcopy(saved)
        state["param_groups"][0]["fused"] = fused  # a resumed optimizer takes its settings from the state
        resumed = make(param, fused)
        _load_optimizer_state(resumed, lambda: state)
        for _ in range(3):
            resumed.zero_grad()
            (param**3).sum().backward()
            resumed.step()
        return param.detach().contiguous()

    torch.manual_seed(0)
    warm = torch.randn(4, 3, 3, 3, dtype=torch.float64).requires_grad_()
    first = make(warm, True)
    (warm**3).sum().backward()
    first.step()
    saved = first.state_dict()  # contiguous state tensors
    reference = resumed_run(warm.detach().clone().requires_grad_(), None)
    channels_last = warm.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert fused_update([channels_last])
    assert torch.allclose(resumed_run(channels_last, True), reference, rtol=1e-12, atol=1e-14)
