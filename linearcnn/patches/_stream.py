"""The streaming pass behind `patch_stats`: running float64 sums, either of pixel-neighbour
products (`_MomentAccumulator`, small images) or of image-row products (`_rows._RowAccumulator`,
large images and kernels), fed by worker threads (`_Workers`) one chunk at a time, and turned
into the patch mean and second-moment matrix (`stream_moments`); `choose_method` picks the pass.

How and why it is computed this way: the docstring of `linearcnn.patches`.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from linearcnn.errors import LinearCNNInputError
from linearcnn.patches._inputs import check_kernel_fits
from linearcnn.patches._rows import _RowAccumulator, row_chunk, row_plan

#: Largest total size of the per-pixel neighbour-product maps kept across batches (bytes, shared
#: by the worker threads); larger maps (big images, big kernels) are reduced to their rectangle
#: sums after every chunk instead.
_MAP_BUDGET_BYTES = 64 * 2**20
#: Float64 values in the k image rows of one CPU chunk (k * W * C * images): the working set
#: of the sliding neighbour products, kept within L2 (tuned on a 2-core Xeon, 32x32 RGB, k=3).
_CPU_WINDOW_VALUES = 2**15
#: Largest total size of the row pass's float64 work buffers (bytes, shared by the worker
#: threads): one band of image rows of one chunk of images, expanded by column phase (`_rows`:
#: about 2.3x the band's pixels at k = 11; `row_chunk` sizes chunk and band to fit). The running
#: sums come on top, per thread: 1.4, 6.7, 23 and 220 MiB for k = 7, 11, 16 and 32 on 224x224x3
#: images (about k^4 C^2 values, 3x the d x d moment matrix).
_ROW_BUDGET_BYTES = 64 * 2**20
#: `choose_method`: the row pass is used when the neighbour pass's per-pixel maps (float64
#: k * H * W * C * (2k-1) * C) would be larger than this. Measured (2-core AVX-512 Xeon, 3
#: channels, ms per image, neighbour / row pass): 32 px k=3 (1 MiB of maps) 0.040 / 0.063,
#: k=7 (6 MiB) 0.128 / 0.140; 48 px k=5 (7 MiB) 0.127 / 0.164, k=7 (14 MiB) 0.240 / 0.235;
#: 64 px k=5 (13 MiB) 0.34 / 0.30, k=7 (26 MiB) 0.79 / 0.45; 128 px k=3 (17 MiB) 0.84 / 0.68;
#: 224 px k=3 (54 MiB) 6.9 / 3.2, k=11 (797 MiB) 105 / 10. The neighbour pass streams its maps
#: through memory once per chunk; past the cache that traffic, not arithmetic, is its cost.
_ROWS_ABOVE_MAP_BYTES = 10 * 2**20
#: Force a pass ("lags" or "rows") instead of `choose_method`'s choice (tests).
_METHOD: str | None = None


@dataclass
class PatchMoments:
    """What one streaming pass measures: the patch mean and the matrix to decompose."""

    mean: NDArray[np.float64]  # (d,) the mean patch
    matrix: NDArray[np.float64]  # (d, d) symmetric: E[p p^T], or the covariance when centred
    num_patches: int
    num_images: int
    shape: tuple[int, int, int]  # (C, H, W) of the images
    method: str = "lags"  # the pass that measured them: "lags" or "rows" (`choose_method`)
    operations: int = 0  # the pass's own operation count (2 M N K per matrix product, plus the rest)


class _MomentAccumulator:
    """Running float64 sums of pixel-neighbour products (the shift structure of patch moments).

    For an anchor pixel q = (y, x) and an offset (Dy, Dx), Dy in [0, k), Dx in (-k, k), the map
    T[Dy, q, c1, (Dx, c2)] = sum_images I[c1, q] I[c2, q + (Dy, Dx)]. The patch moment entry
    ((c1, dy1, dx1), (c2, dy1+Dy, dx1+Dx)) is the sum of that map over the anchors
    q in [dy1, dy1+H-k] x [dx1, dx1+W-k]; the rectangle sums are `rects`.
    """

    def __init__(self, channels: int, height: int, width: int, kernel: int, device: torch.device,
                 shift: torch.Tensor, map_budget: int) -> None:
        self.c, self.h, self.w, self.k = channels, height, width, kernel
        self.device = device
        self.shift = shift  # (C,) float64, subtracted from every pixel of its channel
        self.shifted = bool(torch.any(shift != 0))
        self.span = 2 * kernel - 1  # horizontal offsets Dx = -(k-1) .. k-1
        pixels = height * width
        map_shape = (kernel, pixels, channels, self.span * channels)
        self.keep_maps = map_bytes(channels, height, width, kernel) <= map_budget
        self.maps = torch.zeros(
            map_shape if self.keep_maps else (0,), dtype=torch.float64, device=device
        )  # (k, HW, C, (2k-1)C), or empty when reduced after every chunk
        self.rects = torch.zeros(
            (kernel, kernel, kernel, channels, self.span, channels), dtype=torch.float64, device=device
        )  # (dy1, dx1, Dy, c1, Dx + k-1, c2)
        self.pixel_sums = torch.zeros((height, width, channels), dtype=torch.float64, device=device)  # (H, W, C)
        self.num_images = 0
        self.operations = 0  # 2 M N K of the products, plus the pixel sums and per-chunk summed-area tables

    def add(self, batch: torch.Tensor) -> bool:
        """Add a (n, C, H, W) batch (any real dtype; on this device or the CPU).

        Returns False, adding nothing, when the batch holds NaN or Inf (or overflows float64).
        """
        n = int(batch.shape[0])
        c, h, w, k = self.c, self.h, self.w, self.k
        pixels, pad = h * w, k - 1
        # Pixel-major layout with the images last, padded by k-1 zero pixels at both ends so
        # that every neighbour window below stays inside the buffer.
        buf = torch.empty((pixels + 2 * pad, c, n), dtype=torch.float64, device=self.device)  # (HW+2pad, C, n)
        buf[:pad].zero_()
        buf[pad + pixels :].zero_()
        body = buf[pad : pad + pixels]  # (HW, C, n)
        body.view(h, w, c, n).copy_(batch.permute(2, 3, 1, 0))  # (H, W, C, n): transpose + float64 in one pass
        if self.shifted:
            body -= self.shift.view(1, c, 1)
        chunk_sums = body.sum(dim=2)  # (HW, C)
        # Host sync (CUDA): a NaN/Inf pixel makes its pixel sum non-finite; checked per chunk so
        # bad data fails before the whole pass (cheap: HW*C values).
        if not bool(torch.isfinite(chunk_sums).all()):
            return False
        self.pixel_sums += chunk_sums.view(h, w, c)
        row = c * n  # elements per pixel in buf
        for dy in range(k):
            anchors = (h - dy) * w  # anchors whose row y + dy is inside the image
            left = body[:anchors]  # (anchors, C, n)
            # Neighbours of anchor q: pixels q + dy*W - (k-1) .. q + dy*W + (k-1), i.e. a sliding
            # window of 2k-1 consecutive pixels; as_strided shares memory (windows overlap).
            right = buf.as_strided(
                (anchors, self.span * c, n), (row, n, 1), buf.storage_offset() + dy * w * row
            )  # (anchors, (2k-1)C, n)
            if self.keep_maps:
                self.maps[dy, :anchors].baddbmm_(left, right.transpose(1, 2))  # (anchors, C, (2k-1)C)
            else:
                products = torch.zeros((pixels, c, self.span * c), dtype=torch.float64, device=self.device)
                torch.bmm(left, right.transpose(1, 2), out=products[:anchors])  # (anchors, C, (2k-1)C)
                self.rects[:, :, dy] += self._rectangle_sums(products).view(k, k, c, self.span, c)
        self.num_images += n
        self.operations += n * lag_operations_per_image(c, h, w, k) + (0 if self.keep_maps else _table_operations(c, h, w, k))
        return True

    def merge(self, other: _MomentAccumulator) -> None:
        """Add another accumulator's sums (same shape, shift and device) into this one."""
        self.maps += other.maps
        self.rects += other.rects
        self.pixel_sums += other.pixel_sums
        self.num_images += other.num_images
        self.operations += other.operations

    def _rectangle_sums(self, grid: torch.Tensor) -> torch.Tensor:
        """(HW, ...) per-anchor values -> (k, k, ...) sums over the anchor rectangles (dy1, dx1)."""
        h, w, k = self.h, self.w, self.k
        rows, cols = h - k + 1, w - k + 1
        values = grid.view(h, w, -1)  # (H, W, F)
        cum = torch.zeros((h + 1, w, values.shape[-1]), dtype=torch.float64, device=self.device)
        torch.cumsum(values, dim=0, out=cum[1:])
        row_sums = cum[rows : rows + k] - cum[0:k]  # (k_dy1, W, F): rows dy1 .. dy1+rows-1
        cum2 = torch.zeros((k, w + 1, values.shape[-1]), dtype=torch.float64, device=self.device)
        torch.cumsum(row_sums, dim=1, out=cum2[:, 1:])
        sums = cum2[:, cols : cols + k] - cum2[:, 0:k]  # (k_dy1, k_dx1, F)
        return sums.reshape((k, k) + tuple(grid.shape[1:]))

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(sum over patches of p p^T (d, d), sum of p (d,), number of patches), shifted data."""
        c, k = self.c, self.k
        rects = self.rects.clone()
        if self.keep_maps:
            for dy in range(k):
                rects[:, :, dy] += self._rectangle_sums(self.maps[dy]).view(k, k, c, self.span, c)
        rects_np = rects.cpu().numpy()  # host sync: the (k, k, k, C, 2k-1, C) sums, once per run
        # Scatter: entry (c1, dy1, dx1, c2, dy1+Dy, dx1+Dx) for Dy > 0, or Dy == 0 and Dx >= 0
        # (each unordered pair of patch entries once), then mirror.
        dy1, dx1, dy2, dx2 = np.meshgrid(*(np.arange(k),) * 4, indexing="ij")
        keep = (dy2 > dy1) | ((dy2 == dy1) & (dx2 >= dx1))
        dy1, dx1, dy2, dx2 = dy1[keep], dx1[keep], dy2[keep], dx2[keep]
        blocks = rects_np[dy1, dx1, dy2 - dy1, :, dx2 - dx1 + k - 1, :]  # (pairs, C1, C2)
        blocks_by_offset = np.zeros((c, k, k, c, k, k))
        # (numpy puts the advanced-index axis, pairs, first in these assignments)
        blocks_by_offset[:, dy1, dx1, :, dy2, dx2] = blocks  # (pairs, c1, c2)
        blocks_by_offset[:, dy2, dx2, :, dy1, dx1] = blocks.transpose(0, 2, 1)  # (pairs, c2, c1)
        d = c * k * k
        moment = blocks_by_offset.reshape(d, d)
        moment = 0.5 * (moment + moment.T)  # exact up to the rounding of the diagonal blocks
        # Sum of patches: per channel and offset, the pixel sums over the anchor rectangle.
        pixel_rects = self._rectangle_sums(self.pixel_sums.view(self.h * self.w, c)).cpu().numpy()  # (k, k, C)
        patch_sum = pixel_rects.transpose(2, 0, 1).reshape(d)  # (C, k, k) order
        count = self.num_images * (self.h - k + 1) * (self.w - k + 1)
        return moment, patch_sum, count


def lag_operations_per_image(c: int, h: int, w: int, k: int) -> int:
    """The neighbour pass's operations per image: 2 M N K of its per-pixel products (M = C,
    N = (2k-1) C, K = images, one per anchor pixel and row offset) plus one addition per pixel."""
    return sum(2 * (h - dy) * w * c * (2 * k - 1) * c for dy in range(k)) + c * h * w


def _table_operations(c: int, h: int, w: int, k: int) -> int:
    """Additions of the summed-area tables the neighbour pass builds per chunk when its maps are
    not kept (two cumulative sums and a difference over each of the k maps)."""
    return k * 3 * h * w * c * (2 * k - 1) * c


class _Accumulator(Protocol):
    """What `_Workers` needs of a pass's running sums (`_MomentAccumulator`, `_RowAccumulator`)."""

    shift: torch.Tensor
    num_images: int
    operations: int

    def add(self, batch: torch.Tensor) -> bool: ...

    def merge(self, other: Any) -> None: ...  # another accumulator of the same class

    def result(self) -> tuple[np.ndarray, np.ndarray, int]: ...


def choose_method(shape: tuple[int, int, int], kernel: int) -> str:
    """"lags" (per-pixel neighbour products) or "rows" (image-row matrix products) for (C, H, W)
    images: the row pass when the neighbour pass's per-pixel maps exceed `_ROWS_ABOVE_MAP_BYTES`
    (see there for the measurements behind the rule), e.g. with 3 channels 32x32 images up to
    k = 7 and 64x64 up to k = 3 use the neighbour pass, 224x224 images the row pass for every k >= 2.
    `_METHOD` overrides the choice.
    """
    if _METHOD is not None:
        return _METHOD
    c, h, w = shape
    return "rows" if map_bytes(c, h, w, kernel) > _ROWS_ABOVE_MAP_BYTES else "lags"


def map_bytes(c: int, h: int, w: int, k: int) -> int:
    """Size of the neighbour pass's per-pixel maps for one accumulator (float64)."""
    return 8 * k * h * w * c * (2 * k - 1) * c


def operations_per_image(shape: tuple[int, int, int], kernel: int, method: str) -> int:
    """The chosen pass's own operation count per image (per-chunk work not included)."""
    c, h, w = shape
    if method == "rows":
        return row_plan(c, h, w, kernel).operations_per_image()
    return lag_operations_per_image(c, h, w, kernel)


@contextlib.contextmanager
def _progress_bar(total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n_images)`: a rich progress bar on stderr, or a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("patch statistics"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("patches", total=total)
        yield lambda n: bar.advance(task, n)


class _Failure(Exception):
    """A chunk held NaN/Inf or overflowed (raised in a worker; becomes LinearCNNInputError)."""

    def __init__(self, chunk: torch.Tensor, where: str) -> None:
        super().__init__(where)
        self.chunk, self.where = chunk, where

    def as_input_error(self) -> LinearCNNInputError:
        bad = int((~torch.isfinite(self.chunk.to(torch.float64))).sum())
        if bad == 0:
            return LinearCNNInputError(f"{self.where}: pixel sums overflow float64; expected pixel values far below 1e300")
        return LinearCNNInputError(f"{self.where} contain {bad} NaN or Inf pixel value(s); expected finite pixels")


class _Workers:
    """Feeds chunks to accumulators: inline (one thread, CUDA) or round-robin to CPU threads.

    Why threads of our own: both passes are sequences of matrix products (many small ones per
    pixel, or a few hundred medium ones per chunk of image rows), and torch's intra-op
    parallelism runs each as a separate parallel region with a barrier; on a busy machine one
    descheduled thread stalls every barrier (measured: 7x slower than one thread at load 3 on 2
    cores). Instead each worker thread owns an accumulator and takes every T-th chunk, with torch
    limited to one intra-op thread for the duration; the chunks each thread sums, and so the
    rounding, do not depend on timing (deterministic for a given T).
    """

    def __init__(self, make: Callable[[], _Accumulator], threads: int) -> None:
        self.accumulators: list[_Accumulator] = [make() for _ in range(threads)]
        self.threads = threads
        self.count = 0
        self.queues: list[queue.Queue] = []
        self.errors: list[Exception | None] = [None] * threads
        self.workers: list[threading.Thread] = []
        if threads > 1:
            for index in range(threads):
                inbox: queue.Queue = queue.Queue(maxsize=2)  # bounds the chunks held in memory
                worker = threading.Thread(target=self._work, args=(index, inbox), daemon=True)
                self.queues.append(inbox)
                self.workers.append(worker)
                worker.start()

    def _work(self, index: int, inbox: queue.Queue) -> None:
        while True:
            item = inbox.get()
            if item is None:
                return
            if self.errors[index] is not None:
                continue  # keep draining so the producer never blocks
            chunk, name = item
            try:
                if not self.accumulators[index].add(chunk):
                    raise _Failure(chunk, name)
            except Exception as exc:
                self.errors[index] = exc

    def add(self, chunk: torch.Tensor, name: str) -> None:
        if self.threads == 1:
            if not self.accumulators[0].add(chunk):
                raise _Failure(chunk, name)
        else:
            self.queues[self.count % self.threads].put((chunk, name))
            self._raise_first_error()
        self.count += 1

    def _raise_first_error(self) -> None:
        for error in self.errors:
            if error is not None:
                self.close()
                raise error

    def close(self) -> None:
        for inbox in self.queues:
            inbox.put(None)
        for worker in self.workers:
            worker.join()
        self.queues, self.workers = [], []

    def finish(self) -> _Accumulator:
        """Wait for the workers and merge their sums into one accumulator."""
        self.close()
        self._raise_first_error()
        total = self.accumulators[0]
        for other in self.accumulators[1:]:
            total.merge(other)
        return total


def stream_moments(batches: Iterator[tuple[torch.Tensor, str]], total: int | None, kernel: int, *,
                   centered: bool, batch_size: int, device: torch.device, progress: bool) -> PatchMoments:
    """One pass over `batches` ((images (n, C, H, W), name) pairs, `total` images if known): the
    patch mean and second moment (the covariance if `centered`), exact in float64.

    Arguments are already checked (`linearcnn.patches.stats`). Raises LinearCNNInputError for
    no images, batches of different shapes, a kernel larger than the images, and NaN/Inf pixels.
    """
    target, step = device, batch_size
    method = "lags"
    threads = max(1, torch.get_num_threads()) if target.type == "cpu" else 1
    workers: _Workers | None = None
    shape: tuple[int, int, int] | None = None
    seen = 0  # images before the current batch
    try:
        if threads > 1:
            torch.set_num_threads(1)  # restored below; see _Workers
        with _progress_bar(total, progress) as advance:
            for batch, name in batches:
                if batch.shape[0] == 0:
                    continue
                if shape is None:
                    shape = (int(batch.shape[1]), int(batch.shape[2]), int(batch.shape[3]))  # (C, H, W)
                    check_kernel_fits(kernel, shape)
                elif tuple(batch.shape[1:]) != shape:
                    raise LinearCNNInputError(
                        f"{name} has images of shape {tuple(batch.shape[1:])}; expected {shape} like the first batch"
                    )
                if workers is None:
                    c, h, w = shape
                    # The channel means of the first batch, summed in float64 without a float64
                    # copy of the batch (any shift is corrected exactly; this one keeps digits).
                    shift = (
                        torch.sum(batch, dim=(0, 2, 3), dtype=torch.float64).to(target) / (int(batch.shape[0]) * h * w)
                        if centered else torch.zeros(c, dtype=torch.float64, device=target)
                    )  # (C,)
                    if not bool(torch.isfinite(shift).all()):  # host sync, once
                        raise _Failure(batch, f"images 0 to {int(batch.shape[0]) - 1} (in {name})")
                    method = choose_method(shape, kernel)
                    make: Callable[[], _Accumulator]
                    if method == "rows":
                        make = functools.partial(_RowAccumulator, c, h, w, kernel, target, shift,
                                                 _ROW_BUDGET_BYTES // threads, step)
                        chunk = row_chunk(row_plan(c, h, w, kernel), step, _ROW_BUDGET_BYTES // threads)[0]
                    else:
                        make = functools.partial(_MomentAccumulator, c, h, w, kernel, target, shift,
                                                 _MAP_BUDGET_BYTES // threads)
                        chunk = _chunk_images(shape, kernel, target, step)
                    workers = _Workers(make, threads)
                # CPU: chunks sized for the cache (neighbour pass) or the row budget (row pass),
                # converted straight from the input; CUDA: one copy of the batch to the device in
                # its own dtype, converted to float64 in `add` (in row-pass chunks).
                source = batch if target.type == "cpu" else batch.to(device=target)
                for start in range(0, source.shape[0], chunk):
                    part = source[start : start + chunk]
                    first, last = seen + start, seen + start + int(part.shape[0]) - 1
                    workers.add(part, f"images {first} to {last} (in {name})")
                seen += int(batch.shape[0])
                advance(int(batch.shape[0]))
            if workers is None:
                raise LinearCNNInputError(
                    "images: no images given (0 images); expected at least one (N, C, H, W) image"
                )
            accumulator = workers.finish()
    except _Failure as failure:
        raise failure.as_input_error() from None
    finally:
        if workers is not None:
            workers.close()
        if threads > 1:
            torch.set_num_threads(threads)
    moment_sum, patch_sum, count = accumulator.result()
    shift_patch = np.repeat(accumulator.shift.cpu().numpy(), kernel * kernel)  # (d,) in (C, k, k) order
    shifted_mean = patch_sum / count  # (d,)
    shifted_moment = moment_sum / count  # (d, d)
    mean = shifted_mean + shift_patch
    if centered:
        matrix = shifted_moment - np.outer(shifted_mean, shifted_mean)  # covariance, shift-invariant
    else:
        matrix = shifted_moment  # the shift is zero when not centred
    matrix = 0.5 * (matrix + matrix.T)
    if not np.all(np.isfinite(matrix)):
        raise LinearCNNInputError("images: patch moments overflow float64; expected pixel values below ~1e150")
    assert shape is not None  # set with the first batch, and there was one
    return PatchMoments(mean=mean, matrix=matrix, num_patches=int(count), num_images=accumulator.num_images,
                        shape=shape, method=method, operations=int(accumulator.operations))


def _chunk_images(shape: tuple[int, int, int], kernel: int, device: torch.device, batch_size: int) -> int:
    """Images per internal chunk: the whole batch on CUDA; on CPU, enough images that the k rows
    of pixels the neighbour products slide over stay in the L2 cache (at least 16 images, so the
    per-pixel matrix products are not degenerate)."""
    if device.type != "cpu":
        return batch_size
    c, _, w = shape
    return max(1, min(batch_size, max(16, _CPU_WINDOW_VALUES // (kernel * w * c))))


__all__ = ["PatchMoments", "choose_method", "operations_per_image", "stream_moments"]
