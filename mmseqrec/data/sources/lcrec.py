"""Import LC-Rec style JSON datasets.

A folder for a domain ``<Name>`` holds::

    <Name>.inter.json   {"<user index>": [item index, ...], ...}   chronological, oldest first
    <Name>.item.json    (optional) {"<item index>": {"title", "description", "brand", "categories"}}

Mapping to the processed format: item id = item index + 1 (0 is padding; the indices must run
0..n-1), users are ordered by their integer index (user id = position, raw id = the key), item
text is "title. categories. brand." (missing fields skipped; None for items without metadata),
and the splits are chronological leave-one-out (``mmseqrec.data.split.leave_one_out``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmseqrec.data.format import DataFormatError, DomainTables, sha256_of, write_domain
from mmseqrec.data.loading import default_data_dir, load_domain
from mmseqrec.data.split import leave_one_out
from mmseqrec.options import add_data_dir

DEFAULT_MAX_LEN = 50
#: Metadata fields that make up an item's text, in order.
TEXT_FIELDS: tuple[str, ...] = ("title", "categories", "brand")


def infer_lcrec_name(folder: Path) -> str:
    """The ``<Name>`` of the single ``<Name>.inter.json`` in ``folder``."""
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: not a folder; expected a folder with <Name>.inter.json")
    names = sorted(p.name[: -len(".inter.json")] for p in folder.glob("*.inter.json"))
    if not names:
        raise DataFormatError(f"{folder}: no <Name>.inter.json file; expected LC-Rec style JSON (<Name>.inter.json, optional <Name>.item.json)")
    if len(names) > 1:
        raise DataFormatError(f"{folder}: several datasets ({', '.join(names)}); choose one with --name")
    return names[0]


def _reject_duplicates(path: Path):
    """An ``object_pairs_hook`` that refuses duplicate keys (json would silently keep the last)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise DataFormatError(f"{path.name}: key {key!r} appears twice in one object")
            out[key] = value
        return out

    return hook


def read_json_object(path: Path) -> dict[str, Any]:
    """Parse ``path`` as a JSON object; errors name the file and the line/column."""
    if not path.is_file():
        raise DataFormatError(f"{path}: missing")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle, object_pairs_hook=_reject_duplicates(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path.name}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path.name}: not UTF-8 text ({err})") from err
    if not isinstance(data, dict):
        raise DataFormatError(f"{path.name}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _int_key(path: Path, key: str, what: str) -> int:
    if not (key.isascii() and key.isdigit()):
        raise DataFormatError(f"{path.name}: key {key!r} is not a {what} index (expected a non-negative integer string)")
    return int(key)


def read_interactions(path: Path) -> tuple[list[str], list[list[int]]]:
    """User keys (ordered by integer value) and their item-index sequences, type-checked."""
    data = read_json_object(path)
    if not data:
        raise DataFormatError(f"{path.name}: no users")
    keys = sorted(data, key=lambda k: _int_key(path, k, "user"))
    sequences: list[list[int]] = []
    for key in keys:
        items = data[key]
        if not isinstance(items, list):
            raise DataFormatError(f"{path.name}: user {key!r}: expected a list of item indices, got {type(items).__name__}")
        for position, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise DataFormatError(
                    f"{path.name}: user {key!r}: position {position} holds {item!r}; expected a non-negative integer item index"
                )
        sequences.append(items)
    return keys, sequences


def _flatten(value: Any) -> list[str]:
    """Strings inside a (possibly nested) list, in order."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _flatten(v)]
    return [str(value)]


def item_text(meta: Mapping[str, Any]) -> str | None:
    """"title. categories. brand." from one item's metadata; None when every field is empty."""
    parts = []
    for field in TEXT_FIELDS:
        text = " ".join(s.strip() for s in _flatten(meta.get(field)) if s.strip()).strip()
        if text:
            parts.append(text if text.endswith(".") else text + ".")
    return " ".join(parts) or None


def read_item_texts(path: Path, n_items: int) -> list[str | None]:
    """Item texts by index 0..n_items-1 from ``<Name>.item.json``."""
    data = read_json_object(path)
    texts: list[str | None] = [None] * n_items
    for key, meta in data.items():
        index = _int_key(path, key, "item")
        if index >= n_items:
            raise DataFormatError(
                f"{path.name}: item {key!r} is out of range; the interactions use item indices 0..{n_items - 1}"
            )
        if not isinstance(meta, dict):
            raise DataFormatError(f"{path.name}: item {key!r}: expected an object with title/description/brand/categories, got {type(meta).__name__}")
        texts[index] = item_text(meta)
    return texts


def import_lcrec(
    path: str | os.PathLike,
    name: str | None = None,
    out_name: str | None = None,
    max_len: int = DEFAULT_MAX_LEN,
) -> DomainTables:
    """Read an LC-Rec style folder into ``DomainTables`` (nothing is written).

    Args:
        path: the folder with ``<Name>.inter.json`` (and optionally ``<Name>.item.json``).
        name: the ``<Name>`` prefix (default: inferred from the folder).
        out_name: the processed domain's name (default: ``name``).
        max_len: history cap of the leave-one-out examples.
    Raises:
        DataFormatError: naming the file, and the user or item key (or JSON line/column).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    folder = Path(path)
    name = name or infer_lcrec_name(folder)
    out_name = out_name or name
    inter_path, item_path = folder / f"{name}.inter.json", folder / f"{name}.item.json"
    user_keys, raw_sequences = read_interactions(inter_path)

    distinct: set[int] = set()
    for seq in raw_sequences:
        distinct.update(seq)
    n_items = len(distinct)
    largest = max(distinct, default=-1)
    if largest != n_items - 1:
        gaps = [i for i in range(largest) if i not in distinct][:5] if largest < 10 * n_items + 1000 else []
        first = f"first: {', '.join(map(str, gaps))}" if gaps else f"largest index {largest} for {n_items} distinct items"
        raise DataFormatError(
            f"{inter_path.name}: item indices must run 0..n-1 with every index used; {largest + 1 - n_items} index(es) "
            f"between 0 and {largest} never occur ({first})"
        )
    for key, seq in zip(user_keys, raw_sequences):
        if len(seq) < 3:
            raise DataFormatError(f"{inter_path.name}: user {key!r} has {len(seq)} interaction(s); leave-one-out needs at least 3")

    notes: list[str] = []
    inputs = [inter_path]
    if item_path.is_file():
        inputs.append(item_path)
        texts = read_item_texts(item_path, n_items)
        without = sum(t is None for t in texts)
        if without:
            notes.append(f"{without} of {n_items} items have no text in {item_path.name}")
    else:
        texts = [None] * n_items
        notes.append(f"no {item_path.name}: items have no text")

    sequences = [np.asarray(seq, dtype=np.int64) + 1 for seq in raw_sequences]
    return DomainTables(
        name=out_name,
        source={
            "type": "lcrec",
            "path": str(folder.resolve()),
            "name": name,
            "files": {p.name: sha256_of(p) for p in inputs},
        },
        protocol={"split": "leave-one-out", "max_len": max_len, "filters": "as released"},
        item_raw_id=[str(i) for i in range(n_items)],
        item_text=texts,
        item_image=[None] * n_items,
        item_domain=[name] * n_items,
        user_raw_id=user_keys,
        sequences=sequences,
        splits=leave_one_out(sequences, max_len=max_len),
        notes=notes,
    )


def prepare_lcrec(
    path: str | os.PathLike,
    name: str | None = None,
    out_name: str | None = None,
    out: str | os.PathLike | None = None,
    max_len: int = DEFAULT_MAX_LEN,
    overwrite: bool = False,
) -> Path:
    """Import an LC-Rec style folder and write it as the processed domain ``<out>/<out_name>``."""
    root = Path(out) if out is not None else default_data_dir()
    target = root / (out_name or name or infer_lcrec_name(Path(path)))
    if target.exists() and not overwrite:  # fail before the import, not after it
        raise FileExistsError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it")
    tables = import_lcrec(path, name=name, out_name=out_name, max_len=max_len)
    return write_domain(tables, root / tables.name, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    folder = prepare_lcrec(
        args.path, name=args.name, out_name=args.out_name, out=args.data_dir, max_len=args.max_len, overwrite=args.overwrite
    )
    print(load_domain(folder).describe())
    print(f"written to {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare lcrec``."""
    parser = subparsers.add_parser(
        "lcrec",
        help="import LC-Rec style JSON (<Name>.inter.json, optional <Name>.item.json)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--path", required=True, type=Path, help="the folder with <Name>.inter.json")
    parser.add_argument("--name", default=None, help="the <Name> prefix of its files (default: inferred from <Name>.inter.json)")
    parser.add_argument("--out-name", default=None, help="name of the processed domain (default: --name)")
    add_data_dir(parser, "write", old="--out")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help=f"history cap of the examples (default {DEFAULT_MAX_LEN})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing processed domain of that name")
    parser.set_defaults(func=_cmd_prepare)
    return parser
