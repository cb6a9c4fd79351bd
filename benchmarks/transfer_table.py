"""One row per fine-tuning output over several targets: mean valid NDCG@10, each target's test
NDCG@10 and their mean, read from the ``<target>/results.json`` files ``finetune --domain A,B,...``
writes.

    python benchmarks/transfer_table.py "LABEL=FT_DIR" "LABEL=FT_DIR:missrec (scratch)" ...

``:MODEL`` picks a row of the results other than ``missrec (pretrained, peft)`` (the names
``finetune`` prints, e.g. ``missrec (scratch)``, ``sasrec``). Every output must cover the same
targets; the first one fixes them and their order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PRETRAINED = "missrec (pretrained, peft)"


def read_row(folder: Path, model: str) -> dict[str, tuple[float, float]]:
    """target -> (valid NDCG@10, test NDCG@10) of ``model`` in a multi-target fine-tuning output."""
    row = {}
    for results in sorted(folder.glob("*/results.json")):
        summary = json.loads(results.read_text())["summary"]
        if model not in summary:
            raise SystemExit(f"{results}: no row '{model}' (rows: {', '.join(summary)})")
        row[results.parent.name] = (summary[model]["valid ndcg@10"], summary[model]["test ndcg@10"])
    if not row:
        raise SystemExit(f"{folder}: no <target>/results.json (is it a finetune --domain A,B,... output?)")
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=FT_DIR[:MODEL]")
    args = parser.parse_args(argv)
    targets: list[str] = []
    lines = []
    for argument in args.rows:
        label, _, rest = argument.rpartition("=")  # a label may hold "=" itself
        folder, _, model = rest.partition(":")
        row = read_row(Path(folder), model or PRETRAINED)
        targets = targets or list(row)
        if sorted(row) != sorted(targets):
            raise SystemExit(f"{folder}: targets {sorted(row)}, expected {sorted(targets)}")
        valid = sum(row[t][0] for t in targets) / len(targets)
        test = [row[t][1] for t in targets]
        lines.append(f"| {label} | {valid:.4f} | " + " | ".join(f"{v:.4f}" for v in test) + f" | {sum(test) / len(test):.4f} |")
    print("| row | mean valid N@10 | " + " | ".join(t.removeprefix("syn-") for t in targets) + " | mean test N@10 |")
    print("|---|---|" + "---|" * len(targets) + "---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
