"""Small linear algebra shared by the rooms: the one PSD eigen-decomposition."""

from __future__ import annotations

import numpy as np


def sorted_psd_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric positive semi-definite matrix, in a fixed convention.

    Returns (eigenvalues (d,), descending and clipped at 0 from below: rounding can make the
    eigenvalues of a PSD matrix slightly negative; eigenvectors (d, d) as columns, each with its
    largest-magnitude entry positive). The matrix is symmetrised first.

    >>> values, vectors = sorted_psd_eigh(np.array([[1.0, 0.0], [0.0, 3.0]]))
    >>> values.tolist(), vectors.tolist()
    ([3.0, 1.0], [[0.0, 1.0], [1.0, 0.0]])
    """
    symmetric = 0.5 * (np.asarray(matrix, dtype=np.float64) + np.asarray(matrix, dtype=np.float64).T)
    values, vectors = np.linalg.eigh(symmetric)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    values = np.maximum(values, 0.0)
    peak = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[peak, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return values, np.ascontiguousarray(vectors * signs)


__all__ = ["sorted_psd_eigh"]
