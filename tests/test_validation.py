"""Bad input is rejected with a message that names the file, the place and what was expected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import TinyRelease, write_inter, write_lcrec, write_release

import mmseqrec.data.format as format_module
from mmseqrec.data.format import DataFormatError, sha256_of
from mmseqrec.data.loading import DomainNotFoundError, load_domain
from mmseqrec.data.sources.lcrec import import_lcrec, prepare_lcrec
from mmseqrec.data.sources.release import import_release, prepare_release


def replace_line(path: Path, number: int, text: str) -> None:
    """Replace 1-based line ``number`` of ``path``."""
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny(tmp_path: Path) -> TinyRelease:
    return write_release(tmp_path / "raw")


# --------------------------------------------------------------------------------------------
# Release format
# --------------------------------------------------------------------------------------------


def test_malformed_inter_line_names_file_and_line(tiny: TinyRelease) -> None:
    replace_line(tiny.path("train.inter"), 3, "0\t0 1")  # a row missing its target
    with pytest.raises(DataFormatError) as err:
        import_release(tiny.folder, dim=tiny.dim)
    message = str(err.value)
    assert "Tiny.train.inter line 3" in message
    assert "expected 3 tab-separated fields (user, history, target), got 2" in message


def test_non_integer_token_in_inter(tiny: TinyRelease) -> None:
    replace_line(tiny.path("valid.inter"), 2, "0\t0 x 2\t3")
    with pytest.raises(DataFormatError, match=r"Tiny\.valid\.inter line 2: history item token 'x' is not a non-negative integer"):
        import_release(tiny.folder, dim=tiny.dim)


def test_empty_history_in_inter(tiny: TinyRelease) -> None:
    replace_line(tiny.path("test.inter"), 4, "2\t\t1")
    with pytest.raises(DataFormatError, match=r"Tiny\.test\.inter line 4: empty history"):
        import_release(tiny.folder, dim=tiny.dim)


def test_item_out_of_range_in_inter(tiny: TinyRelease) -> None:
    replace_line(tiny.path("test.inter"), 2, f"0\t0 1 2 3\t{tiny.n_items}")
    with pytest.raises(DataFormatError) as err:
        import_release(tiny.folder, dim=tiny.dim)
    assert f"Tiny.test.inter line 2: target item index {tiny.n_items} is out of range" in str(err.value)
    assert f"Tiny.item2index has indices 0..{tiny.n_items - 1}" in str(err.value)


def test_user_out_of_range_in_inter(tiny: TinyRelease) -> None:
    replace_line(tiny.path("train.inter"), 2, "9\t0 1\t2")
    with pytest.raises(DataFormatError, match=r"Tiny\.train\.inter line 2: user index 9 is out of range; Tiny\.user2index"):
        import_release(tiny.folder, dim=tiny.dim)


def test_missing_inter_header(tiny: TinyRelease) -> None:
    replace_line(tiny.path("train.inter"), 1, "0\t0 1 2\t3")
    with pytest.raises(DataFormatError, match=r"Tiny\.train\.inter line 1: expected the header user_id:token"):
        import_release(tiny.folder, dim=tiny.dim)


def test_rows_that_do_not_chain_name_the_user(tiny: TinyRelease) -> None:
    # User 1's test row no longer continues its valid row.
    rows = [r for r in tiny.rows["test"]]
    rows[1] = (1, [5, 0, 3], 1)
    write_inter(tiny.path("test.inter"), rows)
    with pytest.raises(DataFormatError, match=r"user 1 \(U1\): its rows do not chain"):
        import_release(tiny.folder, dim=tiny.dim)


def test_duplicated_row_is_reported(tiny: TinyRelease) -> None:
    write_inter(tiny.path("train.inter"), tiny.rows["train"] + [tiny.rows["train"][0]])
    with pytest.raises(DataFormatError, match=r"user 0 \(U0\).*1 of its 5 rows are unused"):
        import_release(tiny.folder, dim=tiny.dim)


def test_index_file_with_a_gap(tiny: TinyRelease) -> None:
    tiny.path("item2index").write_text("".join(f"I{i}\t{i + (i >= 3)}\n" for i in range(tiny.n_items)))
    with pytest.raises(DataFormatError, match=r"Tiny\.item2index: indices must run 0\.\.6 without gaps; index 3 is missing"):
        import_release(tiny.folder, dim=tiny.dim)


def test_missing_release_file(tiny: TinyRelease) -> None:
    tiny.path("user2index").unlink()
    with pytest.raises(DataFormatError, match=r"Tiny\.user2index: missing"):
        import_release(tiny.folder, dim=tiny.dim)


def test_feature_file_size_mismatch(tiny: TinyRelease) -> None:
    path = tiny.path("feat3CLS")
    path.write_bytes(path.read_bytes()[: -4 * tiny.dim])  # one row short
    size = path.stat().st_size
    with pytest.raises(DataFormatError) as err:
        import_release(tiny.folder, dim=tiny.dim)
    message = str(err.value)
    assert "Tiny.feat3CLS" in message and f"{size:,} bytes" in message
    assert f"expected {tiny.n_items} items x {tiny.dim} dims x 4 bytes = {tiny.n_items * tiny.dim * 4:,}" in message


def test_feature_file_with_the_wrong_dim_suggests_it(tiny: TinyRelease) -> None:
    with pytest.raises(DataFormatError, match=r"Tiny\.feat1CLS: .* expected 7 items x 512 dims .*pass --dim 4"):
        import_release(tiny.folder)  # default --dim 512, the fixture has 4


def test_non_finite_feature_value(tiny: TinyRelease) -> None:
    values = tiny.text.copy()
    values[2, 3] = np.nan
    values.tofile(tiny.path("feat1CLS"))
    with pytest.raises(DataFormatError, match=r"Tiny\.feat1CLS: non-finite value nan at row 2 \(raw id I2\), column 3"):
        import_release(tiny.folder, dim=tiny.dim)


# --------------------------------------------------------------------------------------------
# LC-Rec JSON
# --------------------------------------------------------------------------------------------


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw")
    path = lc.folder / "Tiny.inter.json"
    path.write_text('{\n  "0": [0, 1, 2],\n  "1": [0 1]\n}\n')
    with pytest.raises(DataFormatError, match=r"Tiny\.inter\.json: not valid JSON at line 3, column 11"):
        import_lcrec(lc.folder)


def test_lcrec_value_not_a_list_names_the_user(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"0": [0, 1, 2], "7": {"a": 1}})
    with pytest.raises(DataFormatError, match=r"Tiny\.inter\.json: user '7': expected a list of item indices, got dict"):
        import_lcrec(lc.folder)


def test_lcrec_non_integer_item_names_the_user(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"0": [0, 1, 2], "1": [0, "1", 2]})
    with pytest.raises(DataFormatError, match=r"user '1': position 1 holds '1'; expected a non-negative integer item index"):
        import_lcrec(lc.folder)


def test_lcrec_item_indices_with_gaps(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"0": [0, 1, 3], "1": [3, 1, 0]}, items=None)
    with pytest.raises(DataFormatError, match=r"item indices must run 0\.\.n-1.*first: 2"):
        import_lcrec(lc.folder)


def test_lcrec_metadata_for_an_unknown_item(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", items={"9": {"title": "x"}})
    with pytest.raises(DataFormatError, match=r"Tiny\.item\.json: item '9' is out of range"):
        import_lcrec(lc.folder)


def test_lcrec_too_short_user(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"0": [0, 1, 2], "1": [1, 2]}, items=None)
    with pytest.raises(DataFormatError, match=r"user '1' has 2 interaction\(s\); leave-one-out needs at least 3"):
        import_lcrec(lc.folder)


# --------------------------------------------------------------------------------------------
# Processed folders
# --------------------------------------------------------------------------------------------


def test_domain_never_prepared(tmp_path: Path) -> None:
    with pytest.raises(DomainNotFoundError) as err:
        load_domain("Nope", data_dir=tmp_path)
    message = str(err.value)
    assert "Domain 'Nope' is not prepared" in message
    assert "mmseqrec prepare release" in message and "mmseqrec prepare lcrec" in message


def test_tampered_processed_file_fails_its_checksum(tiny: TinyRelease, tmp_path: Path) -> None:
    folder = prepare_release(tiny.folder, out=tmp_path / "processed", dim=tiny.dim)
    features = np.load(folder / "features" / "text.npy")
    features[1, 0] += 1.0
    np.save(folder / "features" / "text.npy", features)
    with pytest.raises(DataFormatError, match=r"text\.npy: checksum mismatch .*prepare it again"):
        load_domain(folder)


def test_item_out_of_range_in_a_processed_parquet(tiny: TinyRelease, tmp_path: Path) -> None:
    folder = prepare_release(tiny.folder, out=tmp_path / "processed", dim=tiny.dim)
    path = folder / "test.parquet"
    table = pq.read_table(path)
    targets = table.column("target").to_numpy().copy()
    targets[1] = tiny.n_items + 5
    pq.write_table(table.set_column(table.column_names.index("target"), "target", pa.array(targets, type=pa.int32())), path)
    # Keep the checksum consistent so that the range check itself is what fails.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["checksums"]["test.parquet"] = sha256_of(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError) as err:
        load_domain(folder)
    message = str(err.value)
    assert "test.parquet" in message and f"outside 1..{tiny.n_items}" in message and str(tiny.n_items + 5) in message


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_failing_release_import_leaves_nothing_behind(tiny: TinyRelease, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    out.mkdir()
    prepare_release(tiny.folder, out=out, out_name="Good", dim=tiny.dim)
    before = listing(out)
    replace_line(tiny.path("test.inter"), 3, "1\t5 0 2")
    with pytest.raises(DataFormatError):
        prepare_release(tiny.folder, out=out, out_name="Bad", dim=tiny.dim)
    with pytest.raises(DataFormatError):
        prepare_release(tiny.folder, out=out, out_name="Good", dim=tiny.dim, overwrite=True)
    assert listing(out) == before
    load_domain("Good", data_dir=out)  # the earlier domain is untouched


def test_failing_lcrec_import_leaves_nothing_behind(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"0": [0, 1, 2], "1": [0, None, 2]})
    out = tmp_path / "processed"
    out.mkdir()
    with pytest.raises(DataFormatError):
        prepare_lcrec(lc.folder, out=out)
    assert listing(out) == []


def test_failure_while_writing_leaves_nothing_behind(tiny: TinyRelease, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "processed"
    out.mkdir()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    # Parquet files are already staged when the feature arrays are saved.
    monkeypatch.setattr(format_module.np, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prepare_release(tiny.folder, out=out, dim=tiny.dim)
    assert listing(out) == []
