"""SASRec (Kang & McAuley, ICDM 2018) as RecBole implements it, trained with full cross-entropy.

Item-id embeddings plus learned absolute positions go through LayerNorm and dropout, then a
stack of post-LN transformer layers with causal and key-padding masks. The sequence is
represented by the state at its last real item; items are scored by the dot product with the
(shared) item embedding table, and the loss is cross-entropy over every item.

Differences from RecBole's SASRec, all deliberate:
- the padding item is not a candidate in the softmax (RecBole keeps it; it only wastes a column);
- attention runs through ``scaled_dot_product_attention`` with a boolean mask instead of adding
  -10000 to the logits (the same function up to float rounding).
Differences from the original TF code (BCE with one sampled negative, pre-LN, sqrt(d) scaling)
are those of RecBole and are described in the spec ``baselines-and-multimodal-cf.md``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.base import PostLNTransformerLayer, Recommender, causal_padding_mask, gather_last, init_bert_style, keep_most_recent


@dataclass
class SASRecConfig:
    """Configuration of SASRec.

    Attributes:
        num_items: N, the number of items without padding (set from the domain).
        max_len: longest history the position table covers; longer histories keep their last items.
        hidden_size: width of item, position and hidden vectors (300 in the UniSRec/MISSRec tables).
        num_layers: transformer layers.
        num_heads: attention heads (hidden_size must be divisible by it).
        inner_size: width of the feed-forward layer.
        hidden_dropout: dropout on embeddings and after attention and feed-forward.
        attn_dropout: dropout on attention probabilities.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the N(0, std) weight initialisation.
    """

    num_items: int = 0
    max_len: int = 50
    hidden_size: int = 300
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02


class SASRec(Recommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["sequential-recommendation", "sasrec"]):
    model_type = "sasrec"
    def __init__(self, config: SASRecConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("SASRecConfig.num_items must be set to the number of items of the domain")
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_size)
        self.input_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            PostLNTransformerLayer(
                config.hidden_size, config.num_heads, config.inner_size,
                config.hidden_dropout, config.attn_dropout, config.layer_norm_eps,
            )
            for _ in range(config.num_layers)
        )
        self.apply(lambda m: init_bert_style(m, config.initializer_range))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        item_seq, lengths = keep_most_recent(batch["item_seq"], batch["item_seq_len"], self.config.max_len)
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        hidden = self.item_embedding(item_seq) + self.position_embedding(positions)[None]
        hidden = self.input_dropout(self.input_norm(hidden))
        attend = causal_padding_mask(item_seq)
        for layer in self.layers:
            hidden = layer(hidden, attend)
        return gather_last(hidden, lengths)

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        return seq_repr @ self.item_embedding.weight[first_id:end_id].T

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bcd->bc", seq_repr, self.item_embedding(ids))

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``id``: the item embeddings; the score is their dot product with the sequence vector."""
        return {"id": self.item_embedding.weight[first_id:end_id]}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.without_held_out(self.score_items(self(batch), 1, self.config.num_items + 1))
        return F.cross_entropy(logits.float(), batch["target"] - 1)
