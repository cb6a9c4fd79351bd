"""Is one model really ahead of another on a domain? A paired bootstrap over users.

Every model of a domain ranks the same leave-one-out targets, so two models can be compared user
by user: a user's score in a group of runs (the seeds of one configuration) is their NDCG@10
averaged over the runs, and the mean difference between two groups is resampled over the users.
The 95% percentile interval of the resampled means says how much of a difference the luck of
which targets the test users happen to have can produce; seeds average out training noise, not
that. On a domain with a few hundred users the interval is often as wide as the differences
between models.

Every finished run writes its per-row ranks (``ranks.npz``, valid and test, in the split's row
order), so that comparing runs never needs them re-evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mmseqrec.metrics import ndcg_per_row

RANKS_FILE = "ranks.npz"


def save_ranks(run_dir: Path, ranks: Mapping[str, np.ndarray]) -> None:
    """Write ``{split: (rows,) 1-based ranks in row order}`` to ``run_dir/ranks.npz`` atomically."""
    target = Path(run_dir) / RANKS_FILE
    tmp = target.with_name(f".{RANKS_FILE}.tmp-{os.getpid()}.npz")
    np.savez_compressed(tmp, **{split: np.asarray(r, dtype=np.int64) for split, r in ranks.items()})
    os.replace(tmp, target)


def load_ranks(run_dir: Path, split: str) -> np.ndarray:
    """The saved per-row ranks of one split of a finished run."""
    path = Path(run_dir) / RANKS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: runs finished before this version saved no per-row ranks; rerun them")
    with np.load(path) as saved:
        if split not in saved:
            raise ValueError(f"{path} has no '{split}' ranks (it has {', '.join(saved.files)})")
        return saved[split]


def group_scores(run_dirs: Sequence[Path], split: str = "test", k: int = 10) -> np.ndarray:
    """(rows,) NDCG@k of each user averaged over the runs of one group."""
    per_run = [ndcg_per_row(load_ranks(run, split), k) for run in run_dirs]
    sizes = {len(scores) for scores in per_run}
    if len(sizes) != 1:
        raise ValueError(f"runs {', '.join(map(str, run_dirs))} evaluated different numbers of users ({sorted(sizes)})")
    return np.mean(per_run, axis=0)


@dataclass(frozen=True)
class PairedDifference:
    """mean(a) - mean(b) over the users, its 95% bootstrap interval and P(a > b) under resampling."""

    difference: float
    low: float
    high: float
    share_ahead: float

    def format(self) -> str:
        return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 5000, seed: int = 0, chunk: int = 500) -> PairedDifference:
    """Resample the users (with replacement) ``resamples`` times; the same users for both groups."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores must be two equal, non-empty vectors, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):  # chunks bound the (chunk x users) index matrix
        count = min(chunk, resamples - start)
        means[start : start + count] = diff[rng.integers(0, diff.size, (count, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(float(diff.mean()), float(low), float(high), float((means > 0).mean()))


def differences_to_best(groups: Mapping[str, Sequence[Path]], split: str = "test", k: int = 10, resamples: int = 5000, seed: int = 0) -> dict[str, PairedDifference | None]:
    """For each group (label -> run folders), its paired difference to the group with the best
    mean NDCG@k on ``split``; None for the best group itself."""
    scores = {label: group_scores(runs, split, k) for label, runs in groups.items()}
    best = max(scores, key=lambda label: scores[label].mean())
    return {label: None if label == best else paired_bootstrap(values, scores[best], resamples, seed) for label, values in scores.items()}
