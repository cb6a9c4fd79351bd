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
from tolerances import assert_close

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


def _evaluate(run: Path, data: Path, out: Path, processes: int) -> dict:
    _launch(processes, "evaluate", "--run", str(run), "--domain", "Tiny", "--data-dir", str(data), "--batch-size", "8", "--output", str(out))
    return json.loads(out.read_text())


def _launch(processes: int, *command: str) -> subprocess.CompletedProcess:
    # On a machine without GPUs `accelerate launch --multi_gpu` starts torchrun-style workers,
    # and `--cpu` (ours) makes each a gloo CPU process. (`accelerate launch --cpu
    # --num_processes 2` alone needs MPI and otherwise starts a single process.)
    launcher = ["--multi_gpu"] if processes > 1 else []
    cmd = [
        ACCELERATE, "launch", *launcher, "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + processes),
        "-m", "mmseqrec.cli", *command, "--cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    # 83 users and batches of 8 per process: the last batch is uneven, so the distributed
    # sampler pads it with duplicates that must be dropped.
    root = tmp_path_factory.mktemp("distributed")
    write_tiny_domain(root / "data", n_users=83)
    code = finetune_main([
        "--domain", "Tiny", "--model", "sasrec", "--data-dir", str(root / "data"), "--output", str(root / "out"), "--quiet",
        "train.epochs=2", "model.hidden_size=16", "model.inner_size=16", "train.batch_size=32",
    ])
    assert code == 0
    return root / "out" / "sasrec-seed2020", root / "data"


@pytest.mark.slow
@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate command is not installed")
def test_two_processes_evaluate_every_user_once(trained, tmp_path):
    run, data = trained
    one = _evaluate(run, data, tmp_path / "one.json", 1)
    two = _evaluate(run, data, tmp_path / "two.json", 2)
    assert two["num_processes"] == 2
    for split in ("valid", "test"):
        assert sorted(one[f"{split}_rows"]) == list(range(83))
        assert sorted(two[f"{split}_rows"]) == list(range(83)), "a user was evaluated twice or skipped"
        for metric, value in one[split].items():
            assert two[split][metric] == pytest.approx(value, abs=1e-12), metric
    # and the in-process evaluation written by the training run agrees too
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["test"]["ndcg@10"] == pytest.approx(one["test"]["ndcg@10"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate command is not installed")
def test_two_processes_recommend_every_user_once(trained, tmp_path):
    """`mmseqrec recommend` under two processes writes what one process writes, and --evaluate
    still reproduces metrics.json."""
    import pyarrow.parquet as pq

    run, data = trained
    tables = {}
    for processes in (1, 2):
        out = tmp_path / f"recs-{processes}.parquet"
        done = _launch(processes, "recommend", "--run", str(run), "--data-dir", str(data), "--split", "test", "--batch-size", "8",
                       "--evaluate", "--output", str(out), "--quiet")
        report = json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])
        assert report["processes"] == processes and report["users"] == 83 and report["largest_difference"] <= 1e-6
        tables[processes] = pq.read_table(out).to_pandas()
    assert len(tables[1]) == 83 * 10 and tables[1]["user"].nunique() == 83
    # The same items in the same order; the scores to float rounding (each process pads its own
    # batches, so a row is computed in a batch of another width).
    assert tables[2][["user", "rank", "item"]].equals(tables[1][["user", "rank", "item"]]), "two processes recommended other items"
    assert_close(tables[2]["score"].to_numpy(), tables[1]["score"].to_numpy(), "scores")
