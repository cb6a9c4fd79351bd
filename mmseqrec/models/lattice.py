"""LATTICE (Zhang et al., ACM MM 2021): item-item structure learned from the item content, on
top of LightGCN.

1. **Item graphs per modality.** For every feature set m:
   - a fixed graph S_m: each item linked to its k most cosine-similar items in the raw
     features, weighted by that cosine and normalised symmetrically (D^-1/2 S D^-1/2);
   - a learned graph S'_m of the same kind on the projected features W_m f_{i,m} (W_m trained):
     the neighbours are searched again with the current projections at the start of every epoch
     (and for every evaluation), and the edge weights (the cosines of the projections) are
     recomputed in every step, so the projections get a gradient from every batch;
   - the modality's graph A_m = (1 - lambda) S'_m + lambda S_m (lambda = 0.9: mostly the raw
     structure, as the paper's skip connection).
2. **Fusion.** A = sum_m softmax(w)_m A_m with learned modality weights w.
3. **Item convolution.** h = A^L e_item (L = 1) from the items' ID vectors.
4. **Collaborative part.** LightGCN over the user-item graph (2 layers, mean of layers) gives
   the user and item vectors; the item vector adds the L2-normalised h. Score = dot product.
Training: BPR with one uniform negative and an L2 penalty on the batch's initial ID vectors.

No dense N x N matrix is formed: neighbours come from an exact faiss search, the fixed graphs
are torch sparse tensors and the learned one an edge list propagated by gather and scatter-add,
whose gradient reaches the edge weights without a dense product (the reference computes the
full similarity matrix and its top k).

Deviations, in my reading of the paper and MMRec's configuration: cosine weights below zero are
clipped to zero (so that the symmetric normalisation stays defined); an item's neighbours
include itself (its own nearest item); items lacking a modality have no edges in that
modality's graphs; the neighbour search of the learned graph runs once per epoch while its
weights keep their gradient in every step (the reference rebuilds the whole graph, with its
gradient, in the first batch of an epoch and reuses it detached afterwards); the learned
neighbours in training are a saved buffer, so a resumed run continues with the same graph.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.graph import (
    MultimodalConfig,
    TopNRecommender,
    cosine_of_pairs,
    knn_neighbours,
    light_gcn,
    propagate_edges,
    sparse,
    symmetric_weights,
)


@dataclass
class LATTICEConfig(MultimodalConfig):
    """Configuration of LATTICE (``MultimodalConfig``'s fields, and:)

    Attributes:
        feat_embed_dim: width of the projected features the learned graphs are built from (64).
        knn_k: neighbours per item in every item graph (10).
        lambda_coeff: weight of the fixed raw-feature graph against the learned one (0.9).
        item_layers: convolutions over the item graph (1).
        ui_layers: LightGCN layers over the user-item graph (2).
        reg_weight: weight of the L2 penalty on the batch's ID vectors (MMRec searches 0 .. 1e-3).
    """

    feat_embed_dim: int = 64
    knn_k: int = 10
    lambda_coeff: float = 0.9
    item_layers: int = 1
    ui_layers: int = 2
    reg_weight: float = 1e-4


class LATTICE(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "multimodal", "lattice"]):
    model_type = "lattice"
    config_class = LATTICEConfig

    def __init__(self, config: LATTICEConfig):
        super().__init__(config)
        self.projections = nn.ModuleList(nn.Linear(dim, config.feat_embed_dim) for dim in config.feature_dims)
        self.modality_weights = nn.Parameter(torch.zeros(len(config.feature_dims)))  # softmax: equal at the start
        # The learned graphs' neighbours used in training (-1: not searched yet), saved so that
        # a run resumed mid-epoch goes on with the graph it had.
        for k in range(len(config.feature_dims)):
            self.register_buffer(f"learned_neighbours_{k}", torch.full((config.num_items, config.knn_k), -1, dtype=torch.long))

    def prepare_domain(self, domain) -> None:
        """The fixed graphs S_m from the raw features (their weights need no gradient)."""
        for k, (values, present) in enumerate(self.features()):
            rows, cols = knn_neighbours(values, present, self.config.knn_k)
            weights = cosine_of_pairs(values, rows, cols).clamp(min=0)
            self.register_buffer(f"raw_graph_{k}", sparse(rows, cols, symmetric_weights(rows, cols, weights, self.config.num_items),
                                                          (self.config.num_items, self.config.num_items)), persistent=False)

    def on_epoch_start(self, epoch: int, accelerator=None) -> None:
        self._search_learned_neighbours()

    def _projected(self) -> list[torch.Tensor]:
        return [projection(values) for projection, (values, _) in zip(self.projections, self.features())]

    def _search_learned_neighbours(self, projected: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """(N, k) neighbours of every item in each projected modality (-1 where an item lacks it)."""
        out = []
        for k, ((_, present), vectors) in enumerate(zip(self.features(), projected or self._projected())):
            rows, cols = knn_neighbours(vectors, present, self.config.knn_k)
            table = torch.full((self.config.num_items, self.config.knn_k), -1, dtype=torch.long, device=vectors.device)
            width = cols.numel() // max(int(present.sum()), 1)
            table[rows.view(-1, width)[:, 0], :width] = cols.view(-1, width)
            if self.training:
                getattr(self, f"learned_neighbours_{k}").copy_(table)
            out.append(table)
        return out

    def learned_edges(self, projected: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The learned part of A, sum_m softmax(w)_m (1 - lambda) S'_m, as an edge list (rows,
        cols, values), differentiable in the projections and the modality weights
        (``propagate_edges`` multiplies with it)."""
        n, lam = self.config.num_items, self.config.lambda_coeff
        if self.training:
            tables = [getattr(self, f"learned_neighbours_{k}") for k in range(len(projected))]
            if any(bool((t < 0).all()) for t in tables):
                tables = self._search_learned_neighbours(projected)
        else:  # ranking: the neighbours of the current projections
            tables = self._search_learned_neighbours(projected)
        weights = torch.softmax(self.modality_weights, dim=0)
        rows, cols, values = [], [], []
        for k, (vectors, table) in enumerate(zip(projected, tables)):
            source = torch.arange(n, device=table.device)[:, None].expand_as(table)
            real = table >= 0
            r, c = source[real], table[real]
            rows.append(r)
            cols.append(c)
            values.append(weights[k] * (1 - lam) * symmetric_weights(r, c, cosine_of_pairs(vectors, r, c).clamp(min=0), n))
        return torch.cat(rows), torch.cat(cols), torch.cat(values)

    def convolve_items(self, h: torch.Tensor) -> torch.Tensor:
        """A^L h with A = sum_m softmax(w)_m ((1 - lambda) S'_m + lambda S_m): the learned part as
        an edge list (its weights have a gradient), the fixed part S_m as sparse products (only
        their modality weight has one), so the fixed edges cost no gradient bookkeeping."""
        rows, cols, values = self.learned_edges(self._projected())
        weights = torch.softmax(self.modality_weights, dim=0)
        fixed = [getattr(self, f"raw_graph_{k}") for k in range(len(self.projections))]
        for _ in range(self.config.item_layers):
            raw = sum(w * torch.sparse.mm(graph, h) for w, graph in zip(weights, fixed))
            h = propagate_edges(rows, cols, values, h) + self.config.lambda_coeff * raw
        return h

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_graph()
        cfg = self.config
        h = self.convolve_items(self.item_embedding.weight)
        start = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        final = light_gcn(self.ui_graph, start, cfg.ui_layers)
        return final[: cfg.num_users], final[cfg.num_users :] + F.normalize(h, dim=1)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.bpr_terms(*self.embeddings(), batch, self.config.reg_weight)
