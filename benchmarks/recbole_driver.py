"""Train and test RecBole's SASRec on released atomic files; print one JSON line of timings.

Runs inside RecBole's own virtualenv (RecBole 1.2.1 needs numpy < 2), started by
``benchmarks/recbole_sasrec.py``, which also runs this project's SASRec on the same files.
It imports nothing from mmseqrec. Usage:

    <recbole-venv>/bin/python benchmarks/recbole_driver.py SETTINGS.json

SETTINGS.json holds ``data_path`` (the folder that contains ``<dataset>/``), ``dataset``,
``threads``, ``workdir`` (logs and the saved model go there) and ``recbole`` (the RecBole
configuration: hyperparameters, benchmark file names, metrics). The last line printed is
``RESULT {json}`` with the seconds of every training epoch and every validation pass, the
test evaluation's seconds, the best valid score, the four test metrics and the epochs run.
"""

from __future__ import annotations

import json
import os
import sys
import time


def timed(record: list[float], method):
    """``method`` wrapped so that the seconds of every call are appended to ``record``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = method(*args, **kwargs)
        record.append(time.perf_counter() - start)
        return result

    return wrapper


def main(settings_path: str) -> int:
    with open(settings_path) as handle:
        settings = json.load(handle)
    # RecBole 1.2.1 reloads its best checkpoint with torch.load, which refuses its pickled
    # config under the weights-only default of torch >= 2.6.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import torch

    torch.set_num_threads(int(settings["threads"]))
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    os.chdir(settings["workdir"])
    config_dict = dict(settings["recbole"], data_path=settings["data_path"])
    config = Config(model="SASRec", dataset=settings["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    started = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    loading = time.perf_counter() - started
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    train_seconds: list[float] = []
    valid_seconds: list[float] = []
    trainer._train_epoch = timed(train_seconds, trainer._train_epoch)
    trainer._valid_epoch = timed(valid_seconds, trainer._valid_epoch)
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    start = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    test_seconds = time.perf_counter() - start
    result = {
        "library": "recbole",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "items": int(dataset.item_num - 1),
        "train_rows": len(train_data._dataset),
        "loading_seconds": loading,
        "train_seconds": train_seconds,
        "valid_seconds": valid_seconds,
        "test_seconds": test_seconds,
        "epochs_run": len(train_seconds),
        "best_epoch": len(train_seconds) - 1 - int(trainer.cur_step),  # cur_step: epochs since the best
        "best_valid_ndcg@10": float(best_valid),
        "test": {key: float(value) for key, value in test.items()},
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
