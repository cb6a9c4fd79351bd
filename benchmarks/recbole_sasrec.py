"""SASRec in this suite and in RecBole 1.2.1, side by side, on the same released atomic files.

    python benchmarks/recbole_sasrec.py                       # Scientific subset, 1 thread
    python benchmarks/recbole_sasrec.py --release ../shared/data/amazon2018-scientific-mm-subset \\
        --name Scientific --threads 1 --output /tmp/recbole-vs-mmseqrec.json

One run trains both, one after the other, early-stopped on valid NDCG@10 with the same
patience, and reports per library: seconds per training epoch (mean over the epochs run),
seconds per validation pass, the peak resident memory of the process that trained (data
loading included), epochs run, best epoch and the four test metrics (Recall@10, NDCG@10,
Recall@50, NDCG@50; full ranking, history items not masked, as both libraries do by default).

Same data: RecBole reads the released ``<name>.{train,valid,test}.inter`` files as benchmark
files (``benchmark_filename``, ``alias_of_item_id``); this suite reads the same files through
``mmseqrec prepare release``. Same hyperparameters: RecBole's configuration is written from this
suite's resolved SASRec configuration (``finetune/configs/sasrec.yaml`` over the dataclass
defaults, plus any ``key=value`` overrides given here), so the two cannot drift apart; this
suite runs with all its other defaults. Same torch build and thread count: RecBole lives in its
own virtualenv (``--venv``; created when missing, with the torch version of this interpreter,
``numpy<2``, ``setuptools<81`` and ``pandas<3``, which RecBole 1.2.1 needs) and both processes
get ``--threads`` intra-op threads. The load average of the machine is recorded before and after
each side: on a shared machine compare the two sides' ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmseqrec.config import parse_overrides  # noqa: E402
from mmseqrec.data.loading import load_domain  # noqa: E402
from mmseqrec.runs import resolve_config  # noqa: E402

RECBOLE_VERSION = "1.2.1"
#: RecBole 1.2.1 breaks on numpy 2 (np.float and friends), on setuptools >= 81 (pkg_resources)
#: and on pandas 3.
RECBOLE_PINS = (f"recbole=={RECBOLE_VERSION}", "numpy<2", "setuptools<81", "pandas<3")
METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")


def torch_requirement() -> str:
    """The torch this interpreter runs, as a requirement (the local build tag dropped)."""
    return f"torch=={torch.__version__.split('+')[0]}"


def ensure_recbole_venv(venv: Path) -> Path:
    """The Python of ``venv``, created and filled with RecBole and this torch when missing."""
    python = venv / "bin" / "python"
    probe = "import recbole, torch; print(recbole.__version__, torch.__version__)"
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0:
            return python
    print(f"creating the RecBole virtualenv {venv} ({', '.join(RECBOLE_PINS)}, {torch_requirement()})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", torch_requirement(), *RECBOLE_PINS], check=True)
    subprocess.run([str(python), "-c", probe], check=True)
    return python


def recbole_config(spec, threads_seed: int) -> dict:
    """RecBole's configuration for the SASRec of ``spec`` (this suite's resolved run spec)."""
    model, train = spec.model_config, spec.train
    return {
        # data: the released benchmark files, read as they are
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": train.max_len,
        # model
        "n_layers": model.num_layers,
        "n_heads": model.num_heads,
        "hidden_size": model.hidden_size,
        "inner_size": model.inner_size,
        "hidden_dropout_prob": model.hidden_dropout,
        "attn_dropout_prob": model.attn_dropout,
        "hidden_act": "gelu",
        "layer_norm_eps": model.layer_norm_eps,
        "initializer_range": model.initializer_range,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        # training
        "epochs": train.epochs,
        "train_batch_size": train.batch_size,
        "learner": "adam",
        "learning_rate": train.lr,
        "weight_decay": train.weight_decay,
        "stopping_step": train.patience,
        "clip_grad_norm": None,
        "seed": threads_seed,
        "reproducibility": True,
        # evaluation: full ranking, valid NDCG@10
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
        "eval_batch_size": train.eval_batch_size,
        "metrics": ["Recall", "NDCG"],
        "topk": [10, 50],
        "valid_metric": "NDCG@10",
        # machinery
        "use_gpu": False,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
    }


def run_measured(command: list[str], env: dict, cwd: Path, log: Path) -> tuple[int, float, float]:
    """Run ``command``; return (exit code, wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    return env


def run_recbole(python: Path, release: Path, name: str, spec, threads: int, work: Path) -> dict:
    data_root = work / "recbole-data"
    (data_root / name).mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        link = data_root / name / f"{name}.{split}.inter"
        if not link.exists():
            link.symlink_to((release / f"{name}.{split}.inter").resolve())
    run_dir = work / "recbole-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "data_path": str(data_root), "dataset": name, "threads": threads, "workdir": str(run_dir),
        "recbole": {**recbole_config(spec, spec.train.seed), "checkpoint_dir": str(run_dir / "saved")},
    }
    settings_file = work / "recbole-settings.json"
    settings_file.write_text(json.dumps(settings, indent=2))
    log = work / "recbole.log"
    command = [str(python), str(REPO / "benchmarks" / "recbole_driver.py"), str(settings_file)]
    load_before = os.getloadavg()
    code, wall, peak = run_measured(command, thread_env(threads), run_dir, log)
    if code != 0:
        raise SystemExit(f"RecBole failed (exit {code}); its output is in {log}")
    line = next(line for line in reversed(log.read_text().splitlines()) if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    return {**result, "wall_seconds": wall, "peak_rss_mb": peak, "load_before": load_before, "load_after": os.getloadavg()}


def run_ours(name: str, data_dir: Path, threads: int, work: Path, overrides: list[str]) -> dict:
    output = work / "mmseqrec-run"
    command = [sys.executable, "-m", "finetune.cli", "--domain", name, "--model", "sasrec", "--data-dir", str(data_dir),
               "--output", str(output), "--quiet", *overrides]
    env = thread_env(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = work / "mmseqrec.log"
    load_before = os.getloadavg()
    code, wall, peak = run_measured(command, env, REPO, log)
    if code != 0:
        raise SystemExit(f"mmseqrec's finetune failed (exit {code}); its output is in {log}")
    metrics = json.loads(next(output.glob("sasrec-seed*/metrics.json")).read_text())
    history = metrics["history"]
    return {
        "library": "mmseqrec",
        "torch": torch.__version__,
        "threads": threads,
        "train_seconds": [entry["train_seconds"] for entry in history],
        "valid_seconds": [entry["valid_seconds"] for entry in history],
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "best_valid_ndcg@10": metrics["valid"]["ndcg@10"],
        "test": {key: metrics["test"][key] for key in METRICS},
        "wall_seconds": wall,
        "peak_rss_mb": peak,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report(results: list[dict], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; torch {torch.__version__}",
        "",
        "| library | s / train epoch | s / valid pass | epochs (best) | peak RSS MB | test R@10 | test N@10 | test R@50 | test N@50 | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        metrics = " | ".join(f"{r['test'][m]:.4f}" for m in METRICS)
        lines.append(
            f"| {r['library']} | {mean(r['train_seconds']):.2f} | {mean(r['valid_seconds']):.2f} | {r['epochs_run']} ({r['best_epoch']}) "
            f"| {r['peak_rss_mb']:,.0f} | {metrics} | {r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} |"
        )
    if len(results) == 2:
        rec, ours = sorted(results, key=lambda r: r["library"] != "recbole")
        lines += [
            "",
            f"Training epoch: mmseqrec {mean(rec['train_seconds']) / mean(ours['train_seconds']):.1f}x faster; "
            f"validation pass: {mean(rec['valid_seconds']) / mean(ours['valid_seconds']):.1f}x faster; "
            f"test NDCG@10 ratio mmseqrec / RecBole {ours['test']['ndcg@10'] / rec['test']['ndcg@10']:.3f}.",
        ]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, default=REPO.parent / "shared" / "data" / "amazon2018-scientific-mm-subset",
                        help="folder of released atomic files <name>.{train,valid,test}.inter (+ features for prepare)")
    parser.add_argument("--name", default="Scientific", help="the files' dataset name")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both libraries (default 1)")
    parser.add_argument("--venv", type=Path, default=REPO.parent / "venv-recbole", help="RecBole's virtualenv (created if missing)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmseqrec-vs-recbole",
                        help="scratch folder: the prepared domain, both runs and their logs")
    parser.add_argument("--only", choices=("recbole", "mmseqrec"), default=None, help="run one side only")
    parser.add_argument("--output", type=Path, default=None, help="also write the results (JSON) here")
    parser.add_argument("overrides", nargs="*", help="key=value applied to both (e.g. train.epochs=20)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/recbole_sasrec.py", *(sys.argv[1:] if argv is None else argv)])

    args.work.mkdir(parents=True, exist_ok=True)
    data_dir = args.work / "data"
    if not (data_dir / args.name / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "mmseqrec.cli", "prepare", "release", "--path", str(args.release), "--name", args.name,
                        "--data-dir", str(data_dir)], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    domain = load_domain(args.name, data_dir=data_dir)
    spec = resolve_config("sasrec", domain, overrides=parse_overrides(args.overrides))

    results = []
    if args.only in (None, "recbole"):
        python = ensure_recbole_venv(args.venv)
        results.append(run_recbole(python, args.release, args.name, spec, args.threads, args.work))
        print(f"RecBole done: {mean(results[-1]['train_seconds']):.2f} s / epoch", flush=True)
    if args.only in (None, "mmseqrec"):
        results.append(run_ours(args.name, data_dir, args.threads, args.work, args.overrides))
        print(f"mmseqrec done: {mean(results[-1]['train_seconds']):.2f} s / epoch", flush=True)
    text = report(results, command)
    print(text)
    if args.output:
        write_atomically(args.output, json.dumps({"command": command, "results": results, "report": text}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
