"""Result objects people use in notebooks: short reprs, to_dict, to_frame, plot(ax) returning the Axes."""

from __future__ import annotations

import numpy as np
import pytest

from linearcnn.fit import fit_formula
from linearcnn.patches import patch_stats


def _fit():
    mu = np.geomspace(20.0, 0.01, 12)
    profile = (1 - np.exp(-0.3 * mu)) / np.sqrt(mu) + np.random.default_rng(0).normal(0, 0.01, 12)
    return fit_formula(np.abs(profile), mu)


def test_fit_result_repr_is_one_short_line():
    fit = _fit()
    text = repr(fit)
    assert "\n" not in text and len(text) < 200
    assert f"correlation {fit.correlation:.3f}" in text and f"tau {fit.tau:.4g}" in text and "12 components" in text


def test_fit_result_plot_draws_on_the_given_axes_and_returns_them():
    from matplotlib.figure import Figure

    fit = _fit()
    ax = Figure().subplots()
    assert fit.plot(ax) is ax
    measured = [line for line in ax.get_lines() if line.get_label() == "network"]
    np.testing.assert_allclose(measured[0].get_ydata(), fit.profile / fit.profile.max())
    own = fit.plot()
    assert own is not ax and own.figure is not None


def test_fit_result_to_frame():
    pd = pytest.importorskip("pandas")
    fit = _fit()
    frame = fit.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["eigenvalue", "profile", "fitted_profile"]
    np.testing.assert_array_equal(frame["fitted_profile"].to_numpy(), fit.fitted_profile)
    assert frame.attrs["tau"] == fit.tau


def test_patch_stats_repr_names_shape_and_top_eigenvalues():
    images = np.random.default_rng(1).random((4, 3, 8, 8))
    stats = patch_stats(images, 3)
    text = repr(stats)
    assert "\n" not in text and text.startswith("PatchStats(3x3x3 patches") and f"{stats.eigenvalues[0]:.4g}" in text
    assert f"{4 * 6 * 6:,} patches" in text
