"""Small linear algebra shared by the rooms: the one PSD eigen-decomposition."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


class NotPositiveSemidefiniteError(ValueError):
    """The matrix has an eigenvalue below the rounding tolerance (`eigenvalue`, the smallest)."""

    def __init__(self, eigenvalue: float) -> None:
        super().__init__(f"eigenvalue {eigenvalue:g} < 0; expected a positive semidefinite matrix")
        self.eigenvalue = eigenvalue


def sorted_psd_eigh(
    matrix: ArrayLike, *, negative_tolerance: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Eigen-decomposition of a symmetric positive semi-definite matrix, in a fixed convention.

    Returns (eigenvalues (d,), descending and clipped at 0 from below: rounding can make the
    eigenvalues of a PSD matrix slightly negative; eigenvectors (d, d) as columns, each with its
    largest-magnitude entry positive). The matrix is symmetrised first. With `negative_tolerance`
    t, an eigenvalue below -t * max|eigenvalue| is not rounding: NotPositiveSemidefiniteError.

    >>> values, vectors = sorted_psd_eigh(np.array([[1.0, 0.0], [0.0, 3.0]]))
    >>> values.tolist(), vectors.tolist()
    ([3.0, 1.0], [[0.0, 1.0], [1.0, 0.0]])
    """
    square = np.asarray(matrix, dtype=np.float64)
    values, vectors = np.linalg.eigh(0.5 * (square + square.T))
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    if negative_tolerance is not None and values.size:
        scale = max(float(np.abs(values).max()), np.finfo(np.float64).tiny)
        if values[-1] < -negative_tolerance * scale:
            raise NotPositiveSemidefiniteError(float(values[-1]))
    values = np.maximum(values, 0.0)
    peak = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[peak, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return values, np.ascontiguousarray(vectors * signs)


__all__ = ["NotPositiveSemidefiniteError", "sorted_psd_eigh"]
