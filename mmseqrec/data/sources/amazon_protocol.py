"""The UniSRec preprocessing protocol for Amazon review data, shared by the 2018 and 2023 importers.

Both importers read their raw files into ``RatingRows`` (one row per rating, in raw-file order)
and a mapping from item id to the metadata fields the protocol uses, then call
``build_domain``. The steps (spec ``unisrec-and-amazon-data.md`` section 1):

1. Exact duplicate rows ``(user, item, rating, timestamp)`` collapse into one. The same
   user-item pair at another time, or with another rating, stays as a second interaction.
2. Interactions whose item has no metadata record are dropped (once, before the k-core). An
   item whose record has no title still passes.
3. Iterative k-core (5 for users and items by default), counting interaction rows.
4. Each user's interactions are sorted by timestamp. **Ties keep raw-file order** (the row that
   comes first in the ratings file comes first in the sequence). The reference code breaks ties
   by Python's randomised set order, so its indices are not reproducible; ours are.
5. Ids: users are numbered 0.. in the order of their first surviving row in the raw file;
   items are numbered 1..N (0 is padding) in order of first appearance when walking users in
   that order through their sorted sequences, so item 1 is the first item of user 0.
6. Item text: the fields title, category, brand (in that order; the 2023 importer names its
   equivalents), each cleaned by ``clean_field`` and followed by one space, exactly as UniSRec
   writes ``<D>.text`` (the result ends with a space). An item whose record has none of the
   fields, or whose fields hold no letter or digit (UniSRec would write ``". . "``), gets no
   text (None), so that its text is masked rather than encoded from punctuation.
7. Chronological leave-one-out with histories cut to their last 50 items
   (``mmseqrec.data.split.leave_one_out``).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmseqrec.data.filters import iterative_kcore
from mmseqrec.data.format import DataFormatError, DomainTables
from mmseqrec.data.split import leave_one_out

DEFAULT_K = 5
DEFAULT_MAX_LEN = 50
#: A cleaned field this long or longer is replaced by the empty string (UniSRec's rule).
MAX_FIELD_CHARS = 2000
#: Characters the cleaning deletes outright.
DELETED_CHARS = str.maketrans("", "", '"\n\r')
TIE_BREAK = "timestamp, then raw-file order (the earlier row in the ratings file comes first)"
USER_ORDER = "users numbered 0.. by their first surviving row in the raw ratings file"
ITEM_ORDER = "items numbered 1..N by first appearance walking users in order through their sorted sequences"

#: UniSRec / KDD'22 Table 1 counts (users, items, interactions) of the Amazon 2018 domains; the
#: filters do not depend on tie order, so a faithful run on the same raw files reproduces them.
#: Office is 87,346 users (the paper prints 87,436; the released logs confirm 87,346).
PAPER_COUNTS_2018: dict[str, tuple[int, int, int]] = {
    "Food": (115_349, 39_670, 1_027_413),
    "CDs": (94_010, 64_439, 1_118_563),
    "Kindle": (138_436, 98_111, 2_204_596),
    "Movies": (281_700, 59_203, 3_226_731),
    "Home": (731_913, 185_552, 6_451_926),
    "Scientific": (8_442, 4_385, 59_427),
    "Pantry": (13_101, 4_898, 126_962),
    "Instruments": (24_962, 9_964, 208_926),
    "Arts": (45_486, 21_019, 395_150),
    "Office": (87_346, 25_986, 684_837),
}


# --------------------------------------------------------------------------------------------
# Item text
# --------------------------------------------------------------------------------------------


def clean_field(value: Any) -> str:
    """One metadata value cleaned as UniSRec does it.

    A list is joined with single spaces, a dict becomes its Python ``str``; HTML entities are
    unescaped; double quotes, ``\\n`` and ``\\r`` are deleted (tabs stay); trailing periods are
    replaced by exactly one; a result of ``MAX_FIELD_CHARS`` characters or more becomes ``""``.
    """
    if isinstance(value, (list, tuple)):
        text = " ".join(str(v) for v in value)
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    text = html.unescape(text).translate(DELETED_CHARS)
    text = text.rstrip(".") + "."
    return "" if len(text) >= MAX_FIELD_CHARS else text


def item_text(record: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """The item text from ``fields`` of one metadata record; None when none of them is present.

    A field that is absent or null is skipped. Every present field contributes its cleaned value
    followed by one space (so an over-long field contributes a lone space), as in UniSRec. A
    result without a single letter or digit is None too.
    """
    parts = [clean_field(record[name]) + " " for name in fields if record.get(name) is not None]
    text = "".join(parts)
    # Real records often carry every field but empty ([] and ""): ". . " says nothing about the item.
    return text if any(ch.isalnum() for ch in text) else None


# --------------------------------------------------------------------------------------------
# Ratings
# --------------------------------------------------------------------------------------------


@dataclass
class RatingRows:
    """All rating rows of a raw file, in file order, with users and items as dense codes.

    ``user_ids[user[r]]`` is the raw user id of row r (likewise for items); codes follow the
    order of first appearance in the file. The distinct ids stay Arrow string arrays: a large
    category has millions of users, and only the survivors become Python strings.
    """

    user_ids: pa.Array
    item_ids: pa.Array
    user: np.ndarray  # int64 (R,)
    item: np.ndarray  # int64 (R,)
    rating: np.ndarray  # float64 (R,)
    timestamp: np.ndarray  # int64 (R,)

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @classmethod
    def from_arrow(cls, user: pa.ChunkedArray | pa.Array, item: pa.ChunkedArray | pa.Array,
                   rating: pa.ChunkedArray | pa.Array, timestamp: pa.ChunkedArray | pa.Array) -> RatingRows:
        """Build from four Arrow columns (strings, strings, numbers, integers) without nulls."""
        user_codes, user_ids = _dense(user)
        item_codes, item_ids = _dense(item)
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            user=user_codes,
            item=item_codes,
            rating=_numpy(rating, np.float64),
            timestamp=_numpy(timestamp, np.int64),
        )


def _numpy(column: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _dense(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes in order of first appearance, and the distinct values."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=pa.string())
    encoded = pc.dictionary_encode(column.cast(pa.string()))
    return _numpy(encoded.indices, np.int64), encoded.dictionary


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


@dataclass
class ItemRecord:
    """What the protocol keeps of one item's metadata."""

    text: str | None
    image: str | None


@dataclass
class ProtocolResult:
    """Sequences and ids after the protocol, plus counts of every step."""

    sequences: list[np.ndarray]  # per user, item ids 1..N
    user_raw_id: list[str]
    item_raw_id: list[str]
    steps: dict[str, int] = field(default_factory=dict)  # interaction rows after each step
    step_users: dict[str, int] = field(default_factory=dict)  # distinct users after each step
    step_items: dict[str, int] = field(default_factory=dict)  # distinct items after each step


def duplicate_rows(rows: RatingRows) -> np.ndarray:
    """True for every row that repeats an earlier row exactly (user, item, rating, timestamp)."""
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=bool)
    position = np.arange(n)
    order = np.lexsort((position, rows.timestamp, rows.rating, rows.item, rows.user))
    u, i, r, t = (a[order] for a in (rows.user, rows.item, rows.rating, rows.timestamp))
    same = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (r[1:] == r[:-1]) & (t[1:] == t[:-1])
    repeated = np.zeros(n, dtype=bool)
    repeated[order[1:][same]] = True  # within a group the earliest row sorts first and is kept
    return repeated


def apply_protocol(rows: RatingRows, has_metadata: np.ndarray, k_user: int = DEFAULT_K, k_item: int = DEFAULT_K) -> ProtocolResult:
    """Steps 1-5 of the module docstring on ``rows``.

    Args:
        rows: every rating row, in raw-file order.
        has_metadata: (len(rows.item_ids),) bool, whether each item code has a metadata record.
        k_user, k_item: the k-core thresholds.
    """
    steps: dict[str, int] = {}
    step_users: dict[str, int] = {}
    step_items: dict[str, int] = {}

    def count_step(step: str, position: np.ndarray) -> None:
        steps[step] = int(position.size)
        # Codes are dense (0..len(ids)-1), so counting is linear; no sort of millions of rows.
        step_users[step] = int(np.count_nonzero(np.bincount(rows.user[position], minlength=len(rows.user_ids))))
        step_items[step] = int(np.count_nonzero(np.bincount(rows.item[position], minlength=len(rows.item_ids))))

    count_step("raw_rows", np.arange(len(rows)))
    keep = ~duplicate_rows(rows)
    count_step("after_dedup", np.flatnonzero(keep))
    keep &= np.asarray(has_metadata, dtype=bool)[rows.item]
    position = np.flatnonzero(keep)
    count_step("after_metadata_filter", position)
    core = iterative_kcore(rows.user[position], rows.item[position], k_user=k_user, k_item=k_item)
    position = position[core]
    count_step("after_kcore", position)

    user, item, timestamp = rows.user[position], rows.item[position], rows.timestamp[position]
    # Users in order of their first surviving row (``position`` is ascending = file order).
    first_row_users, first_index = np.unique(user, return_index=True)
    user_rank = np.full(len(rows.user_ids), -1, dtype=np.int64)
    user_rank[first_row_users] = np.argsort(np.argsort(first_index, kind="stable"), kind="stable")
    order = np.lexsort((position, timestamp, user_rank[user]))
    user, item = user_rank[user[order]], item[order]

    kept_items, first_seen = np.unique(item, return_index=True)
    by_appearance = kept_items[np.argsort(first_seen, kind="stable")]
    new_id = np.zeros(len(rows.item_ids), dtype=np.int64)
    new_id[by_appearance] = np.arange(1, by_appearance.size + 1)
    lengths = np.bincount(user, minlength=first_row_users.size)
    sequences = np.split(new_id[item], np.cumsum(lengths)[:-1]) if lengths.size else []

    users_in_order = first_row_users[np.argsort(first_index, kind="stable")]
    return ProtocolResult(
        sequences=list(sequences),
        user_raw_id=rows.user_ids.take(pa.array(users_in_order)).to_pylist(),
        item_raw_id=rows.item_ids.take(pa.array(by_appearance)).to_pylist(),
        steps=steps,
        step_users=step_users,
        step_items=step_items,
    )


def check_thresholds(k_user: int, k_item: int, max_len: int) -> None:
    if k_user < 3:
        raise ValueError(f"the user threshold must be at least 3 (leave-one-out needs 3 interactions per user), got {k_user}")
    if k_item < 1:
        raise ValueError(f"the item threshold must be at least 1, got {k_item}")
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")


def build_domain(
    name: str,
    rows: RatingRows,
    metadata_ids: pa.Array | Collection[str],
    records_for: Callable[[list[str]], Mapping[str, ItemRecord]],
    source: dict,
    text_fields: Sequence[str],
    k_user: int = DEFAULT_K,
    k_item: int = DEFAULT_K,
    max_len: int = DEFAULT_MAX_LEN,
    notes: Sequence[str] = (),
    where: str = "the ratings",
) -> DomainTables:
    """Run the protocol and return the processed domain's tables (nothing is written).

    Args:
        name: the processed domain's name (also each item's domain tag).
        rows: the rating rows, in raw-file order.
        metadata_ids: the raw ids of every item that has a metadata record (only those pass).
        records_for: given the raw ids of the items that survive, their metadata records (the
            2023 importer reads them only then; with a ready dict, pass ``lambda ids: records``).
        source: the manifest's ``source`` entry (release, category, files and checksums).
        text_fields: the metadata fields the text was built from, for the manifest.
        where: how to name the input in an error message.
    """
    check_thresholds(k_user, k_item, max_len)
    if len(rows) == 0:
        raise DataFormatError(f"{where}: no rating rows")
    if not isinstance(metadata_ids, (pa.Array, pa.ChunkedArray)):
        metadata_ids = pa.array(list(metadata_ids), type=pa.string())
    if isinstance(metadata_ids, pa.ChunkedArray):
        metadata_ids = metadata_ids.combine_chunks()
    has_metadata = _numpy(pc.is_in(rows.item_ids, value_set=metadata_ids.cast(pa.string())), bool)
    result = apply_protocol(rows, has_metadata, k_user, k_item)
    steps = result.steps
    if not result.sequences:
        raise DataFormatError(
            f"{where}: nothing is left after the filters ({steps['raw_rows']:,} rows, {steps['after_dedup']:,} after "
            f"removing exact duplicates, {steps['after_metadata_filter']:,} with item metadata, 0 in the "
            f"{k_user}/{k_item}-core)"
        )
    records = records_for(result.item_raw_id)
    item_records = [records[raw] for raw in result.item_raw_id]
    n_items = len(item_records)
    item_counts = {
        "items": n_items,
        "with_text": sum(r.text is not None for r in item_records),
        "with_image_url": sum(r.image is not None for r in item_records),
    }

    def who(step: str) -> str:
        return f"({result.step_users[step]:,} users, {result.step_items[step]:,} items)"

    notes = list(notes)
    notes.append(
        f"{steps['raw_rows']:,} rating rows {who('raw_rows')}; {steps['after_dedup']:,} after collapsing exact "
        f"duplicates {who('after_dedup')}; {steps['after_metadata_filter']:,} whose item has metadata "
        f"{who('after_metadata_filter')}; {steps['after_kcore']:,} in the {k_user}/{k_item}-core {who('after_kcore')}"
    )
    # Always stated, not only when something is missing: a count of 0 is how a wrong field name shows.
    notes.append(
        f"{n_items:,} items: {item_counts['with_text']:,} with text (from {', '.join(text_fields)}), "
        f"{item_counts['with_image_url']:,} with an image URL"
    )
    return DomainTables(
        name=name,
        source=source,
        protocol={
            "reference": "UniSRec (KDD'22) Amazon preprocessing, as specified in unisrec-and-amazon-data.md section 1",
            "split": "leave-one-out",
            "max_len": max_len,
            "filters": {
                "dedup": "exact duplicate rows (user, item, rating, timestamp) collapse into one",
                "metadata": "interactions whose item has no metadata record are dropped (before the k-core)",
                "iterative_kcore": {"k_user": k_user, "k_item": k_item, "counts": "interaction rows"},
            },
            "tie_break": TIE_BREAK,
            "user_order": USER_ORDER,
            "item_order": ITEM_ORDER,
            "text": {
                "fields": list(text_fields),
                "cleaning": (
                    "lists joined by spaces, dicts as str; HTML entities unescaped; double quotes, \\n and \\r deleted; "
                    f"trailing periods replaced by one; a field of {MAX_FIELD_CHARS}+ characters becomes empty; "
                    "each field followed by one space; a text without a letter or digit counts as no text"
                ),
            },
            "steps": steps,
            "step_users": result.step_users,
            "step_items": result.step_items,
            "item_metadata": item_counts,
        },
        item_raw_id=result.item_raw_id,
        item_text=[r.text for r in item_records],
        item_image=[r.image for r in item_records],
        item_domain=[name] * n_items,
        user_raw_id=result.user_raw_id,
        sequences=result.sequences,
        splits=leave_one_out(result.sequences, max_len=max_len),
        notes=notes,
    )


def compare_with_paper(short_name: str | None, tables: DomainTables) -> str | None:
    """A line comparing the counts with UniSRec's Table 1, for the ten 2018 domains (else None)."""
    if short_name not in PAPER_COUNTS_2018:
        return None
    users, items, inters = PAPER_COUNTS_2018[short_name]
    ours = (tables.num_users, tables.num_items, int(sum(len(s) for s in tables.sequences)))
    if ours == (users, items, inters):
        return f"counts match UniSRec Table 1 for {short_name}: {users:,} users, {items:,} items, {inters:,} interactions"
    return (
        f"counts differ from UniSRec Table 1 for {short_name}: ours {ours[0]:,} users / {ours[1]:,} items / "
        f"{ours[2]:,} interactions, paper {users:,} / {items:,} / {inters:,} (different raw files?)"
    )


def print_prepared(folder) -> None:
    """What ``mmseqrec prepare amazon2018|amazon2023`` prints after writing a domain."""
    from mmseqrec.data.loading import load_domain

    domain = load_domain(folder)
    print(domain.describe())
    for note in domain.manifest.get("notes", []):
        print(f"  {note}")
    print(f"written to {folder}")
