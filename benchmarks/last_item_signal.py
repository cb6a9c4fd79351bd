"""How much of a domain's valid and test signal sits in the last history item, and how much of it
each trained model uses.

    python benchmarks/last_item_signal.py --domain Scientific [RUN_FOLDER ...]

Prints, for valid and test:
- a count-based baseline that ranks items by how often they were adjacent to the row's last
  history item in the training rows (a training row's last history item and its target, both
  directions; ties broken by training popularity). It learns nothing but first-order
  transitions, so its score is how much of the split a last-item model can get;
- for each finished run (a folder ``finetune`` wrote): NDCG@10 as evaluated, NDCG@10 with the
  last history item removed from every row (rows with a single item keep it), and the share of
  NDCG@10 lost: how much the model's ranking relies on that item.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import scipy.sparse
import torch

from mmseqrec.inference import load_pretrained
from mmseqrec.data.format import Examples
from mmseqrec.data.loading import load_domain
from mmseqrec.metrics import metrics_from_ranks, rank_targets
from mmseqrec.training import evaluate, make_accelerator, make_loader


def adjacency_counts(train: Examples, num_items: int) -> scipy.sparse.csr_matrix:
    """Sparse (N+1, N+1): how often two items were (last history item, target) of a training row,
    either way round."""
    has_history = train.lengths() > 0
    last = train.history_values[train.history_offsets[1:][has_history] - 1]
    target = train.target[has_history]
    pairs = (np.concatenate([last, target]), np.concatenate([target, last]))
    ones = np.ones(pairs[0].shape[0])
    # Duplicate (row, column) entries are summed when converting to CSR.
    return scipy.sparse.coo_matrix((ones, pairs), shape=(num_items + 1, num_items + 1)).tocsr()


def last_item_baseline_ndcg(domain, counts: scipy.sparse.csr_matrix, split: str) -> float:
    train = domain.splits["train"]
    popularity = np.bincount(train.target, minlength=domain.num_items + 1).astype(np.float64)
    # Popularity only breaks ties: it is scaled below the smallest count difference (1).
    tie_break = popularity / (popularity.max() + 1.0)
    examples = domain.splits[split]
    last = examples.history_values[examples.history_offsets[1:] - 1]
    ranks = []
    for start in range(0, len(examples), 1024):  # dense scores for 1,024 rows at a time
        rows = slice(start, start + 1024)
        scores = torch.from_numpy(counts[last[rows]].toarray() + tie_break[None, :])
        targets = torch.from_numpy(examples.target[rows])
        ranks.append(rank_targets(lambda first, end: scores[:, first:end], targets, domain.num_items).numpy())
    return metrics_from_ranks(np.concatenate(ranks))["ndcg@10"]


def without_last_item(examples: Examples) -> Examples:
    """The same rows with each history's newest item removed (a one-item history is kept whole)."""
    histories = [examples.history(r) for r in range(len(examples))]
    histories = [h[:-1] if len(h) > 1 else h for h in histories]
    return Examples.from_lists(examples.user_id, histories, examples.target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("runs", nargs="*")
    args = parser.parse_args()
    accelerator = make_accelerator(cpu=True)
    domain = load_domain(args.domain, data_dir=args.data_dir)
    shortened = copy.copy(domain)
    shortened.splits = {**domain.splits, **{s: without_last_item(domain.splits[s]) for s in ("valid", "test")}}

    print("| run | valid N@10 | without last item | loss | test N@10 | without last item | loss |")
    print("|---|---|---|---|---|---|---|")
    counts = adjacency_counts(domain.splits["train"], domain.num_items)
    baseline = [last_item_baseline_ndcg(domain, counts, s) for s in ("valid", "test")]
    print(f"| last-item adjacency counts (no training) | {baseline[0]:.4f} | - | - | {baseline[1]:.4f} | - | - |")
    for run in args.runs:
        model = load_pretrained(run)
        model.attach_domain(domain)
        model.eval()
        cells = []
        for split in ("valid", "test"):
            whole, shorter = (
                evaluate(model, make_loader(data, split, 1024, 50, False, 0), accelerator, domain.num_items)["metrics"]["ndcg@10"]
                for data in (domain, shortened)
            )
            cells += [f"{whole:.4f}", f"{shorter:.4f}", f"{1 - shorter / whole:.0%}"]
        print(f"| {run} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
