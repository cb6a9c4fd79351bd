"""The switches of the fast (GPU) path give the results of the plain path, checked on the CPU:
fused Adam, ``torch.compile`` of the training step, bf16 autocast, and the length-grouped
batches that are now the training default (while pretraining keeps uniform batches)."""

from pathlib import Path

import pytest
import torch
from tiny import write_tiny_domains
from tolerances import assert_close

from mmseqrec import training
from mmseqrec.data.loading import load_domain
from mmseqrec.models import SASRec, SASRecConfig
from mmseqrec.training import LengthGroupedBatchSampler, TrainConfig, Trainer, make_adam, make_loader
from pretrain.run import build_parser, read_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return load_domain("Tiny", data_dir=write_tiny_domains(tmp_path_factory.mktemp("data")))


def _model(domain) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=domain.num_items, hidden_size=16, num_heads=2, inner_size=16,
                                hidden_dropout=0.0, attn_dropout=0.0))
    model.attach_domain(domain)
    return model


def _train_steps(domain, fused: bool, steps: int = 3) -> dict[str, torch.Tensor]:
    model = _model(domain)
    cfg = TrainConfig(lr=1e-2, weight_decay=1e-4, fused_adam=fused)
    optimizer = make_adam(model, cfg, torch.device("cpu"))
    loader = make_loader(domain, "train", 32, 20, True, 0)
    for step, batch in zip(range(steps), loader):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fused_adam_takes_the_steps_of_plain_adam(domain):
    plain, fused = _train_steps(domain, False), _train_steps(domain, True)
    for key in plain:
        if key.endswith("key.bias"):
            # The softmax ignores a key bias: its gradient is rounding noise, which Adam's
            # normalisation blows up to full-size steps in both versions alike.
            continue
        assert_close(fused[key], plain[key], key)
    assert not torch.equal(plain["item_embedding.weight"], _model(domain).item_embedding.weight.detach())  # it trained


def test_fused_adam_is_on_by_default_only_on_a_gpu(domain):
    model = _model(domain)
    assert make_adam(model, TrainConfig(), torch.device("cpu")).defaults["fused"] is False
    assert make_adam(model, TrainConfig(fused_adam=True), torch.device("cpu")).defaults["fused"] is True


def test_compiled_training_step_gives_the_uncompiled_losses_and_gradients(domain):
    batches = list(make_loader(domain, "train", 64, 20, True, 0))[:2]
    assert batches[0]["item_seq"].shape[1] != batches[1]["item_seq"].shape[1] or len(batches) == 2
    results = {}
    for compiled in (False, True):
        model = _model(domain).train()
        step = training._LossModule(model)
        if compiled:
            step = torch.compile(step, backend="aot_eager", dynamic=True)
        losses, grads = [], []
        for batch in batches:
            model.zero_grad()
            loss = sum(step(batch).values())
            loss.backward()
            losses.append(loss.detach())
            grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        results[compiled] = losses, grads
    for (plain_loss, plain_grads), (loss, grads) in zip(zip(*results[False]), zip(*results[True])):
        assert_close(loss, plain_loss, "loss")
        for key, value in plain_grads.items():
            assert_close(grads[key], value, key)


def test_trainer_compiles_the_step_when_asked(domain, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: calls.append(kwargs) or module)
    Trainer(_model(domain), domain, TrainConfig(epochs=1, keep_checkpoints=0, compile=True, compile_backend="aot_eager"), tmp_path, quiet=True).fit()
    assert calls == [{"backend": "aot_eager", "dynamic": True}]


def test_bf16_autocast_scores_match_fp32_to_bf16_precision(domain):
    model = _model(domain).eval()
    batch = next(iter(make_loader(domain, "test", 64, 20, False, 0)))
    with torch.no_grad():
        exact = model.score_items(model(batch), 1, domain.num_items + 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.score_items(model(batch), 1, domain.num_items + 1)
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: about 0.4% relative per operation, a few % over the model.
    assert_close(low.float(), exact, "scores", rtol=5e-2, atol=2e-2)


def test_training_groups_batches_by_length_by_default_and_pretraining_does_not(domain, tmp_path, monkeypatch):
    assert TrainConfig().group_by_length is True
    for config, grouped in (("demo.yaml", False), ("amazon-text.yaml", True)):
        args = build_parser().parse_args(["--config", str(ROOT / "pretrain" / "configs" / config)])
        assert read_config(args)[3].group_by_length is grouped, config
    samplers = []

    def recording(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        samplers.append(type(loader.batch_sampler))
        return loader

    monkeypatch.setattr(training, "make_loader", recording)
    Trainer(_model(domain), domain, TrainConfig(epochs=1, keep_checkpoints=0), tmp_path, quiet=True).fit()
    assert LengthGroupedBatchSampler in samplers
    samplers.clear()
    Trainer(_model(domain), domain, TrainConfig(epochs=1, keep_checkpoints=0, group_by_length=False), tmp_path / "u", quiet=True).fit()
    assert LengthGroupedBatchSampler not in samplers
