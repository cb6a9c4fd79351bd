"""New items without retraining: ``mmseqrec add-items`` encodes them with the domain's recorded
encoder (a random tiny open_clip model saved to a folder, so that it loads the same again),
inductive MISSRec and UniSRec rank them at once, ID-based models refuse, and the stored items
are written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_tables, write_tiny_clip
from tolerances import assert_close

import mmseqrec
from finetune.cli import main as finetune_main
from mmseqrec import added_items
from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.data.format import write_domain

pytest.importorskip("open_clip")
Image = pytest.importorskip("PIL.Image")

N_ITEMS = 20
SMALL = ["train.epochs=1", "train.batch_size=64", "model.hidden_size=16", "model.inner_size=16", "model.num_heads=2"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, image folder): a domain whose text and image features come from a saved tiny CLIP."""
    root = tmp_path_factory.mktemp("shop")
    tables = tiny_tables(n_users=40, n_items=N_ITEMS, name="Shop", features=False)
    tables.item_text = [f"product {i}, colour {['red', 'green', 'blue'][i % 3]}, size {i % 4}" for i in range(1, N_ITEMS + 1)]
    write_domain(tables, root / "data" / "Shop")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, N_ITEMS + 1):
        Image.fromarray(rng.integers(0, 256, size=(36, 36, 3), dtype=np.uint8)).save(images / f"I{i}.png")
    model = write_tiny_clip(root / "clip")
    code = mmseqrec_main(["extract", "--domain", "Shop", "--data-dir", str(root / "data"), "--model", model, "--pretrained", "none",
                          "--image-dir", str(images), "--device", "cpu", "--quiet"])
    assert code == 0
    return root / "data", images


@pytest.fixture(scope="module")
def runs(shop, tmp_path_factory) -> dict[str, Path]:
    data, _ = shop
    inductive, other = tmp_path_factory.mktemp("inductive"), tmp_path_factory.mktemp("other")
    assert finetune_main(["--domain", "Shop", "--data-dir", str(data), "--model", "missrec@scratch,unisrec@scratch", "--mode", "inductive",
                          "--output", str(inductive), "--quiet", *SMALL]) == 0
    assert finetune_main(["--domain", "Shop", "--data-dir", str(data), "--model", "sasrec,mostpop,missrec@scratch", "--output", str(other),
                          "--quiet", *SMALL]) == 0
    return {
        "missrec": inductive / "missrec-scratch-seed2020", "unisrec": inductive / "unisrec-scratch-seed2020",
        "sasrec": other / "sasrec-seed2020", "mostpop": other / "mostpop-seed2020", "missrec-transductive": other / "missrec-scratch-seed2020",
    }


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / run.name))


@pytest.mark.parametrize("name", ["missrec", "unisrec"])
def test_an_item_like_an_existing_one_ranks_right_next_to_it(name, runs, shop, tmp_path, capsys):
    data, images = shop
    run = _copy(runs[name], tmp_path)
    texts = mmseqrec.load(run, data_dir=data).domain.item_text
    items = tmp_path / "new.jsonl"
    items.write_text(
        json.dumps({"id": "NEW-5", "text": texts[4], "image": str(images / "I5.png")}) + "\n"
        + json.dumps({"id": "NEW-T", "text": "a brand new thing, colour red"}) + "\n"
    )
    code = mmseqrec_main(["add-items", "--run", str(run), "--items", str(items), "--data-dir", str(data), "--cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "added 2 item(s)" in capsys.readouterr().out
    assert (run / "added_items" / "CURRENT").is_file()

    recommender = mmseqrec.load(run, data_dir=data)
    assert recommender.num_items == N_ITEMS + 2 and recommender.item_id("NEW-5") == N_ITEMS + 1
    stored = added_items.read_added(run, recommender.domain)
    for feature, (values, present) in stored.features.items():  # the recorded encoder, run again
        assert present[0] and present[1] == (feature != "image")
        assert_close(values[0], recommender.domain.features[feature].values[5], f"{feature} of NEW-5")

    result = recommender.recommend([["I1", "I2", "I3"]], k=N_ITEMS + 2, exclude_seen=False)[0]
    assert "NEW-T" in result.items
    here, there = result.items.index("I5"), result.items.index("NEW-5")
    assert abs(here - there) == 1, result.items
    assert_close(np.array(result.scores[there]), np.array(result.scores[here]), "the twin's score")
    # in a history the twin reads like the original (MISSRec: the same interests too)
    assert_close(recommender.encode([["I1", "NEW-5"]]), recommender.encode([["I1", "I5"]]), "sequence vectors")

    # more items through the API, on top of the stored ones
    recommender.add_items([added_items.NewItem("NEW-9", text=texts[8], image=str(images / "I9.png"))])
    again = mmseqrec.load(run, data_dir=data)
    assert again.num_items == N_ITEMS + 3 and again.item_raw_ids[-3:] == ["NEW-5", "NEW-T", "NEW-9"]
    with pytest.raises(ValueError, match="already in the catalogue: NEW-9"):
        again.add_items([added_items.NewItem("NEW-9", text="x")])
    with pytest.raises(ValueError, match=r"NOTHING \(text: no text"):
        again.add_items([added_items.NewItem("NOTHING")], image_dir=images)
    assert mmseqrec.load(run, data_dir=data).num_items == N_ITEMS + 3  # a refused batch stores nothing


@pytest.mark.parametrize("name, reason", [
    ("sasrec", "ID embedding learned in training"),
    ("mostpop", "no interactions"),
    ("missrec-transductive", "transductive"),
])
def test_id_based_models_refuse_new_items(name, reason, runs, shop, tmp_path, capsys):
    data, _ = shop
    items = tmp_path / "new.csv"
    items.write_text("id,text\nNEW-1,a new thing\n")
    code = mmseqrec_main(["add-items", "--run", str(runs[name]), "--items", str(items), "--data-dir", str(data), "--cpu", "--quiet"])
    assert code == 2
    assert reason in capsys.readouterr().err
    assert not (runs[name] / "added_items").exists()


def test_items_files_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "A"}\n{"text": "no id"}\n')
    with pytest.raises(ValueError, match="item 1: 'id' must be a non-empty string"):
        added_items.read_items_file(bad)
    bad.write_text('{"id": "A", "colour": "red"}\n')
    with pytest.raises(ValueError, match="unknown field"):
        added_items.read_items_file(bad)
    bad.write_text('{"id": "A"\n')
    with pytest.raises(ValueError, match="line 1: not JSON"):
        added_items.read_items_file(bad)
    csv = tmp_path / "items.csv"
    csv.write_text("id,text,image\nA,a thing,\nB,,b.png\n")
    assert [(i.id, i.text, i.image) for i in added_items.read_items_file(csv)] == [("A", "a thing", None), ("B", None, "b.png")]
    with pytest.raises(ValueError, match="given twice: A"):
        added_items.check_new(added_items.read_items_file(csv) * 2, {})


def test_a_write_that_dies_keeps_the_previous_items(runs, shop, tmp_path, monkeypatch):
    data, _ = shop
    run = _copy(runs["unisrec"], tmp_path)
    recommender = mmseqrec.load(run, data_dir=data)
    dim = recommender.domain.features["text"].dim
    recommender.add_items([added_items.NewItem("FIRST", features={"text": [0.5] * dim})])
    real_replace = os.replace

    def dies_before_the_pointer(source, target):
        if Path(target).name == added_items.POINTER:
            raise OSError("killed")
        real_replace(source, target)

    monkeypatch.setattr(added_items.os, "replace", dies_before_the_pointer)
    with pytest.raises(OSError, match="killed"):
        recommender.add_items([added_items.NewItem("SECOND", features={"text": [0.25] * dim})])
    monkeypatch.undo()
    reloaded = mmseqrec.load(run, data_dir=data)
    assert reloaded.item_raw_ids[N_ITEMS:] == ["FIRST"]  # the version that was complete
    # a second process that added items meanwhile is noticed, not overwritten
    other = mmseqrec.load(run, data_dir=data)
    other.add_items([added_items.NewItem("THIRD", features={"text": [0.1] * dim})])
    with pytest.raises(ValueError, match="another process added items"):
        reloaded.add_items([added_items.NewItem("FOURTH", features={"text": [0.2] * dim})])
