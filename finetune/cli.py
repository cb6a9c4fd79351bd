"""``finetune --domain <Domain> [--model missrec,sasrec,...] [--seeds 3] [key=value ...]``

Trains each model on the domain's train split, selects the epoch by valid NDCG@10, evaluates
test with the best weights, and prints one table (mean ± sd over seeds).

Pretrained models (MISSRec, UniSRec) start from a pretraining checkpoint and are fine-tuned
parameter-efficiently: ``--checkpoint PATH`` names one; without it, the default pretraining
output is used (``checkpoints/pretrain/demo/final`` for synthetic domains, made by
``accelerate launch pretrain/run.py``; ``checkpoints/pretrain/missrec-fhckm/final`` otherwise;
for UniSRec ``checkpoints/pretrain/unisrec-demo/final`` and ``.../unisrec-fhckm/final``).
``--from-scratch`` trains all parameters from random weights instead; ``--full`` fine-tunes all
parameters of the pretrained model. A model name can carry the choice for itself, so one table
can compare them: ``missrec@scratch``, ``missrec@peft``, ``missrec@full``.

``--checkpoint`` also takes a Hugging Face Hub repository (``org/name``), downloaded once into
the Hugging Face cache (``mmseqrec publish`` puts models there).

Each run's folder (config, log, metrics.json, best weights with a model card) and the summary
(``results.md``, ``results.json``) go under ``--output`` (default
``checkpoints/finetune-<Domain>-<time>``). Every run checkpoints its training state at the end
of each epoch (and every ``train.checkpoint_every`` steps); after an interruption the same
command with ``--resume`` skips the runs that finished and continues the interrupted one exactly
where it was (``--resume`` alone picks the newest ``checkpoints/finetune-<Domain>-*`` folder;
``--resume PATH`` names the output folder). Runs on one process as is;
``accelerate launch -m finetune.cli ...`` runs it on several.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mmseqrec.checkpointing import add_resume_option, take_resume_option
from mmseqrec.config import ConfigError, parse_overrides
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import DomainNotFoundError, load_domain
from mmseqrec.options import add_data_dir
from mmseqrec.runs import plan_runs, run_domain, timestamp
from mmseqrec.savedmodel import HubError
from mmseqrec.training import finish_accelerator, make_accelerator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True,
                        help="prepared domain name (e.g. Office, syn-Office) or folder; several, comma-separated, "
                             "give one table per domain and a combined table of test NDCG@10 / Recall@10")
    parser.add_argument("--model", default="missrec", help="model name(s), comma-separated, optionally with @scratch/@peft/@full (default: missrec)")
    parser.add_argument("--mode", choices=("transductive", "inductive"), default=None,
                        help="MISSRec, UniSRec: with item IDs (transductive, default) or content only (inductive)")
    parser.add_argument("--checkpoint", default=None,
                        help="pretrained model to start from (pretrainable models only): a folder or a Hub repository org/name")
    parser.add_argument("--from-scratch", action="store_true", help="train pretrainable models from random weights")
    parser.add_argument("--full", action="store_true", help="fine-tune all parameters of a pretrained model (default: parameter-efficient)")
    add_data_dir(parser)
    parser.add_argument("--config", action="append", default=[], help="extra YAML config file(s), applied in order")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: train.seed, 2020)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds to run per model (default: 1)")
    parser.add_argument("--output", default=None, help="folder for runs and the summary (default: checkpoints/finetune-<Domain>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    parser.add_argument("--cpu", action="store_true",
                        help="train on the CPU even if a GPU is present (under accelerate launch --multi_gpu: gloo CPU processes)")
    add_resume_option(parser, "fine-tuning (an output folder)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=20 model.hidden_size=64")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may come before or after options
    take_resume_option(args)
    args.command = shlex.join(["finetune", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (ConfigError, DataFormatError, DomainNotFoundError, FileNotFoundError, ValueError, FloatingPointError, HubError) as err:
        print(f"finetune: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    names = [d.strip() for d in args.domain.split(",") if d.strip()]
    domains = [load_domain(name, data_dir=args.data_dir) for name in names]
    overrides = parse_overrides(args.overrides)
    plans = [plan_runs(args, domain, overrides) for domain in domains]  # fail fast: config, checkpoints
    first = next(iter(plans[0].values())).train  # one accelerator (and its trackers) for all the runs
    accelerator = make_accelerator(first.mixed_precision, cpu=args.cpu, log_with=first.log_with)
    prefix = f"finetune-{domains[0].name}" if len(domains) == 1 else f"finetune-{len(domains)}domains"
    root = output_folder(args, prefix)
    if len(domains) == 1:
        run_domain(args, domains[0], plans[0], root, accelerator)
    else:
        summaries = {}
        for domain, specs in zip(domains, plans):
            summaries[domain.name] = run_domain(args, domain, specs, root / domain.name, accelerator)
        if accelerator.is_main_process:
            table = format_cross_domain_table(summaries)
            (root / "results.md").write_text(table + "\n")
            print(f"\n{table}\n\nall runs: {root}")
    finish_accelerator(accelerator)
    return 0


def output_folder(args: argparse.Namespace, prefix: str) -> Path:
    """``--output``, or the folder ``--resume [PATH]`` continues, or a new timestamped one."""
    if isinstance(args.resume, str):
        if args.output and Path(args.output) != Path(args.resume):
            raise ValueError(f"--resume {args.resume} and --output {args.output} name different folders")
        return Path(args.resume)
    if args.output:
        return Path(args.output)
    if args.resume:
        earlier = sorted(Path("checkpoints").glob(f"{prefix}-*"))
        if not earlier:
            raise FileNotFoundError(f"--resume: no earlier checkpoints/{prefix}-* folder to continue; pass --resume PATH")
        print(f"resuming {earlier[-1]}")
        return earlier[-1]
    return Path("checkpoints") / f"{prefix}-{timestamp()}"


def format_cross_domain_table(summaries: dict[str, dict]) -> str:
    """Rows: models; columns: test NDCG@10 and Recall@10 per domain, and their mean."""
    domains = list(summaries)
    models = list(dict.fromkeys(m for s in summaries.values() for m in s))
    seeds = next(iter(summaries[domains[0]].values()))["seeds"]
    lines = [
        "test NDCG@10 / Recall@10 per domain" + (f" (mean ± sd over {seeds} seeds)" if seeds > 1 else ""),
        "",
        "| model | " + " | ".join(domains) + " | mean N@10 |",
        "|---|" + "---|" * (len(domains) + 1),
    ]
    for model in models:
        cells, means = [], []
        for d in domains:
            row = summaries[d].get(model)
            if row is None:
                cells.append("-")
                continue
            sd = f" ± {row['test ndcg@10 sd']:.4f}" if row["seeds"] > 1 else ""
            cells.append(f"{row['test ndcg@10']:.4f}{sd} / {row['test recall@10']:.4f}")
            means.append(row["test ndcg@10"])
        mean = f"{sum(means) / len(means):.4f}" if means else "-"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
