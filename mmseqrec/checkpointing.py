"""Resumable training state: atomic checkpoints, newest-complete lookup, exact resume.

A run folder keeps its training state under ``<run_dir>/state/``:

    state/step-00000120/           one complete checkpoint, named by the global step
        model.safetensors          weights and buffers (MISSRec's interest tables included)
        optimizer.bin              optimiser state
        scheduler.bin              learning-rate schedule state
        random_states_<p>.pkl      Python, NumPy and torch (and CUDA) RNG states of process p
        trainer_state.json         epoch, batches done in it, global step, early stopping, history
        best_model.safetensors     the best weights so far (runs that validate)
        COMPLETE.json              written last: the file list with sizes
    state/step-00000130.tmp/       a checkpoint being written (or one a crash interrupted)

The first five files are accelerate's ``save_state``; this module owns the protocol around
it. A checkpoint is written into ``step-N.tmp/``; when every process has finished writing, the
main process writes ``COMPLETE.json``, syncs, and renames the folder to ``step-N``. A folder
without the ``.tmp`` suffix whose marker lists files that all exist with their recorded sizes is
complete; anything else is ignored by ``--resume`` and removed at the next save. The newest
``keep`` complete checkpoints are kept.

Resuming restores the RNG states as they were after the step that was saved, and the data
position as the epoch (whose shuffle is seeded by ``seed + epoch``) plus the number of batches
already done in it (``accelerator.skip_first_batches``), so a resumed run continues with the
same batches and the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

STATE_DIR = "state"
MARKER = "COMPLETE.json"
TRAINER_STATE = "trainer_state.json"
BEST_WEIGHTS = "best_model.safetensors"
PARTIAL_SUFFIX = ".tmp"
PREFIX = "step-"

#: Training settings that may change when a run is resumed: they do not change what has been
#: computed so far (``epochs`` and ``patience`` only move the end of the run).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "patience", "log_every", "num_workers", "eval_batch_size", "eval_block_size", "checkpoint_every", "keep_checkpoints", "save_every", "log_with"}
)


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or belongs to another configuration."""


@dataclass
class TrainingProgress:
    """Where a run is: everything besides model, optimiser, schedule and RNG needed to resume.

    Attributes:
        epoch: the epoch in progress (or the next one, when ``batches_done`` is 0).
        batches_done: training batches of ``epoch`` already done.
        global_step: optimiser steps since the start of the run.
        loss_sum: sum of the training losses of ``epoch`` so far (for the epoch's mean).
        best_epoch: epoch with the best valid score so far (-1 before any validation).
        best_score: that score (valid NDCG@10).
        stale: epochs since the best one (early stopping).
        history: one entry per finished epoch (loss, valid metrics; seconds: the whole epoch,
            train_seconds: its training steps, valid_seconds: its validation pass).
        elapsed_seconds: wall-clock seconds of the run up to this checkpoint, over every process
            lifetime it took (a resumed run's metrics.json reports the whole run, not its last part).
    """

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    best_epoch: int = -1
    best_score: float = -math.inf
    stale: int = 0
    history: list[dict] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def record_step(self, loss: float) -> None:
        self.batches_done += 1
        self.global_step += 1
        self.loss_sum += loss

    def mean_loss(self) -> float:
        return self.loss_sum / max(self.batches_done, 1)

    def finish_epoch(self) -> None:
        self.epoch += 1
        self.batches_done = 0
        self.loss_sum = 0.0

    def to_json(self) -> dict:
        values = asdict(self)
        values["best_score"] = None if math.isinf(self.best_score) else self.best_score
        return values

    @classmethod
    def from_json(cls, values: dict) -> TrainingProgress:
        values = dict(values)
        if values.get("best_score") is None:
            values["best_score"] = -math.inf
        return cls(**values)


# -------------------------------------------------------------------------------------------
# Finding checkpoints
# -------------------------------------------------------------------------------------------
def checkpoint_name(global_step: int) -> str:
    return f"{PREFIX}{global_step:08d}"


def incomplete_reason(folder: Path) -> str | None:
    """None if ``folder`` is a complete checkpoint, otherwise what is wrong with it."""
    if folder.name.endswith(PARTIAL_SUFFIX):
        return "it is a temporary folder (the save was interrupted)"
    marker = folder / MARKER
    if not marker.is_file():
        return f"it has no {MARKER} (the save did not finish)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"its {MARKER} is unreadable ({err})"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def list_checkpoints(state_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(complete checkpoints, oldest first; incomplete ones with the reason)."""
    complete, incomplete = [], []
    if not state_dir.is_dir():
        return complete, incomplete
    for folder in sorted(state_dir.iterdir()):
        if not folder.is_dir() or not folder.name.startswith(PREFIX):
            continue
        reason = incomplete_reason(folder)
        if reason is None:
            complete.append(folder)
        else:
            incomplete.append((folder, reason))
    return complete, incomplete


def latest_checkpoint(state_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``state_dir`` (None if there is none)."""
    complete, _ = list_checkpoints(state_dir)
    return complete[-1] if complete else None


def resolve_resume_point(resume: bool | str | os.PathLike, state_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` means: newest complete one in ``state_dir`` (``True``), or a
    named one (a checkpoint folder, a ``state/`` folder or a run folder)."""
    if resume is True:
        return latest_checkpoint(state_dir)
    path = Path(resume)
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such checkpoint or run folder")
    if (path / STATE_DIR).is_dir():
        path = path / STATE_DIR
    if path.name.startswith(PREFIX):
        reason = incomplete_reason(path)
        if reason is not None:
            raise CheckpointError(f"refusing to resume from {path}: {reason}")
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"--resume {path}: no complete checkpoint in it")
    return found


# -------------------------------------------------------------------------------------------
# Writing
# -------------------------------------------------------------------------------------------
def fault_point(event: str, global_step: int) -> None:
    """Test hook: ``MMSEQREC_FAULT=<event>:<step>`` kills this process (SIGKILL) at that point.

    Events: ``kill-after-step`` (after the optimiser step and any checkpoint of that step),
    ``kill-while-saving`` (checkpoint files written, marker and rename not yet done).
    """
    if os.environ.get("MMSEQREC_FAULT") == f"{event}:{global_step}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _fsync(path: Path) -> None:
    """Flush a file (or, on POSIX, a folder entry) to disk; a best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    accelerator,
    state_dir: Path,
    progress: TrainingProgress,
    identity: dict,
    best_state: dict[str, torch.Tensor] | None,
    keep: int,
) -> Path:
    """Write a complete checkpoint of the prepared objects; every process must call this."""
    from safetensors.torch import save_file

    final = state_dir / checkpoint_name(progress.global_step)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if accelerator.is_main_process:
        state_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))  # model, optimiser, scheduler, scaler, RNG of every process
    if accelerator.is_main_process:
        state = {"progress": progress.to_json(), "identity": identity}
        (partial / TRAINER_STATE).write_text(json.dumps(state, indent=2) + "\n")
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()}, str(partial / BEST_WEIGHTS))
    accelerator.wait_for_everyone()  # every process's RNG file is on disk
    if accelerator.is_main_process:
        fault_point("kill-while-saving", progress.global_step)
        files = {p.name: p.stat().st_size for p in sorted(partial.iterdir()) if p.is_file()}
        for name in files:
            _fsync(partial / name)
        marker = {"global_step": progress.global_step, "epoch": progress.epoch, "batches_done": progress.batches_done, "files": files}
        (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _fsync(partial / MARKER)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync(state_dir)
        prune(state_dir, keep)
    accelerator.wait_for_everyone()
    return final


def prune(state_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints; drop older ones and interrupted saves."""
    complete, incomplete = list_checkpoints(state_dir)
    for folder in complete[: max(len(complete) - keep, 0)]:
        shutil.rmtree(folder, ignore_errors=True)
    for folder, _ in incomplete:
        shutil.rmtree(folder, ignore_errors=True)


# -------------------------------------------------------------------------------------------
# Reading
# -------------------------------------------------------------------------------------------
def identity_mismatches(stored: dict, current: dict) -> list[str]:
    """Human-readable differences between the run that wrote a checkpoint and this one."""
    current = json.loads(json.dumps(current))  # compare JSON values with JSON values
    problems = []
    for key in ("model", "num_processes"):
        if stored.get(key) != current.get(key):
            problems.append(f"{key} is {stored.get(key)!r} there, {current.get(key)!r} here")
    for section, allowed in (("model_config", frozenset()), ("train", RESUMABLE_CHANGES), ("domain", frozenset())):
        old, new = stored.get(section, {}), current.get(section, {})
        defaults = current.get("defaults", {}).get(section, {})
        for name in sorted(set(old) | set(new)):
            # A field added to the configuration after the checkpoint was written is no change
            # when this run leaves it at its default: the old code behaved as the default does.
            added_at_default = name not in old and name in defaults and new.get(name) == defaults[name]
            if name not in allowed and not added_at_default and old.get(name) != new.get(name):
                label = {"model_config": "model", "train": "train", "domain": "domain"}[section]
                problems.append(f"{label}.{name} is {old.get(name)!r} there, {new.get(name)!r} here")
    return problems


def load_checkpoint(accelerator, path: Path, identity: dict) -> tuple[TrainingProgress, dict[str, torch.Tensor] | None]:
    """Restore the prepared objects and RNG states from ``path``; return progress and best weights.

    Refuses (``CheckpointError``) a checkpoint that is incomplete or was written by a run with
    another model, model configuration, training configuration, domain or process count.
    """
    from safetensors.torch import load_file

    reason = incomplete_reason(path)
    if reason is not None:
        raise CheckpointError(f"refusing to resume from {path}: {reason}")
    saved = json.loads((path / TRAINER_STATE).read_text())
    problems = identity_mismatches(saved["identity"], identity)
    if problems:
        raise CheckpointError(
            f"refusing to resume from {path}: it was written by a different run configuration:\n  "
            + "\n  ".join(problems)
            + "\nResume with the original configuration, or start a new run in another output folder."
        )
    accelerator.load_state(str(path))
    best = path / BEST_WEIGHTS
    best_state = load_file(str(best)) if best.exists() else None
    return TrainingProgress.from_json(saved["progress"]), best_state


def describe(path: Path) -> str:
    """``step-N (epoch E, batch B)`` for messages."""
    try:
        marker = json.loads((path / MARKER).read_text())
        return f"{path} (epoch {marker['epoch']}, {marker['batches_done']} batches into it, global step {marker['global_step']})"
    except (OSError, ValueError, KeyError):
        return str(path)


def run_identity(model, train_config, domain, num_processes: int) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed by this run."""
    return {
        "model": type(model).__name__,
        "model_config": asdict(model.config),
        "train": asdict(train_config),
        "domain": {
            "name": domain.name,
            "num_items": domain.num_items,
            "num_users": domain.num_users,
            # a domain with only the top-N track has no sequential rows: its training pairs instead
            "train_examples": len(domain.splits["train"]) if domain.splits else len(domain.topn["train"]),
        },
        "num_processes": num_processes,
        "defaults": {"model_config": _field_defaults(model.config), "train": _field_defaults(train_config)},
    }


def _field_defaults(config) -> dict[str, Any]:
    """The documented default of every field of a config dataclass that has one."""
    values = {}
    for entry in fields(config):
        if entry.default is not MISSING:
            values[entry.name] = entry.default
        elif entry.default_factory is not MISSING:
            values[entry.name] = entry.default_factory()
    return json.loads(json.dumps(values, default=str))


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------
def add_resume_option(parser, what: str = "run") -> None:
    """``--resume`` (newest complete checkpoint) or ``--resume PATH`` (that checkpoint or run folder)."""
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="PATH",
        help=f"continue an interrupted {what} from its newest complete checkpoint (or from PATH: a checkpoint or run folder)",
    )


def take_resume_option(args) -> None:
    """``--resume key=value`` means ``--resume`` followed by an override, not a path."""
    value = args.resume
    if isinstance(value, str) and "=" in value and not Path(value).exists():
        args.overrides.insert(0, value)
        args.resume = True
