"""Tiny raw inputs in the published formats, written into a test's tmp_path.

``write_release`` writes a UniSRec/MISSRec release folder, ``write_lcrec`` an LC-Rec style JSON
folder. Both return what they wrote so tests can compare an import against it. Import these
helpers from any test module (``from fixtures import write_release``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

#: Release indices (0-based) of each user's chronological sequence.
TINY_SEQUENCES: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4),
    (5, 0, 2, 1),
    (3, 4, 5, 6, 0, 1),
)
TINY_ITEMS = 7
TINY_DIM = 4


@dataclass
class TinyRelease:
    folder: Path
    name: str
    sequences: list[list[int]]
    n_items: int
    dim: int
    text: np.ndarray  # (n_items, dim) float32 as written to .feat1CLS
    image: np.ndarray  # (n_items, dim) float32 as written to .feat3CLS
    texts: dict[str, str]  # raw id -> text, as written to .text
    rows: dict[str, list[tuple[int, list[int], int]]]  # split -> (user, history, target) in file order

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.name}.{suffix}"


def release_rows(sequences: Sequence[Sequence[int]], max_len: int = 50) -> dict[str, list[tuple[int, list[int], int]]]:
    """Leave-one-out rows as UniSRec writes them (train rows per user from the last target backwards)."""
    rows: dict[str, list[tuple[int, list[int], int]]] = {"train": [], "valid": [], "test": []}
    for user, seq in enumerate(sequences):
        n = len(seq)
        for t in range(n - 3, 0, -1):
            rows["train"].append((user, list(seq[max(0, t - max_len) : t]), seq[t]))
        rows["valid"].append((user, list(seq[max(0, n - 2 - max_len) : n - 2]), seq[n - 2]))
        rows["test"].append((user, list(seq[max(0, n - 1 - max_len) : n - 1]), seq[n - 1]))
    return rows


def write_inter(path: Path, rows: Sequence[tuple[int, Sequence[int], int]]) -> None:
    """Write one ``.inter`` file with its header."""
    lines = ["user_id:token\titem_id_list:token_seq\titem_id:token"]
    lines += [f"{u}\t{' '.join(map(str, h))}\t{t}" for u, h, t in rows]
    path.write_text("\n".join(lines) + "\n")


def write_release(
    folder: Path,
    name: str = "Tiny",
    sequences: Sequence[Sequence[int]] = TINY_SEQUENCES,
    n_items: int = TINY_ITEMS,
    dim: int = TINY_DIM,
    max_len: int = 50,
    missing_image_rows: Sequence[int] = (6,),
    text_items: Sequence[int] | None = None,
    with_text_aug: bool = False,
    seed: int = 0,
) -> TinyRelease:
    """Write a small release folder.

    Items are ``I0..I{n-1}``, users ``U0..``; ``missing_image_rows`` get all-zero image rows
    (the format's "missing"); ``text_items`` (default: all but the last item) get a text row.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = release_rows(sequences, max_len)
    for split, split_rows in rows.items():
        write_inter(folder / f"{name}.{split}.inter", split_rows)
    (folder / f"{name}.item2index").write_text("".join(f"I{i}\t{i}\n" for i in range(n_items)))
    (folder / f"{name}.user2index").write_text("".join(f"U{u}\t{u}\n" for u in range(len(sequences))))
    if text_items is None:
        text_items = range(n_items - 1)
    texts = {f"I{i}": f"Item {i} title. Category {i % 3}. Brand{i}." for i in text_items}
    (folder / f"{name}.text").write_text(
        "item_id:token\ttext:token_seq\n" + "".join(f"{raw}\t{text}\n" for raw, text in texts.items())
    )
    text = rng.standard_normal((n_items, dim)).astype("<f4")
    image = rng.standard_normal((n_items, dim)).astype("<f4")
    image[list(missing_image_rows)] = 0
    text.tofile(folder / f"{name}.feat1CLS")
    image.tofile(folder / f"{name}.feat3CLS")
    if with_text_aug:
        rng.standard_normal((n_items, dim)).astype("<f4").tofile(folder / f"{name}.feat2CLS")
    return TinyRelease(folder, name, [list(s) for s in sequences], n_items, dim, text, image, texts, rows)


@dataclass
class TinyLcrec:
    folder: Path
    name: str
    sequences: dict[str, list[int]]
    items: dict[str, dict] | None


TINY_LCREC_ITEMS: dict[str, dict] = {
    "0": {"title": "Stapler", "description": "Staples paper.", "brand": "Acme", "categories": "Office, Staplers"},
    "1": {"title": " Pen ", "description": "", "brand": "", "categories": ["Office", "Writing"]},
    "2": {"title": "Paper.", "description": "A4", "brand": "Papery", "categories": ""},
    "3": {"title": "", "description": "", "brand": "", "categories": ""},
    # item 4 has no metadata at all
}


def write_lcrec(
    folder: Path,
    name: str = "Tiny",
    sequences: Mapping[str, Sequence[int]] | None = None,
    items: Mapping[str, dict] | None = TINY_LCREC_ITEMS,
) -> TinyLcrec:
    """Write ``<name>.inter.json`` (and ``<name>.item.json`` unless ``items`` is None)."""
    folder.mkdir(parents=True, exist_ok=True)
    if sequences is None:
        sequences = {"0": [0, 1, 2, 3], "1": [4, 0, 1], "2": [2, 3, 4, 0, 1]}
    # Malformed values (dicts, strings) are written as given, for the validation tests.
    seqs = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in sequences.items()}
    (folder / f"{name}.inter.json").write_text(json.dumps(seqs, indent=4))
    if items is not None:
        (folder / f"{name}.item.json").write_text(json.dumps(dict(items), indent=4))
    return TinyLcrec(folder, name, seqs, dict(items) if items is not None else None)
