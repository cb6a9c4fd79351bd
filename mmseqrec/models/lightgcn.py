"""LightGCN (He et al., SIGIR 2020): collaborative filtering by linear propagation on the
user-item graph.

Users and items start from learned ID vectors x_0 and exchange them over the training graph,
normalised symmetrically (D^-1/2 A D^-1/2), with no weight matrix and no nonlinearity:
x_{l+1} = A_hat x_l. A node's final vector is the mean of x_0..x_L; the score is the dot
product of the user's and the item's final vectors. Training is BPR with one uniform negative
per interaction and an L2 penalty on the initial vectors of the batch's users and items (the
paper's regulariser; only the ID tables have parameters).

Deviations: the L2 penalty is half the squared norm averaged over the batch (MMRec's takes
unsquared norms); 3 layers is the paper's choice (MMRec searches 1-4).
"""

from dataclasses import dataclass

import torch
from huggingface_hub import PyTorchModelHubMixin

from mmseqrec.models.graph import TopNConfig, TopNRecommender, light_gcn


@dataclass
class LightGCNConfig(TopNConfig):
    """Configuration of LightGCN (``TopNConfig``'s fields, and:)

    Attributes:
        num_layers: propagation steps L over the user-item graph (3, the paper's).
        reg_weight: weight of the L2 penalty on the batch's initial vectors (1e-4, the paper's).
    """

    num_layers: int = 3
    reg_weight: float = 1e-4


class LightGCN(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "lightgcn"]):
    model_type = "lightgcn"
    config_class = LightGCNConfig

    # Kept for its annotation: PyTorchModelHubMixin.from_pretrained reads it to rebuild the config.
    def __init__(self, config: LightGCNConfig):
        super().__init__(config)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_graph()
        start = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        final = light_gcn(self.ui_graph, start, self.config.num_layers)
        return final[: self.config.num_users], final[self.config.num_users :]

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.bpr_terms(*self.embeddings(), batch, self.config.reg_weight)
