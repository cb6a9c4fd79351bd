"""Full-ranking evaluation throughput: users per second over a split, and the process's memory.

The model is built as ``finetune`` builds it (random weights: the cost does not depend on
them) and ranks every item for each user of the split through ``training.evaluate``, the code
path of validation and test (length-ordered batches, item blocks of ``eval_block_size``, ranks
computed on the device). ``max_users`` bounds the users scored (the first batches in length
order, so a bounded run is biased towards short histories; the report says how many ran).
"""

from __future__ import annotations

import itertools
import time

from accelerate import Accelerator

from mmseqrec.bench.training_speed import build
from mmseqrec.training import evaluate, make_loader


def measure(model: str, domain: str, data_dir: str, split: str = "test", max_users: int | None = None,
            overrides: list[str] | None = None) -> dict:
    data, net, train = build(model, [domain], data_dir, "finetune", None, overrides or [])
    net.on_epoch_start(0)
    accelerator = Accelerator(cpu=True)
    loader = make_loader(data, split, train.eval_batch_size, train.max_len, False, 0)
    batches = loader if max_users is None else list(itertools.islice(loader, -(-max_users // train.eval_batch_size)))
    start = time.perf_counter()
    result = evaluate(net, batches, accelerator, data.num_items, train.mask_history, train.eval_block_size)
    seconds = time.perf_counter() - start
    users = int(len(result["rows"]))
    return {
        "model": model, "domain": data.name, "split": split, "items": data.num_items, "users": users,
        "split_users": len(data.splits[split]), "eval_batch_size": train.eval_batch_size,
        "eval_block_size": train.eval_block_size, "seconds": seconds, "users_per_second": users / seconds,
    }
