"""A tiny processed domain with a learnable pattern, for fast model and loop tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmseqrec.data.format import DomainTables, FeatureSet, write_domain
from mmseqrec.data.split import leave_one_out


# A small open_clip architecture (open_clip's config format), for tests that encode many items.
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip(folder: Path, seed: int = 0) -> str:
    """A random tiny open_clip model saved with its weights in ``folder`` (open_clip's
    ``local-dir:`` layout), so that it loads the same every time; returns its model name."""
    import json

    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained=None)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return f"local-dir:{folder}"


def tiny_tables(
    n_users: int = 80, n_items: int = 40, seed: int = 0, name: str = "Tiny", features: bool = True, feature_dim: int = 16
) -> DomainTables:
    """Users walk through the catalogue in steps of +1 (mod N) from a random start, so the next
    item is predictable from the last one: a sequential model can learn it, popularity cannot."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(n_users):
        length = int(rng.integers(5, 12))
        start = int(rng.integers(0, n_items))
        sequences.append(((start + np.arange(length)) % n_items + 1).astype(np.int64))
    tables = DomainTables(
        name=name,
        source={"type": "test-fixture", "seed": seed},
        protocol={"split": "leave-one-out", "max_len": 50},
        item_raw_id=[f"I{i}" for i in range(1, n_items + 1)],
        item_text=[f"item {i}" for i in range(1, n_items + 1)],
        item_image=[None] * n_items,
        item_domain=[name] * n_items,
        user_raw_id=[f"U{u}" for u in range(n_users)],
        sequences=sequences,
        splits=leave_one_out(sequences, max_len=50),
    )
    if features:
        for fname, modality in (("text", "text"), ("image", "image")):
            values = np.zeros((n_items + 1, feature_dim), dtype=np.float32)
            values[1:] = rng.normal(size=(n_items, feature_dim)).astype(np.float32)
            present = np.ones(n_items + 1, dtype=bool)
            present[0] = False
            if modality == "image":
                present[1:4] = False
                values[1:4] = 0
            tables.features[fname] = FeatureSet(values, present, modality, f"random-{modality}")
    return tables


#: Every model (name -> its finetune entry, pretrainable ones from scratch), and the overrides that make a run take seconds.
TINY_MODELS = {"sasrec": "sasrec", "bert4rec": "bert4rec", "unisrec": "unisrec@scratch", "mmmlp": "mmmlp", "missrec": "missrec@scratch", "mostpop": "mostpop"}
TINY_OVERRIDES = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=16", "model.hidden_size=16", "model.inner_size=16", "model.num_heads=2"]


def train_tiny_runs(data: Path, out: Path, models: dict[str, str] = TINY_MODELS, *options: str, domain: str = "Tiny") -> dict[str, Path]:
    """One epoch of each of ``models`` on ``domain`` (in the data folder ``data``) with
    ``TINY_OVERRIDES`` and further finetune ``options``; returns name -> run folder."""
    from finetune.cli import main as finetune_main

    code = finetune_main(["--domain", domain, "--data-dir", str(data), "--model", ",".join(models.values()), "--output", str(out), "--quiet",
                          *TINY_OVERRIDES, *options])
    assert code == 0
    return {name: Path(out) / f"{entry.replace('@', '-')}-seed2020" for name, entry in models.items()}


def write_tiny_domain(root: Path, **kwargs) -> Path:
    tables = tiny_tables(**kwargs)
    return write_domain(tables, Path(root) / tables.name)


def write_domain_with_features(root: Path, name: str, seed: int, features: dict[str, tuple[str, int]]) -> Path:
    """A tiny domain (60 users, 30 items) whose feature sets are exactly ``features`` (name ->
    (modality, dim)), random vectors; items 1-2 lack an image, as a few do on the real Toys release."""
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
    return write_domain(tables, Path(root) / name)


def write_tiny_domains(root: Path) -> Path:
    """``Tiny`` (a fine-tuning target) and ``TinyA``, ``TinyB`` (a small pretraining mixture) in ``root``."""
    write_tiny_domain(root)
    write_tiny_domain(root, name="TinyA", n_users=60, n_items=30, seed=1)
    write_tiny_domain(root, name="TinyB", n_users=60, n_items=30, seed=2)
    return root


def tiny_topn_tables(name: str = "TinyTopN", **kwargs) -> DomainTables:
    """``tiny_tables`` carrying the top-N track as well: each user's items split 8:1:1 at random
    (a user walks consecutive items, so neighbouring items co-occur and a graph model can learn
    them; items 1..3 have no image)."""
    from mmseqrec.data.split import per_user_split

    tables = tiny_tables(name=name, **kwargs)
    tables.topn, tables.topn_protocol = per_user_split(tables.sequences, "random", (8, 1, 1), seed=0)
    return tables


def write_tiny_topn_domain(root: Path, **kwargs) -> Path:
    tables = tiny_topn_tables(**kwargs)
    return write_domain(tables, Path(root) / tables.name)


#: The general top-N models, and overrides that make a run on the tiny domain take seconds.
TOPN_MODELS = ("mfbpr", "lightgcn", "vbpr", "lattice", "freedom", "bm3", "diffmm")
TOPN_TINY_OVERRIDES = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=16", "model.embedding_size=16", "model.knn_k=3",
                       "model.denoiser_hidden=16", "model.diffusion_users=16"]
