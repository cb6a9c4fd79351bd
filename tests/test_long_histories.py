"""A history longer than a model's window keeps its newest items, in every sequential model."""

import pytest
import torch
from tiny import write_tiny_domain
from tolerances import close

from mmseqrec.data.loading import load_domain
from mmseqrec.models import MODELS
from mmseqrec.models.base import keep_most_recent

WINDOW = 6


@pytest.fixture(scope="module")
def tiny_domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root)
    return load_domain("Tiny", data_dir=root)


def test_keep_most_recent_shifts_rows_and_aligned_tensors():
    seq = torch.tensor([[1, 2, 3, 4, 5, 0], [7, 8, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    lengths = torch.tensor([5, 2, 6])
    flags = seq > 3
    cut, cut_lengths, cut_flags = keep_most_recent(seq, lengths, 3, flags)
    assert cut.tolist() == [[3, 4, 5], [7, 8, 0], [4, 5, 6]]
    assert cut_lengths.tolist() == [3, 2, 3]
    assert cut_flags.tolist() == [[False, True, True], [True, True, False], [True, True, True]]
    features = seq[..., None].float().expand(-1, -1, 2)
    assert keep_most_recent(seq, lengths, 3, features)[2][:, :, 1].tolist() == [[3, 4, 5], [7, 8, 0], [4, 5, 6]]
    # no copy when nothing is longer than the window
    same = keep_most_recent(seq, lengths, 6)
    assert same[0] is seq and same[1] is lengths


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "unisrec", "missrec", "mmmlp"])
def test_a_long_history_is_read_as_its_newest_items(tiny_domain, name):
    torch.manual_seed(0)
    model_cls, config_cls = MODELS[name]
    overrides = {"max_len": WINDOW}
    model = model_cls(config_cls(**{**model_cls.domain_config(tiny_domain, overrides), **overrides}))
    model.attach_domain(tiny_domain)
    model.on_epoch_start(0)
    model.eval()
    history = list(range(1, 16))  # 15 items, longer than the window
    # BERT4Rec spends one slot of its window on [mask]
    newest = history[-(WINDOW - 1):] if name == "bert4rec" else history[-WINDOW:]
    long = {"item_seq": torch.tensor([history + [0, 0]]), "item_seq_len": torch.tensor([len(history)])}
    short = {"item_seq": torch.tensor([newest]), "item_seq_len": torch.tensor([len(newest)])}
    oldest = {"item_seq": torch.tensor([history[:WINDOW]]), "item_seq_len": torch.tensor([WINDOW])}
    with torch.no_grad():
        assert close(model(long), model(short))
        assert not torch.allclose(model(long), model(oldest))
