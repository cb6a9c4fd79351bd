"""Training throughput: rows per second of ``loss(); backward(); step()`` for one model.

Fine-tuning builds the model as ``finetune`` builds it for a real domain
(``finetune/configs/<model>.yaml`` over the dataclass defaults, so length-grouped batches; the
small-model settings of ``domains/synthetic.yaml`` are left out); pretraining builds it from a
``pretrain/configs`` file's model and train sections, as ``pretrain/run.py`` does, on the
mixture of the given domains. Weights are random (throughput does not depend on them). MISSRec
discovers its interests first (timed apart, ``interest_seconds``), as at the start of an epoch.
``warmup`` steps are run untimed, then ``steps`` timed steps; rows/s counts the rows of the
timed steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate.utils import set_seed

from mmseqrec.config import build_dataclass, load_yaml, parse_overrides
from mmseqrec.data.loading import load_domain, load_mixture
from mmseqrec.models import model_classes
from mmseqrec.models.base import apply_stage
from mmseqrec.runs import resolve_config
from mmseqrec.training import TrainConfig, make_adam, make_loader

PRETRAIN_CONFIGS = Path(__file__).resolve().parents[2] / "pretrain" / "configs"


def build(model: str, domains: list[str], data_dir: str, stage: str, pretrain_config: str | None, overrides: list[str]):
    """The domain, the model (stage applied) and its TrainConfig."""
    if stage == "pretrain":
        domain = load_mixture(domains, data_dir=data_dir)
        config = load_yaml(PRETRAIN_CONFIGS / (pretrain_config or f"{model}-fhckm.yaml"))
        extra = parse_overrides(overrides)
        section = {**(config.get("model") or {}), **(extra.get("model") or {})}
        section.pop("name", None)
        train = build_dataclass(TrainConfig, {"stage": "pretrain", "validate": False, "group_by_length": False,
                                              **(config.get("train") or {}), **(extra.get("train") or {})}, "train")
        model_cls, config_cls = model_classes(model)
        model_config = build_dataclass(config_cls, {**section, **model_cls.domain_config(domain, section)}, "model")
    else:
        domain = load_domain(domains[0], data_dir=data_dir)
        spec = resolve_config(model, domain, overrides=parse_overrides(overrides), domain_layers=False)
        model_cls, _ = model_classes(model)
        train, model_config = spec.train, spec.model_config
    set_seed(train.seed)
    net = model_cls(model_config)
    net.attach_domain(domain)
    apply_stage(net, stage if stage == "pretrain" else train.stage)
    return domain, net, train


def _batches(loader):
    """The loader's batches, epoch after epoch (a small domain may have fewer than the steps)."""
    epoch = 0
    while True:
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure(model: str, domains: list[str], data_dir: str, stage: str = "finetune", steps: int = 5, warmup: int = 1,
            pretrain_config: str | None = None, overrides: list[str] | None = None) -> dict:
    domain, net, train = build(model, domains, data_dir, stage, pretrain_config, overrides or [])
    start = time.perf_counter()
    net.on_epoch_start(0)
    interest_seconds = time.perf_counter() - start
    optimizer = make_adam(net, train, torch.device("cpu"))
    loader = make_loader(domain, "train", train.batch_size, train.max_len, True, train.seed,
                         group_by_length=train.group_by_length and not train.batch_by_domain)
    net.train()
    rows = done = 0
    seconds = 0.0
    for batch in _batches(loader):
        start = time.perf_counter()
        loss = net.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        done += 1
        if done > warmup:
            seconds += elapsed
            rows += int(batch["target"].numel())
        if done >= warmup + steps:
            break
    return {
        "model": model, "stage": stage, "domain": domain.name, "users": domain.num_users, "train_rows": len(domain.splits["train"]),
        "items": domain.num_items, "batch_size": train.batch_size, "group_by_length": bool(train.group_by_length),
        "timed_steps": done - min(done, warmup), "rows": rows, "seconds": seconds,
        "rows_per_second": rows / seconds if seconds else float("nan"), "interest_seconds": interest_seconds,
        "epoch_steps": len(loader),
    }
