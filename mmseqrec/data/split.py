"""Chronological leave-one-out, as in the UniSRec / MISSRec / RecBole protocol.

For a user with items i_1..i_n (oldest first):
- train: for t = 2..n-2 the row (i_1..i_{t-1}) -> i_t, each history cut to its last ``max_len``
  items; rows are emitted per user from the last target backwards (the order UniSRec writes);
- valid: (i_1..i_{n-2}) -> i_{n-1};
- test:  (i_1..i_{n-1}) -> i_n.
The first item is never a target. Users with fewer than 3 interactions cannot be split and are
rejected (k-core filtering upstream guarantees at least 5).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mmseqrec.data.format import DataFormatError, Examples


def leave_one_out(sequences: Sequence[np.ndarray], max_len: int = 50) -> dict[str, Examples]:
    users: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    histories: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    targets: dict[str, list[int]] = {"train": [], "valid": [], "test": []}

    def emit(split: str, user: int, seq: np.ndarray, t: int) -> None:
        users[split].append(user)
        histories[split].append(seq[max(0, t - max_len) : t])
        targets[split].append(int(seq[t]))

    for user, seq in enumerate(sequences):
        n = len(seq)
        if n < 3:
            raise DataFormatError(f"user {user} has {n} interactions; leave-one-out needs at least 3")
        for t in range(n - 3, 0, -1):  # targets i_{n-2} .. i_2 (0-based positions n-3 .. 1)
            emit("train", user, seq, t)
        emit("valid", user, seq, n - 2)
        emit("test", user, seq, n - 1)
    return {split: Examples.from_lists(users[split], histories[split], targets[split]) for split in users}
