"""How large MISSRec's two interest-regulariser forms are next to the cross-entropy, at init.

For the paper configuration on a prepared domain, draws batches of training rows, refreshes the
interests, and prints both forms (``reference`` and ``masked_mean``), their ratio and the
cross-entropy. The ratio sets ``MASKED_MEAN_REG_WEIGHT`` (the masked mean's default weight):
1e-4 x ratio gives the masked mean the reference term's size.

    python benchmarks/regulariser_scale.py --domain Scientific --batch-size 512 --seeds 3
"""

import argparse

import numpy as np
import torch

from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.models import MISSRec, MISSRecConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="Scientific")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--interest-ratios", default="0.5,0.02", help="fine-tuning and pretraining K ratios")
    args = parser.parse_args()
    domain = load_domain(args.domain, data_dir=args.data_dir)
    print("| interest ratio | seed | Q | reference | masked mean | ratio | cross-entropy | 1e-4 x reference |")
    print("|---|---|---|---|---|---|---|---|")
    for interest_ratio in (float(r) for r in args.interest_ratios.split(",")):
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            config = MISSRecConfig(**MISSRec.domain_config(domain, {}), interest_ratio=interest_ratio)
            model = MISSRec(config)
            model.attach_domain(domain)
            model.refresh_interests()
            model.train()
            rows = np.random.default_rng(seed).choice(len(domain.splits["train"]), args.batch_size, replace=False)
            batch = SequenceCollator(domain.splits["train"], config.max_len)(list(rows))
            with torch.no_grad():
                _, memory, pad = model.encode(batch["item_seq"], batch["item_seq_len"])
                reference = float(model.interest_regulariser(memory, pad, "reference"))
                masked = float(model.interest_regulariser(memory, pad, "masked_mean"))
                cross_entropy = float(model.loss_terms(batch)["cross_entropy"])
            print(
                f"| {interest_ratio} | {seed} | {memory.shape[1]} | {reference:.1f} | {masked:.4f} | {reference / masked:,.0f} | "
                f"{cross_entropy:.3f} | {1e-4 * reference:.3f} |"
            )


if __name__ == "__main__":
    main()
