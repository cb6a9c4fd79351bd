"""Prepared pretraining mixtures: disjoint ids, domain tags, concatenated features, the loaders."""

from __future__ import annotations

import os
from pathlib import Path

import amazon_fixtures as fx
import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny import tiny_tables

import mmseqrec.data.format as format_module
from mmseqrec.cli import main
from mmseqrec.data.format import DataFormatError, FeatureSet, write_domain
from mmseqrec.data.loading import DomainNotFoundError, load_domain, load_mixture
from mmseqrec.data.sources.amazon2018 import prepare_amazon2018
from mmseqrec.data.sources.mixture import prepare_mixture
from mmseqrec.data.sources.release import export_release


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "processed"
    write_domain(tiny_tables(n_users=30, n_items=20, seed=1, name="TinyA"), root / "TinyA")
    write_domain(tiny_tables(n_users=25, n_items=12, seed=2, name="TinyB"), root / "TinyB")
    write_domain(tiny_tables(n_users=10, n_items=8, seed=3, name="TinyC"), root / "TinyC")
    return root


def assert_same_domain(left, right) -> None:
    assert (left.num_items, left.num_users) == (right.num_items, right.num_users)
    for split in ("train", "valid", "test"):
        a, b = left.splits[split], right.splits[split]
        for field in ("user_id", "history_values", "history_offsets", "target"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{split}.{field}")
    assert set(left.features) == set(right.features)
    for name in left.features:
        np.testing.assert_array_equal(left.features[name].values, right.features[name].values)
        np.testing.assert_array_equal(left.features[name].present, right.features[name].present)
    np.testing.assert_array_equal(left.item_domain, right.item_domain)
    assert left.domain_names == right.domain_names
    np.testing.assert_array_equal(left.sequence_values, right.sequence_values)
    np.testing.assert_array_equal(left.sequence_offsets, right.sequence_offsets)
    assert left.item_raw_id == right.item_raw_id and left.item_text == right.item_text


def test_cli_mixture_matches_load_mixture(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "mixture", "--name", "AB", "--domains", "TinyA,TinyB", "--data-dir", str(data_dir)]) == 0
    assert "AB: 55 users, 32 items" in capsys.readouterr().out
    stored = load_domain("AB", data_dir=data_dir)
    in_memory = load_mixture(["TinyA", "TinyB"], data_dir=data_dir)
    assert_same_domain(stored, in_memory)
    assert stored.domain_names == ["TinyA", "TinyB"]


def test_ids_are_disjoint_and_features_concatenated(data_dir: Path) -> None:
    folder = prepare_mixture(["TinyA", "TinyB"], "AB", data_dir=data_dir)
    a, b, mix = load_domain("TinyA", data_dir=data_dir), load_domain("TinyB", data_dir=data_dir), load_domain(folder)
    assert (mix.num_items, mix.num_users) == (20 + 12, 30 + 25)
    assert mix.item_domain.tolist() == [0] + [0] * 20 + [1] * 12
    # TinyB's rows come after TinyA's, with item ids shifted by 20 and user ids by 30.
    na = len(a.splits["test"])
    np.testing.assert_array_equal(mix.splits["test"].target[na:], b.splits["test"].target + 20)
    np.testing.assert_array_equal(mix.splits["test"].user_id[na:], b.splits["test"].user_id + 30)
    np.testing.assert_array_equal(mix.splits["train"].history_values[: a.splits["train"].history_values.size], a.splits["train"].history_values)
    for name in ("text", "image"):
        values, present = mix.features[name].values, mix.features[name].present
        assert values.shape == (33, 16) and not values[0].any() and not present[0]
        np.testing.assert_array_equal(values[1:21], a.features[name].values[1:])
        np.testing.assert_array_equal(values[21:], b.features[name].values[1:])
        np.testing.assert_array_equal(present[21:], b.features[name].present[1:])
    manifest = mix.manifest
    assert manifest["source"]["type"] == "mixture" and manifest["source"]["domains"] == ["TinyA", "TinyB"]
    assert [m["item_ids"] for m in manifest["source"]["members"]] == [[1, 20], [21, 32]]
    assert [m["user_ids"] for m in manifest["source"]["members"]] == [[0, 29], [30, 54]]
    assert manifest["features"]["image"]["members"] == {"TinyA": "features/image.npy", "TinyB": "features/image.npy"}
    items = pq.read_table(folder / "items.parquet").to_pydict()
    assert items["domain"] == ["TinyA"] * 20 + ["TinyB"] * 12
    assert items["raw_id"][20] == "I1" and items["item_id"][20] == 21


def test_a_prepared_mixture_keeps_its_tags_in_load_mixture(data_dir: Path) -> None:
    prepare_mixture(["TinyA", "TinyB"], "AB", data_dir=data_dir)
    alone = load_mixture(["AB"], data_dir=data_dir)
    assert alone.domain_names == ["TinyA", "TinyB"]
    assert_same_domain(alone, load_mixture(["TinyA", "TinyB"], data_dir=data_dir))
    nested = load_mixture(["AB", "TinyC"], data_dir=data_dir)
    assert nested.domain_names == ["TinyA", "TinyB", "TinyC"]
    assert nested.item_domain.tolist() == [0] + [0] * 20 + [1] * 12 + [2] * 8
    assert_same_domain(nested, load_mixture(["TinyA", "TinyB", "TinyC"], data_dir=data_dir))


def test_amazon_members_carry_images_and_drop_unshared_features(data_dir: Path, tmp_path: Path) -> None:
    fx.write_amazon2018(tmp_path / "raw")
    prepare_amazon2018("Office", raw_dir=tmp_path / "raw", out=data_dir, download=False, progress=False)
    folder = prepare_mixture(["Office", "TinyC"], "Mix", data_dir=data_dir)
    mix = load_domain(folder)
    assert mix.features == {}  # Office has no features yet
    assert "feature set(s) image, text of TinyC left out: not every member has them" in mix.manifest["notes"]
    items = pq.read_table(folder / "items.parquet").to_pydict()
    assert items["image"][:6] == fx.IMAGES_2018 and items["image"][6:] == [None] * 8
    assert items["text"][:6] == fx.TEXTS_2018
    users = pq.read_table(folder / "users.parquet").to_pydict()["raw_id"]
    assert users[:8] == fx.USERS and users[8:] == [f"U{u}" for u in range(10)]
    with pytest.raises(ValueError, match="Mix is a mixture of domains; export its members"):
        export_release(folder, tmp_path / "exported", "Mix")


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_dimension_mismatch_names_the_files(data_dir: Path) -> None:
    tables = tiny_tables(n_users=10, n_items=8, seed=4, name="Wide")
    values = np.zeros((9, 24), dtype=np.float32)
    values[1:] = 1.0
    tables.features["text"] = FeatureSet(values, np.r_[False, np.ones(8, bool)], "text", "random-text")
    write_domain(tables, data_dir / "Wide")
    before = sorted(os.listdir(data_dir))
    with pytest.raises(DataFormatError) as err:
        prepare_mixture(["TinyA", "Wide"], "Bad", data_dir=data_dir)
    message = str(err.value)
    assert "feature 'text' has different dimensions across the mixture" in message
    assert f"{data_dir / 'TinyA' / 'features' / 'text.npy'} (16-d)" in message
    assert f"{data_dir / 'Wide' / 'features' / 'text.npy'} (24-d)" in message
    assert sorted(os.listdir(data_dir)) == before


def test_encoder_mismatch(data_dir: Path) -> None:
    tables = tiny_tables(n_users=10, n_items=8, seed=5, name="Other")
    tables.features["text"].encoder = "another-encoder"
    write_domain(tables, data_dir / "Other")
    with pytest.raises(DataFormatError, match=r"feature set 'text' comes from different encoders.*TinyA/manifest\.json: 'random-text'.*'another-encoder'"):
        prepare_mixture(["TinyA", "Other"], "Bad", data_dir=data_dir)


def test_bad_member_lists(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="TinyA listed more than once"):
        prepare_mixture(["TinyA", "TinyB", "TinyA"], "Bad", data_dir=data_dir)
    with pytest.raises(DomainNotFoundError, match="Domain 'Nope' is not prepared"):
        prepare_mixture(["TinyA", "Nope"], "Bad", data_dir=data_dir)
    with pytest.raises(ValueError, match="cannot be named after one of its members"):
        prepare_mixture(["TinyA", "TinyB"], "TinyA", data_dir=data_dir, overwrite=True)
    prepare_mixture(["TinyA", "TinyB"], "AB", data_dir=data_dir)
    with pytest.raises(ValueError, match="overlap"):
        prepare_mixture(["AB", "TinyB"], "ABB", data_dir=data_dir)
    with pytest.raises(FileExistsError, match="AB already exists"):
        prepare_mixture(["TinyA", "TinyB"], "AB", data_dir=data_dir)
    assert main(["prepare", "mixture", "--name", "X", "--domains", "TinyA,Nope", "--data-dir", str(data_dir)]) == 2


def test_failure_while_writing_leaves_nothing_behind(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(os.listdir(data_dir))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(format_module.np, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prepare_mixture(["TinyA", "TinyB"], "AB", data_dir=data_dir)
    assert sorted(os.listdir(data_dir)) == before



def test_merging_releases_the_members_mapped_feature_pages_and_keeps_them_readable(tmp_path):
    """The mixture's tables are copies; the members' memory-mapped tables give their resident
    pages back after the copy and still read the same values afterwards."""
    from tiny import write_tiny_domains

    from mmseqrec.data.loading import _shifted_concat, load_domain, merge_domains

    write_tiny_domains(tmp_path)
    member = load_domain("Tiny", data_dir=tmp_path)
    before = {name: np.array(f.values) for name, f in member.features.items()}
    assert all(isinstance(f.values, np.memmap) or isinstance(f.values.base, np.memmap) for f in member.features.values())
    merged = merge_domains([member, member])
    for name, values in before.items():
        assert np.array_equal(np.asarray(member.features[name].values), values)  # still readable after the release
        assert np.array_equal(merged.features[name].values[1 : member.num_items + 1], values[1:])
        assert np.array_equal(merged.features[name].values[member.num_items + 1 :], values[1:])
    assert np.array_equal(_shifted_concat([np.array([1, 2]), np.array([3])], np.array([0, 10])), [1, 2, 13])
