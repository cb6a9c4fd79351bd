"""`mmseqrec compare`: every model on one domain, one table, CSV and chart."""

from __future__ import annotations

import csv
import json

import pytest
from tiny import write_tiny_domain

from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.runs import run_seconds
from mmseqrec.significance import group_scores


def test_compare_writes_table_csv_and_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_tiny_domain(tmp_path / "data")
    out = tmp_path / "cmp"
    code = mmseqrec_main([
        "compare", "--domain", "Tiny", "--data-dir", str(tmp_path / "data"), "--models", "sasrec,missrec,mostpop",
        "--seeds", "2", "--output", str(out), "--quiet",
        "train.epochs=1", "model.hidden_size=16", "model.num_heads=2", "model.inner_size=16",
    ])
    assert code == 0, capsys.readouterr().err
    # A bare pretrainable name trains from scratch in a comparison; the others keep their name.
    labels = ["sasrec", "missrec (scratch)", "mostpop"]
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == labels
    assert all(r["seeds"] == "2" for r in rows)
    for row in rows:
        for column in ("test ndcg@10", "test recall@10", "test ndcg@50", "test recall@50"):
            assert 0.0 <= float(row[column]) <= 1.0 and float(row[column + " sd"]) >= 0.0
        assert float(row["minutes per run"]) >= 0.0
    # The CSV repeats the numbers of the JSON summary, not some other run's.
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert float(rows[0]["test ndcg@10"]) == pytest.approx(summary["sasrec"]["test ndcg@10"], abs=1e-6)
    table = (out / "results.md").read_text()
    assert all(f"| {label} |" in table for label in labels) and "±" in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    # Each seed's run has its own folder.
    assert (out / "sasrec-seed2020").is_dir() and (out / "sasrec-seed2021").is_dir()
    # Every row but the best has its paired difference to the best row, from the saved ranks.
    best = max(labels, key=lambda label: summary[label]["test ndcg@10"])
    assert "test ndcg@10 vs best [95% CI]" in table and f"| {best} |" in table
    folders = {"sasrec": "sasrec", "missrec (scratch)": "missrec-scratch", "mostpop": "mostpop"}
    for row in rows:
        if row["model"] == best:
            assert row["test ndcg@10 minus best"] == "" and summary[best]["test ndcg@10 vs best"] is None
            continue
        runs = [out / f"{folders[row['model']]}-seed{seed}" for seed in (2020, 2021)]
        best_runs = [out / f"{folders[best]}-seed{seed}" for seed in (2020, 2021)]
        expected = group_scores(runs).mean() - group_scores(best_runs).mean()
        assert float(row["test ndcg@10 minus best"]) == pytest.approx(expected, abs=1e-6)
        assert float(row["ci low"]) <= float(row["test ndcg@10 minus best"]) <= float(row["ci high"])
        # and the difference of the means is the difference of the reported test NDCG@10
        assert expected == pytest.approx(summary[row["model"]]["test ndcg@10"] - summary[best]["test ndcg@10"], abs=1e-9)


def test_compare_rejects_unknown_model_before_training(tmp_path, capsys):
    write_tiny_domain(tmp_path / "data")
    code = mmseqrec_main(["compare", "--domain", "Tiny", "--data-dir", str(tmp_path / "data"), "--models", "sasrec,nosuchrec",
                          "--output", str(tmp_path / "cmp"), "--no-plot"])
    assert code == 2
    assert "unknown model 'nosuchrec'" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_run_minutes_count_every_epoch_of_a_run_resumed_before_the_clock_was_kept():
    # Old resumed run: the last process took 66 s, its epochs 3,000 s in all.
    old = {"wall_clock_seconds": 66.0, "history": [{"seconds": 1000.0}] * 3}
    assert run_seconds(old) == 3000.0
    # A run whose clock covers setup and test as well keeps it.
    assert run_seconds({"wall_clock_seconds": 3100.0, "history": [{"seconds": 1000.0}] * 3}) == 3100.0
