"""train.batch_by_domain: every pretraining batch holds rows of one domain of a mixture."""

from __future__ import annotations

import numpy as np
from tiny import write_tiny_domain

from mmseqrec.data.loading import load_mixture
from mmseqrec.training import DomainBatchSampler, make_loader


def test_batches_are_single_domain_and_cover_every_row_once():
    row_domain = np.array([0] * 23 + [1] * 7 + [2] * 12)
    np.random.default_rng(0).shuffle(row_domain)
    sampler = DomainBatchSampler(row_domain, batch_size=5, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 + 2 + 3
    assert all(len(set(row_domain[b])) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(row_domain.size))
    assert all(len(b) <= 5 for b in batches)
    # The same epoch gives the same batches (resume); another epoch reshuffles.
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_epoch(0)
    assert list(sampler) == batches


def test_loader_on_a_mixture_groups_by_domain(tmp_path):
    write_tiny_domain(tmp_path, name="TinyA", seed=1, n_items=30)
    write_tiny_domain(tmp_path, name="TinyB", seed=2, n_items=20)
    mixture = load_mixture(["TinyA", "TinyB"], data_dir=tmp_path)
    loader = make_loader(mixture, "train", 16, 20, True, 0, by_domain=True)
    seen = 0
    for batch in loader:
        domains = mixture.item_domain[batch["target"].numpy()]
        assert len(set(domains.tolist())) == 1
        seen += len(domains)
    assert seen == len(mixture.splits["train"])
    # On a single domain, or when off, the ordinary shuffled loader is used.
    plain = make_loader(mixture, "train", 16, 20, True, 0, by_domain=False)
    mixed = [len(set(mixture.item_domain[b["target"].numpy()].tolist())) for b in plain]
    assert max(mixed) == 2
