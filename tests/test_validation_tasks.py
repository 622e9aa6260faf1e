"""The validation's derived tasks (class pairs, PCA-component labels) and the whitening-limit
predictions behind the report's "Deviations explained", each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest

from linearcnn.data import ImageDataset
from linearcnn.errors import LinearCNNInputError
from linearcnn.patches import dataset_patch_stats
from validation.linear_cnn import whitening_under_label_noise
from validation.task_data import class_pair, component_energy, parse_task, pca_component_labels


def _dataset(n: int = 60, seed: int = 0, size: int = 8) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, 4, n)
    return ImageDataset(images, labels, ["a", "b", "c", "d"], "drawn", "drawn images.")


def test_class_pair_keeps_the_two_classes_in_order_and_relabels_them():
    data = _dataset()
    pair = class_pair(data, 2, 0, limit=None)
    expected = [i for i, y in enumerate(data.labels) if y in (0, 2)]
    np.testing.assert_array_equal(pair.images, data.images[expected])
    np.testing.assert_array_equal(pair.labels, [0 if data.labels[i] == 2 else 1 for i in expected])
    assert pair.classes == ["c", "a"]
    assert len(class_pair(data, 2, 0, limit=5)) == 5


def test_component_energy_equals_an_explicit_patch_loop():
    data = _dataset(n=5, size=6)
    x = data.normalized()
    u = np.random.default_rng(1).standard_normal(27)
    energy = component_energy(x, u, 3)
    for n in range(5):
        values = [float(x[n, :, i:i + 3, j:j + 3].reshape(-1) @ u) ** 2 for i in range(4) for j in range(4)]
        assert energy[n] == pytest.approx(np.mean(values), rel=1e-5)


def test_pca_component_labels_split_at_the_training_median():
    train, test = _dataset(seed=2), _dataset(n=30, seed=3)
    stats = dataset_patch_stats(train, 3, device="cpu")
    relabelled, relabelled_test, info = pca_component_labels(train, test, stats, 1)
    mean, std = train.normalization_stats()
    energy = component_energy(train.normalized(mean, std), stats.eigenvectors[:, 1], 3)
    np.testing.assert_array_equal(relabelled.labels, (energy > np.median(energy)).astype(np.int64))
    assert info["balance"] == pytest.approx(0.5, abs=1 / 60)
    test_energy = component_energy(test.normalized(mean, std), stats.eigenvectors[:, 1], 3)
    np.testing.assert_array_equal(relabelled_test.labels, (test_energy > info["threshold"]).astype(np.int64))
    np.testing.assert_array_equal(relabelled.images, train.images)


@pytest.mark.parametrize("task", ["pair-1", "pca-x", "pair-2-2", "", "pair-1-2-3"])
def test_unknown_tasks_are_one_line_errors(task):
    with pytest.raises(LinearCNNInputError) as error:
        parse_task(task)
    assert "\n" not in str(error.value)


def test_parse_task_reads_pairs_and_components():
    assert parse_task("pair-3-5") == ("pair", (3, 5))
    assert parse_task("pca-12") == ("pca", (12,))


def _corr_loop(profile: np.ndarray, white: np.ndarray) -> float:
    return float(np.corrcoef(profile, white)[0, 1])


def test_label_noise_prediction_equals_a_loop_over_the_same_draws():
    mu = np.geomspace(10.0, 1e-3, 12)
    predicted = whitening_under_label_noise(mu, 3, draws=50, seed=4)
    g = np.random.default_rng(4).standard_normal((50, 3, 12))
    white = 1 / np.sqrt(mu)
    one = [_corr_loop(np.abs(g[k, 0]) * white, white) for k in range(50)]
    pooled = [_corr_loop(np.sqrt((g[k] ** 2).mean(axis=0)) * white, white) for k in range(50)]
    assert predicted["one_draw"]["mean"] == pytest.approx(np.mean(one), rel=1e-10)
    assert predicted["pooled_3_draws"]["mean"] == pytest.approx(np.mean(pooled), rel=1e-10)


def test_pooling_many_label_draws_tends_to_whitening():
    mu = np.geomspace(10.0, 1e-3, 12)
    one = whitening_under_label_noise(mu, 1, draws=400)["one_draw"]["mean"]
    many = whitening_under_label_noise(mu, 400, draws=50)["pooled_400_draws"]["mean"]
    assert one < 0.9 < 0.99 < many


def test_the_limit_averaged_over_label_draws_is_a_pinv_over_n():
    """E[(A^+ b)(A^+ b)^T] = A^+ / N for labels of mean square 1 (the closed form the report uses),
    checked by averaging over every sign pattern of 8 +-1 labels."""
    rng = np.random.default_rng(5)
    m = rng.standard_normal((8, 3))  # (N, d) mean patches
    a = m.T @ m / 8
    a_pinv = np.linalg.pinv(a)
    total = np.zeros((3, 3))
    for code in range(2**8):
        y = np.array([1.0 if code >> i & 1 else -1.0 for i in range(8)])
        w = a_pinv @ (m.T @ y / 8)
        total += np.outer(w, w)
    np.testing.assert_allclose(total / 2**8, a_pinv / 8, rtol=1e-10, atol=1e-12)
