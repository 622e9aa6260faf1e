"""The published numbers of PAPER.md section 4 (`CLAIMS`) and the verdict rules that judge ours.

Verdict rules (`verdict`), stated in the report too:

* correlations: **reproduces** when |ours - paper| <= max(0.05, the paper's +- spread);
  otherwise **partly** when both fall in the same band — high (>= 0.7), moderate (0.3 to 0.7),
  near zero (|r| < 0.3) or negative (<= -0.3); otherwise **does not**.
* the frozen-first-layer claim ("about the same accuracy"): test accuracy frozen minus learned,
  **reproduces** when |gap| <= 0.02, **partly** when <= 0.05, else **does not**.
* theory checks of the linear CNN have their own thresholds, printed in their table.
* a claim we cannot measure (no such data offline, or no such experiment) is **not measured**,
  with the reason.

The verdict compares our mean (over seeds) with the paper's number; our spread is shown but does
not widen the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

REPRODUCES, PARTLY, DOES_NOT, NOT_MEASURED = "reproduces", "partly", "does not", "not measured"
TOLERANCE = 0.05
GAP_REPRODUCES, GAP_PARTLY = 0.02, 0.05


def correlation_band(r: float) -> str:
    """The qualitative band of a correlation: high, moderate, near zero or negative."""
    if r >= 0.7:
        return "high"
    if abs(r) < 0.3:
        return "near zero"
    if r <= -0.3:
        return "negative"
    return "moderate"


def verdict(ours: float | None, paper: float | None, paper_spread: float | None = None, *,
            kind: str = "correlation") -> str:
    """The verdict for one number (module docstring). `kind`: "correlation" or "accuracy_gap"
    (ours = frozen minus learned test accuracy; `paper` is then ignored: the claim is "about 0")."""
    if ours is None:
        return NOT_MEASURED
    if kind == "accuracy_gap":
        gap = abs(ours)
        return REPRODUCES if gap <= GAP_REPRODUCES else PARTLY if gap <= GAP_PARTLY else DOES_NOT
    if kind != "correlation":
        raise ValueError(f"unknown verdict kind {kind!r}")
    if paper is None:
        return NOT_MEASURED
    tolerance = max(TOLERANCE, paper_spread or 0.0)
    if abs(ours - paper) <= tolerance + 1e-12:
        return REPRODUCES
    return PARTLY if correlation_band(ours) == correlation_band(paper) else DOES_NOT


@dataclass(frozen=True)
class Claim:
    """One published number of PAPER.md section 4 and where our measurement of it lives."""

    claim: str
    dataset: str
    paper_text: str
    paper: float | None = None
    spread: float | None = None
    source: tuple[str, ...] | None = None      # path into the results: (experiment, key, ...)
    raw_source: tuple[str, ...] | None = None  # the same in the raw (not init-subtracted) view
    kind: str = "correlation"
    reason: str = ""                           # why not measured
    views: tuple[str, str] = ("init-subtracted", "raw")  # what `source` and `raw_source` measure


_PAPER_SETS = ("CIFAR-10", "CIFAR-100", "CelebA")


def _table1() -> list[Claim]:
    values = {
        "seed vs seed": ((0.99, None), (0.97, None), (0.99, None)),
        "width vs width": ((0.98, None), (0.98, None), (0.98, None)),
        "trained vs init": ((-0.13, 0.18), (-0.04, 0.04), (-0.18, 0.13)),
        "VGG vs ResNet": ((0.87, None), (0.80, None), (0.92, None)),
    }
    keys = {"seed vs seed": "seed_vs_seed", "width vs width": "width_vs_width", "trained vs init": "trained_vs_init",
            "VGG vs ResNet": "vgg_vs_resnet"}
    claims = []
    for name, per_set in values.items():
        for data, (p, s) in zip(_PAPER_SETS, per_set):
            claims.append(Claim(f"Table 1: {name}", data, f"{p:.2f}" + (f" +- {s:.2f}" if s is not None else ""), p, s,
                                ("consistency", keys[name], "init_subtracted"), ("consistency", keys[name], "raw")))
    return claims


def _table2() -> list[Claim]:
    values = {"random-label vs init": ("random_vs_init", ((0.03, 0.22), (0.14, 0.13), (0.08, 0.07))),
              "true vs random labels": ("true_vs_random", ((0.90, 0.02), (0.91, 0.01), (0.96, 0.03)))}
    return [Claim(f"Table 2: {name}", data, f"{p:.2f} +- {s:.2f}", p, s, ("labels", key, "init_subtracted"),
                  ("labels", key, "raw"))
            for name, (key, per_set) in values.items() for data, (p, s) in zip(_PAPER_SETS, per_set)]


def _fits() -> list[Claim]:
    vgg = ("formula_fit", "vgg11", "init_subtracted", "correlation")
    vgg_raw = ("formula_fit", "vgg11", "raw", "correlation")
    no_imagenet = "no ImageNet offline; the built-in set is 32x32 crops of 10 photos"
    return [
        Claim("Formula fit (3 seeds), 5 models", "ImageNet", "0.90 +- 0.01", 0.90, 0.01, reason=no_imagenet),
        Claim("Formula fit (3 seeds), VGG11", "CIFAR-10", "0.94 +- 0.01", 0.94, 0.01, vgg, vgg_raw),
        Claim("Formula fit (3 seeds), VGG11", "CelebA", "0.96 +- 0.01", 0.96, 0.01, vgg, vgg_raw),
        Claim("Formula fit, binary CIFAR pairs", "binary CIFAR", "0.91-0.96",
              reason="no CIFAR offline; binary class pairs are not part of this suite"),
        Claim("Formula fit of the random initialisation", "any", "0.1 +- 0.15", 0.1, 0.15,
              ("formula_fit", "random_init", "one_parameter", "correlation"),
              ("formula_fit", "random_init", "raw", "correlation"), views=("one-parameter fit", "two-parameter fit")),
        Claim("Single fit shown in figure, VGG11", "CIFAR-10", "0.96", 0.96, None, vgg, vgg_raw),
        Claim("Single fit shown in figure, VGG11", "CelebA", "0.97", 0.97, None, vgg, vgg_raw),
        Claim("Single fit shown in figure, ResNet18 (7x7x3, 147 components)", "ImageNet", "0.92", 0.92,
              reason=no_imagenet + "; our ResNet20 has a 3x3 first layer (see the formula-fit table)"),
        Claim("Frozen random first layer: about the same accuracy as learned", "CIFAR-10", "about equal (curves only)",
              0.0, None, ("frozen", "test_accuracy_difference"), kind="accuracy_gap",
              views=("test accuracy, frozen minus learned", "")),
        Claim("Labels from the energy of one PCA component: true vs random similarity", "CIFAR-10", "about 0",
              0.0, None, reason="PCA-component labels are not part of this suite"),
    ]


CLAIMS: tuple[Claim, ...] = tuple(_table1() + _table2() + _fits())
