"""The one training loop, on accelerate: the same code on one CPU, one GPU or many processes.

``Trainer.fit()`` trains a model on a domain's train split, evaluates on valid after every
epoch with full ranking, stops early on valid NDCG@10, restores the best weights and evaluates
valid and test with them. A general top-N model (``model.track == "topn"``: LightGCN, VBPR, ...)
trains on the domain's top-N split, on (user, positive, negative) batches, and is ranked by the
same evaluator with each user's held-out items as targets and the training items masked; it
stops early on valid Recall@20 (``metrics.TOPN``). Everything a run produces lands in its run
folder:

    <run_dir>/config.yaml    the resolved configuration (train, model, data)
    <run_dir>/train.log      one line per epoch, and the final tables
    <run_dir>/metrics.json   best epoch, valid and test metrics, popularity breakdown, history
                             (a cold-start domain adds test_cold / test_warm: the test rows whose
                             target is a held-out item, and the others)
    <run_dir>/ranks.npz      the target's rank of every valid and test row (paired significance tests;
                             top-N: (users, held-out items) ranks, 0-padded)
    <run_dir>/best/          the best weights (safetensors + config.json + model card README.md,
                             ``from_pretrained``-able and publishable with ``mmseqrec publish``)
    <run_dir>/state/         resumable training state while the run is going (``checkpointing``)
    <run_dir>/logs/          experiment-tracker files, with ``train.log_with`` (e.g. TensorBoard
                             events): per epoch train/loss, train/lr, epoch/seconds and, when the
                             run validates, valid/<metric> (valid/ndcg@10, ...); step = epoch

A run interrupted at any point continues exactly with ``Trainer(..., resume=True)`` (the CLIs'
``--resume``). A non-finite loss or gradient stops the run before the update, with a message
that names the step, the batch and the loss terms; the last checkpoint stays as it was.
"""

from __future__ import annotations

import json
import logging
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
from accelerate.tracking import get_available_trackers
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, LoggerType, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmseqrec import checkpointing
from mmseqrec.checkpointing import CheckpointError, TrainingProgress
from mmseqrec.config import ConfigError
from mmseqrec.data.batching import ExampleIndex, HeldOutCollator, PairBatchSampler, PairCollator, SequenceCollator
from mmseqrec.data.format import Examples
from mmseqrec.data.loading import Domain
from mmseqrec.metrics import PROTOCOLS, SEQUENTIAL, Protocol, bucket_breakdown, metrics_from_ranks, popularity_buckets, rank_targets
from mmseqrec.models.base import Recommender, apply_stage, check_stage
from mmseqrec.savedmodel import model_card
from mmseqrec.significance import save_ranks

#: The folder inside a run folder where experiment trackers keep their files.
LOG_DIR = "logs"
#: The project name the trackers get: TensorBoard writes into ``<run_dir>/logs/mmseqrec/``, wandb
#: and the other hosted trackers file every run under one project of this name.
TRACKING_PROJECT = "mmseqrec"


@dataclass
class TrainConfig:
    """How a model is trained and evaluated.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: training examples per step (per process; the global batch is this times the
            number of processes); for the top-N models, (user, positive, negative) triples.
        eval_batch_size: users per evaluation batch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        patience: stop after this many epochs without an improvement of the valid metric
            (NDCG@10; Recall@20 for the top-N models) (a tie counts as an improvement, so the
            later epoch is kept, as in RecBole).
        seed: seeds Python, NumPy, torch and the data order.
        max_len: histories keep their most recent ``max_len`` items.
        stage: ``finetune`` (all parameters), ``peft`` (the model's parameter-efficient set) or
            ``pretrain``.
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (accelerate autocast).
        mask_history: remove the items of the history from the ranking (off, as in the papers).
            The top-N models always rank with the user's training items (for test, also the
            valid items) masked, as MMRec and DiffMM do; this switch does not apply to them.
        eval_block_size: items scored at once in evaluation (bounds memory for huge catalogues).
        grad_clip: clip the gradient norm to this value; 0 disables clipping.
        num_workers: DataLoader worker processes (batches are cheap vectorised gathers; 0 is fine).
        log_every: update the progress bar's loss every this many steps.
        validate: evaluate on valid after every epoch, stop early and restore the best epoch
            (fine-tuning); off for pretraining, which trains all ``epochs`` and keeps the last.
        save_every: also save the model every this many epochs (``epoch-<n>/``); 0 never.
        warmup_steps: raise the learning rate linearly over this many batches (of ``batch_size``
            examples, counted over all processes); 0 keeps it constant, as the papers do.
        checkpoint_every: also write a resumable checkpoint every this many optimiser steps
            (mid-epoch included); 0 only at the end of every epoch.
        batch_by_domain: on a mixture of domains, fill every training batch with rows of one
            domain (shuffled within the domain; batch order shuffled across domains). In-batch
            contrastive pretraining then draws its negatives from the same catalogue as the
            positive, instead of mostly from other domains, which are easy to reject and teach
            little about ranking within a domain. Off by default (the papers mix domains).
        group_by_length: fill every training batch with rows of similar history length (rows
            are shuffled, cut into pools of ``length_pool_batches`` batches, each pool sorted by
            length and cut into batches, and the batch order shuffled). Every batch is padded
            only to its own longest history, so an epoch costs a fraction of the padded work:
            5.1-6.4x less time for SASRec on the CPU (BENCHMARKS.md). On by default for
            training from a domain's rows (fine-tuning); SASRec's test metrics stayed within the
            seed spread of uniform batches over 3 seeds on the real Scientific subset
            (docs/scientific-subset.md). ``false`` draws batches
            uniformly, as the papers do. Pretraining (``pretrain/run.py``) defaults to
            ``false``: its in-batch negatives would otherwise all share a length. Ignored when
            ``batch_by_domain`` is on.
        length_pool_batches: batches per pool when ``group_by_length`` is on (16).
        keep_checkpoints: complete checkpoints kept in ``<run_dir>/state/`` (2: the newest can be
            lost to a crash while the one before stays); 0 writes none. A fine-tuning run deletes
            its state when it finishes (``best/`` and ``metrics.json`` are its product); a
            pretraining run keeps it, so ``--resume train.epochs=<more>`` can extend it.
        fused_adam: use the fused Adam kernel (one kernel for all parameters); None (default)
            turns it on where the parameters live on a GPU and off on the CPU. Same update as
            the loop-based Adam up to float rounding (``tests/test_gpu_path.py``).
        compile: ``torch.compile`` the training step (model forward and loss). Off by default:
            compiling takes tens of seconds and pays back only on a GPU over long runs. Batches
            vary in length (``group_by_length``), so shapes are compiled as dynamic.
        compile_backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` traces
            without generating code, which the tests use).
        log_with: experiment trackers that receive, after every epoch, the mean training loss
            (``train/loss``), the learning rate at the end of the epoch (``train/lr``), the
            epoch's wall-clock seconds including validation (``epoch/seconds``) and every valid
            metric (``valid/ndcg@10``, ``valid/recall@50``, ...; not when pretraining, which does
            not validate), with the epoch as the step, plus the run's configuration as
            hyperparameters. A tracker name accelerate supports (``tensorboard``, ``wandb``,
            ``mlflow``, ``aim``, ``comet_ml``, ...), several comma-separated, or ``all`` (every
            supported tracker that is installed). None (the default), ``""`` or ``none``: no
            tracker. Trackers that keep local files (TensorBoard, Aim, MLflow) write them into
            ``<run_dir>/logs/`` (``tensorboard --logdir <run_dir>/logs``, or ``--logdir`` on a
            whole output folder to compare its runs); hosted ones follow their own settings. The
            tracker's package must be installed (TensorBoard: ``pip install 'mmseqrec[tracking]'``).
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
    warmup_steps: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    batch_by_domain: bool = False
    group_by_length: bool = True
    length_pool_batches: int = 16
    fused_adam: bool | None = None
    compile: bool = False
    compile_backend: str = "inductor"
    log_with: str | None = None


class NonFiniteLossError(FloatingPointError):
    """The training loss or gradient became NaN or infinite."""


class _LossModule(torch.nn.Module):
    """Routes ``forward`` to ``model.loss_terms`` so DistributedDataParallel sees the training call."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model.loss_terms(batch)


class DomainBatchSampler:
    """Batches of row indices, each batch from a single domain of a mixture.

    Every epoch shuffles the rows of each domain, cuts them into batches (a domain's last batch
    may be short) and shuffles the order of all batches, with a generator seeded by (seed,
    epoch), so an epoch's batches are the same when a run is resumed.
    """

    def __init__(self, row_domain: np.ndarray, batch_size: int, seed: int):
        self.groups = [np.flatnonzero(row_domain == d) for d in np.unique(row_domain)]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        # accelerate's multi-process wrapper reaches set_epoch through ``.sampler``.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        batches = []
        for rows in self.groups:
            rows = rows[rng.permutation(rows.size)]
            batches += [rows[i : i + self.batch_size].tolist() for i in range(0, rows.size, self.batch_size)]
        for k in rng.permutation(len(batches)):
            yield batches[k]

    def __len__(self) -> int:
        return sum(-(-rows.size // self.batch_size) for rows in self.groups)


class LengthGroupedBatchSampler:
    """Batches of row indices whose histories have similar lengths.

    Every epoch shuffles all rows with a generator seeded by (seed, epoch) (so a resumed run
    sees the same batches), cuts them into pools of ``pool_batches`` batches, sorts each pool by
    history length, cuts it into batches and shuffles the order of all batches. Pools keep some
    randomness in which rows meet; sorting within a pool makes each batch's padded length close
    to its rows' real lengths.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, pool_batches: int = 16):
        if pool_batches < 1:
            raise ValueError(f"length_pool_batches must be >= 1, got {pool_batches}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.pool = pool_batches * batch_size
        self.seed = seed
        self.epoch = 0
        self.sampler = self  # accelerate reaches set_epoch through ``.sampler``

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        rows = rng.permutation(self.lengths.size)
        batches = []
        for start in range(0, rows.size, self.pool):
            pool = rows[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size].tolist() for i in range(0, pool.size, self.batch_size)]
        for k in rng.permutation(len(batches)):
            yield batches[k]

    def __len__(self) -> int:
        # Pools are cut separately, so a short last batch can occur at the end of every pool.
        full, rest = divmod(self.lengths.size, self.pool)
        return full * -(-self.pool // self.batch_size) + -(-rest // self.batch_size)


def make_loader(
    domain: Domain, split: str, batch_size: int, max_len: int, shuffle: bool, seed: int, num_workers: int = 0,
    by_domain: bool = False, group_by_length: bool = False, length_pool_batches: int = 16,
) -> DataLoader:
    """The loader of one split. Training loaders (``shuffle``) draw uniform batches unless
    ``by_domain`` or ``group_by_length`` asks otherwise; evaluation loaders visit the rows in
    order of history length, which changes no score (every row is scored on its own) and pads
    each batch only as far as its rows need."""
    examples = domain.splits[split]
    if by_domain and group_by_length:
        raise ValueError("train.batch_by_domain and train.group_by_length cannot both be on")
    # A DataLoader without a generator draws its workers' base seed from torch's global RNG at
    # every iter(); a resumed epoch starts its iterator at another point of that stream than the
    # uninterrupted run did, and the dropout masks after it would differ. Every training loader
    # therefore has its own generator.
    if group_by_length and shuffle:
        return DataLoader(
            ExampleIndex(len(examples)),
            batch_sampler=LengthGroupedBatchSampler(np.minimum(examples.lengths(), max_len), batch_size, seed, length_pool_batches),
            collate_fn=SequenceCollator(examples, max_len),
            generator=torch.Generator().manual_seed(seed),
            num_workers=num_workers,
        )
    if not shuffle:
        return ranking_loader(examples, batch_size, max_len, num_workers)
    if by_domain and shuffle and len(domain.domain_names) > 1:
        row_domain = domain.item_domain[examples.target]
        return DataLoader(
            ExampleIndex(len(examples)),
            batch_sampler=DomainBatchSampler(row_domain, batch_size, seed),
            collate_fn=SequenceCollator(examples, max_len),
            generator=torch.Generator().manual_seed(seed),
            num_workers=num_workers,
        )
    return DataLoader(
        ExampleIndex(len(examples)),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=SequenceCollator(examples, max_len),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=num_workers,
        drop_last=False,
    )


def make_adam(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam over the trainable parameters; fused (one kernel) where ``cfg.fused_adam`` asks, by
    default on a GPU."""
    fused = cfg.fused_adam if cfg.fused_adam is not None else torch.device(device).type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=bool(fused))


def topn_loader(domain: Domain, split: str, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    """A loader of the top-N split: training (``shuffle``) gives every training pair once per
    epoch with a uniform negative (``PairBatchSampler``); valid and test give the users with
    held-out items in that split, with their training items masked (test: valid items too)."""
    domain.require_track("topn", "a top-N loader")
    topn = domain.topn
    if shuffle:
        sampler = PairBatchSampler(topn["train"], domain.num_items, batch_size, seed)
        return DataLoader(ExampleIndex(len(topn["train"])), batch_sampler=sampler, collate_fn=PairCollator(sampler), num_workers=num_workers)
    masked = [topn["train"]] + ([topn["valid"]] if split == "test" else [])
    collator = HeldOutCollator(topn[split], masked)
    return DataLoader(ExampleIndex(len(collator)), batch_size=batch_size, shuffle=False, collate_fn=collator, num_workers=num_workers)


def track_loader(domain: Domain, track: str, split: str, config: "TrainConfig", shuffle: bool) -> DataLoader:
    """The loader of ``split`` for a model of ``track`` with the settings of ``config``."""
    if track == "topn":
        return topn_loader(domain, split, config.batch_size if shuffle else config.eval_batch_size, shuffle, config.seed,
                           config.num_workers if shuffle else 0)
    if not shuffle:
        return make_loader(domain, split, config.eval_batch_size, config.max_len, False, config.seed)
    return make_loader(
        domain, split, config.batch_size, config.max_len, True, config.seed, config.num_workers, by_domain=config.batch_by_domain,
        group_by_length=config.group_by_length and not config.batch_by_domain, length_pool_batches=config.length_pool_batches,
    )


def ranking_loader(examples: Examples, batch_size: int, max_len: int, num_workers: int = 0) -> DataLoader:
    """Batches of ``examples`` for scoring (evaluation, recommendation): every row once, in order
    of history length, which changes no score (every row is scored on its own) and pads each
    batch only as far as its rows need. Batches carry ``row``, the example's index."""
    order = np.argsort(np.minimum(examples.lengths(), max_len), kind="stable").tolist()
    return DataLoader(
        ExampleIndex(len(examples)), batch_size=batch_size, sampler=order,
        collate_fn=SequenceCollator(examples, max_len), num_workers=num_workers,
    )


@torch.no_grad()
def evaluate(
    model: Recommender,
    loader: DataLoader,
    accelerator: Accelerator,
    num_items: int,
    mask_history: bool = False,
    block_size: int = 65536,
    ks=None,
    protocol: Protocol = SEQUENTIAL,
) -> dict[str, Any]:
    """Full-ranking evaluation of every row of ``loader`` (already prepared by ``accelerator``).

    Each process ranks its share of the users; only ranks, targets and row ids are gathered
    (``gather_for_metrics`` drops the duplicates the distributed sampler adds to even out the
    last batch), so every process returns the same metrics over exactly the dataset's rows.
    A top-N batch (``targets`` (B, T), ``seen``) ranks every held-out item with the ``seen``
    items masked; its ranks are (rows, T), 0-padded. ``protocol`` names the metrics and
    cut-offs (``ks`` overrides the cut-offs).
    """
    was_training = model.training
    model.eval()
    ranks, targets, rows = [], [], []
    for batch in loader:
        with accelerator.autocast():
            seq_repr = model(batch)
        held_out = "targets" in batch  # the top-N track: several held-out items, training items masked
        target = batch["targets"] if held_out else batch["target"]
        rank = rank_targets(
            lambda first, end: model.score_items(seq_repr, first, end),
            target,
            num_items,
            block_size=block_size,
            history=batch["seen"] if held_out else (batch["item_seq"] if mask_history else None),
        )
        rank, target, row = accelerator.gather_for_metrics((rank, target, batch["row"]))
        ranks.append(rank.cpu())
        targets.append(target.cpu())
        rows.append(row.cpu())
    model.train(was_training)
    ranks_np = torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)
    return {
        "metrics": metrics_from_ranks(ranks_np, ks or protocol.ks, protocol.metrics),
        "ranks": ranks_np,
        "targets": torch.cat(targets).numpy() if targets else np.zeros(0, dtype=np.int64),
        "rows": torch.cat(rows).numpy() if rows else np.zeros(0, dtype=np.int64),
    }


def cold_and_warm(evaluated: dict[str, Any], cold_items: np.ndarray | None) -> dict[str, dict]:
    """``test_cold`` / ``test_warm``: the metrics of the rows whose target is a cold item (held out
    of training) and of the others, each with its row count; nothing for an ordinary domain."""
    if cold_items is None:
        return {}
    cold = cold_items[evaluated["targets"]]
    return {
        f"test_{kind}": {**metrics_from_ranks(evaluated["ranks"][rows]), "rows": int(rows.sum())}
        for kind, rows in (("cold", cold), ("warm", ~cold))
    }


def ranks_in_row_order(evaluated: dict[str, Any]) -> np.ndarray:
    """The ranks of ``evaluate``'s result indexed by row (processes may return rows out of order)."""
    ranks = np.empty((len(evaluated["rows"]), *evaluated["ranks"].shape[1:]), dtype=np.int64)
    ranks[evaluated["rows"]] = evaluated["ranks"]
    return ranks


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model_atomically(model: Recommender, target: Path, card: str | None = None) -> None:
    """``save_pretrained`` (and the model card, if given) into a temporary sibling folder, then
    rename it into place."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if card is not None:
        (staging / "README.md").write_text(card)  # save_pretrained keeps an existing card
    model.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def tracker_names(log_with: str | None) -> list[str]:
    """The accelerate trackers ``train.log_with`` asks for ([] for none).

    A ``ConfigError`` names an unknown tracker (listing the supported ones) or one whose package
    is not installed, so that a typo fails before training instead of logging nowhere.
    """
    requested = [name.strip().lower() for name in (log_with or "").split(",")]
    requested = list(dict.fromkeys(name for name in requested if name not in ("", "none")))
    supported = [tracker.value for tracker in LoggerType]
    unknown = [name for name in requested if name not in supported]
    if unknown:
        raise ConfigError(
            f"train.log_with: unknown tracker(s) {', '.join(unknown)}; use one of {', '.join(supported)}, "
            "several comma-separated, or none"
        )
    installed = sorted(str(tracker) for tracker in get_available_trackers())
    missing = [name for name in requested if name != "all" and name not in installed]
    if missing or (requested == ["all"] and not installed):
        raise ConfigError(
            f"train.log_with={log_with}: {', '.join(missing) or 'no supported tracker'} is not installed "
            f"(installed: {', '.join(installed) or 'none'}); TensorBoard comes with pip install 'mmseqrec[tracking]'"
        )
    return installed if "all" in requested else requested


def make_accelerator(mixed_precision: str = "no", cpu: bool = False, log_with: str | None = None) -> Accelerator:
    """The accelerator every entry point uses; ``log_with`` is ``TrainConfig.log_with``.

    Buffers are not broadcast by DDP at every step: the large ones (item features) never change,
    and MISSRec broadcasts its interest tables itself once per epoch.
    """
    trackers = tracker_names(log_with)
    return Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        log_with=trackers or None,
        # accelerate refuses file-based trackers without a logging folder; this one is a
        # placeholder, since one accelerator trains several runs and Trainer.fit points it at
        # each run's own <run_dir>/logs before starting the trackers.
        project_config=ProjectConfiguration(logging_dir=LOG_DIR) if trackers else None,
    )


def flat_config(values: dict | list | tuple, prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested configuration as one level of dotted keys (``train.lr``, ``data.domains.0``),
    the form trackers take hyperparameters in: TensorBoard accepts only bool, int, float and str
    values, so lists are numbered, other objects become strings and None is left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items() if isinstance(values, dict) else enumerate(values):
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list, tuple)):
            flat.update(flat_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def finish_accelerator(accelerator: Accelerator) -> None:
    """Close the process group once every process is done.

    Without this, a gloo worker can abort at interpreter exit ("terminate called without an
    active exception") while its communication threads are still being torn down, which turns a
    finished multi-process run into a failed command.
    """
    accelerator.wait_for_everyone()
    accelerator.end_training()


class Trainer:
    """Train ``model`` on ``domain`` with ``config``, writing everything into ``run_dir``.

    ``resume``: False starts from the beginning (refused if ``run_dir`` holds the state of an
    unfinished run); True continues from the newest complete checkpoint in ``run_dir/state``
    (from the beginning if there is none); a path names the checkpoint (or run folder) to
    continue from.
    """

    def __init__(
        self,
        model: Recommender,
        domain: Domain,
        config: TrainConfig,
        run_dir: str | Path,
        accelerator: Accelerator | None = None,
        run_info: dict | None = None,
        quiet: bool = False,
        resume: bool | str | Path = False,
    ):
        check_stage(config.stage)
        self.model = model
        self.domain = domain
        self.config = config
        self.run_dir = Path(run_dir)
        self.accelerator = accelerator or make_accelerator(config.mixed_precision, log_with=config.log_with)
        # The accelerator decides which trackers run; one made without those the config asks for
        # would log nowhere without a word.
        absent = set(tracker_names(config.log_with)) - {str(tracker) for tracker in self.accelerator.log_with}
        if absent:
            raise ConfigError(
                f"train.log_with asks for {', '.join(sorted(absent))}, which the accelerator was made without; "
                "make it with make_accelerator(..., log_with=train.log_with)"
            )
        self.run_info = run_info or {}
        self.quiet = quiet
        self.resume = resume
        self.state_dir = self.run_dir / checkpointing.STATE_DIR
        self.logger = self._make_logger()
        # Set while fitting: where the run is, and the best weights so far (early stopping).
        self.progress = TrainingProgress()
        # The time the run would have started had it never been interrupted (see _elapsed_seconds).
        self._clock_origin = time.time()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.resolved: dict = {}  # the run's config.yaml, also the source of its model cards
        self._identity: dict = {}

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
        """Train and evaluate (see the module docstring); return what ``metrics.json`` holds."""
        try:
            return self._fit()
        finally:
            self._stop_trackers()  # also when the run stops early or raises: the files stay readable

    def _fit(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        self._clock_origin = time.time()
        model = self.model
        protocol = PROTOCOLS[model.track]
        self.domain.require_track(model.track, type(model).__name__)
        model.attach_domain(self.domain)
        if self.domain.cold_items is not None:  # a cold-start split: those items stay out of training
            model.hold_out_items(self.domain.cold_items)
        trainable = apply_stage(model, cfg.stage) if model.trainable else 0
        total = sum(p.numel() for p in model.parameters())
        self.log(f"{type(model).__name__} on {self.domain.describe()}")
        self.log(f"stage {cfg.stage}: {trainable:,} trainable parameters of {total:,}")

        self.resolved = {
            "train": asdict(cfg),
            "model": {"name": type(model).__name__, **asdict(model.config)},
            **self.run_info,
            "data_summary": domain_summary(self.domain),
        }
        if acc.is_main_process:
            _atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved, sort_keys=False))

        valid_loader = track_loader(self.domain, model.track, "valid", cfg, shuffle=False)
        test_loader = track_loader(self.domain, model.track, "test", cfg, shuffle=False)

        if model.trainable:
            train_loader = track_loader(self.domain, model.track, "train", cfg, shuffle=True)
            optimizer = make_adam(model, cfg, acc.device)
            warmup = max(cfg.warmup_steps, 0)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
            loss_module, optimizer, scheduler, train_loader, valid_loader, test_loader = acc.prepare(
                _LossModule(model), optimizer, scheduler, train_loader, valid_loader, test_loader
            )
            if cfg.compile:
                loss_module = torch.compile(loss_module, backend=cfg.compile_backend, dynamic=True)
            self._identity = checkpointing.run_identity(model, cfg, self.domain, acc.num_processes)
            self._start_or_resume()
            self._start_trackers()
            progress = self.progress
            while not self._training_done():
                epoch_start = time.time()
                if progress.batches_done == 0:  # a resumed epoch keeps the interests it started with
                    model.on_epoch_start(progress.epoch, acc)
                epoch = progress.epoch
                mean_loss = self._train_epoch(loss_module, optimizer, scheduler, train_loader)
                train_seconds = time.time() - epoch_start
                if cfg.save_every and (epoch + 1) % cfg.save_every == 0 and acc.is_main_process:
                    snapshot = {"model": type(model).__name__, "domain": self.domain.name, "epochs_run": epoch + 1, "final_loss": mean_loss}
                    save_model_atomically(model, self.run_dir / f"epoch-{epoch + 1}", card=self._model_card(snapshot))
                entry = {"epoch": epoch, "loss": mean_loss, "train_seconds": train_seconds}
                line, marker = f"epoch {epoch:3d}  loss {mean_loss:.4f}", ""
                if cfg.validate:
                    valid_start = time.time()
                    valid = evaluate(model, valid_loader, acc, self.domain.num_items, cfg.mask_history, cfg.eval_block_size, protocol=protocol)
                    entry["valid_seconds"] = time.time() - valid_start
                    score = valid["metrics"][protocol.valid_metric]
                    if score >= progress.best_score:  # a tie counts as an improvement
                        marker = "  *"
                        progress.best_epoch, progress.best_score, progress.stale = epoch, score, 0
                        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    else:
                        progress.stale += 1
                    entry["valid"] = valid["metrics"]
                    second = "recall@10" if protocol.valid_metric != "recall@10" else "ndcg@10"
                    line += f"  valid {protocol.valid_metric} {score:.4f}  {second} {valid['metrics'][second]:.4f}"
                entry["seconds"] = time.time() - epoch_start
                tracked = {"train/loss": mean_loss, "train/lr": optimizer.param_groups[0]["lr"], "epoch/seconds": entry["seconds"]}
                acc.log({**tracked, **{f"valid/{name}": value for name, value in entry.get("valid", {}).items()}}, step=epoch)
                progress.history.append(entry)
                self.log(f"{line}  ({entry['seconds']:.1f}s){marker}")
                progress.finish_epoch()
                self._save_checkpoint()
                if cfg.validate and progress.stale > cfg.patience:
                    self.log(f"no improvement for {progress.stale} epochs: stopping; best epoch {progress.best_epoch}")
            if self.best_state is not None:
                model.load_state_dict(self.best_state)
            if not cfg.validate:
                return self._finish_pretraining(model, progress.history, trainable)
        else:
            # Nothing to train (MostPop): prepare the loaders and put the buffers on the device.
            model.to(acc.device)
            valid_loader, test_loader = acc.prepare(valid_loader, test_loader)

        history = self.progress.history
        valid = evaluate(model, valid_loader, acc, self.domain.num_items, cfg.mask_history, cfg.eval_block_size, protocol=protocol)
        test = evaluate(model, test_loader, acc, self.domain.num_items, cfg.mask_history, cfg.eval_block_size, protocol=protocol)
        # Popularity buckets are defined by one target per row; the top-N rows have several.
        by_popularity = {}
        if model.track == "sequential":
            by_popularity = {"test_by_popularity": bucket_breakdown(test["ranks"], test["targets"], popularity_buckets(self.domain.train_item_counts()))}
        results = {
            "model": type(model).__name__,
            "domain": self.domain.name,
            "track": model.track,
            "seed": cfg.seed,
            "stage": cfg.stage,
            "best_epoch": self.progress.best_epoch,
            "epochs_run": len(history),
            "trainable_parameters": trainable,
            "valid": valid["metrics"],
            "test": test["metrics"],
            **cold_and_warm(test, self.domain.cold_items),
            **by_popularity,
            "evaluated_users": {"valid": int(len(valid["rows"])), "test": int(len(test["rows"]))},
            "wall_clock_seconds": self._elapsed_seconds(),
            "num_processes": acc.num_processes,
            "history": history,
        }
        if acc.is_main_process:
            # best/ and ranks.npz before metrics.json: a run with metrics.json is finished.
            save_model_atomically(model, self.run_dir / "best", card=self._model_card(results))
            save_ranks(self.run_dir, {split: ranks_in_row_order(done) for split, done in (("valid", valid), ("test", test))})
            _atomic_write_text(self.run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
            # A finished fine-tuning run has nothing left to resume; its product is best/.
            shutil.rmtree(self.state_dir, ignore_errors=True)
        shown = [f"{m}@{k}" for k in protocol.ks for m in ("recall", "ndcg")]
        self.log("test  " + "  ".join(f"{name} {test['metrics'][name]:.4f}" for name in shown) + f"  (best epoch {self.progress.best_epoch})")
        if "test_cold" in results:
            self.log(
                f"test, {results['test_cold']['rows']:,} cold rows: recall@10 {results['test_cold']['recall@10']:.4f}  ndcg@10 "
                f"{results['test_cold']['ndcg@10']:.4f};  {results['test_warm']['rows']:,} warm rows: recall@10 "
                f"{results['test_warm']['recall@10']:.4f}  ndcg@10 {results['test_warm']['ndcg@10']:.4f}"
            )
        acc.wait_for_everyone()
        return results

    def _finish_pretraining(self, model: Recommender, history: list[dict], trainable: int) -> dict[str, Any]:
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
            "wall_clock_seconds": self._elapsed_seconds(),
            "num_processes": acc.num_processes,
            "history": history,
        }
        if acc.is_main_process:
            save_model_atomically(model, self.run_dir / "final", card=self._model_card(results))
            _atomic_write_text(self.run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
        final_loss = "n/a" if results["final_loss"] is None else f"{results['final_loss']:.4f}"
        self.log(f"pretraining done: {len(history)} epochs, final loss {final_loss}; model in {self.run_dir / 'final'}")
        acc.wait_for_everyone()
        return results

    def _model_card(self, results: dict) -> str:
        return model_card(self.resolved, results, model_cls=type(self.model))

    # ---------------------------------------------------------------------------------------
    # Experiment trackers
    # ---------------------------------------------------------------------------------------
    def _start_trackers(self) -> None:
        """Start the accelerator's trackers (if any) for this run, files under ``<run_dir>/logs``."""
        acc = self.accelerator
        if not acc.log_with:
            return
        acc.project_configuration.logging_dir = str(self.run_dir / LOG_DIR)
        # TensorBoard hides the events of earlier attempts from the epoch this one starts at: a
        # resumed run repeats the epochs after its checkpoint, a fresh start repeats them all.
        start = {"tensorboard": {"purge_step": self.progress.epoch}}
        acc.init_trackers(TRACKING_PROJECT, config=flat_config(self.resolved), init_kwargs=start)

    def _stop_trackers(self) -> None:
        """Finish and forget this run's trackers. Not ``Accelerator.end_training``: that also
        closes the process group, and the entry points train several runs with one accelerator
        (``finish_accelerator`` ends it after the last)."""
        acc = self.accelerator
        for tracker in acc.trackers:
            tracker.finish()
        acc.trackers.clear()

    # ---------------------------------------------------------------------------------------
    # Checkpoints
    # ---------------------------------------------------------------------------------------
    def _training_done(self) -> bool:
        cfg, progress = self.config, self.progress
        return progress.epoch >= cfg.epochs or (cfg.validate and progress.stale > cfg.patience)

    def _start_or_resume(self) -> None:
        """Restore the newest (or the named) checkpoint, or make sure a fresh start loses nothing."""
        acc = self.accelerator
        if self.resume:
            point = checkpointing.resolve_resume_point(self.resume, self.state_dir)
            if point is None:
                self.log(f"--resume: no complete checkpoint in {self.state_dir}; starting from the beginning")
                return
            self.progress, self.best_state = checkpointing.load_checkpoint(acc, point, self._identity)
            self._clock_origin -= self.progress.elapsed_seconds  # the time before the interruption counts
            self.log(f"resumed from {checkpointing.describe(point)}")
            return
        latest = checkpointing.latest_checkpoint(self.state_dir)
        if latest is not None and not (self.run_dir / "metrics.json").exists():
            raise CheckpointError(
                f"{self.run_dir} holds the state of an unfinished run ({latest.name}). Continue it with --resume, "
                f"or choose another output folder (or delete {self.state_dir})."
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            # Starting over in the folder of a finished run: its state and metrics are replaced.
            shutil.rmtree(self.state_dir, ignore_errors=True)
            (self.run_dir / "metrics.json").unlink(missing_ok=True)
        acc.wait_for_everyone()

    def _elapsed_seconds(self) -> float:
        """Wall-clock seconds of the whole run, every process it took included."""
        return time.time() - self._clock_origin

    def _save_checkpoint(self) -> None:
        self.progress.elapsed_seconds = self._elapsed_seconds()
        if self.config.keep_checkpoints > 0:
            checkpointing.save_checkpoint(
                self.accelerator, self.state_dir, self.progress, self._identity, self.best_state, self.config.keep_checkpoints
            )

    # ---------------------------------------------------------------------------------------
    # One epoch
    # ---------------------------------------------------------------------------------------
    def _train_epoch(self, loss_module, optimizer, scheduler, loader) -> float:
        """Train the rest of ``progress.epoch``; return the epoch's mean loss."""
        cfg, acc, progress = self.config, self.accelerator, self.progress
        loss_module.train()
        loader.set_epoch(progress.epoch)  # this epoch's shuffle, also when resuming
        skipped = progress.batches_done
        batches = acc.skip_first_batches(loader, skipped) if skipped else loader
        bar = tqdm(
            batches, desc=f"epoch {progress.epoch}", total=len(loader), initial=skipped, leave=False,
            disable=self.quiet or not acc.is_local_main_process,
        )
        for batch in bar:
            terms = loss_module(batch)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            grad_norm = self._gradient_norm(loss_module)
            self._stop_if_not_finite(loss, terms, grad_norm, batch, len(loader))
            optimizer.step()
            scheduler.step()
            progress.record_step(loss.item())
            if progress.batches_done % cfg.log_every == 0:
                bar.set_postfix(loss=f"{progress.mean_loss():.4f}")
            if cfg.checkpoint_every and progress.global_step % cfg.checkpoint_every == 0 and progress.batches_done < len(loader):
                self._save_checkpoint()  # mid-epoch; the end of the epoch saves after validation
            checkpointing.fault_point("kill-after-step", progress.global_step)
        return progress.mean_loss()

    def _gradient_norm(self, loss_module) -> torch.Tensor | None:
        """Clip the gradients if configured; return their total norm, or None under fp16, whose
        gradient scaler skips the steps with infinite gradients by design."""
        acc = self.accelerator
        if self.config.grad_clip > 0:
            norm = acc.clip_grad_norm_(loss_module.parameters(), self.config.grad_clip)
        elif acc.scaler is None:
            grads = [p.grad for p in loss_module.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else None
        else:
            norm = None
        return None if acc.scaler is not None else norm

    def _stop_if_not_finite(self, loss, terms, grad_norm, batch, batches_in_epoch: int) -> None:
        """Raise ``NonFiniteLossError`` (on every process at once) if the loss or gradient is not finite."""
        acc, progress = self.accelerator, self.progress
        finite = torch.isfinite(loss.detach())
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm)
        bad = (~finite).float().reshape(1)
        if acc.num_processes > 1:
            bad = acc.reduce(bad, reduction="sum")
        if bad.item() == 0:
            return
        latest = checkpointing.latest_checkpoint(self.state_dir)
        rows = batch["row"].tolist()
        users = batch["user_id"].tolist()
        shown = 64  # a whole batch of a small run; the first rows of a large one
        more = f" ... ({len(rows) - shown} more)" if len(rows) > shown else ""
        message = (
            f"non-finite training loss or gradient at epoch {progress.epoch}, batch {progress.batches_done + 1} of "
            f"{batches_in_epoch} (global step {progress.global_step + 1}, process {acc.process_index}):\n"
            f"  loss {loss.item()}; terms: " + ", ".join(f"{k} {v.item()}" for k, v in terms.items())
            + f"; gradient norm {'n/a' if grad_norm is None else grad_norm.item()}\n"
            f"  batch: {len(rows)} training examples, rows {rows[:shown]}{more}, user ids {users[:shown]}{more}\n"
            "  The run stopped before applying this update. "
            + (
                f"Last good checkpoint: {checkpointing.describe(latest)}; continue from it with --resume."
                if latest is not None
                else "No checkpoint had been written yet."
            )
        )
        self.log(message)
        raise NonFiniteLossError(message)


def domain_summary(domain: Domain) -> dict:
    """What a model card says about the training data: per member domain, counts and features."""
    manifests = domain.manifest.get("members") or [domain.manifest]
    members = []
    for manifest in manifests:
        counts = manifest.get("counts", {})
        members.append(
            {
                "name": manifest.get("name"),
                "source": (manifest.get("source") or {}).get("type"),
                "synthetic": bool(manifest.get("synthetic")),
                "users": counts.get("users"),
                "items": counts.get("items"),
                "interactions": counts.get("interactions"),
                "features": {
                    name: {"encoder": f.get("encoder"), "dim": f.get("dim"), "coverage": f.get("coverage")}
                    for name, f in (manifest.get("features") or {}).items()
                },
            }
        )
    return {"name": domain.name, "domains": members}
