"""Interaction filters shared by the source importers.

So far there is one: the iterative k-core, the usual filter behind the Amazon benchmarks (a
"5-core" keeps only users and items with at least five interactions each).
"""

from __future__ import annotations

import numpy as np

__all__ = ["iterative_kcore"]


def _dense_codes(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary ids (ints, strings, ...) to codes 0..K-1, so that counting is a bincount."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu" and ids.size and ids.min() >= 0 and ids.max() < 4 * ids.size + 1024:
        # Already small non-negative integers: use them directly and skip the sort in np.unique.
        return ids.astype(np.int64, copy=False), int(ids.max()) + 1
    uniques, codes = np.unique(ids, return_inverse=True)
    return codes.reshape(-1).astype(np.int64, copy=False), len(uniques)


def iterative_kcore(user_ids: np.ndarray, item_ids: np.ndarray, k_user: int = 5, k_item: int = 5) -> np.ndarray:
    """Which interactions survive the iterative (k_user, k_item)-core.

    Repeatedly drops every interaction of a user with fewer than ``k_user`` interactions and of
    an item with fewer than ``k_item`` interactions, until nothing changes. One removal pass can
    push other users or items below their threshold, which is why a single pass is not enough;
    the fixed point is the largest sub-set of interactions in which every remaining user and item
    meets its threshold (it is unique, so the order of removals does not matter).

    Interactions are counted as rows: a user who consumes the same item twice has two
    interactions with it. Each pass is a pair of ``np.bincount`` calls, so the cost is
    O(passes x interactions) with no Python loop over rows; passes are usually a handful.

    Args:
        user_ids: (R,) user of every interaction; any dtype ``np.unique`` can sort.
        item_ids: (R,) item of every interaction, aligned with ``user_ids``.
        k_user: minimum interactions per kept user (``<= 1`` disables the user side).
        k_item: minimum interactions per kept item (``<= 1`` disables the item side).

    Returns:
        A boolean (R,) mask, True for the interactions to keep. Apply it to both arrays (and to
        any other per-interaction column, such as timestamps or positions).
    """
    user_ids = np.asarray(user_ids)
    item_ids = np.asarray(item_ids)
    if user_ids.shape != item_ids.shape or user_ids.ndim != 1:
        raise ValueError(f"user_ids and item_ids must be 1-d and aligned, got {user_ids.shape} and {item_ids.shape}")
    users, n_users = _dense_codes(user_ids)
    items, n_items = _dense_codes(item_ids)
    keep = np.ones(users.shape[0], dtype=bool)
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        # An interaction stays when both of its ends still meet their thresholds.
        still = keep & (user_count[users] >= k_user) & (item_count[items] >= k_item)
        if np.array_equal(still, keep):
            return keep
        keep = still
