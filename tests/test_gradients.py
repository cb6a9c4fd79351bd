"""Every model, in its default configuration, gets finite and bounded gradients from one training
step on a batch with padding and missing modalities.

The batch holds the awkward rows a real domain has: histories whose items all lack an image, or
all lack a text, an item with no content at all, a one-item history, a history longer than the
window, and right padding everywhere. A normalisation applied to an all-zero or constant vector
(a LayerNorm with eps 1e-12, ``F.normalize`` of a zero row) scales its backward by up to 1e6 or
1e12, which shows here as gradients far above the bound, long before it shows as a NaN.
"""

import pytest
import torch
from tiny import tiny_tables

from mmseqrec.data.format import write_domain
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MODELS
from mmseqrec.models.base import apply_stage

# A gradient of this size on a tiny model at initialisation means a degenerate normalisation;
# healthy steps here are below 10.
GRADIENT_BOUND = 1e4

NO_IMAGE = (1, 2, 3)  # tiny_tables: items 1..3 have text but no image
NO_TEXT = (4, 5)
NO_CONTENT = (6,)


@pytest.fixture(scope="module")
def ragged_domain(tmp_path_factory):
    tables = tiny_tables(name="Ragged")
    for item in NO_TEXT + NO_CONTENT:
        tables.features["text"].present[item] = False
        tables.features["text"].values[item] = 0
    for item in NO_CONTENT:
        tables.features["image"].present[item] = False
        tables.features["image"].values[item] = 0
    root = tmp_path_factory.mktemp("data")
    write_domain(tables, root / tables.name)
    return load_domain(tables.name, data_dir=root)


def ragged_batch() -> dict[str, torch.Tensor]:
    histories = [
        list(NO_IMAGE),  # no image anywhere in the history
        list(NO_TEXT),  # no text anywhere
        list(NO_CONTENT),  # one item with neither
        [6, 1, 4],  # every modality missing somewhere, none missing everywhere
        [9],
        list(range(7, 40)) + list(range(1, 30)),  # longer than every model's window (62 items)
    ]
    targets = [7, 8, 9, 10, 11, 12]
    width = max(len(h) for h in histories) + 3  # right padding on every row
    seq = torch.zeros(len(histories), width, dtype=torch.long)
    for row, history in enumerate(histories):
        seq[row, : len(history)] = torch.tensor(history)
    return {
        "item_seq": seq,
        "item_seq_len": torch.tensor([len(h) for h in histories]),
        "target": torch.tensor(targets),
        "user_id": torch.arange(len(histories)),
    }


def build(name: str, domain, stage: str, **overrides):
    model_cls, config_cls = MODELS[name]
    values = {**model_cls.domain_config(domain, overrides), **overrides}
    model = model_cls(config_cls(**values))
    model.attach_domain(domain)
    apply_stage(model, stage)
    model.train()
    model.on_epoch_start(0)
    return model


CASES = [
    ("sasrec", "finetune", {}),
    ("bert4rec", "finetune", {}),
    ("mmmlp", "finetune", {}),
    ("unisrec", "finetune", {}),
    ("unisrec", "finetune", {"mode": "inductive"}),
    ("unisrec", "pretrain", {}),
    ("missrec", "finetune", {}),
    ("missrec", "finetune", {"mode": "inductive"}),
    ("missrec", "pretrain", {}),
]


@pytest.mark.parametrize(("name", "stage", "overrides"), CASES, ids=[f"{n}-{s}-{'-'.join(map(str, o.values())) or 'default'}" for n, s, o in CASES])
def test_one_step_on_padding_and_missing_modalities_has_bounded_gradients(ragged_domain, name, stage, overrides):
    torch.manual_seed(0)
    model = build(name, ragged_domain, stage, **overrides)
    loss = model.loss(ragged_batch())
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads, f"{name}: no parameter received a gradient"
    for param_name, grad in grads.items():
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient in {param_name}"
    largest = max(grads, key=lambda n: float(grads[n].abs().max()))
    assert float(grads[largest].abs().max()) < GRADIENT_BOUND, (
        f"{name}: gradient {float(grads[largest].abs().max()):.3g} in {largest}"
    )


def test_mostpop_has_no_gradient_step_and_finite_scores(ragged_domain):
    model = build("mostpop", ragged_domain, "finetune")
    assert not model.trainable
    assert not any(p.requires_grad for p in model.parameters())
    assert torch.isfinite(model.score_all(ragged_batch())).all()
