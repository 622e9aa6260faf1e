"""The one parser for data-set specs (`--data SPEC` in every command).

A spec is `KIND` or `KIND:ARGUMENT`:

    builtin            the offline photo set (10,000 train / 2,000 test crops); `builtin:N` for N
                       (`builtin:N@C`: N crops of C x C pixels, 8 <= C <= 128; default 32)
    cifar10:DIR        torchvision's python-pickle batches (DIR = cifar-10-batches-py or its parent)
    cifar100:DIR       torchvision's cifar-100-python (DIR = that folder or its parent)
    svhn:DIR           train_32x32.mat / test_32x32.mat
    mnist:DIR          IDX files (raw or .gz) of MNIST or an MNIST-like set (Fashion-MNIST, KMNIST);
                       DIR or DIR/raw
    folder:DIR         one sub-folder per class (optionally DIR/train and DIR/test splits), or
                       images directly in DIR (a flat folder: unlabelled)
    npz:FILE           `images` (NxHxWxC or NxCxHxW), optional `labels` and `classes`, and an
                       optional test split `test_images` / `test_labels`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from linearcnn.errors import LinearCNNInputError

#: kind -> the form it is written in, in the order the help and the errors list them.
#: The most images `builtin:N` makes (3 KB each: 300 MB); more is a typo, not a data set.
MAX_BUILTIN_IMAGES = 100_000

DATA_KINDS: dict[str, str] = {
    "builtin": "builtin[:N]",
    "cifar10": "cifar10:DIR",
    "cifar100": "cifar100:DIR",
    "svhn": "svhn:DIR",
    "mnist": "mnist:DIR",
    "folder": "folder:DIR",
    "npz": "npz:FILE",
}

#: Help text for every command's `--data SPEC` option.
DATA_SPEC_HELP = (
    "data set: builtin (offline photo crops; builtin:N for N images, builtin:N@C for C x C crops), cifar10:DIR, cifar100:DIR, "
    "svhn:DIR, mnist:DIR (MNIST-like IDX files), folder:DIR (one sub-folder per class, or a flat folder of images), npz:FILE"
)

_EXPECTED = ", ".join(DATA_KINDS.values())


@dataclass(frozen=True)
class DataSpec:
    """A parsed data-set spec.

    kind: one of `DATA_KINDS`; path: the folder or file (None for builtin); size: the number of
    images `builtin:N` asks for (None: the default); text: the spec as written; crop: the crop
    side `builtin:N@C` asks for (None: 32).
    """

    kind: str
    path: Path | None
    size: int | None
    text: str
    crop: int | None = None  # builtin:N@C: C x C crops (None: the default 32)


def parse_data_spec(spec: str) -> DataSpec:
    """Parse `spec` (see the module docstring); raises LinearCNNInputError naming what is wrong.

    >>> parse_data_spec("builtin")
    DataSpec(kind='builtin', path=None, size=None, text='builtin', crop=None)
    >>> parse_data_spec("builtin:500@64").crop
    64
    >>> parse_data_spec("npz:/tmp/x.npz").path
    PosixPath('/tmp/x.npz')
    """
    if not isinstance(spec, str):
        raise LinearCNNInputError(f"data spec {spec!r}: expected a string such as {_EXPECTED}")
    text = spec.strip()
    kind, sep, argument = text.partition(":")
    kind = kind.strip().lower()
    if kind not in DATA_KINDS:
        raise LinearCNNInputError(
            f"data spec {spec!r}: unknown kind {kind!r}; expected one of {_EXPECTED}"
        )
    argument = argument.strip()
    if kind == "builtin":
        if not sep:
            return DataSpec("builtin", None, None, text)
        count_text, at, crop_text = argument.partition("@")
        try:
            size = int(count_text)
            crop = int(crop_text) if at else 32
        except ValueError:
            size = crop = 0
        if size <= 0 or size > MAX_BUILTIN_IMAGES or not 8 <= crop <= 128:
            raise LinearCNNInputError(
                f"data spec {spec!r}: builtin takes an optional positive image count and crop side "
                f"(builtin:N or builtin:N@C, N <= {MAX_BUILTIN_IMAGES:,}, 8 <= C <= 128); found {argument!r}"
            )
        return DataSpec("builtin", None, size, text, crop if at else None)
    if not argument:
        raise LinearCNNInputError(
            f"data spec {spec!r}: {kind} needs a path, written {DATA_KINDS[kind]}"
        )
    return DataSpec(kind, Path(argument).expanduser(), None, text)
