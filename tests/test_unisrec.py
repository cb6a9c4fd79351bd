"""UniSRec: parameter counts, the MoE adaptor, text masking, PEFT freezing, losses, transfer."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny import tiny_tables, write_tiny_domain

from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.format import FeatureSet, write_domain
from mmseqrec.data.loading import load_domain
from mmseqrec.models import UniSRec, UniSRecConfig
from mmseqrec.models.base import apply_stage
from mmseqrec.models.unisrec import MoEAdaptor
from mmseqrec.runs import load_transferable_weights
from tolerances import close


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny domain plus a word-dropped text feature set (``text_aug``)."""
    root = tmp_path_factory.mktemp("data")
    tables = tiny_tables()
    text = tables.features["text"]
    noisy = text.values + np.random.default_rng(5).normal(scale=0.3, size=text.values.shape).astype(np.float32)
    noisy[0] = 0
    tables.features["text_aug"] = FeatureSet(noisy, text.present.copy(), "text", "test-word-drop")
    write_domain(tables, root / tables.name)
    return load_domain("Tiny", data_dir=root)


def small_config(domain, **kw):
    values = {"num_items": domain.num_items, "text_dim": 16, "hidden_size": 16, "num_heads": 2, "inner_size": 16,
              "num_experts": 3, "hidden_dropout": 0.1, "attn_dropout": 0.1}
    values.update(kw)
    return UniSRecConfig(**values)


def batch_of(domain, split="train", n=48):
    return SequenceCollator(domain.splits[split], 50)(list(range(min(n, len(domain.splits[split])))))


# MoE adaptor: 8 x (768 * 300 + 768) + 2 x 768 * 8 = 1,861,632; transformer 2 x 516,556,
# positions 50 x 300, input LayerNorm 600 (spec section 3.2-3.3).
@pytest.mark.parametrize(
    "mode,stage,expected",
    [
        ("inductive", "peft", 1_861_632 + 600),
        ("inductive", "finetune", 1_861_632 + 600 + 2 * 516_556 + 15_000),  # the ~2.9M pretrained model
        ("transductive", "peft", 1_861_632 + 600 + 300 * 4_386),
        ("transductive", "finetune", 1_861_632 + 600 + 2 * 516_556 + 15_000 + 300 * 4_386),
    ],
)
def test_paper_configuration_parameter_counts(mode, stage, expected):
    model = UniSRec(UniSRecConfig(num_items=4_385, mode=mode))
    assert apply_stage(model, stage) == expected


def test_moe_adaptor_shapes_whitening_and_gate():
    torch.manual_seed(0)
    moe = MoEAdaptor(input_dim=12, output_dim=5, num_experts=4, dropout=0.2, std=0.02, noise=True)
    x = torch.randn(3, 7, 12)
    assert moe(x).shape == (3, 7, 5)
    # every expert is (x - b) W (in eval mode, no dropout)
    moe.eval()
    with torch.no_grad():
        for expert in moe.experts:
            expert.bias.normal_()
    expert = moe.experts[2]
    assert close(expert(x), (x - expert.bias) @ expert.linear.weight.T)
    # at initialisation the gate is uniform, so the output is the mean of the experts
    gate = moe.gate_weights(x)
    assert gate.shape == (3, 7, 4)
    assert close(gate, torch.full_like(gate, 0.25))
    mean_of_experts = torch.stack([e(x) for e in moe.experts]).mean(0)
    assert close(moe(x), mean_of_experts)
    # with a trained gate and training noise the weights are not uniform but still sum to 1
    with torch.no_grad():
        moe.gate.weight.normal_()
    moe.train()
    noisy = moe.gate_weights(x)
    assert close(noisy.sum(-1), torch.ones(3, 7)) and (noisy >= 0).all()
    assert not torch.allclose(noisy, moe.gate_weights(x))  # fresh noise each call
    moe.eval()
    assert torch.equal(moe.gate_weights(x), moe.gate_weights(x))  # no noise at evaluation


def test_items_without_text_are_masked(tiny):
    """Reading the tiny domain's image set as text: items 1-3 have none."""
    torch.manual_seed(0)
    for mode in ("inductive", "transductive"):
        model = UniSRec(small_config(tiny, mode=mode, text_feature="image")).eval()
        model.attach_domain(tiny)
        assert not model.text_present[1:4].any() and model.text_present[4:].all()
        batch = {"item_seq": torch.tensor([[1, 2, 3, 5], [2, 6, 7, 0]]), "item_seq_len": torch.tensor([4, 3])}
        scores = model.score_all(batch)
        assert scores.shape == (2, tiny.num_items)
        model.text_features[1:4] = 123.0  # garbage where the text is missing changes nothing
        assert torch.equal(model.score_all(batch), scores)
        assert torch.equal(model.adapted_text(torch.tensor([1, 2, 3]))[0], torch.zeros(3, 16))
        if mode == "inductive":  # nothing represents them: they cannot be recommended
            assert torch.isinf(scores[:, :3]).all() and torch.isfinite(scores[:, 3:]).all()
        else:  # the ID embedding does
            assert torch.isfinite(scores).all()


def test_one_adaptor_pass_serves_several_id_tensors(tiny):
    model = UniSRec(small_config(tiny)).eval()
    model.attach_domain(tiny)
    seq, candidates = torch.tensor([[3, 4, 0], [4, 9, 2]]), torch.arange(1, tiny.num_items + 1)
    seq_text, candidate_text = model.adapted_text(seq, candidates)
    assert seq_text.shape == (2, 3, 16) and candidate_text.shape == (tiny.num_items, 16)
    assert close(seq_text, model.adapted_text(seq)[0]) and close(seq_text[1, 1], candidate_text[8])
    assert torch.equal(seq_text[0, 2], torch.zeros(16))  # padding has no text


def test_inductive_loss_skips_targets_without_text(tiny):
    torch.manual_seed(0)
    model = UniSRec(small_config(tiny, mode="inductive", text_feature="image"))
    model.attach_domain(tiny)
    batch = {"item_seq": torch.tensor([[4, 5], [5, 6]]), "item_seq_len": torch.tensor([2, 2]), "target": torch.tensor([2, 7])}
    for stage in ("finetune", "pretrain"):
        apply_stage(model, stage)
        assert torch.isfinite(model.loss(batch))
    only_missing = {**batch, "target": torch.tensor([1, 2])}
    apply_stage(model, "finetune")
    assert model.loss(only_missing).item() == 0.0


def test_training_lowers_the_loss_and_save_load_keeps_scores(tiny, tmp_path):
    torch.manual_seed(0)
    model = UniSRec(small_config(tiny))
    model.attach_domain(tiny)
    apply_stage(model, "finetune")
    batch = batch_of(tiny)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])

    model.eval()
    test = batch_of(tiny, "test")
    assert model(test).shape == (len(test["target"]), 16)
    assert close(model(test).norm(dim=-1), torch.ones(len(test["target"])))
    scores = model.score_all(test)
    assert scores.shape == (len(test["target"]), tiny.num_items)
    model.save_pretrained(tmp_path / "m")
    loaded = UniSRec.from_pretrained(str(tmp_path / "m"))
    loaded.attach_domain(tiny)
    loaded.eval()
    assert loaded.config == model.config
    assert torch.equal(loaded.score_all(test), scores)


def test_peft_trains_adaptor_norm_and_ids_only(tiny):
    torch.manual_seed(0)
    model = UniSRec(small_config(tiny))
    model.attach_domain(tiny)
    apply_stage(model, "peft")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("moe_adaptor.", "input_norm.", "item_embedding."))}
    assert "item_embedding.weight" in trainable and "moe_adaptor.gate.weight" in trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = batch_of(tiny)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    for name, param in model.named_parameters():
        assert (not torch.equal(before[name], param.detach())) == (name in trainable), name

    inductive = UniSRec(small_config(tiny, mode="inductive"))
    apply_stage(inductive, "peft")
    assert not any(n.startswith("item_embedding") for n, p in inductive.named_parameters() if p.requires_grad)


def test_augmentation_item_drop_and_word_drop(tiny):
    torch.manual_seed(0)
    seq = torch.tensor([[5, 6, 7, 8, 9, 10, 0, 0]] * 400)
    lengths = torch.tensor([6] * 400)
    model = UniSRec(small_config(tiny, item_drop_ratio=0.5, item_drop_prob=0.7, word_drop_ratio=0.5))
    model.attach_domain(tiny)  # has text_aug: both kinds of view occur
    aug, aug_len, word_dropped = model.augment(seq, lengths, torch.Generator().manual_seed(0))
    is_word_drop = word_dropped.any(dim=1)
    for row, n, wd in zip(aug.tolist(), aug_len.tolist(), is_word_drop.tolist()):
        kept = row[:n]
        if wd:  # items unchanged
            assert kept == [5, 6, 7, 8, 9, 10]
        else:
            assert kept[0] == 5 and kept == sorted(kept) and set(kept) <= {5, 6, 7, 8, 9, 10}
            assert all(v == 0 for v in row[n:])
    assert not word_dropped[:, 6:].any()  # never on padding
    assert 0.15 < is_word_drop.float().mean().item() < 0.45  # about 1 - item_drop_prob (a few all-False rows)
    item_drop_rows = ~is_word_drop & (aug_len < 6)
    assert 2.0 < 6 - aug_len[item_drop_rows].float().mean().item() < 3.5
    # word-dropped positions read the text_aug features
    ids = torch.tensor([[5, 6]])
    model.eval()
    plain = model.adapted_text(ids)[0]
    swapped = model.with_word_dropped_text(plain, ids, torch.tensor([[False, True]]))
    assert torch.equal(swapped[0, 0], plain[0, 0]) and not torch.allclose(swapped[0, 1], plain[0, 1])
    assert close(swapped[0, 1], model.moe_adaptor(model.text_aug_features[6]))

    no_aug = UniSRec(small_config(tiny, text_aug_feature="none"))
    no_aug.attach_domain(tiny)
    assert not no_aug.augment(seq, lengths)[2].any()  # no word-dropped text: item drop only


def test_same_target_negatives_removed_or_counted_as_zero(tiny):
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.3, 1.5, 0.7], [0.2, 0.1, 3.0]])
    targets = torch.tensor([4, 9, 4])  # rows 0 and 2 share their target
    same = (targets[:, None] == targets[None, :]) & ~torch.eye(3, dtype=torch.bool)
    rows = torch.ones(3, dtype=torch.bool)
    removed = UniSRec(small_config(tiny))._contrastive(logits, same, rows)
    expected = torch.stack([
        -torch.log_softmax(torch.tensor([2.0, 1.0]), 0)[0],
        -torch.log_softmax(logits[1], 0)[1],
        -torch.log_softmax(torch.tensor([0.1, 3.0]), 0)[1],
    ]).mean()
    assert close(removed, expected)
    zero = UniSRec(small_config(tiny, same_target="zero"))._contrastive(logits, same, rows)
    zeroed = logits.masked_fill(same, 0.0)
    assert close(zero, F.cross_entropy(zeroed, torch.arange(3)))


def test_pretraining_loss_combines_both_terms(tiny):
    torch.manual_seed(0)
    batch = batch_of(tiny)
    model = UniSRec(small_config(tiny, mode="inductive", seqseq_weight=0.0, hidden_dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0,
                                 gate_noise=False))
    model.attach_domain(tiny)
    apply_stage(model, "pretrain")
    seq_item_only = model.loss(batch)
    model.config.seqseq_weight = 1.0
    torch.manual_seed(1)
    both = model.loss(batch)
    assert both > seq_item_only  # the sequence-sequence term is a positive addition
    # the sequence-item term is the in-batch InfoNCE against the targets' item vectors
    targets = batch["target"]
    seq = model(batch)
    logits = seq @ F.normalize(model.item_vectors(targets), dim=-1).T / 0.07
    same = (targets[:, None] == targets[None, :]) & ~torch.eye(len(targets), dtype=torch.bool)
    manual = F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(targets)))
    assert close(seq_item_only, manual)


def test_pretrain_then_finetune_round_trip(tmp_path, capsys):
    """pretrain/run.py (UniSRec) on two tiny domains, then finetune --checkpoint, PEFT, both modes."""
    import yaml

    from finetune.cli import main as finetune_main
    from pretrain.run import main as pretrain_main

    data = tmp_path / "data"
    write_tiny_domain(data, name="TinyA", seed=1)
    write_tiny_domain(data, name="TinyB", seed=2, n_items=30)
    write_tiny_domain(data, name="TinyT", seed=3, n_items=25)
    config = {
        "name": "tiny-unisrec",
        "data": {"domains": ["TinyA", "TinyB"], "data_dir": str(data)},
        "model": {"name": "unisrec", "mode": "inductive", "hidden_size": 16, "num_heads": 2, "inner_size": 16, "num_experts": 3},
        "train": {"epochs": 2, "batch_size": 64, "save_every": 1},
    }
    (tmp_path / "pt.yaml").write_text(yaml.safe_dump(config))
    assert pretrain_main(["--config", str(tmp_path / "pt.yaml"), "--output", str(tmp_path / "pt"), "--quiet"]) == 0
    checkpoint = tmp_path / "pt" / "final"
    assert (tmp_path / "pt" / "epoch-1" / "model.safetensors").exists()
    history = json.loads((tmp_path / "pt" / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)

    # the transferable weights load into a model for another domain; IDs stay fresh
    pretrained = load_file(str(checkpoint / "model.safetensors"))
    target = load_domain("TinyT", data_dir=data)
    model = UniSRec(UniSRecConfig(num_items=target.num_items, text_dim=16, hidden_size=16, num_heads=2, inner_size=16, num_experts=3))
    loaded = load_transferable_weights(model, checkpoint)
    assert set(loaded) == set(pretrained) and "item_embedding.weight" not in loaded
    assert any(k.startswith("moe_adaptor.experts.") for k in loaded) and any(k.startswith("layers.1.") for k in loaded)
    for key in loaded:
        assert torch.equal(model.state_dict()[key], pretrained[key]), key

    args = ["--domain", "TinyT", "--data-dir", str(data), "--checkpoint", str(checkpoint), "--quiet", "train.epochs=1"]
    assert finetune_main([*args, "--model", "unisrec@peft,unisrec@scratch", "--output", str(tmp_path / "ft")]) == 0
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    moe = 3 * (16 * 16 + 16) + 2 * 16 * 3
    peft = results["runs"]["unisrec (pretrained, peft)"][0]
    assert peft["trainable_parameters"] == moe + 2 * 16 + 16 * 26  # adaptor, input norm, IDs (transductive)
    assert results["runs"]["unisrec (scratch)"][0]["trainable_parameters"] > peft["trainable_parameters"]
    assert "trainable parameters (peft)" in capsys.readouterr().out
    # the frozen encoder and positions come out of fine-tuning exactly as pretrained; the adaptor moved
    tuned = load_file(str(tmp_path / "ft" / "unisrec-peft-seed2020" / "best" / "model.safetensors"))
    for key in pretrained:
        if key.startswith(("layers.", "position_embedding.")):
            assert torch.equal(tuned[key], pretrained[key]), key
    assert not torch.equal(tuned["moe_adaptor.experts.0.linear.weight"], pretrained["moe_adaptor.experts.0.linear.weight"])

    assert finetune_main([*args, "--model", "unisrec", "--mode", "inductive", "--output", str(tmp_path / "ft-ind")]) == 0
    run = json.loads((tmp_path / "ft-ind" / "results.json").read_text())["runs"]["unisrec (pretrained, peft)"][0]
    assert run["trainable_parameters"] == moe + 2 * 16


def test_finetune_without_a_pretrained_unisrec_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    from finetune.cli import main as finetune_main

    write_tiny_domain(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert finetune_main(["--domain", "Tiny", "--data-dir", str(tmp_path / "data"), "--model", "unisrec"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/pretrain/unisrec-fhckm/final" in err and "unisrec-fhckm.yaml" in err and "unisrec@scratch" in err


def test_a_domain_without_text_is_a_clear_error(tmp_path):
    write_tiny_domain(tmp_path / "data", features=False)
    domain = load_domain("Tiny", data_dir=tmp_path / "data")
    model = UniSRec(UniSRecConfig(num_items=domain.num_items, text_dim=16, hidden_size=16, num_heads=2, inner_size=16))
    with pytest.raises(ValueError, match="needs the text feature set 'text'"):
        model.attach_domain(domain)


def test_same_seed_same_run(tmp_path):
    """The seed covers the initial weights too: two runs with one seed give the same metrics."""
    from finetune.cli import main as finetune_main

    write_tiny_domain(tmp_path / "data")
    results = []
    for k in range(2):
        args = ["--domain", "Tiny", "--data-dir", str(tmp_path / "data"), "--model", "unisrec@scratch", "--quiet",
                "--output", str(tmp_path / f"run{k}"), "train.epochs=1", "model.hidden_size=16", "model.inner_size=16"]
        assert finetune_main(args) == 0
        results.append(json.loads((tmp_path / f"run{k}" / "results.json").read_text())["runs"]["unisrec (scratch)"][0])
    assert results[0]["valid"] == results[1]["valid"] and results[0]["test"] == results[1]["test"]
