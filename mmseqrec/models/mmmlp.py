"""MMMLP (Liang et al., WWW 2023): a pure-MLP multimodal sequential recommender.

Three layers, as in the paper:
1. **Feature Mixer Layer**: one MLP-Mixer branch per input sequence: item IDs (a learned
   embedding), text and image (the domain's frozen item features, each projected linearly to
   the model width D). A branch is LayerNorm then ``num_layers`` mixer blocks; a block mixes
   each channel across the ``max_len`` sequence slots (token mixing, L -> e L -> L) and then
   each slot across its channels (channel mixing, D -> e D -> D), each with a pre-LayerNorm, GELU,
   dropout and a residual. There is no attention and no positional embedding: the token-mixing
   weights belong to absolute slots.
2. **Fusion Mixer Layer**: the three branch outputs at the readout slot are stacked as three
   tokens, mixed across modalities and channels by ``fusion_layers`` mixer blocks, then
   concatenated, LayerNorm'd and projected 3D -> D.
3. **Prediction Layer**: LayerNorm, then dot products with the item-ID embeddings and
   cross-entropy over all items (``item_scoring: id+content`` adds the projected text and image
   features to the item side, so that content also shapes the candidates).

Histories are laid out in a fixed window of ``max_len`` slots. By default (``align: recent``)
the newest item sits in the last slot and is the readout, so a token-mixing weight always means
"k items before the newest", whatever the user's history length; ``align: start`` reproduces
the reference's left-aligned layout, read at the last real slot.

**Missing modalities are masked.** Padding slots and slots whose item lacks a modality are
zeroed at the input of every token-mixing step, so they pass nothing to other slots; the
feature row of such an item is never read. (A zero feature row taken as data would enter the
branch as the projection bias, like a real but strange item.)

Fixes of the official code (Applied-Machine-Learning-Lab/MMMLP, spec section 1.4):
- image features are loaded and used (the reference never loads them);
- every block of a modality branch is applied to the previous block's output (the reference
  applies one block to the same input n times, an effective depth of 1; ``modality_layers: 1``
  reproduces that depth) and has its own weights (``share_layer_weights: true`` ties them, as
  the reference's ID branch does);
- hidden size, depth, expansions and max length are configuration, not constants (the reference
  reshapes to (rows, 50, 128)); features are gathered by tensor indexing on any device, not
  looked up item by item in Python on ``cuda:0``;
- the prediction LayerNorm is its own module (the reference reuses the ID input's LayerNorm).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.base import Recommender, content_domain_config, init_bert_style

MODALITIES = ("text+image", "text", "image", "none")
ALIGNMENTS = ("recent", "start")
ITEM_SCORING = ("id", "id+content")


@dataclass
class MMMLPConfig:
    """Configuration of MMMLP.

    Attributes:
        num_items: N, the number of items without padding (set from the domain).
        text_dim: dimension of the frozen text features (set from the domain).
        image_dim: dimension of the frozen image features (set from the domain).
        modalities: content branches next to the ID branch: ``text+image``, ``text``, ``image``
            or ``none`` (ID branch only, an MLP4Rec-like model).
        max_len: sequence slots L of the token-mixing MLPs; longer histories keep their most
            recent items.
        hidden_size: model width D (128 in the reference code).
        num_layers: mixer blocks in the ID branch.
        modality_layers: mixer blocks in each content branch; 0 means ``num_layers``
            (1 reproduces the reference's effective depth).
        share_layer_weights: one block per branch applied repeatedly (the reference's ID branch)
            instead of a block with its own weights per layer.
        token_expansion: hidden width of token mixing as a multiple of L (4).
        channel_expansion: hidden width of channel mixing as a multiple of D (4).
        fusion_layers: mixer blocks across the modality tokens before the fusion projection;
            0 is the reference code's concatenate-and-project.
        dropout: dropout inside every mixer MLP and on the branch inputs.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the N(0, std) initialisation of Linear and Embedding weights.
        align: ``recent`` (newest item in the last slot, read there) or ``start`` (left-aligned,
            read at the last real slot, as the reference).
        item_scoring: ``id`` (candidates are item-ID embeddings, as the reference) or
            ``id+content`` (ID embedding + projected text + projected image of the candidate).
        text_feature: name of the text feature set in the domain.
        image_feature: name of the image feature set in the domain.
    """

    num_items: int = 0
    text_dim: int = 512
    image_dim: int = 512
    modalities: str = "text+image"
    max_len: int = 50
    hidden_size: int = 128
    num_layers: int = 2
    modality_layers: int = 0
    share_layer_weights: bool = False
    token_expansion: int = 4
    channel_expansion: int = 4
    fusion_layers: int = 1
    dropout: float = 0.2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    align: str = "recent"
    item_scoring: str = "id"
    text_feature: str = "text"
    image_feature: str = "image"


def fixed_window(item_seq: torch.Tensor, lengths: torch.Tensor, width: int, align: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay each history out in exactly ``width`` slots, keeping its most recent items.

    Args:
        item_seq: (B, L) left-aligned histories, 0-padded on the right.
        lengths: (B,) history lengths (at least 1).
        width: slots of the window.
        align: ``recent`` puts the newest item in the last slot (padding on the left);
            ``start`` puts the oldest kept item in the first slot (padding on the right).

    Returns:
        (B, width) the window and (B,) the slot of the newest item (the readout slot).
    """
    kept = lengths.clamp(max=width)
    slots = torch.arange(width, device=item_seq.device)[None, :]
    offset = slots - (width - kept)[:, None] if align == "recent" else slots.expand(item_seq.shape[0], -1)
    real = (offset >= 0) & (offset < kept[:, None])
    source = ((lengths - kept)[:, None] + offset).clamp(min=0, max=item_seq.shape[1] - 1)
    window = torch.where(real, item_seq.gather(1, source), torch.zeros_like(source))
    newest = torch.full_like(kept, width - 1) if align == "recent" else kept - 1
    return window, newest


class MixerBlock(nn.Module):
    """One MLP-Mixer block over (B, T, D) with a per-token presence mask.

    x <- x + Drop(W_b Drop(GELU(W_a (mask * LN(x)))))   along the T axis (token mixing)
    x <- x + Drop(W_d Drop(GELU(W_c LN(x))))            along the D axis (channel mixing)
    Masked tokens are zeroed before token mixing, so they contribute nothing to other tokens.

    Channel mixing acts on each token alone, so it is only computed where ``compute`` is True
    (the slots holding an item). A padding slot feeds nothing to any other slot and is never
    read, so skipping it changes no output; with histories of about 8 items in 50 slots it
    saves most of the block's work.
    """

    def __init__(self, num_tokens: int, width: int, token_expansion: int, channel_expansion: int, dropout: float, eps: float):
        super().__init__()
        self.token_norm = nn.LayerNorm(width, eps=eps)
        self.token_mlp = nn.Sequential(
            nn.Linear(num_tokens, token_expansion * num_tokens), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(token_expansion * num_tokens, num_tokens), nn.Dropout(dropout),
        )
        self.channel_norm = nn.LayerNorm(width, eps=eps)
        self.channel_mlp = nn.Sequential(
            nn.Linear(width, channel_expansion * width), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(channel_expansion * width, width), nn.Dropout(dropout),
        )

    def forward(
        self, x: torch.Tensor, present: torch.Tensor | None = None, compute: torch.Tensor | None = None, first_slot: int = 0,
    ) -> torch.Tensor:
        """x (B, T, D); present (B, T) bool: tokens that take part in token mixing (default all);
        compute (B, T) bool: tokens whose output is needed (default all).

        ``x`` may hold only the slots ``first_slot .. first_slot + T - 1`` of the block's
        ``num_tokens``, when every other slot is padding in every row: a padding slot is zeroed
        before token mixing (it adds nothing to the hidden units) and its output is never read,
        so leaving it out changes no output of the kept slots. It saves the token-mixing matrix
        products' share of those slots (the hidden layer keeps its 4 x ``num_tokens`` units).
        """
        mixed = self.token_norm(x)
        if present is not None:
            mixed = mixed * present[..., None].to(mixed.dtype)
        x = x + self._token_mixing(mixed.transpose(1, 2), first_slot).transpose(1, 2)
        if compute is None:
            return x + self.channel_mlp(self.channel_norm(x))
        needed = x[compute]
        return x.index_put((compute,), needed + self.channel_mlp(self.channel_norm(needed)))

    def _token_mixing(self, columns: torch.Tensor, first_slot: int) -> torch.Tensor:
        """The token MLP on (B, D, T) inputs holding slots ``first_slot .. first_slot + T - 1``."""
        expand, activation, hidden_dropout, contract, output_dropout = self.token_mlp
        kept = slice(first_slot, first_slot + columns.shape[-1])
        hidden = hidden_dropout(activation(F.linear(columns, expand.weight[:, kept], expand.bias)))
        return output_dropout(F.linear(hidden, contract.weight[kept], contract.bias[kept]))


class MixerBranch(nn.Module):
    """LayerNorm and dropout on the input, then ``depth`` mixer blocks over the sequence slots."""

    def __init__(self, cfg: MMMLPConfig, depth: int):
        super().__init__()
        self.input_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.input_dropout = nn.Dropout(cfg.dropout)
        distinct = 1 if cfg.share_layer_weights else depth
        self.blocks = nn.ModuleList(
            MixerBlock(cfg.max_len, cfg.hidden_size, cfg.token_expansion, cfg.channel_expansion, cfg.dropout, cfg.layer_norm_eps)
            for _ in range(distinct)
        )
        self.depth = depth

    def forward(self, x: torch.Tensor, present: torch.Tensor, compute: torch.Tensor | None = None, first_slot: int = 0) -> torch.Tensor:
        """x (B, T, D) inputs of slots ``first_slot ..`` (T <= L; see ``MixerBlock.forward``);
        present: slots that feed token mixing; compute: slots whose states are needed (the item
        slots; a missing modality's slot is still read if newest)."""
        x = self.input_dropout(self.input_norm(x))
        for layer in range(self.depth):
            x = self.blocks[layer % len(self.blocks)](x, present, compute, first_slot)
        return x


class MMMLP(Recommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["sequential-recommendation", "multimodal", "mmmlp"]):
    model_type = "mmmlp"
    architecture_fields = (
        "text_dim", "image_dim", "modalities", "max_len", "hidden_size", "num_layers", "modality_layers",
        "share_layer_weights", "token_expansion", "channel_expansion", "fusion_layers", "layer_norm_eps", "align", "item_scoring",
    )

    def __init__(self, config: MMMLPConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("MMMLPConfig.num_items must be set to the number of items of the domain")
        for field, value, allowed in (
            ("modalities", config.modalities, MODALITIES),
            ("align", config.align, ALIGNMENTS),
            ("item_scoring", config.item_scoring, ITEM_SCORING),
        ):
            if value not in allowed:
                raise ValueError(f"MMMLPConfig.{field} must be one of {', '.join(allowed)}, got '{value}'")
        for field in ("max_len", "hidden_size", "num_layers", "token_expansion", "channel_expansion"):
            if getattr(config, field) < 1:
                raise ValueError(f"MMMLPConfig.{field} must be at least 1, got {getattr(config, field)}")
        if config.modality_layers < 0 or config.fusion_layers < 0:
            raise ValueError("MMMLPConfig.modality_layers and fusion_layers must not be negative")
        self.config = config
        self.content = [m for m in ("text", "image") if m in config.modalities]
        width = config.hidden_size
        content_depth = config.modality_layers or config.num_layers

        self.item_embedding = nn.Embedding(config.num_items + 1, width, padding_idx=0)
        self.id_branch = MixerBranch(config, config.num_layers)
        self.projections = nn.ModuleDict({m: nn.Linear(self._feature_dim(m), width) for m in self.content})
        self.content_branches = nn.ModuleDict({m: MixerBranch(config, content_depth) for m in self.content})
        streams = 1 + len(self.content)
        self.fusion_blocks = nn.ModuleList(
            MixerBlock(streams, width, config.token_expansion, config.channel_expansion, config.dropout, config.layer_norm_eps)
            for _ in range(config.fusion_layers)
        )
        self.fusion_norm = nn.LayerNorm(streams * width, eps=config.layer_norm_eps)
        self.fusion_projection = nn.Linear(streams * width, width)
        self.prediction_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.apply(lambda m: init_bert_style(m, config.initializer_range))

        # Frozen item features come from the domain (``attach_domain``) and are not saved.
        for modality in self.content:
            dim = self._feature_dim(modality)
            self.register_buffer(f"{modality}_features", torch.zeros(config.num_items + 1, dim), persistent=False)
            self.register_buffer(f"{modality}_present", torch.zeros(config.num_items + 1, dtype=torch.bool), persistent=False)
        self.features_attached = not self.content
        # Compute only the window slots some row of the batch uses (exact; see ``_window``).
        # Not configuration: False exists to check that trimming changes nothing.
        self.trim_window = True

    def _feature_dim(self, modality: str) -> int:
        return self.config.text_dim if modality == "text" else self.config.image_dim

    # ---------------------------------------------------------------------------------------
    # Domain data
    # ---------------------------------------------------------------------------------------
    @staticmethod
    def domain_config(domain, config: dict | None = None) -> dict:
        """Config values that come from the domain: item count and the dimensions of the feature
        sets named by ``text_feature`` / ``image_feature`` (in ``config``, else the defaults)."""
        return content_domain_config(domain, config, MMMLPConfig, {"text_dim": "text_feature", "image_dim": "image_feature"})

    def attach_domain(self, domain) -> None:
        """Copy the domain's frozen features and presence masks into the model (not saved with it)."""
        cfg = self.config
        if domain.num_items != cfg.num_items:
            raise ValueError(f"model built for {cfg.num_items} items, domain {domain.name} has {domain.num_items}")
        for modality in self.content:
            name = cfg.text_feature if modality == "text" else cfg.image_feature
            if name not in domain.features:
                raise ValueError(
                    f"MMMLP ({cfg.modalities}) needs the feature set '{name}' but domain {domain.name} has "
                    f"{', '.join(domain.features) or 'none'}; extract it first or set model.modalities"
                )
            feature = domain.features[name]
            if feature.dim != self._feature_dim(modality):
                raise ValueError(f"feature '{name}' of {domain.name} is {feature.dim}-d, the model expects {self._feature_dim(modality)}")
            getattr(self, f"{modality}_features").copy_(torch.tensor(np.asarray(feature.values), dtype=torch.float32))
            getattr(self, f"{modality}_present").copy_(torch.as_tensor(feature.present))
        self.features_attached = True

    # ---------------------------------------------------------------------------------------
    # Sequence side
    # ---------------------------------------------------------------------------------------
    def _projected(self, modality: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected features of ``ids`` (any shape) and their presence; missing rows are not read.

        Each distinct present item is projected once and scattered back; absent items (and
        padding) get zeros without their feature row ever being touched.
        """
        present = getattr(self, f"{modality}_present")[ids] & (ids > 0)
        out = torch.zeros(*ids.shape, self.config.hidden_size, device=ids.device, dtype=self.item_embedding.weight.dtype)
        # Projected even when no item is present, so that the projection is always part of the
        # graph (DistributedDataParallel expects every parameter to get a gradient).
        unique, inverse = torch.unique(ids[present], return_inverse=True)
        projected = self.projections[modality](getattr(self, f"{modality}_features")[unique])
        out[present] = projected[inverse].to(out.dtype)
        return out, present

    def _window(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The batch's histories in the fixed window, cut to the slots some row uses.

        Returns the (B, T) window slots ``first_slot .. first_slot + T - 1``, the readout slot of
        each row within them, and ``first_slot``. Slots that are padding in every row are left
        out (``trim_window``, on by default; the outputs are the same, see ``MixerBlock``):
        with length-grouped batches most batches need a handful of the 50 slots.
        """
        cfg = self.config
        lengths = batch["item_seq_len"]
        used = int(lengths.clamp(max=cfg.max_len).max()) if self.trim_window else cfg.max_len
        # A window of `used` slots is exactly the used part of the full one: the last `used`
        # slots when the newest item sits in the last slot, the first `used` otherwise.
        window, newest = fixed_window(batch["item_seq"], lengths, used, cfg.align)
        return window, newest, (cfg.max_len - used if cfg.align == "recent" else 0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.features_attached:
            raise RuntimeError("MMMLP needs its item features: call model.attach_domain(domain) first")
        window, newest, first_slot = self._window(batch)
        rows = torch.arange(window.shape[0], device=window.device)
        real = window > 0
        streams = [self.id_branch(self.item_embedding(window), real, real, first_slot)[rows, newest]]
        available = [torch.ones_like(newest, dtype=torch.bool)]
        for modality in self.content:
            features, present = self._projected(modality, window)
            # A history in which no item has this modality has nothing for its branch to read:
            # every slot would enter as the same vector, token mixing would add the same value
            # to every channel, and the branch's LayerNorms would normalise constant rows, whose
            # backward is scaled by 1/sqrt(eps) = 1e6 each (gradients of 1e10 were measured).
            # Such rows skip the branch; their stream is zero and masked out of the fusion.
            # (The branch still runs, on no rows, when a whole batch lacks the modality, so that
            # its parameters stay in the graph for DistributedDataParallel.)
            has_any = present.any(dim=1)
            stream = torch.zeros_like(streams[0])
            branch = self.content_branches[modality](features[has_any], present[has_any], real[has_any], first_slot)
            stream[has_any] = branch[torch.arange(branch.shape[0], device=branch.device), newest[has_any]]
            streams.append(stream)
            available.append(has_any)
        fused = torch.stack(streams, dim=1)  # (B, modalities, D)
        available = torch.stack(available, dim=1)
        for block in self.fusion_blocks:
            fused = block(fused, available)
        fused = self.fusion_projection(self.fusion_norm(fused.flatten(1)))
        return self.prediction_norm(fused)

    # ---------------------------------------------------------------------------------------
    # Item side
    # ---------------------------------------------------------------------------------------
    def item_vectors(self, first_id: int, end_id: int) -> torch.Tensor:
        """(end_id - first_id, D) candidate vectors: the ID embedding (+ projected content)."""
        vectors = self.item_embedding.weight[first_id:end_id]
        return self._with_content(vectors, torch.arange(first_id, end_id, device=vectors.device))

    def _with_content(self, vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``vectors`` (ID embeddings of ``ids``, any shape) plus their projected content when
        the items are scored by ID and content."""
        if self.config.item_scoring == "id+content":
            for modality in self.content:
                vectors = vectors + self._projected(modality, ids)[0]
        return vectors

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        return seq_repr @ self.item_vectors(first_id, end_id).T

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bcd->bc", seq_repr, self._with_content(self.item_embedding(ids), ids))

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``item``: the candidate vectors of ``item_vectors``; the score is their dot product with s."""
        return {"item": self.item_vectors(first_id, end_id)}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.without_held_out(self.score_items(self(batch), 1, self.config.num_items + 1))
        return F.cross_entropy(logits.float(), batch["target"] - 1)
