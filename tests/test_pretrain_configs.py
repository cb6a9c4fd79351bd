"""The committed real-data pretraining configs, run as committed (architecture untouched) on
small stand-in sources with the same feature sets, and their checkpoints fine-tuned on a domain
of a user's own (not one of ../shared/data) with no override naming a feature or a layer."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from finetune.cli import main as finetune_main
from mmseqrec.data.format import FeatureSet, write_domain
from pretrain.run import main as pretrain_main
from tiny import tiny_tables

CONFIGS = Path(__file__).resolve().parents[1] / "pretrain" / "configs"


def _domain_with(root: Path, name: str, seed: int, features: dict[str, tuple[str, int]]) -> None:
    """A tiny domain whose feature sets are exactly ``features`` (name -> (modality, dim)); a few
    items lack an image, as on the real Toys release."""
    tables = tiny_tables(name=name, seed=seed, n_users=60, n_items=30, features=False)
    rng = np.random.default_rng(seed)
    for feature, (modality, dim) in features.items():
        values = np.zeros((tables.num_items + 1, dim), dtype=np.float32)
        values[1:] = rng.normal(size=(tables.num_items, dim))
        present = np.ones(tables.num_items + 1, dtype=bool)
        present[0] = False
        if modality == "image":
            present[1:3] = False
            values[1:3] = 0
        tables.features[feature] = FeatureSet(values, present, modality, f"random-{dim}d")
    write_domain(tables, root / name)


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
        _domain_with(data, name, seed, features)

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
