"""A first layer initialised where the theory says training takes it (`linearcnn train --first-layer-init`).

The linear theory (PAPER.md sections 3-4) says where gradient descent takes a first layer: along
the formula's one-parameter family e(mu; tau) = (1 - exp(-tau mu)) / sqrt(mu) toward whitening,
1 / sqrt(mu), with filters that keep a random orientation inside the patch-PCA basis. The
initialisers put the layer there at step 0:

* `default`: the architecture's own initialisation (nothing changes);
* `whitening`: filters with energy profile 1 / sqrt(mu_i + eps), `eps = WHITENING_EPS * mean(mu)`
  (a ridge that keeps the directions of near-zero variance finite, 1e-5 of the mean variance);
* `formula` / `formula:TAU`: filters with energy profile e(mu; tau), the gradient-flow member of
  the family (the units of `linearcnn fit`'s tau); without TAU, the tau the theory predicts for
  the run, `predicted_tau`: lr x the planned number of optimizer steps (Thm 4.2 with the constants
  of K and of the number of locations absorbed into lr, as the fit absorbs them into tau);
* `frozen-whitening`: `whitening`, and the layer is not trained (as in the fastest CIFAR-10
  recipes, which whiten the first layer from the data and freeze it).

How the filters are built (`profile_filters`), for a layer of K filters over d = C k k patch
dimensions, patch statistics with eigenvalues mu and eigenvectors U (columns):

    W = Q diag(s) U^T,    Q (K, d) with columns of equal norm,    s the requested profile

so that filter k's component along u_i is Q[k, i] s_i and the energy profile,
sqrt((1/K) sum_k (w_k . u_i)^2) = s_i |Q[:, i]| / sqrt(K), is s exactly (up to scale). Q is drawn
from the run's seed: for K >= d, d orthonormal columns of a random rotation of R^K (filters beyond
the patch dimension are further random combinations of the same d directions, and the bank
whitens exactly: W^T W = U diag(s^2) U^T); for K < d, a random equal-norm tight frame (rows
orthonormal up to scale, found by alternating projections from a Gaussian matrix; the last step
equalises the column norms exactly, the tightness residual is recorded). Random signs and
orientations inside the basis come with Q. The layer is then rescaled to the Frobenius norm of
the architecture's default initialisation of the same seed, so that the initialisers change the
layer's shape and nothing else; the bias and every other layer keep their default initialisation.

The patch statistics are those the measurements use: uncentred second moments of all stride-1
k x k patches of the training images as the layer sees them (normalised per channel), or a file
written by `linearcnn stats` (`init_stats`), whose channels and kernel must match the layer.

>>> parse_first_layer_init("formula:2.5")
FirstLayerInit(name='formula', tau=2.5)
>>> str(parse_first_layer_init("frozen-whitening")), parse_first_layer_init("whitening").frozen
('frozen-whitening', False)
>>> q = equal_norm_frame(4, 9, np.random.default_rng(0))
>>> bool(np.allclose(np.linalg.norm(q, axis=0), np.linalg.norm(q, axis=0)[0]))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

    from linearcnn.patches import PatchStats

INIT_NAMES = ("default", "whitening", "formula", "frozen-whitening")
INIT_CHOICES_TEXT = "default, whitening, formula, formula:TAU (TAU > 0) or frozen-whitening"
#: The whitening ridge, relative to the mean eigenvalue: 1 / sqrt(mu + WHITENING_EPS * mean(mu)).
WHITENING_EPS = 1e-5
#: Alternating projections toward an equal-norm tight frame (K < d): at most this many rounds,
#: stopping when the rows are orthogonal to FRAME_TOLERANCE (relative).
FRAME_ROUNDS = 500
FRAME_TOLERANCE = 1e-10
_SEED_SALT = 0x1A7E  # the orientation draw's stream, apart from the model's own initialisation


@dataclass(frozen=True)
class FirstLayerInit:
    """A parsed `--first-layer-init` value: `name` in INIT_NAMES; `tau` given with formula:TAU (else None)."""

    name: str = "default"
    tau: float | None = None

    @property
    def frozen(self) -> bool:
        """Whether the layer stays at its initialisation (frozen-whitening)."""
        return self.name == "frozen-whitening"

    @property
    def whitening(self) -> bool:
        return self.name in ("whitening", "frozen-whitening")

    def __str__(self) -> str:
        return self.name if self.tau is None else f"{self.name}:{self.tau:g}"


def parse_first_layer_init(text: str) -> FirstLayerInit:
    """'default' | 'whitening' | 'formula' | 'formula:TAU' | 'frozen-whitening' -> FirstLayerInit.

    LinearCNNInputError (parameter "first_layer_init") for anything else, naming the value.
    """
    value = str(text).strip()
    name, colon, argument = value.partition(":")
    if name not in INIT_NAMES or (colon and name != "formula"):
        raise LinearCNNInputError(f"first_layer_init {value!r} is not valid; expected {INIT_CHOICES_TEXT}",
                                  parameter="first_layer_init")
    if not colon:
        return FirstLayerInit(name)
    try:
        tau = float(argument)
    except ValueError:
        tau = math.nan
    if not (math.isfinite(tau) and tau > 0):
        raise LinearCNNInputError(f"first_layer_init {value!r}: tau must be a positive finite number, got {argument!r}",
                                  parameter="first_layer_init")
    return FirstLayerInit("formula", tau)


def predicted_tau(lr: float, steps: int) -> float:
    """The formula's tau for `steps` optimizer steps at learning rate `lr`: lr * steps (module docstring)."""
    return float(lr) * int(steps)


def whitening_eps(eigenvalues: NDArray[np.float64]) -> float:
    """The absolute ridge of the whitening profile: WHITENING_EPS x the mean eigenvalue (> 0)."""
    mean = float(np.mean(eigenvalues))
    if not mean > 0:
        raise LinearCNNInputError("patch statistics have no variance (all eigenvalues 0: constant images?); "
                                  "a whitening or formula first layer needs images that vary")
    return WHITENING_EPS * mean


def requested_profile(spec: FirstLayerInit, eigenvalues: NDArray[np.float64], tau: float | None) -> NDArray[np.float64]:
    """The energy profile an initialiser builds (unnormalised, (d,)): 1/sqrt(mu + eps), or e(mu + eps; tau).

    The ridge eps (`whitening_eps`) also keeps the formula finite at eigenvalues of exactly 0.
    """
    from linearcnn.theory.numeric import gradient_flow_profile, whitening_profile

    mu = np.asarray(eigenvalues, dtype=np.float64) + whitening_eps(np.asarray(eigenvalues, dtype=np.float64))
    if spec.whitening:
        return np.asarray(whitening_profile(mu), dtype=np.float64)
    if spec.name == "formula":
        assert tau is not None  # resolved by the caller: given, or predicted
        return np.asarray(gradient_flow_profile(mu, tau), dtype=np.float64)
    raise ValueError(f"no profile for first_layer_init {spec}")  # pragma: no cover - default has none


def equal_norm_frame(num_filters: int, dim: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """A random (num_filters, dim) matrix whose columns all have norm 1 (module docstring).

    num_filters >= dim: orthonormal columns (a random rotation's first `dim` columns).
    num_filters < dim: an equal-norm tight frame up to FRAME_TOLERANCE (rows orthogonal with
    equal norms sqrt(dim / num_filters)); its columns have norm 1 exactly.
    """
    gaussian = rng.standard_normal((num_filters, dim))
    if num_filters >= dim:
        q, r = np.linalg.qr(gaussian)  # (K, d) orthonormal columns
        return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # signs fixed: a uniformly random rotation
    frame = gaussian / np.linalg.norm(gaussian, axis=0)
    target = dim / num_filters  # the rows' squared norm in a unit-norm tight frame
    for _ in range(FRAME_ROUNDS):
        u, _, vt = np.linalg.svd(frame, full_matrices=False)
        frame = (u @ vt) * math.sqrt(target)  # nearest tight frame
        frame = frame / np.linalg.norm(frame, axis=0)  # nearest equal-norm matrix
        if frame_residual(frame) < FRAME_TOLERANCE:
            break
    return frame


def frame_residual(frame: NDArray[np.float64]) -> float:
    """How far the rows of a unit-column (K, d) matrix are from a tight frame: ||Q Q^T - (d/K) I|| / (d/K) (spectral)."""
    k, d = frame.shape
    target = d / k if k < d else 1.0
    gram = frame @ frame.T if k < d else frame.T @ frame
    return float(np.linalg.norm(gram - target * np.eye(gram.shape[0]), ord=2) / target)


def profile_filters(profile: NDArray[np.float64], eigenvectors: NDArray[np.float64], num_filters: int,
                    rng: np.random.Generator) -> tuple[NDArray[np.float64], float]:
    """(K, d) filters whose energy profile over `eigenvectors` (columns) is exactly `profile` up to
    scale, with random orientation (module docstring); and the frame's tightness residual."""
    frame = equal_norm_frame(num_filters, eigenvectors.shape[0], rng)  # (K, d)
    return (frame * profile) @ eigenvectors.T, frame_residual(frame)


@dataclass
class InitPlan:
    """What the initialisers of one run share: the parsed spec, the statistics, tau and the profile."""

    spec: FirstLayerInit
    stats: PatchStats | None
    tau: float | None = None
    tau_source: str = ""  # "given" or "predicted"
    planned_steps: int = 0
    profile: NDArray[np.float64] | None = None

    def record(self) -> dict[str, Any]:
        """What the checkpoint and metrics.json record of the initialisation (per run)."""
        out: dict[str, Any] = {"name": self.spec.name, "value": str(self.spec)}
        if self.stats is None:
            return out
        out.update(
            patch_stats={"source": self.stats.data_spec or "training data", "channels": int(self.stats.channels),
                         "kernel_size": int(self.stats.kernel_size), "centered": bool(self.stats.centered),
                         "num_patches": int(self.stats.num_patches)},
            eps=whitening_eps(self.stats.eigenvalues), eps_relative=WHITENING_EPS, frozen=self.spec.frozen,
            norm="the Frobenius norm of the default initialisation of the same seed",
        )
        if self.spec.name == "formula":
            out.update(tau=self.tau, tau_source=self.tau_source, planned_steps=self.planned_steps)
        return out

    def describe(self) -> str:
        """One line for the terminal: what the first layer starts as."""
        if self.stats is None:
            return "first layer: default initialisation"
        text = f"first layer: {self.spec.name} initialisation from {self.stats.num_patches:,} patches"
        if self.spec.name == "formula":
            how = ("given" if self.tau_source == "given"
                   else f"predicted: lr x {self.planned_steps:,} planned steps")
            text += f", tau {self.tau:.4g} ({how})"
        return text + (", frozen" if self.spec.frozen else "")


def plan_first_layer_init(spec: FirstLayerInit, stats: PatchStats | None, *, lr: float, planned_steps: int) -> InitPlan:
    """The plan of one run: for `formula` without TAU, tau = `predicted_tau(lr, planned_steps)`."""
    if spec.name == "default":
        return InitPlan(spec, None)
    assert stats is not None  # the caller measures them for every other initialiser
    tau, source = (spec.tau, "given") if spec.tau is not None else (predicted_tau(lr, planned_steps), "predicted")
    if spec.name == "formula" and not tau > 0:
        raise LinearCNNInputError(f"first_layer_init formula: the predicted tau is {tau:g} ({planned_steps} planned steps); "
                                  "give one with formula:TAU", parameter="first_layer_init")
    plan = InitPlan(spec, stats, tau if spec.name == "formula" else None, source if spec.name == "formula" else "", planned_steps)
    plan.profile = requested_profile(spec, stats.eigenvalues, plan.tau)
    return plan


def check_stats_fit_layer(stats: PatchStats, weight_shape: tuple[int, ...], source: str) -> None:
    """LinearCNNInputError unless statistics of C x k x k patches match a (K, C, k, k) layer."""
    _, channels, kernel, kernel_w = weight_shape
    if kernel != kernel_w:
        raise LinearCNNInputError(f"first layer has {kernel}x{kernel_w} filters; the initialisers need square ones")
    if (stats.channels, stats.kernel_size) != (channels, kernel):
        raise LinearCNNInputError(
            f"init_stats {source!r} holds statistics of {stats.channels}-channel {stats.kernel_size}x{stats.kernel_size} "
            f"patches; the first layer has {channels}-channel {kernel}x{kernel} filters", parameter="init_stats",
        )


def initialise_first_layer(model: nn.Module, plan: InitPlan, seed: int) -> float:
    """Set `model`'s first-layer weights as `plan` says, orientation drawn from `seed` (in place).

    Returns the frame's tightness residual (0 for `default`, which changes nothing).
    """
    import torch

    from linearcnn.models import first_layer

    if plan.stats is None or plan.profile is None:
        return 0.0
    layer = first_layer(model)
    weight = layer.weight
    check_stats_fit_layer(plan.stats, tuple(weight.shape), plan.stats.data_spec or "training data")
    rng = np.random.default_rng([int(seed), _SEED_SALT])
    filters, residual = profile_filters(plan.profile, plan.stats.eigenvectors, int(weight.shape[0]), rng)
    default_norm = float(weight.detach().double().norm())
    filters *= default_norm / float(np.linalg.norm(filters))
    with torch.no_grad():
        weight.copy_(torch.from_numpy(filters.reshape(tuple(weight.shape))).to(dtype=weight.dtype, device=weight.device))
    return residual


__all__ = [
    "FRAME_TOLERANCE",
    "INIT_NAMES",
    "WHITENING_EPS",
    "FirstLayerInit",
    "InitPlan",
    "check_stats_fit_layer",
    "equal_norm_frame",
    "frame_residual",
    "initialise_first_layer",
    "parse_first_layer_init",
    "plan_first_layer_init",
    "predicted_tau",
    "profile_filters",
    "requested_profile",
    "whitening_eps",
]
