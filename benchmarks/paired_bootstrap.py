"""Is one group of runs really better than another on a domain? A paired bootstrap over users.

(``mmseqrec compare`` and ``finetune`` now put each row's paired difference to the best row in
their tables, from the ranks every run saves. This script compares runs from separate commands,
and re-evaluates them, so it also works on runs that finished before ranks were saved.)

    python benchmarks/paired_bootstrap.py --domain syn-Office --a RUN ... --b RUN ... [--splits valid,test]

Each group is a set of finished ``finetune`` run folders (``config.yaml`` and ``best/``), usually
the seeds of one configuration. Every run is re-evaluated on the split; a user's score in a group
is their NDCG@10 averaged over the group's runs, and the difference A - B is resampled over users
(the same users for both groups, since every model ranks the same leave-one-out targets).

Printed per split: both group means, the mean difference, its 95% percentile interval and the
share of resamples in which A is ahead. Seeds average out training noise, not the luck of which
targets the test users happen to have; the interval is about the latter, which on a small domain
(a few hundred users) is as wide as the differences between models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from mmseqrec.inference import load_pretrained
from mmseqrec.data.loading import load_domain
from mmseqrec.metrics import ndcg_per_row
from mmseqrec.significance import paired_bootstrap
from mmseqrec.training import evaluate, make_accelerator, make_loader


def per_user_ndcg(run: str, domain, splits: list[str], accelerator, k: int = 10) -> dict[str, np.ndarray]:
    """{split: (rows,) NDCG@k of one run, in the split's row order}; the run is loaded once."""
    max_len = int(yaml.safe_load((Path(run) / "config.yaml").read_text())["train"]["max_len"])
    model = load_pretrained(run)
    model.attach_domain(domain)
    model.eval()
    scores = {}
    for split in splits:
        result = evaluate(model, make_loader(domain, split, 1024, max_len, False, 0), accelerator, domain.num_items)
        ranks = np.empty(len(domain.splits[split]), dtype=np.int64)
        ranks[result["rows"]] = result["ranks"]  # evaluate may return rows out of order
        scores[split] = ndcg_per_row(ranks, k)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--a", nargs="+", required=True, help="run folders of group A")
    parser.add_argument("--b", nargs="+", required=True, help="run folders of group B")
    parser.add_argument("--splits", default="valid,test")
    parser.add_argument("--resamples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    accelerator = make_accelerator(cpu=True)
    domain = load_domain(args.domain, data_dir=args.data_dir)
    print("| domain | split | users | A N@10 | B N@10 | A - B | 95% interval | P(A > B) |")
    print("|---|---|---|---|---|---|---|---|")
    splits = args.splits.split(",")
    group_a = [per_user_ndcg(run, domain, splits, accelerator) for run in args.a]
    group_b = [per_user_ndcg(run, domain, splits, accelerator) for run in args.b]
    for split in splits:
        a = np.mean([scores[split] for scores in group_a], axis=0)
        b = np.mean([scores[split] for scores in group_b], axis=0)
        paired = paired_bootstrap(a, b, args.resamples, args.seed)
        print(
            f"| {args.domain} | {split} | {a.size} | {a.mean():.4f} | {b.mean():.4f} | {paired.difference:+.4f} "
            f"| [{paired.low:+.4f}, {paired.high:+.4f}] | {paired.share_ahead:.2f} |"
        )


if __name__ == "__main__":
    main()
