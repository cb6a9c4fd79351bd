"""Launched with two processes by test_missrec.py: a short MISSRec pretraining run on a tiny
mixture, after which every process writes its parameters so the test can compare them."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from mmseqrec.data.loading import load_mixture  # noqa: E402
from mmseqrec.models import MISSRec, MISSRecConfig  # noqa: E402
from mmseqrec.training import TrainConfig, Trainer, make_accelerator  # noqa: E402


def main(data_dir: str, out_dir: str) -> None:
    accelerator = make_accelerator(cpu=True)
    mixture = load_mixture(["TinyA", "TinyB"], data_dir=data_dir)
    config = MISSRecConfig(
        num_items=mixture.num_items, text_dim=16, image_dim=16, mode="inductive", hidden_size=16,
        num_heads=2, inner_size=16, dropout=0.1, interest_ratio=0.1,
    )
    model = MISSRec(config)
    train = TrainConfig(epochs=1, batch_size=16, stage="pretrain", validate=False, seed=3)
    Trainer(model, mixture, train, Path(out_dir) / "run", accelerator=accelerator, quiet=True).fit()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, Path(out_dir) / f"params-{accelerator.process_index}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
