"""From a run to recommendations: ``mmseqrec recommend --evaluate`` reproduces every model's
metrics.json, the Python API's rankings agree with the model's own scores, and unknown ids are
reported, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tiny import TINY_MODELS, train_tiny_runs, write_tiny_domain
from tolerances import assert_close

import mmseqrec
from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.inference import UnknownItemsError
from mmseqrec.metrics import top_items

# Every model, from scratch, one epoch: what matters is that inference recomputes training's numbers.
ENTRIES = TINY_MODELS


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root, n_users=50)
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    return train_tiny_runs(data, tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("name", list(ENTRIES))
def test_recommend_evaluate_reproduces_metrics_json(name, runs, data, tmp_path, capsys):
    run = runs[name]
    out = tmp_path / "recs.parquet"
    code = mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--split", "test", "--k", "10", "--output", str(out), "--evaluate", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    recorded = json.loads((run / "metrics.json").read_text())["test"]
    for metric in ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr@10"):
        assert abs(report["metrics"][metric] - recorded[metric]) <= 1e-6, (metric, report["metrics"][metric], recorded[metric])
    assert report["exclude_seen"] is False  # the papers' protocol, as the run was evaluated

    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["user", "rank", "item", "score"]
    users = pq.read_table(data / "Tiny" / "users.parquet").column("raw_id").to_pylist()
    assert sorted(set(table["user"])) == sorted(users)  # every test row once, by its raw user id
    for _, rows in table.groupby("user"):
        assert list(rows["rank"]) == list(range(1, 11))
        assert (np.diff(rows["score"].to_numpy()) <= 0).all()
        assert set(rows["item"]) <= {f"I{i}" for i in range(1, 41)}


def test_a_changed_metrics_json_is_caught(runs, data, tmp_path, capsys):
    """--evaluate fails when the recomputed metrics do not match metrics.json."""
    run = tmp_path / "run"
    import shutil

    shutil.copytree(runs["sasrec"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"]["ndcg@10"] += 0.01
    (run / "metrics.json").write_text(json.dumps(metrics))
    code = mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--split", "test", "--output", str(tmp_path / "r.parquet"), "--evaluate", "--quiet"])
    assert code == 1 and "differ from" in capsys.readouterr().out


def test_api_recommendations_are_the_models_own_ranking(runs, data):
    recommender = mmseqrec.load(runs["sasrec"], data_dir=data)
    assert recommender.domain.name == "Tiny" and recommender.num_items == 40
    histories = [["I3", "I4", "I5"], ["I20"], ["I40", "I1"]]
    with_seen = recommender.recommend(histories, k=40, exclude_seen=False)
    model = recommender.model
    for history, result in zip(histories, with_seen):
        ids = torch.tensor([[int(raw[1:]) for raw in history]])
        with torch.no_grad():
            scores = model.score_all({"item_seq": ids, "item_seq_len": torch.tensor([ids.shape[1]])})[0]
        order = sorted(range(40), key=lambda j: (-float(scores[j]), j))  # best first, ties to the lower id
        assert result.items == [f"I{j + 1}" for j in order]
        assert_close(np.array(result.scores), scores[order].numpy(), "scores")
    # exclude_seen leaves the history out and keeps the order of the rest
    for history, full, result in zip(histories, with_seen, recommender.recommend(histories, k=10)):
        assert not set(result.items) & set(history)
        assert result.items == [item for item in full.items if item not in history][:10]
    # the sequence vector and the item table give the scores
    vectors = recommender.encode(histories)
    table = recommender.item_vectors()["id"]
    assert vectors.shape == (3, 16) and table.shape == (40, 16)
    assert_close(vectors[0] @ table.T / 1.0, np.array([with_seen[0].scores[with_seen[0].items.index(f"I{j}")] for j in range(1, 41)]), "dot products")


def test_candidates_restrict_the_ranking(runs, data):
    recommender = mmseqrec.load(runs["sasrec"], data_dir=data)
    everything = recommender.recommend([["I3", "I4"]], k=40, exclude_seen=False)[0]
    only = recommender.recommend([["I3", "I4"]], k=5, exclude_seen=False, candidates=["I9", "I2", "I30"])[0]
    assert only.items == [item for item in everything.items if item in {"I9", "I2", "I30"}]
    per_history = recommender.recommend([["I3"], ["I4"]], k=2, candidates=[["I7", "I8"], None])
    assert set(per_history[0].items) <= {"I7", "I8"} and len(per_history[1].items) == 2


def test_unknown_ids_are_reported_not_dropped(runs, data):
    recommender = mmseqrec.load(runs["missrec"], data_dir=data)
    with pytest.raises(UnknownItemsError) as caught:
        recommender.recommend([["I3", "NOPE"], ["I4"], ["ALSO-NOT", "I5"]])
    assert caught.value.unknown == [(0, "NOPE"), (2, "ALSO-NOT")]
    assert "history 0: 'NOPE'" in str(caught.value) and "history 2: 'ALSO-NOT'" in str(caught.value)
    reported = recommender.recommend([["I3", "NOPE"], ["GONE"]], k=5, on_unknown="report")
    assert reported[0].unknown == ["NOPE"] and len(reported[0].items) == 5
    assert reported[0].items == recommender.recommend([["I3"]], k=5)[0].items  # the known part is what counts
    assert reported[1].unknown == ["GONE"] and reported[1].items == []  # nothing known: no recommendations
    with pytest.raises(UnknownItemsError, match="candidates of history 0: 'X'"):
        recommender.recommend([["I3"]], candidates=["I4", "X"])
    with pytest.raises(ValueError, match="history 1 is empty"):
        recommender.recommend([["I3"], []])
    with pytest.raises(TypeError, match="a single history goes in a list"):
        recommender.recommend(["I3", "I4"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recommender.recommend([["I3"]], k=0)


def test_mostpop_ties_go_to_the_lower_item_id(runs, data):
    recommender = mmseqrec.load(runs["mostpop"], data_dir=data)
    counts = recommender.domain.train_item_counts()[1:]
    result = recommender.recommend([["I1"]], k=40, exclude_seen=False)[0]
    expected = sorted(range(40), key=lambda j: (-counts[j], j))
    assert result.items == [f"I{j + 1}" for j in expected]


def test_top_items_in_blocks_equals_one_sort():
    """Blockwise top-k with a running best gives the one-sort answer, ties to the lower id."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (5, 23), generator=generator).float()  # many ties
    scores[1, 5] = float("-inf")
    exclude = torch.tensor([[1, 2, 0], [0, 0, 0], [23, 0, 0], [7, 7, 8], [0, 0, 0]])
    reference_scores = scores.clone()
    for row in range(5):
        for item in exclude[row]:
            if item > 0:
                reference_scores[row, item - 1] = float("-inf")
    for block in (1, 4, 23, 100):
        top_scores, top_ids = top_items(lambda first, end: scores[:, first - 1 : end - 1], 23, 6, block, exclude=exclude)
        for row in range(5):
            expected = sorted(range(23), key=lambda j: (-float(reference_scores[row, j]), j))[:6]
            assert top_ids[row].tolist() == [j + 1 for j in expected], (block, row)
            assert torch.equal(top_scores[row], reference_scores[row, expected])


def test_load_names_its_errors(runs, data, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run folder|no such folder"):
        mmseqrec.load(tmp_path / "nothing-here", data_dir=data)
    other = tmp_path / "other"
    write_tiny_domain(other, n_items=30, name="Tiny")
    with pytest.raises(ValueError, match="trained on 40 items, domain Tiny .* has 30"):
        mmseqrec.load(runs["sasrec"], data_dir=other)
    with pytest.raises(ValueError, match="does not name its domain"):
        mmseqrec.load(runs["sasrec"] / "best", data_dir=data)
    assert mmseqrec.load(runs["sasrec"] / "best", domain="Tiny", data_dir=data).num_items == 40


def test_recommend_for_a_users_file_and_for_everyone(runs, data, tmp_path, capsys):
    run = runs["sasrec"]
    recommender = mmseqrec.load(run, data_dir=data)
    users = tmp_path / "users.jsonl"
    users.write_text(json.dumps({"user": "U3"}) + "\n" + json.dumps({"user": "someone new", "history": ["I5", "I6"]}) + "\n")
    out = tmp_path / "users.parquet"
    assert mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--users", str(users), "--k", "5", "--output", str(out), "--quiet"]) == 0
    table = pq.read_table(out).to_pandas()
    whole_sequence = [recommender.item_raw_ids[i - 1] for i in recommender.user_sequence(3)]  # a known user: everything they did
    assert list(table[table.user == "U3"]["item"]) == recommender.recommend([whole_sequence], k=5)[0].items
    assert list(table[table.user == "someone new"]["item"]) == recommender.recommend([["I5", "I6"]], k=5)[0].items

    listed = tmp_path / "users.txt"
    listed.write_text("U1\nU2\n")
    assert mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--users", str(listed), "--output", str(out), "--quiet"]) == 0
    assert sorted(set(pq.read_table(out).column("user").to_pylist())) == ["U1", "U2"]
    listed.write_text("U1\nnobody\n")
    assert mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--users", str(listed), "--output", str(out), "--quiet"]) == 2
    assert "nobody" in capsys.readouterr().err
    users.write_text(json.dumps({"user": "x", "history": ["I5", "NOT-AN-ITEM"]}) + "\n")
    assert mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--users", str(users), "--output", str(out), "--quiet"]) == 2
    assert "NOT-AN-ITEM" in capsys.readouterr().err

    assert mmseqrec_main(["recommend", "--run", str(run), "--data-dir", str(data), "--output", str(out), "--quiet"]) == 0
    everyone = pq.read_table(out).to_pandas()
    assert everyone["user"].nunique() == 50 and len(everyone) == 50 * 10
