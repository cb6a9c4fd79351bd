"""The evaluator with several held-out items per user (the top-N track): ranks, MMRec's metric
definitions, and masking that never removes a target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import write_tiny_topn_domain

from mmseqrec.data.batching import HeldOutCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.metrics import TOPN, metrics_from_ranks, ndcg_per_row, per_row_metric, rank_targets


def brute_force_ranks(scores: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Each target's position in the row's list sorted by score, ties broken against the targets
    (other tied items first, then tied targets in column order); masked items out."""
    out = torch.zeros_like(targets)
    for b in range(scores.shape[0]):
        held = [int(t) for t in targets[b] if t > 0]
        candidates = [i for i in range(1, scores.shape[1] + 1) if i not in set(masked[b].tolist()) or i in held]
        # sort key: higher score first; among equal scores non-targets first, then targets by column
        def key(item):
            return (-float(scores[b, item - 1]), item in held, held.index(item) if item in held else 0)
        order = sorted(candidates, key=key)
        for c, t in enumerate(targets[b].tolist()):
            out[b, c] = order.index(t) + 1 if t > 0 else 0
    return out


@pytest.mark.parametrize("sort_columns", [12, 0])  # counted by comparison, and by sorting
@pytest.mark.parametrize("block_size", [1000, 7, 3])
def test_held_out_ranks_match_a_brute_force_ranking_with_ties_and_masks(block_size, sort_columns, monkeypatch):
    monkeypatch.setattr("mmseqrec.metrics.SORT_COLUMNS", sort_columns)
    torch.manual_seed(0)
    n_items = 20
    scores = torch.randint(0, 4, (6, n_items)).float()  # many ties
    targets = torch.tensor([[3, 5, 0], [1, 0, 0], [20, 19, 18], [7, 8, 0], [2, 4, 6], [11, 0, 0]])
    masked = torch.tensor([[1, 2, 0], [4, 5, 6], [0, 0, 0], [9, 10, 11], [3, 5, 7], [12, 13, 0]])
    ranks = rank_targets(lambda first, end: scores[:, first - 1 : end - 1], targets, n_items, block_size=block_size, history=masked)
    assert torch.equal(ranks, brute_force_ranks(scores, targets, masked))
    # T tied targets take T distinct places
    flat = torch.zeros(1, n_items)
    tied = rank_targets(lambda first, end: flat[:, first - 1 : end - 1], torch.tensor([[4, 2, 9]]), n_items)
    assert tied.tolist() == [[18, 19, 20]]


def test_masking_never_removes_a_target():
    """A held-out item that is also listed among the masked items keeps its score."""
    scores = torch.arange(10, 0, -1).float()[None].repeat(2, 1)  # item 1 best, item 10 worst
    targets = torch.tensor([[2, 3], [5, 0]])
    masked = torch.tensor([[1, 2], [1, 5]])  # 2 and 5 are targets: not masked; 1 is masked
    ranks = rank_targets(lambda first, end: scores[:, first - 1 : end - 1], targets, 10, history=masked)
    assert ranks.tolist() == [[1, 2], [4, 0]]


def test_metric_definitions_are_mmrecs():
    # user 0: 3 held-out items at ranks 1, 4, 30; user 1: one at rank 2
    ranks = np.array([[1, 4, 30], [2, 0, 0]])
    ideal3 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert per_row_metric(ranks, "recall", 10).tolist() == pytest.approx([2 / 3, 1.0])
    assert per_row_metric(ranks, "precision", 10).tolist() == pytest.approx([0.2, 0.1])
    assert ndcg_per_row(ranks, 10).tolist() == pytest.approx([(1 + 1 / np.log2(5)) / ideal3, 1 / np.log2(3)])
    # the ideal DCG covers min(held-out, K) hits: with K = 2, user 0 can at most fill 2 places
    assert ndcg_per_row(ranks, 2).tolist() == pytest.approx([1 / (1 + 1 / np.log2(3)), 1 / np.log2(3)])
    metrics = metrics_from_ranks(ranks, TOPN.ks, TOPN.metrics)
    assert set(metrics) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision") for k in (10, 20, 50)}
    assert metrics["recall@50"] == pytest.approx(1.0) and metrics["precision@20"] == pytest.approx((2 / 20 + 1 / 20) / 2)


def test_one_held_out_item_per_row_gives_the_sequential_metrics():
    ranks = np.array([1, 3, 12, 60, 7])
    one_column = ranks[:, None]
    assert metrics_from_ranks(one_column, (10, 50)) == pytest.approx(metrics_from_ranks(ranks, (10, 50)))
    assert ndcg_per_row(one_column, 10).tolist() == pytest.approx(ndcg_per_row(ranks, 10).tolist())


def test_evaluation_batches_mask_training_items_and_never_a_target(tmp_path):
    domain = load_domain(write_tiny_topn_domain(tmp_path))
    topn = domain.topn
    for split, masked in (("valid", [topn["train"]]), ("test", [topn["train"], topn["valid"]])):
        collator = HeldOutCollator(topn[split], masked)
        batch = collator(list(range(len(collator))))
        assert len(collator) == int((topn[split].counts() > 0).sum())
        for row, user in enumerate(batch["user_id"].tolist()):
            targets = set(batch["targets"][row].tolist()) - {0}
            seen = set(batch["seen"][row].tolist()) - {0}
            assert targets == set(topn[split].of(user).tolist())
            assert seen == set().union(*(set(part.of(user).tolist()) for part in masked))
            assert not targets & seen
        # a model that scores every seen item highest: masking removes them, every target ranks right after
        scores = torch.zeros(len(collator), domain.num_items)
        rows = torch.arange(len(collator))[:, None].expand_as(batch["seen"])
        real = batch["seen"] > 0
        scores[rows[real], batch["seen"][real] - 1] = 10.0
        scores[rows.new_tensor(range(len(collator)))[:, None].expand_as(batch["targets"])[batch["targets"] > 0],
               batch["targets"][batch["targets"] > 0] - 1] = 5.0
        ranks = rank_targets(lambda f, e: scores[:, f - 1 : e - 1], batch["targets"], domain.num_items, history=batch["seen"])
        held = (batch["targets"] > 0).sum(dim=1)
        assert bool(((ranks <= held[:, None]) | (batch["targets"] == 0)).all())
