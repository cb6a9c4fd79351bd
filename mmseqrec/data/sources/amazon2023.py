"""Prepare an Amazon Reviews 2023 category with the UniSRec protocol.

    mmseqrec prepare amazon2023 --domain Office                         # from the Hugging Face Hub
    mmseqrec prepare amazon2023 --domain Office --raw-dir data/raw/amazon2023   # from local files

The 2023 release (Hou et al., "Bridging Language and Items for Retrieval and Recommendation",
2024; McAuley-Lab/Amazon-Reviews-2023 on the Hub) is read through ``datasets.load_dataset``:
the configs ``raw_review_<Category>`` and ``raw_meta_<Category>`` (split ``full``), or, with
``--raw-dir``, the same data as local JSON-lines files ``<Category>.jsonl`` and
``meta_<Category>.jsonl`` (optionally ``.gz``; also under ``review_categories/`` and
``meta_categories/``, the release's own layout), loaded with the ``json`` builder.

The protocol is the 2018 one (``amazon_protocol``), with the 2023 fields: an item is a
``parent_asin`` (reviews of colour or size variants share it; the metadata is keyed by it), a
user is ``user_id``, timestamps are milliseconds, and the item text is built from ``title``,
``categories`` and ``store`` (2023's counterparts of title, category and brand). Ties keep
file order. Items keep one image URL: the ``MAIN`` image's ``hi_res`` (else ``large``), else
the first image's. There is no Prime Pantry in 2023.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mmseqrec.data.format import DataFormatError, DomainTables, sha256_of, write_domain
from mmseqrec.data.loading import default_data_dir
from mmseqrec.data.sources.amazon2018 import add_protocol_arguments
from mmseqrec.data.sources.amazon_protocol import (
    DEFAULT_K,
    DEFAULT_MAX_LEN,
    ItemRecord,
    RatingRows,
    build_domain,
    item_text,
    print_prepared,
)

RELEASE = "Amazon Reviews 2023 (Hou et al., 2024)"
HUB_REPO = "McAuley-Lab/Amazon-Reviews-2023"
HUB_SPLIT = "full"
#: Short names of the UniSRec / MISSRec domains -> 2023 category names (no Prime Pantry in 2023).
DOMAINS_2023: dict[str, str] = {
    "Food": "Grocery_and_Gourmet_Food",
    "Home": "Home_and_Kitchen",
    "CDs": "CDs_and_Vinyl",
    "Kindle": "Kindle_Store",
    "Movies": "Movies_and_TV",
    "Scientific": "Industrial_and_Scientific",
    "Instruments": "Musical_Instruments",
    "Arts": "Arts_Crafts_and_Sewing",
    "Office": "Office_Products",
}
CATEGORIES_2023: tuple[str, ...] = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Baby_Products",
    "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry", "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
    "Handmade_Products", "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV",
    "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Software",
    "Sports_and_Outdoors", "Subscription_Boxes", "Tools_and_Home_Improvement", "Toys_and_Games",
    "Video_Games", "Unknown",
)
TEXT_FIELDS: tuple[str, ...] = ("title", "categories", "store")
REVIEW_COLUMNS: tuple[str, ...] = ("user_id", "parent_asin", "rating", "timestamp")
RECORD_BATCH_ROWS = 65_536
DEFAULT_RAW_DIR = Path("data") / "raw" / "amazon2023"


def resolve_category(domain: str) -> tuple[str | None, str]:
    """(short name or None, the 2023 category name) for a short or full name."""
    if domain.lower() in ("pantry", "prime_pantry"):
        raise ValueError(
            "Amazon Reviews 2023 has no Prime Pantry category (Prime Pantry was discontinued); "
            "prepare Pantry from the 2018 release: mmseqrec prepare amazon2018 --domain Pantry"
        )
    lowered = {k.lower(): k for k in DOMAINS_2023}
    if domain.lower() in lowered:
        short = lowered[domain.lower()]
        return short, DOMAINS_2023[short]
    by_full = {v.lower(): v for v in CATEGORIES_2023}
    if domain.lower() in by_full:
        full = by_full[domain.lower()]
        return next((s for s, f in DOMAINS_2023.items() if f == full), None), full
    raise ValueError(
        f"unknown Amazon 2023 domain {domain!r}; use a short name ({', '.join(DOMAINS_2023)}) "
        f"or a category of the release ({', '.join(CATEGORIES_2023)})"
    )


def default_out_name(short: str | None, category: str) -> str:
    """``Office-2023``: kept apart from the 2018 domain of the same short name."""
    return f"{short or category}-2023"


# --------------------------------------------------------------------------------------------
# Loading through `datasets`
# --------------------------------------------------------------------------------------------


def local_files(category: str, raw_dir: Path) -> tuple[Path, Path]:
    """The local review and metadata files for ``category``, or an error listing what was looked for."""
    found = []
    for stem, subfolder in ((category, "review_categories"), (f"meta_{category}", "meta_categories")):
        candidates = [folder / f"{stem}{suffix}" for folder in (raw_dir, raw_dir / subfolder) for suffix in (".jsonl", ".jsonl.gz")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"{raw_dir}: no {stem}.jsonl (or .jsonl.gz) for {category}; looked for {', '.join(str(c) for c in candidates)}. "
                f"Download review_categories/{category}.jsonl.gz and meta_categories/meta_{category}.jsonl.gz of the 2023 "
                f"release (amazon-reviews-2023.github.io) into {raw_dir}, or leave out --raw-dir to load from the Hub ({HUB_REPO})"
            )
        found.append(path)
    return found[0], found[1]


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def first_bad_json_line(path: Path) -> str | None:
    """A description of the first line of a JSON-lines file that cannot be read, or None."""
    number = 0
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.strip())
                except json.JSONDecodeError as err:
                    return f"line {number}: not valid JSON ({err.msg} at column {err.colno}): {line.strip()[:100]!r}"
                if not isinstance(record, dict):
                    return f"line {number}: expected one JSON object per line, got {type(record).__name__}"
    except EOFError:
        return f"the gzip stream ends early after line {number} (a truncated download?); download the file again"
    except (gzip.BadGzipFile, zlib.error) as err:
        return f"corrupt gzip data after line {number} ({err}); download the file again"
    except UnicodeDecodeError as err:
        return f"after line {number}: not UTF-8 text ({err.reason})"
    return None


def line_of_row(path: Path, row: int) -> int:
    """The 1-based line number of record ``row`` (0-based; blank lines hold no record)."""
    seen = -1
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return number
    return -1


def load_local(path: Path, cache_dir: str | None):
    """A JSON-lines file as a ``datasets.Dataset``; a bad line is an error naming file and line."""
    import datasets

    try:
        return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
    except Exception as err:  # datasets wraps the parser's error; find the line ourselves
        problem = first_bad_json_line(path)
        if problem is None:
            raise DataFormatError(f"{path.name}: cannot be loaded as JSON lines ({err.__cause__ or err})") from err
        raise DataFormatError(f"{path.name}: {problem}") from err


def load_hub(category: str, kind: str, cache_dir: str | None):
    """A ``raw_review_*`` / ``raw_meta_*`` config from the Hub; then the raw JSON-lines file it is made of."""
    import datasets

    config = f"raw_{kind}_{category}"
    try:
        return datasets.load_dataset(HUB_REPO, config, split=HUB_SPLIT, cache_dir=cache_dir)
    except Exception as first:  # noqa: BLE001 - any failure falls through to the raw files, both reasons are reported
        # Configs still behind the repository's loading script do not load with datasets >= 4;
        # the JSON-lines files they read are in the same repository.
        folder, stem = ("review_categories", category) if kind == "review" else ("meta_categories", f"meta_{category}")
        url = f"hf://datasets/{HUB_REPO}/raw/{folder}/{stem}.jsonl"
        try:
            return datasets.load_dataset("json", data_files=url, split="train", cache_dir=cache_dir)
        except Exception as second:
            raise FileNotFoundError(
                f"could not load {config} from the Hugging Face Hub ({HUB_REPO}: {first}; {url}: {second}). "
                f"Without internet, download review_categories/{category}.jsonl.gz and meta_categories/meta_{category}.jsonl.gz "
                "of the 2023 release (amazon-reviews-2023.github.io) and pass --raw-dir with the folder that holds them"
            ) from second


def _table(dataset) -> pa.Table:
    return dataset.data.table if hasattr(dataset.data, "table") else dataset.data


# --------------------------------------------------------------------------------------------
# Reviews and metadata
# --------------------------------------------------------------------------------------------


def _where(name: str, path: Path | None, row: int) -> str:
    if path is not None:
        return f"{name} line {line_of_row(path, row)}"
    return f"{name} row {row + 1}"


def read_reviews(dataset, name: str, path: Path | None = None) -> RatingRows:
    """The review rows as ``RatingRows`` (items are parent_asin), checking columns and nulls."""
    table = _table(dataset)
    missing = [c for c in REVIEW_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(
            f"{name}: no column(s) {', '.join(missing)}; expected the 2023 review fields "
            f"({', '.join(REVIEW_COLUMNS)}, ...), found {', '.join(table.column_names)}"
        )
    if table.num_rows == 0:
        raise DataFormatError(f"{name}: no reviews")
    for column in REVIEW_COLUMNS:
        nulls = pc.is_null(table[column])
        if pc.any(nulls).as_py():
            row = int(pc.index(nulls, True).as_py())
            raise DataFormatError(f"{_where(name, path, row)}: field '{column}' is missing or null")
    expected = {
        "user_id": ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        "parent_asin": ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        "rating": ("a number", lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)),
        "timestamp": ("integer milliseconds", pa.types.is_integer),
    }
    for column, (what, accepts) in expected.items():
        kind = table.schema.field(column).type
        if not accepts(kind):
            raise DataFormatError(f"{name}: field '{column}' holds {kind} values, expected {what}")
    return RatingRows.from_arrow(table["user_id"], table["parent_asin"], table["rating"], table["timestamp"])


def first_image(images: Any) -> str | None:
    """The MAIN image's ``hi_res`` (else ``large``), else the first image that has a URL."""
    if isinstance(images, dict):  # a `datasets` Sequence of dicts comes back as a dict of lists
        keys = list(images)
        images = [dict(zip(keys, values)) for values in zip(*images.values())]
    if not isinstance(images, list):
        return None
    entries = [i for i in images if isinstance(i, dict)]
    ordered = [i for i in entries if i.get("variant") == "MAIN"] + [i for i in entries if i.get("variant") != "MAIN"]
    for image in ordered:
        for key in ("hi_res", "large"):
            if isinstance(image.get(key), str) and image[key]:
                return image[key]
    return None


@dataclass
class Metadata:
    """A category's metadata table: which items have a record, and their records on demand.

    Only the items that survive the filters are turned into Python records (in batches), so a
    category with millions of metadata rows costs little memory.
    """

    table: pa.Table  # parent_asin plus the text and image columns, in file order
    name: str
    notes: list[str]

    @classmethod
    def from_dataset(cls, dataset, name: str, path: Path | None = None) -> Metadata:
        table = _table(dataset)
        if "parent_asin" not in table.column_names:
            raise DataFormatError(f"{name}: no 'parent_asin' column; expected the 2023 metadata fields, found {', '.join(table.column_names)}")
        if table.num_rows == 0:
            raise DataFormatError(f"{name}: no metadata records")
        nulls = pc.is_null(table["parent_asin"])
        if pc.any(nulls).as_py():
            raise DataFormatError(f"{_where(name, path, int(pc.index(nulls, True).as_py()))}: field 'parent_asin' is missing or null")
        columns = ["parent_asin"] + [c for c in (*TEXT_FIELDS, "images") if c in table.column_names]
        table = table.select(columns)
        repeats = table.num_rows - len(pc.unique(table["parent_asin"]))
        notes = [f"{name}: {repeats} record(s) repeat a parent_asin listed before; the first record of an item wins"] if repeats else []
        return cls(table, name, notes)

    def ids(self) -> pa.Array:
        """Every parent_asin that has a record."""
        return pc.unique(self.table["parent_asin"])

    def records_for(self, wanted: list[str]) -> dict[str, ItemRecord]:
        """The first record of every item in ``wanted``."""
        keep = pc.is_in(self.table["parent_asin"], value_set=pa.array(wanted, type=self.table.schema.field("parent_asin").type))
        records: dict[str, ItemRecord] = {}
        for batch in self.table.filter(keep).to_batches(max_chunksize=RECORD_BATCH_ROWS):
            for record in batch.to_pylist():
                if record["parent_asin"] not in records:
                    records[record["parent_asin"]] = ItemRecord(
                        text=item_text(record, TEXT_FIELDS), image=first_image(record.get("images"))
                    )
        return records


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def import_amazon2023(
    domain: str,
    raw_dir: str | os.PathLike | None = None,
    out_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    k_user: int = DEFAULT_K,
    k_item: int = DEFAULT_K,
    max_len: int = DEFAULT_MAX_LEN,
    progress: bool = True,
) -> DomainTables:
    """Load one 2023 category (Hub, or local files with ``raw_dir``) and apply the protocol.

    Args:
        domain: a short name (``Office``) or a 2023 category (``Office_Products``).
        raw_dir: a folder with ``<Category>.jsonl[.gz]`` and ``meta_<Category>.jsonl[.gz]``;
            None loads ``raw_review_<Category>`` / ``raw_meta_<Category>`` from the Hub.
        out_name: the processed domain's name (default ``<short>-2023``).
        cache_dir: the ``datasets`` cache (default: its own, ``~/.cache/huggingface/datasets``).
        k_user, k_item, max_len: as for ``import_amazon2018``.
    Raises:
        DataFormatError: a malformed file or field, naming the file and line (or row).
        FileNotFoundError: missing local files or an unreachable Hub, saying what to do.
    """
    import datasets

    short, category = resolve_category(domain)
    cache = str(cache_dir) if cache_dir is not None else None
    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        if raw_dir is not None:
            reviews_path, meta_path = local_files(category, Path(raw_dir))
            reviews = load_local(reviews_path, cache)
            rows = read_reviews(reviews, reviews_path.name, reviews_path)
            meta = load_local(meta_path, cache)
            metadata = Metadata.from_dataset(meta, meta_path.name, meta_path)
            source_files: dict[str, Any] = {p.name: sha256_of(p) for p in (reviews_path, meta_path)}
            where = reviews_path.name
        else:
            reviews = load_hub(category, "review", cache)
            rows = read_reviews(reviews, f"{HUB_REPO} raw_review_{category}")
            meta = load_hub(category, "meta", cache)
            metadata = Metadata.from_dataset(meta, f"{HUB_REPO} raw_meta_{category}")
            source_files = {
                f"raw_review_{category}": {"fingerprint": getattr(reviews, "_fingerprint", None), "rows": reviews.num_rows},
                f"raw_meta_{category}": {"fingerprint": getattr(meta, "_fingerprint", None), "rows": meta.num_rows},
            }
            where = f"raw_review_{category}"
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return build_domain(
        out_name or default_out_name(short, category),
        rows,
        metadata_ids=metadata.ids(),
        records_for=metadata.records_for,
        source={
            "type": "amazon2023",
            "release": RELEASE,
            "category": category,
            "domain": short,
            "loaded_from": str(Path(raw_dir).resolve()) if raw_dir is not None else f"hf://datasets/{HUB_REPO}",
            "datasets_version": datasets.__version__,
            "files": source_files,
        },
        text_fields=TEXT_FIELDS,
        k_user=k_user,
        k_item=k_item,
        max_len=max_len,
        notes=metadata.notes,
        where=where,
    )


def prepare_amazon2023(
    domain: str,
    raw_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    out_name: str | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> Path:
    """Import a 2023 category and write it as the processed domain ``<out>/<out_name>``."""
    short, category = resolve_category(domain)
    root = Path(out) if out is not None else default_data_dir()
    target = root / (out_name or default_out_name(short, category))
    if target.exists() and not overwrite:  # fail before the (long) import, not after it
        raise FileExistsError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it")
    tables = import_amazon2023(domain, raw_dir=raw_dir, out_name=out_name, **kwargs)
    return write_domain(tables, root / tables.name, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    folder = prepare_amazon2023(
        args.domain,
        raw_dir=args.raw_dir,
        out=args.data_dir,
        out_name=args.out_name,
        overwrite=args.overwrite,
        cache_dir=args.cache_dir,
        k_user=args.user_k,
        k_item=args.item_k,
        max_len=args.max_len,
    )
    print_prepared(folder)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare amazon2023``."""
    parser = subparsers.add_parser(
        "amazon2023",
        help="prepare an Amazon Reviews 2023 category with the UniSRec protocol (Hub or local JSON lines)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--domain", required=True,
        help=f"short name ({', '.join(DOMAINS_2023)}; no Pantry in 2023) or a 2023 category (e.g. Video_Games)",
    )
    parser.add_argument(
        "--raw-dir", default=None, type=Path,
        help=f"load <Category>.jsonl[.gz] and meta_<Category>.jsonl[.gz] from this folder instead of the Hub (e.g. {DEFAULT_RAW_DIR})",
    )
    parser.add_argument("--cache-dir", default=None, help="the datasets cache folder (default: datasets' own)")
    add_protocol_arguments(parser)
    parser.set_defaults(func=_cmd_prepare)
    return parser
