"""The general top-N models: one smoke test each (shapes, the loss goes down, save -> load gives
identical scores), bounded gradients with missing modalities, and `finetune` / `compare` /
`evaluate` on the top-N track."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from tiny import TOPN_MODELS, TOPN_TINY_OVERRIDES, tiny_topn_tables, write_tiny_domain, write_tiny_topn_domain

from finetune.cli import main as finetune_main
from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.data.batching import PairBatchSampler, PairCollator
from mmseqrec.data.format import write_domain
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MODELS
from mmseqrec.models.base import apply_stage
from mmseqrec.significance import group_scores
from tolerances import close

SMALL = {"embedding_size": 16, "knn_k": 3, "denoiser_hidden": 32, "diffusion_users": 32, "feat_embed_dim": 16}
# A gradient of this size on a tiny model at initialisation means a degenerate normalisation (as tests/test_gradients.py).
GRADIENT_BOUND = 1e4


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return load_domain(write_tiny_topn_domain(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def ragged_domain(tmp_path_factory):
    """Items 1..3 lack the image, 4..5 the text, item 6 has neither."""
    tables = tiny_topn_tables(name="RaggedTopN")
    for item in (4, 5, 6):
        tables.features["text"].present[item] = False
        tables.features["text"].values[item] = 0
    tables.features["image"].present[6] = False
    tables.features["image"].values[6] = 0
    root = tmp_path_factory.mktemp("ragged")
    write_domain(tables, root / tables.name)
    return load_domain(tables.name, data_dir=root)


def build(name: str, domain, **values):
    model_cls, config_cls = MODELS[name]
    own = {k: v for k, v in {**SMALL, **values}.items() if k in config_cls.__dataclass_fields__}
    model = model_cls(config_cls(**{**model_cls.domain_config(domain, own), **own}))
    model.attach_domain(domain)
    return model


def pair_batch(domain, size: int = 128, epoch: int = 0) -> dict[str, torch.Tensor]:
    sampler = PairBatchSampler(domain.topn["train"], domain.num_items, size, seed=0)
    sampler.set_epoch(epoch)
    return PairCollator(sampler)(next(iter(sampler)))


def seeded_loss(model, batch) -> float:
    torch.manual_seed(123)  # the same dropout masks, noise and negatives of the losses, before and after
    with torch.no_grad():
        return model.loss(batch).item()


@pytest.mark.parametrize("name", TOPN_MODELS)
def test_shapes_loss_goes_down_and_save_load_scores_identically(domain, name, tmp_path):
    torch.manual_seed(0)
    model = build(name, domain)
    assert model.track == "topn"
    apply_stage(model, "finetune")
    model.train()
    model.on_epoch_start(0)
    batch = pair_batch(domain)
    first = seeded_loss(model, batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(30):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert seeded_loss(model, batch) < first * 0.9, name

    model.eval()
    torch.set_grad_enabled(False)
    users = {"user_id": torch.arange(10)}
    assert model(users).shape[0] == 10
    scores = model.score_all(users)
    assert scores.shape == (10, domain.num_items) and torch.isfinite(scores).all()
    assert close(model.score_items(model(users), 3, 9), scores[:, 2:8])  # a block of the catalogue, computed on its own
    model.save_pretrained(tmp_path / name)
    loaded = type(model).from_pretrained(str(tmp_path / name))
    assert loaded.config == model.config
    loaded.attach_domain(domain)
    assert torch.equal(loaded.score_all(users), scores), name
    torch.set_grad_enabled(True)


@pytest.mark.parametrize("name", TOPN_MODELS)
def test_one_step_on_missing_modalities_has_bounded_gradients(ragged_domain, name):
    """The general track's counterpart of tests/test_gradients.py: one BPR batch over items with
    missing modalities (and one item with none) at initialisation."""
    torch.manual_seed(0)
    model = build(name, ragged_domain)
    apply_stage(model, "finetune")
    model.train()
    model.on_epoch_start(0)
    batch = pair_batch(ragged_domain, 256)
    assert {1, 2, 3, 4, 5, 6} & set(batch["pos_item"].tolist() + batch["neg_item"].tolist())
    loss = model.loss(batch)
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values()), name
    largest = max(float(g.abs().max()) for g in grads.values())
    assert largest < GRADIENT_BOUND, f"{name}: gradient {largest:.3g}"


def test_negatives_are_never_training_items_and_an_epoch_is_reproducible(domain):
    sampler = PairBatchSampler(domain.topn["train"], domain.num_items, 50, seed=3)
    collate = PairCollator(sampler)
    batches = [collate(b) for b in sampler]
    pairs = torch.cat([b["row"] for b in batches]).sort().values
    assert torch.equal(pairs, torch.arange(len(domain.topn["train"])))  # every training pair once
    for batch in batches:
        assert not domain.topn["train"].contains(batch["user_id"].numpy(), batch["neg_item"].numpy(), domain.num_items).any()
        assert domain.topn["train"].contains(batch["user_id"].numpy(), batch["pos_item"].numpy(), domain.num_items).all()
    again = PairBatchSampler(domain.topn["train"], domain.num_items, 50, seed=3)
    assert [b["neg_item"].tolist() for b in batches] == [PairCollator(again)(b)["neg_item"].tolist() for b in again]
    again.set_epoch(1)
    assert [b["neg_item"].tolist() for b in batches] != [PairCollator(again)(b)["neg_item"].tolist() for b in again]


def test_multimodal_models_need_features_and_id_models_do_not(tmp_path):
    tables = tiny_topn_tables(name="NoFeatures", features=False)
    write_domain(tables, tmp_path / tables.name)
    bare = load_domain(tables.name, data_dir=tmp_path)
    assert MODELS["lightgcn"][0].domain_config(bare, {}) == {"num_users": 80, "num_items": 40}
    with pytest.raises(ValueError, match="VBPR is a multimodal model and domain NoFeatures has no item features"):
        MODELS["vbpr"][0].domain_config(bare, {})
    with pytest.raises(ValueError, match="has no feature set audio"):
        MODELS["bm3"][0].domain_config(load_domain(write_tiny_topn_domain(tmp_path / "x")), {"features": "audio"})


def test_finetune_every_model_and_evaluate_reproduces_the_metrics(tmp_path, capsys):
    write_tiny_topn_domain(tmp_path / "data")
    out = tmp_path / "runs"
    code = finetune_main(["--domain", "TinyTopN", "--data-dir", str(tmp_path / "data"), "--model", ",".join(TOPN_MODELS), "--output", str(out),
                          "--quiet", *TOPN_TINY_OVERRIDES])
    assert code == 0, capsys.readouterr().err
    for name in TOPN_MODELS:
        metrics = json.loads((out / f"{name}-seed2020" / "metrics.json").read_text())
        assert metrics["track"] == "topn" and "test_by_popularity" not in metrics
        assert set(metrics["test"]) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision") for k in (10, 20, 50)}
        assert metrics["history"][0]["valid"]["recall@20"] == metrics["valid"]["recall@20"]  # one epoch: the best
        with np.load(out / f"{name}-seed2020" / "ranks.npz") as ranks:
            assert ranks["test"].ndim == 2 and ranks["test"].shape[0] == metrics["evaluated_users"]["test"]
    table = (out / "results.md").read_text()
    assert "valid recall@20" in table and "test precision@20" in table and "training and valid items masked" in table
    report = tmp_path / "eval.json"
    assert mmseqrec_main(["evaluate", "--run", str(out / "lattice-seed2020"), "--domain", "TinyTopN", "--data-dir", str(tmp_path / "data"),
                          "--output", str(report)]) == 0
    stored = json.loads((out / "lattice-seed2020" / "metrics.json").read_text())
    recomputed = json.loads(report.read_text())
    for split in ("valid", "test"):
        assert recomputed[split] == pytest.approx(stored[split], abs=1e-9)


def test_compare_on_the_top_n_track_pairs_users_on_ndcg_at_20(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_tiny_topn_domain(tmp_path / "data")
    out = tmp_path / "cmp"
    code = mmseqrec_main(["compare", "--domain", "TinyTopN", "--data-dir", str(tmp_path / "data"), "--models", "mfbpr,lightgcn", "--seeds", "2",
                          "--output", str(out), "--quiet", *TOPN_TINY_OVERRIDES[:3], "model.embedding_size=16"])
    assert code == 0, capsys.readouterr().err
    with open(out / "results.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"mfbpr", "lightgcn"}
    summary = json.loads((out / "results.json").read_text())["summary"]
    best = max(summary, key=lambda label: summary[label]["test ndcg@20"])
    other = next(label for label in summary if label != best)
    assert rows[best]["test ndcg@20 minus best"] == ""
    expected = group_scores([out / f"{other}-seed{s}" for s in (2020, 2021)], k=20).mean() - group_scores([out / f"{best}-seed{s}" for s in (2020, 2021)], k=20).mean()
    assert float(rows[other]["test ndcg@20 minus best"]) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(summary[other]["test ndcg@20"] - summary[best]["test ndcg@20"], abs=1e-9)
    assert "test ndcg@20 vs best [95% CI]" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_tracks_are_not_mixed_and_a_missing_track_is_named(tmp_path, capsys):
    write_tiny_topn_domain(tmp_path / "data")
    write_tiny_domain(tmp_path / "data")
    code = mmseqrec_main(["compare", "--domain", "TinyTopN", "--data-dir", str(tmp_path / "data"), "--models", "sasrec,lightgcn", "--no-plot",
                          "--output", str(tmp_path / "mixed")])
    assert code == 2 and "one table holds one track: sasrec (sequential), lightgcn (topn)" in capsys.readouterr().err
    code = finetune_main(["--domain", "Tiny", "--data-dir", str(tmp_path / "data"), "--model", "lightgcn", "--output", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "needs general top-N splits" in err and "mmseqrec prepare general-split --domain Tiny" in err


def test_recommending_from_histories_is_refused_with_the_reason(tmp_path, capsys):
    import mmseqrec

    write_tiny_topn_domain(tmp_path / "data")
    assert finetune_main(["--domain", "TinyTopN", "--data-dir", str(tmp_path / "data"), "--model", "mfbpr", "--output", str(tmp_path / "r"),
                          "--quiet", *TOPN_TINY_OVERRIDES[:3]]) == 0
    with pytest.raises(ValueError, match="MFBPR, a general top-N model: it scores the users it was trained on by their id"):
        mmseqrec.load(tmp_path / "r" / "mfbpr-seed2020", data_dir=tmp_path / "data")


def test_diffmm_can_subsample_its_contrast_anchors(domain):
    from mmseqrec.models.diffmm import _at_most

    nodes = torch.arange(10, 20)
    assert _at_most(nodes, 0) is nodes and _at_most(nodes, 10) is nodes
    drawn = _at_most(nodes, 3)
    assert drawn.shape == (3,) and len(set(drawn.tolist())) == 3 and set(drawn.tolist()) <= set(nodes.tolist())
    torch.manual_seed(0)
    model = build("diffmm", domain, contrast_nodes=2).train()
    terms = model.loss_terms(pair_batch(domain))
    assert all(torch.isfinite(value) for value in terms.values()) and terms["contrast"] > 0


def test_vbpr_penalises_the_content_vectors_so_the_projections_are_regularised(domain):
    """The L2 term covers [gamma_u, theta_u] and [gamma_i, c_i] (MMRec's form): it equals the hand
    computation and reaches the projections E, which the paper's lambda_E = 0 form leaves free."""
    torch.manual_seed(0)
    model = build("vbpr", domain, reg_weight=0.5)
    batch = pair_batch(domain, size=16)
    terms = model.loss_terms(batch)
    users, items = model.embeddings()
    u, pos, neg = batch["user_id"], batch["pos_item"] - 1, batch["neg_item"] - 1
    d = model.config.embedding_size
    by_hand = 0.5 * (users[u, : 2 * d].pow(2).sum() + items[pos, : 2 * d].pow(2).sum() + items[neg, : 2 * d].pow(2).sum()) / (2 * len(u))
    assert terms["l2"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    terms["l2"].backward()
    assert all(float(projection.weight.grad.abs().max()) > 0 for projection in model.projections)
