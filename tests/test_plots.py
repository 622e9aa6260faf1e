"""Figures never touch matplotlib's global state: the backend and pyplot's figures stay as they were."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

from linearcnn import plots


def test_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    original = matplotlib.get_backend()
    matplotlib.use("svg")  # what a caller might have chosen; plots must not switch it to Agg
    try:
        _draw_and_check(tmp_path)
    finally:
        matplotlib.use(original)


def _draw_and_check(tmp_path):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    rng = np.random.default_rng(0)
    profile = rng.random(9) + 0.1
    written = [
        plots.plot_fit(profile, profile[::-1], 0.5, tmp_path / "fit.png", eigenvalues=np.geomspace(4, 0.1, 9)),
        plots.plot_similarity_heatmap(np.eye(3), ["a", "b", "c"], tmp_path / "heat.png"),
        plots.plot_profile_bands({"g": rng.random((3, 9))}, tmp_path / "bands.svg"),
        plots.plot_curves({"p": {"s": {"x": np.arange(4), "mean": np.arange(4.0), "points": True}}}, tmp_path / "c.pdf"),
    ]
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == open_before
    with Image.open(written[0]) as image:
        assert image.format == "PNG" and len(set(image.convert("RGB").getdata())) > 2  # something was drawn
    assert written[2].read_bytes().lstrip().startswith(b"<?xml") and written[3].read_bytes().startswith(b"%PDF")
