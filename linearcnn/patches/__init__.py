"""Exact streaming statistics of all stride-1 image patches, and their eigen-decomposition; also
each image's mean patch vector (`mean_patches`, the linear model's feature map) and the patch
grid of an image (`patch_grid`).

    >>> import numpy as np
    >>> from linearcnn.patches import patch_stats
    >>> images = np.random.default_rng(0).normal(size=(20, 3, 8, 8))
    >>> stats = patch_stats(images, 3, device="cpu")
    >>> stats.eigenvalues.shape, stats.num_patches           # d = 3*3*3, 20 images x 6 x 6 positions
    ((27,), 720)

PAPER Sec. 1: the patches are all `C x k x k` windows at valid stride-1 positions, flattened in
`(C, k, k)` order (the order of `conv_weight.reshape(K, -1)`); their second-moment matrix is
`(1/M) sum_m p_m p_m^T` over all M patches, its eigenvectors `u_i` sorted by decreasing
eigenvalue `lambda_i^2` (a variance).

How it is computed (exact, no patch matrix is ever formed)
----------------------------------------------------------
Entry `((c1, dy1, dx1), (c2, dy2, dx2))` of the moment matrix is a sum over images and over the
patch positions `(y, x)` of `I[c1, y+dy1, x+dx1] * I[c2, y+dy2, x+dx2]`: a product of two pixels
at relative offset `(Dy, Dx) = (dy2-dy1, dx2-dx1)`, summed over a rectangle of anchor pixels
that depends only on `(dy1, dx1)`. So we compute, per anchor pixel, the products with its
neighbours at every offset `Dy in [0, k)`, `Dx in (-k, k)` summed over the images (a batched
matrix product per pixel, K = images: `(C, n) @ (n, (2k-1) C)`, in float64), then take the k*k
rectangle sums with an integral image and scatter them into the `d x d` matrix. This costs
about `2 k (2k-1) C^2 H W` flops per image instead of the `2 d^2 (H-k+1)(W-k+1)` of forming the
patch matrix (`d = C k k`), about 5x fewer for 3x3x3 patches, and it needs only one
`(H W, C, n)` float64 copy of a batch of n images instead of a `(n H W, d)` patch matrix. All
products and sums are float64, so the result equals a float64 brute-force computation to
rounding (~1e-15 relative). Memory is bounded by the batch size, whatever the number of images.
Measured (`benchmarks/bench_patch_stats.py`, 2-core Xeon, 10,000 32x32 RGB images, k=3): 0.27 s
and 364 MiB peak RSS against 44 s and 9.6 GiB for unfold + `torch.pca_lowrank`, eigenvalues equal
to 6e-15 relative; peak RSS 311 MiB whether 1e4, 1e5 or 1e6 images are streamed.

Centred or not
--------------
`centered=False` (default) decomposes the uncentred second moment `E[p p^T]`; `centered=True`
the covariance `E[p p^T] - m m^T` (m the mean patch). The default is uncentred because that is
what gradient descent on the linear model sees (PAPER Sec. 2: `A = E[pbar pbar^T]`, no
centring), and because images are normalised per channel before the statistics are taken, so
the mean patch is close to zero and the two matrices differ only by the small rank-one `m m^T`.
Measured with `benchmarks/bench_patch_stats.py` (recorded in `benchmarks/results/
patch_stats.json`), 3x3 patches, uncentred vs centred:
  * 10,000 1/f "natural-like" 32x32 RGB images normalised per channel: `|m|^2` is 1.1e-7 of the
    trace; eigenvalues differ by at most 4.8e-7 (relative), eigenvectors |cos| > 0.99999998;
  * the built-in photo set normalised per channel: `|m|^2` is 3.9e-6 of the trace (the mean is
    zero per channel, but border pixels sit in fewer patches); the top eigenvalue differs by
    2.5e-6, the smallest by up to 3.4e-4, eigenvectors |cos| > 0.9999999;
  * the same photos un-normalised (pixels in [0, 1]): `|m|^2` is 2x the trace and the top
    eigenvalue is 3.6x larger uncentred (it absorbs the mean brightness). Normalise first
    (`dataset_patch_stats` does) or pass `centered=True`.

For `centered=True` the sums are taken of images minus a per-channel shift (the first batch's
channel means) and corrected exactly afterwards, so the covariance does not lose digits to
cancellation when the pixel mean is large compared with the spread.

Where it lives
--------------
`stats` (the public functions and `PatchStats`, re-exported here), `_stream` (the streaming
accumulator and its worker threads), `_inputs` (argument checks, batching), `_stats_file` (the
saved-file format, `STATS_FORMAT`).
"""

from linearcnn.patches._stats_file import STATS_FORMAT
from linearcnn.patches.stats import PatchStats, dataset_patch_stats, mean_patches, patch_grid, patch_stats

__all__ = [
    "STATS_FORMAT",
    "PatchStats",
    "dataset_patch_stats",
    "mean_patches",
    "patch_grid",
    "patch_stats",
]
