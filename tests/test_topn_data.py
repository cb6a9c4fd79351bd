"""The top-N track's data: the format and its checks, the DiffMM importer and its restricted
unpickler, and general splits made from a sequential domain."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse
from tiny import tiny_tables, write_tiny_topn_domain

from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.data.format import SHAPE_KEY, DataFormatError, UserItems, sha256_of, write_domain
from mmseqrec.data.loading import load_domain
from mmseqrec.data.safe_pickle import load_sparse_matrix
from mmseqrec.data.sources.diffmm import build_diffmm, prepare_diffmm
from mmseqrec.data.split import per_user_split

# --------------------------------------------------------------------------------------------
# The format
# --------------------------------------------------------------------------------------------


def test_a_domain_carries_both_tracks_and_reads_back(tmp_path):
    folder = write_tiny_topn_domain(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tracks"] == ["sequential", "topn"]
    assert manifest["topn"]["files"] == {s: f"topn/{s}.parquet" for s in ("train", "valid", "test")}
    domain = load_domain(folder)
    assert domain.tracks == ["sequential", "topn"] and len(domain.splits["test"]) == domain.num_users
    counts = manifest["topn"]["counts"]
    assert [len(domain.topn[s]) for s in ("train", "valid", "test")] == [counts[f"{s}_pairs"] for s in ("train", "valid", "test")]
    # every user's distinct items, split three ways without overlap
    for user in range(domain.num_users):
        parts = [set(domain.topn[s].of(user).tolist()) for s in ("train", "valid", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        sequence = domain.sequence_values[domain.sequence_offsets[user] : domain.sequence_offsets[user + 1]]
        assert set().union(*parts) == set(sequence.tolist())
    assert "top-N:" in domain.describe()


def _rewrite(folder: Path, split: str, users, items, shape=None) -> None:
    """Replace a top-N split file (and its checksum), to plant a defect."""
    path = folder / "topn" / f"{split}.parquet"
    table = pq.read_table(path)
    import pyarrow as pa

    new = pa.table({"user_id": pa.array(users, type=pa.int32()), "item_id": pa.array(items, type=pa.int32())})
    metadata = table.schema.metadata if shape is None else {SHAPE_KEY: json.dumps(list(shape)).encode()}
    pq.write_table(new.replace_schema_metadata(metadata), path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["checksums"][f"topn/{split}.parquet"] = sha256_of(path)
    manifest["topn"]["counts"][f"{split}_pairs"] = len(users)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def topn_folder(tmp_path):
    return write_tiny_topn_domain(tmp_path)


def _pairs(folder: Path, split: str):
    table = pq.read_table(folder / "topn" / f"{split}.parquet")
    return table.column("user_id").to_pylist(), table.column("item_id").to_pylist()


def test_matrices_of_different_shapes_are_refused_naming_the_file(topn_folder):
    users, items = _pairs(topn_folder, "valid")
    _rewrite(topn_folder, "valid", users, items, shape=(80, 41))
    with pytest.raises(DataFormatError, match=r"topn/valid\.parquet: a 80 x 41 matrix, but the domain has 80 users x 40 items"):
        load_domain(topn_folder)


def test_a_pair_in_two_splits_is_refused_naming_both_files(topn_folder):
    users, items = _pairs(topn_folder, "test")
    train_users, train_items = _pairs(topn_folder, "train")
    _rewrite(topn_folder, "test", users + [train_users[0]], items + [train_items[0]])
    with pytest.raises(DataFormatError, match=r"train\.parquet and .*test\.parquet overlap: user 0 - item \d+ is in both \(1 pairs\)"):
        load_domain(topn_folder)


def test_a_user_without_any_interaction_is_refused(topn_folder):
    keep = {s: [(u, i) for u, i in zip(*_pairs(topn_folder, s)) if u != 5] for s in ("train", "valid", "test")}
    for split, pairs in keep.items():
        _rewrite(topn_folder, split, [u for u, _ in pairs], [i for _, i in pairs])
    with pytest.raises(DataFormatError, match=r"train\.parquet: user 5 has no interaction in any split \(1 such users\)"):
        load_domain(topn_folder)


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("item_id", 41, r"field 'item_id' has 1 value\(s\) outside 1\.\.40"),
    ("item_id", 0, r"field 'item_id' has 1 value\(s\) outside 1\.\.40"),
    ("user_id", 80, r"field 'user_id' has 1 value\(s\) outside 0\.\.79"),
])
def test_ids_out_of_range_are_refused_naming_the_file(topn_folder, column, value, expected):
    users, items = _pairs(topn_folder, "test")
    (users if column == "user_id" else items)[-1] = value
    _rewrite(topn_folder, "test", users, items)
    with pytest.raises(DataFormatError, match=r"topn/test\.parquet: " + expected):
        load_domain(topn_folder)


def test_a_repeated_pair_is_refused(topn_folder):
    users, items = _pairs(topn_folder, "train")
    _rewrite(topn_folder, "train", users + users[:1], items + items[:1])
    with pytest.raises(DataFormatError, match=r"train\.parquet: user 0 - item \d+ occurs twice"):
        load_domain(topn_folder)


def test_writing_refuses_overlapping_splits_before_anything_is_written(tmp_path):
    tables = tiny_tables(name="Bad")
    tables.topn, _ = per_user_split(tables.sequences, "random", (8, 1, 1))
    train = tables.topn["train"]
    tables.topn["valid"] = UserItems.from_pairs(np.r_[tables.topn["valid"].users(), 0], np.r_[tables.topn["valid"].items, train.of(0)[0]], 80)
    with pytest.raises(DataFormatError, match="Bad top-N train split and Bad top-N valid split overlap: user 0"):
        write_domain(tables, tmp_path / "Bad")
    assert not (tmp_path / "Bad").exists()


# --------------------------------------------------------------------------------------------
# The restricted unpickler
# --------------------------------------------------------------------------------------------

#: Set by ``_marker``; a pickle that calls it when loaded would flip it.
SIDE_EFFECTS: list[str] = []


def _marker(note: str) -> str:
    SIDE_EFFECTS.append(note)
    return note


class _CallsMarker:
    def __reduce__(self):
        return (_marker, ("the pickle ran code",))


class _CallsSystem:
    def __reduce__(self):
        import os

        return (os.system, ("touch should-never-exist",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_that_would_run_code_is_refused_before_anything_runs(tmp_path, protocol, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SIDE_EFFECTS.clear()
    marker, system = tmp_path / "marker.pkl", tmp_path / "system.pkl"
    # the payload hides inside a real matrix's company, as a tampered release would
    marker.write_bytes(pickle.dumps([scipy.sparse.coo_matrix(np.eye(3)), _CallsMarker()], protocol=protocol))
    system.write_bytes(pickle.dumps(_CallsSystem(), protocol=protocol))
    with pytest.raises(DataFormatError, match=r"marker\.pkl: refused to load: the pickle names .*_marker"):
        load_sparse_matrix(marker)
    with pytest.raises(DataFormatError, match=r"system\.pkl: refused to load: the pickle names (posix|nt|os)\.system"):
        load_sparse_matrix(system)
    assert SIDE_EFFECTS == [] and not (tmp_path / "should-never-exist").exists()
    # the same functions would have run under a plain pickle.load: the test's payloads are live
    pickle.loads(marker.read_bytes())
    assert SIDE_EFFECTS == ["the pickle ran code"]


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["coo", "csr", "csc"])
def test_sparse_matrix_pickles_of_every_protocol_load(tmp_path, protocol, kind):
    matrix = scipy.sparse.random(7, 5, density=0.4, format=kind, random_state=0)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(matrix, protocol=protocol))
    loaded = load_sparse_matrix(tmp_path / "m.pkl")
    assert isinstance(loaded, scipy.sparse.coo_matrix) and np.array_equal(loaded.toarray(), matrix.toarray())


def test_a_pickle_of_something_else_is_refused(tmp_path):
    (tmp_path / "array.pkl").write_bytes(pickle.dumps(np.ones((2, 2))))
    with pytest.raises(DataFormatError, match=r"array\.pkl: expected a 2-D scipy sparse matrix \(users x items\), got ndarray"):
        load_sparse_matrix(tmp_path / "array.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match=r"junk\.pkl: not a readable pickle"):
        load_sparse_matrix(tmp_path / "junk.pkl")


# --------------------------------------------------------------------------------------------
# The DiffMM importer
# --------------------------------------------------------------------------------------------


def write_diffmm_release(folder: Path, n_users: int = 6, n_items: int = 5, seed: int = 0) -> Path:
    """A small release in DiffMM's format: three disjoint coo pickles and float16 features (item 2's
    image row all zero: a missing image)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    cells = {"train": [], "valid": [], "test": []}
    for user in range(n_users):
        items = rng.permutation(n_items)[:4]
        cells["train"] += [(user, int(i)) for i in items[:2]]
        cells["valid"].append((user, int(items[2])))
        cells["test"].append((user, int(items[3])))
    for split, file in (("train", "trnMat.pkl"), ("valid", "valMat.pkl"), ("test", "tstMat.pkl")):
        rows, cols = zip(*cells[split])
        matrix = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
        (folder / file).write_bytes(pickle.dumps(matrix))
    image = rng.normal(size=(n_items, 4)).astype(np.float16)
    image[2] = 0
    np.save(folder / "image_feat.npy", image)
    np.save(folder / "audio_feat.npy", rng.normal(size=(n_items, 3)).astype(np.float16))
    return folder


def test_diffmm_release_imports_with_missing_feature_rows_masked(tmp_path):
    release = write_diffmm_release(tmp_path / "release")
    assert mmseqrec_main(["prepare", "diffmm", "--path", str(release), "--name", "small", "--data-dir", str(tmp_path / "data")]) == 0
    domain = load_domain("small", data_dir=tmp_path / "data")
    assert domain.tracks == ["topn"] and not domain.splits and (domain.num_users, domain.num_items) == (6, 5)
    assert [len(domain.topn[s]) for s in ("train", "valid", "test")] == [12, 6, 6]
    assert set(domain.features) == {"image", "audio"} and domain.features["audio"].modality == "audio"
    assert domain.features["image"].present.tolist() == [False, True, True, False, True, True]  # item id 3 = column 2
    assert np.allclose(domain.features["image"].values[1:][np.arange(5) != 2], np.load(release / "image_feat.npy").astype(np.float32)[np.arange(5) != 2])
    assert domain.train_item_counts().sum() == 12


def test_diffmm_release_with_different_shapes_is_refused(tmp_path):
    release = write_diffmm_release(tmp_path / "release")
    (release / "tstMat.pkl").write_bytes(pickle.dumps(scipy.sparse.coo_matrix((6, 7))))
    with pytest.raises(DataFormatError, match=r"tstMat\.pkl: a 6 x 7 matrix, but .*trnMat\.pkl is 6 x 5; the three splits must have one shape"):
        build_diffmm(release, "bad")


def test_diffmm_release_with_overlapping_splits_is_refused(tmp_path):
    release = write_diffmm_release(tmp_path / "release")
    (release / "valMat.pkl").write_bytes((release / "trnMat.pkl").read_bytes())
    with pytest.raises(DataFormatError, match="small top-N train split and small top-N valid split overlap: user 0 - item"):
        prepare_diffmm(release, "small", tmp_path / "data")
    assert not (tmp_path / "data" / "small").exists()


def test_real_tiktok_release(shared_data, tmp_path):
    release = shared_data / "diffmm-tiktok"
    if not release.is_dir():
        pytest.skip(f"{release} is absent")
    assert mmseqrec_main(["prepare", "diffmm", "--path", str(release), "--name", "tiktok", "--data-dir", str(tmp_path)]) == 0
    domain = load_domain("tiktok", data_dir=tmp_path)
    assert (domain.num_users, domain.num_items) == (9308, 6710)
    assert [len(domain.topn[s]) for s in ("train", "valid", "test")] == [59541, 3051, 6130]
    assert domain.manifest["topn"]["counts"]["users_without_train"] == 10
    assert {n: f.dim for n, f in domain.features.items()} == {"image": 128, "audio": 128}


# --------------------------------------------------------------------------------------------
# General splits of a sequential domain
# --------------------------------------------------------------------------------------------


def test_per_user_split_rules():
    sequences = [np.array([5, 6, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15]), np.array([1, 2]), np.array([3, 4, 3, 2])]
    splits, record = per_user_split(sequences, "chronological", (8, 1, 1))
    # user 0: 11 distinct items -> 1 valid, 1 test, the newest last
    assert splits["test"].of(0).tolist() == [15] and splits["valid"].of(0).tolist() == [14]
    assert sorted(splits["train"].of(0).tolist()) == [5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert splits["train"].of(1).tolist() == [1, 2] and record["train_only_users"] == 1  # fewer than 3 distinct items
    assert splits["test"].of(2).tolist() == [2] and splits["valid"].of(2).tolist() == [4]  # deduplicated: 3, 4, 2
    random_a, _ = per_user_split(sequences, "random", (8, 1, 1), seed=1)
    random_b, _ = per_user_split(sequences, "random", (8, 1, 1), seed=1)
    assert all(np.array_equal(random_a[s].items, random_b[s].items) for s in random_a)
    big = [np.arange(1, 41)]
    sizes = [len(s) for s in per_user_split(big, "random", (8, 1, 1))[0].values()]
    assert sizes == [32, 4, 4]
    with pytest.raises(ValueError, match="unknown split rule 'weekly'"):
        per_user_split(sequences, "weekly")


def test_general_split_command_adds_the_track_to_a_copy(tmp_path):
    from tiny import write_tiny_domain

    write_tiny_domain(tmp_path)
    original = (tmp_path / "Tiny" / "manifest.json").read_bytes()
    assert mmseqrec_main(["prepare", "general-split", "--domain", "Tiny", "--rule", "chronological", "--name", "Tiny-topn",
                          "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "Tiny" / "manifest.json").read_bytes() == original
    domain = load_domain("Tiny-topn", data_dir=tmp_path)
    assert domain.tracks == ["sequential", "topn"]
    assert domain.manifest["topn"]["protocol"]["rule"] == "chronological"
    # chronological: every user's test item is their last, as the leave-one-out test target
    assert np.array_equal(domain.topn["test"].items, domain.splits["test"].target)
    with pytest.raises(ValueError, match="already carries a top-N split"):
        from mmseqrec.data.sources.general_split import prepare_general_split

        prepare_general_split("Tiny-topn", "random", "again", data_dir=tmp_path)
    shutil.rmtree(tmp_path / "Tiny")
