"""MF-BPR (Rendle et al., UAI 2009): matrix factorisation trained with Bayesian personalised ranking.

A user and an item are each one learned vector; the score is their dot product. Every training
interaction (u, i) is paired with an item j the user has not interacted with, drawn uniformly,
and the model learns to score i above j: loss = -log sigmoid(s_ui - s_uj), plus an L2 penalty on
the vectors the batch used. It is the floor of the general top-N table (DiffMM and MMRec list it
as "MF-BPR" / "BPR"): a model that uses the graph or the item content should beat it.

Deviations from MMRec's BPR: the L2 penalty is half the squared norm averaged over the batch
(MMRec's ``EmbLoss`` takes unsquared norms); initial values are Xavier-normal, as in MMRec.
"""

from dataclasses import dataclass

import torch
from huggingface_hub import PyTorchModelHubMixin

from mmseqrec.models.graph import TopNConfig, TopNRecommender


@dataclass
class MFBPRConfig(TopNConfig):
    """Configuration of MF-BPR (``TopNConfig``'s fields, and:)

    Attributes:
        reg_weight: weight of the L2 penalty on the batch's user and item vectors (MMRec
            searches 1e-5 .. 2.0; 1e-4 is not tuned).
    """

    reg_weight: float = 1e-4


class MFBPR(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "bpr"]):
    model_type = "mfbpr"
    config_class = MFBPRConfig

    # Kept for its annotation: PyTorchModelHubMixin.from_pretrained reads it to rebuild the config.
    def __init__(self, config: MFBPRConfig):
        super().__init__(config)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.bpr_terms(self.user_embedding.weight, self.item_embedding.weight, batch, self.config.reg_weight)
