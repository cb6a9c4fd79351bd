"""One smoke test per model: shapes, the loss goes down, save -> load gives identical scores."""

import numpy as np
import pytest
import torch

from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MostPop, MostPopConfig, SASRec, SASRecConfig
from mmseqrec.models.base import apply_stage
from tiny import write_tiny_domain
from tolerances import close


@pytest.fixture(scope="module")
def tiny_domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root)
    return load_domain("Tiny", data_dir=root)


def _batch(domain, split="train", rows=None):
    examples = domain.splits[split]
    rows = list(range(min(len(examples), 32))) if rows is None else rows
    return SequenceCollator(examples, 50)(rows)


def test_sasrec_shapes_loss_and_roundtrip(tiny_domain, tmp_path):
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=tiny_domain.num_items, hidden_size=32, inner_size=32, num_heads=2, hidden_dropout=0.1, attn_dropout=0.1))
    batch = _batch(tiny_domain)
    assert model(batch).shape == (32, 32)
    assert model.score_all(batch).shape == (32, tiny_domain.num_items)
    assert model.score_items(model(batch), 5, 9).shape == (32, 4)

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(batch).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimizer.step()
    assert loss.item() < first * 0.7

    model.eval()
    model.save_pretrained(tmp_path / "sasrec")
    loaded = SASRec.from_pretrained(str(tmp_path / "sasrec")).eval()
    assert loaded.config == model.config
    assert torch.equal(loaded.score_all(batch), model.score_all(batch))


def test_sasrec_is_causal(tiny_domain):
    """Changing a later item must not change the representation read at an earlier position."""
    model = SASRec(SASRecConfig(num_items=tiny_domain.num_items, hidden_size=16, inner_size=16)).eval()
    seq = torch.tensor([[3, 4, 5, 6, 0, 0]])
    a = model({"item_seq": seq, "item_seq_len": torch.tensor([2])})
    seq2 = seq.clone()
    seq2[0, 2] = 9  # a future item relative to position 1
    b = model({"item_seq": seq2, "item_seq_len": torch.tensor([2])})
    assert close(a, b)
    c = model({"item_seq": seq2, "item_seq_len": torch.tensor([3])})
    assert not torch.allclose(a, c)


def test_sasrec_has_no_peft_stage(tiny_domain):
    model = SASRec(SASRecConfig(num_items=tiny_domain.num_items, hidden_size=16, inner_size=16))
    assert apply_stage(model, "finetune") == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="parameter-efficient"):
        apply_stage(model, "peft")


def test_mostpop_counts_training_interactions_only(tiny_domain, tmp_path):
    model = MostPop(MostPopConfig(num_items=tiny_domain.num_items))
    model.attach_domain(tiny_domain)
    counts = np.zeros(tiny_domain.num_items + 1)
    offsets, values = tiny_domain.sequence_offsets, tiny_domain.sequence_values
    for u in range(tiny_domain.num_users):
        for item in values[offsets[u] : offsets[u + 1] - 2]:  # all but the valid and test targets
            counts[item] += 1
    assert np.array_equal(model.item_counts.numpy(), counts)
    batch = _batch(tiny_domain, "test")
    scores = model.score_all(batch)
    assert scores.shape == (32, tiny_domain.num_items)
    assert torch.equal(scores[0], scores[5])  # same list for everyone
    model.save_pretrained(tmp_path / "mostpop")
    assert torch.equal(MostPop.from_pretrained(str(tmp_path / "mostpop")).score_all(batch), scores)


def test_domain_splits_as_hugging_face_datasets(tiny_domain):
    """The examples are exposed as a datasets.DatasetDict (zero-copy from Arrow)."""
    import datasets

    dd = tiny_domain.hf_datasets()
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "valid", "test"}
    for split, ds in dd.items():
        assert ds.num_rows == len(tiny_domain.splits[split])
        assert ds.column_names == ["user_id", "history", "target"]
    row = dd["test"][0]
    assert row["history"] == tiny_domain.splits["test"].history(0).tolist()
    assert row["target"] == int(tiny_domain.splits["test"].target[0])
