"""MISSRec: golden parameter counts, PEFT freezing, corrections of the released code, transfer."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MISSRec, MISSRecConfig
from mmseqrec.models.base import apply_stage
from mmseqrec.runs import load_transferable_weights
from tiny import write_tiny_domain
from tolerances import close


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root)
    return load_domain("Tiny", data_dir=root)


def small_config(domain, **kw):
    values = dict(num_items=domain.num_items, text_dim=16, image_dim=16, hidden_size=16, num_heads=2, inner_size=16, dropout=0.1)
    values.update(kw)
    return MISSRecConfig(**values)


def batch_of(domain, split="train", n=32):
    return SequenceCollator(domain.splits[split], 50)(list(range(min(n, len(domain.splits[split])))))


@pytest.mark.parametrize(
    "mode,stage,expected",
    [
        ("inductive", "peft", 308_401),
        ("inductive", "finetune", 1_719_513),
        ("transductive", "peft", 308_401 + 300 * 4_386),  # Scientific: 1,624,201
        ("transductive", "finetune", 1_719_513 + 300 * 4_386),  # 3,035,313
    ],
)
def test_golden_parameter_counts(mode, stage, expected):
    """The paper configuration reproduces the counts printed in the released logs."""
    model = MISSRec(MISSRecConfig(num_items=4_385, mode=mode))
    assert apply_stage(model, stage) == expected


def test_peft_trains_only_adapters_norm_alpha_and_ids(tiny):
    torch.manual_seed(0)
    model = MISSRec(small_config(tiny))
    model.attach_domain(tiny)
    apply_stage(model, "peft")
    model.refresh_interests()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "text_adapter.weight", "text_adapter.bias", "image_adapter.weight", "image_adapter.bias",
        "input_norm.weight", "input_norm.bias", "fusion_alpha", "item_embedding.weight",
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = batch_of(tiny)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (name in trainable), name


def test_missing_modality_contributes_nothing(tiny):
    """Items 1-3 have no image: changing their (absent) image row must not change anything."""
    model = MISSRec(small_config(tiny)).eval()
    model.attach_domain(tiny)
    model.refresh_interests()
    assert not model.image_present[1:4].any()
    batch = {"item_seq": torch.tensor([[1, 2, 3, 5], [2, 6, 7, 0]]), "item_seq_len": torch.tensor([4, 3])}
    scores = model.score_all(batch)
    model.image_features[1:4] = 123.0  # garbage where the image is missing
    assert close(model.score_all(batch), scores)
    # and missing items have no image interest id, so they never join an image cluster
    assert (model.image_interest[1:4] == 0).all()
    assert (model.text_interest[1:] > 0).all()


def test_fused_score_uses_present_modality_only(tiny):
    model = MISSRec(small_config(tiny, mode="inductive")).eval()
    model.attach_domain(tiny)
    with torch.no_grad():
        model.fusion_alpha.fill_(0.7)
    seq = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    fused = model._fused_scores(seq, torch.tensor([1, 10]))
    text = torch.nn.functional.normalize(model.text_adapter(model.text_features[[1, 10]]), dim=-1)
    image = torch.nn.functional.normalize(model.image_adapter(model.image_features[[1, 10]]), dim=-1)
    cos_t, cos_v = seq @ text.T, seq @ image.T
    assert close(fused[:, 0], cos_t[:, 0])  # item 1: no image -> text only
    w = torch.softmax(0.7 * torch.stack([cos_t[:, 1], cos_v[:, 1]], -1), -1)
    assert close(fused[:, 1], w[:, 0] * cos_t[:, 1] + w[:, 1] * cos_v[:, 1])


def test_augmentation_drops_sampled_items_and_keeps_order(tiny):
    model = MISSRec(small_config(tiny, item_drop_ratio=0.5))
    model.attach_domain(tiny)
    seq = torch.tensor([[5, 6, 7, 8, 9, 10, 0, 0]] * 200)
    lengths = torch.tensor([6] * 200)
    aug, aug_len, override = model.augment(seq, lengths, torch.Generator().manual_seed(0))
    assert not override.any()  # no text_aug feature in this domain: always item drop
    for row, n in zip(aug.tolist(), aug_len.tolist()):
        kept = row[:n]
        assert kept[0] == 5  # the first item always stays
        assert kept == sorted(kept)  # order preserved (items are increasing here)
        assert set(kept) <= {5, 6, 7, 8, 9, 10} and all(v == 0 for v in row[n:])
    dropped = 6 - aug_len.float().mean().item()
    assert 2.0 < dropped < 3.0  # 5 droppable items x 0.5


def test_masked_mean_regulariser_is_independent_of_batch_size():
    memory = torch.randn(1, 5, 8)
    pad = torch.tensor([[False, False, True, True, True]])
    one = MISSRec.interest_regulariser(memory, pad, "masked_mean")
    expected = memory[0, :2].mean(0).pow(2).sum() / 8
    assert close(one, expected)
    assert close(MISSRec.interest_regulariser(memory.repeat(7, 1, 1), pad.repeat(7, 1), "masked_mean"), one)


def test_reference_regulariser_matches_a_hand_computation():
    """Spec 4.3: sum over rows of ||(real / Q) * (sum of ALL Q slots)||^2, / D."""
    memory = torch.tensor(
        [
            [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]],  # 2 real interests, 1 padding slot
            [[-2.0, 1.0], [1.0, 1.0], [4.0, 0.0]],  # 1 real interest, 2 padding slots
        ]
    )
    pad = torch.tensor([[False, False, True], [False, True, True]])
    # row 0: (2/3) * (4.5, 1.5) = (3, 1) -> 10; row 1: (1/3) * (3, 2) = (1, 2/3) -> 1 + 4/9
    expected = (10.0 + 1.0 + 4.0 / 9.0) / 2
    assert close(MISSRec.interest_regulariser(memory, pad, "reference"), torch.tensor(expected))
    # summed over the batch: seven copies weigh seven times as much
    assert close(MISSRec.interest_regulariser(memory.repeat(7, 1, 1), pad.repeat(7, 1), "reference"), torch.tensor(7 * expected))


def test_each_regulariser_formula_has_its_default_weight(tiny):
    from mmseqrec.models.missrec import MASKED_MEAN_REG_WEIGHT, REFERENCE_REG_WEIGHT

    assert MISSRec(small_config(tiny, reg_formula="reference")).reg_weight == REFERENCE_REG_WEIGHT == 1e-4
    assert MISSRec(small_config(tiny, reg_formula="masked_mean")).reg_weight == MASKED_MEAN_REG_WEIGHT
    assert MISSRec(small_config(tiny, reg_formula="masked_mean", reg_weight=0.5)).reg_weight == 0.5
    with pytest.raises(ValueError, match="reg_formula must be one of reference, masked_mean"):
        MISSRec(small_config(tiny, reg_formula="orthogonal"))


def test_save_load_identical_scores_and_transfer(tiny, tmp_path):
    torch.manual_seed(0)
    model = MISSRec(small_config(tiny))
    model.attach_domain(tiny)
    apply_stage(model, "finetune")
    model.refresh_interests()
    model.eval()
    batch = batch_of(tiny, "test")
    model.save_pretrained(tmp_path / "m")
    loaded = MISSRec.from_pretrained(str(tmp_path / "m"))
    loaded.attach_domain(tiny)
    loaded.eval()
    assert torch.equal(loaded.score_all(batch), model.score_all(batch))

    # transfer into a model for another domain size: transformer/adapters copied, IDs fresh
    target = MISSRec(small_config(tiny, num_items=tiny.num_items))
    loaded_keys = load_transferable_weights(target, tmp_path / "m")
    assert "item_embedding.weight" not in loaded_keys and "interest_embeddings" not in loaded_keys
    assert torch.equal(target.transformer.encoder.layers[0].linear1.weight, model.transformer.encoder.layers[0].linear1.weight)
    assert not torch.equal(target.item_embedding.weight, model.item_embedding.weight)


@pytest.mark.slow
def test_two_process_pretraining_step_keeps_replicas_identical(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    write_tiny_domain(tmp_path / "data", name="TinyA", seed=1)
    write_tiny_domain(tmp_path / "data", name="TinyB", seed=2, n_items=30)
    script = Path(__file__).parent / "ddp_pretrain_step.py"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "29611", str(script), str(tmp_path / "data"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    a = torch.load(tmp_path / "params-0.pt")
    b = torch.load(tmp_path / "params-1.pt")
    assert a.keys() == b.keys()
    for key in a:  # parameters and the broadcast interest tables alike
        assert torch.equal(a[key], b[key]), key
    assert int(a["interest_count"]) > 0
    saved = MISSRec.from_pretrained(str(tmp_path / "run" / "final")).state_dict()
    assert torch.equal(saved["text_adapter.weight"], a["text_adapter.weight"])


def test_pretrain_then_peft_finetune_end_to_end(tmp_path, capsys):
    """pretrain/run.py on a two-domain mixture, then `finetune --checkpoint` with PEFT."""
    import json

    import yaml

    from finetune.cli import main as finetune_main
    from pretrain.run import main as pretrain_main

    write_tiny_domain(tmp_path / "data", name="TinyA", seed=1)
    write_tiny_domain(tmp_path / "data", name="TinyB", seed=2, n_items=30)
    write_tiny_domain(tmp_path / "data", name="TinyT", seed=3, n_items=25)
    config = {
        "name": "tiny",
        "data": {"domains": ["TinyA", "TinyB"], "data_dir": str(tmp_path / "data")},
        "model": {"name": "missrec", "mode": "inductive", "hidden_size": 16, "num_heads": 2, "inner_size": 16, "interest_ratio": 0.1},
        "train": {"epochs": 2, "batch_size": 32, "save_every": 1},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    assert pretrain_main(["--config", str(tmp_path / "tiny.yaml"), "--output", str(tmp_path / "pt"), "--quiet"]) == 0
    assert (tmp_path / "pt" / "epoch-1" / "model.safetensors").exists()
    assert (tmp_path / "pt" / "final" / "model.safetensors").exists()

    code = finetune_main([
        "--domain", "TinyT", "--data-dir", str(tmp_path / "data"), "--checkpoint", str(tmp_path / "pt" / "final"),
        "--output", str(tmp_path / "ft"), "--quiet", "train.epochs=2", "model.interest_ratio=0.5",
    ])
    assert code == 0
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    run = results["runs"]["missrec (pretrained, peft)"][0]
    # adapters (2 x (16*16+16)) + input norm (2*16) + alpha (1) + IDs (16 * 26)
    assert run["trainable_parameters"] == 2 * (16 * 16 + 16) + 32 + 1 + 16 * 26
    assert "trainable parameters (peft)" in capsys.readouterr().out

    # an architecture override that contradicts the checkpoint is refused
    code = finetune_main([
        "--domain", "TinyT", "--data-dir", str(tmp_path / "data"), "--checkpoint", str(tmp_path / "pt" / "final"),
        "--output", str(tmp_path / "ft2"), "--quiet", "model.hidden_size=32",
    ])
    assert code == 2 and "conflicts with the checkpoint" in capsys.readouterr().err


def test_finetune_without_a_pretrained_model_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    from finetune.cli import main as finetune_main

    write_tiny_domain(tmp_path / "data")
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    code = finetune_main(["--domain", "Tiny", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "accelerate launch pretrain/run.py" in err and "--from-scratch" in err


def test_logq_correction_is_a_no_op_under_a_uniform_prior_and_lowers_popular_logits(tiny):
    torch.manual_seed(0)
    batch = batch_of(tiny)
    model = MISSRec(small_config(tiny, mode="inductive", seqseq_weight=0.0, reg_weight=0.0))
    model.attach_domain(tiny)
    apply_stage(model, "pretrain")
    model.eval()  # no dropout: the two losses see the same scores
    torch.manual_seed(1)
    plain = model.pretrain_loss_terms(batch)["seq_item"]
    model.config.pretrain_negatives = "in_batch_logq"
    model.target_log_prior.fill_(-3.0)  # uniform: subtracting a constant changes no softmax
    torch.manual_seed(1)
    assert close(model.pretrain_loss_terms(batch)["seq_item"], plain)
    # The prior comes from the training targets (add-one smoothed): frequent targets get a higher log-share.
    model.attach_domain(tiny)
    counts = np.bincount(tiny.splits["train"].target, minlength=tiny.num_items + 1)
    top, rare = int(counts[1:].argmax()) + 1, int(counts[1:].argmin()) + 1
    assert model.target_log_prior[top] > model.target_log_prior[rare]
    assert torch.isclose(model.target_log_prior[1:].exp().sum(), torch.tensor(1.0), atol=1e-4)


def test_all_items_pretraining_loss_is_the_full_softmax(tiny):
    batch = batch_of(tiny)
    model = MISSRec(small_config(tiny, mode="inductive", pretrain_negatives="all_items"))
    model.attach_domain(tiny)
    apply_stage(model, "pretrain")
    model.eval()
    seq = model.encode(batch["item_seq"], batch["item_seq_len"])[0]
    expected = torch.nn.functional.cross_entropy(model.score_items(seq, 1, tiny.num_items + 1), batch["target"] - 1)
    assert close(model.pretrain_loss_terms(batch)["seq_item"], expected)
    with pytest.raises(ValueError, match="pretrain_negatives"):
        MISSRec(small_config(tiny, pretrain_negatives="sampled"))


def test_feature_dropout_acts_in_training_only(tiny):
    torch.manual_seed(0)
    model = MISSRec(small_config(tiny, dropout=0.0, feature_dropout=0.5))
    model.attach_domain(tiny)
    model.refresh_interests()
    batch = batch_of(tiny, "test")
    model.eval()
    assert torch.equal(model.score_all(batch), model.score_all(batch))
    plain = MISSRec(small_config(tiny, dropout=0.0))
    plain.load_state_dict(model.state_dict())
    plain.attach_domain(tiny)
    plain.eval()
    assert torch.equal(plain.score_all(batch), model.score_all(batch))
    model.train()
    torch.manual_seed(1)
    first = model.encode(batch["item_seq"], batch["item_seq_len"])[0]
    second = model.encode(batch["item_seq"], batch["item_seq_len"])[0]
    assert not torch.allclose(first, second)


def test_moe_adapter_trains_in_peft_and_clusters_deterministically(tiny):
    torch.manual_seed(0)
    model = MISSRec(small_config(tiny, adapter="moe", adapter_experts=3))
    model.attach_domain(tiny)
    trainable = apply_stage(model, "peft")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("text_adapter.experts.2.") for n in names)
    assert not any(n.startswith("transformer.") for n in names)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in names)
    model.train()
    model.refresh_interests()
    labels = model.text_interest.clone()
    model.refresh_interests()  # gate noise would change the tokens between two calls
    assert torch.equal(labels, model.text_interest)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = batch_of(tiny)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="adapter must be linear or moe"):
        MISSRec(small_config(tiny, adapter="mlp"))


def test_inductive_items_without_content_are_no_candidates_as_in_unisrec(tiny):
    """MISSRec on images only: items 1-3 have no image, so in inductive mode nothing represents
    them; they score -inf (UniSRec's rule) instead of 0, which ranked them above every item with
    a negative cosine. Rows whose target is such an item are left out of the losses."""
    torch.manual_seed(0)
    model = MISSRec(small_config(tiny, mode="inductive", modalities="image"))
    model.attach_domain(tiny)
    model.refresh_interests()
    model.eval()
    batch = {"item_seq": torch.tensor([[4, 5, 6], [7, 8, 0]]), "item_seq_len": torch.tensor([3, 2])}
    scores = model.score_all(batch)
    assert torch.isinf(scores[:, :3]).all() and (scores[:, :3] < 0).all()
    assert torch.isfinite(scores[:, 3:]).all()
    model.train()
    with_missing = {**batch, "target": torch.tensor([2, 9])}
    only_missing = {**batch, "target": torch.tensor([1, 2])}
    for stage in ("finetune", "pretrain"):
        apply_stage(model, stage)
        loss = model.loss_terms(with_missing)
        assert all(torch.isfinite(term) for term in loss.values()), loss
        first = "cross_entropy" if stage == "finetune" else "seq_item"
        assert model.loss_terms(only_missing)[first].item() == 0.0
    # transductive mode has the ID embedding: every item is a candidate
    transductive = MISSRec(small_config(tiny, mode="transductive", modalities="image"))
    transductive.attach_domain(tiny)
    transductive.refresh_interests()
    assert torch.isfinite(transductive.eval().score_all(batch)).all()


def test_a_checkpoint_remembers_which_feature_set_it_read(tmp_path):
    """Pretrained on a second text feature set (like text_minilm next to CLIP's text), the
    checkpoint fine-tunes on a new domain that has that set, with no override naming it."""
    import json

    import yaml

    from finetune.cli import main as finetune_main
    from mmseqrec.data.format import FeatureSet, write_domain
    from pretrain.run import main as pretrain_main
    from tiny import tiny_tables

    for name, seed in (("SrcA", 1), ("SrcB", 2), ("NewT", 3)):
        tables = tiny_tables(name=name, seed=seed)  # "text" and "image" are 16-d
        rng = np.random.default_rng(seed)
        values = np.zeros((tables.num_items + 1, 8), dtype=np.float32)
        values[1:] = rng.normal(size=(tables.num_items, 8))
        present = np.ones(tables.num_items + 1, dtype=bool)
        present[0] = False
        tables.features["text_small"] = FeatureSet(values, present, "text", "random-8d")
        write_domain(tables, tmp_path / "data" / name)
    config = {
        "name": "small-text",
        "data": {"domains": ["SrcA", "SrcB"], "data_dir": str(tmp_path / "data")},
        "model": {"name": "missrec", "mode": "inductive", "modalities": "text", "text_feature": "text_small",
                  "hidden_size": 16, "num_heads": 2, "inner_size": 16, "interest_ratio": 0.1},
        "train": {"epochs": 1, "batch_size": 32},
    }
    (tmp_path / "pt.yaml").write_text(yaml.safe_dump(config))
    assert pretrain_main(["--config", str(tmp_path / "pt.yaml"), "--output", str(tmp_path / "pt"), "--quiet"]) == 0
    assert finetune_main([
        "--domain", "NewT", "--data-dir", str(tmp_path / "data"), "--checkpoint", str(tmp_path / "pt" / "final"),
        "--model", "missrec", "--output", str(tmp_path / "ft"), "--quiet", "train.epochs=1",
    ]) == 0
    run_config = yaml.safe_load((tmp_path / "ft" / "missrec-seed2020" / "config.yaml").read_text())
    assert run_config["model"]["text_feature"] == "text_small" and run_config["model"]["text_dim"] == 8
    assert json.loads((tmp_path / "ft" / "missrec-seed2020" / "metrics.json").read_text())["test"]["ndcg@10"] >= 0
