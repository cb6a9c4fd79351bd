"""Two-stage retrieval (``mmseqrec.retrieval``): every model scores candidate lists as it scores
the catalogue, the indexes give the exact ranking when the candidates cover the catalogue and a
high recall with few candidates on a clustered catalogue, and an index follows the catalogue
(``add-items`` extends it; a stale one is an error naming what changed)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tiny import TINY_MODELS, train_tiny_runs, write_tiny_domain
from tolerances import assert_close

import mmseqrec
from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.inference import retrieve_top
from mmseqrec.metrics import top_items
from mmseqrec.retrieval import IndexSettings, ItemIndex, MissingIndexError, StaleIndexError

ENTRIES = TINY_MODELS
HISTORIES = [["I3", "I4", "I5"], ["I20"], ["I40", "I1", "I2"], ["I7", "I8", "I9", "I10", "I11"]]
ROOT = Path(__file__).resolve().parents[1]


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("retrieval_benchmark", ROOT / "benchmarks" / "retrieval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(a data folder holding Tiny, model name -> run folder): every model, and inductive MISSRec."""
    data = write_tiny_domain(tmp_path_factory.mktemp("data"), n_users=50).parent
    runs = train_tiny_runs(data, tmp_path_factory.mktemp("runs"))
    runs.update(train_tiny_runs(data, tmp_path_factory.mktemp("inductive"), {"missrec-inductive": "missrec@scratch"}, "--mode", "inductive"))
    return data, runs


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _same_ranking(actual, expected) -> None:
    for got, want in zip(actual, expected):
        assert got.items == want.items
        assert_close(np.array(got.scores), np.array(want.scores), "scores")


@pytest.mark.parametrize("name", [*ENTRIES, "missrec-inductive"])
def test_candidate_scores_are_the_catalogue_scores(name, tiny):
    data, runs = tiny
    recommender = mmseqrec.load(runs[name], data_dir=data, device="cpu")
    model = recommender.model
    seq = torch.from_numpy(recommender.encode(HISTORIES))
    ids = torch.randint(1, recommender.num_items + 1, (len(HISTORIES), 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.score_items(seq, 1, recommender.num_items + 1).gather(1, ids - 1)
        assert_close(model.score_candidates(seq, ids), expected, f"{name} candidate scores")


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("name", [*ENTRIES, "missrec-inductive"])
def test_two_stage_is_exact_when_the_candidates_cover_the_catalogue(name, kind, tiny, tmp_path, capsys):
    data, runs = tiny
    folder = tmp_path / "index"
    code = mmseqrec_main(["index", "--run", str(runs[name]), "--data-dir", str(data), "--kind", kind, "--candidates", "40",
                          "--output", str(folder), "--cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["items"] == 40 and manifest["added_items"] == 0 and manifest["settings"]["kind"] == kind
    assert {table["kind"] for table in manifest["tables"].values()} <= {kind}
    assert (manifest["tables"] == {}) == (name == "mostpop")  # MostPop needs no index
    exact = mmseqrec.load(runs[name], data_dir=data, device="cpu")
    indexed = mmseqrec.load(runs[name], data_dir=data, device="cpu", retrieval="index", index_dir=folder)
    assert indexed.describe()["retrieval"] == "index"
    for exclude_seen in (True, False):
        _same_ranking(indexed.recommend(HISTORIES, k=10, exclude_seen=exclude_seen), exact.recommend(HISTORIES, k=10, exclude_seen=exclude_seen))
    assert exact.recommend(HISTORIES, k=10) == indexed.recommend(HISTORIES, k=10, retrieval="exact")  # per call
    with pytest.raises(ValueError, match="needs an index"):
        exact.recommend(HISTORIES, retrieval="index")
    # Explicit candidates still restrict the ranking, index or not.
    _same_ranking(indexed.recommend(HISTORIES, k=3, candidates=["I9", "I2", "I30", "I31"]), exact.recommend(HISTORIES, k=3, candidates=["I9", "I2", "I30", "I31"]))


def test_high_recall_with_few_candidates_on_a_clustered_catalogue():
    """MISSRec's fused score through HNSW indexes: the candidates of each table's 20 nearest
    items, re-scored, hold nearly all of the exact top 10."""
    bench = _benchmark_module()
    model = bench.clustered_missrec(4000, dim=16, clusters=40, seed=0, alpha=2.0)
    queries = bench.query_vectors(model, 100, seed=1)
    with torch.no_grad():
        truth = top_items(lambda first, end: model.score_items(queries, first, end), 4000, 10)[1].numpy()
    index = ItemIndex.build(model, {"items": 4000}, IndexSettings(kind="hnsw", candidates=20, ef_search=64))
    assert set(index.tables) == {"text", "image", "mean"}
    assert index.tables["image"].size < 4000  # items without an image are not in the image index
    found = retrieve_top(model, queries, index, 10)["ids"].numpy()
    assert bench.recall(found, truth) >= 0.95
    exact = ItemIndex.build(model, {"items": 4000}, IndexSettings(kind="flat", candidates=4000))
    assert bench.recall(retrieve_top(model, queries, exact, 10)["ids"].numpy(), truth) == 1.0


def test_recommend_command_through_the_index(tiny, tmp_path, capsys):
    data, runs = tiny
    run = _copy(runs["missrec"], tmp_path)
    assert mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--index", "--output", str(tmp_path / "r.parquet"), "--quiet"]) == 2
    assert "mmseqrec index --run" in capsys.readouterr().err  # no index yet: the command that makes one
    assert mmseqrec_main(["index", "--run", str(run), "--data-dir", str(data), "--candidates", "40", "--quiet"]) == 0
    assert (run / "index" / "manifest.json").is_file()
    common = ["recommend", "--run", str(run), "--data-dir", str(data), "--k", "5", "--cpu", "--quiet"]
    assert mmseqrec_main([*common, "--output", str(tmp_path / "exact.parquet")]) == 0
    assert mmseqrec_main([*common, "--index", "--output", str(tmp_path / "indexed.parquet")]) == 0
    exact, indexed = (pq.read_table(tmp_path / f"{name}.parquet").to_pandas() for name in ("exact", "indexed"))
    assert exact[["user", "rank", "item"]].equals(indexed[["user", "rank", "item"]])
    assert_close(indexed["score"].to_numpy(), exact["score"].to_numpy(), "scores")
    assert mmseqrec_main([*common, "--index", "--split", "test", "--evaluate", "--output", str(tmp_path / "e.parquet")]) == 2
    assert "cannot go through --index" in capsys.readouterr().err


def _new_items(path: Path, ids: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("".join(
        json.dumps({"id": raw, "features": {"text": rng.normal(size=16).tolist(), "image": rng.normal(size=16).tolist()}}) + "\n" for raw in ids
    ))
    return path


def test_an_index_follows_added_items_and_a_stale_one_is_refused(tiny, tmp_path, capsys):
    data, runs = tiny
    run = _copy(runs["missrec-inductive"], tmp_path)
    assert mmseqrec_main(["index", "--run", str(run), "--data-dir", str(data), "--candidates", "60", "--quiet"]) == 0
    # Items added through the API of a recommender without the index: the stored one is now stale.
    plain = mmseqrec.load(run, data_dir=data, device="cpu")
    plain.add_items(mmseqrec.added_items.read_items_file(_new_items(tmp_path / "a.jsonl", ["NEW1", "NEW2"], 0)))
    with pytest.raises(StaleIndexError, match="items were added.*items: index 40, now 42.*mmseqrec index --run"):
        mmseqrec.load(run, data_dir=data, device="cpu", retrieval="index")
    # add-items rebuilds a stale index, and extends a current one.
    assert mmseqrec_main(["add-items", "--run", str(run), "--items", str(_new_items(tmp_path / "b.jsonl", ["NEW3"], 1)), "--data-dir", str(data),
                          "--cpu", "--quiet"]) == 0
    assert "was stale: rebuilt for the 43 items" in capsys.readouterr().out
    assert mmseqrec_main(["add-items", "--run", str(run), "--items", str(_new_items(tmp_path / "c.jsonl", ["NEW4", "NEW5"], 2)), "--data-dir", str(data),
                          "--cpu", "--quiet"]) == 0
    assert "now holds the new items too" in capsys.readouterr().out
    manifest = json.loads((run / "index" / "manifest.json").read_text())
    assert manifest["items"] == 45 and manifest["added_items"] == 5
    counts = {name: table["indexed_items"] for name, table in manifest["tables"].items()}
    assert counts == {"text": 45, "image": 42, "mean": 45}  # items I1..I3 have no image
    indexed = mmseqrec.load(run, data_dir=data, device="cpu", retrieval="index")
    exact = mmseqrec.load(run, data_dir=data, device="cpu")
    _same_ranking(indexed.recommend(HISTORIES + [["NEW4", "I3"]], k=10), exact.recommend(HISTORIES + [["NEW4", "I3"]], k=10))
    # A recommender holding the index keeps it current when it takes items itself (the service's POST /items).
    indexed.add_items(mmseqrec.added_items.read_items_file(_new_items(tmp_path / "d.jsonl", ["NEW6"], 3)))
    assert mmseqrec.load(run, data_dir=data, device="cpu", retrieval="index").index.key["items"] == 46
    # Another model's index is refused, naming the field.
    manifest = json.loads((run / "index" / "manifest.json").read_text())
    manifest["model_sha256"] = "0" * 64
    (run / "index" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleIndexError, match="trained again.*model_sha256"):
        mmseqrec.load(run, data_dir=data, device="cpu", retrieval="index")
    shutil.rmtree(run / "index")
    with pytest.raises(MissingIndexError, match="mmseqrec index --run"):
        mmseqrec.load(run, data_dir=data, device="cpu", retrieval="index")
