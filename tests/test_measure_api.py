"""`linearcnn.measure`: one call for a checkpoint or a model in memory, equal to measuring the saved file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import linearcnn
from linearcnn.checkpoints import load_first_layer
from linearcnn.errors import LinearCNNInputError


class Small(nn.Module):  # a torchvision-like stem: conv1 + bn1, then a head
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.layer1(torch.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


def test_a_model_in_memory_is_measured_like_its_saved_state_dict(tmp_path):
    torch.manual_seed(0)
    start = Small()
    trained = Small()
    trained.load_state_dict(start.state_dict())
    with torch.no_grad():
        trained.conv1.weight.add_(0.1 * torch.randn_like(trained.conv1.weight))
    path = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), path)
    in_memory = linearcnn.measure(trained, "builtin:100", init_from=start, bootstrap=0)
    from_file = linearcnn.measure(path, "builtin:100", init_from=start, bootstrap=0)
    assert in_memory.measurement.layer.name == "conv1" and in_memory.measurement.layer.format == "module"
    assert in_memory.measurement.init_subtracted
    np.testing.assert_allclose(in_memory.measurement.weights, (trained.conv1.weight - start.conv1.weight).detach().double().numpy())
    np.testing.assert_allclose(in_memory.profile, from_file.profile, rtol=1e-12)
    assert in_memory.fit.correlation == pytest.approx(from_file.fit.correlation, abs=1e-12)
    text = repr(in_memory)
    assert "\n" not in text and "'conv1'" in text and "init-subtracted" in text and "correlation" in text
    record = json.loads(json.dumps(in_memory.to_dict()))
    assert record["layer"] == "conv1" and record["fit"]["tau"] == in_memory.fit.tau
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert in_memory.plot(ax) is ax


def test_load_first_layer_of_a_module_and_bad_objects():
    model = Small()
    first = load_first_layer(model)
    np.testing.assert_array_equal(first.weight, model.conv1.weight.detach().double().numpy())
    assert load_first_layer(model, layer="layer1").name == "layer1"
    with pytest.raises(LinearCNNInputError, match=r"expected a checkpoint path or a torch\.nn\.Module"):
        load_first_layer(42)  # type: ignore[arg-type]


def test_measure_without_a_fit_and_raw_weights():
    result = linearcnn.measure(Small(), "builtin:100", fit=False)
    assert result.fit is None and not result.measurement.init_subtracted
    assert "raw weights" in result.measurement.init_note
    with pytest.raises(LinearCNNInputError, match="nothing to plot"):
        result.plot()
