"""Amazon Reviews 2018 importer: the UniSRec protocol on hand-built raw files, downloads, bad input.

Expected values come from the hand computation in ``amazon_fixtures`` (not from running the
protocol), so a change to any rule shows up as a failing count, sequence or text.
"""

from __future__ import annotations

import email.message
import gzip
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import amazon_fixtures as fx
import numpy as np
import pyarrow.parquet as pq
import pytest

import mmseqrec.data.format as format_module
from mmseqrec.cli import main
from mmseqrec.data.download import DownloadError, download
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import load_domain
from mmseqrec.data.sources.amazon2018 import (
    first_image,
    full_size_url,
    import_amazon2018,
    is_title_markup,
    prepare_amazon2018,
    resolve_category,
)
from mmseqrec.data.sources.amazon_protocol import (
    MAX_FIELD_CHARS,
    clean_field,
    item_text,
)

CATEGORY = "Office_Products"


def rows_of(examples, user: int) -> list[tuple[list[int], int]]:
    return [
        (examples.history(r).tolist(), int(examples.target[r])) for r in range(len(examples)) if int(examples.user_id[r]) == user
    ]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    fx.write_amazon2018(tmp_path / "raw")
    return tmp_path / "raw"


def load(raw: Path, **kwargs):
    return import_amazon2018("Office", raw_dir=raw, download=False, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


def test_counts_after_each_step(raw: Path) -> None:
    tables = load(raw)
    assert tables.protocol["steps"] == {
        "raw_rows": 138,
        "after_dedup": 136,  # C1's and D1's exact duplicates collapse
        "after_metadata_filter": 129,  # X's 7 ratings go
        "after_kcore": fx.INTERACTIONS,  # W2 W3 W4 Y D1 and G, then W1, then H, then Z
    }
    # 15 raters and 9 rated items (A-H and X); the duplicates remove no one; X's raters all rate
    # something else, so only X goes with the metadata filter; the 5-core leaves 8 and 6.
    assert tables.protocol["step_users"] == {"raw_rows": 15, "after_dedup": 15, "after_metadata_filter": 15, "after_kcore": 8}
    assert tables.protocol["step_items"] == {"raw_rows": 9, "after_dedup": 9, "after_metadata_filter": 8, "after_kcore": 6}
    assert (tables.num_users, tables.num_items) == (8, 6)
    # F has neither text (a markup title, empty category and brand) nor an image; C, E have no image.
    assert tables.protocol["item_metadata"] == {"items": 6, "with_text": 5, "with_image_url": 3}
    assert "6 items: 5 with text (from title, category, brand), 3 with an image URL" in tables.notes


def test_ids_follow_first_surviving_rows_and_first_appearance(raw: Path) -> None:
    tables = load(raw)
    assert tables.user_raw_id == fx.USERS  # C4's first raw row (an X rating) does not count
    assert tables.item_raw_id == fx.ITEMS
    assert [s.tolist() for s in tables.sequences] == fx.SEQUENCES


def test_ties_keep_raw_file_order(raw: Path) -> None:
    tables = load(raw)
    assert tables.sequences[1].tolist()[:3] == [1, 3, 2]  # C3: C's row precedes B's on the same day
    assert tables.sequences[3].tolist()[-2:] == [6, 6]  # C2: F twice on one day, ratings 5 and 4: both kept
    assert tables.sequences[0].tolist().count(1) == 2  # R: A twice at different times


def test_leave_one_out_rows(raw: Path) -> None:
    splits = load(raw).splits
    assert len(splits["train"]) == fx.INTERACTIONS - 3 * 8 == 72
    assert (len(splits["valid"]), len(splits["test"])) == (8, 8)
    # R = 1 2 3 1 4: train rows from the last target backwards.
    assert rows_of(splits["train"], 0) == [([1, 2], 3), ([1], 2)]
    assert rows_of(splits["valid"], 0) == [([1, 2, 3], 1)]
    assert rows_of(splits["test"], 0) == [([1, 2, 3, 1], 4)]
    # C1 = 6 5 4 3 2 1
    assert rows_of(splits["train"], 2) == [([6, 5, 4], 3), ([6, 5], 4), ([6], 5)]
    assert rows_of(splits["test"], 2) == [([6, 5, 4, 3, 2], 1)]
    # Hv has 54 items: histories keep their last 50.
    heavy = fx.HEAVY
    assert rows_of(splits["test"], 4) == [(heavy[3:53], heavy[53])]
    assert rows_of(splits["valid"], 4) == [(heavy[2:52], heavy[52])]
    train = rows_of(splits["train"], 4)
    assert len(train) == 51 and train[0] == (heavy[1:51], heavy[51]) and train[-1] == ([1], 2)
    assert max(max(s.lengths()) for s in splits.values()) == 50


def test_item_text_and_images(raw: Path) -> None:
    tables = load(raw)
    assert tables.item_text == fx.TEXTS_2018
    assert tables.item_image == fx.IMAGES_2018
    assert set(tables.item_domain) == {"Office"}


def test_clean_field_rules() -> None:
    assert clean_field("Beaker...") == "Beaker."
    assert clean_field("") == "."
    assert clean_field(["Office", "Pens"]) == "Office Pens."
    assert clean_field({"a": 1}) == "{'a': 1}."
    assert clean_field('a "quoted"\r\nline\twith tab') == "a quotedline\twith tab."
    assert clean_field("&amp;amp; &lt;") == "&amp; <."  # unescaped once
    assert clean_field("y" * (MAX_FIELD_CHARS - 2)) == "y" * (MAX_FIELD_CHARS - 2) + "."  # 1999 characters: kept
    assert clean_field("y" * (MAX_FIELD_CHARS - 1)) == ""  # 2000 with its period: dropped
    assert item_text({"title": "T", "brand": None, "other": "x"}, ("title", "category", "brand")) == "T. "
    assert item_text({"price": 1}, ("title", "category", "brand")) is None


def test_names_map_to_release_categories() -> None:
    assert resolve_category("office") == ("Office", "Office_Products")
    assert resolve_category("Pantry") == ("Pantry", "Prime_Pantry")
    assert resolve_category("Food") == ("Food", "Grocery_and_Gourmet_Food")
    assert resolve_category("Industrial_and_Scientific") == ("Scientific", "Industrial_and_Scientific")
    assert resolve_category("Video_Games") == (None, "Video_Games")
    assert resolve_category("Magazine_Subscriptions") == (None, "Magazine_Subscriptions")
    assert resolve_category("magazine_subscriptions") == (None, "Magazine_Subscriptions")
    with pytest.raises(ValueError, match="unknown Amazon 2018 domain 'Beauty'.*Office"):
        resolve_category("Beauty")


def test_image_url_fields_of_the_release() -> None:
    assert first_image({"imageURLHighRes": ["http://h/1.jpg"], "imageURL": ["http://l/1.jpg"], "image": ["http://i/1.jpg"]}) == "http://h/1.jpg"
    assert first_image({"imageURLHighRes": [], "imageURL": ["", "http://l/2.jpg"], "image": ["http://i/1.jpg"]}) == "http://l/2.jpg"
    assert first_image({"image": [fx.THUMBNAIL]}) == fx.FULL_SIZE
    assert first_image({"image": "http://i/one.jpg"}) == "http://i/one.jpg"  # a bare string, too
    assert first_image({"image": [], "imageURL": None}) is None
    # The complete metadata's thumbnail and high-resolution URLs of one picture agree after it.
    small = "https://images-na.ssl-images-amazon.com/images/I/41dU3Ks9KzL._SS40_.jpg"
    assert full_size_url(small) == "https://images-na.ssl-images-amazon.com/images/I/41dU3Ks9KzL.jpg"
    assert full_size_url("https://m.media-amazon.com/images/I/71a%2Bb-C._AC_US40_.png") == "https://m.media-amazon.com/images/I/71a%2Bb-C.png"
    for unchanged in (fx.FULL_SIZE, "http://img/A._SX38_.jpg", "https://example.com/images/I/x._SS40_.jpg"):
        assert full_size_url(unchanged) == unchanged


def test_markup_titles_are_recognised() -> None:
    assert is_title_markup(fx.MARKUP_TITLE)
    assert is_title_markup(' Magazines" />')  # the other debris of the real Magazine file
    assert is_title_markup("&lt;div id=&quot;title&quot;")
    for title in ("Eraser <b>Bold</b> Tab", "Natural Health", 'Ruler 12" long', "Kids > Toys", None, ["<span"]):
        assert not is_title_markup(title), title


def test_cli_prepare_writes_a_loadable_domain(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "processed"
    assert main(["prepare", "amazon2018", "--domain", "Office", "--raw-dir", str(raw), "--data-dir", str(out), "--no-download"]) == 0
    printed = capsys.readouterr().out
    assert "Office: 8 users, 6 items, 72 train / 8 valid / 8 test rows" in printed
    assert "counts differ from UniSRec Table 1 for Office" in printed

    domain = load_domain("Office", data_dir=out)
    manifest = domain.manifest
    assert manifest["counts"]["interactions"] == fx.INTERACTIONS
    assert manifest["source"]["type"] == "amazon2018" and manifest["source"]["category"] == CATEGORY
    assert set(manifest["source"]["files"]) == {f"{CATEGORY}.csv", f"meta_{CATEGORY}.json.gz"}
    assert "raw-file order" in manifest["protocol"]["tie_break"]
    assert manifest["protocol"]["filters"]["iterative_kcore"] == {"k_user": 5, "k_item": 5, "counts": "interaction rows"}
    assert any("Python dict literals" in n for n in manifest["notes"])
    # Two repeats of rated items: A's is identical, F's differs.
    assert any("2 repeated record(s) of rated items ignored (the first record of an asin wins); 1 of them" in n for n in manifest["notes"])
    assert any("1 of 8 rated items have a title that is a piece of HTML markup" in n for n in manifest["notes"])
    assert "6 items: 5 with text (from title, category, brand), 3 with an image URL" in printed
    assert "138 rating rows (15 users, 9 items); 136 after collapsing exact duplicates (15 users, 9 items)" in printed
    assert domain.item_text == fx.TEXTS_2018
    seq = domain.sequence_values[domain.sequence_offsets[4] : domain.sequence_offsets[5]]
    assert seq.tolist() == fx.HEAVY


def test_unisrec_folder_layout_and_thresholds(tmp_path: Path) -> None:
    ratings, meta = fx.write_amazon2018(tmp_path / "flat")
    layout = tmp_path / "unisrec"
    (layout / "Ratings").mkdir(parents=True)
    (layout / "Metadata").mkdir()
    os.replace(ratings, layout / "Ratings" / ratings.name)
    os.replace(meta, layout / "Metadata" / meta.name)
    tables = load(layout, k_user=3, k_item=3)
    # With a 3-core, W2 W3 W4 (4 each), Y and D1 (4 each), G (4 raters) and everything else stay.
    assert tables.protocol["steps"]["after_kcore"] == 129
    assert tables.protocol["filters"]["iterative_kcore"]["k_user"] == 3
    with pytest.raises(ValueError, match="at least 3"):
        load(layout, k_user=2)


def test_skip_bad_lines_skips_and_records(tmp_path: Path) -> None:
    lines = fx.csv_lines()
    lines.insert(10, "A,C9,5.0")  # a row of 3 fields
    fx.write_amazon2018(tmp_path / "raw", csv=lines)
    with pytest.raises(DataFormatError, match=r"Office_Products\.csv line 11: expected 4 comma-separated fields .*got 3.*--skip-bad-lines"):
        load(tmp_path / "raw")
    tables = load(tmp_path / "raw", skip_bad_lines=True)
    assert [s.tolist() for s in tables.sequences] == fx.SEQUENCES
    assert any("1 line(s) without 4 fields were skipped" in n for n in tables.notes)


def test_nothing_left_after_the_filters(tmp_path: Path) -> None:
    fx.write_amazon2018(tmp_path / "raw", csv=fx.csv_lines()[:20])
    with pytest.raises(DataFormatError, match="nothing is left after the filters"):
        load(tmp_path / "raw")


# --------------------------------------------------------------------------------------------
# Downloads (no network: a stand-in for urlopen serves bytes from memory)
# --------------------------------------------------------------------------------------------


class FakeServer:
    """Serves ``payload`` like an HTTP server that honours ``Range`` (unless told not to)."""

    def __init__(self, payload: bytes, honour_range: bool = True, break_after: int | None = None) -> None:
        self.payload = payload
        self.honour_range = honour_range
        self.break_after = break_after
        self.requests: list[dict[str, str]] = []

    def __call__(self, request, timeout: float):
        headers = {k.lower(): v for k, v in request.header_items()}
        self.requests.append(headers)
        start = 0
        if self.honour_range and "range" in headers:
            start = int(headers["range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(self.payload):
                info = email.message.Message()
                info["Content-Range"] = f"bytes */{len(self.payload)}"
                raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", info, None)
        body = self.payload[start:]
        response = FakeResponse(body, status=206 if start else 200, break_after=self.break_after)
        response.headers["Content-Length"] = str(len(body))
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}"
        self.break_after = None  # only the first transfer breaks
        return response


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int, break_after: int | None) -> None:
        super().__init__(body)
        self.status = status
        self.headers = email.message.Message()
        self.break_after = break_after

    def read(self, size: int = -1) -> bytes:
        if self.break_after is not None and self.tell() >= self.break_after:
            raise ConnectionResetError("connection reset by peer")
        if self.break_after is not None:
            size = min(size, self.break_after - self.tell())
        return super().read(size)


PAYLOAD = bytes(range(256)) * 4000  # ~1 MB, several chunks


def test_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    import hashlib

    server = FakeServer(PAYLOAD, break_after=300_000)
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="broke off after 300,000 bytes.*run the command again to resume"):
        download("http://example/file.bin", dest, opener=server, progress=False)
    assert not dest.exists() and (tmp_path / "file.bin.part").stat().st_size == 300_000
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    download("http://example/file.bin", dest, sha256=sha, opener=server, progress=False)
    assert server.requests[1]["range"] == "bytes=300000-"
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "file.bin.part").exists()


def test_download_restarts_when_the_server_ignores_the_range(tmp_path: Path) -> None:
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes")
    server = FakeServer(PAYLOAD, honour_range=False)
    download("http://example/file.bin", tmp_path / "file.bin", opener=server, progress=False)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_download_of_a_complete_part_file_finishes(tmp_path: Path) -> None:
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    download("http://example/file.bin", tmp_path / "file.bin", opener=FakeServer(PAYLOAD), progress=False)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_download_checksum_mismatch_deletes_the_part_file(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="SHA-256 .* does not match the expected 0000"):
        download("http://example/file.bin", tmp_path / "file.bin", sha256="0" * 64, opener=FakeServer(PAYLOAD), progress=False)
    assert os.listdir(tmp_path) == []


def test_missing_raw_files_are_downloaded_from_the_first_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    ratings, meta = fx.write_amazon2018(source)
    served = {f"/categoryFilesSmall/{ratings.name}": ratings.read_bytes(), f"/metaFiles2/{meta.name}": meta.read_bytes()}
    asked = []

    def fake_urlopen(request, timeout):
        asked.append(request.full_url)
        path = "/" + request.full_url.split("/amazon_v2/", 1)[1]
        response = FakeResponse(served[path], status=200, break_after=None)
        response.headers["Content-Length"] = str(len(served[path]))
        return response

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    tables = import_amazon2018("Office", raw_dir=tmp_path / "raw", progress=False)
    assert asked == [
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFilesSmall/Office_Products.csv",
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/metaFiles2/meta_Office_Products.json.gz",
    ]
    assert sorted(os.listdir(tmp_path / "raw")) == [f"{CATEGORY}.csv", f"meta_{CATEGORY}.json.gz"]
    assert [s.tolist() for s in tables.sequences] == fx.SEQUENCES


def test_offline_error_says_where_to_place_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(request, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    raw = tmp_path / "raw"
    with pytest.raises(FileNotFoundError) as err:
        import_amazon2018("Office", raw_dir=raw, progress=False)
    message = str(err.value)
    assert "could not download" in message and "name resolution" in message
    assert str(raw / f"{CATEGORY}.csv") in message and str(raw / f"meta_{CATEGORY}.json.gz") in message
    assert "nijianmo.github.io/amazon" in message
    with pytest.raises(FileNotFoundError, match=r"missing raw file\(s\) Office_Products\.csv, meta_Office_Products\.json\.gz"):
        import_amazon2018("Office", raw_dir=raw, download=False, progress=False)


# --------------------------------------------------------------------------------------------
# Bad input: clear errors naming file and line; nothing half-written
# --------------------------------------------------------------------------------------------


def test_truncated_gzip(tmp_path: Path) -> None:
    _, meta = fx.write_amazon2018(tmp_path / "raw", meta=fx.meta_2018_lines() * 50)
    meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
    with pytest.raises(DataFormatError, match=r"meta_Office_Products\.json\.gz: the gzip stream ends early after line \d+ \(a truncated download\?\)"):
        load(tmp_path / "raw")


def test_metadata_that_is_not_gzip(tmp_path: Path) -> None:
    _, meta = fx.write_amazon2018(tmp_path / "raw")
    meta.write_text("\n".join(fx.meta_2018_lines()))
    with pytest.raises(DataFormatError, match=r"meta_Office_Products\.json\.gz: not a gzip file"):
        load(tmp_path / "raw")


def test_malformed_metadata_line(tmp_path: Path) -> None:
    lines = fx.meta_2018_lines()
    lines[3] = '{"asin": "C", "title": "Unterminated'
    fx.write_amazon2018(tmp_path / "raw", meta=lines)
    with pytest.raises(DataFormatError, match=r"meta_Office_Products\.json\.gz line 4: neither JSON \(Unterminated string.*\) nor a Python dict literal"):
        load(tmp_path / "raw")


def test_metadata_record_without_asin(tmp_path: Path) -> None:
    lines = fx.meta_2018_lines()
    lines[1] = json.dumps({"title": "No asin"})
    fx.write_amazon2018(tmp_path / "raw", meta=lines)
    with pytest.raises(DataFormatError, match=r"json\.gz line 2: the record has no 'asin' string \(fields: title\)"):
        load(tmp_path / "raw")


def test_metadata_line_that_is_not_utf8(tmp_path: Path) -> None:
    _, meta = fx.write_amazon2018(tmp_path / "raw")
    lines = [line.encode() for line in fx.meta_2018_lines()]
    lines[2] = b'{"asin": "B", "title": "caf\xe9"}'
    with gzip.open(meta, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")
    with pytest.raises(DataFormatError, match=r"meta_Office_Products\.json\.gz line 3: not UTF-8 text"):
        load(tmp_path / "raw")


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("A,C1,5.0,86400,extra", "expected 4 comma-separated fields (item,user,rating,timestamp), got 5"),
        ("A,C1,five,86400", "rating 'five' is not a number"),
        ("A,C1,5.0,1e9", "timestamp '1e9' is not an integer (unix seconds)"),
        (",C1,5.0,86400", "empty item or user id"),
    ],
)
def test_bad_ratings_line_names_file_and_line(tmp_path: Path, bad_line: str, problem: str) -> None:
    lines = fx.csv_lines()
    lines[2:2] = ["", bad_line]  # a blank line 3 (skipped by readers) and the bad line 4
    fx.write_amazon2018(tmp_path / "raw", csv=lines)
    with pytest.raises(DataFormatError) as err:
        load(tmp_path / "raw")
    assert str(err.value).startswith(f"Office_Products.csv line 4: {problem}: {bad_line!r}")


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_failing_prepare_leaves_nothing_behind(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "processed"
    prepare_amazon2018("Office", raw_dir=raw, out=out, download=False, progress=False)
    before = listing(out)
    meta = raw / f"meta_{CATEGORY}.json.gz"
    good = meta.read_bytes()
    meta.write_bytes(good[: len(good) // 2])
    for kwargs in ({"out_name": "Other"}, {"overwrite": True}):
        with pytest.raises(DataFormatError):
            prepare_amazon2018("Office", raw_dir=raw, out=out, download=False, progress=False, **kwargs)
    assert listing(out) == before
    meta.write_bytes(good)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(format_module.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prepare_amazon2018("Office", raw_dir=raw, out=out, out_name="Third", download=False, progress=False)
    assert listing(out) == before
    monkeypatch.undo()
    domain = load_domain("Office", data_dir=out)  # the earlier domain is untouched
    assert np.array_equal(domain.splits["test"].target, [4, 6, 1, 6, 6, 6, 6, 6])


def test_existing_domain_is_refused_before_reading(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    (out / "Office").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        prepare_amazon2018("Office", raw_dir=tmp_path / "nowhere", out=out, download=False)


# --------------------------------------------------------------------------------------------
# Real data: the raw Magazine_Subscriptions files, exactly as the release publishes them
# --------------------------------------------------------------------------------------------

MAGAZINE = "amazon2018-raw-magazine"


def test_real_magazine_files_through_the_cli(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Counts measured on the real files: the raw ones are the shared README's table (72,098
    raters, 2,428 rated items, 89,689 ratings). Its metadata has images only under ``image``
    (none under imageURL / imageURLHighRes) and markup instead of most titles."""
    raw = shared_data / MAGAZINE
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent")
    out = tmp_path / "processed"
    argv = ["prepare", "amazon2018", "--domain", "Magazine_Subscriptions", "--raw-dir", str(raw), "--no-download", "--data-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    domain = load_domain("Magazine_Subscriptions", data_dir=out)
    protocol = domain.manifest["protocol"]
    assert protocol["steps"] == {"raw_rows": 89_689, "after_dedup": 88_468, "after_metadata_filter": 84_139, "after_kcore": 1_950}
    assert protocol["step_users"] == {"raw_rows": 72_098, "after_dedup": 72_098, "after_metadata_filter": 68_482, "after_kcore": 284}
    assert protocol["step_items"] == {"raw_rows": 2_428, "after_dedup": 2_428, "after_metadata_filter": 2_320, "after_kcore": 126}
    counts = domain.manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (284, 126, 1_950)
    assert protocol["item_metadata"] == {"items": 126, "with_text": 126, "with_image_url": 111}
    assert "126 items: 126 with text (from title, category, brand), 111 with an image URL" in printed
    assert "1,950 in the 5/5-core (284 users, 126 items)" in printed
    notes = domain.manifest["notes"]
    assert any("1065 repeated record(s)" in n and "0 of them would have given another text or image" in n for n in notes)
    assert any("2173 of 2320 rated items have a title that is a piece of HTML markup" in n for n in notes)

    # Full-size Amazon URLs (the file lists 38x50 thumbnails); no text keeps the markup.
    item_image = pq.read_table(domain.path / "items.parquet", columns=["image"]).column("image").to_pylist()
    images = [url for url in item_image if url is not None]
    assert len(images) == 111
    assert all(url.startswith("https://images-na.ssl-images-amazon.com/images/I/") and "._" not in url for url in images)
    assert not any("<span" in t or "a-size-medium" in t for t in domain.item_text)
    first = domain.item_raw_id.index("B00005N7PT")
    assert domain.item_text[first] == "Magazine Subscriptions Science, History & Nature Nature & Ecology. Kalmbach Publ Co. "
    assert item_image[first] == "https://images-na.ssl-images-amazon.com/images/I/5145NDH7STL.jpg"
