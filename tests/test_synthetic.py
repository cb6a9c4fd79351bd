"""The synthetic corpus (``mmseqrec prepare synthetic``) and the k-core filter it uses.

Everything runs at scale 0.3 (a few hundred users per domain) so the module takes seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mmseqrec.data.filters import iterative_kcore
from mmseqrec.data.loading import load_domain
from mmseqrec.data.sources import synthetic
from mmseqrec.data.sources.synthetic import (
    SOURCE_DOMAINS,
    TARGET_DOMAINS,
    SyntheticConfig,
    build_domain,
    prepare,
    source_params,
)

SCALE = 0.3
DOMAINS = ("Food", "Office", "Pantry")  # one source, two targets


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("synthetic")
    paths = prepare(out, SyntheticConfig(seed=0, scale=SCALE), domains=DOMAINS)
    return dict(zip(DOMAINS, paths))


@pytest.fixture(scope="module")
def office_tables():
    return build_domain("Office", SyntheticConfig(seed=0, scale=SCALE))


def _ndcg10(ranks: np.ndarray) -> float:
    return float(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


# --------------------------------------------------------------------------------------------
# iterative_kcore
# --------------------------------------------------------------------------------------------


def test_kcore_needs_more_than_one_pass():
    # Rows a1 (item 1 is alone) and c3 (user c is alone) go in the first pass; that leaves user a
    # and item 3 with one row each, whose removal then strands b2. Only the d/e x 4/5 block is a
    # real 2-core.
    users = np.array(["a", "a", "b", "b", "c", "d", "d", "e", "e"])
    items = np.array([1, 2, 2, 3, 3, 4, 5, 4, 5])
    keep = iterative_kcore(users, items, k_user=2, k_item=2)
    assert keep.tolist() == [False] * 5 + [True] * 4


def test_kcore_fixed_point_on_random_data():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 300, size=3000)
    items = (rng.zipf(1.6, size=3000) % 500).astype(np.int64)
    keep = iterative_kcore(users, items, k_user=5, k_item=5)
    assert 0 < keep.sum() < keep.size
    assert np.bincount(users[keep])[np.unique(users[keep])].min() >= 5
    assert np.bincount(items[keep])[np.unique(items[keep])].min() >= 5
    # Idempotent: the core of the core is itself.
    assert iterative_kcore(users[keep], items[keep], 5, 5).all()


def test_kcore_exact_small_case():
    # u0 and u1 share items 1 and 2; u2 alone has item 3. With k=2 on both sides the core is
    # u0/u1 x items 1/2, and u2's rows disappear (item 3 has one interaction).
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([1, 2, 1, 2, 3, 1])
    keep = iterative_kcore(users, items, k_user=2, k_item=2)
    assert keep.tolist() == [True, True, True, True, False, False]


def test_kcore_rejects_misaligned():
    with pytest.raises(ValueError):
        iterative_kcore(np.arange(3), np.arange(4))


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


def test_domain_lists():
    assert SOURCE_DOMAINS == ("Food", "Home", "CDs", "Kindle", "Movies")
    assert TARGET_DOMAINS == ("Scientific", "Pantry", "Instruments", "Arts", "Office")


def test_same_seed_identical_and_other_seed_different(office_tables):
    again = build_domain("syn-Office", SyntheticConfig(seed=0, scale=SCALE))
    for key in ("text", "image"):
        assert office_tables.features[key].values.tobytes() == again.features[key].values.tobytes()
        assert np.array_equal(office_tables.features[key].present, again.features[key].present)
    assert len(office_tables.sequences) == len(again.sequences)
    assert all(np.array_equal(a, b) for a, b in zip(office_tables.sequences, again.sequences))
    for split, ex in office_tables.splits.items():
        other = again.splits[split]
        assert np.array_equal(ex.user_id, other.user_id)
        assert np.array_equal(ex.history_values, other.history_values)
        assert np.array_equal(ex.history_offsets, other.history_offsets)
        assert np.array_equal(ex.target, other.target)
    assert office_tables.item_text == again.item_text

    different = build_domain("Office", SyntheticConfig(seed=1, scale=SCALE))
    assert different.source["seed"] == 1
    assert not np.array_equal(different.features["text"].values, office_tables.features["text"].values)
    assert different.item_raw_id != office_tables.item_raw_id


def test_prepared_files_are_byte_identical(prepared, tmp_path):
    # A second run, domains in another order, must reproduce every file (checksums in the manifest).
    again = prepare(tmp_path, SyntheticConfig(seed=0, scale=SCALE), domains=["Pantry", "Office"])
    for path in again:
        first = json.loads((prepared[path.name.removeprefix("syn-")] / "manifest.json").read_text())
        second = json.loads((path / "manifest.json").read_text())
        assert first["checksums"] == second["checksums"]


def test_marked_synthetic(prepared, office_tables):
    manifest = json.loads((prepared["Office"] / "manifest.json").read_text())
    assert manifest["name"] == "syn-Office" and prepared["Office"].name == "syn-Office"
    assert manifest["synthetic"] is True and office_tables.synthetic
    source = manifest["source"]
    assert source["type"] == "synthetic" and source["seed"] == 0 and source["scale"] == SCALE
    assert source["generator_version"] == synthetic.GENERATOR_VERSION
    assert manifest["protocol"]["split"] == "leave-one-out" and manifest["protocol"]["max_len"] == 50
    assert manifest["protocol"]["filters"]["iterative_kcore"] == {"k_user": 5, "k_item": 5}
    assert all(re.fullmatch(r"SYN-OFFICE-\d{6}", r) for r in office_tables.item_raw_id)
    texts = [t for t in office_tables.item_text if t is not None]
    assert texts and all(t.startswith("[synthetic Office] item ") for t in texts)
    assert set(office_tables.item_domain) == {"syn-Office"}
    assert manifest["features"]["text"]["encoder"] == "synthetic-text-v1"
    assert manifest["features"]["image"]["encoder"] == "synthetic-image-v1"
    assert manifest["features"]["image"]["modality"] == "image"


def test_counts_and_load_round_trip(prepared, office_tables):
    domain = load_domain(prepared["Office"])
    counts = domain.manifest["counts"]
    assert counts["users"] == domain.num_users == office_tables.num_users
    assert counts["items"] == domain.num_items == office_tables.num_items
    lengths = np.diff(domain.sequence_offsets)
    assert counts["interactions"] == lengths.sum() == sum(len(s) for s in office_tables.sequences)
    assert counts["valid_examples"] == counts["test_examples"] == domain.num_users
    assert counts["train_examples"] == int((lengths - 3).sum())
    assert domain.domain_names == ["syn-Office"]
    for key in ("text", "image"):
        assert np.array_equal(domain.features[key].values, office_tables.features[key].values)
        assert np.array_equal(domain.features[key].present, office_tables.features[key].present)
    assert np.array_equal(domain.splits["test"].target, office_tables.splits["test"].target)
    # Items are numbered by first appearance, walking users in order.
    first_seen = np.unique(domain.sequence_values, return_index=True)[1]
    assert np.all(np.diff(first_seen) > 0)


@pytest.mark.parametrize("name", DOMAINS)
def test_five_core_and_lengths(prepared, name):
    domain = load_domain(prepared[name], verify=False)
    lengths = np.diff(domain.sequence_offsets)
    assert lengths.min() >= 5 and lengths.max() <= 50
    assert 6.0 <= lengths.mean() <= 12.0
    item_counts = np.bincount(domain.sequence_values, minlength=domain.num_items + 1)[1:]
    assert item_counts.min() >= 5


@pytest.mark.parametrize("name", ["Food", "Office"])
def test_long_tailed_popularity_at_default_scale(name):
    # At the default scale the top 10% of items take a clearly outsized share of interactions
    # (the tiny test-scale targets are too small for the tail to show).
    tables = build_domain(name, SyntheticConfig(seed=0))
    item_counts = np.bincount(np.concatenate(tables.sequences), minlength=tables.num_items + 1)[1:]
    top = np.sort(item_counts)[::-1][: max(1, len(item_counts) // 10)]
    assert top.sum() / item_counts.sum() > 0.2


def test_features_and_missing_modalities(prepared):
    image_missing, text_missing, total = 0, 0, 0
    for name in DOMAINS:
        domain = load_domain(prepared[name], verify=False)
        n = domain.num_items
        for key in ("text", "image"):
            feature = domain.features[key]
            assert feature.values.shape == (n + 1, 512) and feature.values.dtype == np.float32
            assert np.isfinite(feature.values).all()
            assert not feature.present[0] and not feature.values[0].any()
            assert not feature.values[~feature.present].any()  # absent rows are zero
            assert (np.abs(feature.values[feature.present]).sum(1) > 0).all()
        assert [t is not None for t in domain.item_text] == domain.features["text"].present[1:].tolist()
        image_missing += int((~domain.features["image"].present[1:]).sum())
        text_missing += int((~domain.features["text"].present[1:]).sum())
        total += n
    assert 0.08 <= image_missing / total <= 0.22
    assert 0 < text_missing / total <= 0.06


def test_modalities_related_but_not_identical(office_tables):
    text = office_tables.features["text"].values[1:].astype(np.float64)
    image = office_tables.features["image"].values[1:].astype(np.float64)
    both = office_tables.features["text"].present[1:] & office_tables.features["image"].present[1:]

    def cosine_matrix(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return x @ x.T

    # Item-item similarities agree across modalities (same latent items), but not perfectly.
    upper = np.triu_indices(int(both.sum()), 1)
    corr = np.corrcoef(cosine_matrix(text[both])[upper], cosine_matrix(image[both])[upper])[0, 1]
    assert 0.3 < corr < 0.99


def test_sequential_signal_beats_popularity(prepared):
    """Next item = nearest text neighbour of the last item must clearly beat MostPop (a third of
    the steps buy a substitute); it would not if transitions ignored the latent space."""
    for name in DOMAINS:
        domain = load_domain(prepared[name], verify=False)
        test = domain.splits["test"]
        rows = np.arange(len(test))
        popularity = domain.train_item_counts().astype(np.float64)
        popularity[0] = -np.inf
        pop_ranks = (popularity[None, :] > popularity[test.target][:, None]).sum(1)

        feats = _unit_text(domain)
        last = test.history_values[test.history_offsets[1:] - 1]
        scores = feats[last] @ feats.T
        scores[:, 0] = -np.inf
        scores[rows, last] = -np.inf  # the item itself is trivially closest
        knn_ranks = (scores > scores[rows, test.target][:, None]).sum(1)
        pop, knn = _ndcg10(pop_ranks), _ndcg10(knn_ranks)
        assert pop > 0.015, f"{name}: popularity should still carry some signal (NDCG@10 {pop:.3f})"
        assert knn > 1.4 * pop, f"{name}: content kNN NDCG@10 {knn:.3f} vs MostPop {pop:.3f}"


def _unit_text(domain) -> np.ndarray:
    feats = domain.features["text"].values.astype(np.float64)
    norms = np.linalg.norm(feats, axis=1)
    return feats / np.where(norms > 0, norms, 1.0)[:, None]


def test_complements_are_not_substitutes():
    """Most steps buy a complement: an item of the same topic turned by the topic's shared
    complement map, which is mostly *not* among the item's own nearest neighbours."""
    config = SyntheticConfig(seed=0, scale=SCALE)
    world = synthetic._world(config)
    for name in ("Office", "Food"):
        items = synthetic._make_items(name, config, world)
        near, comp = items.neighbours[:, :10], items.complement_neighbours[:, :10]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near, comp)])
        assert overlap < 0.35, f"{name}: complements overlap the neighbours by {overlap:.2f}"
        assert (items.topic[comp] == items.topic[:, None]).mean() > 0.95  # complements stay in the topic
    # The complement maps are rotations shared by every domain (one per topic), and none is the identity.
    maps = world.complements
    np.testing.assert_allclose(maps @ maps.transpose(0, 2, 1), np.broadcast_to(np.eye(maps.shape[1]), maps.shape), atol=1e-10)
    assert np.all(np.einsum("tii->t", maps) < 0.5 * maps.shape[1])


def test_transitions_learnt_on_a_source_transfer_to_a_target(prepared):
    """What follows an item in the *source* Food predicts the *target* Pantry (whose topics Food
    covers) better than Pantry's own popularity: the structure pretraining can transfer."""
    food, pantry = (load_domain(prepared[n], verify=False) for n in ("Food", "Pantry"))
    source_feats = _unit_text(food)
    train = food.splits["train"]
    prev = source_feats[train.history_values[train.history_offsets[1:] - 1]]
    nxt = source_feats[train.target]

    feats = _unit_text(pantry)
    test = pantry.splits["test"]
    rows = np.arange(len(test))
    last = feats[test.history_values[test.history_offsets[1:] - 1]]
    # Average what followed the 20 source items most similar to the last item, then rank by cosine.
    similar = np.argpartition(-(last @ prev.T), 20, axis=1)[:, :20]
    query = nxt[similar].mean(1)
    scores = query @ feats.T
    scores[:, 0] = -np.inf
    transfer = _ndcg10((scores > scores[rows, test.target][:, None]).sum(1))

    popularity = pantry.train_item_counts().astype(np.float64)
    popularity[0] = -np.inf
    pop = _ndcg10((popularity[None, :] > popularity[test.target][:, None]).sum(1))
    assert transfer > 1.2 * pop, f"source transitions NDCG@10 {transfer:.3f} vs MostPop {pop:.3f}"


def test_source_params_are_json_stable():
    params = source_params("Office", SyntheticConfig(seed=3, scale=2.0))
    assert json.loads(json.dumps(params)) == params
    assert params["domain"] == "Office" and params["role"] == "target"


def test_unknown_domain_is_an_error():
    with pytest.raises(ValueError, match="unknown synthetic domain"):
        build_domain("Garden", SyntheticConfig(scale=SCALE))


# --------------------------------------------------------------------------------------------
# prepare() and the command line
# --------------------------------------------------------------------------------------------


def test_prepare_skips_existing(tmp_path):
    config = SyntheticConfig(seed=0, scale=SCALE)
    messages: list[str] = []
    (path,) = prepare(tmp_path, config, domains=["Pantry"], log=messages.append)
    assert path == tmp_path / "syn-Pantry" and "syn-Pantry:" in messages[-1]
    stamp = (path / "manifest.json").stat().st_mtime_ns

    prepare(tmp_path, config, domains=["Pantry"], log=messages.append)
    assert "already prepared" in messages[-1]
    prepare(tmp_path, SyntheticConfig(seed=5, scale=SCALE), domains=["Pantry"], log=messages.append)
    assert "--overwrite" in messages[-1]
    assert (path / "manifest.json").stat().st_mtime_ns == stamp  # untouched

    prepare(tmp_path, SyntheticConfig(seed=5, scale=SCALE), domains=["Pantry"], overwrite=True, log=messages.append)
    assert json.loads((path / "manifest.json").read_text())["source"]["seed"] == 5


def test_cli_prepare_synthetic(tmp_path, capsys):
    from mmseqrec import cli

    argv = ["prepare", "synthetic", "--data-dir", str(tmp_path), "--scale", str(SCALE), "--domains", "syn-Office,Pantry"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "syn-Office:" in out and "syn-Pantry:" in out and "interactions" in out
    for name in ("syn-Office", "syn-Pantry"):
        assert load_domain(name, data_dir=tmp_path).manifest["synthetic"] is True
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("already prepared") == 2
    assert cli.main(["prepare", "synthetic", "--data-dir", str(tmp_path), "--domains", "Garden"]) == 2
