"""``finetune --domain <Domain> [--model sasrec,mostpop] [--seeds 3] [key=value ...]``

Trains each model on the domain's train split, selects the epoch by valid NDCG@10, evaluates
test with the best weights, and prints one table (mean ± sd over seeds). Each run's folder
(config, log, metrics.json, best weights) and the summary (``results.md``, ``results.json``)
go under ``--output`` (default ``checkpoints/finetune-<Domain>-<time>``).

Runs on one process as is; ``accelerate launch -m finetune.cli ...`` runs it on several.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmseqrec.config import ConfigError, parse_overrides
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import DomainNotFoundError, default_data_dir, load_domain
from mmseqrec.runs import check_overrides, format_summary_table, resolve_config, summarise, timestamp, train_one


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True, help="prepared domain name (e.g. Office, syn-Office) or folder")
    parser.add_argument("--model", default="sasrec", help="model name, or several separated by commas (default: sasrec)")
    parser.add_argument("--data-dir", default=None, help=f"where prepared domains live (default: {default_data_dir()})")
    parser.add_argument("--config", action="append", default=[], help="extra YAML config file(s), applied in order")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: train.seed, 2020)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds to run per model (default: 1)")
    parser.add_argument("--output", default=None, help="folder for runs and the summary (default: checkpoints/finetune-<Domain>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=20 model.hidden_size=64")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataFormatError, DomainNotFoundError, ValueError) as err:
        print(f"finetune: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    domain = load_domain(args.domain, data_dir=args.data_dir)
    overrides = parse_overrides(args.overrides)
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    check_overrides(models, overrides)
    specs = {name: resolve_config(name, domain, args.config, overrides) for name in models}  # fail fast on bad config

    first = next(iter(specs.values()))
    accelerator = Accelerator(
        mixed_precision=first.train.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    output = Path(args.output) if args.output else Path("checkpoints") / f"finetune-{domain.name}-{timestamp()}"
    synthetic = " (synthetic)" if domain.manifest.get("synthetic") else ""
    if accelerator.is_main_process:
        print(f"{domain.describe()}{synthetic}")

    summary, all_results = {}, {}
    for name, spec in specs.items():
        base_seed = args.seed if args.seed is not None else spec.train.seed
        results = []
        for k in range(args.seeds):
            spec.train.seed = base_seed + k
            run_dir = output / f"{name}-seed{spec.train.seed}"
            info = {"data": {"domain": domain.name, "path": str(domain.path), "synthetic": bool(domain.manifest.get("synthetic"))}}
            results.append(train_one(spec, domain, run_dir, accelerator=accelerator, run_info=info, quiet=args.quiet))
        summary[name] = summarise(results)
        all_results[name] = [{k: v for k, v in r.items() if k != "history"} for r in results]

    table = format_summary_table(summary)
    if accelerator.is_main_process:
        title = f"{domain.name}{synthetic}: {len(domain.splits['test']):,} test users, full ranking over {domain.num_items:,} items"
        (output / "results.md").write_text(f"{title}\n\n{table}\n")
        (output / "results.json").write_text(json.dumps({"domain": domain.name, "summary": summary, "runs": all_results}, indent=2) + "\n")
        print(f"\n{title}\n\n{table}\n\nruns and summary: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
