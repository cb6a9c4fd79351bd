"""Cold-start splits (``mmseqrec prepare cold``): cold items appear in no training row, the rows
are the leave-one-out split of the shortened sequences, training never sees a cold item (not even
as a negative), and the evaluation reports the cold and the warm test rows apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_tables, train_tiny_runs, write_tiny_domain
from tolerances import assert_close

from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.data.format import DataFormatError, write_domain
from mmseqrec.data.loading import load_domain
from mmseqrec.data.sources.cold import build_cold
from mmseqrec.data.split import leave_one_out
from mmseqrec.metrics import metrics_from_ranks
from mmseqrec.models import MISSRec, MISSRecConfig, SASRec, SASRecConfig
from mmseqrec.runs import format_summary_table, summarise
from mmseqrec.significance import load_ranks



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root, n_users=80)
    assert mmseqrec_main(["prepare", "cold", "--domain", "Tiny", "--share", "0.2", "--name", "Tiny-cold", "--data-dir", str(root)]) == 0
    return root


def _sequences(domain) -> list[np.ndarray]:
    offsets = domain.sequence_offsets
    return [domain.sequence_values[offsets[u] : offsets[u + 1]] for u in range(domain.num_users)]


def test_cold_items_stay_out_of_every_training_row(data):
    original, cold = load_domain("Tiny", data_dir=data), load_domain("Tiny-cold", data_dir=data)
    mask = cold.cold_items
    record = cold.manifest["cold_start"]
    assert mask.dtype == bool and mask.shape == (41,) and not mask[0] and mask.sum() == 8 == record["items"]
    assert record["share"] == 0.2 and record["seed"] == 0 and cold.manifest["source"]["domain"] == "Tiny"
    # Same catalogue and features; every user's sequence loses its cold items but the last two.
    assert cold.item_raw_id == original.item_raw_id and cold.num_items == original.num_items
    assert np.array_equal(cold.features["text"].values, original.features["text"].values)
    shortened = [np.concatenate([s[:-2][~mask[s[:-2]]], s[-2:]]) for s in _sequences(original)]
    kept = [s for s in shortened if len(s) >= 3]
    assert record["users_dropped"] == len(shortened) - len(kept)
    assert record["interactions_removed"] == sum(len(s) for s in _sequences(original)) - sum(len(s) for s in shortened)
    assert all(np.array_equal(a, b) for a, b in zip(_sequences(cold), kept))
    expected = leave_one_out(kept, 50)
    for split in ("train", "valid", "test"):
        assert np.array_equal(cold.splits[split].target, expected[split].target)
        assert np.array_equal(cold.splits[split].history_values, expected[split].history_values)
    train = cold.splits["train"]
    assert not mask[train.target].any() and not mask[train.history_values].any()
    # Cold rows exist, and a test history holds a cold item only as its last one: the valid target.
    test, valid = cold.splits["test"], cold.splits["valid"]
    assert mask[test.target].sum() == record["test_cold_rows"] > 0 and mask[valid.target].sum() == record["valid_cold_rows"] > 0
    for row in range(len(test)):
        history = test.history(row)
        assert not mask[history[:-1]].any()
        if mask[history[-1]]:
            assert history[-1] == valid.target[row]
    assert "cold start: 8 items held out of training" in cold.describe()
    # The same seed draws the same items.
    assert np.array_equal(build_cold(original, 0.2, "again", seed=0).cold_items, mask)
    assert not np.array_equal(build_cold(original, 0.2, "other", seed=1).cold_items, mask)


def test_broken_or_unsuitable_domains_are_refused(data, tmp_path):
    tables = tiny_tables(n_users=30)
    tables.cold_items = np.zeros(41, dtype=bool)
    tables.cold_items[int(tables.splits["train"].target[3])] = True
    with pytest.raises(DataFormatError, match="train row 3 has the cold item .* as its target"):
        write_domain(tables, tmp_path / "Broken")
    cold = load_domain("Tiny-cold", data_dir=data)
    with pytest.raises(ValueError, match="already a cold-start split"):
        build_cold(cold, 0.1, "again")
    # Rows that are not the leave-one-out split of the sequences would change the protocol.
    tables = tiny_tables(n_users=30, name="Odd")
    tables.splits["train"].target[0] = tables.splits["train"].target[1]
    write_domain(tables, tmp_path / "Odd")
    with pytest.raises(DataFormatError, match="not the chronological leave-one-out split"):
        build_cold(load_domain(tmp_path / "Odd"), 0.1, "Odd-cold")
    with pytest.raises(ValueError, match="between 0 and 1"):
        build_cold(load_domain("Tiny", data_dir=data), 1.0, "all")


def test_held_out_items_are_no_negatives_and_join_the_nearest_interest(data):
    domain = load_domain("Tiny-cold", data_dir=data)
    cold = torch.from_numpy(domain.cold_items)
    batch = {"item_seq": torch.tensor([[1, 2, 0], [5, 6, 7]]), "item_seq_len": torch.tensor([2, 3]), "target": torch.tensor([3, 8])}
    batch["item_seq"][cold[batch["item_seq"]]] = 9 if not cold[9] else 10  # training rows hold warm items only
    batch["target"][cold[batch["target"]]] = int(torch.nonzero(~cold[1:])[0]) + 1
    sasrec = SASRec(SASRecConfig(num_items=40, hidden_size=16, inner_size=16, num_heads=2))
    sasrec.hold_out_items(domain.cold_items)
    sasrec.loss(batch).backward()
    grads = sasrec.item_embedding.weight.grad
    assert (grads[cold] == 0).all() and (grads[~cold][1:].abs().sum(dim=1) > 0).any()

    missrec = MISSRec(MISSRecConfig(num_items=40, text_dim=16, image_dim=16, hidden_size=16, inner_size=16, num_heads=2, mode="inductive"))
    missrec.attach_domain(domain)
    missrec.hold_out_items(domain.cold_items)
    _, keys = missrec.item_tokens()
    assert not cold[keys % 41].any()  # interests are clustered from warm items only
    missrec.refresh_interests()
    ids = torch.nonzero(cold).squeeze(1)
    assert torch.equal(missrec.text_interest[ids], missrec._nearest_interests("text", missrec.text_features[ids], missrec.text_present[ids]))
    assert (missrec.text_interest[ids] > 0).all()
    missrec.train()
    missrec.loss(batch).backward()
    assert missrec.without_held_out(torch.zeros(1, 40))[0, cold[1:]].isinf().all()


def test_metrics_report_cold_and_warm_test_rows(data, tmp_path):
    out = tmp_path / "runs"
    train_tiny_runs(data, out, {m: m for m in ("sasrec", "mostpop", "missrec@scratch")}, "--mode", "inductive", domain="Tiny-cold")
    domain = load_domain("Tiny-cold", data_dir=data)
    test = domain.splits["test"]
    cold_rows = domain.cold_items[test.target]
    results = []
    for run in ("sasrec-seed2020", "mostpop-seed2020", "missrec-scratch-seed2020"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        ranks = load_ranks(out / run, "test")
        assert metrics["test_cold"]["rows"] == int(cold_rows.sum()) and metrics["test_warm"]["rows"] == int((~cold_rows).sum())
        for kind, rows in (("cold", cold_rows), ("warm", ~cold_rows)):
            expected = metrics_from_ranks(ranks[rows])
            assert_close(np.array([metrics[f"test_{kind}"][m] for m in expected]), np.array(list(expected.values())), f"{run} {kind}")
        results.append(metrics)
    # MostPop never saw a cold item: a cold target has count 0 and ranks behind every item seen in training.
    assert results[1]["test_cold"]["recall@10"] == 0.0 and cold_rows.sum() > 0
    table = format_summary_table({"sasrec": summarise(results[:1]), "missrec": summarise(results[2:])})
    assert "test_cold ndcg@10" in table.splitlines()[0] and "test_warm recall@10" in table.splitlines()[0]
    assert "test_cold: the test rows whose target is a cold item" in table
    assert "test_cold" not in format_summary_table({"plain": summarise([{k: v for k, v in results[0].items() if not k.startswith("test_c")}])})
