"""The committed real-data pretraining configs, run as committed (architecture untouched) on
small stand-in sources with the same feature sets, and their checkpoints fine-tuned on a domain
of a user's own (not one of ../shared/data) with no override naming a feature or a layer."""

import json
from pathlib import Path

import pytest
import yaml

from finetune.cli import main as finetune_main
from pretrain.run import main as pretrain_main
from tiny import write_domain_with_features

CONFIGS = Path(__file__).resolve().parents[1] / "pretrain" / "configs"


@pytest.mark.parametrize(
    "config_name, features",
    [
        ("amazon-text.yaml", {"text_minilm": ("text", 384)}),
        ("toys-clip.yaml", {"text": ("text", 512), "image": ("image", 512)}),
    ],
)
def test_a_committed_real_config_pretrains_and_fine_tunes_on_a_new_domain(tmp_path, config_name, features):
    committed = yaml.safe_load((CONFIGS / config_name).read_text())
    data = tmp_path / "data"
    for name, seed in (("SourceA", 1), ("SourceB", 2), ("MyShop", 3)):
        write_domain_with_features(data, name, seed, features)

    assert pretrain_main([
        "--config", str(CONFIGS / config_name), "--data-dir", str(data), "--output", str(tmp_path / "pt"), "--quiet",
        "data.domains=[SourceA,SourceB]", "train.epochs=1", "train.batch_size=64",
    ]) == 0
    assert finetune_main([
        "--domain", "MyShop", "--data-dir", str(data), "--checkpoint", str(tmp_path / "pt" / "final"),
        "--model", "missrec", "--mode", "inductive", "--output", str(tmp_path / "ft"), "--quiet",
        "train.epochs=1", "train.batch_size=64",
    ]) == 0

    run = tmp_path / "ft" / "missrec-seed2020"
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    for key in ("modalities", "adapter", "num_decoder_layers", "hidden_size", "num_heads", "inner_size"):
        assert model[key] == committed["model"][key], key
    assert model["text_feature"] == committed["model"]["text_feature"]
    assert model["text_dim"] == features[committed["model"]["text_feature"]][1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["ndcg@10"] <= 1
