"""Interest discovery: DPC-KNN against a brute-force O(N^2) reference, planted clusters, dedup."""

import math

import numpy as np
import pytest
import torch

from mmseqrec.interest import discover_interests, dpc_knn, kmeans, num_interests, unique_interests
from tolerances import close


def brute_force_dpc(x: np.ndarray, num_clusters: int, k: int):
    """The definition, written the obvious way with the full distance matrix (float64)."""
    x = x.astype(np.float64)
    n, dim = x.shape
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0)) / math.sqrt(dim)
    knn = np.sort(d, axis=1)[:, :k]  # includes the token itself (distance 0)
    density = np.exp(-(knn**2).mean(axis=1))
    delta = np.empty(n)
    for i in range(n):
        denser = density > density[i]
        delta[i] = d[i, denser].min() if denser.any() else d[i].max()
    score = density * delta
    centres = np.lexsort((np.arange(n), -score))[:num_clusters]
    labels = np.argmin(d[centres], axis=0)
    labels[centres] = np.arange(num_clusters)
    return centres, labels


@pytest.mark.parametrize("seed,n,k,clusters", [(0, 200, 5, 10), (1, 333, 10, 25), (2, 120, 3, 60), (3, 400, 8, 4)])
def test_dpc_knn_equals_brute_force(seed, n, k, clusters):
    rng = np.random.default_rng(seed)
    centres_true = rng.normal(size=(6, 16)) * 3
    x = centres_true[rng.integers(0, 6, size=n)] + rng.normal(size=(n, 16))
    ref_centres, ref_labels = brute_force_dpc(x, clusters, k)
    # small block size so the blocked search over denser tokens crosses many blocks
    out = dpc_knn(x, clusters, k=k, block_size=37)
    assert np.array_equal(out.centres, ref_centres)
    assert np.array_equal(out.labels, ref_labels)
    # centroids are the member means
    for c in range(clusters):
        assert close(out.centroids[c], x[out.labels == c].mean(0))


def _purity(labels, truth):
    total = 0
    for c in np.unique(labels):
        total += np.bincount(truth[labels == c]).max()
    return total / len(truth)


def _planted(seed=7, n_clusters=20, dim=32, n=3000):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 4
    truth = rng.integers(0, n_clusters, size=n)
    return centres[truth] + rng.normal(size=(n, dim)), truth


def test_dpc_knn_recovers_planted_gaussian_clusters():
    x, truth = _planted()
    out = discover_interests(x, ratio=20 / 3000, algorithm="dpc_knn", knn_k=20)
    assert out.centroids.shape == (20, 32)
    assert _purity(out.labels, truth) >= 0.95


def test_kmeans_with_restarts_mostly_recovers_planted_gaussian_clusters():
    # faiss initialises at random, which can merge two planted clusters and split another;
    # restarts keep the run with the lowest objective. DPC-KNN (the default) has no such issue.
    x, truth = _planted()
    single = _purity(kmeans(x, 20, restarts=1).labels, truth)
    several = _purity(kmeans(x, 20, restarts=5).labels, truth)
    assert several >= single
    assert several >= 0.85


def test_approximate_path_agrees_with_exact():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(50, 24)) * 3
    x = centres[rng.integers(0, 50, size=6000)] + rng.normal(size=(6000, 24))
    exact = dpc_knn(x, 50, k=10, approximate_above=10**9)
    approx = dpc_knn(x, 50, k=10, approximate_above=1000)
    assert adjusted_rand_score(exact.labels, approx.labels) >= 0.9


def test_kmeans_uses_every_cluster_and_handles_k_equal_n():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    out = kmeans(x, 50)
    assert len(np.unique(out.labels)) == 50  # empty clusters were re-seeded
    same = kmeans(x, 100)
    assert np.array_equal(np.sort(same.labels), np.arange(100))


def test_num_interests():
    assert num_interests(8770, 0.5) == 4385
    assert num_interests(893950, 0.02) == 17879
    assert num_interests(3, 0.01) == 1
    with pytest.raises(ValueError):
        num_interests(10, 0)


def naive_unique(ids):
    rows = [sorted({int(v) for v in row if v > 0}) for row in ids]
    width = max(1, max(len(r) for r in rows))
    return [r + [0] * (width - len(r)) for r in rows]


def test_vectorised_dedup_equals_naive():
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = rng.integers(0, 12, size=(rng.integers(1, 9), rng.integers(1, 30)))
        assert unique_interests(torch.as_tensor(ids)).tolist() == naive_unique(ids)
    assert unique_interests(torch.zeros(2, 4, dtype=torch.long)).tolist() == [[0], [0]]
