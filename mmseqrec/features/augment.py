"""The offline word-drop augmentation of item texts (UniSRec's ``feat2CLS``, MISSRec's ``text_aug``).

The text is split on single spaces; each piece is kept independently with probability
``1 - ratio`` and the kept pieces are re-joined with single spaces. One fixed sample per item is
computed offline and encoded with the same text encoder as the plain text.

Differences from the reference script, on purpose:
- The sample is seeded, per item: the random generator of item i is seeded with ``(seed, i)``, so
  the augmented text of an item does not depend on the batch size, the order of extraction, or an
  interruption, and the seed is recorded in the manifest.
- When every piece would be dropped, one randomly chosen piece is kept (the reference encodes an
  empty string, whose vector carries no information about the item).
"""

from __future__ import annotations

import numpy as np

#: UniSRec's ``--word_drop_ratio`` for the pretraining domains.
DEFAULT_WORD_DROP_RATIO = 0.15


def word_drop(text: str, ratio: float, seed: int, item_id: int) -> str:
    """The word-dropped text of one item (deterministic in ``seed`` and ``item_id``)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"word-drop ratio must be in [0, 1), got {ratio}")
    pieces = text.split(" ")
    rng = np.random.default_rng([int(seed), int(item_id)])
    keep = rng.random(len(pieces)) >= ratio
    if not keep.any():
        keep[int(rng.integers(len(pieces)))] = True
    return " ".join(piece for piece, kept in zip(pieces, keep) if kept)
