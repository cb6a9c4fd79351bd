"""VBPR (He & McAuley, AAAI 2016): BPR matrix factorisation with the items' content features.

An item's vector is its learned ID vector gamma_i next to a projection of its content, and a
user's vector has a part for each: score(u, i) = gamma_u . gamma_i + theta_u . c_i + beta_i +
b(i), where
- c_i = the mean over the modalities the item has of E_m f_{i,m} (one linear projection per
  feature set: every modality the domain has, not only the image of the paper; a modality the
  item lacks is left out of the mean, never read as a zero vector);
- beta_i is a learned item bias and b(i) = sum_m beta'_m . f_{i,m} the paper's content bias
  (the user bias and the global offset of the paper do not change a user's ranking and are left
  out).
Training is BPR with one uniform negative and an L2 penalty on the batch's user vectors
[gamma_u, theta_u] and item vectors [gamma_i, c_i], as MMRec penalises them. Penalising c_i
regularises the projections E through the items they produce; the paper's lambda_E = 0 form (no
penalty on the content side) let the content part overfit on TikTok: a lower training loss and a
valid Recall@20 of 0.027 against 0.054 for the same model without the content part
(docs/multimodal-cf.md).

Deviations: the paper uses one 4096-d CNN image feature; MMRec's "VBPR" concatenates text and
image features, projects them jointly and has no biases. Here each modality has its own
projection and the item's content vector averages over the modalities it has, so a missing
modality is masked rather than filled with zeros.
"""

from dataclasses import dataclass

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.graph import MultimodalConfig, TopNRecommender, project_features


@dataclass
class VBPRConfig(MultimodalConfig):
    """Configuration of VBPR (``MultimodalConfig``'s fields, and:)

    Attributes:
        embedding_size: width of the ID part gamma and of the content part theta / c (64 each;
            the user vector is 128-d).
        reg_weight: weight of the L2 penalty on the batch's [gamma_u, theta_u], [gamma_i, c_i]
            (MMRec searches 1e-5 .. 2.0). 1e-2 was the best of 1e-4, 1e-2 and 1e-1 on TikTok's valid
            Recall@20 (seed 2020).
    """

    reg_weight: float = 1e-2


class VBPR(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "multimodal", "vbpr"]):
    model_type = "vbpr"
    config_class = VBPRConfig

    def __init__(self, config: VBPRConfig):
        d = config.embedding_size
        super().__init__(config, user_width=2 * d)  # users [gamma_u, theta_u], items gamma_i
        self.item_bias = nn.Parameter(torch.zeros(config.num_items))
        self.projections = nn.ModuleList(nn.Linear(dim, d, bias=False) for dim in config.feature_dims)
        self.content_bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for dim in config.feature_dims)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Users [gamma_u, theta_u, 1] and items [gamma_i, c_i, beta_i + b(i)]: the dot product is the score."""
        features = self.features()
        projected = project_features(self.projections, features)
        count = sum(present.float() for _, present in features)[:, None]
        content = sum(projected) / count.clamp(min=1.0)
        bias = self.item_bias + sum((values @ weight) * present for (values, present), weight in zip(features, self.content_bias))
        users = torch.cat([self.user_embedding.weight, torch.ones_like(self.user_embedding.weight[:, :1])], dim=1)
        items = torch.cat([self.item_embedding.weight, content, bias[:, None]], dim=1)
        return users, items

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        users, items = self.embeddings()
        width = 2 * self.config.embedding_size  # [gamma, theta or c]; the bias column is not penalised
        return self.bpr_terms(users, items, batch, self.config.reg_weight, penalised=(users[:, :width], items[:, :width]))
