"""Import (and export) the UniSRec / MISSRec release format.

A release folder for a domain ``<Name>`` holds::

    <Name>.train.inter  <Name>.valid.inter  <Name>.test.inter
        tab-separated, header ``user_id:token  item_id_list:token_seq  item_id:token``; one
        (user, history, target) row per line, history oldest first, space-separated, at most 50
        items. Tokens are the integer indices of ``.user2index`` / ``.item2index``.
    <Name>.item2index  <Name>.user2index
        ``raw_id<TAB>index`` per line.
    <Name>.text            (optional) header ``item_id:token  text:token_seq``, rows keyed by raw id
    <Name>.feat1CLS        (optional) text features, raw little-endian float32 (n_items, dim)
    <Name>.feat3CLS        (optional) image features, same layout
    <Name>.feat2CLS        (optional) augmented-text features, same layout

Mapping to the processed format: item id = release index + 1 (0 is padding), user id = release
index. The released train/valid/test rows are kept exactly, in file order, so that
``export_release`` writes them back unchanged. Every user's whole chronological sequence (for
``interactions.parquet``) is rebuilt by chaining the user's rows: each row's history is the
sequence so far (cut to its last ``max_len`` items) and its target the next item. In the feature
files an all-zero row means "this item has no such feature"; it becomes ``False`` in the mask.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq

from mmseqrec.data.format import SPLITS, DataFormatError, DomainTables, Examples, FeatureSet, sha256_of, write_domain
from mmseqrec.data.loading import Domain, default_data_dir, load_domain
from mmseqrec.options import add_data_dir, add_output, require_output

#: The header of every ``.inter`` file, field by field.
INTER_HEADER: tuple[str, str, str] = ("user_id:token", "item_id_list:token_seq", "item_id:token")
#: The header of the ``.text`` file.
TEXT_HEADER: tuple[str, str] = ("item_id:token", "text:token_seq")
#: The history cap of the release format (UniSRec / MISSRec ``MAX_ITEM_LIST_LENGTH``).
RELEASE_MAX_LEN = 50
DEFAULT_DIM = 512


@dataclass(frozen=True)
class ReleaseFeature:
    """How one processed feature set maps to a release feature file."""

    name: str  # processed feature-set name
    suffix: str  # release file suffix, without the dot
    modality: str
    default_encoder: str


RELEASE_FEATURES: tuple[ReleaseFeature, ...] = (
    ReleaseFeature("text", "feat1CLS", "text", "release .feat1CLS (CLIP ViT-B/32 text per the MISSRec release)"),
    ReleaseFeature("image", "feat3CLS", "image", "release .feat3CLS (CLIP ViT-B/32 image per the MISSRec release)"),
    ReleaseFeature("text_aug", "feat2CLS", "text", "release .feat2CLS (augmented text per the MISSRec release)"),
)


@dataclass
class InterRows:
    """The rows of one ``.inter`` file, in file order, as release indices (0-based)."""

    users: list[int]
    histories: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)


# --------------------------------------------------------------------------------------------
# Reading the raw files
# --------------------------------------------------------------------------------------------


def infer_release_name(folder: Path) -> str:
    """The ``<Name>`` of the single ``<Name>.train.inter`` in ``folder``."""
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: not a folder; expected a release folder with <Name>.train.inter etc.")
    names = sorted(p.name[: -len(".train.inter")] for p in folder.glob("*.train.inter"))
    if not names:
        raise DataFormatError(
            f"{folder}: no <Name>.train.inter file; expected the UniSRec/MISSRec release files "
            "(<Name>.train.inter, .valid.inter, .test.inter, .item2index, .user2index)"
        )
    if len(names) > 1:
        raise DataFormatError(f"{folder}: several releases ({', '.join(names)}); choose one with --name")
    return names[0]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending) for every non-blank line of ``path``."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err})") from err


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataFormatError(f"{path}: missing; a release needs <Name>.train.inter, .valid.inter, .test.inter, .item2index and .user2index")
    return path


def _index_token(token: str, where: str, what: str, limit: int, limit_file: str) -> int:
    """Parse a non-negative integer token and check it against ``0..limit-1``."""
    if not (token.isascii() and token.isdigit()):
        raise DataFormatError(f"{where}: {what} token {token!r} is not a non-negative integer index")
    value = int(token)
    if value >= limit:
        raise DataFormatError(f"{where}: {what} index {value} is out of range; {limit_file} has indices 0..{limit - 1}")
    return value


def read_index_file(path: Path) -> list[str]:
    """Read ``raw_id<TAB>index`` lines; return the raw ids ordered by index (indices must be 0..n-1)."""
    by_index: dict[int, str] = {}
    seen: dict[str, int] = {}
    for number, line in _lines(_require(path)):
        fields = line.split("\t")
        where = f"{path.name} line {number}"
        if len(fields) != 2:
            raise DataFormatError(f"{where}: expected 2 tab-separated fields (raw id, index), got {len(fields)}")
        raw, token = fields[0].strip(), fields[1].strip()
        if not (token.isascii() and token.isdigit()):
            raise DataFormatError(f"{where}: index {token!r} is not a non-negative integer")
        index = int(token)
        if index in by_index:
            raise DataFormatError(f"{where}: index {index} is given twice ({by_index[index]!r} and {raw!r})")
        if raw in seen:
            raise DataFormatError(f"{where}: raw id {raw!r} is listed twice (indices {seen[raw]} and {index})")
        by_index[index] = raw
        seen[raw] = index
    n = len(by_index)
    if n == 0:
        raise DataFormatError(f"{path}: empty; expected raw_id<TAB>index lines")
    if max(by_index) != n - 1:
        missing = next(i for i in range(n) if i not in by_index)
        raise DataFormatError(f"{path}: indices must run 0..{n - 1} without gaps; index {missing} is missing (largest is {max(by_index)})")
    return [by_index[i] for i in range(n)]


def read_inter_file(path: Path, n_users: int, n_items: int, prefix: str) -> InterRows:
    """Read one ``.inter`` file, checking every field; rows are kept in file order."""
    rows = InterRows([], [], [])
    lines = _lines(_require(path))
    first = next(lines, None)
    if first is None:
        raise DataFormatError(f"{path.name}: empty; expected the header {' / '.join(INTER_HEADER)} and then rows")
    number, line = first
    fields = line.split("\t")
    names = [f.split(":")[0].strip() for f in fields]
    if names != [h.split(":")[0] for h in INTER_HEADER]:
        raise DataFormatError(
            f"{path.name} line {number}: expected the header {'<TAB>'.join(INTER_HEADER)}, got {line[:120]!r}"
        )
    user_file, item_file = f"{prefix}.user2index", f"{prefix}.item2index"
    for number, line in lines:
        where = f"{path.name} line {number}"
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataFormatError(f"{where}: expected 3 tab-separated fields (user, history, target), got {len(fields)}")
        user = _index_token(fields[0].strip(), where, "user", n_users, user_file)
        tokens = fields[1].split()
        if not tokens:
            raise DataFormatError(f"{where}: empty history; expected at least one space-separated item index")
        history = [_index_token(t, where, "history item", n_items, item_file) for t in tokens]
        target = _index_token(fields[2].strip(), where, "target item", n_items, item_file)
        rows.users.append(user)
        rows.histories.append(history)
        rows.targets.append(target)
    return rows


def read_text_file(path: Path) -> dict[str, str | None]:
    """Read ``raw_id<TAB>text`` rows (after the header); text is stripped, empty text becomes None."""
    texts: dict[str, str | None] = {}
    for number, line in _lines(path):
        fields = line.split("\t", 1)
        if number == 1 and fields[0].strip() == TEXT_HEADER[0]:
            continue
        where = f"{path.name} line {number}"
        if len(fields) != 2:
            raise DataFormatError(f"{where}: expected 2 tab-separated fields (item raw id, text), got 1")
        raw, text = fields[0].strip(), fields[1].strip()
        if raw in texts:
            raise DataFormatError(f"{where}: item {raw!r} has a second text row")
        texts[raw] = text or None
    return texts


def read_feature_file(path: Path, n_items: int, dim: int, item_raw_id: Sequence[str] | None = None) -> np.ndarray:
    """Read a raw little-endian float32 (n_items, dim) file, checking its size and finiteness."""
    size = path.stat().st_size
    expected = n_items * dim * 4
    if size != expected:
        hint = ""
        if dim and size % (dim * 4) == 0:
            hint = f"; it holds {size // (dim * 4)} rows of {dim} floats, so it belongs to a different item list"
        elif n_items and size % (n_items * 4) == 0:
            hint = f"; it would fit {n_items} items of dimension {size // (n_items * 4)} (pass --dim {size // (n_items * 4)})"
        raise DataFormatError(
            f"{path.name}: {size:,} bytes, expected {n_items} items x {dim} dims x 4 bytes = {expected:,} "
            f"(raw little-endian float32, no header){hint}"
        )
    values = np.fromfile(path, dtype="<f4").reshape(n_items, dim)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = (int(x) for x in np.argwhere(~finite)[0])
        raw = f" (raw id {item_raw_id[row]})" if item_raw_id is not None else ""
        raise DataFormatError(
            f"{path.name}: non-finite value {values[row, col]} at row {row}{raw}, column {col}; "
            f"{int((~finite).sum())} non-finite value(s) in all; features must be finite floats"
        )
    return values.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Rebuilding sequences
# --------------------------------------------------------------------------------------------


def _chain_rows(first: Sequence[int], options: dict[tuple[int, ...], dict[int, int]], total: int, window: int) -> tuple[list[int], int]:
    """Extend ``first`` by one row's target at a time until all ``total`` rows are placed.

    ``options`` maps a history window to {target: number of rows}, targets in preferred order.
    Histories shorter than ``window`` are whole prefixes and so unambiguous; only cut histories
    can repeat, and then the search backtracks if the preferred target leads to a dead end.
    Returns the sequence and the number of rows placed (less than ``total`` on failure: then the
    longest sequence that was reached).
    """
    seq = list(first)
    stack: list[tuple[tuple[int, ...], int]] = []  # (history window, index of the chosen target)
    placed, resume = 0, 0
    deepest, deepest_placed = list(seq), 0
    budget = 20 * total + 10_000
    while placed < total:
        budget -= 1
        if budget < 0:
            break
        key = tuple(seq[-window:])
        counts = options.get(key, {})
        targets = list(counts)
        choice = resume
        while choice < len(targets) and counts[targets[choice]] == 0:
            choice += 1
        if choice < len(targets):
            target = targets[choice]
            counts[target] -= 1
            seq.append(target)
            stack.append((key, choice))
            placed, resume = placed + 1, 0
            if placed > deepest_placed:
                deepest, deepest_placed = list(seq), placed
        elif stack:
            key, resume = stack.pop()
            options[key][seq.pop()] += 1
            placed, resume = placed - 1, resume + 1
        else:
            break
    if placed == total:
        return seq, placed
    return deepest, deepest_placed


def reconstruct_sequences(
    splits: Mapping[str, InterRows], n_users: int, window: int, user_raw_id: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Each user's chronological sequence (release indices), rebuilt by chaining its rows.

    Starts from the user's shortest history in the earliest split where it has rows (train,
    else valid, else test) and repeatedly appends the target of a row whose history equals the
    last ``window`` items so far; every row of the user must be used exactly once. Where cut
    histories repeat, rows are preferred in time order (train before valid before test; within
    train, UniSRec writes each user's rows from the last target backwards, which is detected
    per user from the history lengths).
    """
    per_user: list[list[tuple[int, int, tuple[int, ...], int]]] = [[] for _ in range(n_users)]
    for rank, split in enumerate(SPLITS):
        rows = splits[split]
        for position, (user, history, target) in enumerate(zip(rows.users, rows.histories, rows.targets)):
            per_user[user].append((rank, position, tuple(history), target))
    sequences: list[np.ndarray] = []
    for user, rows in enumerate(per_user):
        name = f"user {user}" + (f" ({user_raw_id[user]})" if user_raw_id is not None else "")
        if not rows:
            raise DataFormatError(f"{name} is listed in .user2index but has no row in the .train/.valid/.test.inter files")
        train = [r for r in rows if r[0] == 0]
        direction = 1 if len(train) > 1 and len(train[0][2]) < len(train[-1][2]) else -1
        rows.sort(key=lambda r: (r[0], len(r[2]), direction * r[1]))
        options: dict[tuple[int, ...], dict[int, int]] = {}
        for _, _, history, target in rows:
            counts = options.setdefault(history, {})
            counts[target] = counts.get(target, 0) + 1
        first_rank = rows[0][0]
        first = min((r[2] for r in rows if r[0] == first_rank), key=len)
        seq, placed = _chain_rows(first, options, len(rows), window)
        if placed < len(rows):
            raise DataFormatError(
                f"{name}: its rows do not chain into one chronological sequence; after {len(seq)} items "
                f"(... {' '.join(map(str, seq[-5:]))}) no unused row continues it, and {len(rows) - placed} of its "
                f"{len(rows)} rows are unused. Expected every row's history to be the sequence so far (its last "
                f"{window} items) and its target the next item"
            )
        sequences.append(np.asarray(seq, dtype=np.int64))
    return sequences


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def import_release(
    path: str | os.PathLike,
    name: str | None = None,
    out_name: str | None = None,
    dim: int = DEFAULT_DIM,
    encoders: Mapping[str, str] | None = None,
) -> DomainTables:
    """Read a UniSRec/MISSRec release folder into ``DomainTables`` (nothing is written).

    Args:
        path: the release folder.
        name: the ``<Name>`` prefix of its files (default: inferred from ``<Name>.train.inter``).
        out_name: the processed domain's name (default: ``name``).
        dim: the feature dimension of the ``.featNCLS`` files.
        encoders: feature-set name (``text``, ``image``, ``text_aug``) -> encoder description to
            record instead of the default.
    Raises:
        DataFormatError: naming the file, line (or row/column) and what was expected.
    """
    folder = Path(path)
    name = name or infer_release_name(folder)
    out_name = out_name or name
    encoders = dict(encoders or {})
    unknown = set(encoders) - {f.name for f in RELEASE_FEATURES}
    if unknown:
        raise ValueError(f"unknown feature set(s) {sorted(unknown)} in encoders; expected text, image or text_aug")
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")

    def file(suffix: str) -> Path:
        return folder / f"{name}.{suffix}"

    item_raw_id = read_index_file(file("item2index"))
    user_raw_id = read_index_file(file("user2index"))
    n_items, n_users = len(item_raw_id), len(user_raw_id)
    rows = {split: read_inter_file(file(f"{split}.inter"), n_users, n_items, name) for split in SPLITS}

    longest = max((len(h) for r in rows.values() for h in r.histories), default=1)
    release_sequences = reconstruct_sequences(rows, n_users, window=longest, user_raw_id=user_raw_id)

    notes: list[str] = []
    item_text: list[str | None] = [None] * n_items
    text_path = file("text")
    if text_path.is_file():
        texts = read_text_file(text_path)
        item_text = [texts.get(raw) for raw in item_raw_id]
        unknown_texts = len(set(texts) - set(item_raw_id))
        if unknown_texts:
            notes.append(f"{text_path.name}: {unknown_texts} row(s) for items not in {name}.item2index were ignored")
        without = sum(t is None for t in item_text)
        if without:
            notes.append(f"{without} of {n_items} items have no text in {text_path.name}")
    else:
        notes.append(f"no {text_path.name}: items have no text")

    features: dict[str, FeatureSet] = {}
    inputs = [file(s) for s in ("train.inter", "valid.inter", "test.inter", "item2index", "user2index")]
    if text_path.is_file():
        inputs.append(text_path)
    for spec in RELEASE_FEATURES:
        feature_path = file(spec.suffix)
        if not feature_path.is_file():
            if spec.name != "text_aug":
                notes.append(f"no {feature_path.name}: no '{spec.name}' feature set")
            continue
        inputs.append(feature_path)
        raw_values = read_feature_file(feature_path, n_items, dim, item_raw_id)
        values = np.zeros((n_items + 1, dim), dtype=np.float32)
        values[1:] = raw_values
        present = np.zeros(n_items + 1, dtype=bool)
        present[1:] = raw_values.any(axis=1)
        missing = int(n_items - present[1:].sum())
        if missing:
            notes.append(f"{feature_path.name}: {missing} all-zero row(s) recorded as missing '{spec.name}' features")
        features[spec.name] = FeatureSet(
            values=values,
            present=present,
            modality=spec.modality,
            encoder=encoders.get(spec.name, spec.default_encoder),
            extra={"source_file": feature_path.name, "missing_rows": missing},
        )

    splits = {
        split: Examples.from_lists(
            r.users, [[i + 1 for i in h] for h in r.histories], [t + 1 for t in r.targets]
        )
        for split, r in rows.items()
    }
    return DomainTables(
        name=out_name,
        source={
            "type": "release",
            "path": str(folder.resolve()),
            "name": name,
            "files": {p.name: sha256_of(p) for p in inputs},
        },
        protocol={
            "split": "leave-one-out (as released)",
            "max_len": max(RELEASE_MAX_LEN, longest),
            "longest_history": longest,
            "filters": "as released",
        },
        item_raw_id=item_raw_id,
        item_text=item_text,
        item_image=[None] * n_items,
        item_domain=[name] * n_items,
        user_raw_id=user_raw_id,
        sequences=[s + 1 for s in release_sequences],
        splits=splits,
        features=features,
        notes=notes,
    )


def prepare_release(
    path: str | os.PathLike,
    name: str | None = None,
    out_name: str | None = None,
    out: str | os.PathLike | None = None,
    dim: int = DEFAULT_DIM,
    encoders: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Import a release folder and write it as the processed domain ``<out>/<out_name>``."""
    root = Path(out) if out is not None else default_data_dir()
    target = root / (out_name or name or infer_release_name(Path(path)))
    if target.exists() and not overwrite:  # fail before the import, not after it
        raise FileExistsError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it")
    tables = import_release(path, name=name, out_name=out_name, dim=dim, encoders=encoders)
    return write_domain(tables, root / tables.name, overwrite=overwrite)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _write_lines(path: Path, lines: Iterator[str]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line)
    os.replace(tmp, path)


def _inter_lines(examples: Examples) -> Iterator[str]:
    yield "\t".join(INTER_HEADER) + "\n"
    users, targets = examples.user_id, examples.target - 1
    values, offsets = examples.history_values - 1, examples.history_offsets
    for r in range(len(examples)):
        history = " ".join(map(str, values[offsets[r] : offsets[r + 1]].tolist()))
        yield f"{int(users[r])}\t{history}\t{int(targets[r])}\n"


def export_release(
    domain: Domain | str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a processed domain back in the UniSRec/MISSRec release format.

    Writes ``<name>.train/.valid/.test.inter`` (rows in stored order), ``.item2index``,
    ``.user2index``, ``.text`` (only if some item has text) and ``.feat1CLS`` / ``.feat3CLS`` /
    ``.feat2CLS`` for the feature sets ``text`` / ``image`` / ``text_aug`` (rows 1..N; rows of
    items without the feature are zero). Importing a release and exporting it reproduces its
    ``.inter`` files and feature bytes.

    Args:
        domain: a loaded ``Domain``, or a domain name / folder (loaded with ``load_domain``).
        out_dir: folder to write into (created if needed).
        name: the ``<Name>`` prefix of the written files.
        data_dir: where to look the domain up when ``domain`` is a name.
        overwrite: replace existing files of the same names.
    Returns:
        the written files.
    """
    if not isinstance(domain, Domain):
        domain = load_domain(domain, data_dir=data_dir)
    if "members" in domain.manifest or domain.manifest.get("source", {}).get("type") == "mixture":
        raise ValueError(f"{domain.name} is a mixture of domains; export its members one by one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_text = any(t is not None for t in domain.item_text)
    planned = [f"{name}.{s}.inter" for s in SPLITS] + [f"{name}.item2index", f"{name}.user2index"]
    planned += [f"{name}.text"] if has_text else []
    planned += [f"{name}.{spec.suffix}" for spec in RELEASE_FEATURES if spec.name in domain.features]
    clashes = [p for p in planned if (out / p).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{out}: {', '.join(clashes)} already exist; pass overwrite=True (or --overwrite) to replace them")

    users_path = domain.path / "users.parquet"
    user_raw_id = pq.read_table(users_path, columns=["raw_id"]).column("raw_id").to_pylist()
    if len(user_raw_id) != domain.num_users:
        raise DataFormatError(f"{users_path}: {len(user_raw_id)} rows, expected {domain.num_users} users")

    written: list[Path] = []
    for split in SPLITS:
        path = out / f"{name}.{split}.inter"
        _write_lines(path, _inter_lines(domain.splits[split]))
        written.append(path)
    for suffix, raw_ids in (("item2index", domain.item_raw_id), ("user2index", user_raw_id)):
        path = out / f"{name}.{suffix}"
        _write_lines(path, (f"{raw}\t{index}\n" for index, raw in enumerate(raw_ids)))
        written.append(path)
    if has_text:
        path = out / f"{name}.text"
        _write_lines(
            path,
            iter(
                ["\t".join(TEXT_HEADER) + "\n"]
                + [f"{raw}\t{text}\n" for raw, text in zip(domain.item_raw_id, domain.item_text) if text is not None]
            ),
        )
        written.append(path)
    for spec in RELEASE_FEATURES:
        feature = domain.features.get(spec.name)
        if feature is None:
            continue
        rows = np.array(feature.values[1:], dtype="<f4", copy=True)
        # Items without the feature must be zero rows (the format's "missing"); keep -0.0 rows as they are.
        stray = ~np.asarray(feature.present[1:], dtype=bool) & rows.any(axis=1)
        rows[stray] = 0
        path = out / f"{name}.{spec.suffix}"
        tmp = path.with_name(path.name + ".partial")
        rows.tofile(tmp)
        os.replace(tmp, path)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cmd_prepare(args: argparse.Namespace) -> int:
    encoders = {
        key: value
        for key, value in (("text", args.encoder_text), ("image", args.encoder_image), ("text_aug", args.encoder_text_aug))
        if value
    }
    folder = prepare_release(
        args.path,
        name=args.name,
        out_name=args.out_name,
        out=args.data_dir,
        dim=args.dim,
        encoders=encoders,
        overwrite=args.overwrite,
    )
    print(load_domain(folder).describe())
    print(f"written to {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare release``."""
    parser = subparsers.add_parser(
        "release",
        help="import a UniSRec/MISSRec release folder (.inter, .item2index, .featNCLS)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--path", required=True, type=Path, help="the release folder")
    parser.add_argument("--name", default=None, help="the <Name> prefix of its files (default: inferred from <Name>.train.inter)")
    parser.add_argument("--out-name", default=None, help="name of the processed domain (default: --name)")
    add_data_dir(parser, "write", old="--out")
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM, help=f"feature dimension of the .featNCLS files (default {DEFAULT_DIM})")
    for spec in RELEASE_FEATURES:
        parser.add_argument(
            f"--encoder-{spec.name.replace('_', '-')}",
            default=None,
            help=f"encoder to record for .{spec.suffix} (default: {spec.default_encoder!r})",
        )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing processed domain of that name")
    parser.set_defaults(func=_cmd_prepare)
    return parser


def _cmd_export(args: argparse.Namespace) -> int:
    if args.domain_arg is not None and args.domain is not None and args.domain_arg != args.domain:
        raise ValueError(f"two domains given ({args.domain_arg!r} and --domain {args.domain!r}); give one")
    args.domain = args.domain or args.domain_arg
    if args.domain is None:
        raise ValueError("name the domain to export: mmseqrec export release --domain NAME --output DIR")
    require_output(args, "mmseqrec export release")
    written = export_release(args.domain, args.output, args.name or Path(str(args.domain)).name, data_dir=args.data_dir, overwrite=args.overwrite)
    for path in written:
        print(path)
    return 0


def register_export(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec export release --domain NAME --output DIR``."""
    parser = subparsers.add_parser("release", help="write a prepared domain in the UniSRec/MISSRec release format")
    parser.add_argument("domain_arg", nargs="?", default=None, metavar="DOMAIN", help="the domain (same as --domain)")
    parser.add_argument("--domain", default=None, help="domain name (looked up in --data-dir) or folder")
    add_output(parser, "folder to write the release files into", required=True, old="--out")
    parser.add_argument("--name", default=None, help="<Name> prefix of the written files (default: the domain name)")
    add_data_dir(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=_cmd_export)
    return parser
