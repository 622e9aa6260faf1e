"""A small deep net trained with random labels moves its first layer into the formula's family.

VGG11 (width 8, 3x3 first layer) on 512 built-in images with random labels, 200 steps of SGD (lr
0.01, momentum 0.9, batch 64). The init-subtracted first layer's energy profile is fitted with the
formula (`linearcnn.fit.fit_filters`); the random initialisation itself is the baseline.

Measured (CPU, seeds 0-7, `python` loop over this test's `_train_and_fit`): fit correlation 0.897
to 0.995 (mean 0.974); the initialisation's own fit 0.15 to 0.56. Thresholds: fit >= 0.85 and
above the initialisation's fit. Three fixed seeds (a training seed has nothing to shrink, so it is
a parameter, not a hypothesis draw).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from linearcnn.data import load_dataset
from linearcnn.fit import fit_filters
from linearcnn.models import first_layer
from linearcnn.patches import dataset_patch_stats
from linearcnn.train import TrainConfig, train
from tests.devices import TEST_DEVICE

FIT_THRESHOLD = 0.85
SEEDS = (0, 1, 2)


@functools.cache
def _data_and_stats():
    dataset = load_dataset("builtin", limit=512)
    return dataset, dataset_patch_stats(dataset, 3, centered=True, device="cpu")


def _train_and_fit(seed: int) -> tuple[float, float]:
    """(fit correlation of the trained, init-subtracted first layer; fit correlation of the init)."""
    dataset, stats = _data_and_stats()
    config = TrainConfig(arch="vgg11", labels="random", steps=200, batch_size=64, lr=0.01, momentum=0.9, width=8,
                         seed=seed, test=False, device=TEST_DEVICE)
    result = train(config, dataset=dataset)
    initial = result.initial_first_layer.double().numpy()  # (K, 3, 3, 3)
    trained = first_layer(result.model).weight.detach().cpu().double().numpy()
    moved = fit_filters(trained - initial, stats.eigenvalues, stats.eigenvectors, bootstrap=0)
    baseline = fit_filters(initial, stats.eigenvalues, stats.eigenvectors, bootstrap=0)
    return moved.correlation, baseline.correlation


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_random_label_training_moves_the_first_layer_into_the_formula_family(seed: int) -> None:
    moved, baseline = _train_and_fit(seed)
    assert np.isfinite(moved) and np.isfinite(baseline)
    assert moved >= FIT_THRESHOLD, f"seed {seed}: fit {moved:.3f} < {FIT_THRESHOLD}"
    assert moved > baseline, f"seed {seed}: fit {moved:.3f} not above the initialisation's {baseline:.3f}"
