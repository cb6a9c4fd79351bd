"""Seconds per training epoch and per valid pass of the general top-N models on one domain.

    OMP_NUM_THREADS=1 python benchmarks/topn_epoch_time.py --domain tiktok --data-dir data/processed \
        --models mfbpr,lightgcn,vbpr,lattice,freedom,bm3,diffmm [--threads 1] [--epochs 2] [overrides]

Builds each model exactly as ``finetune`` would (its YAML config, the domain's config, the
overrides), then runs ``--epochs`` training epochs as the training loop does them (the model's
``on_epoch_start``: LATTICE's neighbour search, FREEDOM's pruning, DiffMM's graph generation;
then ``loss(); backward(); step()`` over every training pair with its negative) and one ranking
pass over the valid users (training items masked). Prints a Markdown table with the wall-clock
seconds and the process CPU seconds of an epoch (median over the epochs) and of the valid pass.
CPU seconds are the steadier number on a machine shared with other jobs: wall-clock time also
counts the waits for a core.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmseqrec.config import parse_overrides  # noqa: E402
from mmseqrec.data.loading import load_domain  # noqa: E402
from mmseqrec.metrics import TOPN, rank_targets  # noqa: E402
from mmseqrec.models import model_classes  # noqa: E402
from mmseqrec.runs import resolve_config  # noqa: E402
from mmseqrec.training import topn_loader  # noqa: E402


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def time_epoch(model, loader, optimizer, epoch: int) -> tuple[float, float]:
    model.train()
    loader.batch_sampler.set_epoch(epoch)
    start = clocks()
    model.on_epoch_start(epoch)
    for batch in loader:
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return since(start)


@torch.no_grad()
def time_valid(model, loader, num_items: int) -> tuple[float, float]:
    model.eval()
    start = clocks()
    for batch in loader:
        users = model(batch)
        rank_targets(lambda first, end: model.score_items(users, first, end), batch["targets"], num_items, history=batch["seen"])
    return since(start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="tiktok")
    parser.add_argument("--models", default="mfbpr,lightgcn,vbpr,lattice,freedom,bm3,diffmm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs timed per model (the median is reported)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    domain = load_domain(args.domain, data_dir=args.data_dir)
    print(f"{domain.describe()}\ntorch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}\n")
    print("| model | batch | steps per epoch | epoch, wall s | epoch, CPU s | valid pass, wall s | valid pass, CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        spec = resolve_config(name, domain, overrides=parse_overrides(args.overrides))
        model_cls, _ = model_classes(name)
        torch.manual_seed(0)
        model = model_cls(spec.model_config)
        model.attach_domain(domain)
        train = topn_loader(domain, "train", spec.train.batch_size, True, spec.train.seed)
        valid = topn_loader(domain, "valid", spec.train.eval_batch_size, False, 0)
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
        epochs = [time_epoch(model, train, optimizer, epoch) for epoch in range(args.epochs)]
        wall = statistics.median(e[0] for e in epochs)
        cpu = statistics.median(e[1] for e in epochs)
        valid_wall, valid_cpu = time_valid(model, valid, domain.num_items)
        print(f"| {name} | {spec.train.batch_size} | {len(train)} | {wall:.1f} | {cpu:.1f} | {valid_wall:.1f} | {valid_cpu:.1f} |", flush=True)
    print(f"\nvalid metric of the table runs: {TOPN.valid_metric}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
