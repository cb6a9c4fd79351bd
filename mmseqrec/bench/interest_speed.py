"""Interest discovery time: one clustering of N synthetic item tokens (DPC-KNN or k-means).

Tokens: N 300-d float32 vectors around N/50 random Gaussian centres (noise sd 0.8), a stand-in
for adapted item tokens; K = ``ratio`` x N clusters (MISSRec's pretraining uses 0.02), through
``mmseqrec.interest.discover_interests`` as the model calls it. The peak memory that the
report gives is the measuring process's, tokens included.
"""

from __future__ import annotations

import time

import numpy as np

from mmseqrec.interest import discover_interests, num_interests


def make_tokens(n: int, dim: int = 300, seed: int = 0) -> np.ndarray:
    """N tokens around N/50 Gaussian centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 50), dim)).astype(np.float32)
    noise = rng.normal(scale=0.8, size=(n, dim)).astype(np.float32)
    return centres[rng.integers(0, centres.shape[0], size=n)] + noise


def measure(tokens: int, algorithm: str = "dpc_knn", ratio: float = 0.02, knn_k: int = 10) -> dict:
    x = make_tokens(tokens)
    start = time.perf_counter()
    found = discover_interests(x, ratio, algorithm=algorithm, knn_k=knn_k)
    seconds = time.perf_counter() - start
    return {"algorithm": algorithm, "tokens": tokens, "clusters": num_interests(tokens, ratio), "knn_k": knn_k,
            "clusters_used": int(np.unique(found.labels).size), "seconds": seconds}
