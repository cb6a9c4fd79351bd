"""Importing LC-Rec style JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_lcrec

from mmseqrec.cli import main
from mmseqrec.data.loading import load_domain
from mmseqrec.data.sources.lcrec import import_lcrec, item_text, prepare_lcrec, register


def test_tiny_import(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw")
    tables = import_lcrec(lc.folder)
    assert tables.name == "Tiny"
    assert tables.num_users == 3 and tables.num_items == 5
    assert tables.user_raw_id == ["0", "1", "2"]
    assert tables.item_raw_id == ["0", "1", "2", "3", "4"]
    assert [s.tolist() for s in tables.sequences] == [[i + 1 for i in s] for s in lc.sequences.values()]
    assert tables.item_text == [
        "Stapler. Office, Staplers. Acme.",
        "Pen. Office Writing.",
        "Paper. Papery.",
        None,  # every field empty
        None,  # no metadata
    ]
    assert set(tables.item_domain) == {"Tiny"} and tables.item_image == [None] * 5
    # Leave-one-out: user 2 = [2, 3, 4, 0, 1] (ids +1).
    test = tables.splits["test"]
    assert test.history(2).tolist() == [3, 4, 5, 1] and int(test.target[2]) == 2
    valid = tables.splits["valid"]
    assert valid.history(2).tolist() == [3, 4, 5] and int(valid.target[2]) == 1
    assert tables.protocol == {"split": "leave-one-out", "max_len": 50, "filters": "as released"}


def test_users_are_ordered_by_integer_key(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"10": [0, 1, 2], "2": [2, 1, 0]}, items=None)
    tables = import_lcrec(lc.folder)
    assert tables.user_raw_id == ["2", "10"]
    assert tables.sequences[0].tolist() == [3, 2, 1]


def test_max_len_cuts_histories(tmp_path: Path) -> None:
    lc = write_lcrec(tmp_path / "raw", sequences={"0": [0, 1, 2, 3, 4, 0, 1]}, items=None)
    tables = import_lcrec(lc.folder, max_len=2)
    assert tables.splits["test"].history(0).tolist() == [5, 1]
    assert tables.protocol["max_len"] == 2


def test_item_text_composition() -> None:
    assert item_text({"title": "A", "categories": [["X", "Y"], "Z"], "brand": "B"}) == "A. X Y Z. B."
    assert item_text({"description": "only a description"}) is None
    assert item_text({"title": "  Ends with dot. ", "brand": None}) == "Ends with dot."


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lc = write_lcrec(tmp_path / "raw")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="source", required=True))
    args = parser.parse_args(["lcrec", "--path", str(lc.folder), "--data-dir", str(tmp_path / "p"), "--out-name", "T2", "--max-len", "3"])
    assert args.func(args) == 0
    assert "T2: 3 users, 5 items" in capsys.readouterr().out
    assert load_domain("T2", data_dir=tmp_path / "p").manifest["protocol"]["max_len"] == 3


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "name", "users", "items", "interactions"),
    [
        ("amazon2014-office", "Office", 4905, 2420, 53258),
        ("amazon2014-beauty-ids", "Beauty", 22363, 12101, 198502),
        ("amazon2014-grocery-ids", "Grocery", 14681, 8713, 151254),
    ],
)
def test_real_counts_match_the_readme(
    shared_data: Path, tmp_path: Path, folder: str, name: str, users: int, items: int, interactions: int
) -> None:
    raw = shared_data / folder
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent")
    domain = load_domain(prepare_lcrec(raw, out=tmp_path))
    counts = domain.manifest["counts"]
    assert domain.name == name
    assert (counts["users"], counts["items"], counts["interactions"]) == (users, items, interactions)
    assert len(domain.splits["test"]) == users and len(domain.splits["valid"]) == users
    assert len(domain.splits["train"]) == interactions - 3 * users
    if name == "Office":
        assert all(t is not None for t in domain.item_text)
        assert domain.item_text[0].startswith("VTECH CS6114 DECT 6.0 Cordless Phone") and domain.item_text[0].endswith(". VTech.")
    else:
        assert all(t is None for t in domain.item_text)


def test_real_games_titles_through_the_cli(shared_data: Path, tmp_path: Path) -> None:
    raw = shared_data / "amazon2018-games-text"
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent")
    assert main(["prepare", "lcrec", "--path", str(raw), "--name", "Games", "--data-dir", str(tmp_path)]) == 0
    domain = load_domain("Games", data_dir=tmp_path, features=[])
    counts = domain.manifest["counts"]
    users, items, interactions = 50_546, 16_859, 440_264  # the shared README's table
    assert (counts["users"], counts["items"], counts["interactions"]) == (users, items, interactions)
    assert len(domain.splits["test"]) == len(domain.splits["valid"]) == users
    assert len(domain.splits["train"]) == interactions - 3 * users
    assert int(np.diff(domain.sequence_offsets).max()) <= 50  # the source's sequences are capped at 50
    # Games.item.json holds titles only: every item's text is its title with a closing period.
    titles = json.loads((raw / "Games.item.json").read_text())
    assert all(t is not None for t in domain.item_text)
    assert domain.item_text[0] == "Fire Emblem: The Sacred Stones."
    assert all(text.rstrip(".") == titles[str(i)]["title"].strip().rstrip(".") for i, text in enumerate(domain.item_text))
