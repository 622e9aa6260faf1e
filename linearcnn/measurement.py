"""A checkpoint's first layer, measured against patch statistics: what `linearcnn profile | fit |
compare` compute, for any caller.

`measure_checkpoint` loads the first layer (minus its initial weights when the checkpoint stores
them, unless told otherwise) and the patch statistics of matching shape (from a saved file, the
on-disk cache, or computed from a data set); the rest is the energy module (`energy_profile`,
`whitening_indicators`, `similarity_matrix`) and the fit (`fit_measurement`, whose `at_bound` /
`degenerate` flags and warnings every output carries).

Defaults, each stated in the result (`Measurement.data_note`, `init_note`, `data_record`):
  * data: an explicit `data` spec, else the spec and normalisation a `linearcnn train` checkpoint
    recorded (with its image limit), else `builtin`;
  * initial weights: subtracted when the checkpoint stores its initial layer (our training
    checkpoints do), else raw weights; `init=True/False` or `init_checkpoint` decide explicitly;
  * patch statistics: cached on disk by `linearcnn.patches._cache` (`cache=False` skips it).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

    from linearcnn.checkpoints import FirstLayer
    from linearcnn.fit import FitResult
    from linearcnn.patches import PatchStats

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "NORM_PRESETS", "DataOptions", "MeasureResult", "Measurement", "RecordedData",
    "compare_measurements", "data_record", "data_title", "fit_measurement", "load_patch_stats",
    "load_patch_stats_with_source", "measure", "measure_checkpoint", "recorded_data",
]


#: ImageNet's per-channel normalisation (torchvision's pretrained models), for `norm="imagenet"`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The normalisation presets a caller may name: the data set's own channel statistics, or ImageNet's.
NORM_PRESETS = ("data", "imagenet")


@dataclass(frozen=True)
class DataOptions:
    """How the images are shaped and normalised before their patches are measured.

    image_size: resize the short side to N and centre-crop N x N (None: as stored); channels:
    convert to 1 or 3 channels (None: as stored); pad: zero pixels added on each side after
    normalisation; norm: "data" (the set's own channel mean/std) or "imagenet"; norm_values:
    fixed (mean, std) per channel instead (what a checkpoint recorded), named `norm_source`.
    """

    image_size: int | None = None
    channels: int | None = None
    pad: int = 0
    norm: str = "data"
    norm_values: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    norm_source: str = ""

    def check(self) -> None:
        """LinearCNNInputError for an option out of range."""
        if self.image_size is not None and (isinstance(self.image_size, bool) or self.image_size < 1):
            raise LinearCNNInputError(f"image_size {self.image_size!r}: expected an integer >= 1", parameter="image_size")
        if self.channels is not None and self.channels not in (1, 3):
            raise LinearCNNInputError(f"channels {self.channels!r}: expected 1 or 3", parameter="channels")
        if isinstance(self.pad, bool) or self.pad < 0:
            raise LinearCNNInputError(f"pad {self.pad!r}: expected an integer >= 0", parameter="pad")
        if self.norm not in NORM_PRESETS:
            raise LinearCNNInputError(f"norm {self.norm!r}: expected one of {', '.join(NORM_PRESETS)}", parameter="norm")


@dataclass(frozen=True)
class RecordedData:
    """The data a `linearcnn train` checkpoint records: its spec, image limit and normalisation."""

    spec: str
    limit: int | None
    channel_mean: tuple[float, ...]
    channel_std: tuple[float, ...]


def recorded_data(checkpoint: str | Path, layer_format: str) -> RecordedData | None:
    """The data recorded in `checkpoint` when it is one of our training checkpoints (format
    "linearcnn") with a usable record; None for any other file or an incomplete record."""
    if layer_format != "linearcnn":
        return None
    from linearcnn.checkpoints.training import load_training_checkpoint

    try:
        loaded = load_training_checkpoint(checkpoint)
    except LinearCNNInputError:
        return None
    info, config = loaded.get("data"), loaded.get("config")
    if not isinstance(info, dict) or not isinstance(info.get("spec"), str) or not info["spec"].strip():
        return None
    try:
        mean = tuple(float(v) for v in info["channel_mean"])
        std = tuple(float(v) for v in info["channel_std"])
    except (KeyError, TypeError, ValueError):
        return None
    limit = config.get("limit") if isinstance(config, dict) else None
    limit = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    if not mean or len(mean) != len(std) or not all(np.isfinite(mean + std)) or min(std) <= 0:
        return None
    return RecordedData(info["spec"], limit, mean, std)


@dataclass
class Measurement:
    """One checkpoint's first layer, measured against patch statistics.

    data: the data spec measured on (or "stats file PATH"); data_note: that spec and where it
    came from, in words; init_note: the kind of weights and why; cache: "hit", "miss", "off" or
    "file" (a stats file); options: the reshaping/normalisation asked for.
    """

    layer: FirstLayer
    weights: NDArray[np.float64]  # (K, C, k, k), init subtracted when init_subtracted
    init_subtracted: bool
    stats: PatchStats
    data: str = "builtin"
    data_note: str = "builtin"
    init_note: str = ""
    cache: str = "off"
    options: DataOptions = field(default_factory=DataOptions)

    def data_record(self) -> dict[str, Any]:
        """What every output states about the data: spec, its source, image size, padding and normalisation."""
        return data_record(self.stats, self.options, data=self.data, note=self.data_note, cache=self.cache)

    def layer_record(self) -> dict[str, Any]:
        """What every output states about the weights as read: as stored, dequantized or
        BatchNorm-folded, the BatchNorm folded, and the loader's notes (one sentence each)."""
        first = self.layer
        return {"weights_as": first.weights_as, "batchnorm": first.batchnorm, "quantization": first.quantization,
                "layer_notes": list(first.notes) + ([first.stem] if first.stem else [])}


def data_record(stats: PatchStats, options: DataOptions, *, data: str, note: str, cache: str) -> dict[str, Any]:
    """JSON-able account of the data behind `stats`: image_size [H, W] is the size the patches were
    taken from (padding included), pad the zero border, normalization the preset and its values."""
    extra = stats.extra if isinstance(stats.extra, dict) else {}
    return {
        "data": data, "data_source": note, "image_size": None if stats.image_size is None else list(stats.image_size),
        "pad": int(extra.get("pad", options.pad)), "resize": extra.get("image_size_option", options.image_size),
        "normalization": {
            "preset": extra.get("normalization", options.norm_source or options.norm),
            "mean": None if stats.channel_mean is None else [float(v) for v in stats.channel_mean],
            "std": None if stats.channel_std is None else [float(v) for v in stats.channel_std],
        },
        "stats_cache": cache,
    }


def data_title(record: dict[str, Any]) -> str:
    """One line for table titles: spec (source), image size, padding and normalisation."""
    size = record["image_size"]
    norm = record["normalization"]
    parts = [record["data_source"]]
    if size:
        parts.append(f"{size[0]}x{size[1]} px" + (f" (padded {record['pad']})" if record["pad"] else ""))
    preset = norm["preset"]
    parts.append({"checkpoint": "norm as recorded in the checkpoint", "data": "norm data (its own channel mean/std)"}.get(
        preset, f"norm {preset}"))
    return ", ".join(parts)


def _normalisation(dataset: Any, options: DataOptions, data: str) -> tuple[NDArray[np.float64], NDArray[np.float64], str]:
    channels = int(dataset.images.shape[1])
    if options.norm_values is not None:
        mean, std = (np.asarray(v, dtype=np.float64) for v in options.norm_values)
        if mean.size != channels:
            raise LinearCNNInputError(
                f"{options.norm_source or 'the given'} normalisation has {mean.size} channel(s) but data {data!r} has {channels}",
                parameter="norm",
            )
        return mean, std, options.norm_source or "given"
    if options.norm == "imagenet":
        if channels != 3:
            raise LinearCNNInputError(f"norm imagenet needs 3 channels but data {data!r} has {channels}; pass channels 3",
                                      parameter="norm")
        return np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD), "imagenet"
    mean, std = dataset.normalization_stats()
    return mean, std, "data"


def _compute_stats(data: str, channels: int | None, kernel: int, *, centered: bool, device: str, limit: int | None,
                   what: str, progress: bool, options: DataOptions) -> PatchStats:
    from linearcnn.data import load_dataset
    from linearcnn.patches import dataset_patch_stats

    dataset = load_dataset(data, limit=limit, image_size=options.image_size, channels=options.channels)
    _, c, h, w = dataset.images.shape
    if channels is not None and c != channels:
        hint = "" if options.channels is not None or c not in (1, 3) or channels not in (1, 3) else f" (or convert: channels {channels})"
        raise LinearCNNInputError(
            f"{what} expects {channels} input channel(s) but data {data!r} has {c}; expected a data set with {channels}{hint}",
            parameter="data",
        )
    mean, std, preset = _normalisation(dataset, options, data)
    if options.pad:
        dataset = dataset.padded(options.pad, fill=mean)  # the border is 0 once normalised
        h, w = h + 2 * options.pad, w + 2 * options.pad
    if kernel > min(h, w):
        raise LinearCNNInputError(f"{what} has kernel {kernel}x{kernel}, larger than the {h}x{w} images of {data!r}")
    stats = dataset_patch_stats(dataset.with_normalization(mean, std), kernel, centered=centered, device=device,
                                progress=progress)
    stats.extra.update({"normalization": preset, "pad": int(options.pad), "image_size_option": options.image_size,
                        "channels_option": options.channels})
    return stats


def load_patch_stats_with_source(
    data: str, channels: int | None, kernel: int, *, centered: bool = False, device: str = "auto",
    limit: int | None = None, stats_file: str | Path | None = None, what: str = "the layer", progress: bool = False,
    options: DataOptions | None = None, cache: bool = True,
) -> tuple[PatchStats, str]:
    """`load_patch_stats`, and where the statistics came from: "file", "hit" / "miss" (the on-disk
    cache) or "off" (computed, cache=False)."""
    from linearcnn.patches import PatchStats

    options = options or DataOptions()
    options.check()
    if stats_file is not None:
        stats = PatchStats.load(stats_file)
        if (channels is not None and stats.channels != channels) or stats.kernel_size != kernel:
            raise LinearCNNInputError(
                f"{what} has {channels}x{kernel}x{kernel} patches but stats_file {stats_file} holds "
                f"{stats.channels}x{stats.kernel_size}x{stats.kernel_size} statistics",
                parameter="stats_file",
            )
        source = "file"
    else:
        def compute() -> PatchStats:
            return _compute_stats(data, channels, kernel, centered=centered, device=device, limit=limit, what=what,
                                  progress=progress, options=options)

        if cache:
            from linearcnn.patches._cache import cached_patch_stats, data_fingerprint

            record = {
                "data": data_fingerprint(data), "limit": limit, "kernel": kernel, "centered": bool(centered),
                "channels": options.channels, "image_size": options.image_size, "pad": options.pad,
                "norm": options.norm_source or options.norm,
                "norm_values": None if options.norm_values is None else [list(v) for v in options.norm_values],
                "split": "train", "seed": 0,
            }
            stats, hit = cached_patch_stats(record, compute, channels=channels, kernel=kernel, centered=bool(centered))
            source = "hit" if hit else "miss"
        else:
            stats, source = compute(), "off"
    if stats.image_size is not None and 4 * kernel > min(stats.image_size):
        h, w = stats.image_size
        warnings.warn(f"{what}: kernel {kernel}x{kernel} is larger than 1/4 of the {h}x{w} images: few patch positions "
                      "per image and statistics dominated by the image borders; a larger image size fits better",
                      stacklevel=2)
    return stats, source


def load_patch_stats(
    data: str, channels: int | None, kernel: int, *, centered: bool = False, device: str = "auto",
    limit: int | None = None, stats_file: str | Path | None = None, what: str = "the layer", progress: bool = False,
    options: DataOptions | None = None, cache: bool = True,
) -> PatchStats:
    """Patch statistics of `channels` (None: any) x `kernel` x `kernel` patches: read from
    `stats_file` (checked to match), or computed from the data set `data` shaped and normalised
    by `options` (read from and saved to the on-disk cache unless `cache` is False). `what`
    names the layer in error messages. Warns when the kernel exceeds 1/4 of the image side."""
    return load_patch_stats_with_source(data, channels, kernel, centered=centered, device=device, limit=limit,
                              stats_file=stats_file, what=what, progress=progress, options=options, cache=cache)[0]


def _subtract_init(checkpoint: str | Path | nn.Module, first: FirstLayer, weights: NDArray[np.float64], init: bool | None,
                   init_checkpoint: str | Path | nn.Module | None, unsafe_load: bool,
                   prefer_raw: bool) -> tuple[NDArray[np.float64], bool, str]:
    """The weights to measure, whether the initial layer was subtracted, and why (in words)."""
    from linearcnn.checkpoints import load_init_weight

    if init is False and init_checkpoint is None:
        return weights, False, "raw weights: --no-init"
    if first.bn_folded:  # the initial layer is stored unfolded: W - W0 would mix two scalings
        if init or init_checkpoint is not None:
            raise LinearCNNInputError("fold_bn: the initial weights are not folded, so they cannot be subtracted from "
                                      "folded weights; drop fold_bn or init", parameter="fold_bn")
        return weights, False, "raw weights, BatchNorm-folded: --fold-bn (the initial layer is stored unfolded)"
    if init is None and init_checkpoint is None:
        if prefer_raw:
            return weights, False, "raw weights: --raw fits the two-parameter raw-weights family; --init to subtract the initial layer"
        if first.init_weight is None:
            return weights, False, ("raw weights: the checkpoint stores no initial layer; pass --init-checkpoint FILE "
                                    "(the same network at step 0) for the init-subtracted profile")
    if init_checkpoint is not None:
        initial = load_init_weight(init_checkpoint, first.name, expected_shape=weights.shape, unsafe_load=unsafe_load)
        note = f"init-subtracted: the initial layer from --init-checkpoint {_source_name(init_checkpoint)}"
    elif first.init_weight is not None:
        initial = np.asarray(first.init_weight, dtype=np.float64)
        note = ("init-subtracted: --init (the checkpoint's stored initial layer)" if init else
                "init-subtracted: the checkpoint stores its initial layer; --no-init for raw weights")
    else:
        raise LinearCNNInputError(
            f"init: {first.path} stores no initial weights for {first.name!r}; give init_checkpoint instead",
            parameter="init",
        )
    if initial.shape != weights.shape:
        raise LinearCNNInputError(
            f"init: initial weights have shape {tuple(initial.shape)} but layer {first.name!r} has {tuple(weights.shape)}",
            parameter="init",
        )
    weights = weights - initial
    if not np.any(weights):
        hint = "; --no-init to measure the raw weights" if init is None else ""
        raise LinearCNNInputError(f"layer {first.name!r} equals its initial weights; nothing was learned to measure{hint}")
    return weights, True, note


def _source_name(source: object) -> str:
    """A checkpoint path as given, or '<ClassName in memory>' for a model object."""
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__} in memory>"


def measure_checkpoint(
    checkpoint: str | Path | nn.Module, *, data: str | None = None, layer: str | None = None, init: bool | None = None,
    init_checkpoint: str | Path | nn.Module | None = None, unsafe_load: bool = False, centered: bool = False, device: str = "auto",
    limit: int | None = None, stats_file: str | Path | None = None,
    stats_cache: MutableMapping[Hashable, tuple[PatchStats, str]] | None = None, progress: bool = False,
    options: DataOptions | None = None, norm: str | None = None, cache: bool = True, prefer_raw: bool = False,
    fold_bn: bool = False,
) -> Measurement:
    """The first layer of `checkpoint` and the patch statistics to measure it against.

    data: the data spec; None: the one the checkpoint recorded (our training checkpoints; with its
    image limit unless `limit` is given, and its normalisation unless `norm` is given), else
    builtin. init: True subtracts the initial weights stored in the checkpoint, False measures
    raw weights, None (auto) subtracts them when stored (raw when `prefer_raw`, as for the raw
    fit); init_checkpoint: subtract this checkpoint's weights of the same layer instead.
    options: image reshaping (`DataOptions`); norm: "data" or "imagenet" (overrides options.norm).
    stats_cache: patch statistics shared between calls in memory (several checkpoints on one data
    set); cache: the on-disk cache. fold_bn: fold the following BatchNorm into the filters
    (`load_first_layer`; then raw weights: the stored initial layer is unfolded). The other
    arguments go to `load_first_layer` and `load_patch_stats`.
    """
    from linearcnn.checkpoints import load_first_layer

    first = load_first_layer(checkpoint, layer=layer, unsafe_load=unsafe_load, fold_bn=fold_bn)
    weights = np.asarray(first.weight, dtype=np.float64)  # (K, C, kh, kw)
    _, channels, kh, kw = weights.shape
    if kh != kw:
        raise LinearCNNInputError(f"layer {first.name!r} has a {kh}x{kw} kernel; only square kernels are supported")
    weights, init_subtracted, init_note = _subtract_init(checkpoint, first, weights, init, init_checkpoint, unsafe_load,
                                                         prefer_raw)
    options = options or DataOptions()
    if norm is not None:
        options = DataOptions(options.image_size, options.channels, options.pad, norm)
    recorded = (None if data is not None or stats_file is not None or not isinstance(checkpoint, (str, Path))
                else recorded_data(checkpoint, first.format))
    if recorded is not None:
        spec, note = recorded.spec, f"{recorded.spec} (recorded in the checkpoint)"
        if limit is None:
            limit = recorded.limit
        if norm is None and options.norm == "data":
            options = DataOptions(options.image_size, options.channels, options.pad, "data",
                                  (recorded.channel_mean, recorded.channel_std), "checkpoint")
    elif data is None:
        spec, note = "builtin", "builtin (the default; --data to choose)"
    else:
        spec, note = data, data
    if stats_file is not None:
        note = f"stats file {stats_file}"
    key = (spec, limit, options, channels, kh, centered, str(stats_file))
    if stats_cache is not None and key in stats_cache:
        stats, source = stats_cache[key]
    else:
        try:
            stats, source = load_patch_stats_with_source(spec, channels, kh, centered=centered, device=device, limit=limit,
                                               stats_file=stats_file, what=f"layer {first.name!r}", progress=progress,
                                               options=options, cache=cache)
        except LinearCNNInputError as exc:
            if first.stem is not None and exc.parameter == "data":  # a channel mismatch with a known cause
                raise LinearCNNInputError(f"{first.stem}; {exc}", parameter="data") from None
            if recorded is None:
                raise
            raise LinearCNNInputError(f"data {spec!r} recorded in the checkpoint: {exc}; pass --data to choose the data",
                                      parameter="data") from None
        if stats_cache is not None:
            stats_cache[key] = (stats, source)
    return Measurement(layer=first, weights=weights, init_subtracted=init_subtracted, stats=stats, data=spec,
                       data_note=note, init_note=init_note, cache=source, options=options)


def compare_measurements(
    measurements: Sequence[Measurement], names: Sequence[str]
) -> tuple[list[NDArray[np.float64]], NDArray[np.float64]]:
    """Energy profiles of several measured layers and their (n, n) Pearson correlation matrix.

    The layers must have one patch shape; `names` (one per measurement) appear in that error.
    """
    from linearcnn.energy import energy_profile, similarity_matrix

    shapes = {m.weights.shape[1:] for m in measurements}
    if len(shapes) > 1:
        listing = ", ".join(f"{c}: {'x'.join(map(str, m.weights.shape[1:]))}" for c, m in zip(names, measurements))
        raise LinearCNNInputError(f"first layers have different patch shapes ({listing}); profiles are not comparable")
    profiles = [energy_profile(m.weights, m.stats.eigenvectors) for m in measurements]
    return profiles, similarity_matrix(profiles)


def fit_measurement(
    measurement: Measurement, *, lr: float | None = None, raw: bool = False, bootstrap: int = 0, seed: int = 0
) -> FitResult:
    """The formula fit of a measured layer's energy profile (`linearcnn.fit.fit_filters`), with
    `bootstrap` resamples over its filters for 95% intervals. The result's `at_bound`,
    `degenerate` and `warnings` say when the fit is no evidence of agreement."""
    from linearcnn.fit import fit_filters

    stats = measurement.stats
    return fit_filters(measurement.weights, stats.eigenvalues, stats.eigenvectors, lr=lr, raw=raw,
                       bootstrap=bootstrap, seed=seed)


@dataclass
class MeasureResult:
    """What `measure` found: the measurement (layer, weights, statistics, data), the energy
    profile, the whitening indicators and the formula fit (None when not asked)."""

    measurement: Measurement
    profile: NDArray[np.float64]  # (d,) energy per patch-PCA component
    whitening: dict[str, float]
    fit: FitResult | None

    def __repr__(self) -> str:
        m = self.measurement
        k, c, kh, _ = m.weights.shape
        text = (f"MeasureResult(layer {m.layer.name!r} ({k} filters, {c}x{kh}x{kh}, "
                f"{'init-subtracted' if m.init_subtracted else 'raw'}) on {m.data!r}")
        return text + (f"; {self.fit!r})" if self.fit is not None else ")")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: layer, weights kind, data record, profile, whitening and the fit's fields."""
        m = self.measurement
        return {"layer": m.layer.name, "format": m.layer.format, **m.layer_record(), "filters": int(m.weights.shape[0]),
                "patch_shape": list(m.weights.shape[1:]), "init_subtracted": m.init_subtracted, "weights_note": m.init_note,
                **m.data_record(), "eigenvalues": m.stats.eigenvalues.tolist(), "profile": self.profile.tolist(),
                "whitening": dict(self.whitening), "fit": None if self.fit is None else self.fit.to_dict()}

    def to_frame(self) -> Any:
        """One row per component: eigenvalue, energy, and the fit's profiles when fitted (pandas)."""
        if self.fit is not None:
            frame = self.fit.to_frame()
            frame.insert(1, "energy", self.profile)
            return frame
        try:
            import pandas as pd
        except ImportError:
            raise LinearCNNInputError("MeasureResult.to_frame needs pandas: pip install pandas") from None
        frame = pd.DataFrame({"eigenvalue": self.measurement.stats.eigenvalues, "energy": self.profile})
        frame.index.name = "component"
        return frame

    def plot(self, ax: Any = None) -> Any:
        """The profile against the fitted formula (`FitResult.plot`); returns the Axes."""
        if self.fit is None:
            raise LinearCNNInputError("nothing to plot: measure(..., fit=False) made no fit")
        return self.fit.plot(ax, label=self.measurement.layer.name)


def measure(
    model_or_path: str | Path | nn.Module, data: str | None = None, *, layer: str | None = None,
    init: bool | None = None, init_from: str | Path | nn.Module | None = None, fold_bn: bool = False, fit: bool = True,
    raw: bool = False, lr: float | None = None, bootstrap: int = 200, seed: int = 0, device: str = "auto",
    limit: int | None = None, image_size: int | None = None, channels: int | None = None, pad: int = 0,
    norm: str | None = None, cache: bool = True, unsafe_load: bool = False,
) -> MeasureResult:
    """Measure a first layer in one call: a checkpoint path (any supported format) or a
    `torch.nn.Module` in memory, against the patch statistics of `data` (None: the data a
    linearcnn checkpoint recorded, else builtin), as `linearcnn fit` does.

    init / init_from: the initial layer to subtract (None: the stored one when there is one);
    `init_from` may be a path or a module (the same network at step 0). fit: fit the formula
    (raw: the two-parameter raw family; lr: the discrete-steps family at this lr; bootstrap
    resamples over filters for 95% intervals). The data options are those of the CLI.
    """
    from linearcnn.energy import energy_profile, whitening_indicators

    options = DataOptions(image_size, channels, int(pad))
    m = measure_checkpoint(model_or_path, data=data, layer=layer, init=init, init_checkpoint=init_from, fold_bn=fold_bn,
                           unsafe_load=unsafe_load, device=device, limit=limit, options=options, norm=norm, cache=cache,
                           prefer_raw=raw)
    result = fit_measurement(m, lr=lr, raw=raw, bootstrap=bootstrap, seed=seed) if fit else None
    return MeasureResult(measurement=m, profile=energy_profile(m.weights, m.stats.eigenvectors),
                         whitening=dict(whitening_indicators(m.weights, m.stats)), fit=result)
