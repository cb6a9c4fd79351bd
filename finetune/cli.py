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
import json
import shlex
import sys
from pathlib import Path

from mmseqrec.checkpointing import add_resume_option, take_resume_option
from mmseqrec.config import ConfigError, parse_overrides
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import DomainNotFoundError, load_domain
from mmseqrec.hub import HubError, resolve_model_folder
from mmseqrec.models import model_classes
from mmseqrec.options import add_data_dir
from mmseqrec.runs import (
    add_differences_to_best,
    check_overrides,
    default_checkpoint,
    format_summary_table,
    pretrainable,
    resolve_config,
    summarise,
    timestamp,
    train_one,
)
from mmseqrec.training import finish_accelerator, make_accelerator

VARIANTS = ("scratch", "peft", "full")


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


def plan_runs(args: argparse.Namespace, domain, overrides: dict) -> dict:
    """One RunSpec per requested model (variant), with its starting point and stage resolved."""
    if args.from_scratch and args.checkpoint:
        raise ValueError("--from-scratch and --checkpoint exclude each other")
    requested = [m.strip() for m in args.model.split(",") if m.strip()]
    names = [m.split("@")[0].lower() for m in requested]
    check_overrides(names, overrides)
    specs = {}
    for entry, name in zip(requested, names):
        variant = entry.split("@")[1].lower() if "@" in entry else None
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"unknown variant '@{variant}' in '{entry}'; expected one of {', '.join('@' + v for v in VARIANTS)}")
        layer = dict(overrides)
        if args.mode and "mode" in model_classes(name)[1].__dataclass_fields__:
            layer = {**layer, "model": {**(layer.get("model") or {}), "mode": args.mode}}
        checkpoint, stage = None, "finetune"
        if pretrainable(name) and (variant or ("scratch" if args.from_scratch else "peft")) != "scratch":
            if args.checkpoint:
                checkpoint = resolve_model_folder(args.checkpoint)  # a folder, or downloaded from the Hub
            else:
                checkpoint, command = default_checkpoint(name, domain)
                if not (checkpoint / "model.safetensors").exists():
                    raise FileNotFoundError(
                        f"{name} fine-tunes a pretrained model, and none was found at {checkpoint}. Make one with\n"
                        f"  {command}\nor pass --checkpoint PATH, or train from random weights with --from-scratch "
                        f"(or the model name '{name}@scratch')."
                    )
            stage = "finetune" if (variant == "full" or (variant is None and args.full)) else "peft"
        elif variant in ("peft", "full"):
            raise ValueError(f"'{entry}': {name} is not a pretrained model; only @scratch applies")
        spec = resolve_config(name, domain, args.config, layer, checkpoint=checkpoint)
        spec.checkpoint_source = args.checkpoint if args.checkpoint and checkpoint is not None else None
        spec.train.stage = stage
        if not pretrainable(name):
            spec.label = name
        elif checkpoint is None:
            spec.label = f"{name} (scratch)"
        else:
            spec.label = f"{name} (pretrained, {'peft' if stage == 'peft' else 'full'})"
        specs[entry] = spec
    return specs


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    names = [d.strip() for d in args.domain.split(",") if d.strip()]
    domains = [load_domain(name, data_dir=args.data_dir) for name in names]
    overrides = parse_overrides(args.overrides)
    plans = [plan_runs(args, domain, overrides) for domain in domains]  # fail fast: config, checkpoints
    first = next(iter(plans[0].values())).train  # one accelerator (and its trackers) for all the runs
    accelerator = make_accelerator(first.mixed_precision, log_with=first.log_with)
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


def run_domain(args: argparse.Namespace, domain, specs: dict, output: Path, accelerator) -> dict:
    """Train every planned model on one domain; print and save its table; return the summary."""
    synthetic = " (synthetic)" if domain.manifest.get("synthetic") else ""
    if accelerator.is_main_process:
        print(f"{domain.describe()}{synthetic}")

    summary, all_results, run_dirs = {}, {}, {}
    for entry, spec in specs.items():
        base_seed = args.seed if args.seed is not None else spec.train.seed
        results = []
        for k in range(args.seeds):
            spec.train.seed = base_seed + k
            run_dir = output / f"{entry.replace('@', '-')}-seed{spec.train.seed}"
            run_dirs.setdefault(spec.label, []).append(run_dir)
            info = {
                "data": {"domain": domain.name, "path": str(domain.path), "synthetic": bool(domain.manifest.get("synthetic"))},
                "command": args.command,
            }
            results.append(train_one(spec, domain, run_dir, accelerator=accelerator, run_info=info, quiet=args.quiet, resume=bool(args.resume)))
        summary[spec.label] = summarise(results)
        summary[spec.label]["trainable parameters"] = results[0]["trainable_parameters"]
        all_results[spec.label] = [{k: v for k, v in r.items() if k != "history"} for r in results]
        if accelerator.is_main_process:
            print(f"{spec.label}: {results[0]['trainable_parameters']:,} trainable parameters ({spec.train.stage})")

    if accelerator.is_main_process:
        add_differences_to_best(summary, run_dirs)
    table = format_summary_table(summary)
    if accelerator.is_main_process:
        title = f"{domain.name}{synthetic}: {len(domain.splits['test']):,} test users, full ranking over {domain.num_items:,} items"
        (output / "results.md").write_text(f"{title}\n\n{table}\n")
        (output / "results.json").write_text(json.dumps({"domain": domain.name, "summary": summary, "runs": all_results}, indent=2) + "\n")
        print(f"\n{title}\n\n{table}\n\nruns and summary: {output}")
    return summary


if __name__ == "__main__":
    sys.exit(main())
