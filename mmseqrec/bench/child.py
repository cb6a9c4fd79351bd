"""``python -m mmseqrec.bench.child PART PARAMS_JSON THREADS``: run one measurement (see
``measure.run_measurement``) and print ``RESULT {json}`` with its peak resident memory."""

from __future__ import annotations

import importlib
import json
import sys

from mmseqrec.bench.measure import RESULT_PREFIX, peak_rss_mb

#: Measurement name -> module whose ``measure(**params)`` runs it.
PARTS = {
    "train": "mmseqrec.bench.training_speed",
    "evaluate": "mmseqrec.bench.evaluation_speed",
    "interest": "mmseqrec.bench.interest_speed",
    "extract": "mmseqrec.bench.extraction_speed",
    "load": "mmseqrec.bench.loading_memory",
}


def main(argv: list[str]) -> int:
    part, params, threads = argv[0], json.loads(argv[1]), int(argv[2])
    import torch

    torch.set_num_threads(threads)
    result = importlib.import_module(PARTS[part]).measure(**params)
    print(RESULT_PREFIX + json.dumps({**result, "part": part, "threads": threads, "peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
