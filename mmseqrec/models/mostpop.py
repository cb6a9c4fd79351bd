"""MostPop: every user gets the items ranked by how often they occur in training.

The reference floor for every table: a sequential model that does not beat it has learnt
nothing about sequences. Training popularity counts each user's interactions except the last
two (the valid and test targets), so nothing from the evaluation targets leaks in.
"""

from dataclasses import dataclass

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin

from mmseqrec.models.base import NewItemsUnsupported, Recommender


@dataclass
class MostPopConfig:
    """Configuration of MostPop.

    Attributes:
        num_items: N, the number of items without padding (set from the domain).
    """

    num_items: int = 0


class MostPop(Recommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["sequential-recommendation", "baseline"]):
    model_type = "mostpop"
    trainable = False

    def __init__(self, config: MostPopConfig):
        super().__init__()
        self.config = config
        self.register_buffer("item_counts", torch.zeros(config.num_items + 1))

    def attach_domain(self, domain) -> None:
        counts = domain.train_item_counts()
        self.item_counts.copy_(torch.as_tensor(counts.astype(np.float32)))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # No sequence representation: scores are the same for everyone.
        return torch.zeros(batch["item_seq"].shape[0], 0, device=self.item_counts.device)

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        return self.item_counts[first_id:end_id].expand(seq_repr.shape[0], -1)

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.item_counts[ids]

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``popularity`` (M, 1): the training counts, which are the scores."""
        return {"popularity": self.item_counts[first_id:end_id, None]}

    def index_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """None: the scores are a lookup, the same for everyone; ranking them needs no index."""
        return {}

    def new_item_features(self) -> list[str]:
        raise NewItemsUnsupported(
            "MostPop ranks items by how often they occur in training; an item added afterwards has no interactions, so "
            "it would always rank last. Content-only models rank new items: MISSRec or UniSRec fine-tuned with --mode inductive."
        )

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError("MostPop is fitted by counting; it has no loss")

    def trainable_parameters(self, stage: str):
        return iter(())
