"""Building runs: resolve a model's configuration for a domain, train it, summarise seeds.

Configuration layers, later ones winning:
1. the dataclass defaults (``TrainConfig`` and the model's config class);
2. ``finetune/configs/<model>.yaml`` (per-model defaults);
3. ``finetune/configs/domains/synthetic.yaml`` for synthetic domains, then
   ``finetune/configs/domains/<Domain>.yaml`` if it exists (per-domain overrides, per model);
4. files given with ``--config``;
5. ``key=value`` overrides (``train.epochs=20``, ``model.hidden_size=64``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from accelerate.utils import set_seed

from mmseqrec.config import ConfigError, build_dataclass, deep_merge, load_yaml
from mmseqrec.data.loading import Domain
from mmseqrec.inference import model_folder
from mmseqrec.metrics import PROTOCOLS, Protocol
from mmseqrec.models import model_classes
from mmseqrec.significance import PairedDifference, differences_to_best
from mmseqrec.training import TrainConfig, Trainer

FINETUNE_CONFIGS = Path(__file__).resolve().parent.parent / "finetune" / "configs"
REPORT_COLUMNS = ("valid ndcg@10", "test recall@10", "test ndcg@10", "test recall@50", "test ndcg@50")
#: Added on a cold-start domain (``mmseqrec prepare cold``): the test rows whose target is a cold item, and the others.
COLD_COLUMNS = ("test_cold recall@10", "test_cold ndcg@10", "test_warm recall@10", "test_warm ndcg@10")
#: The general top-N track's columns: its valid metric, then the @10/@20/@50 cut-offs MMRec and DiffMM report.
TOPN_COLUMNS = (
    "valid recall@20", "test recall@10", "test ndcg@10", "test recall@20", "test ndcg@20", "test precision@20", "test recall@50", "test ndcg@50",
)


def report_columns(row: dict) -> tuple[str, ...]:
    """The columns a summary row (or ``summarise``'s results) reports: the top-N track's for its
    models, and the cold and warm ones too when it has them."""
    if row.get("track") == "topn":
        return TOPN_COLUMNS
    return REPORT_COLUMNS + (COLD_COLUMNS if COLD_COLUMNS[0] in row else ())


def track_of(row: dict) -> Protocol:
    """The evaluation protocol of a summary row or a run's results (runs from before the top-N
    track are sequential)."""
    return PROTOCOLS[row.get("track", "sequential")]


@dataclass
class RunSpec:
    model_name: str
    train: TrainConfig
    model_config: Any
    checkpoint: Path | None = None  # pretrained weights to start from (transferable part only)
    label: str = ""  # how the run is named in tables, e.g. "missrec (pretrained, peft)"
    checkpoint_source: str | None = None  # how the checkpoint was named (a folder or a Hub id)


# Where `accelerate launch pretrain/run.py [--config ...]` leaves the model each fine-tuning
# starts from by default: synthetic targets use the synthetic pretraining, real ones FHCKM.
DEFAULT_PRETRAINING = {
    ("missrec", True): Path("checkpoints/pretrain/demo/final"),
    ("missrec", False): Path("checkpoints/pretrain/missrec-fhckm/final"),
    ("unisrec", True): Path("checkpoints/pretrain/unisrec-demo/final"),
    ("unisrec", False): Path("checkpoints/pretrain/unisrec-fhckm/final"),
}
PRETRAIN_COMMAND = {
    ("missrec", True): "accelerate launch pretrain/run.py",
    ("missrec", False): "accelerate launch pretrain/run.py --config pretrain/configs/missrec-fhckm.yaml",
    ("unisrec", True): "accelerate launch pretrain/run.py --config pretrain/configs/unisrec-demo.yaml",
    ("unisrec", False): "accelerate launch pretrain/run.py --config pretrain/configs/unisrec-fhckm.yaml",
}


#: Config fields naming the domain's feature sets a model reads; a fine-tuning run takes them
#: from its checkpoint unless told otherwise.
FEATURE_NAME_FIELDS = ("text_feature", "image_feature", "text_aug_feature")


def pretrainable(model_name: str) -> bool:
    return model_classes(model_name)[0].transferable_prefixes is not None


def default_checkpoint(model_name: str, domain: Domain) -> tuple[Path, str]:
    key = (model_name.lower(), bool(domain.manifest.get("synthetic")))
    return DEFAULT_PRETRAINING[key], PRETRAIN_COMMAND[key]


def read_checkpoint_config(checkpoint: Path) -> dict:
    """The model config stored with a ``save_pretrained`` folder (clear errors if it is not one)."""
    config_file = checkpoint / "config.json"
    if not (checkpoint / "model.safetensors").exists() or not config_file.exists():
        raise FileNotFoundError(f"{checkpoint} is not a saved model (expected model.safetensors and config.json)")
    return json.loads(config_file.read_text())


def load_transferable_weights(model, checkpoint: Path) -> list[str]:
    """Load the domain-independent weights of ``checkpoint`` into ``model``; return the keys loaded.

    Domain-specific tensors (item-ID tables, interest tables) are not transferred: the target
    domain has other items. Every other tensor of the model must be in the checkpoint with the
    same shape, and the checkpoint may hold nothing else.
    """
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors"))
    prefixes = tuple(type(model).transferable_prefixes)
    is_domain_specific = lambda key: not key.startswith(prefixes)  # noqa: E731
    own = {k: v for k, v in model.state_dict().items() if not is_domain_specific(k)}
    incoming = {k: v for k, v in state.items() if not is_domain_specific(k)}
    missing = sorted(set(own) - set(incoming))
    unexpected = sorted(set(incoming) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in incoming.items():
        if value.shape != own[key].shape:
            raise ValueError(f"{checkpoint}: '{key}' has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(incoming, strict=False)
    return sorted(incoming)


def resolve_config(
    model_name: str,
    domain: Domain,
    config_files: Sequence[str | Path] = (),
    overrides: dict | None = None,
    config_root: Path = FINETUNE_CONFIGS,
    checkpoint: Path | None = None,
    domain_layers: bool = True,
) -> RunSpec:
    """The run configuration of ``model_name`` on ``domain`` (layers in the module docstring).

    ``domain_layers=False`` leaves out the per-domain files (layer 3): ``mmseqrec bench`` runs
    synthetic domains at real sizes with the configuration real domains get.

    With a ``checkpoint``, the architecture fields come from the checkpoint's config: a config
    layer may repeat them but not change them. The names of the feature sets it read
    (``text_feature``, ...) come from it too, unless a config layer sets them.
    """
    model_cls, config_cls = model_classes(model_name)
    layers: list[tuple[str, dict]] = []
    model_file = config_root / f"{model_name.lower()}.yaml"
    if model_file.exists():
        layers.append((str(model_file), load_yaml(model_file)))
    domain_files = []
    if domain.manifest.get("synthetic") and domain_layers:
        domain_files.append(config_root / "domains" / "synthetic.yaml")
    if domain_layers:
        domain_files.append(config_root / "domains" / f"{domain.name}.yaml")
    for path in domain_files:
        if path.exists():
            per_model = load_yaml(path).get(model_name.lower(), {})
            layers.append((f"{path} [{model_name.lower()}]", per_model))
    for path in config_files:
        layers.append((str(path), load_yaml(path)))
    if overrides:
        # Command-line model overrides are shared by all models of a comparison: each model
        # takes the keys it has (``check_overrides`` makes sure every key fits some model).
        own = {k: v for k, v in (overrides.get("model") or {}).items() if k in config_cls.__dataclass_fields__}
        layers.append(("command line", {**overrides, "model": own}))

    merged: dict = {"train": {}, "model": {}}
    for where, layer in layers:
        unknown = set(layer) - {"train", "model"}
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}; expected 'train' and 'model'")
        merged = deep_merge(merged, {k: v or {} for k, v in layer.items()})
    train = build_dataclass(TrainConfig, merged["train"], "train")
    model_values = dict(merged["model"])
    model_values.pop("name", None)
    stored = None
    if checkpoint is not None:
        stored = read_checkpoint_config(checkpoint)
        if stored.get("model_type", model_name.lower()) != model_name.lower():
            raise ConfigError(f"the checkpoint {checkpoint} holds a {stored['model_type']} model, not {model_name}")
        stored = stored.get("config", stored)
        # The feature sets the checkpoint was trained on (e.g. text_minilm) are the ones to read
        # on the target too, unless a config layer names others.
        for key in FEATURE_NAME_FIELDS:
            if key in stored and key in config_cls.__dataclass_fields__:
                model_values.setdefault(key, stored[key])
    from_domain = model_cls.domain_config(domain, model_values)
    fixed = sorted(set(model_values) & set(from_domain))
    if fixed:
        raise ConfigError(f"model.{fixed[0]} comes from the domain and cannot be set")
    if stored is not None:
        command_line = (overrides or {}).get("model") or {}
        for key in model_cls.architecture_fields:
            if key not in stored:
                continue
            if key in command_line and command_line[key] != stored[key]:
                raise ConfigError(f"model.{key}={command_line[key]} conflicts with the checkpoint {checkpoint} ({key}={stored[key]})")
            if key in from_domain and from_domain[key] != stored[key]:
                raise ConfigError(
                    f"the checkpoint {checkpoint} expects {key}={stored[key]}, but domain {domain.name} gives {from_domain[key]}"
                )
            model_values[key] = stored[key]
    model_values.update(from_domain)
    if "max_len" in config_cls.__dataclass_fields__:
        model_values.setdefault("max_len", train.max_len)
    model_config = build_dataclass(config_cls, model_values, "model")
    return RunSpec(model_name.lower(), train, model_config, checkpoint=checkpoint, label=model_name.lower())


#: Model config fields that every run takes from its domain (never given on the command line).
DOMAIN_FIELDS = ("num_items", "num_users", "feature_names", "feature_dims")


def check_overrides(model_names: Sequence[str], overrides: dict) -> None:
    """Every ``model.*`` override must be a field of at least one of the models run."""
    fields = set()
    for name in model_names:
        fields |= set(model_classes(name)[1].__dataclass_fields__)
    unknown = sorted(set(overrides.get("model") or {}) - fields)
    if unknown:
        raise ConfigError(
            f"command line: unknown model key(s) {', '.join(unknown)} for {', '.join(model_names)}; "
            f"valid keys: {', '.join(sorted(fields - set(DOMAIN_FIELDS)))}"
        )


def train_one(
    spec: RunSpec, domain: Domain, run_dir: Path, accelerator=None, run_info: dict | None = None, quiet: bool = False, resume: bool = False
) -> dict:
    """Train one run into ``run_dir``; with ``resume``, a finished run is read back and an
    interrupted one continues from its newest checkpoint."""
    if resume and (run_dir / "metrics.json").is_file() and (run_dir / "best").is_dir():
        return json.loads((run_dir / "metrics.json").read_text())
    model_cls, _ = model_classes(spec.model_name)
    set_seed(spec.train.seed)  # the seed fixes the initial weights too (torch seeds itself randomly)
    model = model_cls(spec.model_config)
    if spec.checkpoint is not None:
        loaded = load_transferable_weights(model, spec.checkpoint)
        source = spec.checkpoint_source or str(spec.checkpoint)
        run_info = {**(run_info or {}), "checkpoint": source, "transferred_tensors": len(loaded)}
    trainer = Trainer(model, domain, spec.train, run_dir, accelerator=accelerator, run_info=run_info, quiet=quiet, resume=resume)
    results = trainer.fit()
    trainer.accelerator.free_memory()
    return results


def summarise(results: Sequence[dict]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of the reported metrics."""
    row: dict[str, Any] = {"seeds": len(results), "track": results[0].get("track", "sequential")}
    if row["track"] == "topn":
        columns = TOPN_COLUMNS
    else:
        columns = REPORT_COLUMNS + (COLD_COLUMNS if all("test_cold" in r for r in results) else ())
    for column in columns:
        split, metric = column.split(" ")
        values = np.array([r[split][metric] for r in results], dtype=np.float64)
        row[column] = float(values.mean())
        row[column + " sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    row["best epoch"] = float(np.mean([r["best_epoch"] for r in results]))
    row["minutes"] = float(np.mean([run_seconds(r) for r in results]) / 60)
    return row


def run_seconds(results: dict) -> float:
    """A run's wall clock. Runs resumed before 2026-12-03 recorded only their last process in
    ``wall_clock_seconds``; their epochs' own timings (``history``) bound the whole from below."""
    epochs = sum(entry.get("seconds", 0.0) for entry in results.get("history", []))
    return max(float(results["wall_clock_seconds"]), epochs)


def versus_best(protocol: Protocol) -> str:
    """The summary key of a row's paired difference to the best row (``mmseqrec.significance``):
    test NDCG at the track's ``paired_k`` (``test ndcg@10 vs best``; top-N ``test ndcg@20 vs best``)."""
    return f"test ndcg@{protocol.paired_k} vs best"


def add_differences_to_best(summary: dict[str, dict], run_dirs: dict[str, list[Path]], resamples: int = 5000) -> None:
    """Give every row of ``summary`` its paired-bootstrap difference in test NDCG@k (k = 10, or
    20 on the top-N track) to the best row (None for the best row); nothing with fewer than two rows."""
    if len(run_dirs) < 2:
        return
    protocol = track_of(next(iter(summary.values())))
    for label, difference in differences_to_best(run_dirs, "test", protocol.paired_k, resamples).items():
        summary[label][versus_best(protocol)] = None if difference is None else asdict(difference)


def format_summary_table(summary: dict[str, dict]) -> str:
    """Markdown table, mean (± sd when several seeds) per model, and, when the rows have it, each
    row's difference in test NDCG@10 (top-N: @20) to the best row with its 95% bootstrap interval
    over users."""
    protocol = track_of(next(iter(summary.values()), {}))
    key = versus_best(protocol)
    paired = any(key in row for row in summary.values())
    extra = f" | {key} [95% CI]" if paired else ""
    columns = max((report_columns(row) for row in summary.values()), key=len, default=REPORT_COLUMNS)
    header = "| model | " + " | ".join(columns) + " | best epoch | min/run" + extra + " |"
    lines = [header, "|---|" + "---|" * (len(columns) + 2 + int(paired))]
    for name, row in summary.items():
        cells = []
        for column in columns:
            if column not in row:
                cells.append("-")
                continue
            mean, sd = row[column], row[column + " sd"]
            cells.append(f"{mean:.4f} ± {sd:.4f}" if row["seeds"] > 1 else f"{mean:.4f}")
        best = "-" if math.isnan(row["best epoch"]) or row["best epoch"] < 0 else f"{row['best epoch']:.0f}"
        versus = ""
        if paired:
            difference = row.get(key)
            versus = " | best" if difference is None else f" | {PairedDifference(**difference).format()}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best} | {row['minutes']:.1f}{versus} |")
    table = "\n".join(lines)
    if COLD_COLUMNS[0] in columns:
        table += (
            "\n\ntest_cold: the test rows whose target is a cold item (held out of training, `mmseqrec prepare cold`);"
            " test_warm: the other test rows."
        )
    if paired:
        table += (
            f"\n\nLast column: mean over users of (this row's test NDCG@{protocol.paired_k} - the best row's), each averaged over"
            " its seeds, with the 95% interval of a paired bootstrap over the test users."
        )
    return table


VARIANTS = ("scratch", "peft", "full")


def plan_runs(args: argparse.Namespace, domain, overrides: dict) -> dict:
    """One RunSpec per requested model (variant), with its starting point and stage resolved.

    ``args`` holds what ``finetune`` and ``compare`` parse: ``model`` (comma-separated names,
    optionally ``@scratch`` / ``@peft`` / ``@full``), ``mode``, ``checkpoint``, ``from_scratch``,
    ``full`` and ``config``."""
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
                checkpoint = model_folder(args.checkpoint)  # a run or model folder, or downloaded from the Hub
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


def run_domain(args: argparse.Namespace, domain, specs: dict, output: Path, accelerator) -> dict:
    """Train every planned model on one domain; print and save its table; return the summary.
    ``args`` adds ``seed``, ``seeds``, ``quiet``, ``resume`` and ``command`` to ``plan_runs``'s."""
    synthetic = " (synthetic)" if domain.manifest.get("synthetic") else ""
    tracks = {entry: model_classes(spec.model_name)[0].track for entry, spec in specs.items()}
    if len(set(tracks.values())) > 1:
        raise ValueError(
            "one table holds one track: " + ", ".join(f"{entry} ({track})" for entry, track in tracks.items())
            + "; the sequential models rank one next item per user, the top-N models every held-out item of a per-user split, "
            "so their numbers do not compare. Run them in two commands."
        )
    track = next(iter(tracks.values()))
    domain.require_track(track, ", ".join(specs))
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
        if track == "topn":
            test_users = int((domain.topn["test"].counts() > 0).sum())
            title = (f"{domain.name}{synthetic}: {test_users:,} test users (top-N split), full ranking over {domain.num_items:,} items "
                     "with each user's training and valid items masked")
        else:
            title = f"{domain.name}{synthetic}: {len(domain.splits['test']):,} test users, full ranking over {domain.num_items:,} items"
        (output / "results.md").write_text(f"{title}\n\n{table}\n")
        (output / "results.json").write_text(json.dumps({"domain": domain.name, "summary": summary, "runs": all_results}, indent=2) + "\n")
        print(f"\n{title}\n\n{table}\n\nruns and summary: {output}")
    return summary


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
