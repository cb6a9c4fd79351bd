"""BM3 (Zhou et al., WWW 2023): bootstrapped multimodal representations, trained without
negative samples.

1. **Online vectors.** LightGCN over the user-item graph (1 layer, mean of layers) from the ID
   vectors gives users and items, and an item adds its own ID vector once more (a skip
   connection past the propagation); every feature set m is projected to the same width (W_m f_i).
2. **Target views.** The online vectors, detached and perturbed by dropout (p = ``dropout``),
   are the targets; a shared linear predictor maps the online vectors towards them.
3. **Losses** on the batch's (user, positive item) pairs, with C(a, b) = 1 - cos(a, b):
   - graph reconstruction: C(p(u), i_target) + C(p(i), u_target);
   - inter-modality alignment, per modality: C(p(W_m f_i), i_target);
   - intra-modality alignment, per modality: C(p(W_m f_i), dropout(p(W_m f_i)) detached),
     the masked-feature view of the paper;
   weighted: reconstruction (both directions summed) + ``cl_weight`` x (alignment terms) +
   ``reg_weight`` x the norm penalty of the batch's online vectors (the Frobenius norms of the
   user and the item rows, not squared, divided by the batch size: a squared L2 at this weight
   shrinks the vectors until the cosine losses, which grow as 1 / norm, collapse the training).
   No negative item is read (MMRec: ``use_neg_sampling: False``).
4. **Score** = p(u) . p(i), the predicted vectors.

Deviations, in my reading: items lacking a modality are left out of that modality's terms; the
norm penalty covers the batch's rows, not the whole tables.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.graph import MultimodalConfig, TopNRecommender, light_gcn, masked_mean


@dataclass
class BM3Config(MultimodalConfig):
    """Configuration of BM3 (``MultimodalConfig``'s fields, and:)

    Attributes:
        embedding_size (inherited): width of the ID vectors, the projected features and the predictor (64).
        ui_layers: LightGCN layers over the user-item graph (MMRec searches 1 and 2).
        dropout: dropout of the target views (MMRec searches 0.3 and 0.5).
        cl_weight: weight of the alignment terms (2.0).
        reg_weight: weight of the norm penalty on the batch's online vectors (MMRec searches 0.1, 0.01).
    """

    ui_layers: int = 1
    dropout: float = 0.5
    cl_weight: float = 2.0
    reg_weight: float = 0.1


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) per row."""
    return 1 - F.cosine_similarity(a, b, dim=-1)


class BM3(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "multimodal", "bm3"]):
    model_type = "bm3"
    config_class = BM3Config

    def __init__(self, config: BM3Config):
        super().__init__(config)
        d = config.embedding_size
        self.projections = nn.ModuleList(nn.Linear(dim, d) for dim in config.feature_dims)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The online user and item vectors (before the predictor)."""
        self._require_graph()
        start = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        final = light_gcn(self.ui_graph, start, self.config.ui_layers)
        return final[: self.config.num_users], final[self.config.num_users :] + self.item_embedding.weight

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.online()
        return self.predictor(users), self.predictor(items)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        users, items = self.online()
        u, i = users[batch["user_id"]], items[batch["pos_item"] - 1]
        with torch.no_grad():
            u_target, i_target = F.dropout(u, cfg.dropout), F.dropout(i, cfg.dropout)
        terms = {"reconstruction": (_distance(self.predictor(u), i_target) + _distance(self.predictor(i), u_target)).mean()}
        alignment = []
        for projection, (values, present) in zip(self.projections, self.features()):
            rows = batch["pos_item"] - 1
            online = self.predictor(projection(values[rows]))
            target = F.dropout(online.detach(), cfg.dropout)
            has = present[rows]
            alignment.append(masked_mean(_distance(online, i_target), has) + masked_mean(_distance(online, target), has))
        terms["alignment"] = cfg.cl_weight * sum(alignment)
        terms["norm"] = cfg.reg_weight * (u.norm() + i.norm()) / u.shape[0]
        return terms
