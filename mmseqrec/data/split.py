"""Splits of users' sequences: chronological leave-one-out (sequential track), and per-user
train / valid / test item sets (top-N track, ``per_user_split``).

Chronological leave-one-out, as in the UniSRec / MISSRec / RecBole protocol.

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

from mmseqrec.data.format import DataFormatError, Examples, UserItems


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


#: The rules ``per_user_split`` knows.
SPLIT_RULES = ("random", "chronological")


def per_user_split(
    sequences: Sequence[np.ndarray], rule: str = "random", ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[dict[str, UserItems], dict]:
    """Each user's distinct items divided into train / valid / test sets (the top-N track).

    A user's items are deduplicated first (the first interaction with an item counts: an item
    met again is not a new item to recommend, and with training items masked in ranking it
    could never be found). With n distinct items, valid and test get ``max(1, floor(n x
    ratio))`` items each and train the rest, as MMRec's 80/10/10 split gives users with fewer
    than ten items one valid and one test item. ``random`` draws the held-out items uniformly
    (one generator seeded with ``seed``, users in id order); ``chronological`` holds out the
    user's newest items: test the last, valid the ones before. Users with fewer than 3 distinct
    items keep them all in train (they are trained on, never evaluated).

    Returns the splits and a record of the rule for the manifest.
    """
    if rule not in SPLIT_RULES:
        raise ValueError(f"unknown split rule '{rule}'; expected one of {', '.join(SPLIT_RULES)}")
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ValueError(f"ratios must be three positive shares (train, valid, test), got {list(ratios)}")
    total = float(sum(ratios))
    share_valid, share_test = ratios[1] / total, ratios[2] / total
    rng = np.random.default_rng(seed)
    users = {split: [] for split in ("train", "valid", "test")}
    items = {split: [] for split in ("train", "valid", "test")}
    train_only = 0
    for user, sequence in enumerate(sequences):
        sequence = np.asarray(sequence, dtype=np.int64)
        _, first = np.unique(sequence, return_index=True)
        distinct = sequence[np.sort(first)]  # chronological order of first interactions
        n = distinct.size
        if n < 3:
            parts = {"train": distinct, "valid": distinct[:0], "test": distinct[:0]}
            train_only += 1
        else:
            n_valid, n_test = max(1, int(n * share_valid)), max(1, int(n * share_test))
            ordered = distinct if rule == "chronological" else distinct[rng.permutation(n)]
            cut = n - n_valid - n_test
            parts = {"train": ordered[:cut], "valid": ordered[cut : cut + n_valid], "test": ordered[cut + n_valid :]}
        for split, chosen in parts.items():
            users[split].append(np.full(chosen.size, user, dtype=np.int64))
            items[split].append(chosen)
    splits = {
        split: UserItems.from_pairs(np.concatenate(users[split] or [np.zeros(0, np.int64)]), np.concatenate(items[split] or [np.zeros(0, np.int64)]), len(sequences))
        for split in users
    }
    record = {
        "split": f"per-user {rule} {':'.join(f'{r:g}' for r in ratios)}",
        "rule": rule,
        "ratios": [float(r) for r in ratios],
        "seed": seed if rule == "random" else None,
        "held_out": "valid and test get max(1, floor(n x share)) of a user's n distinct items each; users with fewer than 3 distinct items are train-only",
        "deduplicated": "a user's repeated interactions with an item count once (the first)",
        "train_only_users": train_only,
    }
    return splits, record
