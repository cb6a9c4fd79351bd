"""UniSRec (Hou et al., KDD 2022): universal sequence representations from item text.

Every item has a frozen text vector x (BERT [CLS], 768-d, in the paper; any ``text`` feature set
here). A **mixture-of-experts adaptor with parametric whitening** maps it to the model width D:

    expert k:   z_k(x) = (Dropout(x) - b_k) W_k            (b_k in R^Dt, W_k in R^{Dt x D})
    gate:       g = softmax(x W_g + [training] eps * (softplus(x W_n) + 0.01)),  eps ~ N(0, I)
    item:       v(x) = sum_k g_k z_k(x)

A SASRec-style post-LN transformer (causal, key-padding masked, learned absolute positions)
reads the adapted items of a history, LN(v + P) (plus an item-ID embedding E_i in transductive
mode), and the state at the last real position, L2-normalised, is the sequence vector s. An
item is represented by r_i = v(x_i) (+ E_i in transductive mode) and scored by cos(s, r_i) / tau.

Training objectives:
- **pretraining** (stage ``pretrain``, on a mixture of source domains): in-batch
  sequence->item contrastive loss (the other rows' targets are the negatives, so negatives come
  from mixed domains) plus ``seqseq_weight`` (lambda = 1e-3) x an in-batch sequence->sequence
  contrastive loss between each sequence and an augmented view of it (item drop, or word drop:
  some positions read the ``text_aug`` feature, text encoded after dropping words, when the
  domain has it);
- **fine-tuning**: cross-entropy over every item of the target domain, logits cos / tau.

Parameter-efficient fine-tuning (stage ``peft``) trains the MoE adaptor, the input LayerNorm
and, in transductive mode, the item-ID table; positions and the transformer stay frozen, as the
released ``finetune.py`` does when given a checkpoint. With the paper's configuration that is
1,862,232 parameters (+ 300 x (items + 1) with IDs).

**Items without text** are handled explicitly (the feature set's presence mask): such an item
contributes no adapted vector (neither the adaptor's output for a zero row, which is -sum_k g_k
b_k W_k and the same for every text-less item, nor anything else). In a history it is then only
its position (and, transductive, its ID); as a candidate in inductive mode it has no
representation at all, so it scores -inf (it cannot be recommended), and training rows whose
target has no text are left out of the losses in inductive mode. In transductive mode the ID
embedding represents it.

Differences from the released code (RUCAIBox/UniSRec, spec ``unisrec-and-amazon-data.md`` 3):
- The padding item is not a candidate in the fine-tuning softmax.
- In-batch pretraining negatives whose target is the same item as the row's own target are
  removed (``same_target: remove``); the released code sets their logit to 0, which counts each
  as exp(0) = 1 in the denominator (``same_target: zero`` reproduces that).
- Item drop keeps exactly the sampled items, in order (the released scatter occasionally keeps a
  dropped one), and the choice between item drop and word drop is drawn per sequence, not once
  per batch (the same expected mix, less variance between batches).
- The adaptor runs once per distinct item and the result is gathered (spec 3.8): per step for
  the history items and the candidates together (fine-tuning: all items; pretraining: the
  in-batch targets), and once more for the augmented view. Repeated occurrences of an item
  within one pass therefore share one dropout mask and gate-noise draw; the released code draws
  them per position.
- Attention goes through ``scaled_dot_product_attention`` with a boolean mask rather than adding
  -10000 to the logits.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.base import (
    PostLNTransformerLayer,
    Recommender,
    causal_padding_mask,
    check_new_features,
    content_domain_config,
    check_stage,
    extend_buffer,
    gather_last,
    init_bert_style,
    keep_most_recent,
    transductive_refusal,
)

MODES = ("transductive", "inductive")
SAME_TARGET = ("remove", "zero")


@dataclass
class UniSRecConfig:
    """Configuration of UniSRec (defaults: the paper's configuration, ``props/UniSRec.yaml``).

    Attributes:
        num_items: N, the number of items without padding (set from the domain).
        text_dim: Dt, dimension of the frozen text features (set from the domain; 768 for BERT).
        mode: ``transductive`` (text + item-ID embedding, the paper's UniSRec_t+ID and the
            released default) or ``inductive`` (text only, UniSRec_t; works for unseen items).
        max_len: position table size; longer histories keep their most recent items (50).
        hidden_size: model width D (300).
        num_layers: transformer layers (2).
        num_heads: attention heads (2; hidden_size must be divisible by it).
        inner_size: feed-forward width (256).
        hidden_dropout: dropout on the input and after attention and feed-forward (0.5).
        attn_dropout: dropout on attention probabilities (0.5).
        layer_norm_eps: epsilon of every LayerNorm (1e-12).
        initializer_range: std of the N(0, std) initialisation of every Linear and Embedding,
            the experts included (0.02); the gate starts at zero.
        num_experts: G, parametric-whitening experts in the adaptor (8).
        adaptor_dropout: dropout on the text vector before each expert, own mask per expert (0.2).
        gate_noise: add the learned Gaussian noise to the gate logits in training (True).
        temperature: tau; logits are cosines / tau (0.07).
        seqseq_weight: lambda, weight of the sequence-sequence contrastive loss in pretraining (1e-3).
        item_drop_ratio: probability of dropping each item but the first in an item-drop view (0.2).
        item_drop_prob: probability that a sequence's augmented view is item drop rather than
            word drop (0.9); always item drop when the domain has no ``text_aug`` feature.
        word_drop_ratio: share of positions that read the ``text_aug`` feature in a word-drop
            view (0.2).
        same_target: what to do with in-batch negatives that are the row's own target item:
            ``remove`` them (default) or give them logit ``zero`` (the released code).
        text_feature: name of the text feature set in the domain (``text``).
        text_aug_feature: name of the word-dropped text feature set used in pretraining (``text_aug``).
    """

    num_items: int = 0
    text_dim: int = 768
    mode: str = "transductive"
    max_len: int = 50
    hidden_size: int = 300
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    num_experts: int = 8
    adaptor_dropout: float = 0.2
    gate_noise: bool = True
    temperature: float = 0.07
    seqseq_weight: float = 1e-3
    item_drop_ratio: float = 0.2
    item_drop_prob: float = 0.9
    word_drop_ratio: float = 0.2
    same_target: str = "remove"
    text_feature: str = "text"
    text_aug_feature: str = "text_aug"


class ParametricWhitening(nn.Module):
    """One expert: z(x) = (Dropout(x) - b) W, with a learned centre b and projection W."""

    def __init__(self, input_dim: int, output_dim: int, dropout: float, std: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(input_dim))
        self.linear = nn.Linear(input_dim, output_dim, bias=False)
        nn.init.normal_(self.linear.weight, 0.0, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x) - self.bias)


class MoEAdaptor(nn.Module):
    """A dense, noisily gated mixture of parametric-whitening experts: (..., Dt) -> (..., D).

    The gate reads the raw features (no dropout). Both gate matrices start at zero, so at
    initialisation every expert weighs 1/G at evaluation time.
    """

    def __init__(self, input_dim: int, output_dim: int, num_experts: int, dropout: float, std: float, noise: bool):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {num_experts}")
        self.experts = nn.ModuleList(ParametricWhitening(input_dim, output_dim, dropout, std) for _ in range(num_experts))
        self.gate = nn.Linear(input_dim, num_experts, bias=False)
        self.gate_noise = nn.Linear(input_dim, num_experts, bias=False)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate_noise.weight)
        self.noise = noise

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(..., G) expert weights, each row summing to 1."""
        logits = self.gate(x)
        if self.noise and self.training:
            noise_std = F.softplus(self.gate_noise(x)) + 0.01
            logits = logits + torch.randn_like(logits) * noise_std
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (..., G, D)
        return (self.gate_weights(x).unsqueeze(-1) * expert_out).sum(dim=-2)


class UniSRec(Recommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["sequential-recommendation", "text", "unisrec"]):
    model_type = "unisrec"
    # The adaptor, positions, input norm and transformer transfer; item IDs belong to the domain.
    transferable_prefixes = ("moe_adaptor.", "position_embedding.", "input_norm.", "layers.")
    architecture_fields = (
        "text_dim", "max_len", "hidden_size", "num_layers", "num_heads", "inner_size", "layer_norm_eps", "num_experts",
    )

    def __init__(self, config: UniSRecConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("UniSRecConfig.num_items must be set to the number of items of the domain")
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{config.mode}'")
        if config.same_target not in SAME_TARGET:
            raise ValueError(f"same_target must be one of {SAME_TARGET}, got '{config.same_target}'")
        self.config = config
        width = config.hidden_size
        self.item_embedding = nn.Embedding(config.num_items + 1, width, padding_idx=0) if config.mode == "transductive" else None
        self.position_embedding = nn.Embedding(config.max_len, width)
        self.input_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            PostLNTransformerLayer(
                width, config.num_heads, config.inner_size, config.hidden_dropout, config.attn_dropout, config.layer_norm_eps
            )
            for _ in range(config.num_layers)
        )
        self.apply(lambda module: init_bert_style(module, config.initializer_range))
        # Created after the BERT-style init, as in the released model: the gate keeps its zeros.
        self.moe_adaptor = MoEAdaptor(
            config.text_dim, width, config.num_experts, config.adaptor_dropout, config.initializer_range, config.gate_noise
        )
        # Frozen text features come from the domain (``attach_domain``) and are not saved.
        self.register_buffer("text_features", torch.zeros(config.num_items + 1, config.text_dim), persistent=False)
        self.register_buffer("text_present", torch.zeros(config.num_items + 1, dtype=torch.bool), persistent=False)
        self.register_buffer("text_aug_features", torch.zeros(0, config.text_dim), persistent=False)
        self.features_attached = False

    # ---------------------------------------------------------------------------------------
    # Domain data
    # ---------------------------------------------------------------------------------------
    @staticmethod
    def domain_config(domain, config: dict | None = None) -> dict:
        """Config values that come from the domain: the item count and the dimension of the text
        feature set named by ``text_feature`` (in ``config``, else ``text``)."""
        return content_domain_config(domain, config, UniSRecConfig, {"text_dim": "text_feature"})

    def attach_domain(self, domain) -> None:
        """Copy the domain's frozen text features (and word-dropped text, if any) into the model."""
        cfg = self.config
        if domain.num_items != cfg.num_items:
            raise ValueError(f"model built for {cfg.num_items} items, domain {domain.name} has {domain.num_items}")
        feature = domain.features.get(cfg.text_feature)
        if feature is None:
            raise ValueError(
                f"UniSRec needs the text feature set '{cfg.text_feature}' but domain {domain.name} has "
                f"{', '.join(domain.features) or 'none'}; extract text features first or set model.text_feature"
            )
        if feature.dim != cfg.text_dim:
            raise ValueError(f"feature '{cfg.text_feature}' of {domain.name} is {feature.dim}-d, the model expects {cfg.text_dim}")
        if not feature.present[1:].any():
            raise ValueError(f"feature '{cfg.text_feature}' of {domain.name} is missing for every item")
        self.text_features.copy_(torch.tensor(np.asarray(feature.values)))
        self.text_present.copy_(torch.as_tensor(feature.present))
        aug = domain.features.get(cfg.text_aug_feature)
        if aug is not None and aug.dim == cfg.text_dim:
            # Items without a word-dropped text fall back to their plain text.
            values = np.where(aug.present[:, None], np.asarray(aug.values), np.asarray(feature.values))
            self.text_aug_features = torch.as_tensor(values, dtype=torch.float32, device=self.text_features.device)
        else:
            self.text_aug_features = torch.zeros(0, cfg.text_dim, device=self.text_features.device)
        self.features_attached = True

    # ---------------------------------------------------------------------------------------
    # Stages
    # ---------------------------------------------------------------------------------------
    def trainable_parameters(self, stage: str) -> Iterator[tuple[str, nn.Parameter]]:
        check_stage(stage)
        for name, param in self.named_parameters():
            if stage != "peft" or name.split(".")[0] in ("moe_adaptor", "input_norm", "item_embedding"):
                yield name, param

    # ---------------------------------------------------------------------------------------
    # Item side
    # ---------------------------------------------------------------------------------------
    def adapted_text(self, *id_tensors: torch.Tensor) -> list[torch.Tensor]:
        """v(x_i) for the ids in each given tensor (any shapes): a list of (..., D) tensors,
        zero where the item has no text.

        One adaptor pass serves all the tensors: it runs once per distinct item among them and
        the result is gathered, since a batch repeats items (and padding) many times and the
        sequence items and the candidates overlap. Repeated items therefore share one dropout
        mask and gate-noise draw within a call.
        """
        if not self.features_attached:
            raise RuntimeError("UniSRec needs its text features: call model.attach_domain(domain) first")
        flat = torch.cat([ids.reshape(-1) for ids in id_tensors])
        unique, inverse = torch.unique(flat, return_inverse=True)
        adapted = self.moe_adaptor(self.text_features[unique]) * self.text_present[unique][:, None]
        parts = adapted[inverse].split([ids.numel() for ids in id_tensors])
        return [part.view(*ids.shape, -1) for part, ids in zip(parts, id_tensors)]

    def with_word_dropped_text(self, text: torch.Tensor, ids: torch.Tensor, word_dropped: torch.Tensor) -> torch.Tensor:
        """``text`` (B, L, D) with the positions flagged in ``word_dropped`` re-adapted from the
        ``text_aug`` (word-dropped) features; unchanged when the domain has none."""
        if not self.text_aug_features.numel() or not bool(word_dropped.any()):
            return text
        swapped = ids[word_dropped]
        aug = self.moe_adaptor(self.text_aug_features[swapped]) * self.text_present[swapped][:, None]
        return text.masked_scatter(word_dropped[..., None], aug.to(text.dtype))

    def item_vectors(self, ids: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised item representations r_i: v(x_i) (``text`` if already adapted), plus E_i
        in transductive mode."""
        vectors = self.adapted_text(ids)[0] if text is None else text
        if self.item_embedding is not None:
            vectors = vectors + self.item_embedding(ids)
        return vectors

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``item``: the normalised r_i; the score is s . item / temperature (-inf where an item
        has no representation, whose row here is zero)."""
        ids = torch.arange(first_id, end_id, device=self.text_features.device)
        return {"item": F.normalize(self.item_vectors(ids), dim=-1)}

    def new_item_features(self) -> list[str]:
        if self.item_embedding is not None:
            raise transductive_refusal(self)
        return [self.config.text_feature]

    @torch.no_grad()
    def add_items(self, features: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Append items ranked by their text alone (inductive mode; see ``Recommender.add_items``)."""
        name = self.new_item_features()[0]
        check_new_features(self, features, {name: self.config.text_dim})
        values, present = features[name]
        extend_buffer(self, "text_features", values)
        extend_buffer(self, "text_present", present)

    def representable(self, ids: torch.Tensor) -> torch.Tensor:
        """Which items have a representation: all in transductive mode, those with text otherwise."""
        if self.item_embedding is not None:
            return torch.ones_like(ids, dtype=torch.bool)
        return self.text_present[ids]

    # ---------------------------------------------------------------------------------------
    # Sequence side
    # ---------------------------------------------------------------------------------------
    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) L2-normalised sequence vectors; ``text`` (B, L, D) is the adapted text of
        ``item_seq`` when the caller has it already."""
        if text is None:
            item_seq, lengths = keep_most_recent(item_seq, lengths, self.config.max_len)
            text = self.adapted_text(item_seq)[0]
        else:
            item_seq, lengths, text = keep_most_recent(item_seq, lengths, self.config.max_len, text)
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        hidden = text + self.position_embedding(positions)[None]
        if self.item_embedding is not None:
            hidden = hidden + self.item_embedding(item_seq)
        hidden = self.input_dropout(self.input_norm(hidden))
        attend = causal_padding_mask(item_seq)
        for layer in self.layers:
            hidden = layer(hidden, attend)
        return F.normalize(gather_last(hidden, lengths), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(batch["item_seq"], batch["item_seq_len"])

    def score_ids(self, seq_repr: torch.Tensor, ids: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M) logits cos(s, r_i) / tau for items ``ids`` (M,); -inf for items with no representation."""
        vectors = F.normalize(self.item_vectors(ids, text), dim=-1)
        logits = (seq_repr @ vectors.T) / self.config.temperature
        return logits.masked_fill(~self.representable(ids)[None, :], float("-inf"))

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        return self.score_ids(seq_repr, torch.arange(first_id, end_id, device=seq_repr.device))

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        vectors = F.normalize(self.item_vectors(ids), dim=-1)  # (B, C, D)
        logits = torch.einsum("bd,bcd->bc", seq_repr, vectors) / self.config.temperature
        return logits.masked_fill(~self.representable(ids), float("-inf"))

    # ---------------------------------------------------------------------------------------
    # Losses
    # ---------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.stage == "pretrain":
            return self.pretrain_loss(batch)
        item_seq, targets = batch["item_seq"], batch["target"]
        candidates = torch.arange(1, self.config.num_items + 1, device=targets.device)
        seq_text, candidate_text = self.adapted_text(item_seq, candidates)  # one adaptor pass per step
        usable = self.representable(targets)
        seq = self.encode(item_seq[usable], batch["item_seq_len"][usable], seq_text[usable])
        if seq.shape[0] == 0:  # no row has a target the model can represent
            return candidate_text.sum() * 0.0
        logits = self.without_held_out(self.score_ids(seq, candidates, candidate_text))
        return F.cross_entropy(logits.float(), targets[usable] - 1)

    def augment(self, item_seq: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None):
        """An augmented view per sequence: (item ids, lengths, word-dropped positions).

        Item drop keeps the first item and each later one with probability 1 - item_drop_ratio,
        compacted to the left in order. Word drop (when the domain has ``text_aug``) keeps the
        items and marks ``word_drop_ratio`` of the positions to read the word-dropped text.
        """
        cfg = self.config
        batch, length = item_seq.shape
        device = item_seq.device
        uniform = lambda *shape: torch.rand(*shape, device=device, generator=generator)
        real = item_seq > 0
        keep = (uniform(batch, length) >= cfg.item_drop_ratio) & real
        keep[:, 0] = real[:, 0]
        # A stable sort on "dropped" moves the kept items to the front, in their order.
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        dropped_seq = torch.where(keep, item_seq, torch.zeros_like(item_seq)).gather(1, order)
        dropped_len = keep.sum(dim=1)

        use_word_drop = torch.zeros(batch, dtype=torch.bool, device=device)
        if self.text_aug_features.numel():
            use_word_drop = uniform(batch) >= cfg.item_drop_prob
        aug_seq = torch.where(use_word_drop[:, None], item_seq, dropped_seq)
        aug_len = torch.where(use_word_drop, lengths, dropped_len)
        word_dropped = use_word_drop[:, None] & real & (uniform(batch, length) < cfg.word_drop_ratio)
        return aug_seq, aug_len, word_dropped

    def _contrastive(self, logits: torch.Tensor, same: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """In-batch InfoNCE, positives on the diagonal, over the rows flagged in ``rows``."""
        fill = float("-inf") if self.config.same_target == "remove" else 0.0
        logits = logits.float().masked_fill(same, fill)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits[rows], labels[rows])

    def pretrain_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """l_SI + lambda * l_SS with in-batch negatives (see the module docstring)."""
        cfg = self.config
        item_seq, lengths, targets = batch["item_seq"], batch["item_seq_len"], batch["target"]
        seq_text, target_text = self.adapted_text(item_seq, targets)
        seq = self.encode(item_seq, lengths, seq_text)
        usable = self.representable(targets)
        if not bool(usable.any()):
            return seq.sum() * 0.0
        same = (targets[:, None] == targets[None, :]) & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device)
        # Targets the model cannot represent (inductive, no text) score -inf, so they are no
        # negatives, and their rows are left out.
        seq_item = self._contrastive(self.score_ids(seq, targets, target_text), same, usable)

        # The augmented view is a second forward pass with fresh dropout and gate noise.
        aug_seq, aug_len, word_dropped = self.augment(item_seq, lengths)
        aug_text = self.with_word_dropped_text(self.adapted_text(aug_seq)[0], aug_seq, word_dropped)
        augmented = self.encode(aug_seq, aug_len, aug_text)
        seq_seq = self._contrastive((seq @ augmented.T) / cfg.temperature, same, torch.ones_like(usable))
        return seq_item + cfg.seqseq_weight * seq_seq
