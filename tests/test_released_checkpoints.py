"""The pretrained checkpoints shipped in ``checkpoints/released/`` (docs/real-transfer.md): each
is what its committed pretraining config makes, carries a model card naming its sources, and
fine-tunes on a domain of a user's own that has the same text features, with no override."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from finetune.cli import main as finetune_main
from mmseqrec import load_pretrained
from tiny import write_domain_with_features

ROOT = Path(__file__).resolve().parents[1]
RELEASED = ROOT / "checkpoints" / "released"

# folder in checkpoints/released -> (the pretraining config that made it, finetune's model name,
# the trainable parameters its pretraining log reports)
CHECKPOINTS = {
    "amazon-text-gt": ("amazon-text.yaml", "missrec", 939_649),
    "unisrec-amazon-text-gt": ("unisrec-amazon-text.yaml", "unisrec", 674_048),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_released_checkpoint_is_its_committed_config_trained_on_games_and_toys(name):
    config_name, model_name, parameters = CHECKPOINTS[name]
    folder = RELEASED / name
    committed = yaml.safe_load((ROOT / "pretrain" / "configs" / config_name).read_text())["model"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model_type"] == committed["name"] == model_name
    for key, value in committed.items():
        if key != "name":
            assert saved[key] == value, key
    # Games (16,859 items) and Toys (11,924 items) merged, with MiniLM text.
    assert saved["num_items"] == 16_859 + 11_924
    assert saved["text_dim"] == 384

    card = (folder / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["training_domains"] == ["Games", "Toys"]
    assert metadata["stage"] == "pretrain"

    model = load_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == parameters
    # Trained weights, not an initialisation: the layer norms have moved away from 1 and 0.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and any(float((m.weight.detach() - 1).abs().max()) > 1e-2 for m in norms)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_released_checkpoint_fine_tunes_on_a_users_own_domain(tmp_path, name):
    _, model_name, _ = CHECKPOINTS[name]
    write_domain_with_features(tmp_path / "data", "MyShop", 3, {"text_minilm": ("text", 384)})
    assert finetune_main([
        "--domain", "MyShop", "--data-dir", str(tmp_path / "data"), "--checkpoint", str(RELEASED / name),
        "--model", model_name, "--output", str(tmp_path / "ft"), "--quiet", "train.epochs=1", "train.batch_size=64",
    ]) == 0
    run = tmp_path / "ft" / f"{model_name}-seed2020"
    tuned = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert tuned["num_items"] == 30 and tuned["text_feature"] == "text_minilm"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["ndcg@10"] <= 1
