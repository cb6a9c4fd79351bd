"""Summarise finished run folders into one comparison table, CSV and bar chart.

    python benchmarks/summarise_runs.py OUT RUNS_DIR [RUNS_DIR ...] [--title TEXT] [--order A,B,...]

Each RUNS_DIR holds ``<model>-seed<N>/metrics.json`` folders, as ``finetune`` and ``mmseqrec
compare`` write them. Runs are grouped by the folder name without its seed (``missrec-scratch``
is shown as ``missrec (scratch)``) and summarised with the code of ``mmseqrec compare``, so runs
made by separate commands (for example one seed at a time) give the same table ``compare`` would.
Writes ``results.md``, ``results.csv``, ``results.png`` and ``results.json`` into OUT.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmseqrec.compare import write_bar_chart, write_csv  # noqa: E402
from mmseqrec.runs import format_summary_table, summarise  # noqa: E402


def collect(folders: list[Path]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for folder in folders:
        for run in sorted(folder.glob("*-seed*")):
            metrics = run / "metrics.json"
            if metrics.is_file():
                label = re.sub(r"-seed\d+$", "", run.name).replace("-scratch", " (scratch)")
                groups.setdefault(label, []).append(json.loads(metrics.read_text()))
    return groups


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--title", default="test metrics")
    parser.add_argument("--order", default="", help="row labels first, comma-separated (the rest follow by name)")
    args = parser.parse_args(argv)
    groups = collect(args.runs)
    if not groups:
        parser.error(f"no <model>-seed<N>/metrics.json under {', '.join(map(str, args.runs))}")
    first = [label for label in args.order.split(",") if label in groups]
    labels = first + sorted(set(groups) - set(first))
    summary = {label: summarise(groups[label]) for label in labels}
    args.out.mkdir(parents=True, exist_ok=True)
    table = format_summary_table(summary)
    (args.out / "results.md").write_text(table + "\n")
    write_csv(summary, args.out / "results.csv")
    write_bar_chart(summary, args.out / "results.png", args.title)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
