"""``mmseqrec bench`` and the RecBole side-by-side script: what they measure and report (never
how fast: speed lives in BENCHMARKS.md)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny import write_tiny_domains

from mmseqrec.bench import training_speed
from mmseqrec.bench.loading_memory import data_bytes
from mmseqrec.bench.measure import run_measurement
from mmseqrec.bench.plan import FINETUNE_MODELS, PRETRAIN_MODELS, SCALES, make_plan
from mmseqrec.bench.report import render
from mmseqrec.cli import build_parser
from mmseqrec.data.loading import load_domain, load_mixture
from mmseqrec.runs import resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_domains(tmp_path_factory.mktemp("data"))


def test_quick_plan_measures_every_model_in_both_stages_and_every_part():
    plan = make_plan(quick=True, scales=["scientific"])
    trained = {(m.params["model"], m.params["stage"]) for m in plan if m.part == "train"}
    assert trained == {(m, "finetune") for m in FINETUNE_MODELS} | {(m, "pretrain") for m in PRETRAIN_MODELS}
    assert {m.part for m in plan} == {"train", "evaluate", "interest", "extract", "load"}
    assert {(m.params["algorithm"], m.params["tokens"]) for m in plan if m.part == "interest"} == {("dpc_knn", 10_000), ("kmeans", 10_000)}
    full = make_plan(quick=False, scales=list(SCALES))
    assert {m.params["tokens"] for m in full if m.part == "interest"} == {10_000, 100_000, 1_000_000}
    fhckm = [m for m in full if m.scale == "fhckm"]
    assert {m.part for m in fhckm} == {"train", "load"} and all(m.params.get("stage", "pretrain") == "pretrain" for m in fhckm)
    assert [m.params["domains"] for m in fhckm if m.part == "load"] == [SCALES["fhckm"].folders]


def test_bench_command_parses():
    args = build_parser().parse_args(["bench", "--quick", "--parts", "train,load", "--threads", "1"])
    assert args.quick and args.parts == "train,load" and args.func.__module__ == "mmseqrec.bench"


def test_training_speed_counts_the_rows_of_the_timed_steps(data):
    # Tiny has 414 training rows: with batches of 128 an epoch has 4 batches, so 6 steps cross
    # into a second epoch.
    result = training_speed.measure("sasrec", ["Tiny"], str(data), steps=5, warmup=1,
                                    overrides=["train.batch_size=128", "model.hidden_size=16", "model.inner_size=16"])
    assert result["timed_steps"] == 5 and result["epoch_steps"] == 4
    assert 5 <= result["rows"] <= 5 * 128 and result["rows_per_second"] > 0
    assert result["group_by_length"] is True  # the training default


def test_pretraining_speed_uses_the_pretraining_config(data):
    result = training_speed.measure("missrec", ["Tiny"], str(data), stage="pretrain", steps=1, warmup=0, pretrain_config="demo.yaml",
                                    overrides=["train.batch_size=64"])
    assert result["stage"] == "pretrain" and result["batch_size"] == 64 and result["group_by_length"] is False
    assert result["rows"] == 64


def test_benchmark_models_get_the_real_domain_configuration(data):
    domain = load_domain("Tiny", data_dir=data)
    domain.manifest["synthetic"] = True  # as a synthetic benchmark domain
    plain = resolve_config("sasrec", domain, domain_layers=False)
    demo = resolve_config("sasrec", domain)
    assert plain.model_config.hidden_size == 300 and demo.model_config.hidden_size == 64


def test_data_bytes_counts_features_and_examples(data):
    domain = load_mixture(["Tiny"], data_dir=data)
    features = sum(f.values.nbytes + f.present.nbytes for f in domain.features.values())
    assert data_bytes(domain) > features > 0


@pytest.mark.slow
def test_a_measurement_runs_in_its_own_process_and_reports_its_memory(data):
    result = run_measurement("load", {"domains": ["Tiny"], "data_dir": str(data)}, threads=1)
    domain = load_domain("Tiny", data_dir=data)
    assert result["part"] == "load" and result["users"] == domain.num_users and result["threads"] == 1
    assert result["peak_rss_mb"] > 10 and result["wall_seconds"] > 0


def test_report_shows_every_part_and_what_was_not_measured():
    common = {"peak_rss_mb": 100.0, "load_before": 1.0, "load_after": 1.0, "wall_seconds": 1.0, "threads": 1}
    record = {
        "command": "mmseqrec bench --quick", "started": "now", "seconds": 10.0, "threads": 1,
        "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 24, "gpu": None, "python": "3", "torch": "2", "numpy": "2"},
        "results": [
            {**common, "part": "train", "model": "sasrec", "stage": "finetune", "domain": "syn-Scientific", "items": 10, "train_rows": 100,
             "batch_size": 8, "group_by_length": True, "timed_steps": 2, "rows_per_second": 123.4},
            {**common, "part": "evaluate", "model": "sasrec", "domain": "syn-Scientific", "items": 10, "users": 5, "seconds": 1.0,
             "users_per_second": 5.0},
            {**common, "part": "interest", "algorithm": "kmeans", "tokens": 10_000, "clusters": 200, "seconds": 2.0},
            {**common, "part": "extract", "encoder": "clip", "device": "cpu", "precision": "fp32", "batch_size": 64, "texts": 64,
             "texts_per_second": 9.0, "images": 16, "images_per_second": 3.0},
            {**common, "part": "load", "domains": ["syn-Food"], "users": 5, "items": 10, "train_rows": 100, "seconds": 0.5,
             "data_mb": 1.0, "peak_over_data": 1.5},
            {"part": "interest", "params": {"tokens": 1_000_000}, "error": "no result within 60 s"},
        ],
    }
    text = render(record)
    for expected in ("123.4", "users/s", "kmeans", "9.0 texts/s", "1.50x", "no result within 60 s", "GPU: none"):
        assert expected in text, expected


def _recbole_script():
    spec = importlib.util.spec_from_file_location("recbole_sasrec", ROOT / "benchmarks" / "recbole_sasrec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recbole_gets_the_hyperparameters_of_this_suites_sasrec(data):
    script = _recbole_script()
    spec = resolve_config("sasrec", load_domain("Tiny", data_dir=data), overrides={"train": {"lr": 0.002}})
    config = script.recbole_config(spec, spec.train.seed)
    model, train = spec.model_config, spec.train
    pairs = {
        "n_layers": model.num_layers, "n_heads": model.num_heads, "hidden_size": model.hidden_size, "inner_size": model.inner_size,
        "hidden_dropout_prob": model.hidden_dropout, "attn_dropout_prob": model.attn_dropout, "layer_norm_eps": model.layer_norm_eps,
        "initializer_range": model.initializer_range, "MAX_ITEM_LIST_LENGTH": train.max_len, "train_batch_size": train.batch_size,
        "eval_batch_size": train.eval_batch_size, "learning_rate": 0.002, "weight_decay": train.weight_decay,
        "stopping_step": train.patience, "epochs": train.epochs, "seed": train.seed,
    }
    for key, value in pairs.items():
        assert config[key] == value, key
    assert config["loss_type"] == "CE" and config["valid_metric"] == "NDCG@10" and config["topk"] == [10, 50]
    assert config["eval_args"]["mode"] == "full" and config["benchmark_filename"] == ["train", "valid", "test"]
    assert script.torch_requirement() == f"torch=={torch.__version__.split('+')[0]}"
    json.dumps(config)  # it travels to the RecBole process as JSON
