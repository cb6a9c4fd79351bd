"""Batches from examples: vectorised gathers from flat arrays, no per-sample Python work.

``SequenceCollator`` turns a list of example indices into the batch dict every model reads:
``item_seq`` (B, L) left-aligned ids with 0 padding on the right, ``item_seq_len``, ``target``,
``user_id`` and ``row`` (the example index, used to check distributed evaluation).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mmseqrec.data.format import Examples


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
