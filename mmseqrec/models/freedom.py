"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph from the content, and a
user-item graph denoised by degree-sensitive edge pruning.

1. **Frozen item graph.** For every feature set m, each item is linked to its k (10) most
   cosine-similar items in the raw features (weight 1), normalised symmetrically; the graphs
   are combined with fixed weights: the image graph gets ``image_weight`` (0.1), the other
   modalities share the rest equally (with text and image only: 0.1 image + 0.9 text, as
   FREEDOM). It is built once, before training, and never changes.
2. **Denoised user-item graph.** At the start of every training epoch a share ``1 -
   edge_prune_ratio`` of the training interactions is kept, drawn without replacement with
   probability proportional to 1 / sqrt(deg(u) deg(i)) (edges between high-degree nodes, the
   likely noisy ones, are pruned more); the kept graph is normalised symmetrically. Ranking
   uses the whole graph.
3. **Propagation.** LightGCN over the (pruned) user-item graph (2 layers, mean of layers) gives
   user and item vectors; items add h = A_item^L e_item (L = 1) from their ID vectors over the
   frozen item graph. Score = dot product.
4. **Loss.** BPR with one uniform negative on these vectors, plus ``reg_weight`` x a BPR loss of
   the user vector against each modality's projected features W_m f_i (which trains the
   projections; items lacking the modality are left out of that term).

Deviations, in my reading: the weighting of more than two modalities (the paper has text and
image); the pruning draw is seeded by a saved per-run number and the epoch, so a resumed run
prunes as the uninterrupted one did; the projected-feature BPR terms skip items without the
modality instead of reading zero rows.
"""

from dataclasses import dataclass

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.graph import (
    MultimodalConfig,
    TopNRecommender,
    knn_neighbours,
    light_gcn,
    masked_mean,
    sparse,
    symmetric_weights,
    user_item_graph,
)


@dataclass
class FREEDOMConfig(MultimodalConfig):
    """Configuration of FREEDOM (``MultimodalConfig``'s fields, and:)

    Attributes:
        embedding_size (inherited): width of the ID vectors and of the projected features (64).
        knn_k: neighbours per item in the frozen item graphs (10).
        image_weight: weight of the image modality's graph (0.1); the other modalities share
            the rest equally. Used when a feature set has modality ``image``; otherwise the
            modalities weigh the same.
        item_layers: convolutions over the frozen item graph (1).
        ui_layers: LightGCN layers over the user-item graph (2).
        edge_prune_ratio: share of the training interactions pruned every epoch (MMRec
            searches 0.8 and 0.9; 0.8 here).
        reg_weight: weight of the projected-feature BPR terms (MMRec searches 0 .. 1e-3).
        l2_weight: weight of the L2 penalty on the batch's ID vectors (0: FREEDOM has none).
    """

    knn_k: int = 10
    image_weight: float = 0.1
    item_layers: int = 1
    ui_layers: int = 2
    edge_prune_ratio: float = 0.8
    reg_weight: float = 1e-4
    l2_weight: float = 0.0


class FREEDOM(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "multimodal", "freedom"]):
    model_type = "freedom"
    config_class = FREEDOMConfig

    def __init__(self, config: FREEDOMConfig):
        super().__init__(config)
        if not 0 <= config.edge_prune_ratio < 1:
            raise ValueError(f"FREEDOMConfig.edge_prune_ratio must lie in [0, 1), got {config.edge_prune_ratio}")
        self.projections = nn.ModuleList(nn.Linear(dim, config.embedding_size) for dim in config.feature_dims)
        # The pruning draw of epoch e is seeded by (prune_seed, e): drawn from the run's seed when
        # the model is built, saved, so a resumed run prunes as the uninterrupted one did.
        self.register_buffer("prune_seed", torch.randint(0, 2**31 - 1, ()))
        self.register_buffer("prune_epoch", torch.tensor(0))
        self._pruned: torch.Tensor | None = None

    def modality_weights(self, domain) -> list[float]:
        modalities = [domain.features[name].modality for name in self.config.feature_names]
        if "image" not in modalities or len(modalities) == 1:
            return [1.0 / len(modalities)] * len(modalities)
        images = modalities.count("image")
        rest = (1.0 - self.config.image_weight) / (len(modalities) - images)
        return [self.config.image_weight / images if m == "image" else rest for m in modalities]

    def prepare_domain(self, domain) -> None:
        """The frozen item graph, from the raw features, once."""
        n = self.config.num_items
        rows, cols, values = [], [], []
        for weight, (features, present) in zip(self.modality_weights(domain), self.features()):
            r, c = knn_neighbours(features, present, self.config.knn_k)
            rows.append(r)
            cols.append(c)
            values.append(weight * symmetric_weights(r, c, torch.ones(r.shape[0], device=r.device), n))
        self.register_buffer("item_graph", sparse(torch.cat(rows), torch.cat(cols), torch.cat(values), (n, n)), persistent=False)
        self._pruned = None

    def on_epoch_start(self, epoch: int, accelerator=None) -> None:
        self.prune_epoch.fill_(epoch)
        self._pruned = None

    def pruned_graph(self) -> torch.Tensor:
        """This epoch's denoised user-item graph (drawn once per epoch, see the module docstring)."""
        if self._pruned is None:
            cfg = self.config
            users, items = self.train_users, self.train_items
            user_degree = torch.bincount(users, minlength=cfg.num_users).float()
            item_degree = torch.bincount(items, minlength=cfg.num_items).float()
            probability = (user_degree[users] * item_degree[items]).rsqrt()
            keep = int(round(users.numel() * (1 - cfg.edge_prune_ratio)))
            generator = torch.Generator(device="cpu").manual_seed(int(self.prune_seed) * 100_003 + int(self.prune_epoch))
            kept = torch.multinomial(probability.cpu(), keep, replacement=False, generator=generator).to(users.device)
            self._pruned = user_item_graph(users[kept], items[kept], cfg.num_users, cfg.num_items)
        return self._pruned

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_graph()
        cfg = self.config
        graph = self.pruned_graph() if self.training else self.ui_graph
        h = self.item_embedding.weight
        for _ in range(cfg.item_layers):
            h = torch.sparse.mm(self.item_graph, h)
        start = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        final = light_gcn(graph, start, cfg.ui_layers)
        return final[: cfg.num_users], final[cfg.num_users :] + h

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        users, items = self.embeddings()
        u, pos, neg = batch["user_id"], batch["pos_item"] - 1, batch["neg_item"] - 1
        terms = self.bpr_terms(users, items, batch, self.config.l2_weight)
        content = []
        for projection, (values, present) in zip(self.projections, self.features()):
            both = present[pos] & present[neg]
            gap = (users[u] * projection(values[neg])).sum(-1) - (users[u] * projection(values[pos])).sum(-1)
            content.append(masked_mean(torch.nn.functional.softplus(gap), both))
        terms["content_bpr"] = self.config.reg_weight * sum(content)
        return terms
