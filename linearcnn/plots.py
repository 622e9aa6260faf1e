"""Every figure linearcnn draws. Each function writes one PNG atomically and returns its path.

Figures are drawn on `matplotlib.figure.Figure` objects of their own, never through pyplot: the
global backend and pyplot's figure list stay as the caller (a notebook, say) set them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linearcnn._files import atomic_save

if TYPE_CHECKING:  # pragma: no cover - typing only; matplotlib loads on the first figure
    from matplotlib.figure import Figure


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True) -> tuple[Figure, Any]:
    """A new stand-alone Figure and its axes (as `pyplot.subplots` returns them), outside pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` to `path` atomically: SVG or PDF when the name says so, else PNG."""
    suffix = Path(path).suffix.lower()
    fmt = suffix[1:] if suffix in (".svg", ".pdf") else "png"
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format=fmt))


def draw_fit(
    ax: Any,
    profile: np.ndarray,
    fitted_profile: np.ndarray,
    correlation: float,
    *,
    label: str = "network",
    title: str | None = None,
    eigenvalues: np.ndarray | None = None,
    interval: Sequence[float] | None = None,
) -> Any:
    """Draw a measured profile against the fitted formula on the matplotlib Axes `ax`; returns `ax`.

    Both curves are max-normalised; the correlation is in the title. With `eigenvalues`, the
    whitening limit 1/sqrt(eigenvalue) is drawn faintly for reference.
    """
    comps = np.arange(len(profile))
    ax.plot(comps, fitted_profile / np.max(fitted_profile), color="tab:blue", label="formula", lw=1.8)
    ax.plot(comps, profile / np.max(profile), color="tab:orange", label=label, lw=1.5)
    if eigenvalues is not None:
        white = 1 / np.sqrt(np.asarray(eigenvalues))
        ax.plot(comps, white / white.max(), color="0.6", ls=":", lw=1, label="whitening limit")
    ax.set_xlabel("patch-PCA component (descending eigenvalue)")
    ax.set_ylabel("energy (max-normalised)")
    ax.set_ylim(-0.05, 1.1)
    band = f", 95% interval [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
    ax.set_title(title or f"{label}: correlation {correlation:.3f}{band}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_fit(
    profile: np.ndarray,
    fitted_profile: np.ndarray,
    correlation: float,
    path: str | os.PathLike,
    *,
    label: str = "network",
    title: str | None = None,
    eigenvalues: np.ndarray | None = None,
    interval: Sequence[float] | None = None,
) -> Path:
    """`draw_fit` on a figure of its own, written to `path` (like the paper's Fig. 5)."""
    fig, ax = _subplots(figsize=(6.4, 4.0))
    draw_fit(ax, profile, fitted_profile, correlation, label=label, title=title, eigenvalues=eigenvalues, interval=interval)
    fig.tight_layout()
    return _save(fig, path)


def plot_similarity_heatmap(matrix: np.ndarray, labels: Sequence[str], path: str | os.PathLike,
                            *, title: str = "Energy-profile correlation") -> Path:
    """Correlation matrix of energy profiles with the values written in the cells."""
    n = len(labels)
    size = max(3.5, 0.6 * n + 2)
    fig, ax = _subplots(figsize=(size + 1, size))
    im = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), [str(s) for s in labels], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), [str(s) for s in labels], fontsize=8)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(matrix[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_profile_bands(groups: Mapping[str, np.ndarray], path: str | os.PathLike, *, title: str = "",
                       formula: np.ndarray | None = None, formula_label: str = "formula") -> Path:
    """Mean ± std over seeds of max-normalised profiles, one band per group (true vs random labels)."""
    fig, ax = _subplots(figsize=(6.4, 4.0))
    for name, profiles in groups.items():
        p = np.asarray(profiles, dtype=float)
        p = p / p.max(axis=-1, keepdims=True)  # (S, d)
        mean, std = p.mean(axis=0), p.std(axis=0)
        comps = np.arange(p.shape[-1])
        (line,) = ax.plot(comps, mean, marker=".", label=f"{name} ({p.shape[0]} seeds, mean ± std)")
        ax.fill_between(comps, mean - std, mean + std, color=line.get_color(), alpha=0.25)
    if formula is not None:
        ax.plot(np.arange(len(formula)), formula / np.max(formula), color="k", ls="--", lw=1, label=formula_label)
    ax.set_xlabel("patch-PCA component (descending eigenvalue)")
    ax.set_ylabel("energy (max-normalised)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_eigenvectors(eigenvectors: np.ndarray, channels: int, kernel_size: int, path: str | os.PathLike,
                      *, eigenvalues: np.ndarray | None = None, max_components: int = 48) -> Path:
    """The patch-PCA eigenvectors drawn as k x k image patches (RGB for 3 channels)."""
    d = eigenvectors.shape[1]
    n = min(d, max_components)
    cols = min(n, 9 if d <= 27 else 12)
    rows = int(np.ceil(n / cols))
    fig, axes = _subplots(rows, cols, figsize=(cols * 1.0, rows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        patch = eigenvectors[:, i].reshape(channels, kernel_size, kernel_size)  # (C, k, k)
        patch = patch / (2 * np.abs(patch).max() + 1e-12) + 0.5
        if channels == 3:
            ax.imshow(np.transpose(patch, (1, 2, 0)), interpolation="nearest")
        else:
            ax.imshow(patch[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        label = f"{i}" if eigenvalues is None else f"{i}: {eigenvalues[i]:.2g}"
        ax.set_title(label, fontsize=6)
    fig.suptitle(f"Patch PCA eigenvectors ({channels}x{kernel_size}x{kernel_size}), decreasing variance", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_trajectories(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike, *,
                      title: str = "Along training") -> Path:
    """Fit correlation and fitted tau against training step, one line per run.

    `curves[name]` holds arrays 'steps', 'correlation', 'tau' (and optionally 'correlation_std').
    """
    fig, (ax_c, ax_t) = _subplots(1, 2, figsize=(10, 3.8))
    for name, c in curves.items():
        steps = np.asarray(c["steps"])
        (line,) = ax_c.plot(steps, c["correlation"], marker=".", label=name)
        if "correlation_std" in c:
            mean, std = np.asarray(c["correlation"]), np.asarray(c["correlation_std"])
            ax_c.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax_t.plot(steps, c["tau"], marker=".", color=line.get_color(), label=name)
    lowest = min((float(np.nanmin(np.asarray(c["correlation"], dtype=float))) for c in curves.values()
                  if np.size(c["correlation"])), default=0.0)
    ax_c.set_xlabel("training step")
    ax_c.set_ylabel("fit correlation (mean ± std over seeds)")
    ax_c.set_ylim(min(0.0, lowest - 0.05), 1.02)  # correlations below 0 only when there are any
    ax_t.set_xlabel("training step")
    ax_t.set_ylabel("fitted tau (geometric mean over seeds)")
    ax_t.set_yscale("log")
    ax_c.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(panels: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike, *,
                xlabel: str = "training step", logx: bool = False, title: str = "",
                ylims: Mapping[str, tuple[float, float]] | None = None, logy: Sequence[str] = ()) -> Path:
    """Side-by-side panels of mean +- std curves (over seeds), one line per series.

    `panels[panel_title][series_name]` holds arrays 'x', 'mean' and optionally 'std' (a band) and
    'points' (true: markers only, no connecting line); `ylims`
    fixes the y range of named panels, `logy` names the panels drawn on a log y axis.
    """
    n = len(panels)
    fig, axes = _subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, s in series.items():
            x, mean = np.asarray(s["x"], dtype=float), np.asarray(s["mean"], dtype=float)
            points = bool(s.get("points", False))  # markers only (unordered measurements), no line
            (line,) = ax.plot(x, mean, marker="o" if points else ".", ls="none" if points else "-", ms=4 if points else 6,
                              alpha=0.8 if points else 1.0, label=name)
            if "std" in s:
                std = np.asarray(s["std"], dtype=float)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        if logx:
            ax.set_xscale("log")
        if panel in logy:
            ax.set_yscale("log")
        if ylims and panel in ylims:
            ax.set_ylim(*ylims[panel])
        ax.set_xlabel(xlabel)
        ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_scatter(groups: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, *, xlabel: str,
                 ylabel: str, logx: bool = False, logy: bool = False, title: str = "") -> Path:
    """One colour per group of (x, y) points, e.g. fitted tau against first-layer displacement."""
    fig, ax = _subplots(figsize=(6.0, 4.2))
    for name, (x, y) in groups.items():
        ax.scatter(np.asarray(x, dtype=float), np.asarray(y, dtype=float), s=12, alpha=0.7, label=name)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
