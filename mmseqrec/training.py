"""The one training loop, on accelerate: the same code on one CPU, one GPU or many processes.

``Trainer.fit()`` trains a model on a domain's train split, evaluates on valid after every
epoch with full ranking, stops early on valid NDCG@10, restores the best weights and evaluates
valid and test with them. Everything a run produces lands in its run folder:

    <run_dir>/config.yaml    the resolved configuration (train, model, data)
    <run_dir>/train.log      one line per epoch, and the final tables
    <run_dir>/metrics.json   best epoch, valid and test metrics, popularity breakdown, history
    <run_dir>/best/          the best weights (safetensors + config.json, ``from_pretrained``-able)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmseqrec.data.batching import ExampleIndex, SequenceCollator
from mmseqrec.data.loading import Domain
from mmseqrec.metrics import DEFAULT_KS, bucket_breakdown, metrics_from_ranks, popularity_buckets, rank_targets
from mmseqrec.models.base import Recommender, apply_stage, check_stage

VALID_METRIC = "ndcg@10"


@dataclass
class TrainConfig:
    """How a model is trained and evaluated.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: training examples per step (per process; the global batch is this times the
            number of processes).
        eval_batch_size: users per evaluation batch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        patience: stop after this many epochs without an improvement of valid NDCG@10 (a tie
            counts as an improvement, so the later epoch is kept, as in RecBole).
        seed: seeds Python, NumPy, torch and the data order.
        max_len: histories keep their most recent ``max_len`` items.
        stage: ``finetune`` (all parameters), ``peft`` (the model's parameter-efficient set) or
            ``pretrain``.
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (accelerate autocast).
        mask_history: remove the items of the history from the ranking (off, as in the papers).
        eval_block_size: items scored at once in evaluation (bounds memory for huge catalogues).
        grad_clip: clip the gradient norm to this value; 0 disables clipping.
        num_workers: DataLoader worker processes (batches are cheap vectorised gathers; 0 is fine).
        log_every: update the progress bar's loss every this many steps.
        validate: evaluate on valid after every epoch, stop early and restore the best epoch
            (fine-tuning); off for pretraining, which trains all ``epochs`` and keeps the last.
        save_every: also save the model every this many epochs (``epoch-<n>/``); 0 never.
    """

    epochs: int = 300
    batch_size: int = 2048
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    seed: int = 2020
    max_len: int = 50
    stage: str = "finetune"
    mixed_precision: str = "no"
    mask_history: bool = False
    eval_block_size: int = 65536
    grad_clip: float = 0.0
    num_workers: int = 0
    log_every: int = 10
    validate: bool = True
    save_every: int = 0


class _LossModule(torch.nn.Module):
    """Routes ``forward`` to ``model.loss`` so DistributedDataParallel sees the training call."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


def make_loader(domain: Domain, split: str, batch_size: int, max_len: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    examples = domain.splits[split]
    return DataLoader(
        ExampleIndex(len(examples)),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=SequenceCollator(examples, max_len),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=num_workers,
        drop_last=False,
    )


@torch.no_grad()
def evaluate(
    model: Recommender,
    loader: DataLoader,
    accelerator: Accelerator,
    num_items: int,
    mask_history: bool = False,
    block_size: int = 65536,
    ks=DEFAULT_KS,
) -> dict[str, Any]:
    """Full-ranking evaluation of every row of ``loader`` (already prepared by ``accelerator``).

    Each process ranks its share of the users; only ranks, targets and row ids are gathered
    (``gather_for_metrics`` drops the duplicates the distributed sampler adds to even out the
    last batch), so every process returns the same metrics over exactly the dataset's rows.
    """
    was_training = model.training
    model.eval()
    ranks, targets, rows = [], [], []
    for batch in loader:
        with accelerator.autocast():
            seq_repr = model(batch)
        rank = rank_targets(
            lambda first, end: model.score_items(seq_repr, first, end),
            batch["target"],
            num_items,
            block_size=block_size,
            history=batch["item_seq"] if mask_history else None,
        )
        rank, target, row = accelerator.gather_for_metrics((rank, batch["target"], batch["row"]))
        ranks.append(rank.cpu())
        targets.append(target.cpu())
        rows.append(row.cpu())
    model.train(was_training)
    ranks_np = torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)
    return {
        "metrics": metrics_from_ranks(ranks_np, ks),
        "ranks": ranks_np,
        "targets": torch.cat(targets).numpy() if targets else np.zeros(0, dtype=np.int64),
        "rows": torch.cat(rows).numpy() if rows else np.zeros(0, dtype=np.int64),
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model_atomically(model: Recommender, target: Path) -> None:
    """``save_pretrained`` into a temporary sibling folder, then rename it into place."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def make_accelerator(mixed_precision: str = "no", cpu: bool = False) -> Accelerator:
    """The accelerator every entry point uses.

    Buffers are not broadcast by DDP at every step: the large ones (item features) never change,
    and MISSRec broadcasts its interest tables itself once per epoch.
    """
    return Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


class Trainer:
    """Train ``model`` on ``domain`` with ``config``, writing everything into ``run_dir``."""

    def __init__(
        self,
        model: Recommender,
        domain: Domain,
        config: TrainConfig,
        run_dir: str | Path,
        accelerator: Accelerator | None = None,
        run_info: dict | None = None,
        quiet: bool = False,
    ):
        check_stage(config.stage)
        self.model = model
        self.domain = domain
        self.config = config
        self.run_dir = Path(run_dir)
        self.accelerator = accelerator or make_accelerator(config.mixed_precision)
        self.run_info = run_info or {}
        self.quiet = quiet
        self.logger = self._make_logger()

    # ---------------------------------------------------------------------------------------
    def _make_logger(self) -> logging.Logger:
        logger = logging.getLogger(f"mmseqrec.run.{id(self)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.run_dir / "train.log")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
        return logger

    def log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            self.logger.info(message)
            if not self.quiet:
                tqdm.write(message)

    # ---------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        started = time.time()
        model = self.model
        model.attach_domain(self.domain)
        trainable = apply_stage(model, cfg.stage) if model.trainable else 0
        total = sum(p.numel() for p in model.parameters())
        self.log(f"{type(model).__name__} on {self.domain.describe()}")
        self.log(f"stage {cfg.stage}: {trainable:,} trainable parameters of {total:,}")

        if acc.is_main_process:
            resolved = {"train": asdict(cfg), "model": {"name": type(model).__name__, **asdict(model.config)}, **self.run_info}
            _atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

        valid_loader = make_loader(self.domain, "valid", cfg.eval_batch_size, cfg.max_len, False, cfg.seed)
        test_loader = make_loader(self.domain, "test", cfg.eval_batch_size, cfg.max_len, False, cfg.seed)
        history: list[dict] = []
        best_epoch, best_score, best_state = -1, -math.inf, None

        if model.trainable:
            train_loader = make_loader(self.domain, "train", cfg.batch_size, cfg.max_len, True, cfg.seed, cfg.num_workers)
            optimizer = torch.optim.Adam(
                [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
            )
            loss_module, optimizer, train_loader, valid_loader, test_loader = acc.prepare(
                _LossModule(model), optimizer, train_loader, valid_loader, test_loader
            )
            stale = 0
            for epoch in range(cfg.epochs):
                epoch_start = time.time()
                model.on_epoch_start(epoch, acc)
                mean_loss = self._train_epoch(loss_module, optimizer, train_loader, epoch)
                if cfg.save_every and (epoch + 1) % cfg.save_every == 0 and acc.is_main_process:
                    save_model_atomically(model, self.run_dir / f"epoch-{epoch + 1}")
                if not cfg.validate:
                    history.append({"epoch": epoch, "loss": mean_loss, "seconds": time.time() - epoch_start})
                    self.log(f"epoch {epoch:3d}  loss {mean_loss:.4f}  ({time.time() - epoch_start:.1f}s)")
                    continue
                valid = evaluate(model, valid_loader, acc, self.domain.num_items, cfg.mask_history, cfg.eval_block_size)
                score = valid["metrics"][VALID_METRIC]
                improved = score >= best_score
                if improved:
                    best_epoch, best_score, stale = epoch, score, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                else:
                    stale += 1
                history.append({"epoch": epoch, "loss": mean_loss, "valid": valid["metrics"], "seconds": time.time() - epoch_start})
                self.log(
                    f"epoch {epoch:3d}  loss {mean_loss:.4f}  valid ndcg@10 {score:.4f}  recall@10 "
                    f"{valid['metrics']['recall@10']:.4f}  ({time.time() - epoch_start:.1f}s)" + ("  *" if improved else "")
                )
                if stale > cfg.patience:
                    self.log(f"no improvement for {stale} epochs: stopping; best epoch {best_epoch}")
                    break
            if best_state is not None:
                model.load_state_dict(best_state)
            if not cfg.validate:
                return self._finish_pretraining(model, history, trainable, started)
        else:
            # Nothing to train (MostPop): prepare the loaders and put the buffers on the device.
            model.to(acc.device)
            valid_loader, test_loader = acc.prepare(valid_loader, test_loader)

        valid = evaluate(model, valid_loader, acc, self.domain.num_items, cfg.mask_history, cfg.eval_block_size)
        test = evaluate(model, test_loader, acc, self.domain.num_items, cfg.mask_history, cfg.eval_block_size)
        buckets = popularity_buckets(self.domain.train_item_counts())
        results = {
            "model": type(model).__name__,
            "domain": self.domain.name,
            "seed": cfg.seed,
            "stage": cfg.stage,
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "trainable_parameters": trainable,
            "valid": valid["metrics"],
            "test": test["metrics"],
            "test_by_popularity": bucket_breakdown(test["ranks"], test["targets"], buckets),
            "evaluated_users": {"valid": int(len(valid["rows"])), "test": int(len(test["rows"]))},
            "wall_clock_seconds": time.time() - started,
            "num_processes": acc.num_processes,
            "history": history,
        }
        if acc.is_main_process:
            _atomic_write_text(self.run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
            save_model_atomically(model, self.run_dir / "best")
        self.log(
            f"test  recall@10 {test['metrics']['recall@10']:.4f}  ndcg@10 {test['metrics']['ndcg@10']:.4f}  "
            f"recall@50 {test['metrics']['recall@50']:.4f}  ndcg@50 {test['metrics']['ndcg@50']:.4f}  (best epoch {best_epoch})"
        )
        acc.wait_for_everyone()
        return results

    def _finish_pretraining(self, model: Recommender, history: list[dict], trainable: int, started: float) -> dict[str, Any]:
        acc = self.accelerator
        results = {
            "model": type(model).__name__,
            "domain": self.domain.name,
            "domains": self.domain.domain_names,
            "seed": self.config.seed,
            "stage": self.config.stage,
            "epochs_run": len(history),
            "trainable_parameters": trainable,
            "final_loss": history[-1]["loss"] if history else None,
            "wall_clock_seconds": time.time() - started,
            "num_processes": acc.num_processes,
            "history": history,
        }
        if acc.is_main_process:
            save_model_atomically(model, self.run_dir / "final")
            _atomic_write_text(self.run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
        self.log(f"pretraining done: {len(history)} epochs, final loss {results['final_loss']:.4f}; model in {self.run_dir / 'final'}")
        acc.wait_for_everyone()
        return results

    def _train_epoch(self, loss_module, optimizer, loader, epoch: int) -> float:
        cfg, acc = self.config, self.accelerator
        loss_module.train()
        total, steps = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=self.quiet or not acc.is_local_main_process)
        for step, batch in enumerate(bar):
            loss = loss_module(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(loss_module.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.item()
            steps += 1
            if step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{total / steps:.4f}")
        return total / max(steps, 1)
