"""Exact K nearest neighbours (otbench/common/neighbours.py): exact on real MNIST, ties by index, the certificate's fallback."""
from __future__ import annotations

import pytest
import torch

from otbench.common.neighbours import ExactKNN
from otbench.registry import DATASETS


def brute_force_knn(train, x, k):
    d = torch.cdist(x.flatten(1).double(), train.flatten(1).double())
    return torch.argsort(d, dim=1, stable=True)[:, :k]


@pytest.mark.parametrize("margin", [16, 0])  # margin 0 forces the float64 fallback path
def test_exact_knn_matches_brute_force_on_real_mnist(mnist, margin):
    train, x = mnist.x_train[:5000], mnist.x_test[:64]
    knn = ExactKNN(train, margin=margin)
    assert torch.equal(knn.search(x, 10), brute_force_knn(train, x, 10))
    if margin == 0:
        assert knn.fallbacks > 0


def test_exact_knn_breaks_ties_by_index():
    pts = torch.zeros(6, 4)
    pts[3] = 1.0
    assert ExactKNN(pts).search(torch.zeros(1, 4), 3).tolist() == [[0, 1, 2]]


def test_exact_knn_is_exact_where_the_float32_certificate_fails():
    """Near-equidistant high-dimensional Gaussian points defeat ExactKNN's float32 certificate for almost
    every query; the band re-ranking that replaces the full float64 search must still give the exact answer."""
    from otbench.common.neighbours import ExactKNN

    d = DATASETS.get("gaussian-sphere-0.1")(None)
    train, x = d.x_train.flatten(1)[:20000], d.x_test.flatten(1)[:64]
    knn = ExactKNN(train)
    got = knn.search(x, 10)
    assert knn.fallbacks > 32
    dist = torch.cdist(x.double(), train.double()).pow(2)
    assert torch.equal(got, torch.argsort(dist, dim=1, stable=True)[:, :10])
