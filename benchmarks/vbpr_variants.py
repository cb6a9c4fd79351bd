"""VBPR with parts removed, or with the paper's penalty: what held VBPR below MF-BPR on TikTok.

    python benchmarks/vbpr_variants.py VARIANT [finetune arguments ...]

VARIANT is one of
- ``paper``: the paper's lambda_E = 0 penalty (L2 on the ID tables gamma_u, theta_u, gamma_i only,
  the projections E free), what VBPR trained with before; weight 1e-4 unless model.reg_weight is given;
- ``paper-no-content``, ``paper-no-bias``, ``paper-no-item-bias``, ``paper-no-content-bias``: the same
  with the content vector c_i, both biases, the item bias beta_i or the content bias beta'.f set to 0.
The model as shipped (penalty on [gamma_u, theta_u] and [gamma_i, c_i]) needs no variant: run
``finetune --model vbpr model.reg_weight=...``. The runs of docs/multimodal-cf.md:

    OMP_NUM_THREADS=1 python benchmarks/vbpr_variants.py paper-no-content --domain tiktok --model vbpr --seeds 1 \\
        --output runs/vbpr-paper-no-content train.epochs=80 train.patience=10
"""

import sys

import torch

from finetune.cli import main as finetune_main
from mmseqrec.models import vbpr

VARIANTS = ("paper", "paper-no-content", "paper-no-bias", "paper-no-item-bias", "paper-no-content-bias")


def patch(variant: str) -> None:
    """Replace VBPR's scoring vectors and loss by the variant's. The item vectors are the model's
    own [gamma_i, c_i, beta_i + b(i)] with the removed part taken out again."""
    embeddings = vbpr.VBPR.embeddings

    def variant_embeddings(self):
        users, items = embeddings(self)
        d = self.config.embedding_size
        keep = torch.ones(items.shape[1], device=items.device)
        if variant == "paper-no-content":
            keep[d : 2 * d] = 0
        items = items * keep
        bias = items[:, -1]
        if variant == "paper-no-bias":
            bias = torch.zeros_like(bias)
        elif variant == "paper-no-item-bias":
            bias = bias - self.item_bias
        elif variant == "paper-no-content-bias":
            bias = self.item_bias
        return users, torch.cat([items[:, :-1], bias[:, None]], dim=1)

    def paper_loss_terms(self, batch):
        # L2 on the ID tables the batch used, nothing on E: the paper's lambda_E = 0
        return self.bpr_terms(*self.embeddings(), batch, self.config.reg_weight)

    vbpr.VBPR.embeddings = variant_embeddings
    vbpr.VBPR.loss_terms = paper_loss_terms


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        sys.exit(f"usage: python benchmarks/vbpr_variants.py {{{','.join(VARIANTS)}}} [finetune arguments ...]")
    patch(sys.argv[1])
    arguments = sys.argv[2:]
    if not any(a.startswith("model.reg_weight=") for a in arguments):
        arguments.append("model.reg_weight=0.0001")  # the weight these variants were measured with
    sys.exit(finetune_main(arguments))
