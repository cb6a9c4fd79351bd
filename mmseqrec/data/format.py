"""The processed-domain format: how a prepared domain is laid out on disk, written and checked.

One folder per domain::

    <Domain>/
      manifest.json          source, protocol, counts, checksums, feature descriptions
      items.parquet          item_id (1..N), raw_id, text, image, domain
      users.parquet          user_id (0..U-1), raw_id
      interactions.parquet   user_id, items (the user's whole chronological sequence)
      train.parquet          user_id, history (oldest first, at most max_len), target
      valid.parquet          one row per user
      test.parquet           one row per user
      features/<name>.npy        float32 (N+1, d); row 0 is padding and stays zero
      features/<name>.mask.npy   bool (N+1,); False where the item has no such feature
      cold_items.npy         bool (N+1,), only in a cold-start split (``mmseqrec prepare cold``):
                             True for the items held out of training; no train row holds one
      topn/train.parquet     general top-N splits (only in a domain that has them): user_id,
      topn/valid.parquet     item_id pairs, sorted, one per interaction; the schema metadata
      topn/test.parquet      records the matrix shape (users x items)

**Two tracks.** A domain carries the *sequential* track (``interactions.parquet`` and the
leave-one-out ``train/valid/test.parquet`` rows), the *top-N* track (per-user sets of training,
validation and test items: ``topn/``, for the general recommenders such as LightGCN), or both;
``manifest.json`` lists them under ``tracks`` (a manifest without the field is sequential). The
top-N splits are disjoint per user (a pair in two splits is an error), every user has at least
one interaction in some split, and each file's matrix has the domain's shape.

Item ids run 1..N; 0 is reserved for padding everywhere. A missing modality is a ``False`` in the
mask (its row is zero), never a vector that a model could mistake for data.

Everything is written into a temporary sibling folder and renamed into place at the end, so an
interrupted ``prepare`` never leaves a half-written domain behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
COLD_ITEMS = "cold_items.npy"
#: The tracks a domain can carry: next-item rows after a history, and per-user held-out item sets.
TRACKS = ("sequential", "topn")
TOPN_DIR = "topn"
#: Parquet schema metadata key of a top-N split file: its matrix shape, "[users, items]".
SHAPE_KEY = b"mmseqrec.shape"


class DataFormatError(ValueError):
    """A processed domain (or a raw input on its way to one) is malformed.

    The message always names the file and what was expected.
    """


# --------------------------------------------------------------------------------------------
# In-memory description of what gets written
# --------------------------------------------------------------------------------------------


@dataclass
class Examples:
    """(history -> target) rows of one split, with histories stored flat.

    ``history_values[history_offsets[r]:history_offsets[r+1]]`` is row r's history, oldest first.
    """

    user_id: np.ndarray  # int64 (R,)
    history_values: np.ndarray  # int64 (sum of lengths,)
    history_offsets: np.ndarray  # int64 (R+1,)
    target: np.ndarray  # int64 (R,)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @classmethod
    def from_lists(cls, user_id: Sequence[int], histories: Sequence[Sequence[int]], target: Sequence[int]) -> "Examples":
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        offsets = np.zeros(len(histories) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # One concatenate over per-row arrays: millions of rows stay seconds, not minutes.
        values = np.concatenate([np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]) if histories else np.zeros(0, np.int64)
        return cls(np.asarray(user_id, dtype=np.int64), values, offsets, np.asarray(target, dtype=np.int64))

    def history(self, row: int) -> np.ndarray:
        return self.history_values[self.history_offsets[row] : self.history_offsets[row + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.history_offsets)


@dataclass
class UserItems:
    """One split of the top-N track: a set of items per user (a sparse users x items matrix),
    stored like a CSR matrix. The items of user u are ``items[offsets[u]:offsets[u+1]]``,
    ascending; ids 1..N (0 is padding, as everywhere)."""

    offsets: np.ndarray  # int64 (U+1,)
    items: np.ndarray  # int64 (pairs,)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, num_users: int) -> "UserItems":
        """From (user, item) pairs in any order; duplicates are kept (``check_user_items`` finds them)."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        if users.size and (users.min() < 0 or users.max() >= num_users):
            raise DataFormatError(f"user ids must lie in 0..{num_users - 1}, got {int(users.min())}..{int(users.max())}")
        order = np.lexsort((items, users))
        counts = np.bincount(users, minlength=num_users) if users.size else np.zeros(num_users, np.int64)
        offsets = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(counts[:num_users], out=offsets[1:])
        return cls(offsets, items[order])

    def counts(self) -> np.ndarray:
        """(U,) items per user."""
        return np.diff(self.offsets)

    def users(self) -> np.ndarray:
        """(pairs,) the user of every pair, aligned with ``items``."""
        return np.repeat(np.arange(self.num_users, dtype=np.int64), self.counts())

    def of(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def keys(self, num_items: int) -> np.ndarray:
        """(pairs,) one sortable integer per (user, item) pair, ascending (users x (N+1) + item)."""
        return self.users() * (num_items + 1) + self.items

    def contains(self, users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
        """bool, whether each (users[k], items[k]) pair is in the split."""
        keys = self.keys(num_items)
        query = np.asarray(users, dtype=np.int64) * (num_items + 1) + np.asarray(items, dtype=np.int64)
        at = np.minimum(np.searchsorted(keys, query), max(keys.size - 1, 0))
        return keys[at] == query if keys.size else np.zeros(query.shape, dtype=bool)


@dataclass
class FeatureSet:
    """One feature table: ``values`` (N+1, d) float32 and ``present`` (N+1,) bool."""

    values: np.ndarray
    present: np.ndarray
    modality: str  # "text", "image", ...
    encoder: str  # e.g. "open_clip ViT-B-32 (openai)"; free text, recorded in the manifest
    extra: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass
class DomainTables:
    """Everything a source importer produces; ``write_domain`` turns it into a folder."""

    name: str
    source: dict  # {"type": "release", "path": ..., "version": ...}
    protocol: dict  # {"split": "leave-one-out", "max_len": 50, "filters": ...}
    item_raw_id: list[str]  # index i-1 -> item i
    item_text: list[str | None]
    item_image: list[str | None]
    item_domain: list[str]
    user_raw_id: list[str]  # index u -> user u
    sequences: list[np.ndarray]  # per user, chronological item ids (1..N)
    splits: dict[str, Examples]
    features: dict[str, FeatureSet] = field(default_factory=dict)
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    cold_items: np.ndarray | None = None  # bool (N+1,): items held out of training (a cold-start split)
    cold_start: dict = field(default_factory=dict)  # how they were chosen, recorded in the manifest
    # The top-N track (general recommenders): split -> per-user item sets, and how they were made.
    # A domain without sequences (``sequences`` and ``splits`` empty) carries only this track.
    topn: dict[str, UserItems] | None = None
    topn_protocol: dict = field(default_factory=dict)

    @property
    def tracks(self) -> list[str]:
        return [t for t, present in zip(TRACKS, (bool(self.splits), self.topn is not None)) if present]

    @property
    def num_items(self) -> int:
        return len(self.item_raw_id)

    @property
    def num_users(self) -> int:
        return len(self.user_raw_id)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _list_column(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(values, type=pa.int32()))


def _examples_table(examples: Examples) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(examples.user_id, type=pa.int32()),
            "history": _list_column(examples.history_values, examples.history_offsets),
            "target": pa.array(examples.target, type=pa.int32()),
        }
    )


def write_domain(tables: DomainTables, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check ``tables`` and write them as a processed domain at ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    check_tables(tables)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (or --overwrite) to replace it")
    return write_folder_atomically(out_dir, lambda staging: _write_into(tables, staging))


def write_folder_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Make the folder ``target`` with ``fill(staging)``, which writes into a temporary sibling
    folder that is then renamed to ``target``; an existing ``target`` is replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp creates 0700; a data dir may be shared
    try:
        fill(staging)
        if target.exists():
            # Move the old folder aside first so that a crash leaves either the old or the new one.
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)) / "old"
            os.replace(target, trash)
            os.replace(staging, target)
            shutil.rmtree(trash.parent, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_into(tables: DomainTables, folder: Path) -> None:
    n_items = tables.num_items
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array(np.arange(1, n_items + 1), type=pa.int32()),
                "raw_id": pa.array(tables.item_raw_id, type=pa.string()),
                "text": pa.array(tables.item_text, type=pa.string()),
                "image": pa.array(tables.item_image, type=pa.string()),
                "domain": pa.array(tables.item_domain, type=pa.string()),
            }
        ),
        folder / "items.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(np.arange(tables.num_users), type=pa.int32()),
                "raw_id": pa.array(tables.user_raw_id, type=pa.string()),
            }
        ),
        folder / "users.parquet",
    )
    seq_lengths = np.fromiter((len(s) for s in tables.sequences), dtype=np.int64, count=len(tables.sequences))
    if "sequential" in tables.tracks:
        seq_offsets = np.zeros(len(seq_lengths) + 1, dtype=np.int64)
        np.cumsum(seq_lengths, out=seq_offsets[1:])
        seq_values = np.concatenate(tables.sequences) if tables.sequences else np.zeros(0, dtype=np.int64)
        pq.write_table(
            pa.table(
                {
                    "user_id": pa.array(np.arange(tables.num_users), type=pa.int32()),
                    "items": _list_column(seq_values, seq_offsets),
                }
            ),
            folder / "interactions.parquet",
        )
        for split in SPLITS:
            pq.write_table(_examples_table(tables.splits[split]), folder / f"{split}.parquet")
    if tables.topn is not None:
        (folder / TOPN_DIR).mkdir()
        for split in SPLITS:
            write_user_items(tables.topn[split], folder / TOPN_DIR / f"{split}.parquet", n_items)

    feature_meta = {}
    if tables.features:
        (folder / "features").mkdir()
    for name, feature in tables.features.items():
        values = np.ascontiguousarray(feature.values, dtype=np.float32)
        present = np.ascontiguousarray(feature.present, dtype=bool)
        np.save(folder / "features" / f"{name}.npy", values)
        np.save(folder / "features" / f"{name}.mask.npy", present)
        feature_meta[name] = {
            "modality": feature.modality,
            "encoder": feature.encoder,
            "dim": feature.dim,
            "dtype": "float32",
            "coverage": round(float(present[1:].mean()) if n_items else 0.0, 6),
            "items_with_feature": int(present[1:].sum()),
            "file": f"features/{name}.npy",
            "mask_file": f"features/{name}.mask.npy",
            **feature.extra,
        }

    if tables.cold_items is not None:
        np.save(folder / COLD_ITEMS, np.ascontiguousarray(tables.cold_items, dtype=bool))

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": tables.name,
        "synthetic": tables.synthetic,
        "source": tables.source,
        "protocol": tables.protocol,
        "tracks": tables.tracks,
        "counts": {
            "users": tables.num_users,
            "items": n_items,
            # the sequences' length, or for a domain with the top-N track only, its pairs
            "interactions": int(seq_lengths.sum()) if tables.splits else sum(len(tables.topn[split]) for split in SPLITS),
            **({f"{split}_examples": len(tables.splits[split]) for split in SPLITS} if tables.splits else {}),
        },
        **({"topn": topn_manifest(tables.topn, tables.topn_protocol)} if tables.topn is not None else {}),
        "features": feature_meta,
        **({"cold_start": {**tables.cold_start, "items": int(tables.cold_items.sum()), "file": COLD_ITEMS}} if tables.cold_items is not None else {}),
        "notes": tables.notes,
        "checksums": {str(p.relative_to(folder)): sha256_of(p) for p in files},
    }
    manifest_tmp = folder / (MANIFEST + ".tmp")
    manifest_tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(manifest_tmp, folder / MANIFEST)


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


def _check_ids(where: str, field_name: str, values: np.ndarray, low: int, high: int) -> None:
    """Raise if any value lies outside [low, high], naming the first offending position."""
    if values.size == 0:
        return
    bad = np.flatnonzero((values < low) | (values > high))
    if bad.size:
        first = int(bad[0])
        raise DataFormatError(
            f"{where}: field '{field_name}' has {bad.size} value(s) outside {low}..{high}; "
            f"first at position {first}: {int(values[first])}"
        )


def check_feature_values(where: str, values: np.ndarray, present: np.ndarray, n_items: int, dim: int | None = None) -> None:
    """Shape, dtype, finiteness and padding checks shared by writer and loader."""
    if values.ndim != 2 or values.shape[0] != n_items + 1:
        raise DataFormatError(
            f"{where}: expected shape ({n_items + 1}, d) = (items + padding row, dim), got {tuple(values.shape)}"
        )
    if dim is not None and values.shape[1] != dim:
        raise DataFormatError(f"{where}: expected dimension {dim}, got {values.shape[1]}")
    if values.dtype != np.float32:
        raise DataFormatError(f"{where}: expected float32, got {values.dtype}")
    if present.shape != (n_items + 1,) or present.dtype != bool:
        raise DataFormatError(f"{where}: presence mask must be bool of shape ({n_items + 1},), got {present.dtype} {present.shape}")
    if present[0]:
        raise DataFormatError(f"{where}: row 0 is padding and must be marked absent in the mask")
    step = 65536
    for start in range(0, values.shape[0], step):
        block = np.asarray(values[start : start + step])
        finite = np.isfinite(block)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise DataFormatError(
                f"{where}: non-finite value {block[row, col]} at item row {start + int(row)}, column {int(col)}"
            )
    if np.any(np.asarray(values[0]) != 0):
        raise DataFormatError(f"{where}: row 0 (padding) must be all zeros")


def check_tables(tables: DomainTables) -> None:
    """Consistency checks before anything is written."""
    n_items, n_users = tables.num_items, tables.num_users
    for column in ("item_text", "item_image", "item_domain"):
        if len(getattr(tables, column)) != n_items:
            raise DataFormatError(f"{tables.name}: {column} has {len(getattr(tables, column))} entries for {n_items} items")
    if not tables.tracks:
        raise DataFormatError(f"{tables.name}: neither sequential splits nor top-N splits; a domain needs at least one track")
    if tables.topn is not None:
        check_user_items({split: f"{tables.name} top-N {split} split" for split in SPLITS}, tables.topn, n_users, n_items)
    if not tables.splits:
        if tables.sequences or tables.cold_items is not None:
            raise DataFormatError(f"{tables.name}: sequences or cold items without sequential splits")
        for name, feature in tables.features.items():
            check_feature_values(f"{tables.name} feature '{name}'", feature.values, feature.present, n_items)
        return
    if len(tables.sequences) != n_users:
        raise DataFormatError(f"{tables.name}: {len(tables.sequences)} sequences for {n_users} users")
    for split in SPLITS:
        if split not in tables.splits:
            raise DataFormatError(f"{tables.name}: split '{split}' is missing")
        ex = tables.splits[split]
        where = f"{tables.name} {split} examples"
        _check_ids(where, "target", ex.target, 1, n_items)
        _check_ids(where, "history", ex.history_values, 1, n_items)
        _check_ids(where, "user_id", ex.user_id, 0, n_users - 1)
        empty = np.flatnonzero(ex.lengths() == 0)
        if empty.size:
            raise DataFormatError(f"{where}: row {int(empty[0])} has an empty history")
    for u, seq in enumerate(tables.sequences):
        if len(seq) and (seq.min() < 1 or seq.max() > n_items):
            raise DataFormatError(f"{tables.name} interactions: user {u} has an item id outside 1..{n_items}")
    for name, feature in tables.features.items():
        check_feature_values(f"{tables.name} feature '{name}'", feature.values, feature.present, n_items)
    if tables.cold_items is not None:
        check_cold_items(f"{tables.name} cold items", np.asarray(tables.cold_items), tables.splits["train"], n_items)


def write_user_items(split: UserItems, path: Path, n_items: int) -> None:
    """One top-N split as (user_id, item_id) pairs, its matrix shape in the schema metadata."""
    table = pa.table({"user_id": pa.array(split.users(), type=pa.int32()), "item_id": pa.array(split.items, type=pa.int32())})
    pq.write_table(table.replace_schema_metadata({SHAPE_KEY: json.dumps([split.num_users, n_items]).encode()}), path)


def read_user_items(path: Path, n_users: int, n_items: int) -> UserItems:
    """A top-N split file, checked against the domain's shape and id ranges (clear errors naming
    ``path``); ``check_user_items`` checks the splits against each other."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataFormatError(f"{path}: cannot be read as Parquet ({err})") from err
    for column in ("user_id", "item_id"):
        if column not in table.column_names:
            raise DataFormatError(f"{path}: column '{column}' is missing (expected user_id, item_id)")
    raw = (table.schema.metadata or {}).get(SHAPE_KEY)
    try:
        shape = tuple(json.loads(raw)) if raw is not None else None
    except ValueError:
        shape = None
    if shape is None:
        raise DataFormatError(f"{path}: no matrix shape in the schema metadata ({SHAPE_KEY.decode()}); prepare the domain again")
    if shape != (n_users, n_items):
        raise DataFormatError(
            f"{path}: a {shape[0]} x {shape[1]} matrix, but the domain has {n_users} users x {n_items} items "
            "(the train, valid and test matrices must have one shape)"
        )
    users = table.column("user_id").to_numpy().astype(np.int64)
    items = table.column("item_id").to_numpy().astype(np.int64)
    _check_ids(str(path), "user_id", users, 0, n_users - 1)
    _check_ids(str(path), "item_id", items, 1, n_items)
    return UserItems.from_pairs(users, items, n_users)


def check_user_items(where: Mapping[str, str], splits: Mapping[str, UserItems], n_users: int, n_items: int) -> None:
    """The top-N splits of a domain: all three present with the domain's users, ids in range,
    no pair twice in a split or in two splits, valid and test not empty, and no user without
    any interaction. ``where[split]`` names the file (or table) in the messages."""
    missing = [split for split in SPLITS if split not in splits]
    if missing:
        raise DataFormatError(f"top-N splits: {', '.join(missing)} missing (expected train, valid and test)")
    keys = {}
    for split in SPLITS:
        part = splits[split]
        if part.num_users != n_users:
            raise DataFormatError(f"{where[split]}: rows for {part.num_users} users, the domain has {n_users} (matrices of different shapes)")
        _check_ids(where[split], "item_id", part.items, 1, n_items)
        keys[split] = part.keys(n_items)
        repeated = np.flatnonzero(np.diff(keys[split]) == 0)
        if repeated.size:
            user, item = divmod(int(keys[split][repeated[0]]), n_items + 1)
            raise DataFormatError(f"{where[split]}: user {user} - item {item} occurs twice ({repeated.size} repeated pairs); a split is a set")
        if split != "train" and not len(part):
            raise DataFormatError(f"{where[split]}: empty; the {split} split needs at least one held-out item")
    for first, second in (("train", "valid"), ("train", "test"), ("valid", "test")):
        both = np.intersect1d(keys[first], keys[second], assume_unique=True)
        if both.size:
            user, item = divmod(int(both[0]), n_items + 1)
            raise DataFormatError(
                f"{where[first]} and {where[second]} overlap: user {user} - item {item} is in both ({both.size} pairs); "
                "the splits must be disjoint, or a held-out item would be trained on (or masked away)"
            )
    total = sum(splits[split].counts() for split in SPLITS)
    empty = np.flatnonzero(total == 0)
    if empty.size:
        raise DataFormatError(
            f"{where['train']}: user {int(empty[0])} has no interaction in any split ({empty.size} such users); "
            "remove them (user ids must run 0..U-1 over users with data)"
        )


def topn_manifest(splits: Mapping[str, UserItems], protocol: dict) -> dict:
    """The manifest's description of the top-N track: how it was made, its files and counts."""
    return {
        "protocol": protocol,
        "files": {split: f"{TOPN_DIR}/{split}.parquet" for split in SPLITS},
        "counts": {
            **{f"{split}_pairs": len(splits[split]) for split in SPLITS},
            **{f"{split}_users": int((splits[split].counts() > 0).sum()) for split in ("valid", "test")},
            # users whose items are all held out: evaluated, but with nothing to learn them from
            "users_without_train": int((splits["train"].counts() == 0).sum()),
        },
    }


def check_cold_items(where: str, cold: np.ndarray, train: Examples, n_items: int) -> None:
    """A cold-start mask: bool (N+1,), padding not cold, and no training row holding a cold item,
    as its target or in its history (``mmseqrec prepare cold``)."""
    if cold.dtype != bool or cold.shape != (n_items + 1,):
        raise DataFormatError(f"{where}: expected bool of shape ({n_items + 1},) (items + padding row), got {cold.dtype} {cold.shape}")
    if cold[0]:
        raise DataFormatError(f"{where}: entry 0 is padding and cannot be a cold item")
    targets = np.flatnonzero(cold[train.target])
    if targets.size:
        raise DataFormatError(f"{where}: train row {int(targets[0])} has the cold item {int(train.target[targets[0]])} as its target ({targets.size} such rows); cold items must stay out of training")
    inside = np.flatnonzero(cold[train.history_values])
    if inside.size:
        row = int(np.searchsorted(train.history_offsets, inside[0], side="right") - 1)
        raise DataFormatError(f"{where}: train row {row} has the cold item {int(train.history_values[inside[0]])} in its history; cold items must stay out of training")


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        raise DataFormatError(f"{path}: missing; this folder is not a processed domain")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from err
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataFormatError(f"{path}: format_version {version!r}, this version of mmseqrec reads {FORMAT_VERSION}")
    for key in ("name", "counts", "checksums", "features"):
        if key not in manifest:
            raise DataFormatError(f"{path}: required field '{key}' is missing")
    return manifest


def verify_checksums(folder: Path, manifest: Mapping[str, Any]) -> None:
    for rel, expected in manifest["checksums"].items():
        path = folder / rel
        if not path.exists():
            raise DataFormatError(f"{path}: listed in the manifest but missing")
        actual = sha256_of(path)
        if actual != expected:
            raise DataFormatError(
                f"{path}: checksum mismatch (manifest {expected[:12]}..., file {actual[:12]}...); "
                "the file changed after the domain was prepared: prepare it again"
            )
