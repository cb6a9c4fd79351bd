"""Median seconds per training epoch and per validation pass, read from finished run folders.

    python benchmarks/run_epoch_seconds.py docs/results/mmcf-full/tiktok

Every subfolder of the argument is one model (``<model>/<model>-seed<N>/metrics.json``, as
``finetune --seeds`` writes them); the medians run over every epoch of every seed, from the
``train_seconds`` and ``valid_seconds`` each epoch records in ``metrics.json``'s history. These are
the wall-clock seconds of the table runs themselves, so they carry the machine's load at the time.
"""

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a folder of <model>/<model>-seed<N>/ run folders")
    args = parser.parse_args()
    print("| model | epochs timed | train s / epoch (median) | valid s / pass (median) |")
    print("|---|---|---|---|")
    for model_dir in sorted(p for p in args.root.iterdir() if p.is_dir()):
        train, valid = [], []
        for metrics in sorted(model_dir.glob("*-seed*/metrics.json")):
            for epoch in json.loads(metrics.read_text())["history"]:
                if "train_seconds" in epoch:
                    train.append(epoch["train_seconds"])
                    valid.append(epoch["valid_seconds"])
        if train:
            print(f"| {model_dir.name} | {len(train)} | {statistics.median(train):.2f} | {statistics.median(valid):.2f} |")


if __name__ == "__main__":
    main()
