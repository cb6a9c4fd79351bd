"""Two CPU processes (gloo) must evaluate exactly the users one process does, with the same metrics."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli import main as finetune_main
from tiny import write_tiny_domain

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


def _evaluate(run: Path, data: Path, out: Path, processes: int) -> dict:
    # On a machine without GPUs `accelerate launch --multi_gpu` starts torchrun-style workers,
    # and `--cpu` (ours) makes each a gloo CPU process. (`accelerate launch --cpu
    # --num_processes 2` alone needs MPI and otherwise starts a single process.)
    launcher = ["--multi_gpu"] if processes > 1 else []
    cmd = [
        ACCELERATE, "launch", *launcher, "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + processes),
        "-m", "mmseqrec.cli", "evaluate", "--run", str(run), "--domain", "Tiny", "--data-dir", str(data),
        "--batch-size", "8", "--output", str(out), "--cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate command is not installed")
def test_two_processes_evaluate_every_user_once(tmp_path):
    # 83 users and batches of 8 per process: the last batch is uneven, so the distributed
    # sampler pads it with duplicates that must be dropped.
    write_tiny_domain(tmp_path / "data", n_users=83)
    code = finetune_main([
        "--domain", "Tiny", "--model", "sasrec", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--quiet",
        "train.epochs=2", "model.hidden_size=16", "model.inner_size=16", "train.batch_size=32",
    ])
    assert code == 0
    run = tmp_path / "out" / "sasrec-seed2020"
    one = _evaluate(run, tmp_path / "data", tmp_path / "one.json", 1)
    two = _evaluate(run, tmp_path / "data", tmp_path / "two.json", 2)
    assert two["num_processes"] == 2
    for split in ("valid", "test"):
        assert sorted(one[f"{split}_rows"]) == list(range(83))
        assert sorted(two[f"{split}_rows"]) == list(range(83)), "a user was evaluated twice or skipped"
        for metric, value in one[split].items():
            assert two[split][metric] == pytest.approx(value, abs=1e-12), metric
    # and the in-process evaluation written by the training run agrees too
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["test"]["ndcg@10"] == pytest.approx(one["test"]["ndcg@10"], abs=1e-9)
