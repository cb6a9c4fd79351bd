"""Import the MISSRec checkpoint released with the paper into this suite's format.

    mmseqrec import-official-missrec MISSRec-FHCKM_mm_full-100-gamma1e-4.pth [--output DIR]
    finetune --domain Office --model missrec --checkpoint DIR

The authors' pretraining (gimpong/MM23-MISSRec, ``ddp_pretrain.py``) saves a torch pickle with
``config`` (a RecBole ``Config`` object), ``epoch``, ``state_dict`` and ``optimizer``. Its tensor
names follow their model class, whose transformer is a ``torch.nn.Transformer`` called
``trm_model``; this suite's MISSRec holds the same ``nn.Transformer`` as ``transformer``, so
the conversion is a renaming:

    official                      mmseqrec
    trm_model.<rest>              transformer.<rest>
    position_embedding.weight     position_embedding.weight
    LayerNorm.{weight,bias}       input_norm.{weight,bias}        (decoder-input LayerNorm)
    text_adaptor.{weight,bias}    text_adapter.{weight,bias}
    img_adaptor.{weight,bias}     image_adapter.{weight,bias}
    fusion_factor                 fusion_alpha                    (absent: static fusion)

Domain-specific tensors that fine-tuned checkpoints carry (``item_embedding``, the frozen
``plm_embedding`` / ``img_embedding`` tables and their empty masks, the interest tables) are
left out: their row order is RecBole's remapping of the authors' files, not a prepared
domain's, and features come from the domain. The result is a pretrained backbone
(``mode: inductive``; ``num_items`` is a placeholder of 1) for ``finetune --checkpoint``.

The architecture is read off the tensor shapes (width, positions, feature dimensions,
feed-forward width, layer counts). The number of heads is not visible in shapes: it comes from
the stored RecBole config when that can be read, otherwise from ``--num-heads`` (default 4,
the paper's).

The file is read with torch's weights-only unpickler. The RecBole classes it references (the
config object, enums) are replaced by inert stand-ins, so neither recbole nor any code from the
file runs; the stand-ins keep their pickled state, which is where the config values are read.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from mmseqrec.models.missrec import MISSRec, MISSRecConfig
from mmseqrec.savedmodel import model_card
from mmseqrec.training import save_model_atomically

RENAMES = (
    ("trm_model.", "transformer."),
    ("position_embedding.", "position_embedding."),
    ("LayerNorm.", "input_norm."),
    ("text_adaptor.", "text_adapter."),
    ("img_adaptor.", "image_adapter."),
    ("fusion_factor", "fusion_alpha"),
)
DOMAIN_SPECIFIC = (
    "item_embedding.", "plm_embedding.", "img_embedding.", "plm_embedding_empty_mask", "img_embedding_empty_mask",
    "plm_interest_lookup_table", "img_interest_lookup_table", "interest_embeddings",
)
DEFAULT_OUTPUT = Path("checkpoints") / "missrec-official"


class OfficialCheckpointError(ValueError):
    """The file is not a readable MISSRec checkpoint, or its architecture is not supported."""


class _StandIn:
    """Takes the place of a class from the pickle that is not importable or not trusted."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _stand_in(qualified_name: str) -> tuple[type, str]:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (_StandIn,), {"__module__": module, "__qualname__": name}), qualified_name


# -------------------------------------------------------------------------------------------
# Reading
# -------------------------------------------------------------------------------------------
def read_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, settings) of an official checkpoint. ``settings`` holds the RecBole config
    values when they can be read (``n_heads``, ``dataset``, ...) and the ``epoch``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        with torch.serialization.safe_globals([_stand_in(name) for name in unknown]):
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not readable"
        raise OfficialCheckpointError(f"{path} is not a readable torch checkpoint: {err}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        state, config = loaded["state_dict"], loaded.get("config")
    elif isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        state, config = loaded, None  # a bare state dict
    else:
        raise OfficialCheckpointError(f"{path}: expected a dict with 'state_dict' (the authors' format) or a state dict")
    settings = dict(_config_values(config))
    if isinstance(loaded, dict) and "epoch" in loaded:
        settings.setdefault("epoch", loaded["epoch"])
    # A model saved from inside DistributedDataParallel carries a "module." prefix.
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return state, settings


def _config_values(config: Any) -> dict:
    """The key -> value table of a pickled RecBole Config (``final_config_dict``), if present."""
    if isinstance(config, dict):
        return config.get("final_config_dict", config)
    state = getattr(config, "state", None)
    if isinstance(state, tuple):  # (dict state, slot state)
        state = state[0]
    if isinstance(state, dict) and isinstance(state.get("final_config_dict"), dict):
        return state["final_config_dict"]
    return {}


# -------------------------------------------------------------------------------------------
# Converting
# -------------------------------------------------------------------------------------------
def _rename(key: str) -> str | None:
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _layer_count(state: dict, stack: str) -> int:
    pattern = re.compile(rf"^trm_model\.{stack}\.layers\.(\d+)\.")
    return len({int(m.group(1)) for key in state if (m := pattern.match(key))})


def official_config(state: dict[str, torch.Tensor], settings: dict, num_heads: int | None = None) -> MISSRecConfig:
    """The MISSRecConfig the official tensors describe (shapes first, then the stored config)."""
    required = ("position_embedding.weight", "trm_model.encoder.layers.0.linear1.weight")
    missing = [key for key in required if key not in state]
    if missing:
        raise OfficialCheckpointError(f"not a MISSRec checkpoint: {', '.join(missing)} missing (found {', '.join(sorted(state)[:6])} ...)")
    fusion_setting = settings.get("item_mm_fusion", "dynamic_shared")
    if fusion_setting == "dynamic_instance" or (state.get("fusion_factor") is not None and state["fusion_factor"].dim() > 0):
        raise OfficialCheckpointError("item_mm_fusion 'dynamic_instance' (a fusion weight per item) is domain-specific and not supported")
    if settings.get("seq_mm_fusion", "add") != "add":
        raise OfficialCheckpointError(f"seq_mm_fusion '{settings['seq_mm_fusion']}' is not supported (only 'add', the paper's)")
    has_text, has_image = "text_adaptor.weight" in state, "img_adaptor.weight" in state
    if not (has_text or has_image):
        raise OfficialCheckpointError("the checkpoint has neither text_adaptor nor img_adaptor")
    stored_heads = settings.get("n_heads")
    if num_heads is not None and stored_heads is not None and int(stored_heads) != num_heads:
        raise OfficialCheckpointError(f"--num-heads {num_heads} contradicts the checkpoint's config (n_heads {stored_heads})")
    positions = state["position_embedding.weight"]
    values = {
        "num_items": 1,
        "mode": "inductive",
        "modalities": "text+image" if has_text and has_image else ("text" if has_text else "image"),
        "max_len": positions.shape[0],
        "hidden_size": positions.shape[1],
        "num_heads": int(stored_heads or num_heads or 4),
        "inner_size": state["trm_model.encoder.layers.0.linear1.weight"].shape[0],
        "num_encoder_layers": _layer_count(state, "encoder"),
        "num_decoder_layers": _layer_count(state, "decoder"),
        "fusion": "dynamic" if "fusion_factor" in state else "static",
    }
    if has_text:
        values["text_dim"] = state["text_adaptor.weight"].shape[1]
    if has_image:
        values["image_dim"] = state["img_adaptor.weight"].shape[1]
    for ours, theirs in (("layer_norm_eps", "layer_norm_eps"), ("dropout", "hidden_dropout_prob"), ("temperature", "temperature"),
                         ("initializer_range", "initializer_range"), ("seqseq_weight", "lambda"), ("reg_weight", "gamma")):
        if isinstance(settings.get(theirs), (int, float)):
            values[ours] = float(settings[theirs])
    if values["hidden_size"] % values["num_heads"]:
        raise OfficialCheckpointError(f"hidden size {values['hidden_size']} is not divisible by {values['num_heads']} heads")
    return MISSRecConfig(**values)


def convert_official_state_dict(state: dict[str, torch.Tensor], config: MISSRecConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(this suite's tensors, official keys left out as domain-specific). Every transferable
    tensor of ``MISSRec(config)`` must come out of the conversion with its shape."""
    converted, dropped, unknown = {}, [], []
    for key, value in state.items():
        new = _rename(key)
        if new is not None:
            converted[new] = value
        elif key.startswith(DOMAIN_SPECIFIC):
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise OfficialCheckpointError(f"unexpected tensors (not MISSRec's?): {', '.join(sorted(unknown)[:8])}")
    expected = {k: v for k, v in MISSRec(config).state_dict().items() if k.startswith(MISSRec.transferable_prefixes)}
    if config.fusion == "static":
        expected.pop("fusion_alpha")  # absent from the official static-fusion model, unused by ours
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    if missing or extra:
        raise OfficialCheckpointError(f"the tensors do not match MISSRec: missing {missing[:8]}, unexpected {extra[:8]}")
    for key, value in converted.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise OfficialCheckpointError(f"{key}: shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    return converted, sorted(dropped)


def parameter_groups(model: MISSRec) -> dict[str, int]:
    """Parameter counts by part, as the MISSRec spec lists them (adapters + norm + alpha, transformer, positions)."""
    groups = {"adapters, input norm, fusion": 0, "transformer": 0, "positions": 0, "item IDs": 0}
    for name, param in model.named_parameters():
        part = name.split(".")[0]
        key = {"transformer": "transformer", "position_embedding": "positions", "item_embedding": "item IDs"}.get(part, "adapters, input norm, fusion")
        groups[key] += param.numel()
    return groups


def import_official_missrec(path: str | Path, output: str | Path = DEFAULT_OUTPUT, num_heads: int | None = None, command: str | None = None) -> tuple[MISSRec, Path]:
    """Convert ``path`` and save it as a ``from_pretrained`` / ``finetune --checkpoint`` folder."""
    state, settings = read_official_checkpoint(path)
    config = official_config(state, settings, num_heads)
    converted, dropped = convert_official_state_dict(state, config)
    model = MISSRec(config)
    model.load_state_dict(converted, strict=False)  # interest tables stay empty: they belong to a domain
    model.eval()
    groups = parameter_groups(model)
    dataset = str(settings.get("dataset", "unknown (not in the checkpoint)"))
    resolved = {
        "train": {"stage": "pretrain"},
        "model": {"name": "MISSRec", **{k: v for k, v in vars(config).items()}},
        "command": command or f"mmseqrec import-official-missrec {path}",
        "data_summary": {"name": dataset, "domains": [{"name": dataset, "source": "the MISSRec authors' pretraining"}]},
    }
    results = {"epochs_run": settings.get("epoch"), "trainable_parameters": sum(groups.values())}
    card = model_card(resolved, results, model_cls=MISSRec) + (
        "\n## Provenance\n\n"
        f"Converted from the checkpoint released with the MISSRec paper (`{Path(path).name}`, epoch {settings.get('epoch', '?')}) "
        "by `mmseqrec import-official-missrec`. Parameters: "
        + ", ".join(f"{name} {count:,}" for name, count in groups.items() if count)
        + ". Domain-specific tensors left out: " + (", ".join(dropped) if dropped else "none") + ".\n"
    )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomically(model, output, card=card)
    return model, output


def _cmd_import(args: argparse.Namespace) -> int:
    import shlex
    import sys

    command = shlex.join(["mmseqrec", *sys.argv[1:]]) if sys.argv and sys.argv[0] else None
    model, output = import_official_missrec(args.checkpoint, args.output, args.num_heads, command=command)
    groups = parameter_groups(model)
    print(
        f"converted {sum(groups.values()):,} parameters ("
        + ", ".join(f"{name} {count:,}" for name, count in groups.items() if count)
        + f"); {model.config.num_heads} heads, width {model.config.hidden_size}, {model.config.modalities}"
    )
    print(f"saved to {output}; fine-tune it with\n  finetune --domain <Domain> --model missrec --checkpoint {output}")
    return 0


def register(commands) -> None:
    """Add ``mmseqrec import-official-missrec`` to the command-line parser."""
    parser = commands.add_parser(
        "import-official-missrec", help="convert the MISSRec authors' pretrained checkpoint (.pth) into this suite's format",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="the authors' .pth file (e.g. MISSRec-FHCKM_mm_full-100-gamma1e-4.pth)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help=f"folder to write (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads, when the checkpoint's config cannot be read (default 4)")
    parser.set_defaults(func=_cmd_import)
