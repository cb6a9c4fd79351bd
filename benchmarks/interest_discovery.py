"""Benchmark of interest discovery (``mmseqrec.interest``): time, peak memory and agreement.

    python benchmarks/interest_discovery.py                 # both parts, prints a Markdown table
    python benchmarks/interest_discovery.py --part speed --tokens 200000 --clusters 4000
    python benchmarks/interest_discovery.py --part agreement --tokens 50000

``speed`` runs one clustering of N random 300-d tokens (a Gaussian mixture of 2N/100 blobs, so
that the data has some structure, as adapted item tokens do) in a fresh subprocess and reports
wall-clock seconds and the subprocess's peak resident memory. ``agreement`` clusters the same
tokens through the exact and the approximate (IVF) k-NN paths of DPC-KNN and reports the
adjusted Rand index between the two labelings.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def make_tokens(n: int, dim: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blobs = max(1, n // 50)
    centres = rng.normal(size=(blobs, dim)).astype(np.float32)
    return centres[rng.integers(0, blobs, size=n)] + rng.normal(scale=0.8, size=(n, dim)).astype(np.float32)


def run_once(algorithm: str, n: int, clusters: int, k: int, approximate_above: int) -> dict:
    from mmseqrec.interest import dpc_knn, kmeans

    x = make_tokens(n)
    start = time.perf_counter()
    if algorithm == "dpc_knn":
        out = dpc_knn(x, clusters, k=k, approximate_above=approximate_above)
    else:
        out = kmeans(x, clusters)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"algorithm": algorithm, "tokens": n, "clusters": clusters, "k": k, "seconds": seconds, "peak_rss_mb": peak_mb,
            "clusters_used": int(len(np.unique(out.labels)))}


def speed(n: int, clusters: int, k: int, algorithm: str) -> dict:
    """In a subprocess, so that the peak memory is this clustering's alone."""
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from interest_discovery import run_once; "
        f"print(json.dumps(run_once('{algorithm}', {n}, {clusters}, {k}, 100_000)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(n: int, clusters: int, k: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from mmseqrec.interest import dpc_knn

    x = make_tokens(n)
    start = time.perf_counter()
    exact = dpc_knn(x, clusters, k=k, approximate_above=10**12)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    approx = dpc_knn(x, clusters, k=k, approximate_above=0)
    approx_s = time.perf_counter() - start
    return {"tokens": n, "clusters": clusters, "k": k, "exact_seconds": exact_s, "approximate_seconds": approx_s,
            "adjusted_rand_index": float(adjusted_rand_score(exact.labels, approx.labels)),
            "same_centres": float(np.isin(approx.centres, exact.centres).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("speed", "agreement", "all"), default="all")
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--algorithm", choices=("dpc_knn", "kmeans"), default="dpc_knn")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, python {platform.python_version()}")
    if args.part in ("speed", "all"):
        n = args.tokens or 200_000
        result = speed(n, args.clusters or 4_000, args.k, args.algorithm)
        print("| algorithm | tokens | K | k | seconds | peak RSS (MB) | clusters used |\n|---|---|---|---|---|---|---|")
        print(f"| {result['algorithm']} | {result['tokens']:,} | {result['clusters']:,} | {result['k']} | {result['seconds']:.1f} | "
              f"{result['peak_rss_mb']:.0f} | {result['clusters_used']:,} |")
    if args.part in ("agreement", "all"):
        n = args.tokens if args.part == "agreement" and args.tokens else 50_000
        result = agreement(n, args.clusters or n // 50, args.k)
        print("| tokens | K | k | exact s | approximate s | ARI (exact vs approximate) | shared centres |\n|---|---|---|---|---|---|---|")
        print(f"| {result['tokens']:,} | {result['clusters']:,} | {result['k']} | {result['exact_seconds']:.1f} | "
              f"{result['approximate_seconds']:.1f} | {result['adjusted_rand_index']:.4f} | {result['same_centres']:.1%} |")


if __name__ == "__main__":
    main()
