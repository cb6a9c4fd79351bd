"""Batches from examples: vectorised gathers from flat arrays, no per-sample Python work.

``SequenceCollator`` turns a list of example indices into the batch dict every model reads:
``item_seq`` (B, L) left-aligned ids with 0 padding on the right, ``item_seq_len``, ``target``,
``user_id`` and ``row`` (the example index, used to check distributed evaluation). The top-N
track has its own: ``PairBatchSampler`` and ``PairCollator`` (BPR triples), ``HeldOutCollator``
(users with their held-out and masked items).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mmseqrec.data.format import Examples, UserItems


def pad_histories(examples: Examples, rows: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, max_len) histories of ``rows`` keeping each history's most recent ``max_len`` items."""
    ends = examples.history_offsets[rows + 1]
    lengths = np.minimum(ends - examples.history_offsets[rows], max_len)
    starts = ends - lengths
    positions = np.arange(max_len)
    real = positions[None, :] < lengths[:, None]
    index = np.where(real, starts[:, None] + positions[None, :], 0)
    seq = np.where(real, examples.history_values[index] if examples.history_values.size else 0, 0)
    return seq.astype(np.int64), lengths.astype(np.int64)


class ExampleIndex(Dataset):
    """A dataset of example indices; the collator does the actual gathering in one go."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


class SequenceCollator:
    """Collate example indices into next-item batches."""

    def __init__(self, examples: Examples, max_len: int = 50):
        self.examples = examples
        self.max_len = max_len

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        # Pad only to the longest history of this batch: attention cost grows with the square
        # of the padded length, and most histories are far shorter than max_len.
        longest = int(min(self.max_len, self.examples.lengths()[rows].max(initial=1)))
        seq, lengths = pad_histories(self.examples, rows, longest)
        return {
            "item_seq": torch.from_numpy(seq),
            "item_seq_len": torch.from_numpy(lengths),
            "target": torch.from_numpy(self.examples.target[rows]),
            "user_id": torch.from_numpy(self.examples.user_id[rows]),
            "row": torch.from_numpy(rows),
        }


# ---------------------------------------------------------------------------------------------
# The top-N track: (user, positive, negative) triples for training, users with their held-out
# and masked items for evaluation.
# ---------------------------------------------------------------------------------------------


def sample_negatives(train: UserItems, users: np.ndarray, num_items: int, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
    """One item per entry of ``users``, uniform over the items that user has no training
    interaction with (rejection sampling, vectorised: redraw the collisions until none is left).
    A user who has every item gets 0 (never happens on real data; the caller's loss sees it)."""
    negatives = rng.integers(1, num_items + 1, size=users.size)
    todo = np.flatnonzero(train.contains(users, negatives, num_items))
    for _ in range(max_rounds):
        if not todo.size:
            break
        negatives[todo] = rng.integers(1, num_items + 1, size=todo.size)
        todo = todo[train.contains(users[todo], negatives[todo], num_items)]
    if todo.size:  # users who have (nearly) every item: take the first item they do not have
        for k in todo:
            free = np.setdiff1d(np.arange(1, num_items + 1), train.of(int(users[k])), assume_unique=True)
            negatives[k] = free[rng.integers(free.size)] if free.size else 0
    return negatives


class PairBatchSampler:
    """Batches of training pairs (indices into the train split's pairs) with one negative each.

    Every epoch shuffles the pairs and draws each pair's negative item with a generator seeded
    by (seed, epoch), so an epoch's batches and negatives are the same when a run is resumed
    mid-epoch and do not depend on how many batches were skipped; ``PairCollator`` reads the
    negatives drawn here. This is BPR's sampling as MMRec and DiffMM do it: every training
    interaction once per epoch, its negative uniform over the user's non-training items."""

    def __init__(self, train: UserItems, num_items: int, batch_size: int, seed: int):
        self.train = train
        self.users = train.users()
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.negatives = np.zeros(len(train), dtype=np.int64)
        self.sampler = self  # accelerate reaches set_epoch through ``.sampler``
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rng = np.random.default_rng((self.seed, epoch, 1))
        self.negatives = sample_negatives(self.train, self.users, self.num_items, rng)

    def __iter__(self):
        order = np.random.default_rng((self.seed, self.epoch, 0)).permutation(len(self.train))
        for start in range(0, order.size, self.batch_size):
            yield order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return -(-len(self.train) // self.batch_size)


class PairCollator:
    """Collate pair indices into BPR batches: ``user_id``, ``pos_item``, ``neg_item`` (B,) and
    ``row`` (the pair's index in the train split, for error messages)."""

    def __init__(self, sampler: PairBatchSampler):
        self.sampler = sampler

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        return {
            "user_id": torch.from_numpy(self.sampler.users[rows]),
            "pos_item": torch.from_numpy(self.sampler.train.items[rows]),
            "neg_item": torch.from_numpy(self.sampler.negatives[rows]),
            "row": torch.from_numpy(rows),
        }


def padded_sets(split: UserItems, users: np.ndarray, width: int | None = None) -> np.ndarray:
    """(B, width) the items of each of ``users`` in ``split``, left-aligned, 0-padded (width:
    the longest of these users' sets unless given)."""
    counts = split.counts()[users]
    width = int(counts.max(initial=0)) if width is None else width
    positions = np.arange(width)
    real = positions[None, :] < counts[:, None]
    index = np.where(real, split.offsets[users][:, None] + positions[None, :], 0)
    return np.where(real, split.items[index] if split.items.size else 0, 0).astype(np.int64)


class HeldOutCollator:
    """Collate row indices of a top-N evaluation split into ranking batches.

    Row r is the r-th user with at least one held-out item. A batch has ``user_id`` (B,),
    ``targets`` (B, T) the held-out items (0-padded to the split's largest set, so that every
    process gathers tensors of one width), ``seen`` (B, L) the items masked in the ranking
    (training items, and the valid ones when ranking test; 0-padded) and ``row`` (B,)."""

    def __init__(self, held_out: UserItems, masked: list[UserItems]):
        self.held_out = held_out
        self.masked = masked
        self.users = np.flatnonzero(held_out.counts() > 0)
        self.width = int(held_out.counts().max(initial=1))

    def __len__(self) -> int:
        return int(self.users.size)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        users = self.users[rows]
        seen = [padded_sets(split, users) for split in self.masked]
        return {
            "user_id": torch.from_numpy(users),
            "targets": torch.from_numpy(padded_sets(self.held_out, users, self.width)),
            "seen": torch.from_numpy(np.concatenate(seen, axis=1) if seen else np.zeros((users.size, 0), np.int64)),
            "row": torch.from_numpy(rows),
        }
