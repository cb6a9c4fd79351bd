"""BERT4Rec: smoke test, cloze masking, the [mask] position at inference, max_len cutting."""

import pytest
import torch
import torch.nn.functional as F
from tiny import write_tiny_domain

from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.models import BERT4Rec, BERT4RecConfig
from mmseqrec.models import bert4rec as bert4rec_module
from mmseqrec.models.bert4rec import append_token, cloze_mask
from tolerances import close


@pytest.fixture(scope="module")
def tiny_domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root)
    return load_domain("Tiny", data_dir=root)


def _model(num_items: int, **overrides) -> BERT4Rec:
    values = {"num_items": num_items, "hidden_size": 32, "inner_size": 32, "num_heads": 2, "hidden_dropout": 0.0, "attn_dropout": 0.0}
    return BERT4Rec(BERT4RecConfig(**{**values, **overrides}))


def _batch(histories, targets=None):
    width = max(len(h) for h in histories)
    seq = torch.zeros(len(histories), width, dtype=torch.long)
    for row, history in enumerate(histories):
        seq[row, : len(history)] = torch.tensor(history)
    batch = {"item_seq": seq, "item_seq_len": torch.tensor([len(h) for h in histories])}
    if targets is not None:
        batch["target"] = torch.tensor(targets)
    return batch


def test_shapes_loss_decreases_and_roundtrip(tiny_domain, tmp_path):
    torch.manual_seed(0)
    model = _model(tiny_domain.num_items)
    batch = SequenceCollator(tiny_domain.splits["train"], 50)(list(range(32)))
    assert model(batch).shape == (32, 32)
    assert model.score_all(batch).shape == (32, tiny_domain.num_items)
    assert model.score_items(model(batch), 5, 9).shape == (32, 4)

    # The same seed draws the same masks, so the two losses are on the same cloze task.
    torch.manual_seed(1)
    first = model.loss(batch).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    torch.manual_seed(1)
    assert model.loss(batch).item() < first * 0.7

    model.eval()
    model.save_pretrained(tmp_path / "bert4rec")
    loaded = BERT4Rec.from_pretrained(str(tmp_path / "bert4rec")).eval()
    assert loaded.config == model.config
    assert torch.equal(loaded.score_all(batch), model.score_all(batch))


def test_first_item_can_be_a_masking_target():
    """Position 0 is drawn like any other position, and a masked first item is in the loss."""
    torch.manual_seed(0)
    # Two-token rows (history [7], target 9) with one token to mask: either may be chosen.
    rows = 1000
    model = _model(20, last_item_ratio=0.0, mask_ratio=0.5)
    batch = _batch([[7]] * rows, [9] * rows)
    inputs, labels, masked = model.cloze_tokens(batch)
    assert torch.equal(masked.sum(1), torch.ones(rows, dtype=torch.long))
    first = masked[:, 0]
    assert 350 < int(first.sum()) < 650
    assert (inputs[first, 0] == model.mask_token).all() and (labels[first, 0] == 7).all()
    assert (inputs[first, 1] == 9).all()  # the target stays visible when the first item is masked

    # Force the mask onto the first item only: the loss is exactly the CE of predicting it there.
    def first_only(lengths, width, mask_ratio, last_item_ratio):
        masked = torch.zeros(len(lengths), width, dtype=torch.bool)
        masked[:, 0] = True
        return masked

    small = _batch([[7, 3, 4]], [9])
    original = bert4rec_module.cloze_mask
    bert4rec_module.cloze_mask = first_only
    try:
        loss = model.loss(small)
    finally:
        bert4rec_module.cloze_mask = original
    tokens = torch.tensor([[model.mask_token, 3, 4, 9]])
    state = model.head(model.encode(tokens)[0, 0])
    expected = F.cross_entropy(model.score_items(state[None], 1, 21), torch.tensor([7 - 1]))
    assert close(loss, expected)


def test_cloze_mask_counts_and_last_item_rows():
    torch.manual_seed(0)
    lengths = torch.tensor([2, 5, 10, 11, 1])
    masked = cloze_mask(lengths, 11, mask_ratio=0.2, last_item_ratio=0.0)
    # max(1, round(0.2 x length)), at most length - 1 (a lone token is still masked).
    assert masked.sum(1).tolist() == [1, 1, 2, 2, 1]
    assert not masked[torch.arange(11)[None, :] >= lengths[:, None]].any()  # never padding

    last = cloze_mask(lengths, 11, mask_ratio=0.2, last_item_ratio=1.0)
    expected = torch.arange(11)[None, :] == (lengths - 1)[:, None]
    assert torch.equal(last, expected)

    mixed = cloze_mask(torch.full((2000,), 10), 10, mask_ratio=0.5, last_item_ratio=0.3)
    last_only_rows = (mixed.sum(1) == 1) & mixed[:, 9]
    assert 0.2 < last_only_rows.float().mean() < 0.4  # about last_item_ratio of the rows


def test_mask_follows_the_last_item_and_the_score_is_read_there():
    torch.manual_seed(0)
    model = _model(20, max_len=6).eval()
    batch = _batch([[3, 4, 5], [8]])
    tokens, lengths = model.inference_tokens(batch)
    mask = model.mask_token
    assert tokens.tolist() == [[3, 4, 5, mask], [8, mask, 0, 0]]  # short histories keep their oldest item
    assert lengths.tolist() == [4, 2]

    states = model.head(model.encode(tokens))
    representation = model(batch)
    assert close(representation[0], states[0, 3]) and close(representation[1], states[1, 1])
    assert not torch.allclose(representation[0], states[0, 2])
    expected = states[0, 3] @ model.item_embedding.weight[1:21].T + model.output_bias[1:21]
    assert close(model.score_all(batch)[0], expected)


def test_positions_count_back_from_the_newest_token():
    batch = _batch([[3, 4, 5], [8], [1, 2, 3, 4, 5, 6]])
    from_end = _model(20, max_len=6)
    tokens, lengths = from_end.inference_tokens(batch)
    positions = from_end.position_ids(tokens)
    rows = torch.arange(3)
    assert positions[rows, lengths - 1].tolist() == [5, 5, 5]  # [mask] always at max_len - 1
    assert positions[rows, lengths - 2].tolist() == [4, 4, 4]  # the newest item just before it
    assert positions[0, :4].tolist() == [2, 3, 4, 5]
    from_start = _model(20, max_len=6, positions="from_start")
    assert from_start.position_ids(tokens)[rows, lengths - 1].tolist() == [3, 1, 5]


def test_long_histories_are_cut_from_the_oldest_side_to_fit_the_mask():
    model = _model(60, max_len=5).eval()
    mask = model.mask_token
    # exactly max_len items, more than max_len, and a short one padded in the same batch
    batch = _batch([[1, 2, 3, 4, 5], [11, 12, 13, 14, 15, 16, 17], [21, 22]])
    tokens, lengths = model.inference_tokens(batch)
    assert tokens.tolist() == [[2, 3, 4, 5, mask], [14, 15, 16, 17, mask], [21, 22, mask, 0, 0]]
    assert lengths.tolist() == [5, 5, 3]
    assert model(batch).shape == (3, 32)

    # In training the target takes the place of [mask]: history + target, cut the same way.
    rows, row_lengths = append_token(batch["item_seq"], batch["item_seq_len"], torch.tensor([6, 18, 23]), 5)
    assert rows.tolist() == [[2, 3, 4, 5, 6], [14, 15, 16, 17, 18], [21, 22, 23, 0, 0]]
    assert row_lengths.tolist() == [5, 5, 3]


def test_attention_is_bidirectional():
    """A later token changes the state at an earlier position (unlike SASRec)."""
    model = _model(20).eval()
    a = model.encode(torch.tensor([[3, 4, 5, 6, 0]]))
    b = model.encode(torch.tensor([[3, 4, 5, 9, 0]]))
    assert not torch.allclose(a[0, 1], b[0, 1])
    # padding never influences real positions
    c = model.encode(torch.tensor([[3, 4, 5, 6, 0, 0, 0]]))
    assert close(a[0, :4], c[0, :4])


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="num_items"):
        BERT4Rec(BERT4RecConfig())
    with pytest.raises(ValueError, match="mask_ratio"):
        BERT4Rec(BERT4RecConfig(num_items=5, mask_ratio=0.0))
    with pytest.raises(ValueError, match="max_len"):
        BERT4Rec(BERT4RecConfig(num_items=5, max_len=1))
    with pytest.raises(ValueError, match="positions"):
        BERT4Rec(BERT4RecConfig(num_items=5, positions="random"))
