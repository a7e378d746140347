"""Levina-Bickel maximum-likelihood estimate of intrinsic dimension (papers/ot-classifier.txt section 4.3, Table 3).

Levina & Bickel (NIPS 2004), "Maximum likelihood estimation of intrinsic dimension" (the paper's ref. [14]): with
T_j(x) the distance from x to its j-th nearest neighbour among the sample,

    m_k(x) = [ 1/(k - 2) * sum_{j=1}^{k-1} log(T_k(x) / T_j(x)) ]^{-1}       (the unbiased (k - 2) form),

averaged over the sample points and then over k = k1..k2. k1 = 6, k2 = 12 and the (k - 2) normaliser are the
defaults of hub-toolbox's `intrinsic_dimension` (the code the paper names, footnote 3); `estimator="mackay"` is
MacKay & Ghahramani's variant (average the inverses 1/m_k(x) over the points, then invert). The paper uses
1,000 samples ("changing the sample size does not influence the results much").
"""
from __future__ import annotations

import numpy as np
import torch

from otbench.errors import OTBenchError

ESTIMATORS = ("levina", "mackay")


def knn_distances(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) Euclidean distances of each row to its k nearest other rows, ascending (float64, exact)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    part = np.partition(d2, k - 1, axis=1)[:, :k]
    return np.sqrt(np.sort(part, axis=1))


def mle_intrinsic_dimension(x: np.ndarray | torch.Tensor, k1: int = 6, k2: int = 12,
                            estimator: str = "levina") -> float:
    """The Levina-Bickel MLE of the intrinsic dimension of the rows of x (each row one flattened sample)."""
    if estimator not in ESTIMATORS:
        raise OTBenchError(f"unknown intrinsic-dimension estimator '{estimator}'; valid: {', '.join(ESTIMATORS)}")
    if not 3 <= k1 <= k2:
        raise OTBenchError(f"need 3 <= k1 <= k2, got k1={k1}, k2={k2}")
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if len(x) <= k2:
        raise OTBenchError(f"need more than k2 = {k2} samples, got {len(x)}")
    t = knn_distances(x, k2)
    if (t[:, 0] <= 0).any():
        raise OTBenchError("duplicate samples (zero nearest-neighbour distance): remove them first")
    logs = np.log(t)
    dims = []
    for k in range(k1, k2 + 1):
        s = (logs[:, k - 1:k] - logs[:, :k - 1]).sum(1)  # sum_{j<k} log(T_k / T_j), per point
        if estimator == "levina":
            dims.append(float(np.mean((k - 2) / s)))
        else:
            dims.append(float(1.0 / np.mean(s / (k - 2))))
    return float(np.mean(dims))
