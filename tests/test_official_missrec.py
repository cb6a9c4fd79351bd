"""Importing the MISSRec authors' checkpoint.

The fixture rebuilds the authors' pretrained model layout from the spec (missrec.md 2.1-2.2):
``torch.nn.Transformer`` as ``trm_model`` (d 300, 4 heads, 1 encoder + 1 decoder layer, FFN
256, GELU, eps 1e-12), ``position_embedding`` (50 x 300), the decoder-input ``LayerNorm``, the
adapters ``text_adaptor`` / ``img_adaptor`` (512 -> 300) and the scalar ``fusion_factor``; no
item table (pretraining). Its parameter counts are the spec's golden numbers. It is saved the
way their trainer saves (config object, epoch, state_dict, optimizer), with the config as an
instance of a RecBole class that cannot be imported when the file is read.
"""

import enum
import sys
import types

import pytest
import torch
from tiny import write_tiny_domain
from torch import nn

from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.hub import load_pretrained
from mmseqrec.models import MISSRec
from mmseqrec.models.base import apply_stage
from mmseqrec.official_missrec import (
    OfficialCheckpointError,
    import_official_missrec,
    read_official_checkpoint,
)
from mmseqrec.runs import load_transferable_weights, resolve_config

GOLDEN = {"adapters, input norm, fusion": 308_401, "transformer": 1_396_112, "positions": 15_000, "total": 1_719_513}


class OfficialPretrainedLayout(nn.Module):
    """Parameter names and shapes of the authors' MISSRec in the pretraining stage."""

    def __init__(self, with_fusion: bool = True):
        super().__init__()
        self.position_embedding = nn.Embedding(50, 300)
        self.trm_model = nn.Transformer(
            d_model=300, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=256, dropout=0.5,
            activation="gelu", layer_norm_eps=1e-12, batch_first=True, norm_first=False,
        )
        self.LayerNorm = nn.LayerNorm(300, eps=1e-12)
        if with_fusion:
            self.fusion_factor = nn.Parameter(torch.tensor(0.0))
        self.text_adaptor = nn.Linear(512, 300)
        self.img_adaptor = nn.Linear(512, 300)


def _fake_recbole_config(settings: dict):
    """An object of a class living in a (temporary) module ``recbole.config.configurator``,
    holding an enum of ``recbole.utils.enum_type``, as the authors' pickles do."""
    modules = {name: types.ModuleType(name) for name in ("recbole", "recbole.config", "recbole.config.configurator", "recbole.utils", "recbole.utils.enum_type")}
    model_type = enum.Enum("ModelType", {"SEQUENTIAL": 2})
    model_type.__module__ = "recbole.utils.enum_type"
    modules["recbole.utils.enum_type"].ModelType = model_type
    config_cls = type("Config", (), {"__module__": "recbole.config.configurator"})
    modules["recbole.config.configurator"].Config = config_cls
    config = config_cls()
    config.final_config_dict = {**settings, "MODEL_TYPE": model_type.SEQUENTIAL}
    config.device = torch.device("cpu")
    return config, modules


def write_official_checkpoint(path, with_config: bool = True, with_fusion: bool = True, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    layout = OfficialPretrainedLayout(with_fusion)
    with torch.no_grad():  # every tensor distinct from any default init, so a wrong mapping shows
        for param in layout.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    state = layout.state_dict()
    payload = {"epoch": 100, "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": list(range(len(state)))}]}}
    if with_config:
        config, modules = _fake_recbole_config({"n_heads": 4, "dataset": "FHCKM_mm_full", "hidden_dropout_prob": 0.5, "layer_norm_eps": 1e-12})
        sys.modules.update(modules)
        try:
            payload["config"] = config
            torch.save(payload, path)
        finally:
            for name in modules:
                del sys.modules[name]  # reading must work without recbole
    else:
        torch.save(state, path)
    return state


def test_the_fixture_has_the_spec_golden_parameter_counts():
    layout = OfficialPretrainedLayout()
    adapters = sum(p.numel() for n, p in layout.named_parameters() if n.split(".")[0] in ("text_adaptor", "img_adaptor", "LayerNorm", "fusion_factor"))
    assert adapters == GOLDEN["adapters, input norm, fusion"]
    assert sum(p.numel() for p in layout.trm_model.parameters()) == GOLDEN["transformer"]
    assert sum(p.numel() for p in layout.parameters()) == GOLDEN["total"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    path = folder / "MISSRec-FHCKM_mm_full-100-gamma1e-4.pth"
    state = write_official_checkpoint(path)
    return path, state


def test_import_command_converts_every_tensor(official, tmp_path, capsys):
    path, state = official
    assert "recbole" not in sys.modules
    assert mmseqrec_main(["import-official-missrec", str(path), "--output", str(tmp_path / "imported")]) == 0
    out = capsys.readouterr().out
    assert "converted 1,719,513 parameters" in out and "adapters, input norm, fusion 308,401" in out and "transformer 1,396,112" in out

    model = load_pretrained(tmp_path / "imported")
    cfg = model.config
    assert isinstance(model, MISSRec)
    assert (cfg.hidden_size, cfg.num_heads, cfg.inner_size, cfg.max_len, cfg.text_dim, cfg.image_dim) == (300, 4, 256, 50, 512, 512)
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.mode, cfg.fusion, cfg.modalities) == (1, 1, "inductive", "dynamic", "text+image")
    assert sum(p.numel() for p in model.parameters()) == GOLDEN["total"]
    ours = model.state_dict()
    renames = {"trm_model.": "transformer.", "LayerNorm.": "input_norm.", "text_adaptor.": "text_adapter.", "img_adaptor.": "image_adapter.",
               "fusion_factor": "fusion_alpha", "position_embedding.": "position_embedding."}
    for key, value in state.items():
        prefix = next(p for p in renames if key.startswith(p))
        assert torch.equal(ours[renames[prefix] + key[len(prefix):]], value), key
    card = (tmp_path / "imported" / "README.md").read_text()
    assert "FHCKM_mm_full" in card and "Provenance" in card and "MISSRec-FHCKM_mm_full-100-gamma1e-4.pth" in card


def test_fine_tuning_from_the_import_matches_the_weights_loaded_directly(official, tmp_path_factory):
    """The finetune path (import -> transferable weights) gives the same outputs as the official
    tensors copied into the model by hand, and the golden PEFT counts."""
    path, state = official
    root = tmp_path_factory.mktemp("data512")
    write_tiny_domain(root, feature_dim=512)
    domain = load_domain("Tiny", data_dir=root)
    _, imported = import_official_missrec(path, tmp_path_factory.mktemp("out") / "imported")

    spec = resolve_config("missrec", domain, overrides={"model": {"mode": "inductive"}}, checkpoint=imported)
    through_import = MISSRec(spec.model_config)
    loaded = load_transferable_weights(through_import, imported)
    assert len(loaded) == len(state)

    by_hand = MISSRec(spec.model_config)
    direct = {
        "position_embedding.weight": state["position_embedding.weight"],
        "input_norm.weight": state["LayerNorm.weight"], "input_norm.bias": state["LayerNorm.bias"],
        "text_adapter.weight": state["text_adaptor.weight"], "text_adapter.bias": state["text_adaptor.bias"],
        "image_adapter.weight": state["img_adaptor.weight"], "image_adapter.bias": state["img_adaptor.bias"],
        "fusion_alpha": state["fusion_factor"],
        **{"transformer." + k[len("trm_model."):]: v for k, v in state.items() if k.startswith("trm_model.")},
    }
    missing, unexpected = by_hand.load_state_dict(direct, strict=False)
    assert not unexpected and all(k.startswith("interest") or k.endswith("_interest") for k in missing)

    batch = SequenceCollator(domain.splits["test"], 50)(list(range(len(domain.splits["test"]))))
    outputs = []
    for model in (through_import, by_hand):
        model.attach_domain(domain)
        model.refresh_interests()
        model.eval()
        with torch.no_grad():
            outputs.append(model.score_all(batch))
    assert torch.equal(outputs[0], outputs[1])

    # The official nn.Transformer and ours compute the same thing on the same input.
    official_layout = OfficialPretrainedLayout()
    official_layout.load_state_dict(state)
    official_layout.eval()
    src, tgt = torch.randn(3, 7, 300), torch.randn(3, 5, 300)
    with torch.no_grad():
        assert torch.equal(official_layout.trm_model(src, tgt), through_import.transformer(src, tgt))

    assert apply_stage(through_import, "peft") == GOLDEN["adapters, input norm, fusion"]
    assert apply_stage(through_import, "finetune") == GOLDEN["total"]
    transductive = MISSRec(resolve_config("missrec", domain, checkpoint=imported).model_config)
    assert apply_stage(transductive, "peft") == GOLDEN["adapters, input norm, fusion"] + 300 * (domain.num_items + 1)


def test_checkpoints_without_config_or_fusion_and_clear_refusals(tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    write_official_checkpoint(bare, with_config=False, with_fusion=False)
    state, settings = read_official_checkpoint(bare)
    assert settings == {} and "fusion_factor" not in state
    model, _ = import_official_missrec(bare, tmp_path / "bare-out", num_heads=6)
    assert (model.config.num_heads, model.config.fusion) == (6, "static")  # heads from the option, static fusion

    with_config = tmp_path / "with-config.pth"
    write_official_checkpoint(with_config)
    with pytest.raises(OfficialCheckpointError, match="contradicts the checkpoint's config"):
        import_official_missrec(with_config, tmp_path / "x", num_heads=6)

    per_item = tmp_path / "per-item.pth"
    state = OfficialPretrainedLayout().state_dict()
    state["fusion_factor"] = torch.zeros(10)
    torch.save({"state_dict": state}, per_item)
    with pytest.raises(OfficialCheckpointError, match="dynamic_instance"):
        import_official_missrec(per_item, tmp_path / "y")

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    assert mmseqrec_main(["import-official-missrec", str(broken), "--output", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable torch checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "z").exists()
