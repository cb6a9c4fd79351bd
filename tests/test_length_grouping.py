"""train.group_by_length and the length-ordered evaluation loaders."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from tiny import write_tiny_domain
from torch.utils.data import DataLoader

from mmseqrec.data.batching import ExampleIndex, SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.models import SASRec, SASRecConfig
from mmseqrec.training import LengthGroupedBatchSampler, evaluate, make_loader


def test_batches_cover_every_row_once_and_are_reproducible_per_epoch():
    lengths = np.random.default_rng(0).integers(1, 50, size=103)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=5, pool_batches=4)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(lengths.size))
    assert all(1 <= len(b) <= 8 for b in batches)
    assert list(sampler) == batches  # same epoch, same batches (resume)
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_grouping_cuts_padding():
    lengths = np.random.default_rng(1).geometric(0.2, size=4000).clip(max=50)
    grouped = LengthGroupedBatchSampler(lengths, batch_size=64, seed=0, pool_batches=16)
    padded_grouped = sum(lengths[b].max() * len(b) for b in grouped)
    rows = np.random.default_rng(2).permutation(lengths.size)
    padded_uniform = sum(lengths[rows[i : i + 64]].max() * len(rows[i : i + 64]) for i in range(0, rows.size, 64))
    assert padded_grouped < 0.5 * padded_uniform
    assert padded_grouped >= lengths.sum()


def test_length_ordered_evaluation_gives_the_metrics_of_the_natural_order(tmp_path):
    write_tiny_domain(tmp_path)
    domain = load_domain("Tiny", data_dir=tmp_path)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=domain.num_items, hidden_size=16, num_heads=2, inner_size=16))
    accelerator = Accelerator(cpu=True)
    ordered = make_loader(domain, "test", 7, 20, False, 0)
    first_lengths = [int(b["item_seq_len"].max()) for b in ordered]
    assert first_lengths == sorted(first_lengths)  # visited shortest first
    natural = DataLoader(ExampleIndex(len(domain.splits["test"])), batch_size=7, collate_fn=SequenceCollator(domain.splits["test"], 20))
    a = evaluate(model, ordered, accelerator, domain.num_items)
    b = evaluate(model, natural, accelerator, domain.num_items)
    assert sorted(a["rows"].tolist()) == sorted(b["rows"].tolist()) == list(range(len(domain.splits["test"])))
    for key, value in b["metrics"].items():
        assert abs(a["metrics"][key] - value) < 1e-6, key


def test_training_loader_groups_when_asked(tmp_path):
    write_tiny_domain(tmp_path)
    domain = load_domain("Tiny", data_dir=tmp_path)
    loader = make_loader(domain, "train", 8, 20, True, 0, group_by_length=True, length_pool_batches=100)
    spans = [int(b["item_seq_len"].max() - b["item_seq_len"].min()) for b in loader]
    plain = [int(b["item_seq_len"].max() - b["item_seq_len"].min()) for b in make_loader(domain, "train", 8, 20, True, 0)]
    assert sum(spans) < sum(plain)
    assert sum(len(b["target"]) for b in loader) == len(domain.splits["train"])


def test_training_loaders_leave_the_global_random_stream_alone(tmp_path):
    """Starting an epoch must not draw from torch's global RNG (the dropout masks' stream), or a
    run resumed mid-epoch would go on with other masks than the uninterrupted run."""
    write_tiny_domain(tmp_path)
    domain = load_domain("Tiny", data_dir=tmp_path)
    for kwargs in ({}, {"group_by_length": True}):
        loader = make_loader(domain, "train", 8, 20, True, 0, **kwargs)
        torch.manual_seed(0)
        next(iter(loader))
        drawn = torch.rand(3)
        torch.manual_seed(0)
        assert torch.equal(drawn, torch.rand(3)), kwargs
