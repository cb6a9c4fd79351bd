"""Items added to a run after training: their raw ids, content and features, kept with the run.

    mmseqrec add-items --run RUN --items new.jsonl       # or POST /items to `mmseqrec serve`

A content-only (inductive) model, MISSRec or UniSRec fine-tuned with ``--mode inductive``, ranks
an item from its features alone, so a new item is rankable as soon as it has them; models that
keep a learned vector per training item refuse (``Recommender.new_item_features`` says why).
``mmseqrec.load`` picks the stored items up: they take the ids after the domain's, in the order
they were added.

**Input** (a file, or the service's JSON): one record per item with
- ``id`` (required): its raw id, new to the catalogue;
- ``text``: its text, written like the domain's item texts (title, categories, brand);
- ``image``: a file path (relative to the items file's folder) or an ``http(s)://`` or
  ``file://`` URL;
- ``features`` (JSON only): ``{"<feature set>": [numbers]}``, vectors to use instead of
  running the encoder (for feature sets that ``mmseqrec extract`` did not make).
A file is JSON Lines (``.jsonl``, one object per line) or CSV (``.csv``, a header row with
``id`` and any of ``text``, ``image``).

**Features** come from the encoder the domain's manifest records for each feature set the
model reads (``features.extract.encoder_from_manifest``), so a new item lands in the same space
as the trained ones. An item left with no feature the model can use (no text, an image that
does not load) is refused, with the reason.

**On disk**, written atomically (a complete new version, then a pointer replaced with a rename;
a lock file serialises writers)::

    RUN/added_items/CURRENT                the live version's folder name
    RUN/added_items/v000003/manifest.json  domain, its items.parquet checksum, counts, feature sets
    RUN/added_items/v000003/items.parquet  item_id, raw_id, text, image
    RUN/added_items/v000003/features/<name>.npy, <name>.mask.npy   (M, d) float32, (M,) bool
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmseqrec.data.format import DataFormatError
from mmseqrec.data.loading import Domain
from mmseqrec.features.extract import ItemTable, encode_items, encoder_from_manifest
from mmseqrec.features.images import ImageSource

ADDED_DIR = "added_items"
POINTER = "CURRENT"
FIELDS = ("id", "text", "image", "features")
FORMAT_VERSION = 1


@dataclass
class NewItem:
    """One item to add: raw id, text, image reference and, optionally, ready-made vectors."""

    id: str
    text: str | None = None
    image: str | None = None
    features: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class AddedItems:
    """The items a run has taken after training (``features[name] = (values, present)``)."""

    raw_ids: list[str]
    text: list[str | None]
    image: list[str | None]
    features: dict[str, tuple[np.ndarray, np.ndarray]]


# -------------------------------------------------------------------------------------------
# Reading new items
# -------------------------------------------------------------------------------------------
def parse_items(records: Sequence, where: str) -> list[NewItem]:
    """``NewItem``s from JSON-like records; errors name ``where`` (a file, "request body") and
    the record."""
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise ValueError(f"{where}: expected a list of items, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{where}: no items")
    items = []
    for index, record in enumerate(records):
        at = f"{where}, item {index}"
        if not isinstance(record, Mapping):
            raise ValueError(f"{at}: expected an object with 'id' (and 'text', 'image'), got {type(record).__name__}")
        unknown = sorted(set(record) - set(FIELDS))
        if unknown:
            raise ValueError(f"{at}: unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(FIELDS)}")
        raw = record.get("id")
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"{at}: 'id' must be a non-empty string (the item's raw id), got {raw!r}")
        for name in ("text", "image"):
            if record.get(name) is not None and not isinstance(record[name], str):
                raise ValueError(f"{at}: '{name}' must be a string or null, got {type(record[name]).__name__}")
        vectors = record.get("features") or {}
        if not isinstance(vectors, Mapping) or not all(
            isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            for v in vectors.values()
        ):
            raise ValueError(f"{at}: 'features' must map feature-set names to lists of finite numbers")
        items.append(NewItem(raw, record.get("text") or None, record.get("image") or None, {k: list(v) for k, v in vectors.items()}))
    return items


def read_items_file(path: str | Path) -> list[NewItem]:
    """The items of a ``.jsonl`` or ``.csv`` file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--items {path}: no such file")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
        return parse_items(records, str(path))
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "id" not in reader.fieldnames:
                raise ValueError(f"{path}: the header row must name an 'id' column (and any of 'text', 'image'), got {reader.fieldnames}")
            extra = sorted(set(reader.fieldnames) - {"id", "text", "image"})
            if extra:
                raise ValueError(f"{path}: unknown column(s) {', '.join(extra)}; expected id, text, image (vectors need JSON Lines)")
            records = [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
        return parse_items(records, str(path))
    raise ValueError(f"--items {path}: expected a .jsonl (JSON Lines) or .csv file")


def check_new(items: Sequence[NewItem], known: Mapping[str, int]) -> None:
    """Every id must be new to the catalogue and appear once."""
    seen, repeated, existing = set(), [], []
    for item in items:
        if item.id in seen:
            repeated.append(item.id)
        seen.add(item.id)
        if item.id in known:
            existing.append(item.id)
    if repeated:
        raise ValueError(f"item id(s) given twice: {', '.join(sorted(set(repeated))[:20])}")
    if existing:
        raise ValueError(f"item id(s) already in the catalogue: {', '.join(existing[:20])}{' ...' if len(existing) > 20 else ''}")


# -------------------------------------------------------------------------------------------
# Features
# -------------------------------------------------------------------------------------------
def extract_features(
    items: Sequence[NewItem],
    names: Sequence[str],
    domain: Domain,
    base_dir: str | Path | None = None,
    image_dir: str | Path | None = None,
    device="cpu",
    progress: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``names`` -> (values (M, d), present (M,)) for ``items``: their own vectors where given,
    else the recorded encoder's. Refuses items that end with none of the feature sets."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    out, reasons = {}, {item.id: [] for item in items}
    encoders: dict[str, object] = {}  # one model for a CLIP text + image pair
    for name in names:
        entry = domain.manifest["features"].get(name)
        where = f"{domain.path / 'manifest.json'}: feature set '{name}'"
        if entry is None:
            raise DataFormatError(f"{where} does not exist")
        dim = int(entry["dim"])
        values = np.zeros((len(items), dim), dtype=np.float32)
        present = np.zeros(len(items), dtype=bool)
        todo = []
        for index, item in enumerate(items):
            given = item.features.get(name)
            if given is None:
                todo.append(index)
            elif len(given) != dim:
                raise ValueError(f"item {item.id!r}: features['{name}'] has {len(given)} numbers, the domain's '{name}' is {dim}-d")
            else:
                values[index], present[index] = given, True
        if todo:
            key = json.dumps({k: v for k, v in (entry.get("extractor") or {}).items() if k not in ("batch_size", "seconds", "augment")}, sort_keys=True)
            if key not in encoders:
                encoders[key] = encoder_from_manifest(entry, where, str(device))
            table = ItemTable(base, [items[i].id for i in todo], [items[i].text for i in todo], [items[i].image for i in todo])
            source = ImageSource(base, image_dir) if entry.get("modality") == "image" else None
            result = encode_items(table, name, entry.get("modality", "text"), encoders[key], source, progress=progress)
            values[todo], present[todo] = result.values, result.present
            for local, reason in result.skipped:
                reasons[items[todo[local - 1]].id].append(f"{name}: {reason}")
        out[name] = (values, present)
    usable = np.any([present for _, present in out.values()], axis=0) if out else np.zeros(len(items), bool)
    refused = [f"{item.id} ({'; '.join(reasons[item.id]) or 'no feature'})" for item, ok in zip(items, usable) if not ok]
    if refused:
        raise ValueError(f"item(s) with none of the feature sets {', '.join(names)}, which the model cannot rank: {', '.join(refused[:20])}")
    return out


# -------------------------------------------------------------------------------------------
# Storage
# -------------------------------------------------------------------------------------------
def _folder(run_dir: Path) -> Path:
    return Path(run_dir) / ADDED_DIR


def _domain_key(domain: Domain) -> dict:
    return {"domain": domain.name, "domain_items_sha256": domain.manifest.get("checksums", {}).get("items.parquet"), "base_items": domain.num_items}


def read_added(run_dir: str | Path, domain: Domain) -> AddedItems | None:
    """The run's added items (None if it has none), checked against ``domain``."""
    folder = _folder(Path(run_dir))
    for _ in range(2):  # a writer may replace the version between reading the pointer and the files
        pointer = folder / POINTER
        if not pointer.is_file():
            return None
        version = folder / pointer.read_text().strip()
        try:
            return _read_version(version, domain)
        except FileNotFoundError:
            continue
    raise DataFormatError(f"{folder}: {POINTER} names a version that keeps disappearing; is another process rewriting it?")


def _read_version(version: Path, domain: Domain) -> AddedItems:
    manifest = json.loads((version / "manifest.json").read_text())
    expected = _domain_key(domain)
    differing = [k for k, v in expected.items() if manifest.get(k) != v]
    if differing:
        raise DataFormatError(
            f"{version / 'manifest.json'}: the items were added to {manifest.get('domain')} with "
            f"{', '.join(f'{k}={manifest.get(k)}' for k in differing)}, but the domain loaded now has "
            f"{', '.join(f'{k}={expected[k]}' for k in differing)}: the domain changed since; add the items again to a run on it"
        )
    table = pq.read_table(version / "items.parquet")
    count = int(manifest["count"])
    if table.num_rows != count or table.column("item_id").to_pylist() != list(range(domain.num_items + 1, domain.num_items + count + 1)):
        raise DataFormatError(f"{version / 'items.parquet'}: expected item ids {domain.num_items + 1}..{domain.num_items + count}")
    features = {}
    for name, meta in manifest["features"].items():
        values = np.load(version / "features" / f"{name}.npy")
        present = np.load(version / "features" / f"{name}.mask.npy")
        if values.shape != (count, int(meta["dim"])) or present.shape != (count,) or not np.isfinite(values).all():
            raise DataFormatError(f"{version / 'features' / name}.npy: expected {count} finite rows of {meta['dim']} values")
        features[name] = (values, present)
    return AddedItems(table.column("raw_id").to_pylist(), table.column("text").to_pylist(), table.column("image").to_pylist(), features)


@contextmanager
def _writer_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_added(
    run_dir: str | Path, domain: Domain, items: Sequence[NewItem], features: dict[str, tuple[np.ndarray, np.ndarray]], expected: int
) -> AddedItems:
    """Store ``items`` after the run's added items; ``expected`` is how many the caller has
    loaded (a mismatch means another process added items meanwhile: reload first)."""
    folder = _folder(Path(run_dir))
    with _writer_lock(folder):
        current = read_added(run_dir, domain)
        have = len(current.raw_ids) if current else 0
        if have != expected:
            raise ValueError(f"{folder}: holds {have} added items, this process loaded {expected}; another process added items, load the run again")
        if current is not None and set(current.features) != set(features):
            raise ValueError(f"{folder}: stored feature sets {sorted(current.features)} differ from the new items' {sorted(features)}")
        merged = AddedItems(
            (current.raw_ids if current else []) + [item.id for item in items],
            (current.text if current else []) + [item.text for item in items],
            (current.image if current else []) + [item.image for item in items],
            {
                name: (
                    np.concatenate([current.features[name][0], values]) if current else values,
                    np.concatenate([current.features[name][1], present]) if current else present,
                )
                for name, (values, present) in features.items()
            },
        )
        _write_version(folder, domain, merged)
    return merged


def _write_version(folder: Path, domain: Domain, added: AddedItems) -> None:
    versions = sorted(p.name for p in folder.glob("v[0-9]*") if p.is_dir() and "." not in p.name)
    name = f"v{int(versions[-1][1:]) + 1 if versions else 1:06d}"
    staging = folder / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "features").mkdir(parents=True)
    count = len(added.raw_ids)
    pq.write_table(
        pa.table({
            "item_id": pa.array(range(domain.num_items + 1, domain.num_items + count + 1), type=pa.int64()),
            "raw_id": pa.array(added.raw_ids, type=pa.string()),
            "text": pa.array(added.text, type=pa.string()),
            "image": pa.array(added.image, type=pa.string()),
        }),
        staging / "items.parquet",
    )
    for feature, (values, present) in added.features.items():
        np.save(staging / "features" / f"{feature}.npy", np.asarray(values, dtype=np.float32))
        np.save(staging / "features" / f"{feature}.mask.npy", np.asarray(present, dtype=bool))
    manifest = {
        "format": FORMAT_VERSION,
        **_domain_key(domain),
        "count": count,
        "features": {
            feature: {"dim": int(values.shape[1]), "encoder": domain.manifest["features"].get(feature, {}).get("encoder")}
            for feature, (values, _) in added.features.items()
        },
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(staging, folder / name)  # the complete version, under its final name
    pointer = folder / f"{POINTER}.tmp-{os.getpid()}"
    pointer.write_text(name + "\n")
    os.replace(pointer, folder / POINTER)  # readers switch to it here, all at once
    for old in versions:
        shutil.rmtree(folder / old, ignore_errors=True)
