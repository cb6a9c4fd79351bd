"""Small raw files in the exact formats of the Amazon Reviews 2018 and 2023 releases.

Both releases get the same interactions (``RATINGS``), chosen so that every rule of the protocol
changes the outcome:

- item X has no metadata: its 7 raters would keep it in the 5-core, and user Y (A B C D X)
  survives only if the metadata filter ran after the k-core;
- D1 and C1 each have one exact duplicate row; D1 keeps 4 interactions after the dedup;
- R rates A twice at different times (both count), C2 rates F twice on the same day with
  different ratings (both count, tie in file order), C3 rates C and B on the same day with C's
  row first in the file;
- the k-core needs four removal passes: item G (4 raters) -> user W1 -> item H -> user Z;
- Hv has 54 interactions, so histories are cut to 50;
- C4's first row in the file is its X rating, which the filter drops, so C4 is numbered by its
  first surviving row (after C5).

Hand-computed outcome (users in order of their first surviving row; items numbered by first
appearance): R=0, C3=1, C1=2, C2=3, Hv=4, C5=5, C4=6, C6=7; A=1, B=2, C=3, D=4, E=5, F=6.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

DAY = 86_400

#: (item, user, rating, day) in raw-file order.
RATINGS: list[tuple[str, str, float, int]] = [("X", "C4", 5.0, 7)]


def _user(user: str, items: str, days: list[int] | None = None, rating: float = 5.0) -> None:
    for position, item in enumerate(items.split()):
        RATINGS.append((item, user, rating, days[position] if days else position + 1))


_user("Z", "H A B C D")
_user("R", "A B C A D")
_user("W2", "G A B C")
_user("C3", "A C B D E F H X", days=[1, 2, 2, 3, 4, 5, 6, 7])
_user("C1", "F E D C B A", days=[1, 2, 3, 4, 5, 6])
RATINGS.append(("A", "C1", 5.0, 6))  # an exact duplicate
_user("C1", "H X", days=[7, 8])
_user("Y", "A B C D X")
_user("W1", "A B E G H")
_user("C2", "A B C D E F", days=[1, 2, 3, 4, 5, 6])
RATINGS.append(("F", "C2", 4.0, 6))  # same day, another rating: not a duplicate
_user("C2", "H X", days=[7, 8])
_user("W3", "G A B C")
_user("Hv", " ".join(["A B C D E F"] * 9))
_user("D1", "A B C D")
RATINGS.append(("A", "D1", 5.0, 1))  # an exact duplicate of D1's first row
_user("C5", "A B C D E F X")
_user("W4", "G A B C")
_user("C4", "A B C D E F")
_user("C6", "A B C D E F X")

RAW_ROWS = len(RATINGS)  # 138
ROWS_AFTER_DEDUP = RAW_ROWS - 2
ROWS_WITH_METADATA = ROWS_AFTER_DEDUP - 7  # the 7 ratings of X
USERS = ["R", "C3", "C1", "C2", "Hv", "C5", "C4", "C6"]
ITEMS = ["A", "B", "C", "D", "E", "F"]
HEAVY = [1, 2, 3, 4, 5, 6] * 9
SEQUENCES = [
    [1, 2, 3, 1, 4],  # R
    [1, 3, 2, 4, 5, 6],  # C3: C before B on the tied day
    [6, 5, 4, 3, 2, 1],  # C1
    [1, 2, 3, 4, 5, 6, 6],  # C2
    HEAVY,  # Hv
    [1, 2, 3, 4, 5, 6],  # C5
    [1, 2, 3, 4, 5, 6],  # C4
    [1, 2, 3, 4, 5, 6],  # C6
]
INTERACTIONS = 96

LONG_TITLE = "T" * 1999  # 2000 characters with its period: dropped
NEAR_LIMIT_TITLE = "x" * 1998  # 1999 characters with its period: kept


# --------------------------------------------------------------------------------------------
# 2018: <Category>.csv and meta_<Category>.json.gz
# --------------------------------------------------------------------------------------------

#: What a record of the real per-category files carries besides asin, title, category, brand and
#: image (meta_Magazine_Subscriptions.json.gz: every record has every field, mostly empty).
REAL_2018_EMPTY_FIELDS: dict = {
    "tech1": "", "description": [], "fit": "", "also_buy": [], "tech2": "", "feature": [], "rank": [],
    "also_view": [], "details": {}, "main_cat": "Office Products", "similar_item": "", "date": "", "price": "",
}
#: The start of an HTML tag cut before its ">": what the scrape left as the title of 3,153 of the
#: 3,385 records of the real Magazine_Subscriptions metadata.
MARKUP_TITLE = '<span class="a-size-medium a-color-secondary"'
#: A 38x50 thumbnail as the real ``image`` lists hold them, and the full-size URL it stands for.
THUMBNAIL = "https://images-na.ssl-images-amazon.com/images/I/51Iph04Jy3L._SX38_SY50_CR,0,0,38,50_.jpg"
FULL_SIZE = "https://images-na.ssl-images-amazon.com/images/I/51Iph04Jy3L.jpg"

#: Metadata lines in file order; a str is written as is (a Python-literal line). Image URLs come in
#: both spellings of the release: ``imageURL`` / ``imageURLHighRes`` (the complete metadata) and
#: ``image`` (the per-category files such as Magazine_Subscriptions).
META_2018: list[dict | str] = [
    {
        "asin": "A",
        "title": "Acme 500ml Beaker",
        "category": ["Industrial & Scientific", "Lab &amp; Scientific Products", "Beakers"],
        "brand": "Acme",
        "description": ["A beaker."],
        "also_buy": ["B"],
        "imageURL": ["http://img/A-small.jpg"],
        "imageURLHighRes": ["http://img/A-large.jpg"],
    },
    {"asin": "Q", "title": "Never rated"},
    {
        "asin": "B", "title": 'Pens &quot;Fine&quot; tip\n(12 pack)...', "brand": "", "imageURL": ["http://img/B.jpg"],
        "imageURLHighRes": [], "image": ["http://img/B-other.jpg"],  # imageURL comes before image
    },
    {"asin": "C", "title": LONG_TITLE, "category": ["Office Products"], "brand": "Papery."},
    # The shape of a real per-category record: every field present, images only under ``image``.
    {**REAL_2018_EMPTY_FIELDS, "asin": "D", "title": NEAR_LIMIT_TITLE, "brand": None, "image": [THUMBNAIL, "http://img/D-2.jpg"]},
    "{'asin': 'E', 'title': 'Eraser &lt;b&gt;Bold&lt;/b&gt;\\tTab', 'category': [], 'brand': {'name': 'Acme'}}",
    # Markup for a title and every other field empty: no text at all, no image.
    {**REAL_2018_EMPTY_FIELDS, "asin": "F", "title": MARKUP_TITLE, "category": [], "brand": "", "image": []},
    {"asin": "G", "title": "Glue"},
    {"asin": "F", "title": "Second record of F"},  # a repeat that differs: ignored all the same
    {"asin": "H", "title": "Highlighter"},
]
META_2018.append(dict(META_2018[0]))  # a repeat identical to the first record, as the real repeats are
TEXTS_2018 = [
    "Acme 500ml Beaker. Industrial & Scientific Lab & Scientific Products Beakers. Acme. ",
    "Pens Fine tip(12 pack). . ",
    " Office Products. Papery. ",
    NEAR_LIMIT_TITLE + ". ",
    "Eraser <b>Bold</b>\tTab. . {'name': 'Acme'}. ",
    None,
]
IMAGES_2018 = ["http://img/A-large.jpg", "http://img/B.jpg", None, FULL_SIZE, None, None]


def csv_lines(ratings: list[tuple[str, str, float, int]] = RATINGS) -> list[str]:
    return [f"{item},{user},{rating:.1f},{day * DAY}" for item, user, rating, day in ratings]


def meta_2018_lines(records: list[dict | str] = META_2018) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


def write_amazon2018(folder: Path, category: str = "Office_Products", csv: list[str] | None = None,
                     meta: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``<category>.csv`` and ``meta_<category>.json.gz`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings = folder / f"{category}.csv"
    ratings.write_text("\n".join(csv if csv is not None else csv_lines()) + "\n")
    metadata = folder / f"meta_{category}.json.gz"
    with gzip.open(metadata, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(meta if meta is not None else meta_2018_lines()) + "\n\n")
    return ratings, metadata


# --------------------------------------------------------------------------------------------
# 2023: <Category>.jsonl and meta_<Category>.jsonl (the files behind raw_review_* / raw_meta_*)
# --------------------------------------------------------------------------------------------


def review_2023(item: str, user: str, rating: float, day: int, asin: str | None = None) -> dict:
    return {
        "rating": rating,
        "title": "Review title",
        "text": "Review text.",
        "images": [],
        "asin": asin or item,
        "parent_asin": item,
        "user_id": user,
        "timestamp": day * DAY * 1000,  # milliseconds in 2023
        "helpful_vote": 0,
        "verified_purchase": True,
    }


def reviews_2023() -> list[dict]:
    reviews = [review_2023(*row) for row in RATINGS]
    # R's second A is a colour variant: another asin, the same parent_asin (the item).
    second_a = [i for i, (item, user, _, _) in enumerate(RATINGS) if (item, user) == ("A", "R")][1]
    reviews[second_a]["asin"] = "A-red"
    return reviews


def meta_2023(parent_asin: str, title: str | None, categories: list[str] | None, store: str | None,
              images: list[dict] | None = None) -> dict:
    return {
        "main_category": "Office Products",
        "title": title,
        "average_rating": 4.5,
        "rating_number": 10,
        "features": ["Feature."],
        "description": [],
        "price": None,
        "images": images or [],
        "videos": [],
        "store": store,
        "categories": categories,
        "details": {"Brand": store or "unknown"},
        "parent_asin": parent_asin,
        "bought_together": None,
    }


META_2023: list[dict] = [
    meta_2023(
        "A", "Acme 500ml Beaker", ["Industrial & Scientific", "Lab &amp; Scientific Products", "Beakers"], "Acme",
        images=[
            {"thumb": "http://img/A-thumb.jpg", "large": "http://img/A-side.jpg", "variant": "PT01", "hi_res": "http://img/A-side-hires.jpg"},
            {"thumb": "http://img/A-thumb.jpg", "large": "http://img/A-large.jpg", "variant": "MAIN", "hi_res": "http://img/A-hires.jpg"},
        ],
    ),
    meta_2023("Q", "Never rated", [], None),
    meta_2023(
        "B", 'Pens &quot;Fine&quot; tip\n(12 pack)...', [], None,
        images=[{"thumb": "http://img/B-thumb.jpg", "large": "http://img/B.jpg", "variant": "MAIN", "hi_res": None}],
    ),
    meta_2023("C", LONG_TITLE, ["Office Products"], "Papery."),
    meta_2023("D", NEAR_LIMIT_TITLE, [], None),
    meta_2023("E", "Eraser &lt;b&gt;Bold&lt;/b&gt;\tTab", ["Office"], "Acme"),
    meta_2023("F", None, None, None),
    meta_2023("G", "Glue", [], None),
    meta_2023("F", "Second record of F", [], None),
    meta_2023("H", "Highlighter", [], None),
]
TEXTS_2023 = [
    "Acme 500ml Beaker. Industrial & Scientific Lab & Scientific Products Beakers. Acme. ",
    "Pens Fine tip(12 pack). . ",
    " Office Products. Papery. ",
    NEAR_LIMIT_TITLE + ". . ",
    "Eraser <b>Bold</b>\tTab. Office. Acme. ",
    None,
]
IMAGES_2023 = ["http://img/A-hires.jpg", "http://img/B.jpg", None, None, None, None]


def write_jsonl(path: Path, records: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def write_amazon2023(folder: Path, category: str = "Office_Products", compress: bool = False) -> tuple[Path, Path]:
    """Write ``<category>.jsonl`` and ``meta_<category>.jsonl`` (``.gz`` when ``compress``)."""
    suffix = ".jsonl.gz" if compress else ".jsonl"
    reviews = write_jsonl(folder / f"{category}{suffix}", reviews_2023(), compress)
    meta = write_jsonl(folder / f"meta_{category}{suffix}", META_2023, compress)
    return reviews, meta
