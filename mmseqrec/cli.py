"""The ``mmseqrec`` command: prepare data, inspect and validate prepared domains."""

from __future__ import annotations

import argparse
import importlib
import sys

from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import DomainNotFoundError, default_data_dir, load_domain
from mmseqrec.data.sources import SOURCE_MODULES


def _cmd_info(args: argparse.Namespace) -> int:
    domain = load_domain(args.domain, data_dir=args.data_dir)
    print(domain.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmseqrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="turn a raw source into a processed domain")
    sources = prepare.add_subparsers(dest="source", required=True)
    for module_name in SOURCE_MODULES:
        importlib.import_module(f"mmseqrec.data.sources.{module_name}").register(sources)

    info = commands.add_parser("info", help="validate a prepared domain and print its counts")
    info.add_argument("domain", help="domain name (looked up in --data-dir) or folder")
    info.add_argument("--data-dir", default=None, help=f"where prepared domains live (default {default_data_dir()})")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataFormatError, DomainNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
