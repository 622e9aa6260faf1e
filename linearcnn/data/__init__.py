"""Where data comes in: data-set specs, one loader per format, the built-in photo set and
per-channel normalisation.

    >>> from linearcnn.data import load_dataset
    >>> data = load_dataset("builtin", limit=100)
    >>> data.images.shape, data.images.dtype, len(data.classes)
    ((100, 3, 32, 32), dtype('float32'), 10)

Specs (`parse_data_spec`, shared by every command's `--data SPEC`): `builtin[:N]`,
`cifar10:DIR`, `cifar100:DIR`, `svhn:DIR`, `mnist:DIR`, `folder:DIR`, `npz:FILE`. Every loader
returns an `ImageDataset` with float32 (N, C, H, W) images on the [0, 1] scale (rule in
`to_unit_float`: uint8 / 255, uint16 / 65535, floats within [0, 1] kept, floats within [0, 255]
divided by 255, anything else an error), grayscale sets with one channel, `limit` = the first N
images in the format's own order, and `train` choosing the split: `train=False` returns the test
split or raises LinearCNNInputError where the data has none (never the training images).
`has_test_split(spec)` says beforehand, from file and array names alone, whether it has one.

Splits: builtin, CIFAR, SVHN and MNIST-like sets have their own test files. An npz file holds the
train split as `images` (or `train_images`) with optional `labels` (or `train_labels`), and may
hold a test split as `test_images` with optional `test_labels` (same layout rules); `classes`
names the classes of both (without it they are "0".."M-1" for the largest label M-1 of either
split). A folder has splits when it holds `train/` and `test/` (or `val/`) sub-folders; the test
split is labelled by the train split's classes.

Folder rule: classes are the sorted sub-folders (hidden ones ignored), files are read in sorted
order; if every image is grey the set has one channel, else three (grey images repeated, alpha
dropped). The common size is the most frequent width x height among the images read (ties: the
first seen); other images are centre-cropped to its aspect ratio and shrunk to it with Pillow's
antialiasing Lanczos filter; an image smaller than the common size is an error (never enlarged).
If DIR holds `train/` and `test/` (or `val/`) sub-folders they are the splits, and each split's
images get their own common size and channel count. A folder with no sub-folders but images
directly in it is one unlabelled set (fine for patch statistics, profiles and fits).

Reshaping options (any format): `image_size=N` resizes each image's short side to N (Pillow
bilinear, antialiased when shrinking, in float) and takes the centre N x N crop, as ImageNet
evaluation does (for a folder this replaces the common-size rule, so mixed sizes are fine);
`channels=1` converts colour to grey (ITU-R 601-2 luma), `channels=3` repeats a grey plane.

The built-in set (`builtin`)
----------------------------
10,000 train and 2,000 test CIFAR-like images: 32x32 RGB crops of ten natural colour photos that
ship with scikit-image (astronaut, chelsea the cat, coffee, the Hubble deep field, an IHC tissue
stain, motorcycle_left, retina, rocket) and scikit-learn (china: the Summer Palace; flower), read
by path, offline, in about a second and cached in-process. The label is the source photo (10
balanced classes). Each crop is cut from a view of the photo shrunk (antialiased Lanczos) so its
short side is 64 to 256 pixels (12 geometric scales: a crop spans 1/2 to 1/8 of the photo's
height, so it shows objects and layout, not just texture), at a random position, mirrored
left-right with probability 1/2, and given a random exposure (x 1/2 .. 2) and white balance
(x 1/1.3 .. 1.3 per channel) capped so that nothing clips. Train crops come only from the left half
of each photo and test crops only from the right half (each half is cut out before shrinking), so
the splits share no source pixel and the test measures generalisation to unseen parts of each
scene. Grayscale photos are left out (as three equal channels they would be recognised by their
lack of colour alone), and so are synthetic images (chessboard, logo, text, phantom, page, colour
wheel). Deterministic for a seed (train and test use separate streams); `builtin:N` asks for N
images, and the first N images are the same for every N. Construction: `linearcnn.data._builtin`.

How hard the labels are (logistic regression / ridge probes, train -> test accuracy, chance
10%): mean colour of the crop 54% -> 47% (80% -> 68% without the photometric jitter, which is why
it is there); mean and std per channel 73% -> 62%; raw pixels (ridge) 74% -> 44%. A network has to
use spatial structure to go beyond that.

Spectrum, measured: `linearcnn data builtin --spectrum` fits log power against log frequency of
the Hann-windowed luminance over 2/32 .. 12/32 cycles per pixel, averaged over the images.
Train split: P(f) ~ f^-2.48 (amplitude ~ f^-1.24, R^2 0.999; seeds 0-4: 2.48 +- 0.01); test
split: 2.58 +- 0.02. Natural photographs average P ~ f^-2 (amplitude 1/f; van der Schaaf and van
Hateren 1996: 1.88 +- 0.43 across 276 photos), so the set lies inside the natural range, on its
steep side: several of the photos are close-ups with smooth surfaces and shallow depth of field
(astronaut, cat, coffee, flower: 2.7-3.0 per class) while the deep field, rocket, motorcycle and
tissue are at 1.9-2.2. The same fit on 128x128 crops of the photos at full resolution gives 2.1
to 3.8 (camera blur and JPEG smoothing steepen it), so shrinking makes the crops more natural.
The estimator recovers synthetic 1/f^beta fields to within 0.05 for 1.5 <= beta <= 2.5. Patch
view: for 3x3x3 patches of the normalised images, the first PCA component (mean luminance)
carries 76% of the variance and the second (colour) 15%.
"""

from __future__ import annotations

import numpy as np

from linearcnn.data._builtin import CLASSES as BUILTIN_CLASSES
from linearcnn.data._builtin import DEFAULT_SIZE as BUILTIN_DEFAULT_SIZE
from linearcnn.data._builtin import builtin_crops, builtin_description, builtin_layout
from linearcnn.data._dataset import ImageDataset, convert_channels, normalize_images, resize_center_crop, to_unit_float
from linearcnn.data._spec import DATA_KINDS, DATA_SPEC_HELP, DataSpec, parse_data_spec
from linearcnn.data._spectrum import SpectrumFit, radial_power_spectrum, spectrum_exponent
from linearcnn.data.formats import LOADERS, has_test_files, load_folder, read_idx
from linearcnn.errors import LinearCNNInputError

__all__ = [
    "BUILTIN_CLASSES",
    "DATA_KINDS",
    "DATA_SPEC_HELP",
    "DataSpec",
    "ImageDataset",
    "SpectrumFit",
    "builtin_layout",
    "convert_channels",
    "has_test_split",
    "load_dataset",
    "normalize_images",
    "parse_data_spec",
    "radial_power_spectrum",
    "read_idx",
    "resize_center_crop",
    "spectrum_exponent",
    "to_unit_float",
]

def _check_count(value: object, name: str, minimum: int) -> int:
    """`value` as an int, checked to be an integer >= `minimum` (the error names parameter `name`)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LinearCNNInputError(f"{name} {value!r}: expected an integer >= {minimum}", parameter=name)
    return int(value)


def load_dataset(
    spec: str = "builtin",
    *,
    limit: int | None = None,
    seed: int = 0,
    train: bool = True,
    min_size: int = 1,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """Load the data set named by `spec` (see the module docstring).

    limit: keep the first `limit` images (None: all); seed: the builtin set's seed (other formats
    are fixed files and ignore it); train: the train split (False: the test split) where the
    format has one; min_size: the smallest image height and width the caller can use (e.g. the
    kernel size, or 32 for a network): smaller images are an error; image_size: resize the short
    side to N and centre-crop N x N (None: as stored); channels: convert to 1 (grey) or 3 (RGB)
    channels (None: as stored). Raises LinearCNNInputError with one line naming the problem for
    every kind of bad input.
    """
    parsed = parse_data_spec(spec)
    limit = None if limit is None else _check_count(limit, "limit", 1)
    seed = _check_count(seed, "seed", 0)
    min_size = _check_count(min_size, "min_size", 1)
    image_size = None if image_size is None else _check_count(image_size, "image_size", 1)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise LinearCNNInputError(f"channels {channels!r}: expected 1 or 3", parameter="channels")
    if parsed.kind == "builtin":
        size = parsed.size if parsed.size is not None else BUILTIN_DEFAULT_SIZE[bool(train)]
        count = size if limit is None else min(size, limit)
        crop = parsed.crop or 32
        crops, labels = builtin_crops(count, seed, bool(train), crop)  # cached, read-only uint8
        images = crops.astype(np.float32) / np.float32(255)  # (N, 3, crop, crop), a fresh array
        result = ImageDataset(
            images,
            labels.copy(),
            list(BUILTIN_CLASSES),
            parsed.text,
            builtin_description(count, seed, bool(train), crop),
        )
    elif parsed.kind == "folder":  # reshaped image by image (a folder's sizes may differ)
        assert parsed.path is not None
        loaded_images, loaded_labels, classes, description = load_folder(
            parsed.path, train=bool(train), limit=limit, image_size=image_size, channels=channels
        )
        result = ImageDataset(loaded_images, loaded_labels, classes, parsed.text, description)
    else:
        loaded_images, loaded_labels, classes, description = LOADERS[parsed.kind](
            parsed.path, train=bool(train), limit=limit
        )
        result = ImageDataset(loaded_images, loaded_labels, classes, parsed.text, description)
    if parsed.kind != "folder":
        result = _reshaped(result, image_size, channels)
    if len(result) == 0:
        raise LinearCNNInputError(f"data set {parsed.text!r} is empty; expected at least one image")
    height, width = result.images.shape[2:]
    if height < min_size or width < min_size:
        raise LinearCNNInputError(
            f"data set {parsed.text!r} has {height}x{width} images; at least {min_size}x{min_size} needed"
        )
    return result


def _reshaped(dataset: ImageDataset, image_size: int | None, channels: int | None) -> ImageDataset:
    """`dataset` with its images converted to `channels` and resized/centre-cropped to `image_size`."""
    images, notes = dataset.images, []
    if channels is not None and images.shape[1] != channels:
        images = convert_channels(images, channels, f"data set {dataset.spec!r}")
        notes.append(f"converted to {channels} channel{'s' if channels > 1 else ''}")
    if image_size is not None and images.shape[2:] != (image_size, image_size):
        images = np.stack([resize_center_crop(image, image_size) for image in images])  # (N, C, N', N')
        notes.append(f"resized to {image_size}x{image_size} (short side, centre crop)")
    if not notes:
        return dataset
    return ImageDataset(images, dataset.labels, dataset.classes, dataset.spec, f"{dataset.description} ({'; '.join(notes)})")


def has_test_split(spec: str) -> bool:
    """Whether the data set named by `spec` has a test split, i.e. whether
    `load_dataset(spec, train=False)` has something to read.

    Cheap: looks only at file and sub-folder names and an npz file's list of arrays (no images
    are read, so a True does not promise the test files are well formed). `builtin` always has
    one; cifar10/cifar100/svhn/mnist when their test files are there; npz:FILE when it holds
    `test_images`; folder:DIR when it holds `train/` and `test/` (or `val/`). A spec that does not
    parse, a missing path or a path of the wrong type (a file for a folder or the reverse) raises
    the LinearCNNInputError `load_dataset` would raise.
    """
    parsed = parse_data_spec(spec)
    if parsed.path is None:  # builtin
        return True
    return has_test_files(parsed.kind, parsed.path)
