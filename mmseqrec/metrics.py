"""Full-ranking evaluation: the rank of each target among all items, then Recall/NDCG/MRR@K.

Protocol (the one UniSRec, MISSRec and RecBole's sequential models use):
- one target per user (leave-one-out), ranked against every item 1..N; no sampled negatives;
- padding (id 0) is never a candidate;
- items already in the history are *not* removed by default; ``mask_history=True`` removes them
  (the target itself is never removed);
- ties are broken against the target: its rank is 1 + (items scoring higher) + (other items
  scoring exactly the same). A model that gives every item the same score therefore gets the
  worst rank, not the best, which keeps popularity baselines with many equal counts honest.

Ranks are computed on the scores' device, over the catalogue in blocks of items, so the memory
needed is (batch x block) and not (batch x catalogue) for very large catalogues.

The general top-N track (``TOPN``: LightGCN, VBPR, ... on per-user item splits) goes through the
same functions with several held-out items per user: targets are (B, T), 0-padded, and every
target gets its rank in the one ranking of the user, ties against the targets (tied other items
first, then tied targets in column order). The user's training items (and, for test, valid
items) are masked, never a target. Its metrics follow MMRec's definitions, per user, averaged
over the users with at least one held-out item:
- Recall@K = hits in the top K / number of held-out items;
- Precision@K = hits / K;
- NDCG@K = sum over hits of 1/log2(rank + 1), divided by the ideal DCG of min(held-out, K) hits.
With one target per row these are the sequential definitions (Recall = hit rate, IDCG = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

DEFAULT_KS: tuple[int, ...] = (10, 50)
METRIC_NAMES = ("recall", "ndcg", "mrr")


@dataclass(frozen=True)
class Protocol:
    """How a track is evaluated: the cut-offs, the metrics, the valid metric early stopping
    reads, and the per-user score the paired bootstrap compares (NDCG at ``paired_k``)."""

    track: str
    ks: tuple[int, ...]
    metrics: tuple[str, ...]
    valid_metric: str
    paired_k: int


#: Next item after a history, leave-one-out; the papers' K and NDCG@10 for early stopping.
SEQUENTIAL = Protocol("sequential", DEFAULT_KS, METRIC_NAMES, "ndcg@10", 10)
#: Held-out item sets of a per-user split, training items masked; MMRec's K, its default valid
#: metric (Recall@20) and the @20 cut-off DiffMM and MMRec report.
TOPN = Protocol("topn", (10, 20, 50), ("recall", "ndcg", "precision"), "recall@20", 20)
PROTOCOLS = {protocol.track: protocol for protocol in (SEQUENTIAL, TOPN)}

#: Held-out ranking: up to this many held-out items per row on average are counted by
#: comparison, more by sorting each row once.
SORT_COLUMNS = 12

ScoreBlockFn = Callable[[int, int], torch.Tensor]  # (first_id, end_id) -> (B, end_id - first_id) scores


def mask_items(block: torch.Tensor, items: torch.Tensor, start: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of the score block of items ``start .. start + width - 1`` with the scores of each
    row's ``items`` (B, L), 0 = padding, set to -inf, except each row's ``keep`` item(s): a
    target (B,) or held-out items (B, T), which are never masked away."""
    width = block.shape[1]
    local = items - start
    inside = (items > 0) & (local >= 0) & (local < width)
    if keep is not None:
        keep = keep[:, None] if keep.dim() == 1 else keep
        inside &= ~(items[:, :, None] == keep[:, None, :]).any(dim=2)
    rows = torch.arange(items.shape[0], device=block.device)[:, None].expand_as(items)
    block = block.clone()
    block[rows[inside], local[inside]] = float("-inf")
    return block


@torch.no_grad()
def rank_targets(
    score_block: ScoreBlockFn,
    targets: torch.Tensor,
    num_items: int,
    block_size: int = 1 << 16,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """The 1-based rank of every target among items 1..num_items.

    Args:
        score_block: returns the scores of items ``first_id .. end_id-1`` for every row.
        targets: (B,) target item ids in 1..num_items; or (B, T) held-out items per row, 0 =
            padding (the top-N track), whose ranks are (B, T) with 0 for padding.
        num_items: N, the catalogue size without padding.
        block_size: items scored at once. With one block the scores are computed once; with
            several, twice (one pass to read the targets' scores, one to count).
        history: (B, L) item ids (0 = padding) to exclude from the ranking, or None. Targets
            are never excluded.
    """
    if targets.dim() == 2:
        return _rank_held_out(score_block, targets, num_items, block_size, history)
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > num_items):
        raise ValueError(f"targets must lie in 1..{num_items}")
    blocks = [(s, min(s + block_size, num_items + 1)) for s in range(1, num_items + 1, block_size)]
    rows = torch.arange(targets.shape[0], device=targets.device)

    def scores_of(start: int, end: int) -> torch.Tensor:
        block = _checked_block(score_block(start, end), targets.shape[0], start, end)
        if history is not None:
            block = mask_items(block, history, start, keep=targets)
        return block

    cached = scores_of(*blocks[0]) if len(blocks) == 1 else None
    if cached is not None:
        target_scores = cached[rows, targets - 1]
    else:
        target_scores = torch.empty(targets.shape[0], device=targets.device)
        for start, end in blocks:
            block = scores_of(start, end)
            inside = (targets >= start) & (targets < end)
            target_scores[inside] = block[rows[inside], targets[inside] - start]

    # rank = 1 + (higher) + (ties other than the target); the target ties with itself exactly
    # once, so counting ">=" over every item gives the same number.
    rank = torch.zeros_like(targets)
    for start, end in blocks:
        block = cached if cached is not None else scores_of(start, end)
        rank += (block >= target_scores[:, None]).sum(dim=1)
    return rank


def _rank_held_out(
    score_block: ScoreBlockFn, targets: torch.Tensor, num_items: int, block_size: int, history: torch.Tensor | None
) -> torch.Tensor:
    """``rank_targets`` for (B, T) held-out items, 0 = padding: each target's position in the
    row's one ranking, ties against the targets (tied other items before it, and tied targets
    before it in column order), so that T targets with equal scores take T distinct places."""
    real = targets > 0
    if bool((targets[real] > num_items).any()) or bool((targets < 0).any()):
        raise ValueError(f"held-out items must lie in 1..{num_items} (0 = padding)")
    blocks = [(s, min(s + block_size, num_items + 1)) for s in range(1, num_items + 1, block_size)]
    rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)

    def scores_of(start: int, end: int) -> torch.Tensor:
        block = _checked_block(score_block(start, end), targets.shape[0], start, end)
        return mask_items(block, history, start, keep=targets) if history is not None else block

    cached = scores_of(*blocks[0]) if len(blocks) == 1 else None
    target_scores = torch.zeros(targets.shape, device=targets.device)
    for start, end in blocks:
        block = cached if cached is not None else scores_of(start, end)
        inside = real & (targets >= start) & (targets < end)
        target_scores[inside] = block[rows[inside], targets[inside] - start]
    # Items scoring at least as high as each target. With few held-out items per row (the usual
    # case), one comparison of the row's scores per held-out item, skipping the padding; with
    # many, a sorted row answers for all of them with one binary search each (a sort costs
    # about as much as SORT_COLUMNS comparisons of the row).
    at_least = torch.zeros(targets.shape, dtype=torch.long, device=targets.device)
    by_sorting = int(real.sum()) > SORT_COLUMNS * targets.shape[0]
    for start, end in blocks:
        block = cached if cached is not None else scores_of(start, end)
        if by_sorting:
            ordered = block.sort(dim=1).values
            at_least += block.shape[1] - torch.searchsorted(ordered, target_scores.contiguous(), side="left")
            continue
        for column in range(targets.shape[1]):
            rows = torch.nonzero(real[:, column], as_tuple=True)[0]
            if rows.numel():
                at_least[rows, column] += (block[rows] >= target_scores[rows, column : column + 1]).sum(dim=1)
    # That count includes every target tied with this one; those after it in column order come
    # after it in the ranking, so they are taken off.
    tied = (target_scores[:, :, None] == target_scores[:, None, :]) & real[:, None, :]
    later = torch.ones(targets.shape[1], targets.shape[1], dtype=torch.bool, device=targets.device).triu(1)
    rank = at_least - (tied & later[None]).sum(dim=2)
    return torch.where(real, rank, torch.zeros_like(rank))


def _checked_block(block: torch.Tensor, rows: int, start: int, end: int) -> torch.Tensor:
    """The score block of items ``start .. end-1`` as float32, checked for shape and NaN."""
    block = block.float()
    if block.shape != (rows, end - start):
        raise ValueError(f"score block for items {start}..{end - 1} has shape {tuple(block.shape)}")
    if torch.isnan(block).any():
        raise FloatingPointError("the model produced NaN scores during evaluation")
    return block


def _best_columns(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best columns of every row, best first, ties broken by column order.

    ``torch.topk`` alone would pick arbitrarily among items tied at the k-th score (MostPop ties
    often); here every column above the k-th score is kept, then the first tied columns, so
    the result is reproducible. Callers lay columns out in ascending item id among equal scores,
    so ties go to the lower id."""
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    chosen = above | (tied & (tied.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
    columns = chosen.nonzero()[:, 1].view(scores.shape[0], k)  # row-major: ascending columns per row
    picked, picked_ids = scores.gather(1, columns), ids.gather(1, columns)
    order = picked.sort(dim=1, descending=True, stable=True).indices
    return picked.gather(1, order), picked_ids.gather(1, order)


@torch.no_grad()
def top_items(
    score_block: ScoreBlockFn,
    num_items: int,
    k: int,
    block_size: int = 1 << 16,
    exclude: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest-scoring items of every row among items 1..num_items, best first.

    Args:
        score_block: as for ``rank_targets``.
        num_items: N.
        k: how many (at most N).
        block_size: items scored at once (memory is batch x (block + k)).
        exclude: (B, L) item ids (0 = padding) that a row must not get (items already seen).
        allowed: (B, N) bool, column j = item j+1: the only items a row may get (candidates).

    Returns (scores, ids), each (B, k). Ties go to the lower item id. Items excluded, not
    allowed or without a representation score -inf; a row with fewer than k other items is
    filled with them, so callers drop the -inf entries.
    """
    if not 1 <= k <= num_items:
        raise ValueError(f"k must lie in 1..{num_items}, got {k}")
    best_scores = best_ids = None
    for start in range(1, num_items + 1, block_size):
        end = min(start + block_size, num_items + 1)
        raw = score_block(start, end)
        rows = raw.shape[0]
        block = _checked_block(raw, rows, start, end)
        if exclude is not None:
            block = mask_items(block, exclude, start)
        if allowed is not None:
            block = block.masked_fill(~allowed[:, start - 1 : end - 1], float("-inf"))
        ids = torch.arange(start, end, device=block.device).expand(rows, -1)
        if best_scores is not None:  # the best so far have lower ids than this block: ties keep them first
            block, ids = torch.cat([best_scores, block], dim=1), torch.cat([best_ids, ids], dim=1)
        best_scores, best_ids = _best_columns(block, ids, min(k, block.shape[1]))
    return best_scores, best_ids


@torch.no_grad()
def top_candidates(
    scores: torch.Tensor, ids: torch.Tensor, k: int, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``top_items`` over per-row candidate lists: the ``k`` best of ``scores`` (B, C), the
    scores of items ``ids`` (B, C) laid out in ascending id order, 0 = padding (never chosen).
    ``exclude`` (B, L) as in ``top_items``. Returns (B, k) scores and ids, -inf / 0 where a row
    has fewer than k candidates; ties go to the lower item id."""
    block = _checked_block(scores, ids.shape[0], 0, ids.shape[1])
    block = block.masked_fill(ids == 0, float("-inf"))
    if exclude is not None:
        seen = ((ids[:, :, None] == exclude[:, None, :]) & (exclude[:, None, :] > 0)).any(dim=2)
        block = block.masked_fill(seen, float("-inf"))
    width = min(k, block.shape[1])
    best_scores, best_ids = _best_columns(block, ids, width) if width else (block[:, :0], ids[:, :0])
    if width < k:  # fewer candidates than asked for: pad as top_items pads a small catalogue
        pad = k - width
        best_scores = torch.cat([best_scores, best_scores.new_full((ids.shape[0], pad), float("-inf"))], dim=1)
        best_ids = torch.cat([best_ids, best_ids.new_zeros((ids.shape[0], pad))], dim=1)
    return best_scores, torch.where(torch.isinf(best_scores) & (best_scores < 0), torch.zeros_like(best_ids), best_ids)


def ndcg_per_row(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each row from its targets' 1-based ranks: (R,) one target per row
    (1/log2(rank+1)), or (R, T) held-out items with 0 = padding (DCG over the hits divided by
    the ideal DCG of min(held-out, k) hits)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim == 1:
        return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
    real = ranks > 0
    dcg = np.where(real & (ranks <= k), 1.0 / np.log2(np.maximum(ranks, 1.0) + 1.0), 0.0).sum(axis=1)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # ideal[n-1]: n hits at the top
    held = np.minimum(real.sum(axis=1), k)
    return dcg / ideal[np.maximum(held, 1) - 1]


def per_row_metric(ranks: np.ndarray, metric: str, k: int) -> np.ndarray:
    """One metric@k of every row, from (R,) ranks of one target each or (R, T) 0-padded ranks of
    several (the definitions in the module docstring)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if metric == "ndcg":
        return ndcg_per_row(ranks, k)
    grid = ranks[:, None] if ranks.ndim == 1 else ranks
    real = grid > 0
    hit = real & (grid <= k)
    if metric == "recall":
        return hit.sum(axis=1) / real.sum(axis=1)
    if metric == "precision":
        return hit.sum(axis=1) / k
    if metric == "mrr":  # the reciprocal rank of the first hit
        return np.where(hit, 1.0 / np.maximum(grid, 1.0), 0.0).max(axis=1)
    raise ValueError(f"unknown metric '{metric}'; expected recall, ndcg, precision or mrr")


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray, ks: Sequence[int] = DEFAULT_KS, names: Sequence[str] = METRIC_NAMES) -> dict[str, float]:
    """``names``@K averaged over rows, for every K of ``ks``: by default Recall@K (= hit rate,
    one target per row), NDCG@K and MRR@K. ``ranks`` (R,) holds one target's rank per row,
    (R, T) several held-out items' ranks, 0 = padding (``rank_targets``)."""
    ranks_np = ranks.detach().cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks)
    ranks_np = ranks_np.astype(np.float64)
    if ranks_np.shape[0] == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in names}
    if ranks_np.ndim == 1 and ranks_np.min() < 1:
        raise ValueError("ranks are 1-based")
    if ranks_np.ndim == 2 and (ranks_np.min() < 0 or not (ranks_np > 0).any(axis=1).all()):
        raise ValueError("held-out ranks are 1-based with 0 for padding, and every row needs at least one held-out item")
    return {f"{m}@{k}": float(per_row_metric(ranks_np, m, k).mean()) for k in ks for m in names}


def popularity_buckets(train_counts: np.ndarray, n_buckets: int = 3) -> np.ndarray:
    """Bucket every item id (0..N) by training popularity into equal shares of interactions.

    Items are sorted from most to least popular; bucket 0 ("head") holds the most popular items
    that together account for the first 1/n_buckets of training interactions, and so on; the last
    bucket ("tail") also holds items never seen in training. Padding gets -1.
    """
    counts = np.asarray(train_counts, dtype=np.float64).copy()
    counts[0] = 0
    order = np.argsort(-counts[1:], kind="stable") + 1
    total = counts.sum()
    buckets = np.full(counts.shape[0], n_buckets - 1, dtype=np.int64)
    if total > 0:
        cumulative = np.cumsum(counts[order]) - counts[order]  # interactions before this item
        buckets[order] = np.minimum((cumulative / total * n_buckets).astype(np.int64), n_buckets - 1)
    buckets[0] = -1
    return buckets


BUCKET_NAMES = {3: ("head", "torso", "tail")}


def bucket_breakdown(
    ranks: np.ndarray, targets: np.ndarray, buckets: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Metrics per popularity bucket of the target item, with the share of rows in each."""
    n_buckets = int(buckets.max()) + 1
    names = BUCKET_NAMES.get(n_buckets, tuple(f"bucket{b}" for b in range(n_buckets)))
    target_bucket = buckets[np.asarray(targets)]
    out = {}
    for b in range(n_buckets):
        selected = target_bucket == b
        entry = metrics_from_ranks(np.asarray(ranks)[selected], ks) if selected.any() else {}
        entry["share"] = float(selected.mean()) if len(selected) else 0.0
        out[names[b]] = entry
    return out
