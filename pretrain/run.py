"""Pretrain a model on a mixture of source domains.

    accelerate launch pretrain/run.py                                  # MISSRec, synthetic sources
    accelerate launch pretrain/run.py --config pretrain/configs/missrec-fhckm.yaml
    accelerate launch pretrain/run.py train.epochs=2 model.hidden_size=64   # overrides

The same command runs on one CPU, one GPU or several processes (``--num_processes``). The config
has four parts: ``name`` (the run folder is ``checkpoints/pretrain/<name>``), ``data`` (the
source domains, merged into one item vocabulary), ``model`` (``name`` and the model's config)
and ``train`` (``TrainConfig``; pretraining never validates, and draws uniform batches unless the
config sets ``train.group_by_length: true``). The model is saved every
``train.save_every`` epochs (``epoch-<n>/``) and at the end (``final/``), which is where
``finetune`` looks for it by default.

Training state is checkpointed at the end of every epoch (and every ``train.checkpoint_every``
steps) under ``<run folder>/state/``; after an interruption, the same command with ``--resume``
continues from the newest complete checkpoint, exactly where the run was (``--resume PATH``
names a checkpoint). A finished run keeps its last state, so ``--resume train.epochs=<more>``
extends it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed

from mmseqrec.checkpointing import add_resume_option, take_resume_option
from mmseqrec.config import ConfigError, build_dataclass, deep_merge, load_yaml, parse_overrides
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import DomainNotFoundError, default_data_dir, load_mixture, resolve_domain_path
from mmseqrec.models import model_classes
from mmseqrec.options import add_data_dir
from mmseqrec.training import TrainConfig, Trainer, finish_accelerator, make_accelerator

CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIGS / "demo.yaml"


@dataclass
class PretrainData:
    """Which domains to pretrain on.

    Attributes:
        domains: prepared domain names (merged with disjoint item ids, in this order).
        data_dir: where they live (default: ``$MMSEQREC_DATA_DIR`` or ``data/processed``).
        prepare_synthetic: prepare missing ``syn-*`` domains first (the embedded demo corpus).
    """

    domains: list[str] = field(default_factory=list)
    data_dir: str | None = None
    prepare_synthetic: bool = False


def load_config(path: Path, overrides: list[str]) -> dict:
    merged = deep_merge(load_yaml(path), parse_overrides(overrides))
    unknown = set(merged) - {"name", "output", "data", "model", "train"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; expected name, output, data, model, train")
    return merged


def ensure_synthetic(data: PretrainData, accelerator) -> None:
    """Prepare missing synthetic source domains on the main process, then let everyone continue."""
    root = Path(data.data_dir) if data.data_dir else default_data_dir()
    missing = [d for d in data.domains if not (root / d / "manifest.json").exists()]
    if missing and accelerator.is_main_process:
        from mmseqrec.data.sources import synthetic

        names = [d.removeprefix("syn-") for d in missing if d.startswith("syn-")]
        if names:
            print(f"preparing synthetic domains {', '.join(missing)} in {root}")
            synthetic.prepare(root, synthetic.SyntheticConfig(), domains=names)
    accelerator.wait_for_everyone()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrain/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(CONFIGS.parent.parent)})")
    add_data_dir(parser)  # the same as data.data_dir=DIR
    parser.add_argument("--output", default=None, help="run folder (default: checkpoints/pretrain/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    parser.add_argument("--cpu", action="store_true",
                        help="train on the CPU even if a GPU is present (under accelerate launch --multi_gpu: gloo CPU processes)")
    add_resume_option(parser, "pretraining run")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2 model.hidden_size=64")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may come before or after options
    take_resume_option(args)
    args.command = shlex.join(["accelerate", "launch", "pretrain/run.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (ConfigError, DataFormatError, DomainNotFoundError, FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"pretrain: error: {err}", file=sys.stderr)
        return 2


def read_config(args: argparse.Namespace) -> tuple[dict, str, PretrainData, TrainConfig, str, dict]:
    """The run's configuration (``--config``, ``--data-dir``, overrides), checked without reading
    any data: the merged config, the run name, the data and train sections, the model's name and
    the rest of its section."""
    config = load_config(Path(args.config), args.overrides)
    if args.data_dir is not None:
        config["data"] = {**(config.get("data") or {}), "data_dir": str(args.data_dir)}
    name = str(config.get("name") or Path(args.config).stem)
    data = build_dataclass(PretrainData, config.get("data") or {}, "data")
    if not data.domains:
        raise ConfigError(f"{args.config}: data.domains lists no domain to pretrain on")
    train = build_dataclass(TrainConfig, {"stage": "pretrain", "validate": False, "group_by_length": False, **(config.get("train") or {})}, "train")
    if train.stage != "pretrain" or train.validate:
        raise ConfigError("pretraining runs with train.stage=pretrain and train.validate=false")
    model_section = dict(config.get("model") or {})
    model_name = str(model_section.pop("name", "missrec"))
    return config, name, data, train, model_name, model_section


def run(args: argparse.Namespace) -> int:
    config, name, data, train, model_name, model_section = read_config(args)
    model_cls, config_cls = model_classes(model_name)

    accelerator = make_accelerator(train.mixed_precision, cpu=args.cpu, log_with=train.log_with)
    if data.prepare_synthetic:
        ensure_synthetic(data, accelerator)
    for domain_name in data.domains:
        resolve_domain_path(domain_name, data.data_dir)  # a clear error for a missing domain
    mixture = load_mixture(data.domains, data_dir=data.data_dir, name=name)
    from_domain = model_cls.domain_config(mixture, model_section)
    model_config = build_dataclass(config_cls, {**model_section, **from_domain}, "model")
    set_seed(train.seed)  # the seed fixes the initial weights too (torch seeds itself randomly)
    model = model_cls(model_config)

    run_dir = Path(args.output or config.get("output") or Path("checkpoints") / "pretrain" / name)
    info = {"data": {"domains": data.domains, "data_dir": data.data_dir}, "name": name, "config_file": str(args.config), "command": args.command}
    Trainer(model, mixture, train, run_dir, accelerator=accelerator, run_info=info, quiet=args.quiet, resume=args.resume).fit()
    finish_accelerator(accelerator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
