"""NDCG@10 of finished runs on valid and test, broken down by history length.

    python benchmarks/ndcg_by_history_length.py --domain Scientific [--splits valid,test,train] RUN_FOLDER ...

A run folder is one ``finetune`` wrote (``config.yaml`` and ``best/``). ``train`` scores the
training rows themselves (each prefix's next item): how closely a model fits what it was trained on.
"""

import argparse

import numpy as np

from mmseqrec.inference import load_pretrained
from mmseqrec.data.loading import load_domain
from mmseqrec.metrics import metrics_from_ranks
from mmseqrec.training import evaluate, make_accelerator, make_loader

BUCKETS = ((1, 3), (3, 5), (5, 8), (8, 15), (15, 10**9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--splits", default="valid,test", help="comma-separated splits to score (valid, test, train)")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    accelerator = make_accelerator(cpu=True)
    domain = load_domain(args.domain, data_dir=args.data_dir)
    header = " | ".join(f"len {lo}-{hi - 1 if hi < 10**9 else '...'}" for lo, hi in BUCKETS)
    print(f"| run | split | all | {header} |")
    print("|---" * (3 + len(BUCKETS)) + "|")
    for run in args.runs:
        model = load_pretrained(run)
        model.attach_domain(domain)
        model.eval()
        for split in args.splits.split(","):
            result = evaluate(model, make_loader(domain, split, 1024, 50, False, 0), accelerator, domain.num_items)
            ranks, rows = np.asarray(result["ranks"]), np.asarray(result["rows"])
            lengths = domain.splits[split].lengths()[rows]
            ndcg = lambda rows: metrics_from_ranks(ranks[rows])["ndcg@10"]  # noqa: E731
            cells = []
            for lo, hi in BUCKETS:
                inside = (lengths >= lo) & (lengths < hi)
                cells.append(f"{ndcg(inside):.4f} ({inside.sum()})" if inside.any() else "-")
            print(f"| {run} | {split} | {ndcg(slice(None)):.4f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
