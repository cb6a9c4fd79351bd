"""``mmseqrec compare --domain D --models sasrec,bert4rec,unisrec,mmmlp,missrec [--seeds 3]``

Trains every model on one processed domain with the same splits, the same data loaders and the
same full-ranking evaluator, then writes to the run folder:

- ``results.md``: the table (mean ± sd over seeds of valid NDCG@10 and the four test metrics,
  best epoch, wall-clock minutes per run, and each model's difference in test NDCG@10 to the best
  model with the 95% interval of a paired bootstrap over the test users,
  ``mmseqrec.significance``);
- ``results.csv``: the same numbers, one row per model, machine-readable;
- ``results.png``: a bar chart of test NDCG@10 and Recall@10 with sd error bars;
- ``results.json`` and every run's own folder (config, log, metrics, best weights).

The general top-N models (``mfbpr``, ``lightgcn``, ``vbpr``, ``lattice``, ``freedom``, ``bm3``,
``diffmm``) are compared the same way on a domain's top-N split, with their own columns (valid
Recall@20; test Recall, NDCG and Precision at 10, 20 and 50) and the paired bootstrap on test
NDCG@20; a table holds one track.

A comparison is about architectures on one domain, so pretrainable models (MISSRec, UniSRec) are
trained **from scratch** unless asked otherwise: ``missrec@peft`` fine-tunes the default
pretraining output (or ``--checkpoint PATH``) parameter-efficiently, ``missrec@full`` fine-tunes
all of it. This differs from ``finetune``, whose plain ``missrec`` means the pretrained model.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

from mmseqrec.config import parse_overrides
from mmseqrec.data.loading import load_domain
from mmseqrec.options import add_data_dir
from mmseqrec.models import MODELS
from mmseqrec.runs import REPORT_COLUMNS, plan_runs, pretrainable, report_columns, run_domain, timestamp, track_of, versus_best
from mmseqrec.training import finish_accelerator, make_accelerator

DEFAULT_MODELS = "sasrec,bert4rec,unisrec,mmmlp,missrec,mostpop"


def csv_columns(columns: tuple[str, ...] = REPORT_COLUMNS, paired_k: int = 10) -> tuple[str, ...]:
    """The CSV header for the reported ``columns`` (``runs.report_columns``); ``paired_k`` is the
    NDCG cut-off of the paired bootstrap (10; 20 on the top-N track)."""
    return (
        "model", "seeds", *[c for col in columns for c in (col, col + " sd")], "best epoch", "minutes per run", "trainable parameters",
        # the paired bootstrap against the best row (empty for the best row itself)
        f"test ndcg@{paired_k} minus best", "ci low", "ci high",
    )


CSV_COLUMNS = csv_columns()


def default_models() -> str:
    """The default model list, restricted to the models this installation has."""
    return ",".join(m for m in DEFAULT_MODELS.split(",") if m in MODELS)


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec compare``."""
    parser = commands.add_parser(
        "compare",
        help="train several models on one domain and write a table, a CSV and a bar chart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--domain", required=True, help="prepared domain name (e.g. Office, syn-Office) or folder")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated model names, optionally with @scratch/@peft/@full (default: {DEFAULT_MODELS}, "
                             "those installed)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (default: 3)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: train.seed, 2020)")
    parser.add_argument("--mode", choices=("transductive", "inductive"), default=None,
                        help="pretrainable models: with item IDs (transductive, default) or content only")
    parser.add_argument("--checkpoint", default=None, help="pretrained folder for the models named with @peft or @full")
    add_data_dir(parser)
    parser.add_argument("--config", action="append", default=[], help="extra YAML config file(s), applied to every model")
    parser.add_argument("--output", default=None, help="run folder (default: checkpoints/compare-<Domain>-<time>)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every model, e.g. train.epochs=50")
    parser.set_defaults(func=run)
    return parser


def _finetune_args(args: argparse.Namespace, entries: list[str]) -> argparse.Namespace:
    """The namespace ``runs.plan_runs`` expects, with bare pretrainable names as scratch."""
    return argparse.Namespace(
        model=",".join(entries), mode=args.mode, checkpoint=args.checkpoint, from_scratch=False, full=False,
        data_dir=args.data_dir, config=args.config, seed=args.seed, seeds=args.seeds, quiet=args.quiet,
        resume=None, command=getattr(args, "command", None),
    )


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    if not args.no_plot:
        _require_matplotlib()
    requested = [m.strip() for m in (args.models or default_models()).split(",") if m.strip()]
    if not requested:
        raise ValueError("--models names no model")
    # A bare pretrainable name means "from scratch" in a comparison.
    entries = [m if ("@" in m or not pretrainable(m.lower())) else f"{m}@scratch" for m in requested]
    domain = load_domain(args.domain, data_dir=args.data_dir)
    overrides = parse_overrides(args.overrides)
    fargs = _finetune_args(args, entries)
    specs = plan_runs(fargs, domain, overrides)  # fails fast on unknown models, configs, checkpoints
    first = next(iter(specs.values())).train  # one accelerator (and its trackers) for all the runs
    accelerator = make_accelerator(first.mixed_precision, log_with=first.log_with)
    output = Path(args.output) if args.output else Path("checkpoints") / f"compare-{domain.name}-{timestamp()}"
    summary = run_domain(fargs, domain, specs, output, accelerator)
    if accelerator.is_main_process:
        write_csv(summary, output / "results.csv")
        if not args.no_plot:
            title = f"{domain.name}: test metrics" + (f", mean ± sd over {args.seeds} seeds" if args.seeds > 1 else "")
            write_bar_chart(summary, output / "results.png", title)
        print(f"table, CSV and chart: {output / 'results.md'}, {output / 'results.csv'}" + ("" if args.no_plot else f", {output / 'results.png'}"))
    finish_accelerator(accelerator)
    return 0


def write_csv(summary: dict[str, dict], path: Path) -> None:
    """One row per model; written to a temporary file, then renamed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = max((report_columns(row) for row in summary.values()), key=len, default=REPORT_COLUMNS)
    protocol = track_of(next(iter(summary.values()), {}))
    writer.writerow(csv_columns(columns, protocol.paired_k))
    for label, row in summary.items():
        values = [label, row["seeds"]]
        for column in columns:
            values += [f"{row[column]:.6f}", f"{row[column + ' sd']:.6f}"] if column in row else ["", ""]
        values += [f"{row['best epoch']:.1f}", f"{row['minutes']:.3f}", row.get("trainable parameters", "")]
        versus = row.get(versus_best(protocol))
        values += ["", "", ""] if versus is None else [f"{versus[key]:.6f}" for key in ("difference", "low", "high")]
        writer.writerow(values)
    _atomic_write_bytes(path, buffer.getvalue().encode())


def write_bar_chart(summary: dict[str, dict], path: Path, title: str) -> None:
    """Grouped bars: test NDCG@10 and Recall@10 per model (top-N track: @20), sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    labels = list(summary)
    k = track_of(next(iter(summary.values()), {})).paired_k
    metrics = (f"test ndcg@{k}", f"test recall@{k}")
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.2))
    for k, metric in enumerate(metrics):
        positions = [i + (k - 0.5) * width for i in range(len(labels))]
        means = [summary[m][metric] for m in labels]
        sds = [summary[m][metric + " sd"] for m in labels]
        bars = ax.bar(positions, means, width, yerr=sds, capsize=3, label=metric.replace("test ", ""))
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test metric (full ranking)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    _atomic_write_bytes(path, buffer.getvalue())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the bar chart needs matplotlib: pip install 'mmseqrec[plots]' (or pass --no-plot)") from None
