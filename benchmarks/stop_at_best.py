"""Finish a run that a time budget cut short: evaluate the best epoch it reached, chosen on valid.

    python benchmarks/stop_at_best.py RUN_DIR [RUN_DIR ...] [--data-dir DIR]

For a run folder that ``finetune`` left unfinished (stopped, killed, out of time), takes its
newest complete checkpoint (``state/step-*``), loads the weights of the epoch with the best valid
metric so far (the checkpoint keeps them), and evaluates valid and test with the evaluator of the
training loop. Writes ``best/`` and ``metrics.json`` as a finished run has them, so that
``benchmarks/summarise_runs.py`` and ``--resume`` treat the run as done; ``metrics.json`` says
``"stopped_by_budget"`` with the epochs trained and planned. The epoch is still chosen on valid
only; what the budget changes is how many epochs there were to choose from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmseqrec.checkpointing import BEST_WEIGHTS, MARKER  # noqa: E402
from mmseqrec.data.loading import load_domain  # noqa: E402
from mmseqrec.metrics import PROTOCOLS  # noqa: E402
from mmseqrec.models import model_classes  # noqa: E402
from mmseqrec.training import evaluate, finish_accelerator, make_accelerator, track_loader, TrainConfig  # noqa: E402


def newest_checkpoint(run: Path) -> Path:
    complete = sorted((p for p in (run / "state").glob("step-*") if (p / MARKER).is_file()), key=lambda p: int(p.name.split("-")[1]))
    if not complete:
        raise SystemExit(f"{run}: no complete checkpoint under state/ (nothing was trained to the end of an epoch)")
    return complete[-1]


def finish(run: Path, data_dir: str | None, accelerator) -> dict:
    if (run / "metrics.json").is_file():
        raise SystemExit(f"{run}: already finished (metrics.json exists)")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    train = TrainConfig(**resolved["train"])
    values = dict(resolved["model"])
    name = values.pop("name").lower()
    model_cls, config_cls = model_classes(name)
    domain = load_domain(resolved["data"]["domain"], data_dir=data_dir)
    model = model_cls(config_cls(**values))
    point = newest_checkpoint(run)
    state = json.loads((point / "trainer_state.json").read_text())["progress"]
    model.load_state_dict(load_file(str(point / BEST_WEIGHTS)))
    model.attach_domain(domain)
    model.eval()
    protocol = PROTOCOLS[model.track]
    results = {}
    for split in ("valid", "test"):
        loader = track_loader(domain, model.track, split, train, shuffle=False)
        results[split] = evaluate(model, loader, accelerator, domain.num_items, train.mask_history, train.eval_block_size, protocol=protocol)["metrics"]
    history = state["history"]
    metrics = {
        "model": type(model).__name__, "domain": domain.name, "track": model.track, "seed": train.seed, "stage": train.stage,
        "best_epoch": state["best_epoch"], "best_valid": state["best_score"], "valid_metric": protocol.valid_metric,
        "valid": results["valid"], "test": results["test"],
        "wall_clock_seconds": sum(entry.get("seconds", 0.0) for entry in history),
        "history": history,
        "stopped_by_budget": {"epochs_trained": len(history), "epochs_planned": train.epochs, "checkpoint": point.name,
                              "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")},
    }
    model.save_pretrained(run / "best")
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    accelerator = make_accelerator(cpu=True)
    for run in args.runs:
        metrics = finish(run, args.data_dir, accelerator)
        test = metrics["test"]
        print(f"{run}: {metrics['stopped_by_budget']['epochs_trained']} of {metrics['stopped_by_budget']['epochs_planned']} epochs, "
              f"best epoch {metrics['best_epoch']}: test recall@20 {test['recall@20']:.4f} ndcg@20 {test['ndcg@20']:.4f}")
    finish_accelerator(accelerator)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
