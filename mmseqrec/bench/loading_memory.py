"""Peak memory of loading data: one domain, or a pretraining mixture (``load_mixture``).

Reports the bytes the loaded data itself holds (feature tables, presence masks, examples,
sequences) next to the process's peak resident memory, so the report shows how many times over
the data was held while loading (a mixture must not be materialised several times).
"""

from __future__ import annotations

import time

import numpy as np

from mmseqrec.bench.measure import peak_rss_mb
from mmseqrec.data.loading import Domain, load_mixture


def data_bytes(domain: Domain) -> int:
    """Bytes of the arrays a loaded domain holds."""
    arrays = [domain.item_domain, domain.sequence_values, domain.sequence_offsets]
    for features in domain.features.values():
        arrays += [features.values, features.present]
    for examples in domain.splits.values():
        arrays += [examples.user_id, examples.history_values, examples.history_offsets, examples.target]
    return int(sum(np.asarray(a).nbytes for a in arrays))


def measure(domains: list[str], data_dir: str) -> dict:
    before = peak_rss_mb()
    start = time.perf_counter()
    mixture = load_mixture(domains, data_dir=data_dir, name="bench-mixture")
    seconds = time.perf_counter() - start
    held = data_bytes(mixture) / 1024**2
    return {
        "domains": domains, "users": mixture.num_users, "items": mixture.num_items, "train_rows": len(mixture.splits["train"]),
        "seconds": seconds, "data_mb": held, "rss_before_mb": before,
        "peak_over_data": (peak_rss_mb() - before) / held if held else float("nan"),
    }
