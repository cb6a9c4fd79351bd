"""MMMLP: smoke test, missing modalities are masked, real depth, configurable sizes, the window."""

import numpy as np
import pytest
import torch
from tiny import write_tiny_domain

from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MMMLP, MMMLPConfig
from mmseqrec.models.mmmlp import MixerBranch, fixed_window
from tolerances import close

# In the tiny domain items 1..3 have no image (mask False); every item has a text.
NO_IMAGE = (1, 2, 3)


@pytest.fixture(scope="module")
def tiny_domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root)
    return load_domain("Tiny", data_dir=root)


def _model(domain, **overrides) -> MMMLP:
    values = {"num_items": domain.num_items, "text_dim": 16, "image_dim": 16, "hidden_size": 32, "max_len": 12, "dropout": 0.0}
    model = MMMLP(MMMLPConfig(**{**values, **overrides}))
    model.attach_domain(domain)
    return model


def _batch(histories):
    width = max(len(h) for h in histories)
    seq = torch.zeros(len(histories), width, dtype=torch.long)
    for row, history in enumerate(histories):
        seq[row, : len(history)] = torch.tensor(history)
    return {"item_seq": seq, "item_seq_len": torch.tensor([len(h) for h in histories])}


def test_shapes_loss_decreases_and_roundtrip(tiny_domain, tmp_path):
    torch.manual_seed(0)
    model = _model(tiny_domain, dropout=0.1)
    batch = SequenceCollator(tiny_domain.splits["train"], 12)(list(range(32)))
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
    model.save_pretrained(tmp_path / "mmmlp")
    loaded = MMMLP.from_pretrained(str(tmp_path / "mmmlp")).eval()
    assert loaded.config == model.config
    with pytest.raises(RuntimeError, match="attach_domain"):
        loaded(batch)  # the frozen features are not saved with the model
    loaded.attach_domain(tiny_domain)
    assert torch.equal(loaded.score_all(batch), model.score_all(batch))


@pytest.mark.parametrize("align", ["recent", "start"])
def test_item_without_image_does_not_use_its_image_row(tiny_domain, align):
    model = _model(tiny_domain, align=align, item_scoring="id+content").eval()
    assert not model.image_present[2] and model.image_present[5]
    batch = _batch([[5, 2, 6, 7], [8, 9, 2], [4, 5, 6]])  # item 2 (no image) mid-sequence and last
    before = model.score_all(batch)

    model.image_features[2] = torch.randn(16) * 100  # whatever sits in a masked row is never read
    after = model.score_all(batch)
    assert torch.equal(before, after)

    model.image_features[5] = torch.randn(16) * 10  # a present image is data: it changes the scores
    changed = model.score_all(batch)
    assert not torch.allclose(before[0], changed[0])  # item 5 is in row 0's history
    # Row 1's history has no item 5: only item 5's own column (scored with its content) moves.
    others = torch.arange(tiny_domain.num_items) != 4
    assert torch.equal(before[1, others], changed[1, others])
    assert not torch.allclose(before[1, 4], changed[1, 4])


def test_missing_images_are_masked_out_of_token_mixing(tiny_domain):
    """Image branch states of other slots do not depend on a masked slot at all."""
    model = _model(tiny_domain).eval()
    window = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 5, 2, 6, 7]])
    features, present = model._projected("image", window)
    assert present.tolist()[0] == [False] * 8 + [True, False, True, True]
    assert torch.equal(features[0, 9], torch.zeros(32))
    out = model.content_branches["image"](features, present)
    features[0, 9] = torch.randn(32) * 50  # as if the zero row had been taken as data
    poked = model.content_branches["image"](features, present)
    keep = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11])
    assert close(out[0, keep], poked[0, keep])


def test_channel_mixing_on_item_slots_only_changes_no_item_slot(tiny_domain):
    model = _model(tiny_domain).eval()
    window = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 5, 2, 6, 7], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1]])
    real = window > 0
    features, present = model._projected("image", window)
    branch = model.content_branches["image"]
    everywhere = branch(features, present)
    item_slots_only = branch(features, present, real)
    assert close(everywhere[real], item_slots_only[real])
    # an item slot without an image (item 2, item 1) is still computed: it may be the readout
    assert not torch.allclose(item_slots_only[1, 11], branch.input_norm(features)[1, 11])


def test_branches_are_as_deep_as_configured(tiny_domain):
    torch.manual_seed(0)
    model = _model(tiny_domain, num_layers=3, modality_layers=0)
    assert len(model.id_branch.blocks) == 3
    assert all(len(branch.blocks) == 3 for branch in model.content_branches.values())
    assert len(_model(tiny_domain, num_layers=3, modality_layers=1).content_branches["text"].blocks) == 1

    # Each block works on the previous block's output (the reference applied one block to the
    # same input over and over, which is one layer deep).
    branch = model.content_branches["text"].eval()
    x = torch.randn(2, 12, 32)
    present = torch.ones(2, 12, dtype=torch.bool)
    h = branch.input_norm(x)
    for block in branch.blocks:
        h = block(h, present)
    assert close(branch(x, present), h)
    assert not torch.allclose(branch(x, present), branch.blocks[-1](branch.input_norm(x), present))

    shared = MixerBranch(MMMLPConfig(hidden_size=32, max_len=12, share_layer_weights=True, dropout=0.0), depth=3).eval()
    assert len(shared.blocks) == 1
    h = shared.input_norm(x)
    expected = shared.blocks[0](shared.blocks[0](shared.blocks[0](h, present), present), present)
    assert close(shared(x, present), expected)


def test_sizes_are_configurable_and_batch_padding_does_not_matter(tiny_domain):
    torch.manual_seed(0)
    model = _model(tiny_domain, hidden_size=24, max_len=7, num_layers=1, fusion_layers=0, token_expansion=2).eval()
    narrow = _batch([[3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13, 14]])
    repr_narrow = model(narrow)
    assert repr_narrow.shape == (2, 24)
    wide = {
        "item_seq": torch.cat([narrow["item_seq"], torch.zeros(2, 6, dtype=torch.long)], dim=1),
        "item_seq_len": narrow["item_seq_len"],
    }
    assert close(model(wide), repr_narrow)


@pytest.mark.parametrize("align", ["recent", "start"])
def test_trimming_the_window_to_the_used_slots_changes_no_output(tiny_domain, align):
    torch.manual_seed(0)
    model = _model(tiny_domain, align=align, max_len=12, fusion_layers=1).eval()
    # short rows only (3 of 12 slots used), mixed lengths, and a row longer than the window
    for histories in ([[3, 4], [5, 6, 7], [1]], [[3, 4, 5, 6, 7], [2, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 1]]):
        batch = _batch(histories)
        trimmed = model(batch)
        window, _, first_slot = model._window(batch)
        assert window.shape[1] == min(max(len(h) for h in histories), 12)
        model.trim_window = False
        full = model(batch)
        model.trim_window = True
        assert close(trimmed, full)
    # and the gradients of a training step are the same
    model.train()
    batch = {**_batch([[3, 4], [5, 6, 7], [1]]), "target": torch.tensor([5, 8, 2])}
    grads = []
    for trim in (True, False):
        model.zero_grad()
        model.trim_window = trim
        model.loss(batch).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    model.trim_window = True
    assert len(grads[0]) == len(grads[1])
    assert all(close(a, b) for a, b in zip(*grads))


def test_fixed_window_keeps_the_most_recent_items():
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    lengths = torch.tensor([3, 6])
    window, newest = fixed_window(seq, lengths, 4, "recent")
    assert window.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]] and newest.tolist() == [3, 3]
    window, newest = fixed_window(seq, lengths, 4, "start")
    assert window.tolist() == [[1, 2, 3, 0], [3, 4, 5, 6]] and newest.tolist() == [2, 3]


def test_id_only_variant_needs_no_features_and_errors_are_clear(tiny_domain):
    model = MMMLP(MMMLPConfig(num_items=tiny_domain.num_items, modalities="none", hidden_size=16, max_len=8))
    assert model(_batch([[1, 2]])).shape == (1, 16)
    with pytest.raises(ValueError, match="modalities"):
        MMMLP(MMMLPConfig(num_items=5, modalities="audio"))
    with_text = MMMLP(MMMLPConfig(num_items=tiny_domain.num_items, text_feature="title_vectors", text_dim=16, image_dim=16))
    with pytest.raises(ValueError, match="title_vectors"):
        with_text.attach_domain(tiny_domain)
    assert np.asarray(tiny_domain.features["image"].present)[list(NO_IMAGE)].sum() == 0
    # feature dimensions come from the feature sets the config names
    assert MMMLP.domain_config(tiny_domain) == {"num_items": tiny_domain.num_items, "text_dim": 16, "image_dim": 16}
    assert "image_dim" not in MMMLP.domain_config(tiny_domain, {"image_feature": "clip_image"})


def test_finetune_cli_runs_both_models(tmp_path):
    import json

    from finetune.cli import main as finetune_main

    write_tiny_domain(tmp_path / "data")
    code = finetune_main([
        "--domain", "Tiny", "--data-dir", str(tmp_path / "data"), "--model", "bert4rec,mmmlp", "--output", str(tmp_path / "out"),
        "--quiet", "train.epochs=2", "train.batch_size=64", "model.hidden_size=16",
    ])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["summary"]) == {"bert4rec", "mmmlp"}
    for runs in results["runs"].values():
        assert runs[0]["epochs_run"] == 2 and runs[0]["evaluated_users"]["test"] == 80
