"""``train.log_with``: per-epoch training curves through accelerate's experiment trackers.

The TensorBoard event files are read back with TensorBoard's own reader and compared with the
run's ``metrics.json`` history (TensorBoard stores float32 values, hence the relative tolerance).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny import write_tiny_domains

pytest.importorskip("tensorboard", reason="TensorBoard comes with the dev and tracking extras")
from accelerate.tracking import get_available_trackers  # noqa: E402
from accelerate.utils import LoggerType  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from finetune.cli import main as finetune_main  # noqa: E402
from mmseqrec.config import ConfigError  # noqa: E402
from mmseqrec.data.loading import load_domain  # noqa: E402
from mmseqrec.models import SASRec, SASRecConfig  # noqa: E402
from mmseqrec.training import LOG_DIR, TRACKING_PROJECT, TrainConfig, Trainer, flat_config, tracker_names  # noqa: E402
from pretrain.run import main as pretrain_main  # noqa: E402

FLOAT32 = 1e-6  # relative precision of a float32 event value
PER_EPOCH = {"train/loss", "train/lr", "epoch/seconds"}
SMALL_SASREC = ["model.hidden_size=16", "model.inner_size=16", "model.num_layers=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_domains(tmp_path_factory.mktemp("data"))


def scalars(run_dir: Path) -> dict[str, list]:
    """Every scalar series TensorBoard shows for a run: tag -> events (step, value)."""
    events = EventAccumulator(str(run_dir / LOG_DIR / TRACKING_PROJECT))
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def check_against_history(series: dict[str, list], history: list[dict]) -> None:
    """One point per epoch of every series, equal to what metrics.json recorded."""
    epochs = [entry["epoch"] for entry in history]
    for tag, points in series.items():
        assert [p.step for p in points] == epochs, tag
    assert [p.value for p in series["train/loss"]] == pytest.approx([e["loss"] for e in history], rel=FLOAT32)
    assert [p.value for p in series["epoch/seconds"]] == pytest.approx([e["seconds"] for e in history], rel=FLOAT32)
    for name in history[0].get("valid", {}):
        assert [p.value for p in series[f"valid/{name}"]] == pytest.approx([e["valid"][name] for e in history], rel=FLOAT32)


def test_finetune_writes_loss_lr_time_and_valid_metrics_per_epoch(data, tmp_path):
    out = tmp_path / "out"
    code = finetune_main([
        "--domain", "Tiny", "--data-dir", str(data), "--model", "sasrec", "--quiet", "--output", str(out),
        "train.epochs=3", "train.batch_size=64", "train.lr=0.002", "train.log_with=tensorboard", *SMALL_SASREC,
    ])
    assert code == 0
    run = out / "sasrec-seed2020"
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 3
    series = scalars(run)
    assert set(series) == PER_EPOCH | {f"valid/{name}" for name in history[0]["valid"]}
    assert "valid/ndcg@10" in series
    check_against_history(series, history)
    assert [p.value for p in series["train/lr"]] == pytest.approx([0.002] * 3, rel=FLOAT32)
    # The configuration as flat hyperparameters (accelerate also keeps them as hparams.yml).
    (hparams,) = (run / LOG_DIR / TRACKING_PROJECT).glob("*/hparams.yml")
    stored = yaml.safe_load(hparams.read_text())
    assert stored["train.log_with"] == "tensorboard" and stored["model.hidden_size"] == 16
    assert stored["data.domain"] == "Tiny"


def test_pretraining_writes_loss_lr_and_time_per_epoch(data, tmp_path):
    config = {
        "name": "tiny",
        "data": {"domains": ["TinyA", "TinyB"], "data_dir": str(data)},
        "model": {"name": "missrec", "hidden_size": 16, "num_heads": 2, "inner_size": 16, "interest_ratio": 0.1},
        "train": {"epochs": 2, "batch_size": 128, "log_with": "tensorboard", "warmup_steps": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert pretrain_main(["--config", str(path), "--output", str(tmp_path / "pt"), "--quiet"]) == 0
    history = json.loads((tmp_path / "pt" / "metrics.json").read_text())["history"]
    series = scalars(tmp_path / "pt")
    assert set(series) == PER_EPOCH  # pretraining does not validate
    check_against_history(series, history)
    # 611 rows in batches of 128: 5 steps per epoch; the rate after step 5 of the 8-step warmup,
    # then the full rate.
    assert [p.value for p in series["train/lr"]] == pytest.approx([1e-3 * 6 / 8, 1e-3], rel=FLOAT32)


class FailingSASRec(SASRec):
    """Raises in the second epoch, after the first was logged."""

    epoch = 0

    def on_epoch_start(self, epoch, accelerator=None):
        self.epoch = epoch

    def loss_terms(self, batch):
        if self.epoch >= 1:
            raise RuntimeError("broken on purpose")
        return super().loss_terms(batch)


def test_a_run_that_raises_still_closes_its_trackers(data, tmp_path):
    domain = load_domain("Tiny", data_dir=data)
    config = TrainConfig(epochs=3, batch_size=128, log_with="tensorboard")
    model = FailingSASRec(SASRecConfig(num_items=domain.num_items, hidden_size=16, inner_size=16, num_layers=1))
    trainer = Trainer(model, domain, config, tmp_path / "run", quiet=True)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        trainer.fit()
    assert trainer.accelerator.trackers == []
    series = scalars(tmp_path / "run")
    assert [p.step for p in series["train/loss"]] == [0]  # the epoch that finished


def test_an_unknown_tracker_fails_before_training(data, tmp_path, capsys):
    out = tmp_path / "out"
    code = finetune_main([
        "--domain", "Tiny", "--data-dir", str(data), "--model", "sasrec", "--quiet", "--output", str(out),
        "train.epochs=1", "train.log_with=tensorboard,tensorbord", *SMALL_SASREC,
    ])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown tracker(s) tensorbord" in err
    assert all(tracker.value in err for tracker in LoggerType)  # the allowed names
    assert not out.exists()


def test_tracker_names():
    assert tracker_names(None) == tracker_names("") == tracker_names(" none ") == []
    assert tracker_names("TensorBoard, tensorboard") == ["tensorboard"]
    installed = sorted(str(tracker) for tracker in get_available_trackers())
    assert tracker_names("all") == installed
    absent = [tracker.value for tracker in LoggerType if tracker.value != "all" and tracker.value not in installed]
    if absent:
        with pytest.raises(ConfigError, match=f"{absent[0]} is not installed"):
            tracker_names(absent[0])


def test_a_trainer_refuses_an_accelerator_without_the_trackers_it_asks_for(data, tmp_path):
    from mmseqrec.training import make_accelerator

    domain = load_domain("Tiny", data_dir=data)
    model = SASRec(SASRecConfig(num_items=domain.num_items, hidden_size=16, inner_size=16))
    with pytest.raises(ConfigError, match="accelerator was made without"):
        Trainer(model, domain, TrainConfig(log_with="tensorboard"), tmp_path / "run", accelerator=make_accelerator())


def test_flat_config_gives_trackers_scalars_only():
    nested = {"train": {"lr": 0.001, "log_with": None, "validate": True}, "data": {"domains": ["A", "B"]}, "path": Path("x")}
    assert flat_config(nested) == {"train.lr": 0.001, "train.validate": True, "data.domains.0": "A", "data.domains.1": "B", "path": "x"}
