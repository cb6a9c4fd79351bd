"""Prepare an Amazon Reviews 2018 category with the UniSRec protocol.

    mmseqrec prepare amazon2018 --domain Office [--raw-dir data/raw/amazon2018]

Raw files of the 2018 release (Ni, Li, McAuley, EMNLP 2019; nijianmo.github.io/amazon), per
category ``<Category>`` (e.g. ``Office_Products``):

    <Category>.csv            "ratings only" (small subsets table): headerless CSV rows
                              item,user,rating,timestamp (asin, reviewerID, float, unix seconds)
    meta_<Category>.json.gz   "metadata" (complete review data table): gzip, one JSON object per line

They are looked up in ``--raw-dir`` (also under ``Ratings/`` and ``Metadata/``, UniSRec's
layout) and downloaded there when missing (resumable; ``--no-download`` to forbid it). The
protocol (``amazon_protocol``) collapses exact duplicate rows, drops interactions whose item has
no metadata, keeps the iterative 5-core, sorts each user's items by timestamp with ties in
raw-file order, builds item text from title, category and brand, and splits leave-one-out with
histories cut to 50.

What the real metadata files hold, and how it is read:

- Image URLs come under three names. The complete metadata (``metaFiles2``) has ``imageURL``
  (thumbnails) and ``imageURLHighRes``; other per-category files (Magazine_Subscriptions, for
  one) have only ``image``, a list of 38x50 px thumbnails. An item keeps the first URL of the
  first of ``imageURLHighRes``, ``imageURL``, ``image`` that has one, and an Amazon image URL
  loses its size modifier (``I/51Iph04Jy3L._SX38_SY50_CR,0,0,38,50_.jpg`` -> ``I/51Iph04Jy3L.jpg``):
  that is exactly how ``imageURLHighRes`` relates to ``imageURL``, and a 38 px thumbnail is
  useless to an image encoder.
- Some titles are scraping debris, the cut-off start of an HTML tag
  (``<span class="a-size-medium a-color-secondary"``, 3,153 of the 3,385 Magazine records) or
  the tail of one (`` Magazines" />``). Such a title is treated as absent (counted in the notes);
  the text then comes from category and brand.
- Records repeat (1,065 asins twice in the Magazine file, identical); the first record of an
  asin wins, and the notes count repeats that would have given another text or image.
- Lines are JSON; a line that is a Python dict literal instead (some dumps of the McAuley data)
  is read with ``ast.literal_eval`` and counted in the notes.

The manifest (``protocol``) and the console give the rows, users and items after every step and
how many items have text and an image URL.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import html
import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from mmseqrec.data.download import DownloadError, download_first
from mmseqrec.data.format import DataFormatError, DomainTables, sha256_of, write_domain
from mmseqrec.data.loading import default_data_dir
from mmseqrec.options import add_data_dir
from mmseqrec.data.sources.amazon_protocol import (
    DEFAULT_K,
    DEFAULT_MAX_LEN,
    ItemRecord,
    RatingRows,
    build_domain,
    compare_with_paper,
    item_text,
    print_prepared,
)

RELEASE = "Amazon Review Data 2018 (Ni, Li, McAuley, EMNLP 2019)"
#: Short names of the UniSRec / MISSRec domains -> the release's category names.
DOMAINS_2018: dict[str, str] = {
    "Food": "Grocery_and_Gourmet_Food",
    "Home": "Home_and_Kitchen",
    "CDs": "CDs_and_Vinyl",
    "Kindle": "Kindle_Store",
    "Movies": "Movies_and_TV",
    "Scientific": "Industrial_and_Scientific",
    "Pantry": "Prime_Pantry",
    "Instruments": "Musical_Instruments",
    "Arts": "Arts_Crafts_and_Sewing",
    "Office": "Office_Products",
}
#: Every category of the 2018 release (a full name can be given to --domain directly).
CATEGORIES_2018: tuple[str, ...] = (
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Books",
    "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Home_and_Kitchen", "Industrial_and_Scientific",
    "Kindle_Store", "Luxury_Beauty", "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments",
    "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Prime_Pantry", "Software",
    "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games",
)
#: Mirrors of the release, tried in order. ``{kind}`` is ``categoryFilesSmall`` or ``metaFiles2``.
MIRRORS: tuple[str, ...] = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/{kind}/{file}",
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/{kind}/{file}",
    "http://deepyeti.ucsd.edu/jianmo/amazon/{kind}/{file}",
)
#: SHA-256 of raw files, checked after a download when listed. The release publishes none, so
#: this starts empty; the manifest records the digest of whatever file was used.
KNOWN_SHA256: dict[str, str] = {}
TEXT_FIELDS: tuple[str, ...] = ("title", "category", "brand")
#: Image URL fields in order of preference (see the module docstring).
IMAGE_FIELDS: tuple[str, ...] = ("imageURLHighRes", "imageURL", "image")
#: An Amazon image URL with a size modifier: ``<base>/I/<id>._<modifiers>_.<ext>``.
AMAZON_RESIZED_IMAGE = re.compile(
    r"^(?P<base>https?://[^/]*(?:images-amazon|media-amazon)\.com/images/[A-Z]/[^/.]+)\._[^/]*_(?P<ext>\.[A-Za-z]+)$"
)
#: Titles that are pieces of HTML markup rather than titles: an opening tag cut before its ``>``,
#: or the end of a tag (an attribute value closed by ``"`` and then ``>`` or ``/>``).
TITLE_MARKUP = (re.compile(r"^\s*<[A-Za-z!/][^<>]*$"), re.compile(r'^[^<>]*"\s*/?>\s*$'))
RATING_COLUMNS: tuple[str, ...] = ("item", "user", "rating", "timestamp")
DEFAULT_RAW_DIR = Path("data") / "raw" / "amazon2018"
HOMEPAGE = "https://nijianmo.github.io/amazon/"


def resolve_category(domain: str) -> tuple[str | None, str]:
    """(short name or None, the release's category name) for a short or full name."""
    lowered = {k.lower(): k for k in DOMAINS_2018}
    if domain.lower() in lowered:
        short = lowered[domain.lower()]
        return short, DOMAINS_2018[short]
    by_full = {v.lower(): v for v in CATEGORIES_2018}
    if domain.lower() in by_full:
        full = by_full[domain.lower()]
        short = next((s for s, f in DOMAINS_2018.items() if f == full), None)
        return short, full
    raise ValueError(
        f"unknown Amazon 2018 domain {domain!r}; use a short name ({', '.join(DOMAINS_2018)}) "
        f"or a category of the release ({', '.join(CATEGORIES_2018)})"
    )


def raw_file_names(category: str) -> tuple[str, str]:
    return f"{category}.csv", f"meta_{category}.json.gz"


def _find(raw_dir: Path, name: str, subfolder: str) -> Path | None:
    for candidate in (raw_dir / name, raw_dir / subfolder / name):
        if candidate.is_file():
            return candidate
    return None


def locate_raw_files(category: str, raw_dir: Path, download: bool = True, progress: bool = True) -> tuple[Path, Path]:
    """The ratings CSV and the metadata file, downloading whichever is missing (when allowed)."""
    ratings_name, meta_name = raw_file_names(category)
    found = {
        "ratings": (_find(raw_dir, ratings_name, "Ratings"), ratings_name, "categoryFilesSmall"),
        "metadata": (_find(raw_dir, meta_name, "Metadata"), meta_name, "metaFiles2"),
    }
    missing = [(name, kind) for path, name, kind in found.values() if path is None]
    placement = (
        f"Place them by hand at {raw_dir / ratings_name} (the 'ratings only' link in the 'Small subsets' table) and "
        f"{raw_dir / meta_name} (the 'metadata' link in the 'Complete review data' table) from {HOMEPAGE}, "
        "or pass --raw-dir to the folder that holds them"
    )
    if missing and not download:
        raise FileNotFoundError(f"missing raw file(s) {', '.join(n for n, _ in missing)} for {category}. {placement}")
    failures = []
    for name, kind in missing:
        urls = [m.format(kind=kind, file=name) for m in MIRRORS]
        try:
            download_first(urls, raw_dir / name, sha256=KNOWN_SHA256.get(name), progress=progress)
        except DownloadError as err:
            failures.append(f"{name}: {err}")
    if failures:
        raise FileNotFoundError(f"could not download the raw files for {category} ({'; '.join(failures)}). {placement}")
    return (
        found["ratings"][0] or raw_dir / ratings_name,
        found["metadata"][0] or raw_dir / meta_name,
    )


# --------------------------------------------------------------------------------------------
# Ratings CSV
# --------------------------------------------------------------------------------------------


def _first_bad_csv_line(path: Path, skip_bad_lines: bool) -> tuple[int, str, str] | None:
    """(line number, line, what is wrong) of the first row the protocol cannot read, or None."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                return number, repr(raw[:80]), f"not UTF-8 text ({err.reason} at byte {err.start})"
            if not line.strip():
                continue
            fields = line.split(",")
            if len(fields) != len(RATING_COLUMNS):
                if skip_bad_lines:
                    continue
                return number, line, f"expected 4 comma-separated fields (item,user,rating,timestamp), got {len(fields)}"
            item, user, rating, timestamp = fields
            if not item or not user:
                return number, line, "empty item or user id"
            try:
                float(rating)
            except ValueError:
                return number, line, f"rating {rating!r} is not a number"
            if not timestamp.strip().isdigit():
                return number, line, f"timestamp {timestamp!r} is not an integer (unix seconds)"
    return None


def _bad_csv_error(path: Path, skip_bad_lines: bool, cause: str) -> DataFormatError:
    """The error for a ratings file Arrow refused: located to its line by a plain re-read."""
    bad = _first_bad_csv_line(path, skip_bad_lines)
    if bad is None:
        return DataFormatError(f"{path.name}: cannot be read as item,user,rating,timestamp CSV ({cause})")
    number, line, problem = bad
    hint = " (pass --skip-bad-lines to skip lines with the wrong number of fields)" if "fields" in problem else ""
    return DataFormatError(f"{path.name} line {number}: {problem}: {line[:120]!r}{hint}")


def read_ratings_csv(path: Path, skip_bad_lines: bool = False, progress: bool = True) -> tuple[RatingRows, int]:
    """All rows of a 2018 ratings CSV, in file order, and the number of skipped malformed lines.

    A line that does not split into 4 fields is an error naming the file and line, unless
    ``skip_bad_lines`` (then it is skipped and counted, as the reference code does). A
    rating that is not a number, a timestamp that is not an integer or an empty id is always an
    error. Arrow reads the file; only when it refuses one is the file re-read line by line to
    name the offending line (Arrow's own row numbers skip blank lines).
    """
    skipped = 0

    def on_invalid_row(row) -> str:
        nonlocal skipped
        if skip_bad_lines:
            skipped += 1
            return "skip"
        return "error"

    read_options = pacsv.ReadOptions(column_names=list(RATING_COLUMNS), use_threads=False, block_size=1 << 24)
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_invalid_row)
    convert_options = pacsv.ConvertOptions(
        column_types={"item": pa.string(), "user": pa.string(), "rating": pa.float64(), "timestamp": pa.int64()}
    )
    batches = []
    try:
        reader = pacsv.open_csv(path, read_options=read_options, parse_options=parse_options, convert_options=convert_options)
        with tqdm(unit=" rows", unit_scale=True, desc=path.name, disable=not progress) as bar:
            for batch in reader:
                batches.append(batch)
                bar.update(batch.num_rows)
    except pa.ArrowInvalid as err:
        raise _bad_csv_error(path, skip_bad_lines, str(err)) from err
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if table.num_rows == 0:
        raise DataFormatError(f"{path.name}: no rating rows")
    for column in ("item", "user"):
        if pc.any(pc.equal(pc.utf8_length(table[column]), 0)).as_py():
            raise _bad_csv_error(path, skip_bad_lines, f"an empty {column} id")
    rows = RatingRows.from_arrow(table["user"], table["item"], table["rating"], table["timestamp"])
    return rows, skipped


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def _meta_lines(path: Path, progress: bool) -> Iterator[tuple[int, str]]:
    """(line number, line) of a gzip JSON-lines file, with a progress bar over compressed bytes."""
    size = path.stat().st_size
    with open(path, "rb") as raw, tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, disable=not progress
    ) as bar:
        number = 0
        try:
            # Binary lines decoded one by one, so that a decoding error names its own line.
            for number, data in enumerate(gzip.GzipFile(fileobj=raw), start=1):
                if number % 4096 == 0:
                    bar.update(raw.tell() - bar.n)
                yield number, data.decode("utf-8")
            bar.update(size - bar.n)
        except EOFError as err:
            raise DataFormatError(
                f"{path.name}: the gzip stream ends early after line {number} (a truncated download?); "
                "delete the file and download it again"
            ) from err
        except gzip.BadGzipFile as err:
            raise DataFormatError(f"{path.name}: not a gzip file ({err}); expected the release's meta_<Category>.json.gz") from err
        except zlib.error as err:
            raise DataFormatError(f"{path.name}: corrupt gzip data after line {number} ({err}); download it again") from err
        except UnicodeDecodeError as err:
            raise DataFormatError(f"{path.name} line {number}: not UTF-8 text ({err.reason} at byte {err.start})") from err


def parse_meta_line(line: str, where: str) -> tuple[dict[str, Any], bool]:
    """One metadata record and whether it needed the Python-literal fallback."""
    line = line.strip()
    try:
        record, literal = json.loads(line), False
    except json.JSONDecodeError as err:
        try:
            record, literal = ast.literal_eval(line), True
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFormatError(
                f"{where}: neither JSON ({err.msg} at column {err.colno}) nor a Python dict literal: {line[:100]!r}"
            ) from err
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected one object per line, got {type(record).__name__}")
    asin = record.get("asin")
    if not isinstance(asin, str) or not asin:
        raise DataFormatError(f"{where}: the record has no 'asin' string (fields: {', '.join(list(record)[:8])})")
    return record, literal


def full_size_url(url: str) -> str:
    """An Amazon image URL without its size modifier (the full-size picture); others unchanged."""
    match = AMAZON_RESIZED_IMAGE.match(url)
    return match["base"] + match["ext"] if match else url


def first_image(record: dict[str, Any]) -> str | None:
    """The first URL of the first of ``IMAGE_FIELDS`` that has one, at full size; else None."""
    for key in IMAGE_FIELDS:
        value = record.get(key)
        urls = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for url in urls:
            if isinstance(url, str) and url.strip():
                return full_size_url(url.strip())
    return None


def is_title_markup(title: Any) -> bool:
    """Whether a title is a piece of HTML markup left by the scrape instead of a title."""
    if not isinstance(title, str):
        return False
    title = html.unescape(title)
    return any(pattern.match(title) for pattern in TITLE_MARKUP)


def item_record(record: dict[str, Any]) -> tuple[ItemRecord, bool]:
    """What the protocol keeps of one metadata record, and whether its title was markup."""
    markup = is_title_markup(record.get("title"))
    if markup:
        record = {**record, "title": None}
    return ItemRecord(text=item_text(record, TEXT_FIELDS), image=first_image(record)), markup


def read_metadata(path: Path, wanted: set[str], progress: bool = True) -> tuple[dict[str, ItemRecord], list[str]]:
    """Records of the ``wanted`` asins (first record wins) and notes on what was seen."""
    records: dict[str, ItemRecord] = {}
    lines = literal_lines = repeats = differing_repeats = markup_titles = 0
    for number, line in _meta_lines(path, progress):
        if not line.strip():
            continue
        lines += 1
        record, literal = parse_meta_line(line, f"{path.name} line {number}")
        literal_lines += literal
        asin = record["asin"]
        if asin not in wanted:
            continue
        kept, markup = item_record(record)
        if asin in records:
            repeats += 1
            differing_repeats += kept != records[asin]
            continue
        records[asin] = kept
        markup_titles += markup
    if lines == 0:
        raise DataFormatError(f"{path.name}: no metadata records")
    notes = []
    if literal_lines:
        notes.append(f"{path.name}: {literal_lines} of {lines} lines were Python dict literals, not JSON (read with ast.literal_eval)")
    if repeats:
        notes.append(
            f"{path.name}: {repeats} repeated record(s) of rated items ignored (the first record of an asin wins); "
            f"{differing_repeats} of them would have given another text or image"
        )
    if markup_titles:
        notes.append(
            f"{path.name}: {markup_titles} of {len(records)} rated items have a title that is a piece of HTML markup "
            "(e.g. '<span class=...'), treated as no title"
        )
    return records, notes


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def import_amazon2018(
    domain: str,
    raw_dir: str | os.PathLike | None = None,
    out_name: str | None = None,
    download: bool = True,
    k_user: int = DEFAULT_K,
    k_item: int = DEFAULT_K,
    max_len: int = DEFAULT_MAX_LEN,
    skip_bad_lines: bool = False,
    progress: bool = True,
) -> DomainTables:
    """Read (or download) one 2018 category and apply the protocol (nothing is written).

    Args:
        domain: a short name (``Office``) or a category of the release (``Office_Products``).
        raw_dir: where the raw files are (default ``data/raw/amazon2018``).
        out_name: the processed domain's name (default: the short name, else the category).
        download: fetch missing raw files (else a missing file is an error saying where to put it).
        k_user, k_item: the k-core thresholds (5 and 5 in the papers).
        max_len: history cap of the examples (50 in the papers).
        skip_bad_lines: skip ratings lines with the wrong number of fields instead of failing.
    Raises:
        DataFormatError: a malformed raw file, naming the file and line.
        FileNotFoundError: raw files missing and not downloadable, saying where to place them.
    """
    short, category = resolve_category(domain)
    raw = Path(raw_dir) if raw_dir is not None else DEFAULT_RAW_DIR
    ratings_path, meta_path = locate_raw_files(category, raw, download=download, progress=progress)
    rows, skipped = read_ratings_csv(ratings_path, skip_bad_lines=skip_bad_lines, progress=progress)
    records, notes = read_metadata(meta_path, set(rows.item_ids.to_pylist()), progress=progress)
    if skipped:
        notes.insert(0, f"{ratings_path.name}: {skipped} line(s) without 4 fields were skipped (--skip-bad-lines)")
    name = out_name or short or category
    tables = build_domain(
        name,
        rows,
        metadata_ids=list(records),
        records_for=lambda kept: records,
        source={
            "type": "amazon2018",
            "release": RELEASE,
            "category": category,
            "domain": short,
            "raw_dir": str(raw.resolve()),
            "files": {p.name: sha256_of(p) for p in (ratings_path, meta_path)},
        },
        text_fields=TEXT_FIELDS,
        k_user=k_user,
        k_item=k_item,
        max_len=max_len,
        notes=notes,
        where=ratings_path.name,
    )
    tables.protocol["text"]["title_markup"] = "a title that is a piece of HTML markup (a cut-off tag) counts as no title"
    tables.protocol["image"] = (
        f"first URL of the first of {', '.join(IMAGE_FIELDS)} that has one; Amazon size modifiers removed (full-size picture)"
    )
    if (k_user, k_item) == (DEFAULT_K, DEFAULT_K) and (line := compare_with_paper(short, tables)):
        tables.notes.append(line)
    return tables


def prepare_amazon2018(
    domain: str,
    raw_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    out_name: str | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> Path:
    """Import a 2018 category and write it as the processed domain ``<out>/<out_name>``."""
    short, category = resolve_category(domain)
    root = Path(out) if out is not None else default_data_dir()
    target = root / (out_name or short or category)
    if target.exists() and not overwrite:  # fail before the (long) import, not after it
        raise FileExistsError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it")
    tables = import_amazon2018(domain, raw_dir=raw_dir, out_name=out_name, **kwargs)
    return write_domain(tables, root / tables.name, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    folder = prepare_amazon2018(
        args.domain,
        raw_dir=args.raw_dir,
        out=args.data_dir,
        out_name=args.out_name,
        overwrite=args.overwrite,
        download=args.download,
        k_user=args.user_k,
        k_item=args.item_k,
        max_len=args.max_len,
        skip_bad_lines=args.skip_bad_lines,
    )
    print_prepared(folder)
    return 0


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both Amazon importers share."""
    add_data_dir(parser, "write", old="--out")
    parser.add_argument("--out-name", default=None, help="name of the processed domain (default: the short domain name)")
    parser.add_argument("--user-k", type=int, default=DEFAULT_K, help=f"k-core threshold for users (default {DEFAULT_K})")
    parser.add_argument("--item-k", type=int, default=DEFAULT_K, help=f"k-core threshold for items (default {DEFAULT_K})")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help=f"history cap of the examples (default {DEFAULT_MAX_LEN})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing processed domain of that name")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare amazon2018``."""
    parser = subparsers.add_parser(
        "amazon2018",
        help="prepare an Amazon Reviews 2018 category with the UniSRec protocol (downloads the raw files)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--domain", required=True,
        help=f"short name ({', '.join(DOMAINS_2018)}) or a category of the release (e.g. Video_Games)",
    )
    parser.add_argument("--raw-dir", default=None, type=Path, help=f"folder with (or for) the raw files (default {DEFAULT_RAW_DIR})")
    parser.add_argument("--no-download", dest="download", action="store_false", help="never download; fail if a raw file is missing")
    parser.add_argument("--skip-bad-lines", action="store_true", help="skip ratings lines without 4 fields (the reference code does) instead of failing")
    add_protocol_arguments(parser)
    parser.set_defaults(func=_cmd_prepare)
    return parser
