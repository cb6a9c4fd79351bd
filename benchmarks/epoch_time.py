"""Seconds per training epoch and per evaluation pass, uniform batches vs ``train.group_by_length``.

    python benchmarks/epoch_time.py --domain Scientific --model sasrec
    python benchmarks/epoch_time.py --domain Office --model missrec --threads 1 model.modalities=text
    python benchmarks/epoch_time.py --domain Scientific --model mmmlp --threads 1 [--untrimmed]

Builds the model exactly as ``finetune`` would (its YAML config, the domain's config, the
overrides), then times one epoch of ``loss(); backward(); step()`` over the train split with
uniform batches and with length-grouped batches, and one evaluation pass over the valid split in
history-length order (what the evaluator now does) and in the split's natural order. Prints a
Markdown table; also the rows' total padded length, the work both batchings pad to.
``--untrimmed`` makes MMMLP run every batch over all its ``max_len`` window slots, as it did
before it learnt to skip the slots that are padding in every row of a batch.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmseqrec.config import parse_overrides  # noqa: E402
from mmseqrec.data.batching import ExampleIndex, SequenceCollator  # noqa: E402
from mmseqrec.data.loading import load_domain  # noqa: E402
from mmseqrec.models import model_classes  # noqa: E402
from mmseqrec.models.base import apply_stage  # noqa: E402
from mmseqrec.runs import resolve_config  # noqa: E402
from mmseqrec.training import make_loader  # noqa: E402


def padded_tokens(loader) -> int:
    return sum(int(batch["item_seq"].numel()) for batch in loader)


def time_epoch(model, loader) -> float:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    start = time.perf_counter()
    for batch in loader:
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def time_eval(model, loader, num_items: int) -> float:
    model.eval()
    start = time.perf_counter()
    for batch in loader:
        model.score_items(model(batch), 1, num_items + 1)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="Scientific")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--untrimmed", action="store_true", help="MMMLP: compute all max_len window slots of every batch")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    domain = load_domain(args.domain, data_dir=args.data_dir)
    spec = resolve_config(args.model, domain, overrides=parse_overrides(args.overrides))
    model_cls, _ = model_classes(args.model)
    cfg = spec.train
    rows = []
    for grouped in (False, True):
        torch.manual_seed(0)
        model = model_cls(spec.model_config)
        model.attach_domain(domain)
        if args.untrimmed:
            if not hasattr(model, "trim_window"):
                parser.error(f"--untrimmed applies to MMMLP only, not {args.model}")
            model.trim_window = False
        apply_stage(model, "finetune")
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(0)
        train = make_loader(domain, "train", cfg.batch_size, cfg.max_len, True, cfg.seed, group_by_length=grouped)
        seconds = time_epoch(model, train)
        rows.append(("length-grouped" if grouped else "uniform", len(train), padded_tokens(train), seconds))

    natural = DataLoader(
        ExampleIndex(len(domain.splits["valid"])), batch_size=cfg.eval_batch_size,
        collate_fn=SequenceCollator(domain.splits["valid"], cfg.max_len),
    )
    ordered = make_loader(domain, "valid", cfg.eval_batch_size, cfg.max_len, False, 0)
    evals = [("natural order", len(natural), padded_tokens(natural), time_eval(model, natural, domain.num_items)),
             ("length order", len(ordered), padded_tokens(ordered), time_eval(model, ordered, domain.num_items))]

    real = int(np.minimum(domain.splits["train"].lengths(), cfg.max_len).sum())
    print(f"{args.model} on {domain.name}: {len(domain.splits['train']):,} train rows ({real:,} history items), "
          f"batch {cfg.batch_size}{', untrimmed window' if args.untrimmed else ''}; torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print("\n| pass | batches | padded positions | seconds |\n|---|---|---|---|")
    for name, batches, tokens, seconds in rows:
        print(f"| train epoch, {name} | {batches} | {tokens:,} | {seconds:.1f} |")
    for name, batches, tokens, seconds in evals:
        print(f"| valid pass, {name} | {batches} | {tokens:,} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
