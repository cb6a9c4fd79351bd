"""The model contract, and the small blocks several models share.

Every model is an ``nn.Module`` (with ``PyTorchModelHubMixin``) built from one config dataclass,
and implements:

- ``forward(batch) -> (B, D)`` sequence representation;
- ``loss(batch) -> scalar`` for its training objective (or ``loss_terms(batch)``, a dict of
  weighted terms whose sum is the loss, so that a failing run can say which term broke);
- ``score_items(seq_repr, first_id, end_id) -> (B, end_id - first_id)``: scores of items
  ``first_id .. end_id-1`` for sequence representations from ``forward``; ``score_all(batch)``
  is the whole catalogue 1..N;
- ``trainable_parameters(stage)``: which parameters train in ``pretrain``, ``finetune`` (full)
  and ``peft`` (parameter-efficient) stages, so freezing is declared in one place, printed and
  tested;
- ``item_tables(first_id, end_id)``: the vectors it scores items ``first_id .. end_id-1`` with,
  by kind (``id``, ``text``, ``image``, ...), for ``mmseqrec.load(...).item_vectors()``;
- ``score_candidates(seq_repr, ids) -> (B, C)``: the scores ``score_items`` gives, for a few
  items per row (``ids`` (B, C)), which is how a retrieved candidate set is re-ranked exactly;
- ``index_tables(first_id, end_id)`` / ``index_query(seq_repr)``: what a nearest-neighbour index
  of the items holds and is searched with (``mmseqrec.retrieval``);
- ``new_item_features()`` / ``add_items(features)``: content-only (inductive) models rank items
  added after training from their features alone; every other model refuses, saying why.

A cold-start split (``mmseqrec prepare cold``) holds items out of training: ``hold_out_items``
marks them, and every softmax over the catalogue in a loss leaves them out
(``without_held_out``), so that they are not even negatives.

A batch is a dict of tensors: ``item_seq`` (B, L) item ids, left-aligned with 0 padding on the
right, ``item_seq_len`` (B,), ``target`` (B,), ``user_id`` (B,).

Saving and loading come with the base class (with ``PyTorchModelHubMixin`` next to it in the
model's bases): ``save_pretrained(dir)`` writes ``model.safetensors`` and ``config.json`` (the
config dataclass plus ``model_type``, the model's name in ``MODELS`` and a class attribute);
``from_pretrained(dir or "org/name")`` loads them strictly (every tensor must match) and explains
Hub problems (offline, not found) in one sentence instead of a stack trace. The file and Hub
work is ``mmseqrec.savedmodel``'s, which knows no model, so the import runs one way: models ->
savedmodel.

Blocks shared by several models (a post-LN transformer layer) live here; models never inherit
from one another.
"""

import itertools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors.torch import save_model
from torch import nn

from mmseqrec.savedmodel import load_weights_into, model_card, resolve_model_folder

STAGES = ("pretrain", "finetune", "peft")


class NewItemsUnsupported(ValueError):
    """The model cannot rank items that were not in its training catalogue (the message says why)."""


class Recommender(nn.Module):
    """Base class holding the parts of the contract that are the same for every model."""

    #: The model's name in ``MODELS`` and in a saved ``config.json`` (each model sets its own).
    model_type: str = ""
    #: False for models fitted by counting (MostPop): the training loop skips gradient epochs.
    trainable: bool = True
    #: ``sequential`` (next item after a history, leave-one-out rows) or ``topn`` (general
    #: recommenders: per-user item sets, BPR batches, held-out items ranked with the training
    #: items masked); the training loop and the evaluator take the data and metrics from it.
    track: str = "sequential"
    #: The stage the model was last prepared for (``apply_stage``); some losses depend on it.
    stage: str = "finetune"
    #: State-dict key prefixes that carry over from a pretrained checkpoint to another domain;
    #: None for models that are not pretrained (everything in them is domain-specific).
    transferable_prefixes: tuple[str, ...] | None = None
    #: Config fields that define the architecture; a fine-tuned model takes them from its checkpoint.
    architecture_fields: tuple[str, ...] = ()

    @staticmethod
    def domain_config(domain, config: dict | None = None) -> dict:
        """Config values that come from the domain (the item count, feature dimensions).

        ``config`` holds the model config values set so far (from files and the command line),
        so a model can read which feature sets it was told to use.
        """
        return {"num_items": domain.num_items}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training loss as named, already weighted terms (summed by the training loop).
        Models with several terms override this (and define ``loss`` as their sum)."""
        return {"loss": self.loss(batch)}

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N) scores of items 1..N (column j is item j+1)."""
        return self.score_items(self(batch), 1, self.config.num_items + 1)

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of item ``ids[b, c]`` (ids (B, C) in 0..N) for row b: the numbers
        ``score_items`` gives those items, computed for them alone, so that re-ranking a few
        retrieved candidates costs B x C scores instead of B x N. Id 0 is padding: its score is
        meaningless and callers mask it."""
        raise NotImplementedError(f"{type(self).__name__} does not score candidate lists")

    def index_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """Per-item vectors (M, d) of items ``first_id .. end_id-1`` for a maximum-inner-product
        index, by table: the items a row scores highest have a large inner product
        ``index_query(seq) . vector`` in at least one table (the score is an increasing function
        of one table's product, or, for MISSRec, a convex combination of its tables' products).
        An all-zero row is an item the table does not represent (a missing modality); it stays
        out of that table's index. An empty dict: the model needs no index (MostPop).
        Default: ``item_tables``, searched with the sequence vector itself."""
        return self.item_tables(first_id, end_id)

    def index_query(self, seq_repr: torch.Tensor) -> torch.Tensor:
        """The vector every ``index_tables`` table is searched with for a sequence vector."""
        return seq_repr

    def hold_out_items(self, held_out) -> None:
        """Keep the items marked in ``held_out`` (bool (N+1,), or None for none) out of training:
        the softmaxes of the losses leave them out (``without_held_out``). Set by the training
        loop from a cold-start domain; not saved with the model."""
        device = next(itertools.chain(self.parameters(), self.buffers())).device
        mask = None if held_out is None else torch.as_tensor(np.asarray(held_out), dtype=torch.bool, device=device)
        if mask is not None and mask.shape != (self.config.num_items + 1,):
            raise ValueError(f"held-out items: expected a mask of {self.config.num_items + 1} entries (items + padding), got {tuple(mask.shape)}")
        self.register_buffer("held_out", mask, persistent=False)

    def without_held_out(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, N) training logits of items 1..N with the held-out items at -inf: an item that a
        cold-start split keeps out of training must not be learnt as a negative either (for a
        content model that would teach it to score those items' content low)."""
        held = self._buffers.get("held_out")
        return logits if held is None else logits.masked_fill(held[1:], float("-inf"))

    def trainable_parameters(self, stage: str) -> Iterator[tuple[str, nn.Parameter]]:
        """Default: every parameter trains in pretraining and full fine-tuning; no PEFT."""
        check_stage(stage)
        if stage == "peft":
            raise ValueError(f"{type(self).__name__} has no parameter-efficient fine-tuning; use stage 'finetune'")
        yield from self.named_parameters()

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """The vectors items ``first_id .. end_id-1`` are scored with, by kind: each (M, d_kind).

        A model documents how its score combines them with the sequence vector (a dot product
        with ``id``; MISSRec fuses per-modality cosines), which is what an index built from them
        must reproduce."""
        raise NotImplementedError(f"{type(self).__name__} does not expose item vectors")

    def new_item_features(self) -> list[str]:
        """The names of the feature sets an item added after training needs, for models that
        can rank such items from their content alone; ``NewItemsUnsupported`` (saying why) for
        the others. Default: the model keeps a learned vector per training item."""
        raise NewItemsUnsupported(
            f"{type(self).__name__} represents every item by an ID embedding learned in training; an item added afterwards "
            "has none, so it cannot be ranked without retraining. Content-only models can: MISSRec or UniSRec fine-tuned "
            "with --mode inductive."
        )

    def add_items(self, features: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Append items after the current catalogue: ``features[name] = (values (M, d), present (M,))``
        for every name of ``new_item_features()``. For inference: the model is not saved afterwards."""
        self.new_item_features()  # raises with the reason
        raise NotImplementedError(f"{type(self).__name__}.add_items")

    def on_epoch_start(self, epoch: int, accelerator=None) -> None:
        """Hook run before every training epoch (MISSRec refreshes its interests here)."""

    def attach_domain(self, domain) -> None:
        """Hook called before training or evaluation on ``domain``: models that need domain data
        which is not saved with them (item features, popularity counts) take it here."""

    # ---------------------------------------------------------------------------------------
    # Saving and loading (the PyTorchModelHubMixin hooks; files, cards and the Hub are mmseqrec.savedmodel)
    # ---------------------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_model(self, str(Path(save_directory) / "model.safetensors"))
        config = {"model_type": self.model_type or type(self).__name__.lower(), **asdict(self.config)}
        (Path(save_directory) / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def generate_model_card(self, *args, **kwargs):
        """The card ``save_pretrained`` writes when none is there yet: this suite's format, with
        the configuration only (a finished run writes the full card, with data and evaluation)."""
        return ModelCard(model_card({"model": {"name": type(self).__name__, **asdict(self.config)}}, None, model_cls=type(self)))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None, cache_dir=None, force_download=False, token=None, local_files_only=False, **kwargs):
        """Load a saved model from a folder or a Hub repository (``"org/name"``)."""
        folder = resolve_model_folder(
            pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download,
            token=token, local_files_only=local_files_only,
        )
        return super().from_pretrained(folder, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", strict: bool = True, **kwargs):
        hub_arguments = ("revision", "cache_dir", "force_download", "local_files_only", "token")
        model = cls(**{k: v for k, v in kwargs.items() if k not in hub_arguments})
        load_weights_into(model, Path(model_id) / "model.safetensors", strict=strict, device=map_location)
        return model.eval()


def content_domain_config(domain, config: dict | None, config_cls, dims: dict[str, str]) -> dict:
    """Config values that come from the domain for a content-based model: the item count and,
    for every ``dim_field -> name_field`` of ``dims``, the dimension of the feature set that
    ``name_field`` names (in ``config``, else the field's default in ``config_cls``)."""
    config = config or {}
    values = {"num_items": domain.num_items}
    for dim_field, name_field in dims.items():
        name = config.get(name_field, config_cls.__dataclass_fields__[name_field].default)
        if name in domain.features:
            values[dim_field] = domain.features[name].dim
    return values


def transductive_refusal(model: Recommender) -> NewItemsUnsupported:
    """Why a content model in transductive mode cannot take new items."""
    return NewItemsUnsupported(
        f"this {type(model).__name__} run is transductive: its scores and histories read an item-ID embedding learned in "
        "training, which an item added afterwards lacks. A run fine-tuned with --mode inductive (content only) ranks new "
        "items without retraining."
    )


def extend_buffer(model: nn.Module, name: str, rows) -> None:
    """Append ``rows`` to the buffer ``name`` along its first axis: per-item tables of a model
    that takes items after training (``add_items``) grow by one row per new item."""
    current = getattr(model, name)
    rows = torch.as_tensor(rows, dtype=current.dtype, device=current.device)
    setattr(model, name, torch.cat([current, rows.reshape(-1, *current.shape[1:])]))


def check_new_features(model: Recommender, features: dict, dims: dict[str, int]) -> int:
    """The number of items in ``features`` (name -> (values, present)), checked against the
    feature sets and dimensions ``dims`` the model reads; clear errors naming the set."""
    counts = set()
    for name, dim in dims.items():
        if name not in features:
            raise ValueError(f"{type(model).__name__} needs the feature set '{name}' for new items; got {', '.join(features) or 'none'}")
        values, present = features[name]
        if np.ndim(values) != 2 or np.shape(values)[1] != dim or np.shape(present) != (np.shape(values)[0],):
            raise ValueError(f"feature set '{name}' of the new items: expected values (M, {dim}) and a mask (M,), got {np.shape(values)} and {np.shape(present)}")
        counts.add(int(np.shape(values)[0]))
    if len(counts) > 1:
        raise ValueError(f"the new items' feature sets disagree on the number of items: {sorted(counts)}")
    return counts.pop() if counts else 0


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; expected one of {', '.join(STAGES)}")


def apply_stage(model: Recommender, stage: str) -> int:
    """Freeze everything except ``model.trainable_parameters(stage)``; return the trainable count."""
    trainable = {name for name, _ in model.trainable_parameters(stage)}
    model.stage = stage
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
        if name in trainable:
            count += param.numel()
    return count


def gather_last(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """hidden (B, L, D) -> (B, D): the state at each row's last real position (length - 1)."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, index).squeeze(1)


def keep_most_recent(item_seq: torch.Tensor, lengths: torch.Tensor, max_len: int, *aligned: torch.Tensor):
    """Cut left-aligned histories to their newest ``max_len`` items.

    ``item_seq`` (B, L) is 0-padded on the right; a row longer than ``max_len`` loses its
    oldest items (a plain ``item_seq[:, :max_len]`` would keep them and drop the newest, which
    are what a next-item model must read). ``aligned`` tensors (B, L, ...) laid out like
    ``item_seq`` (per-position features or flags) are shifted the same way, padding zeroed.
    Returns the cut ``item_seq``, the cut lengths and the shifted ``aligned`` tensors.
    """
    width = item_seq.shape[1]
    if width <= max_len:
        return (item_seq, lengths, *aligned)
    kept = lengths.clamp(max=max_len)
    positions = torch.arange(max_len, device=item_seq.device)[None, :]
    real = positions < kept[:, None]
    source = ((lengths - kept)[:, None] + positions).clamp(max=width - 1)
    shifted = []
    for tensor in (item_seq, *aligned):
        index = source.view(*source.shape, *([1] * (tensor.dim() - 2))).expand(-1, -1, *tensor.shape[2:])
        keep = real.view(*real.shape, *([1] * (tensor.dim() - 2)))
        taken = tensor.gather(1, index)
        shifted.append(torch.where(keep, taken, torch.zeros_like(taken)))
    return (shifted[0], kept, *shifted[1:])


def init_bert_style(module: nn.Module, std: float) -> None:
    """N(0, std) for Linear and Embedding weights, zero biases, LayerNorm 1/0 (BERT / RecBole)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(0.0, std)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


class PostLNTransformerLayer(nn.Module):
    """A BERT-style (post-LN) transformer layer, as RecBole's SASRec/BERT4Rec/UniSRec use.

    x <- LN(x + Drop(MHA(x)));  x <- LN(x + Drop(W2 GELU(W1 x)))
    Attention goes through ``scaled_dot_product_attention`` with a boolean mask (True = may
    attend), so the fused kernels are used where the mask allows.
    """

    def __init__(self, hidden_size: int, num_heads: int, inner_size: int, hidden_dropout: float, attn_dropout: float, layer_norm_eps: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_output = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = attn_dropout
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn_in = nn.Linear(hidden_size, inner_size)
        self.ffn_out = nn.Linear(inner_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """x (B, L, D); attend (B, 1, L, L) bool, True where query i may attend to key j."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.attn_dropout if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(x.shape)
        x = self.attn_norm(x + self.dropout(self.attn_output(context)))
        hidden = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.dropout(hidden))


def causal_padding_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: query i may attend to key j iff j <= i and j is a real item.

    Padding queries (right of the sequence) would attend to nothing; letting them see the
    first position keeps softmax finite, and their outputs are never read.
    """
    length = item_seq.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
    real_key = (item_seq > 0)[:, None, None, :]
    attend = causal[None, None] & real_key
    attend[..., 0] = True
    return attend
