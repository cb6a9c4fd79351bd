"""Resumable training state: a run killed with SIGKILL (mid-epoch, or while a checkpoint is
being written) and resumed ends with exactly the weights and metrics of an uninterrupted run;
broken or foreign checkpoints are refused; a NaN stops the run with a useful message.

The killed runs are real subprocesses (``MMSEQREC_FAULT`` makes them SIGKILL themselves at a
chosen step, so the point of death is deterministic); the uninterrupted and resumed runs run in
this process. Both use one thread, so their arithmetic is identical.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import faiss
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny import write_tiny_domains

from finetune.cli import main as finetune_main
from mmseqrec import checkpointing
from mmseqrec.checkpointing import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume_point,
)
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MODELS, SASRec, SASRecConfig
from mmseqrec.training import NonFiniteLossError, TrainConfig, Trainer
from pretrain.run import main as pretrain_main

ROOT = Path(__file__).resolve().parents[1]
RUN = "missrec-scratch-seed2020"
# 414 training rows in batches of 32: 13 batches per epoch; checkpoints every 4 steps and at
# the end of every epoch (steps 13, 26, 39).
FINETUNE = [
    "--domain", "Tiny", "--model", "missrec@scratch", "--quiet",
    "train.epochs=3", "train.batch_size=32", "train.checkpoint_every=4",
    "model.hidden_size=16", "model.inner_size=16", "model.num_heads=2", "model.dropout=0.3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_domains(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The subprocesses run with OMP_NUM_THREADS=1; in-process runs must do the same arithmetic."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def _killed(args: list[str], fault: str, module: str = "finetune.cli", script: str | None = None) -> None:
    """Run a CLI in a subprocess that SIGKILLs itself at ``fault`` (``<event>:<global step>``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMSEQREC_FAULT": fault, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, script] if script else [sys.executable, "-m", module]
    done = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {done.returncode}:\n{done.stderr[-3000:]}"


def _same_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), f"{key} differs"


def _without_timings(results: dict) -> dict:
    """metrics.json minus wall-clock fields."""
    clean = {k: v for k, v in results.items() if k != "wall_clock_seconds"}
    clean["history"] = [{k: v for k, v in entry.items() if not k.endswith("seconds")} for entry in results["history"]]
    return clean


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert finetune_main([*FINETUNE, "--data-dir", str(data), "--output", str(out)]) == 0
    return out / RUN


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(data, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    args = [*FINETUNE, "--data-dir", str(data), "--output", str(out)]
    _killed(args, "kill-after-step:20")  # epoch 1, batch 7 of 13
    run = out / RUN
    assert not (run / "metrics.json").exists()
    state = run / checkpointing.STATE_DIR
    latest = latest_checkpoint(state)
    assert latest.name == "step-00000020"
    progress = json.loads((latest / checkpointing.TRAINER_STATE).read_text())["progress"]
    assert (progress["epoch"], progress["batches_done"]) == (1, 7)  # mid-epoch
    seconds_before_the_kill = progress["elapsed_seconds"]
    assert seconds_before_the_kill > 0
    assert [p.name for p in list_checkpoints(state)[0]] == ["step-00000016", "step-00000020"]  # keep_checkpoints=2
    saved = load_file(str(latest / "model.safetensors"))
    assert {"model.interest_embeddings", "model.text_interest", "model.image_interest"} <= set(saved)
    assert saved["model.text_interest"].any()  # the tables of the epoch in progress

    # Starting over in that folder would lose the run: refused.
    assert finetune_main(args) == 2
    assert "unfinished run" in capsys.readouterr().err
    # A checkpoint written with another configuration is refused, naming the difference.
    assert finetune_main([*args, "train.lr=0.01", "--resume"]) == 2
    assert "train.lr is 0.001 there, 0.01 here" in capsys.readouterr().err
    assert finetune_main([*args, "model.hidden_size=32", "--resume"]) == 2
    assert "model.hidden_size is 16 there, 32 here" in capsys.readouterr().err

    assert finetune_main([*args, "--resume"]) == 0
    assert "resumed from" in (run / "train.log").read_text()
    _same_weights(run / "best" / "model.safetensors", uninterrupted / "best" / "model.safetensors")
    resumed = json.loads((run / "metrics.json").read_text())
    reference = json.loads((uninterrupted / "metrics.json").read_text())
    assert _without_timings(resumed) == _without_timings(reference)
    # The run's wall clock counts the part before the kill too, not only the resumed process.
    assert resumed["wall_clock_seconds"] > seconds_before_the_kill
    assert resumed["wall_clock_seconds"] >= sum(entry["seconds"] for entry in resumed["history"])
    assert not (run / checkpointing.STATE_DIR).exists()  # a finished fine-tuning run drops its state

    # Resuming a finished comparison reads the results back instead of training again.
    assert finetune_main([*args, "--resume"]) == 0
    assert (run / "train.log").read_text().count("resumed from") == 1


def _pretrain_config(tmp_path: Path, data: Path) -> Path:
    config = {
        "name": "tiny",
        "data": {"domains": ["TinyA", "TinyB"], "data_dir": str(data)},
        "model": {"name": "missrec", "hidden_size": 16, "num_heads": 2, "inner_size": 16, "dropout": 0.3, "interest_ratio": 0.1},
        # 611 training rows in batches of 64: 10 per epoch; checkpoints every 3 steps and at the
        # end of every epoch (global steps 3, 6, 9, 10, 12, 15, 18, 20).
        "train": {"epochs": 2, "batch_size": 64, "checkpoint_every": 3, "seed": 7},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_kill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(data, tmp_path):
    config = _pretrain_config(tmp_path, data)
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert pretrain_main(["--config", str(config), "--output", str(reference), "--quiet"]) == 0

    args = ["--config", str(config), "--output", str(run), "--quiet"]
    _killed(args, "kill-while-saving:15", script=str(ROOT / "pretrain" / "run.py"))  # epoch 1, batch 5 of 10
    state = run / checkpointing.STATE_DIR
    complete, incomplete = list_checkpoints(state)
    assert [p.name for p in complete] == ["step-00000010", "step-00000012"]
    assert [(p.name, "interrupted" in why) for p, why in incomplete] == [("step-00000015.tmp", True)]
    assert all((state / "step-00000015.tmp" / name).exists() for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl"))
    assert latest_checkpoint(state).name == "step-00000012"
    with pytest.raises(CheckpointError, match="interrupted"):
        resolve_resume_point(state / "step-00000015.tmp", state)

    assert pretrain_main([*args, "--resume"]) == 0
    log = (run / "train.log").read_text()
    assert "resumed from" in log and "step-00000012 (epoch 1, 2 batches into it" in log
    _same_weights(run / "final" / "model.safetensors", reference / "final" / "model.safetensors")
    assert _without_timings(json.loads((run / "metrics.json").read_text())) == _without_timings(
        json.loads((reference / "metrics.json").read_text())
    )
    # The interrupted save was cleaned up; a finished pretraining keeps its last state.
    assert [p.name for p in list_checkpoints(state)[0]] == ["step-00000018", "step-00000020"]
    assert list_checkpoints(state)[1] == []


def test_damaged_checkpoints_are_refused(tmp_path):
    folder = tmp_path / "state" / "step-00000004"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    assert "no COMPLETE.json" in checkpointing.incomplete_reason(folder)
    (folder / checkpointing.MARKER).write_text(json.dumps({"files": {"model.safetensors": 10, "optimizer.bin": 5}}))
    assert "optimizer.bin is missing" in checkpointing.incomplete_reason(folder)
    (folder / "optimizer.bin").write_bytes(b"y" * 3)  # truncated
    assert "3 bytes, 5 were written" in checkpointing.incomplete_reason(folder)
    assert latest_checkpoint(tmp_path / "state") is None
    with pytest.raises(CheckpointError, match="5 were written"):
        resolve_resume_point(folder, tmp_path / "state")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve_resume_point(tmp_path, tmp_path / "state")


def test_a_config_field_added_after_the_checkpoint_blocks_resuming_only_when_changed():
    model = SASRec(SASRecConfig(num_items=20))
    current = checkpointing.run_identity(model, TrainConfig(epochs=3), _FakeDomain(), num_processes=1)
    stored = json.loads(json.dumps(current))
    stored.pop("defaults")
    del stored["train"]["compile"]  # as written by a version that did not have the field yet
    assert checkpointing.identity_mismatches(stored, current) == []
    changed = json.loads(json.dumps(current))
    changed["train"]["compile"] = not current["defaults"]["train"]["compile"]
    assert checkpointing.identity_mismatches(stored, changed) == [f"train.compile is None there, {changed['train']['compile']!r} here"]
    changed = json.loads(json.dumps(current))
    changed["train"]["lr"] = 0.5
    assert checkpointing.identity_mismatches(json.loads(json.dumps(current)), changed) == [
        f"train.lr is {current['train']['lr']!r} there, 0.5 here"
    ]


class _FakeDomain:
    name, num_items, num_users = "tiny", 20, 5
    splits = {"train": [0, 1, 2]}


class PoisonedSASRec(SASRec):
    """SASRec whose batches containing ``POISONED_ROW`` carry a NaN from the second epoch on
    (as a corrupt feature would); everything else is SASRec."""

    POISONED_ROW = 100

    def loss_terms(self, batch):
        terms = super().loss_terms(batch)
        if self.poisoned and bool((batch["row"] == self.POISONED_ROW).any()):
            terms["loss"] = terms["loss"] * torch.tensor(float("nan"))
        return terms

    def on_epoch_start(self, epoch, accelerator=None):
        self.poisoned = epoch >= 1


def test_a_nan_stops_the_run_naming_the_batch_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    domain = load_domain("Tiny", data_dir=data)
    config = TrainConfig(epochs=3, batch_size=32, seed=1)
    model = PoisonedSASRec(SASRecConfig(num_items=domain.num_items, hidden_size=16, inner_size=16))
    trainer = Trainer(model, domain, config, tmp_path / "run", quiet=True)
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.fit()
    message = str(caught.value)
    state = tmp_path / "run" / checkpointing.STATE_DIR
    assert [p.name for p in list_checkpoints(state)[0]] == ["step-00000013"]  # the end of epoch 0
    assert "epoch 1, batch" in message and "of 13" in message
    assert "loss nan; terms: loss nan" in message and "gradient norm nan" in message
    assert f"global step {trainer.progress.global_step + 1}" in message  # the failed step was not counted
    assert f"{PoisonedSASRec.POISONED_ROW}" in message.split("rows")[1]
    user = int(domain.splits["train"].user_id[PoisonedSASRec.POISONED_ROW])
    assert str(user) in message.split("user ids")[1]
    assert "step-00000013" in message and "--resume" in message
    assert message in (tmp_path / "run" / "train.log").read_text()
    # Nothing was written after the failure: the last good checkpoint is intact and loadable.
    assert checkpointing.incomplete_reason(state / "step-00000013") is None
    assert not (tmp_path / "run" / "metrics.json").exists()

    # Through the command line the same failure is one clear error, not a stack trace.
    monkeypatch.setitem(MODELS, "poisoned", (PoisonedSASRec, SASRecConfig))
    code = finetune_main([
        "--domain", "Tiny", "--data-dir", str(data), "--model", "poisoned", "--output", str(tmp_path / "cli"), "--quiet",
        "train.epochs=3", "train.batch_size=32", "model.hidden_size=16", "model.inner_size=16",
    ])
    assert code == 2
    err = capsys.readouterr().err
    assert "finetune: error: non-finite training loss" in err and "Traceback" not in err


@pytest.mark.parametrize("model", ["freedom", "lattice", "diffmm"])
def test_a_top_n_model_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, model):
    """The general models keep per-epoch state (FREEDOM's pruned graph, LATTICE's learned
    neighbours, DiffMM's generated graphs and its diffusion noise); a resumed run must rebuild or
    restore it exactly."""
    from tiny import write_tiny_topn_domain

    data = tmp_path / "data"
    write_tiny_topn_domain(data)
    args = ["--domain", "TinyTopN", "--data-dir", str(data), "--model", model, "--quiet", "train.epochs=3", "train.batch_size=64",
            "train.checkpoint_every=4", "model.embedding_size=16"]
    args += {"freedom": ["model.knn_k=3"], "lattice": ["model.knn_k=3", "model.feat_embed_dim=16"],
             "diffmm": ["model.denoiser_hidden=16", "model.diffusion_users=16"]}[model]
    assert finetune_main([*args, "--output", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    _killed([*args, "--output", str(out)], "kill-after-step:11")  # epoch 1, mid-epoch
    assert finetune_main([*args, "--output", str(out), "--resume"]) == 0
    run, reference = out / f"{model}-seed2020", tmp_path / "whole" / f"{model}-seed2020"
    assert "resumed from" in (run / "train.log").read_text()
    _same_weights(run / "best" / "model.safetensors", reference / "best" / "model.safetensors")
    assert _without_timings(json.loads((run / "metrics.json").read_text())) == _without_timings(json.loads((reference / "metrics.json").read_text()))
