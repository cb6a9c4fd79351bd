"""The ``mmseqrec`` command: prepare and export data, extract item features, inspect and validate
prepared domains, evaluate runs, compare models, recommend (in batch, or as an HTTP service), add
items to a trained run, publish models to the Hugging Face Hub, import the MISSRec authors'
checkpoint, benchmark speed and memory."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys

from mmseqrec import bench, compare, hub, official_missrec, recommend, serve
from mmseqrec.config import ConfigError
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import DomainNotFoundError, load_domain
from mmseqrec.data.sources import SOURCE_MODULES
from mmseqrec.features.extract import register as register_extract
from mmseqrec.inference import UnknownItemsError, load_pretrained
from mmseqrec.options import add_data_dir, add_output
from mmseqrec.savedmodel import HubError
from mmseqrec.metrics import PROTOCOLS
from mmseqrec.training import cold_and_warm, evaluate, finish_accelerator, make_accelerator, make_loader, topn_loader


def _cmd_info(args: argparse.Namespace) -> int:
    domain = load_domain(args.domain, data_dir=args.data_dir)
    print(domain.describe())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    accelerator = make_accelerator(cpu=args.cpu)
    domain = load_domain(args.domain, data_dir=args.data_dir)
    model = load_pretrained(args.run)
    model.attach_domain(domain)
    model = model.to(accelerator.device)
    report = {"num_processes": accelerator.num_processes, "track": model.track}
    for split in ("valid", "test"):
        if model.track == "topn":  # held-out item sets, training (and for test valid) items masked
            loader = accelerator.prepare(topn_loader(domain, split, args.batch_size, False, 0))
        else:
            loader = accelerator.prepare(make_loader(domain, split, args.batch_size, args.max_len, False, 0))
        result = evaluate(model, loader, accelerator, domain.num_items, args.mask_history, protocol=PROTOCOLS[model.track])
        report[split] = result["metrics"]
        report[f"{split}_rows"] = result["rows"].tolist()
        if split == "test":  # a cold-start domain: the cold and the warm rows apart
            report.update(cold_and_warm(result, domain.cold_items))
    if accelerator.is_main_process:
        text = json.dumps(report, indent=2)
        if args.output:
            with open(args.output, "w") as handle:
                handle.write(text + "\n")
        else:
            print(text)
    finish_accelerator(accelerator)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseqrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="turn a raw source into a processed domain")
    sources = prepare.add_subparsers(dest="source", required=True)
    for module_name in SOURCE_MODULES:
        importlib.import_module(f"mmseqrec.data.sources.{module_name}").register(sources)

    export = commands.add_parser("export", help="write a prepared domain in another format")
    targets = export.add_subparsers(dest="target", required=True)
    importlib.import_module("mmseqrec.data.sources.release").register_export(targets)

    register_extract(commands)

    info = commands.add_parser("info", help="validate a prepared domain and print its counts")
    info.add_argument("domain", help="domain name (looked up in --data-dir) or folder")
    add_data_dir(info)
    info.set_defaults(func=_cmd_info)

    evaluate = commands.add_parser("evaluate", help="full-ranking evaluation of a finished run's best weights")
    evaluate.add_argument("--run", required=True, help="run folder (holds config.yaml and best/)")
    evaluate.add_argument("--domain", required=True, help="domain name or folder")
    add_data_dir(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=1024, help="users per evaluation batch and process")
    evaluate.add_argument("--max-len", type=int, default=50)
    evaluate.add_argument("--mask-history", action="store_true", help="remove history items from the ranking")
    evaluate.add_argument("--cpu", action="store_true", help="evaluate on the CPU even if a GPU is present")
    add_output(evaluate, "write the report (metrics and evaluated rows) to this JSON file (default: print it)", old="--out")
    evaluate.set_defaults(func=_cmd_evaluate)

    compare.register(commands)
    recommend.register(commands)
    serve.register(commands)
    hub.register(commands)
    official_missrec.register(commands)
    bench.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["mmseqrec", *(sys.argv[1:] if argv is None else argv)])  # recorded in runs and model cards
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataFormatError, DomainNotFoundError, FileExistsError, FileNotFoundError, ValueError, HubError, UnknownItemsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
