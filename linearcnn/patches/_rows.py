"""The row pass behind `patch_stats` for large images and kernels (`_RowAccumulator`): the patch
moments as a sum over image rows of float64 matrix products, one large one per image row plus
thin edge corrections, all exact. The small-image pass (per-pixel neighbour products) is `_stream`.

How and why it is computed this way: the docstring of `linearcnn.patches`. In short, for
patch rows (a1, a2 = a1 + Dy) and image row r, the products between row r and row r + Dy are
needed summed over the rows r in [a1, a1 + H - k] (those are the same for every a1 except the
k - 1 rows at each edge), and over the anchor columns u in [b1, b1 + W - k] at horizontal offset
Dx = b2 - b1 (the same for every b1 except k - 1 columns at each edge). The columns shared by
every b1 (the "core" [k-1, k-1 + s T)) are summed by one product per image row between

    left[(e, c1), (n, t)]         = I[n, c1, r,      k-1 + s t + e]        e in [0, s)
    right[(Dy, f, c2), (n, t)]    = I[n, c2, r + Dy, s t + f]              f in [0, s + 2k - 2)

(`left` is a slice of `right` at Dy = 0, and `right` is k consecutive rows of one buffer: no
copies per row). Entry ((e, c1), (Dy, f, c2)) is the sum, over the core columns u = k-1 + s t + e
of phase e, of I[c1, r, u] I[c2, r+Dy, u+Dx] with Dx = f - e - (k-1); summing over the s phases
gives each offset's core sum. The other columns (the "strips", k-1 or a few more at each side)
are multiplied pixel by pixel (`left[(u, c1), n] @ right[(Dy, v, c2), n]`) and added to each
(b1, b2) whose column range holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: Rows of the left operand (s C, s = the column phase) the row products aim for. Measured on a
#: 2-core AVX-512 Xeon whose float64 GEMM runs at 73 GFLOP/s (k = 7, 11, 16 on 224 px, C = 3, one
#: thread): s C = 48 ran the products at 41-51 GFLOP/s, s = k (s C = 21, 33) at 28-39; s C = 72-96
#: ran at 50-63 but each anchor column then costs (s + 2k - 2) / (2k - 1) times the products it
#: needs, for no shorter time. So s = ceil(48 / C), evened out over the core columns (`row_plan`).
_LEFT_ROWS = 48
#: Inner dimension (images x phases) the row products aim for, and the fewest images per chunk
#: (the strip products' inner dimension is the number of images).
_GEMM_DEPTH = 768
_MIN_IMAGES = 32


@dataclass(frozen=True)
class RowPlan:
    """Geometry of the row products for (C, H, W) images and kernel k (see the module docstring)."""

    c: int
    h: int
    w: int
    k: int
    phase: int  # s: core columns are k-1 + s t + e, e in [0, s), t in [0, blocks)
    blocks: int  # T (0 when the images are too narrow for a core: everything is strips)
    strips: tuple[tuple[int, int, int, int], ...]  # (e0, e1, v0, v1): anchor columns [e0, e1), partners [v0, v1)
    edge_rows: tuple[int, ...]  # image rows not shared by every patch row a1 (all rows when H < 2k - 1)

    @property
    def span(self) -> int:
        """F = s + 2k - 2: the columns of `right` per block of s anchor columns."""
        return self.phase + 2 * self.k - 2

    def row_bytes(self, images: int) -> int:
        """Bytes of the band buffers per image row for `images` images (float64)."""
        per_image = self.c * (self.span * self.blocks + sum(v1 - v0 for _, _, v0, v1 in self.strips))
        return 8 * images * per_image

    def operations_per_image(self) -> int:
        """2 M N K of every matrix product per image, plus one addition per pixel (the pixel
        sums): the method's own operation count."""
        c, k, h = self.c, self.k, self.h
        dys = sum(min(k, h - r) for r in range(h))  # products per row: rows r + Dy inside the image
        ops = 2 * (self.phase * c) * (self.span * c) * self.blocks * dys
        for e0, e1, v0, v1 in self.strips:
            ops += 2 * ((e1 - e0) * c) * ((v1 - v0) * c) * dys
        return ops + c * h * self.w


def row_plan(c: int, h: int, w: int, k: int) -> RowPlan:
    """The row-product geometry for (C, H, W) images and kernel k (k <= H, W)."""
    core = w - 2 * k + 2  # columns shared by every horizontal patch offset b1
    if core >= 1:
        # s C close to _LEFT_ROWS, and s dividing the core columns as evenly as that allows
        # (the remainder becomes strip columns).
        phase = core // math.ceil(core / math.ceil(_LEFT_ROWS / c))
        blocks = core // phase
    else:
        phase, blocks = 1, 0
    start = k - 1 + phase * blocks  # first column after the core
    strips = []
    if k > 1:
        strips.append((0, k - 1, 0, min(w, 2 * k - 2)))
    if start < w:
        strips.append((start, w, max(0, start - (k - 1)), w))
    edge_rows = tuple(r for r in range(h) if not k - 1 <= r <= h - k)
    return RowPlan(c, h, w, k, phase, blocks, tuple(strips), edge_rows)


def row_chunk(plan: RowPlan, batch_size: int, budget: int) -> tuple[int, int]:
    """(images per chunk, image rows per band) for a buffer budget in bytes: enough images that
    the products' inner dimension is about `_GEMM_DEPTH`, and as many rows per band as fit (at
    least k, so that the k - 1 rows a band shares with the next are rebuilt at most once per k)."""
    k, h = plan.k, plan.h
    images = min(batch_size, max(_MIN_IMAGES, math.ceil(_GEMM_DEPTH / max(plan.blocks, 1))))
    while images > 1 and (min(h, k) + k - 1) * plan.row_bytes(images) > budget:
        images = max(1, images * 3 // 4)
    band = max(1, budget // plan.row_bytes(images) - (k - 1))
    return images, min(band, h)


class _RowSums:
    """Running sums of one family of row products ((m, k * block) per image row: k row offsets Dy
    of `block` columns), split by patch row a1: `shared` sums the rows r in [k-1, H-k], which
    every a1 uses, with all k offsets; `by_patch_row[a1]` the other rows a1 <= r <= a1 + H - k
    with the offsets Dy < k - a1 that patch row a1 pairs with (the rest are never used). So the
    edge rows cost k (k+1) / 2 offset blocks, not 2 (k-1) k."""

    def __init__(self, m: int, block: int, plan: RowPlan, device: torch.device) -> None:
        k, h = plan.k, plan.h
        self.k, self.block = k, block
        self.shared = torch.zeros((m, k * block), dtype=torch.float64, device=device)
        self.by_patch_row = [torch.zeros((m, (k - a1) * block), dtype=torch.float64, device=device) for a1 in range(k)]
        self.patch_rows = {r: range(max(0, r - (h - k)), min(k - 1, r) + 1) for r in plan.edge_rows}  # r -> its a1

    def add(self, r: int, left: torch.Tensor, right: torch.Tensor) -> None:
        """Add left @ right^T: image row r's products ((m, K) @ (K, Dy_count * block))."""
        patch_rows = self.patch_rows.get(r)
        if patch_rows is None:
            self.shared[:, : right.shape[0]].addmm_(left, right.t())
            return
        products = left @ right.t()  # (m, Dy_count * block), Dy_count >= k - a1 for each of its a1
        for a1 in patch_rows:
            self.by_patch_row[a1] += products[:, : (self.k - a1) * self.block]

    def merge(self, other: _RowSums) -> None:
        self.shared += other.shared
        for mine, theirs in zip(self.by_patch_row, other.by_patch_row):
            mine += theirs

    def per_patch_row(self) -> np.ndarray:
        """(k, m, k * block): for each patch row a1, the sums over its image rows (offsets
        Dy >= k - a1, never used, left at the shared rows' values)."""
        total = np.repeat(self.shared.cpu().numpy()[None], self.k, axis=0)  # host sync: once per run
        for a1, sums in enumerate(self.by_patch_row):
            total[a1, :, : sums.shape[1]] += sums.cpu().numpy()
        return total


class _RowAccumulator:
    """Running float64 sums of the row products (module docstring), for one worker thread:
    `core` those of the core columns ((e, c1), (Dy, f, c2)), `strips[j]` those of strip j
    ((u, c1), (Dy, v, c2)), each split by patch row (`_RowSums`)."""

    def __init__(self, channels: int, height: int, width: int, kernel: int, device: torch.device,
                 shift: torch.Tensor, budget: int, batch_size: int) -> None:
        self.c, self.h, self.w, self.k = channels, height, width, kernel
        self.device = device
        self.shift = shift  # (C,) float64, subtracted from every pixel of its channel
        self.plan = plan = row_plan(channels, height, width, kernel)
        self.images_per_chunk, self.band = row_chunk(plan, batch_size, budget)
        c = channels
        self.core = _RowSums(plan.phase * c, plan.span * c, plan, device) if plan.blocks else None
        self.strips = [_RowSums((e1 - e0) * c, (v1 - v0) * c, plan, device) for e0, e1, v0, v1 in plan.strips]
        self.pixel_sums = torch.zeros((c, height, width), dtype=torch.float64, device=device)  # shifted pixel sums
        self.num_images = 0
        self.operations = 0
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A float64 work buffer of at least this many elements, reused across chunks (fresh pages
        would cost a page fault per 4 KiB), viewed as `shape`."""
        size = math.prod(shape)
        held = self._buffers.get(name)
        if held is None or held.numel() < size:
            held = torch.empty(size, dtype=torch.float64, device=self.device)
            self._buffers[name] = held
        return held[:size].view(shape)

    def add(self, batch: torch.Tensor) -> bool:
        """Add a (n, C, H, W) batch (any real dtype, on this device). Returns False when the batch
        holds NaN or Inf (or its pixel sums overflow float64); the sums are then unusable (the
        caller stops the pass)."""
        n = int(batch.shape[0])
        c, h, w, k = self.c, self.h, self.w, self.k
        plan, band = self.plan, self.band
        s, f, blocks = plan.phase, plan.span, plan.blocks
        sn, sc, sh, sw = batch.stride()
        shifted = bool(torch.any(self.shift != 0))
        chunk_sums = torch.zeros((c, h, w), dtype=torch.float64, device=self.device)  # shifted pixel sums
        for r0 in range(0, h, band):  # bands of image rows [r0, r1), with the k - 1 rows below each
            r1 = min(h, r0 + band)
            rows = min(h, r1 + k - 1) - r0
            offset = batch.storage_offset() + r0 * sh
            core = None
            if blocks:
                # core[rr, f, c, n, t] = I[n, c, r0 + rr, s t + f] - shift[c], float64: one strided
                # copy (converting the dtype), then the shift in place (a mixed-dtype subtraction
                # with broadcasting is 4x slower than the two).
                core = self._buffer("core", (rows, f, c, n, blocks))
                core.copy_(batch.as_strided((rows, f, c, n, blocks), (sh, sw, sc, sn, s * sw), offset))
                if shifted:
                    core -= self.shift.view(1, 1, c, 1, 1)
                # Every core pixel once: columns k-1 + s t + e of the band's own rows.
                own = core[: r1 - r0, k - 1 : k - 1 + s].sum(dim=3)  # (rows, e, C, T)
                chunk_sums[:, r0:r1, k - 1 : k - 1 + s * blocks] = own.permute(2, 0, 3, 1).reshape(c, r1 - r0, s * blocks)
            strips = []
            for j, (e0, e1, v0, v1) in enumerate(plan.strips):
                strip = self._buffer(f"strip{j}", (rows, v1 - v0, c, n))  # strip[rr, v, c, n] = I[n, c, r0 + rr, v0 + v]
                strip.copy_(batch.as_strided((rows, v1 - v0, c, n), (sh, sw, sc, sn), offset + v0 * sw))
                if shifted:
                    strip -= self.shift.view(1, 1, c, 1)
                chunk_sums[:, r0:r1, e0:e1] = strip[: r1 - r0, e0 - v0 : e1 - v0].sum(dim=3).permute(2, 0, 1)
                strips.append(strip)
            for r in range(r0, r1):
                rr, dys = r - r0, min(k, h - r)  # row offsets Dy with r + Dy inside the image
                if core is not None and self.core is not None:
                    left = core[rr, k - 1 : k - 1 + s].reshape(s * c, n * blocks)  # ((e, c1), (n, t)), a view
                    right = core[rr : rr + dys].reshape(dys * f * c, n * blocks)  # ((Dy, f, c2), (n, t)), a view
                    self.core.add(r, left, right)
                    self.operations += 2 * left.shape[0] * right.shape[0] * left.shape[1]
                for j, (e0, e1, v0, v1) in enumerate(plan.strips):
                    strip = strips[j]
                    left = strip[rr, e0 - v0 : e1 - v0].reshape((e1 - e0) * c, n)  # ((u, c1), n)
                    right = strip[rr : rr + dys].reshape(dys * (v1 - v0) * c, n)  # ((Dy, v, c2), n)
                    self.strips[j].add(r, left, right)
                    self.operations += 2 * left.shape[0] * right.shape[0] * n
        # Host sync (CUDA), once per chunk: a NaN/Inf pixel makes its pixel sum non-finite.
        if not bool(torch.isfinite(chunk_sums).all()):
            return False
        self.pixel_sums += chunk_sums
        self.operations += n * c * h * w
        self.num_images += n
        return True

    def merge(self, other: _RowAccumulator) -> None:
        """Add another accumulator's sums (same shape, shift and device) into this one."""
        if self.core is not None and other.core is not None:
            self.core.merge(other.core)
        for mine, theirs in zip(self.strips, other.strips):
            mine.merge(theirs)
        self.pixel_sums += other.pixel_sums
        self.num_images += other.num_images
        self.operations += other.operations

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(sum over patches of p p^T (d, d), sum of p (d,), number of patches), shifted data."""
        c, h, w, k = self.c, self.h, self.w, self.k
        plan = self.plan
        wp = w - k + 1  # patch columns
        span = 2 * k - 1  # offsets Dx = -(k-1) .. k-1, index Dx + k - 1
        # total[a1, b1, c1, Dy, Dx + k-1, c2]: sum over the patches' anchor rectangle of
        # I[c1, y + a1, x + b1] I[c2, y + a1 + Dy, x + b1 + Dx].
        total = np.zeros((k, k, c, k, span, c))
        if self.core is not None:
            s, f = plan.phase, plan.span
            core = self.core.per_patch_row().reshape(k, s, c, k, f, c)
            lag = np.zeros((k, c, k, span, c))
            for e in range(s):  # phase e, offset Dx: f = e + Dx + k - 1
                lag += core[:, e, :, :, e : e + span, :]
            total += lag[:, None]
        for j, (e0, e1, v0, v1) in enumerate(plan.strips):
            strip = self.strips[j].per_patch_row().reshape(k, e1 - e0, c, k, v1 - v0, c)
            # by_offset[a1, u - e0, c1, Dy, Dx + k-1, c2] = strip[a1, u - e0, c1, Dy, u + Dx - v0, c2]
            by_offset = np.zeros((k, e1 - e0, c, k, span, c))
            for u in range(e0, e1):
                lo, hi = max(0, v0 - u + k - 1), min(span, v1 - u + k - 1)  # Dx + k-1 with u + Dx in [v0, v1)
                by_offset[:, u - e0, :, :, lo:hi] = strip[:, u - e0, :, :, u - (k - 1) + lo - v0 : u - (k - 1) + hi - v0]
            for b1 in range(k):  # anchor columns u in [b1, b1 + W - k] that lie in this strip
                lo, hi = max(b1, e0), min(b1 + wp, e1)
                if hi > lo:
                    total[:, b1] += by_offset[:, lo - e0 : hi - e0].sum(axis=1)
        # Scatter: entry (c1, a1, b1, c2, a1 + Dy, b2) for a1 + Dy < k, and its mirror.
        grid = np.meshgrid(*(np.arange(k),) * 4, indexing="ij")  # (a1, Dy, b1, b2)
        keep = grid[0] + grid[1] < k
        top, dy, left, right = (axis[keep] for axis in grid)
        blocks = total[top, left, :, dy, right - left + k - 1, :]  # (pairs, C1, C2)
        moment6 = np.zeros((c, k, k, c, k, k))
        moment6[:, top, left, :, top + dy, right] = blocks
        lower = dy > 0
        moment6[:, (top + dy)[lower], right[lower], :, top[lower], left[lower]] = blocks[lower].transpose(0, 2, 1)
        d = c * k * k
        moment = moment6.reshape(d, d)
        moment = 0.5 * (moment + moment.T)  # exact up to the rounding of the diagonal blocks
        patch_sum = _rectangle_sums(self.pixel_sums.cpu().numpy(), k).reshape(d)  # (C, k, k) order
        count = self.num_images * (h - k + 1) * wp
        return moment, patch_sum, count


def _rectangle_sums(pixel_sums: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W) pixel sums -> (C, k, k): entry (c, a, b) is the sum over the anchor rectangle
    [a, a + H - k] x [b, b + W - k] (the sum of patch entry (c, a, b) over all patches)."""
    _, h, w = pixel_sums.shape
    rows = np.stack([pixel_sums[:, a : a + h - k + 1].sum(axis=1) for a in range(k)], axis=1)  # (C, k, W)
    return np.stack([rows[:, :, b : b + w - k + 1].sum(axis=2) for b in range(k)], axis=2)  # (C, k, k)


__all__ = ["RowPlan", "row_chunk", "row_plan"]
