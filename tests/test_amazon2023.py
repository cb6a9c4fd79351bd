"""Amazon Reviews 2023 importer: the same protocol, loaded through `datasets` (local files and a
stand-in for the Hub), and bad input."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import amazon_fixtures as fx
import datasets
import pytest

from mmseqrec.cli import main
from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import load_domain
from mmseqrec.data.sources.amazon2023 import (
    HUB_REPO,
    first_image,
    import_amazon2023,
    prepare_amazon2023,
    resolve_category,
)

CATEGORY = "Office_Products"
REAL_LOAD_DATASET = datasets.load_dataset


def rows_of(examples, user: int) -> list[tuple[list[int], int]]:
    return [
        (examples.history(r).tolist(), int(examples.target[r])) for r in range(len(examples)) if int(examples.user_id[r]) == user
    ]


def load(raw: Path, tmp_path: Path, **kwargs):
    return import_amazon2023("Office", raw_dir=raw, cache_dir=tmp_path / "hf-cache", progress=False, **kwargs)


@pytest.mark.parametrize("compress", [False, True])
def test_local_files_through_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    reviews, meta = fx.write_amazon2023(tmp_path / "raw", compress=compress)
    calls = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs.get("data_files"), kwargs.get("split")))
        return REAL_LOAD_DATASET(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    tables = load(tmp_path / "raw", tmp_path)
    assert calls == [(("json",), str(reviews), "train"), (("json",), str(meta), "train")]

    assert tables.name == "Office-2023"
    assert tables.protocol["steps"] == {"raw_rows": 138, "after_dedup": 136, "after_metadata_filter": 129, "after_kcore": 96}
    assert tables.user_raw_id == fx.USERS
    assert tables.item_raw_id == fx.ITEMS  # parent_asin: R's "A-red" variant is item A
    assert [s.tolist() for s in tables.sequences] == fx.SEQUENCES
    assert tables.item_text == fx.TEXTS_2023
    assert tables.item_image == fx.IMAGES_2023
    splits = tables.splits
    assert (len(splits["train"]), len(splits["valid"]), len(splits["test"])) == (72, 8, 8)
    assert rows_of(splits["test"], 0) == [([1, 2, 3, 1], 4)]
    assert rows_of(splits["test"], 4) == [(fx.HEAVY[3:53], fx.HEAVY[53])]
    assert tables.source["type"] == "amazon2023" and set(tables.source["files"]) == {reviews.name, meta.name}
    assert f"{meta.name}: 1 record(s) repeat a parent_asin listed before; the first record of an item wins" in tables.notes


def test_cli_prepare_and_release_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    reviews, meta = fx.write_amazon2023(tmp_path / "flat", compress=True)
    (raw / "review_categories").mkdir(parents=True)
    (raw / "meta_categories").mkdir()
    os.replace(reviews, raw / "review_categories" / reviews.name)
    os.replace(meta, raw / "meta_categories" / meta.name)
    out = tmp_path / "processed"
    code = main(["prepare", "amazon2023", "--domain", "office", "--raw-dir", str(raw), "--data-dir", str(out),
                 "--cache-dir", str(tmp_path / "hf-cache")])
    assert code == 0
    assert "Office-2023: 8 users, 6 items, 72 train / 8 valid / 8 test rows" in capsys.readouterr().out
    domain = load_domain("Office-2023", data_dir=out)
    assert domain.item_text == fx.TEXTS_2023
    assert domain.manifest["protocol"]["text"]["fields"] == ["title", "categories", "store"]


def fake_hub(monkeypatch: pytest.MonkeyPatch, local: dict[str, Path], script_error: bool = False) -> list:
    """Serve the Hub configs (or, with ``script_error``, only the raw JSON-lines files) from ``local``."""
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs.get("split"), kwargs.get("data_files")))
        if path == HUB_REPO:
            if script_error:
                raise RuntimeError("Dataset scripts are no longer supported, but found Amazon-Reviews-2023.py")
            assert kwargs["split"] == "full"
            return REAL_LOAD_DATASET("json", data_files=str(local[name]), split="train", cache_dir=kwargs.get("cache_dir"))
        if path == "json" and str(kwargs["data_files"]).startswith("hf://"):
            key = "raw_review_" + CATEGORY if "review_categories" in kwargs["data_files"] else "raw_meta_" + CATEGORY
            return REAL_LOAD_DATASET("json", data_files=str(local[key]), split="train", cache_dir=kwargs.get("cache_dir"))
        raise AssertionError(f"unexpected load_dataset({path!r}, {name!r})")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_configs_are_requested_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reviews, meta = fx.write_amazon2023(tmp_path / "raw")
    calls = fake_hub(monkeypatch, {f"raw_review_{CATEGORY}": reviews, f"raw_meta_{CATEGORY}": meta})
    tables = import_amazon2023("Office", cache_dir=tmp_path / "hf-cache", progress=False)
    assert calls == [(HUB_REPO, f"raw_review_{CATEGORY}", "full", None), (HUB_REPO, f"raw_meta_{CATEGORY}", "full", None)]
    assert [s.tolist() for s in tables.sequences] == fx.SEQUENCES
    assert tables.source["loaded_from"] == f"hf://datasets/{HUB_REPO}"
    assert set(tables.source["files"]) == {f"raw_review_{CATEGORY}", f"raw_meta_{CATEGORY}"}


def test_hub_script_configs_fall_back_to_the_raw_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reviews, meta = fx.write_amazon2023(tmp_path / "raw")
    calls = fake_hub(monkeypatch, {f"raw_review_{CATEGORY}": reviews, f"raw_meta_{CATEGORY}": meta}, script_error=True)
    tables = import_amazon2023("Office", cache_dir=tmp_path / "hf-cache", progress=False)
    assert [c[3] for c in calls if c[0] == "json"] == [
        f"hf://datasets/{HUB_REPO}/raw/review_categories/{CATEGORY}.jsonl",
        f"hf://datasets/{HUB_REPO}/raw/meta_categories/meta_{CATEGORY}.jsonl",
    ]
    assert tables.item_text == fx.TEXTS_2023


def test_unreachable_hub_explains_the_offline_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'McAuley-Lab/Amazon-Reviews-2023' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError) as err:
        import_amazon2023("Office", progress=False)
    message = str(err.value)
    assert f"could not load raw_review_{CATEGORY}" in message and "Couldn't reach" in message
    assert f"review_categories/{CATEGORY}.jsonl.gz" in message and f"meta_categories/meta_{CATEGORY}.jsonl.gz" in message
    assert "--raw-dir" in message


def test_images_in_either_layout() -> None:
    as_rows = [{"thumb": "t", "large": "L1", "variant": "PT01", "hi_res": None}, {"thumb": "t", "large": "L2", "variant": "MAIN", "hi_res": None}]
    as_columns = {"thumb": ["t", "t"], "large": ["L1", "L2"], "variant": ["PT01", "MAIN"], "hi_res": [None, "H2"]}
    assert first_image(as_rows) == "L2"
    assert first_image(as_columns) == "H2"
    assert first_image([]) is None and first_image(None) is None


def test_names_map_to_2023_categories() -> None:
    assert resolve_category("Scientific") == ("Scientific", "Industrial_and_Scientific")
    assert resolve_category("Video_Games") == (None, "Video_Games")
    for pantry in ("Pantry", "Prime_Pantry"):
        with pytest.raises(ValueError, match="2023 has no Prime Pantry.*amazon2018 --domain Pantry"):
            resolve_category(pantry)
    with pytest.raises(ValueError, match="unknown Amazon 2023 domain 'Beauty'"):
        resolve_category("Beauty")


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_local_files(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"no {CATEGORY}\.jsonl \(or \.jsonl\.gz\).*leave out --raw-dir to load from the Hub"):
        load(tmp_path / "raw", tmp_path)


def test_malformed_json_line(tmp_path: Path) -> None:
    reviews, _ = fx.write_amazon2023(tmp_path / "raw")
    lines = reviews.read_text().splitlines()
    lines[2] = lines[2][:40]
    reviews.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{CATEGORY}\.jsonl: line 3: not valid JSON \(Expecting property name enclosed in double quotes at column 41\)"):
        load(tmp_path / "raw", tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    _, meta = fx.write_amazon2023(tmp_path / "raw", compress=True)
    data = meta.read_bytes()
    meta.write_bytes(data[: len(data) - 40])
    with pytest.raises(DataFormatError, match=rf"meta_{CATEGORY}\.jsonl\.gz: the gzip stream ends early after line \d+"):
        load(tmp_path / "raw", tmp_path)


def test_null_field_names_the_line(tmp_path: Path) -> None:
    reviews = fx.reviews_2023()
    reviews[6]["user_id"] = None
    fx.write_jsonl(tmp_path / "raw" / f"{CATEGORY}.jsonl", reviews)
    fx.write_jsonl(tmp_path / "raw" / f"meta_{CATEGORY}.jsonl", fx.META_2023)
    with pytest.raises(DataFormatError, match=rf"{CATEGORY}\.jsonl line 7: field 'user_id' is missing or null"):
        load(tmp_path / "raw", tmp_path)


def test_wrong_field_type(tmp_path: Path) -> None:
    reviews = fx.reviews_2023()
    for review in reviews:
        review["timestamp"] = "1588687728923 ms"
    fx.write_jsonl(tmp_path / "raw" / f"{CATEGORY}.jsonl", reviews)
    fx.write_jsonl(tmp_path / "raw" / f"meta_{CATEGORY}.jsonl", fx.META_2023)
    with pytest.raises(DataFormatError, match=r"field 'timestamp' holds string values, expected integer milliseconds"):
        load(tmp_path / "raw", tmp_path)


def test_2018_style_reviews_are_refused(tmp_path: Path) -> None:
    old = [{"overall": 5.0, "reviewerID": u, "asin": i, "unixReviewTime": d * fx.DAY} for i, u, _, d in fx.RATINGS]
    fx.write_jsonl(tmp_path / "raw" / f"{CATEGORY}.jsonl", old)
    fx.write_jsonl(tmp_path / "raw" / f"meta_{CATEGORY}.jsonl", fx.META_2023)
    with pytest.raises(DataFormatError, match=r"no column\(s\) user_id, parent_asin, rating, timestamp; expected the 2023 review fields"):
        load(tmp_path / "raw", tmp_path)


def test_metadata_without_parent_asin(tmp_path: Path) -> None:
    fx.write_jsonl(tmp_path / "raw" / f"{CATEGORY}.jsonl", fx.reviews_2023())
    meta = [dict(m) for m in fx.META_2023]
    meta[4]["parent_asin"] = None
    fx.write_jsonl(tmp_path / "raw" / f"meta_{CATEGORY}.jsonl", meta)
    with pytest.raises(DataFormatError, match=rf"meta_{CATEGORY}\.jsonl line 5: field 'parent_asin' is missing or null"):
        load(tmp_path / "raw", tmp_path)


def test_failing_prepare_leaves_nothing_behind(tmp_path: Path) -> None:
    reviews, _ = fx.write_amazon2023(tmp_path / "raw", compress=True)
    with gzip.open(reviews, "at", encoding="utf-8") as handle:
        handle.write(json.dumps(["not", "an", "object"]) + "\n")
    out = tmp_path / "processed"
    out.mkdir()
    with pytest.raises(DataFormatError, match=r"line 139: expected one JSON object per line, got list"):
        prepare_amazon2023("Office", raw_dir=tmp_path / "raw", out=out, cache_dir=tmp_path / "hf-cache", progress=False)
    assert os.listdir(out) == []

