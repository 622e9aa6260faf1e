"""Energy profile, similarity and whitening indicators: formulas, invariances, whitening limit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linearcnn.energy import (
    energy_profile,
    pearson,
    pooled_energy_profile,
    profile_similarity,
    similarity_matrix,
    whitening_indicators,
)
from linearcnn.errors import LinearCNNInputError
from linearcnn.patches import PatchStats, patch_stats


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def correlated_stats(channels: int = 3, kernel: int = 3, seed: int = 0) -> PatchStats:
    """Patch statistics of smooth random images (a spread-out, full-rank spectrum)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(40, channels, 12, 12)).cumsum(axis=2).cumsum(axis=3)
    images += 0.5 * rng.normal(size=images.shape)
    return patch_stats(images, kernel, device="cpu")


def test_profile_equals_direct_formula():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(7, 2, 3, 3))  # K = 7, d = 18
    u = random_orthogonal(18, rng)
    expected = np.zeros(18)
    for i in range(18):
        total = 0.0
        for k in range(7):
            total += float(np.dot(weights[k].ravel(), u[:, i])) ** 2
        expected[i] = np.sqrt(total / 7)
    np.testing.assert_allclose(energy_profile(weights, u), expected, rtol=1e-13)
    np.testing.assert_allclose(energy_profile(weights.reshape(7, 18), u), expected, rtol=1e-13)
    np.testing.assert_allclose(energy_profile(torch.from_numpy(weights).float(), u), expected, rtol=1e-6)
    # e_i^2 summed over i is the mean squared filter norm (u orthonormal).
    np.testing.assert_allclose(np.sum(expected**2), np.mean(np.sum(weights.reshape(7, -1) ** 2, axis=1)))


def test_initial_weights_and_normalisation():
    rng = np.random.default_rng(1)
    w, w0 = rng.normal(size=(4, 1, 2, 2)), rng.normal(size=(4, 1, 2, 2))
    u = random_orthogonal(4, rng)
    delta = energy_profile(w, u, initial=w0)
    np.testing.assert_allclose(delta, energy_profile(w - w0, u), rtol=1e-14)
    normalised = energy_profile(w, u, normalize=True)
    assert normalised.max() == 1.0
    np.testing.assert_allclose(normalised, energy_profile(w, u) / energy_profile(w, u).max())
    with pytest.raises(LinearCNNInputError, match="cannot be normalised"):
        energy_profile(np.zeros((2, 4)), u, normalize=True)
    with pytest.raises(LinearCNNInputError, match="initial weights"):
        energy_profile(w, u, initial=w0[:2])


@given(
    k=st.integers(1, 9), d=st.integers(2, 12), scale=st.floats(-50, 50).filter(lambda s: abs(s) > 1e-3),
    seed=st.integers(0, 2**16),
)
def test_profile_invariances(k, d, scale, seed):
    """e(sW) = |s| e(W); e(PW) = e(QW) = e(W) for a permutation P and any orthogonal K x K Q."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, d))
    u = random_orthogonal(d, rng)
    base = energy_profile(w, u)
    np.testing.assert_allclose(energy_profile(scale * w, u), abs(scale) * base, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(energy_profile(w[rng.permutation(k)], u), base, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(energy_profile(random_orthogonal(k, rng) @ w, u), base, rtol=1e-9, atol=1e-12)
    # Similarity ignores the scale of either bank.
    other = energy_profile(rng.normal(size=(k, d)), u)
    if np.ptp(base) > 1e-9 and np.ptp(other) > 1e-9:
        assert abs(profile_similarity(energy_profile(scale * w, u), other) - profile_similarity(base, other)) < 1e-9
        assert profile_similarity(energy_profile(scale * w, u), base) == pytest.approx(1.0, abs=1e-12)


def test_dimension_mismatch_names_both_shapes():
    stats = correlated_stats(channels=3, kernel=5)
    with pytest.raises(LinearCNNInputError) as info:
        energy_profile(np.zeros((8, 3, 3, 3)), stats)
    assert str(info.value) == "layer has 27 inputs per filter (3x3x3) but patch statistics have 75 (3x5x5)"
    with pytest.raises(LinearCNNInputError, match=r"27 inputs per filter \(3x3x3\) but patch statistics have 75 \(3x5x5\)"):
        energy_profile(np.zeros((8, 3, 3, 3)), stats.eigenvectors)  # shape inferred from the channels
    with pytest.raises(LinearCNNInputError, match="expected \\(K, C, k, k\\)"):
        energy_profile(np.zeros(27), stats)
    with pytest.raises(LinearCNNInputError, match="square"):
        energy_profile(np.zeros((2, 4)), np.zeros((4, 3)))
    with pytest.raises(LinearCNNInputError, match="NaN"):
        energy_profile(np.full((2, 4), np.nan), np.eye(4))


def test_pearson_matches_numpy_and_broadcasts():
    rng = np.random.default_rng(2)
    rows, target = rng.normal(size=(6, 10)), rng.normal(size=10)
    expected = np.array([np.corrcoef(r, target)[0, 1] for r in rows])
    np.testing.assert_allclose(pearson(rows, target), expected, rtol=1e-12)
    np.testing.assert_allclose(pearson(rows.T, target[:, None], axis=0), expected, rtol=1e-12)
    with_constant = pearson(np.vstack([rows, np.ones(10)]), target)
    assert np.isnan(with_constant[-1]) and np.all(np.isfinite(with_constant[:-1]))
    # the fit's scoring: a constant side scores 0 instead of NaN, nothing else changes
    zero_for_constant = pearson(np.vstack([rows, np.ones(10)]), target, undefined=0.0)
    assert zero_for_constant[-1] == 0.0
    np.testing.assert_array_equal(zero_for_constant[:-1], with_constant[:-1])
    assert np.all(pearson(rows, np.full(10, 3.0), undefined=0.0) == 0.0)
    assert profile_similarity(rows[0], target) == pytest.approx(expected[0], rel=1e-12)
    assert profile_similarity(target, 3 * target + 2) == pytest.approx(1.0, abs=1e-15)
    assert profile_similarity(target, -target) == pytest.approx(-1.0, abs=1e-15)


def test_similarity_errors():
    with pytest.raises(LinearCNNInputError, match="profile b is constant"):
        profile_similarity([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    with pytest.raises(LinearCNNInputError, match="same length"):
        profile_similarity([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(LinearCNNInputError, match="1-D"):
        profile_similarity(np.ones((2, 2)), [1.0, 2.0])
    with pytest.raises(LinearCNNInputError, match="profile 1 is constant"):
        similarity_matrix([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]])


def test_similarity_matrix_equals_corrcoef():
    profiles = list(np.abs(np.random.default_rng(3).normal(size=(4, 27))))
    matrix = similarity_matrix(profiles)
    np.testing.assert_allclose(matrix, np.corrcoef(np.stack(profiles)), rtol=1e-12, atol=1e-15)
    assert np.array_equal(matrix, matrix.T) and np.all(np.diag(matrix) == 1.0)


def test_whitening_filter_profile_and_flatness():
    """W = C^{-1/2} (PAPER Thm 4.3): e_i = 1/sqrt(d mu_i), output covariance I, flatness 1."""
    stats = correlated_stats()
    mu, u = stats.eigenvalues, stats.eigenvectors
    assert mu[0] / mu[-1] > 10  # a spectrum worth whitening
    whitening = u @ np.diag(mu**-0.5) @ u.T  # (d, d): C^{-1/2}, one filter per row
    np.testing.assert_allclose(whitening @ stats.second_moment @ whitening.T, np.eye(27), atol=1e-9)
    profile = energy_profile(whitening, stats)
    np.testing.assert_allclose(profile, 1 / np.sqrt(27 * mu), rtol=1e-9)
    indicators = whitening_indicators(whitening.reshape(27, 3, 3, 3), stats)
    assert set(indicators) == {"corr_inv_sqrt_eigenvalues", "corr_sqrt_eigenvalues", "spectral_flatness"}
    assert indicators["corr_inv_sqrt_eigenvalues"] == pytest.approx(1.0, abs=1e-10)
    assert indicators["spectral_flatness"] == pytest.approx(1.0, abs=1e-10)
    assert indicators["corr_sqrt_eigenvalues"] < 0
    # Two copies of the whitening bank (K = 2d): W C W^T has rank d; its nonzero part is flat.
    doubled = whitening_indicators(np.vstack([whitening, whitening]), stats)
    assert doubled["spectral_flatness"] == pytest.approx(1.0, abs=1e-10)


def test_data_following_bank_and_independent_flatness():
    """W = C^{1/2}: e_i ~ sqrt(mu_i) (early training); flatness = gm/am of eig(W C W^T)."""
    stats = correlated_stats(seed=1)
    mu, u = stats.eigenvalues, stats.eigenvectors
    root = u @ np.diag(np.sqrt(mu)) @ u.T
    indicators = whitening_indicators(root, stats)
    assert indicators["corr_sqrt_eigenvalues"] == pytest.approx(1.0, abs=1e-10)

    def flatness(w):
        eig = np.sort(np.linalg.eigvalsh(w @ stats.second_moment @ w.T))[::-1][: min(w.shape[0], 27)]
        return np.exp(np.mean(np.log(eig))) / np.mean(eig)

    assert indicators["spectral_flatness"] == pytest.approx(flatness(root), rel=1e-8)
    assert indicators["spectral_flatness"] < 0.5
    few = np.random.default_rng(4).normal(size=(5, 27))  # K < d
    assert whitening_indicators(few, stats)["spectral_flatness"] == pytest.approx(flatness(few), rel=1e-8)
    repeated = np.vstack([few[:1], few[:1]])  # rank 1 < min(K, d) = 2
    assert whitening_indicators(repeated, stats)["spectral_flatness"] == 0.0


def test_whitening_indicators_skip_zero_eigenvalues():
    images = np.random.default_rng(5).normal(size=(2, 1, 3, 4))  # 4 patches for d = 9: rank 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = patch_stats(images, 3, device="cpu")
    indicators = whitening_indicators(np.random.default_rng(6).normal(size=(4, 9)), stats)
    assert all(np.isfinite(v) for v in indicators.values())
    with pytest.raises(LinearCNNInputError, match="constant"):
        whitening_indicators(np.zeros((4, 9)), stats)


# --------------------------------------------------------------------------------------------
# several banks as one


def test_pooled_profile_is_the_profile_of_all_filters_together():
    rng = np.random.default_rng(3)
    u = random_orthogonal(12, rng)
    banks = [rng.normal(size=(k, 3, 2, 2)) for k in (2, 5, 9)]  # unequal sizes K_s
    initials = [rng.normal(size=b.shape) for b in banks]
    together = np.concatenate([(b - b0).reshape(len(b), -1) for b, b0 in zip(banks, initials)])  # (16, 12)
    expected = np.sqrt(np.sum((together @ u) ** 2, axis=0) / 16)  # e_i over the union bank, written out
    np.testing.assert_allclose(pooled_energy_profile(banks, u, initial=initials), expected, rtol=1e-13)
    # unequal banks weigh each filter equally, not each bank: the plain RMS of the three profiles differs
    rms = np.sqrt(np.mean([energy_profile(b, u, initial=b0) ** 2 for b, b0 in zip(banks, initials)], axis=0))
    assert np.max(np.abs(rms - expected) / expected) > 1e-2


def test_pooled_profile_of_equal_banks_is_the_rms_of_their_profiles():
    rng = np.random.default_rng(4)
    u = random_orthogonal(8, rng)
    banks = [rng.normal(size=(6, 8)) for _ in range(3)]
    rms = np.sqrt(np.mean([energy_profile(b, u) ** 2 for b in banks], axis=0))
    np.testing.assert_allclose(pooled_energy_profile(banks, u), rms, rtol=1e-13)


@pytest.mark.parametrize(
    "banks, initial, parameter, words",
    [
        ([], None, "banks", "no filter banks"),
        ([np.ones((2, 4)), np.ones((2, 9))], None, "banks", "same patch shape"),
        ([np.ones((2, 4))], [np.ones((2, 4)), np.ones((2, 4))], "initial", "one initial bank per bank"),
        ([np.ones((2, 4))], [np.ones((3, 4))], "initial", "initial bank 0"),
    ],
)
def test_pooled_profile_bad_input_names_the_parameter(banks, initial, parameter, words):
    with pytest.raises(LinearCNNInputError, match=words) as caught:
        pooled_energy_profile(banks, np.eye(4), initial=initial)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize("factor", [1e200, 1e-200, 1e-300])
def test_profile_is_homogeneous_even_at_the_ends_of_float64(factor):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 3, 3, 3))
    u = np.linalg.qr(rng.normal(size=(27, 27)))[0]
    base = energy_profile(w, u)
    scaled = energy_profile(w * factor, u)
    np.testing.assert_allclose(scaled / factor, base, rtol=1e-12)
    np.testing.assert_allclose(energy_profile(w * factor, u, normalize=True), base / base.max(), rtol=1e-12)
