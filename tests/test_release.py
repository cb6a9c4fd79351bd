"""Importing (and exporting) the UniSRec/MISSRec release format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_inter, write_lcrec, write_release

from mmseqrec.cli import main
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import load_domain
from mmseqrec.data.sources.lcrec import prepare_lcrec
from mmseqrec.data.sources.release import (
    export_release,
    import_release,
    InterRows,
    infer_release_name,
    reconstruct_sequences,
    prepare_release,
    register,
    register_export,
)

SCIENTIFIC = "amazon2018-scientific-mm-subset"


def parse_inter(path: Path) -> tuple[str, list[tuple[int, tuple[int, ...], int]]]:
    """Header and (user, history, target) rows of an .inter file, independent of the importer."""
    lines = path.read_text().splitlines()
    rows = []
    for line in lines[1:]:
        user, history, target = line.split("\t")
        rows.append((int(user), tuple(int(t) for t in history.split()), int(target)))
    return lines[0], rows


def rows_of(examples) -> list[tuple[int, tuple[int, ...], int]]:
    return [(int(examples.user_id[r]), tuple(examples.history(r).tolist()), int(examples.target[r])) for r in range(len(examples))]


# --------------------------------------------------------------------------------------------
# Tiny fixture
# --------------------------------------------------------------------------------------------


def test_tiny_import_maps_ids_text_and_features(tmp_path: Path) -> None:
    tiny = write_release(tmp_path / "raw")
    tables = import_release(tiny.folder, dim=tiny.dim)

    assert tables.name == "Tiny"
    assert tables.num_items == tiny.n_items and tables.num_users == len(tiny.sequences)
    assert tables.item_raw_id == [f"I{i}" for i in range(tiny.n_items)]
    assert tables.user_raw_id == [f"U{u}" for u in range(len(tiny.sequences))]
    assert tables.item_text[0] == tiny.texts["I0"]
    assert tables.item_text[-1] is None  # the last item has no .text row
    assert tables.item_image == [None] * tiny.n_items
    assert set(tables.item_domain) == {"Tiny"}
    # Sequences come back with internal ids (release index + 1).
    assert [s.tolist() for s in tables.sequences] == [[i + 1 for i in s] for s in tiny.sequences]
    # Rows are kept exactly, in file order.
    for split, expected in tiny.rows.items():
        assert rows_of(tables.splits[split]) == [(u, tuple(i + 1 for i in h), t + 1) for u, h, t in expected]

    text, image = tables.features["text"], tables.features["image"]
    assert text.modality == "text" and image.modality == "image"
    assert text.values.shape == (tiny.n_items + 1, tiny.dim) and text.values.dtype == np.float32
    assert not text.values[0].any() and not text.present[0]
    np.testing.assert_array_equal(text.values[1:], tiny.text)
    np.testing.assert_array_equal(image.values[1:], tiny.image)
    assert text.present[1:].all()
    assert image.present[1:].tolist() == [True] * 6 + [False]  # row 6 is all zero: missing
    assert image.extra == {"source_file": "Tiny.feat3CLS", "missing_rows": 1}
    assert "CLIP ViT-B/32" in text.encoder
    assert "text_aug" not in tables.features
    assert tables.protocol["split"] == "leave-one-out (as released)" and tables.protocol["max_len"] == 50


def test_tiny_prepare_writes_a_loadable_domain(tmp_path: Path) -> None:
    tiny = write_release(tmp_path / "raw", with_text_aug=True)
    folder = prepare_release(tiny.folder, dim=tiny.dim, out=tmp_path / "processed", out_name="TinyOut")
    assert folder == tmp_path / "processed" / "TinyOut"
    domain = load_domain("TinyOut", data_dir=tmp_path / "processed")
    assert domain.num_items == tiny.n_items and domain.num_users == 3
    assert domain.manifest["counts"]["interactions"] == sum(len(s) for s in tiny.sequences)
    meta = domain.manifest["features"]
    assert meta["image"]["source_file"] == "Tiny.feat3CLS" and meta["image"]["items_with_feature"] == tiny.n_items - 1
    assert meta["text_aug"]["modality"] == "text" and meta["text_aug"]["source_file"] == "Tiny.feat2CLS"
    assert domain.manifest["source"]["type"] == "release" and "Tiny.train.inter" in domain.manifest["source"]["files"]
    with pytest.raises(FileExistsError):
        prepare_release(tiny.folder, dim=tiny.dim, out=tmp_path / "processed", out_name="TinyOut")
    prepare_release(tiny.folder, dim=tiny.dim, out=tmp_path / "processed", out_name="TinyOut", overwrite=True)


def test_encoder_overrides(tmp_path: Path) -> None:
    tiny = write_release(tmp_path / "raw")
    tables = import_release(tiny.folder, dim=tiny.dim, encoders={"text": "my text encoder", "image": "my image encoder"})
    assert tables.features["text"].encoder == "my text encoder"
    assert tables.features["image"].encoder == "my image encoder"


def test_sequences_rebuilt_through_truncated_histories(tmp_path: Path) -> None:
    # A cap of 3 with repeated items: histories are windows, and the same item recurs.
    sequences = [[0, 1, 0, 1, 2, 0, 1, 0, 3, 4, 0], [2, 2, 2, 2, 2, 1]]
    tiny = write_release(tmp_path / "raw", sequences=sequences, n_items=5, max_len=3, missing_image_rows=())
    tables = import_release(tiny.folder, dim=tiny.dim)
    assert [s.tolist() for s in tables.sequences] == [[i + 1 for i in s] for s in sequences]
    assert tables.protocol["longest_history"] == 3


def test_forward_written_train_rows_are_rebuilt_too(tmp_path: Path) -> None:
    sequences = [[0, 1, 0, 1, 2, 0, 1, 0, 3, 4, 0]]
    tiny = write_release(tmp_path / "raw", sequences=sequences, n_items=5, max_len=3, missing_image_rows=())
    write_inter(tiny.path("train.inter"), tiny.rows["train"][::-1])  # oldest target first
    tables = import_release(tiny.folder, dim=tiny.dim)
    assert tables.sequences[0].tolist() == [i + 1 for i in sequences[0]]


def test_chaining_backtracks_out_of_a_dead_end() -> None:
    # History window 1, rows written oldest first (0)->1, (1)->0, (0)->2, so the UniSRec-order
    # preference tries (0)->2 first, which dead-ends; only 0 1 0 2 uses every row.
    rows = InterRows(users=[0, 0, 0], histories=[[0], [1], [0]], targets=[1, 0, 2])
    empty = InterRows([], [], [])
    sequences = reconstruct_sequences({"train": rows, "valid": empty, "test": empty}, n_users=1, window=1)
    assert sequences[0].tolist() == [0, 1, 0, 2]


def test_name_is_inferred_and_ambiguity_reported(tmp_path: Path) -> None:
    write_release(tmp_path / "raw", name="Alpha")
    assert infer_release_name(tmp_path / "raw") == "Alpha"
    write_release(tmp_path / "raw", name="Beta")
    with pytest.raises(DataFormatError, match="Alpha, Beta.*--name"):
        import_release(tmp_path / "raw", dim=4)
    assert import_release(tmp_path / "raw", name="Beta", dim=4).name == "Beta"


def test_cli_prepare_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = write_release(tmp_path / "raw")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="source", required=True))
    args = parser.parse_args(
        ["release", "--path", str(tiny.folder), "--data-dir", str(tmp_path / "processed"), "--dim", str(tiny.dim), "--encoder-image", "X"]
    )
    assert args.func(args) == 0
    assert "Tiny: 3 users, 7 items" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "processed" / "Tiny" / "manifest.json").read_text())
    assert manifest["features"]["image"]["encoder"] == "X"

    export = argparse.ArgumentParser()
    register_export(export.add_subparsers(dest="target", required=True))
    args = export.parse_args(["release", "Tiny", "--data-dir", str(tmp_path / "processed"), "--output", str(tmp_path / "exported")])
    assert args.func(args) == 0
    assert (tmp_path / "exported" / "Tiny.test.inter").read_bytes() == tiny.path("test.inter").read_bytes()


def test_mmseqrec_export_release_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = write_release(tmp_path / "raw", with_text_aug=True)
    processed, exported = tmp_path / "processed", tmp_path / "exported"
    assert main(["prepare", "release", "--path", str(tiny.folder), "--data-dir", str(processed), "--dim", str(tiny.dim)]) == 0
    assert main(["export", "release", "--domain", "Tiny", "--data-dir", str(processed), "--output", str(exported)]) == 0
    assert str(exported / "Tiny.feat2CLS") in capsys.readouterr().out
    assert sorted(p.name for p in exported.iterdir()) == sorted(p.name for p in tiny.folder.iterdir())
    for path in exported.iterdir():
        assert path.read_bytes() == (tiny.folder / path.name).read_bytes(), path.name
    # Existing files are kept unless --overwrite; a missing domain is a clear error (exit code 2).
    assert main(["export", "release", "--domain", "Tiny", "--data-dir", str(processed), "--output", str(exported)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["export", "release", "--domain", "Tiny", "--data-dir", str(processed), "--output", str(exported), "--overwrite"]) == 0
    assert main(["export", "release", "--domain", "Nope", "--data-dir", str(processed), "--output", str(exported)]) == 2
    assert "Domain 'Nope' is not prepared" in capsys.readouterr().err
    assert main(["export", "release", "--data-dir", str(processed), "--output", str(exported)]) == 2
    assert "name the domain to export" in capsys.readouterr().err


def test_tiny_round_trip_is_byte_identical(tmp_path: Path) -> None:
    tiny = write_release(tmp_path / "raw", with_text_aug=True)
    folder = prepare_release(tiny.folder, dim=tiny.dim, out=tmp_path / "processed")
    written = export_release(folder, tmp_path / "exported", "Tiny")
    assert {p.name for p in written} == {p.name for p in tiny.folder.iterdir()}
    for path in written:
        assert path.read_bytes() == tiny.path(path.name[len("Tiny.") :]).read_bytes(), path.name
    with pytest.raises(FileExistsError):
        export_release(folder, tmp_path / "exported", "Tiny")


def test_export_of_a_domain_without_text_or_features(tmp_path: Path) -> None:
    # An LC-Rec style domain (ids only) exports as a release without .text / .featNCLS.
    lc = write_lcrec(tmp_path / "raw", items=None)
    folder = prepare_lcrec(lc.folder, out=tmp_path / "processed")
    written = export_release(load_domain(folder), tmp_path / "exported", "Tiny")
    assert sorted(p.name.split(".", 1)[1] for p in written) == ["item2index", "test.inter", "train.inter", "user2index", "valid.inter"]
    _, rows = parse_inter(tmp_path / "exported" / "Tiny.test.inter")
    assert rows == [(u, tuple(seq[:-1]), seq[-1]) for u, seq in enumerate(lc.sequences.values())]
    # ... and imports back to the same sequences.
    back = import_release(tmp_path / "exported")
    assert [s.tolist() for s in back.sequences] == [[i + 1 for i in s] for s in lc.sequences.values()]


# --------------------------------------------------------------------------------------------
# Real data: the Scientific full-modality subset
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scientific(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    raw = shared_data / SCIENTIFIC
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent")
    out = tmp_path_factory.mktemp("processed")
    return raw, prepare_release(raw, out=out)


def test_scientific_counts_match_the_readme(scientific: tuple[Path, Path]) -> None:
    raw, folder = scientific
    domain = load_domain(folder)
    counts = domain.manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (2928, 1585, 19712)
    assert (len(domain.splits["valid"]), len(domain.splits["test"])) == (2928, 2928)
    assert len(domain.splits["train"]) + 2 * 2928 + 2928 == 19712  # one non-target first item per user
    assert domain.features["text"].dim == 512 and domain.features["image"].dim == 512
    assert domain.features["text"].present[1:].all() and domain.features["image"].present[1:].all()
    assert all(t is not None for t in domain.item_text)
    # Every user's test row is its whole sequence but the last item (all histories are under 50 here).
    test = domain.splits["test"]
    for r in range(len(test)):
        u = int(test.user_id[r])
        seq = domain.sequence_values[domain.sequence_offsets[u] : domain.sequence_offsets[u + 1]]
        assert seq[:-1].tolist() == test.history(r).tolist() and seq[-1] == test.target[r]


def test_scientific_round_trip(scientific: tuple[Path, Path], tmp_path: Path) -> None:
    raw, folder = scientific
    written = export_release(folder, tmp_path, "Scientific")
    names = {p.name for p in written}
    assert names == {p.name for p in raw.iterdir()}
    for split in ("train", "valid", "test"):
        name = f"Scientific.{split}.inter"
        assert parse_inter(tmp_path / name) == parse_inter(raw / name), name
        assert (tmp_path / name).read_bytes() == (raw / name).read_bytes(), name
    for name in ("Scientific.item2index", "Scientific.user2index", "Scientific.feat1CLS", "Scientific.feat3CLS"):
        assert (tmp_path / name).read_bytes() == (raw / name).read_bytes(), name

    def texts(path: Path) -> dict[str, str]:
        lines = path.read_text().splitlines()[1:]
        return dict((k, v.strip()) for k, v in (line.split("\t", 1) for line in lines))

    # .text: the same item -> text rows (the importer strips the released trailing space; order is by item index).
    assert texts(tmp_path / "Scientific.text") == texts(raw / "Scientific.text")


def test_scientific_round_trip_through_the_cli(shared_data: Path, tmp_path: Path) -> None:
    """`mmseqrec prepare release` then `mmseqrec export release` gives back the released rows and feature bytes."""
    raw = shared_data / SCIENTIFIC
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent")
    processed, exported = tmp_path / "processed", tmp_path / "exported"
    assert main(["prepare", "release", "--path", str(raw), "--data-dir", str(processed)]) == 0
    assert main(["export", "release", "--domain", "Scientific", "--data-dir", str(processed), "--output", str(exported)]) == 0
    for split in ("train", "valid", "test"):
        name = f"Scientific.{split}.inter"
        assert parse_inter(exported / name) == parse_inter(raw / name), name
    for name in ("Scientific.feat1CLS", "Scientific.feat3CLS", "Scientific.item2index", "Scientific.user2index"):
        assert (exported / name).read_bytes() == (raw / name).read_bytes(), name


# --------------------------------------------------------------------------------------------
# Real data: Toys (Amazon 2014) with real CLIP text and image features, 17 items without an image
# --------------------------------------------------------------------------------------------

TOYS_USERS, TOYS_ITEMS, TOYS_INTERACTIONS = 19_412, 11_924, 167_597  # the shared README's table


def test_toys_counts_match_the_readme(toys_release: tuple[Path, Path]) -> None:
    raw, folder = toys_release
    domain = load_domain(folder)
    counts = domain.manifest["counts"]
    # The README counts every interaction of every user: the whole rebuilt sequence.
    assert (counts["users"], counts["items"], counts["interactions"]) == (TOYS_USERS, TOYS_ITEMS, TOYS_INTERACTIONS)
    assert domain.sequence_values.size == TOYS_INTERACTIONS
    assert (len(domain.splits["valid"]), len(domain.splits["test"])) == (TOYS_USERS, TOYS_USERS)
    # Train targets are the 2nd to the third-to-last item: the first item of a user is never a target.
    assert len(domain.splits["train"]) == len(parse_inter(raw / "Toys.train.inter")[1]) == TOYS_INTERACTIONS - 3 * TOYS_USERS
    test = domain.splits["test"]
    for r in range(0, len(test), 997):  # a sample of users: the test row is the sequence but its last item
        u = int(test.user_id[r])
        seq = domain.sequence_values[domain.sequence_offsets[u] : domain.sequence_offsets[u + 1]]
        assert seq[:-1][-50:].tolist() == test.history(r).tolist() and seq[-1] == test.target[r]


def test_toys_items_without_an_image_are_masked(toys_release: tuple[Path, Path]) -> None:
    raw, folder = toys_release
    domain = load_domain(folder)
    released = np.fromfile(raw / "Toys.feat3CLS", dtype="<f4").reshape(-1, 512)
    zero_rows = np.flatnonzero(~released.any(axis=1))
    assert zero_rows.size == 17
    image = domain.features["image"]
    assert not image.present[0]
    assert np.array_equal(np.flatnonzero(~image.present[1:]), zero_rows)  # exactly those 17, nothing else
    assert not image.values[1:][zero_rows].any()
    assert np.array_equal(image.values[1:][image.present[1:]], released[image.present[1:]])
    entry = domain.manifest["features"]["image"]
    assert (entry["items_with_feature"], entry["missing_rows"]) == (TOYS_ITEMS - 17, 17)
    assert "Toys.feat3CLS: 17 all-zero row(s) recorded as missing 'image' features" in domain.manifest["notes"]
    # Real CLIP vectors, not normalised, as the README describes (text norms ~7, image ~10): a
    # swapped or misread file would not give these.
    text = domain.features["text"]
    assert text.present[1:].all() and text.dim == image.dim == 512
    assert 6.0 < np.median(np.linalg.norm(text.values[1:], axis=1)) < 8.5
    assert 8.5 < np.median(np.linalg.norm(image.values[1:][image.present[1:]], axis=1)) < 11.5


def test_toys_item_text(toys_release: tuple[Path, Path]) -> None:
    _, folder = toys_release
    domain = load_domain(folder, features=[])
    assert len(domain.item_text) == TOYS_ITEMS and all(t for t in domain.item_text)
    assert domain.item_raw_id[0] == "B000EUKRY0"
    assert domain.item_text[0].startswith("Title: Fisher-Price Little People Lil' Movers Airplane ; Description: ")
