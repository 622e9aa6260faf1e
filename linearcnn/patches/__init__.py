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
`[dy1, dy1+H-k] x [dx1, dx1+W-k]` that depends only on `(dy1, dx1)`. Two streaming passes use
this shift structure; both are float64 throughout and equal a float64 brute-force computation to
rounding (~1e-15 relative), and both need memory bounded by a chunk of images, whatever N is.

Small images: the neighbour pass (`_stream._MomentAccumulator`). Per anchor pixel, the products
with its neighbours at every offset `Dy in [0, k)`, `Dx in (-k, k)`, summed over the images (a
batched matrix product per pixel, K = images: `(C, n) @ (n, (2k-1) C)`), kept as per-pixel maps
across chunks; at the end the k*k rectangle sums (an integral image) are scattered into the
`d x d` matrix. About `2 k (2k-1) C^2 H W` flops per image instead of the `2 d^2 (H-k+1)(W-k+1)`
of forming the patch matrix (`d = C k k`), 5x fewer for 3x3x3 patches. Measured
(`benchmarks/bench_patch_stats.py`, 2-core Xeon, 10,000 32x32 RGB images, k=3): 0.27 s and 364
MiB peak RSS against 44 s and 9.6 GiB for unfold + `torch.pca_lowrank`, eigenvalues equal to
6e-15 relative; peak RSS 311 MiB whether 1e4, 1e5 or 1e6 images are streamed. Its cost is the
traffic of the maps (`k H W C (2k-1) C` values): past the cache, and once they exceed their
budget and must be reduced to rectangle sums after every chunk, it runs far below the machine
(224x224 images, k=11: 800 MiB of maps, ~100 ms per image, no faster than unfold + matmul).

Large images and kernels: the row pass (`_rows._RowAccumulator`). The vertical shift structure
is used exactly: for patch rows `(a1, a1+Dy)`, the products of image rows `r` and `r+Dy` are
needed summed over `r in [a1, a1+H-k]`; the rows `[k-1, H-k]` are shared by every `a1`, so they
are summed once, and only the `k-1` edge rows at each end are added per `a1`. Horizontally, the
anchor columns shared by every `dx1` (the core, `[k-1, W-k]`, cut into T blocks of s columns)
are multiplied by polyphase: per image row, one float64 matrix product

    left[(e, c1), (n, t)] @ right[(Dy, f, c2), (n, t)]^T,   left = I[n, c1, r, k-1+s t+e],
                                                              right = I[n, c2, r+Dy, s t+f],

e in [0, s), f in [0, s+2k-2), stacked over all k offsets Dy (right is k consecutive rows of
one buffer, left a slice of it: no copies per row); summing its entries over the s phases e at
`f - e - (k-1) = Dx` gives the core sum of every offset. The `~k` columns at each side outside
the core (the strips) are multiplied pixel by pixel over the images and added to each `dx1`
whose column range holds them. Chunks of images are cut into bands of rows sized to a buffer
budget (`_stream._ROW_BUDGET_BYTES`, 64 MiB), each band built once (one strided copy of the
input, converted to float64 and shifted); nothing is recomputed per chunk. The operation count
is `2 (sC) (kC(s+2k-2)) T`, about `2 k C^2 (s+2k-2) W`, per image row (s C ~ 48,
`_rows._LEFT_ROWS`), plus the strips (k=11 on 224x224x3: 0.33 GFLOP per image, against 12 GFLOP
for unfold + matmul), in products large enough to run near the float64 GEMM rate. Measured
(`benchmarks/bench_patch_stats.py --large-only`, one case per run, 2-core AVX-512 Xeon shared
with another job, load average 3.1 to 3.9; 2,000 natural-like 224x224x3 images; the baseline,
float64 unfold + patches^T @ patches, on 40 of them; GEMM rate measured in the same run, 78
GFLOP/s):
  * k=7:  4.4 ms per image against 69 ms (16x), 37 GFLOP/s of our own count = 47% of GEMM;
  * k=11: 8.8 ms against 254 ms (29x), 37 GFLOP/s = 47%;
  * k=16: 18 ms against 811 ms (45x), 33 GFLOP/s = 43%;
  all within 1.2e-15 of the baseline's matrix (relative to its largest entry).

Which pass runs (`_stream.choose_method`): the row pass when the neighbour pass's per-pixel maps
would exceed 10 MiB (`_stream._ROWS_ABOVE_MAP_BYTES`, where the two measured about equal), so
32x32 RGB images up to k=7 keep the neighbour pass (unchanged: 0.033 ms per image at k=3) and
224x224 images take the row pass for k >= 2. On the CPU the chunks go round-robin to worker
threads, one per torch thread, each with its own running sums and one intra-op thread
(`_stream._Workers`: deterministic, and robust to a busy machine).

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
pass, the neighbour accumulator, the choice of pass and the worker threads), `_rows` (the row
accumulator), `_inputs` (argument checks, batching), `_stats_file` (the saved-file format,
`STATS_FORMAT`).
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
