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
* a measurement that rests on a training run that missed its target (train accuracy 0.99 with
  true labels, 0.95 with random labels, within the epoch cap) is **not converged** and gets no
  verdict; a formula fit at the bound of its search or degenerate (`FitResult.at_bound` /
  `degenerate`) never counts as agreement.

The verdict compares our mean (over seeds) on one data set with the paper's number for the same
data set, or, on data the paper did not use, with the published number nearest ours (`reference`);
our spread is shown but does not widen the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

REPRODUCES, PARTLY, DOES_NOT, NOT_MEASURED = "reproduces", "partly", "does not", "not measured"
NOT_CONVERGED = "not converged"
VERDICTS = (REPRODUCES, PARTLY, DOES_NOT)  # what the tally counts: a measured (claim, data set) pair
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
class Published:
    """One published number: its data set, its text as printed, its value and +- spread."""

    dataset: str
    text: str
    value: float | None = None
    spread: float | None = None


@dataclass(frozen=True)
class Claim:
    """One claim of PAPER.md section 4 (one report row), its published numbers (each with the
    paper's own data set), and where our measurement of it lives."""

    claim: str
    paper: tuple[Published, ...]
    source: tuple[str, ...] | None = None      # path into one data set's results: (experiment, key, ...)
    raw_source: tuple[str, ...] | None = None  # the same in the raw (not init-subtracted) view
    kind: str = "correlation"
    reason: str = ""                           # why not measured
    views: tuple[str, str] = ("init-subtracted", "raw")  # what `source` and `raw_source` measure

    @property
    def paper_text(self) -> str:
        """The published numbers, each with its own data set: '0.99 (CIFAR-10); 0.97 (CIFAR-100)'."""
        return "; ".join(f"{p.text} ({p.dataset})" for p in self.paper)


def reference(claim: Claim, dataset: str | None, ours: float) -> Published | None:
    """The published number our measurement on `dataset` (the paper's name of our data set, or
    None) is judged against: the paper's number for that data set when it has one, else the one
    published number, else the published number nearest ours (the spread of the paper's own
    data sets counts as agreement on data the paper did not use)."""
    numbers = [p for p in claim.paper if p.value is not None]
    if not numbers:
        return None
    own = [p for p in numbers if p.dataset == dataset]
    if own:
        return own[0]
    return min(numbers, key=lambda p: abs(ours - float(p.value or 0.0)))


_PAPER_SETS = ("CIFAR-10", "CIFAR-100", "CelebA")


def _published(per_set: tuple[tuple[float, float | None], ...]) -> tuple[Published, ...]:
    return tuple(Published(data, f"{p:.2f}" + (f" +- {s:.2f}" if s is not None else ""), p, s)
                 for data, (p, s) in zip(_PAPER_SETS, per_set))


def _tables() -> list[Claim]:
    table1 = {
        "seed vs seed": ("seed_vs_seed", ((0.99, None), (0.97, None), (0.99, None))),
        "width vs width": ("width_vs_width", ((0.98, None), (0.98, None), (0.98, None))),
        "trained vs init": ("trained_vs_init", ((-0.13, 0.18), (-0.04, 0.04), (-0.18, 0.13))),
        "VGG vs ResNet": ("vgg_vs_resnet", ((0.87, None), (0.80, None), (0.92, None))),
    }
    table2 = {"random-label vs init": ("random_vs_init", ((0.03, 0.22), (0.14, 0.13), (0.08, 0.07))),
              "true vs random labels": ("true_vs_random", ((0.90, 0.02), (0.91, 0.01), (0.96, 0.03)))}
    claims = [Claim(f"Table 1: {name}", _published(values), ("consistency", key, "init_subtracted"),
                    ("consistency", key, "raw")) for name, (key, values) in table1.items()]
    vgg_resnet = table1["VGG vs ResNet"][1]
    claims.append(Claim("Table 1: VGG vs ResNet, both with momentum 0.9 (our labelled arm)", _published(vgg_resnet),
                        ("consistency", "vgg_vs_resnet_momentum", "init_subtracted"),
                        ("consistency", "vgg_vs_resnet_momentum", "raw")))
    claims += [Claim(f"Table 2: {name}", _published(values), ("labels", key, "init_subtracted"), ("labels", key, "raw"))
               for name, (key, values) in table2.items()]
    return claims


def _fits() -> list[Claim]:
    vgg = ("formula_fit", "vgg11", "init_subtracted", "correlation")
    vgg_raw = ("formula_fit", "vgg11", "raw", "correlation")
    return [
        Claim("Formula fit (3 seeds), 5 models (ours: every converged network of the suite)",
              (Published("ImageNet", "0.90 +- 0.01", 0.90, 0.01),), ("formula_fit", "every_model", "init_subtracted", "correlation"),
              views=("init-subtracted", "")),
        Claim("Formula fit (3 seeds), VGG11", (Published("CIFAR-10", "0.94 +- 0.01", 0.94, 0.01),
                                               Published("CelebA", "0.96 +- 0.01", 0.96, 0.01)), vgg, vgg_raw),
        # the published range 0.91-0.96 as its midpoint +- half-width
        Claim("Formula fit, binary class pairs", (Published("binary CIFAR", "0.91-0.96", 0.935, 0.025),),
              ("binary_pairs", "fit", "init_subtracted", "correlation"), views=("init-subtracted", "")),
        Claim("Formula fit of the random initialisation", (Published("any", "0.1 +- 0.15", 0.1, 0.15),),
              ("formula_fit", "random_init", "one_parameter", "correlation"),
              ("formula_fit", "random_init", "raw", "correlation"), views=("one-parameter fit", "two-parameter fit")),
        Claim("Single fit shown in figure, VGG11", (Published("CIFAR-10", "0.96", 0.96), Published("CelebA", "0.97", 0.97)),
              vgg, vgg_raw),
        Claim("Single fit shown in figure, ResNet18 (7x7x3, 147 components; ours: larger built-in crops, momentum arm)",
              (Published("ImageNet", "0.92", 0.92),), ("large_kernel", "fit", "init_subtracted", "correlation"),
              views=("init-subtracted", "")),
        Claim("Frozen random first layer: about the same accuracy as learned",
              (Published("CIFAR-10", "about equal (curves only)", 0.0),), ("frozen", "test_accuracy_difference"),
              kind="accuracy_gap", views=("test accuracy, frozen minus learned", "")),
        Claim("Labels from the energy of one PCA component: similarity to random labels",
              (Published("CIFAR-10", "about 0", 0.0),), ("pca_labels", "pca_vs_random", "init_subtracted"),
              ("pca_labels", "pca_vs_random", "raw")),
        Claim("Linear CNN, exact GD, random labels: whitening, corr(profile, 1/sqrt(eigenvalue)) at the last step",
              (Published("Thm 4.3, any data", "1 (the limit)", 1.0),),
              ("linear_cnn", "random", "last", "corr_inv_sqrt_patch_eigenvalues"), views=("exact dynamics", "")),
    ]


CLAIMS: tuple[Claim, ...] = tuple(_tables() + _fits())
