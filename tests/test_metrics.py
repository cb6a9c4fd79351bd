"""Full-ranking metrics against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from mmseqrec.metrics import bucket_breakdown, metrics_from_ranks, popularity_buckets, rank_targets


def ranks_of(scores, targets, block_size=1 << 16, history=None):
    """scores: (B, N+1) including the padding column 0, as a model scoring ids 0..N would."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    targets = torch.as_tensor(targets)
    n = scores.shape[1] - 1
    return rank_targets(lambda a, b: scores[:, a:b], targets, n, block_size=block_size, history=history).tolist()


def test_rank_simple():
    # items 1..4 with scores 0.1 0.9 0.5 0.3; target 3 has one better item (2): rank 2.
    assert ranks_of([[99.0, 0.1, 0.9, 0.5, 0.3]], [3]) == [2]
    assert ranks_of([[99.0, 0.1, 0.9, 0.5, 0.3]], [2]) == [1]
    assert ranks_of([[99.0, 0.1, 0.9, 0.5, 0.3]], [1]) == [4]


def test_padding_is_never_a_candidate():
    # Column 0 (padding) has the highest score; it must not push the target down.
    assert ranks_of([[1e9, 0.2, 0.1]], [1]) == [1]


def test_ties_count_against_the_target():
    # Target 2 ties with items 1 and 3 and is beaten by item 4: rank = 1 + 1 (better) + 2 (ties) = 4.
    assert ranks_of([[0.0, 0.5, 0.5, 0.5, 0.7]], [2]) == [4]
    # All items equal: the target is last.
    assert ranks_of([[0.0, 1.0, 1.0, 1.0]], [1]) == [3]


def test_blocks_give_the_same_ranks():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 101)).round(1)  # rounding creates ties
    targets = rng.integers(1, 101, size=7)
    full = ranks_of(scores, targets)
    for block in (1, 3, 10, 64, 100):
        assert ranks_of(scores, targets, block_size=block) == full
    # brute force reference
    for b in range(7):
        t = targets[b]
        others = np.delete(scores[b, 1:], t - 1)
        assert full[b] == 1 + int((others >= scores[b, t]).sum())


def test_history_masking_removes_history_but_not_the_target():
    scores = [[0.0, 0.9, 0.8, 0.7, 0.6]]
    # target 3; history holds items 1 and 3 (a repeat) and padding.
    history = torch.tensor([[1, 3, 0]])
    assert ranks_of(scores, [3]) == [3]
    assert ranks_of(scores, [3], history=history) == [2]  # item 1 removed, item 3 (target) kept
    assert ranks_of(scores, [3], history=history, block_size=2) == [2]


def test_metrics_hand_computed():
    ranks = [1, 2, 11, 60]
    m = metrics_from_ranks(np.array(ranks), ks=(10, 50))
    assert m["recall@10"] == pytest.approx(2 / 4)
    assert m["recall@50"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 4)
    assert m["ndcg@50"] == pytest.approx((1.0 + 1 / math.log2(3) + 1 / math.log2(12)) / 4)
    assert m["mrr@10"] == pytest.approx((1.0 + 0.5) / 4)


def test_k_larger_than_the_catalogue():
    # 3 items: every rank is <= 3, so Recall@10 = Recall@50 = 1 and NDCG@K is the plain DCG.
    ranks = ranks_of([[0.0, 0.3, 0.2, 0.1], [0.0, 0.3, 0.2, 0.1]], [1, 3])
    assert ranks == [1, 3]
    m = metrics_from_ranks(np.array(ranks))
    assert m["recall@10"] == 1.0 and m["recall@50"] == 1.0
    assert m["ndcg@50"] == pytest.approx((1.0 + 1 / math.log2(4)) / 2)


def test_nan_scores_are_an_error():
    with pytest.raises(FloatingPointError):
        ranks_of([[0.0, float("nan"), 0.1]], [1])


def test_target_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        ranks_of([[0.0, 0.1, 0.2]], [3])


def test_popularity_buckets_split_interactions_in_thirds():
    # item:  1   2   3  4  5  6 (0 = padding)
    counts = np.array([0, 30, 20, 10, 5, 5, 0])
    buckets = popularity_buckets(counts, 3)
    # 70 interactions: item 1 starts at 0 -> head; item 2 starts at 30/70=0.43 -> torso;
    # item 3 at 50/70=0.71 -> tail; the rest tail; padding -1.
    assert buckets.tolist() == [-1, 0, 1, 2, 2, 2, 2]
    out = bucket_breakdown(np.array([1, 5, 20]), np.array([1, 2, 6]), buckets)
    assert out["head"]["recall@10"] == 1.0 and out["torso"]["recall@10"] == 1.0 and out["tail"]["recall@10"] == 0.0
    assert out["tail"]["share"] == pytest.approx(1 / 3)
