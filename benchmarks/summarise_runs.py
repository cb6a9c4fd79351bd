"""Summarise finished run folders into one comparison table, CSV and bar chart.

    python benchmarks/summarise_runs.py OUT [LABEL=]RUNS_DIR [...] [--title TEXT] [--order A,B,...] [--pair A:B ...]

Each RUNS_DIR holds ``<model>-seed<N>/metrics.json`` folders, as ``finetune`` and ``mmseqrec
compare`` write them. Runs are grouped by the folder name without its seed (``missrec-scratch``
is shown as ``missrec (scratch)``), or under LABEL when the argument is ``LABEL=RUNS_DIR`` (for
runs of one model made with different settings), and summarised with the code of ``mmseqrec
compare``, so runs made by separate commands (for example one seed at a time) give the same
table ``compare`` would, with its paired-bootstrap column (difference in test NDCG@10 to the best
row) when every run saved its ranks. ``--pair A:B`` adds the paired bootstrap of row A against
row B (A - B, 95% interval over the test users, share of resamples with A ahead).
Writes ``results.md``, ``results.csv``, ``results.png`` and ``results.json`` into OUT.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmseqrec.compare import write_bar_chart, write_csv  # noqa: E402
from mmseqrec.runs import add_differences_to_best, format_summary_table, summarise  # noqa: E402
from mmseqrec.significance import group_scores, paired_bootstrap  # noqa: E402


def collect(arguments: list[str]) -> tuple[dict[str, list[dict]], dict[str, list[Path]]]:
    """label -> the finished runs' metrics, and label -> their folders."""
    groups: dict[str, list[dict]] = {}
    folders: dict[str, list[Path]] = {}
    for argument in arguments:
        given, _, path = argument.rpartition("=") if "=" in argument else ("", "", argument)
        for run in sorted(Path(path).glob("*-seed*")):
            metrics = run / "metrics.json"
            if metrics.is_file():
                label = given or re.sub(r"-seed\d+$", "", run.name).replace("-scratch", " (scratch)")
                groups.setdefault(label, []).append(json.loads(metrics.read_text()))
                folders.setdefault(label, []).append(run)
    return groups, folders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", help="RUNS_DIR or LABEL=RUNS_DIR")
    parser.add_argument("--title", default="test metrics")
    parser.add_argument("--order", default="", help="row labels first, comma-separated (the rest follow by name)")
    parser.add_argument("--pair", action="append", default=[], metavar="A:B", help="paired bootstrap of row A against row B")
    args = parser.parse_args(argv)
    groups, folders = collect(args.runs)
    if not groups:
        parser.error(f"no <model>-seed<N>/metrics.json under {', '.join(map(str, args.runs))}")
    first = [label for label in args.order.split(",") if label in groups]
    labels = first + sorted(set(groups) - set(first))
    summary = {label: summarise(groups[label]) for label in labels}
    with_ranks = all((run / "ranks.npz").is_file() for runs in folders.values() for run in runs)
    if with_ranks:
        add_differences_to_best(summary, {label: folders[label] for label in labels})
    pairs = []
    for pair in args.pair:
        a, _, b = pair.partition(":")
        if a not in groups or b not in groups:
            parser.error(f"--pair {pair}: rows are {', '.join(labels)}")
        if not with_ranks:
            parser.error("--pair needs every run's ranks.npz")
        difference = paired_bootstrap(group_scores(folders[a]), group_scores(folders[b]))
        summary[a][f"test ndcg@10 vs {b}"] = asdict(difference)
        pairs.append(f"- {a} vs {b}: test NDCG@10 {difference.format()} (95% interval, paired bootstrap over"
                     f" the test users, each user's score averaged over the seeds); {a} ahead in"
                     f" {100 * difference.share_ahead:.1f}% of the resamples")
    args.out.mkdir(parents=True, exist_ok=True)
    table = format_summary_table(summary) + ("\n\n" + "\n".join(pairs) if pairs else "")
    (args.out / "results.md").write_text(table + "\n")
    write_csv(summary, args.out / "results.csv")
    write_bar_chart(summary, args.out / "results.png", args.title)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
