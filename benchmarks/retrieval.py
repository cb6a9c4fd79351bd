"""Benchmark of two-stage retrieval (``mmseqrec.retrieval``) against exact full ranking.

    python benchmarks/retrieval.py --index-cache /tmp/index-1m      # 1,000,000 items, the BENCHMARKS.md table
    python benchmarks/retrieval.py --items 200000 --queries 300     # smaller
    python benchmarks/retrieval.py --part threshold                 # flat vs HNSW at several sizes

The catalogue is synthetic with cluster structure: every item belongs to one of ``--clusters``
categories, and its text and image features (``--dim``-d float32 each, 2 x 1M x 64 x 4 B = 512 MB)
are its category's centre in that modality plus noise; 5% of the items have no image. The
scorer is the real ``MISSRec`` module (inductive, text + image, dynamic fusion with alpha =
``--alpha``) attached to an in-memory domain of those features; its adapters keep their random
initialisation, which maps clusters to clusters as trained ones do. Query sequence vectors sit
near the adapted vectors of a random item (text and image mixed, plus noise), as a history that
points at one category does; they are scored as given, without the transformer.

Measured, over ``--queries`` queries in batches of ``--batch``:
- **exact, model**: ``top_items`` over ``MISSRec.score_items`` in blocks of 65,536 items: what
  ``mmseqrec recommend`` and the evaluator do today (the adapters run over the catalogue per batch);
- **exact, cached tables**: the same fused scores from the item tables computed once
  (``item_tables``), fused with the model's own ``_fuse``: the fastest exact ranking;
- **two-stage**: ``retrieve_top``: HNSW candidates from MISSRec's ``index_tables`` (``text``,
  ``image`` and ``mean``), re-scored by ``score_candidates``.
Recall@k is the share of the exact top k (cached tables) that the two-stage top k contains.
``--candidates`` and ``--ef-search`` are chosen on a separate set of ``--tune-queries`` queries
(another seed): the cheapest setting with recall >= ``--target`` there is then measured on the
benchmark queries, so the reported recall is not tuned on the queries it is measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -------------------------------------------------------------------------------------------
# The synthetic catalogue and the model (also used by tests/test_retrieval.py)
# -------------------------------------------------------------------------------------------
def clustered_features(items: int, dim: int, clusters: int, seed: int = 0, noise: float = 0.6, missing_image: float = 0.05):
    """{"text", "image"} -> (values (items + 1, dim) float32, present (items + 1,) bool), row 0
    padding: per modality, the item's cluster centre plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, size=items)
    out = {}
    for name in ("text", "image"):
        centres = rng.normal(size=(clusters, dim)).astype(np.float32)
        values = np.zeros((items + 1, dim), dtype=np.float32)
        for start in range(0, items, 262144):  # in slices: a 1M x 64 float64 noise array would be 512 MB
            end = min(start + 262144, items)
            values[start + 1 : end + 1] = centres[cluster[start:end]] + rng.normal(scale=noise, size=(end - start, dim)).astype(np.float32)
        present = np.ones(items + 1, dtype=bool)
        present[0] = False
        if name == "image":
            absent = np.flatnonzero(rng.random(items) < missing_image) + 1
            present[absent] = False
            values[absent] = 0.0
        out[name] = (values, present)
    return out


def synthetic_domain(features: dict, name: str = "clustered"):
    """An in-memory ``Domain`` holding ``features`` (no users: the model only needs item data)."""
    from mmseqrec.data.format import Examples, FeatureSet
    from mmseqrec.data.loading import Domain

    items = next(iter(features.values()))[0].shape[0] - 1
    empty = Examples.from_lists([], [], [])
    return Domain(
        name=name, path=Path("."), manifest={"name": name, "checksums": {}}, num_items=items, num_users=0,
        splits={"train": empty, "valid": empty, "test": empty},
        features={k: FeatureSet(v, p, k, "synthetic clusters") for k, (v, p) in features.items()},
        item_domain=np.zeros(items + 1, dtype=np.int64), domain_names=[name], item_raw_id=[f"I{i}" for i in range(1, items + 1)],
    )


def clustered_missrec(items: int, dim: int = 64, clusters: int = 1000, seed: int = 0, alpha: float = 2.0, mode: str = "inductive"):
    """The real MISSRec (text + image, hidden size ``dim``) attached to a clustered catalogue."""
    from mmseqrec.models import MISSRec, MISSRecConfig

    torch.manual_seed(seed)
    config = MISSRecConfig(num_items=items, text_dim=dim, image_dim=dim, hidden_size=dim, num_heads=4, inner_size=dim, mode=mode,
                           interest_ratio=1e-3, dropout=0.0)
    model = MISSRec(config)
    model.attach_domain(synthetic_domain(clustered_features(items, dim, clusters, seed)))
    with torch.no_grad():
        model.fusion_alpha.fill_(alpha)
    return model.eval()


@torch.no_grad()
def query_vectors(model, count: int, seed: int, noise: float = 0.5) -> torch.Tensor:
    """(count, D) unit sequence vectors near random items' adapted text and image vectors (each
    modality with a random weight), plus Gaussian noise of norm about ``noise``."""
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(1, model.config.num_items + 1, (count,), generator=generator)
    vectors, _ = model._item_vectors(items)
    mixed = noise * torch.randn(count, model.config.hidden_size, generator=generator) / model.config.hidden_size**0.5
    for vector, present in vectors.values():
        mixed += torch.rand(count, 1, generator=generator) * vector * present[:, None]
    return torch.nn.functional.normalize(mixed, dim=-1)


# -------------------------------------------------------------------------------------------
# Rankings
# -------------------------------------------------------------------------------------------
@torch.no_grad()
def exact_model(model, queries: torch.Tensor, k: int, batch: int) -> tuple[np.ndarray, float]:
    """Top-k ids by the model's own block scoring (the evaluator's path); (ids, seconds)."""
    from mmseqrec.metrics import top_items

    start, out = time.perf_counter(), []
    for q in queries.split(batch):
        out.append(top_items(lambda first, end: model.score_items(q, first, end), model.config.num_items, k, 65536)[1])
    return torch.cat(out).numpy(), time.perf_counter() - start


@torch.no_grad()
def exact_cached(model, tables: dict, queries: torch.Tensor, k: int, batch: int, block: int = 131072) -> tuple[np.ndarray, float]:
    """Top-k ids by the fused score from precomputed tables, fused by ``MISSRec._fuse``."""
    from mmseqrec.metrics import top_items

    names = [n for n in ("text", "image") if n in tables]
    present = {n: tables[n].any(dim=1) for n in names}

    def scorer(q):
        def score_block(first: int, end: int) -> torch.Tensor:
            cos = torch.stack([q @ tables[n][first - 1 : end - 1].T for n in names], dim=-1)
            avail = torch.stack([present[n][first - 1 : end - 1][None, :].expand(q.shape[0], -1) for n in names], dim=-1)
            id_cos = q @ tables["id"][first - 1 : end - 1].T if "id" in tables else None
            return model._fuse(cos, avail, id_cos) / model.config.temperature
        return score_block

    start, out = time.perf_counter(), []
    for q in queries.split(batch):
        out.append(top_items(scorer(q), model.config.num_items, k, block)[1])
    return torch.cat(out).numpy(), time.perf_counter() - start


@torch.no_grad()
def two_stage(model, index, queries: torch.Tensor, k: int, batch: int) -> tuple[np.ndarray, float]:
    from mmseqrec.inference import retrieve_top

    start, out = time.perf_counter(), []
    for q in queries.split(batch):
        out.append(retrieve_top(model, q, index, k)["ids"])
    return torch.cat(out).numpy(), time.perf_counter() - start


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def index_bytes(index) -> int:
    """Serialised size of every table's faiss index (what it holds in memory, within a few %)."""
    import faiss

    return sum(int(faiss.serialize_index(table.index).nbytes) for table in index.tables.values())


# -------------------------------------------------------------------------------------------
def main_benchmark(args) -> dict:
    from mmseqrec.retrieval import IndexSettings, ItemIndex

    started = time.perf_counter()
    model = clustered_missrec(args.items, args.dim, args.clusters, args.seed, args.alpha, args.mode)
    setup_seconds = time.perf_counter() - started
    rss_model = peak_rss_mb()
    print(f"catalogue and model: {args.items:,} items in {setup_seconds:.1f}s, peak RSS {rss_model:.0f} MB", flush=True)

    with torch.no_grad():
        tables = {name: t.contiguous() for name, t in model.item_tables(1, args.items + 1).items()}
    key = {"items": args.items}
    settings = IndexSettings(kind=args.kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    if args.index_cache is not None and (args.index_cache / "manifest.json").is_file():
        # An index this script built before, for the same arguments: the build time is its own.
        index = ItemIndex.load(args.index_cache)
        build_seconds, rss_index = index.built["benchmark_seconds"], index.built["benchmark_peak_rss_mb"]
    else:
        started = time.perf_counter()
        index = ItemIndex.build(model, key, settings, progress=True)
        build_seconds, rss_index = time.perf_counter() - started, peak_rss_mb()
        if args.index_cache is not None:
            index.built.update(benchmark_seconds=build_seconds, benchmark_peak_rss_mb=rss_index)
            index.save(args.index_cache)
    size_mb = index_bytes(index) / 2**20
    print(f"index built in {build_seconds:.1f}s ({', '.join(f'{n}: {t.kind}' for n, t in index.tables.items())}), "
          f"{size_mb:.0f} MB, peak RSS {rss_index:.0f} MB", flush=True)

    # Tuning on its own queries.
    tune = query_vectors(model, args.tune_queries, seed=args.seed + 1000)
    tune_truth, _ = exact_cached(model, tables, tune, args.k, args.batch)
    sweep, chosen = [], None
    for candidates in args.candidate_grid:
        for ef in args.ef_grid:
            index.settings.candidates = candidates
            for table in index.tables.values():
                table.ef_search = ef
            found, seconds = two_stage(model, index, tune, args.k, args.batch)
            entry = {"candidates": candidates, "ef_search": ef, "recall": recall(found, tune_truth), "qps": len(tune) / seconds}
            sweep.append(entry)
            print(f"tune: candidates {candidates:4d}  efSearch {ef:4d}  recall@{args.k} {entry['recall']:.4f}  {entry['qps']:.0f} q/s", flush=True)
            if chosen is None and entry["recall"] >= args.target:
                chosen = entry
    chosen = chosen or max(sweep, key=lambda e: e["recall"])
    index.settings.candidates = chosen["candidates"]
    for table in index.tables.values():
        table.ef_search = chosen["ef_search"]

    queries = query_vectors(model, args.queries, seed=args.seed)
    truth, cached_seconds = exact_cached(model, tables, queries, args.k, args.batch)
    found, two_stage_seconds = two_stage(model, index, queries, args.k, args.batch)
    model_ids, model_seconds = exact_model(model, queries[: args.model_queries], args.k, args.batch)
    agreement = recall(model_ids, truth[: args.model_queries])
    result = {
        "items": args.items, "dim": args.dim, "clusters": args.clusters, "alpha": args.alpha, "mode": args.mode, "k": args.k,
        "queries": args.queries, "tune_queries": args.tune_queries, "batch": args.batch,
        "index": index.manifest()["tables"], "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
        "chosen": {"candidates": chosen["candidates"], "ef_search": chosen["ef_search"]}, "sweep": sweep,
        "build_seconds": build_seconds, "index_mb": size_mb, "peak_rss_mb_model": rss_model, "peak_rss_mb_index": rss_index,
        "recall": recall(found, truth),
        "qps": {"two_stage": len(queries) / two_stage_seconds, "exact_cached": len(queries) / cached_seconds,
                "exact_model": args.model_queries / model_seconds},
        "exact_paths_agree": agreement,
        "machine": machine(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=2))
    return result


def threshold(args) -> dict:
    """Two-stage queries per second with a flat and an HNSW index at several catalogue sizes."""
    from mmseqrec.retrieval import IndexSettings, ItemIndex

    rows = []
    for items in args.sizes:
        model = clustered_missrec(items, args.dim, max(10, items // 1000), args.seed, args.alpha)
        with torch.no_grad():
            tables = {name: t.contiguous() for name, t in model.item_tables(1, items + 1).items()}
        queries = query_vectors(model, args.queries, seed=args.seed)
        truth, cached_seconds = exact_cached(model, tables, queries, args.k, args.batch)
        for kind in ("flat", "hnsw"):
            started = time.perf_counter()
            index = ItemIndex.build(model, {"items": items}, IndexSettings(kind=kind, candidates=args.candidates, ef_search=args.ef_search))
            build = time.perf_counter() - started
            found, seconds = two_stage(model, index, queries, args.k, args.batch)
            row = {"items": items, "kind": kind, "build_seconds": build, "qps": len(queries) / seconds,
                   "exact_cached_qps": len(queries) / cached_seconds, "recall": recall(found, truth)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model, tables
    return {"threshold": rows, "machine": machine()}


def machine() -> dict:
    import faiss

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "faiss": faiss.__version__, "numpy": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("benchmark", "threshold"), default="benchmark")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64, help="feature and model width")
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=2.0, help="MISSRec's fusion alpha (0: the plain mean)")
    parser.add_argument("--mode", choices=("inductive", "transductive"), default="inductive")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--tune-queries", type=int, default=200)
    parser.add_argument("--model-queries", type=int, default=128, help="queries timed through the model's own full scoring (slow)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kind", default="auto", choices=("auto", "flat", "hnsw"))
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--candidate-grid", type=int, nargs="+", default=[50, 100, 200], help="candidates per table tried in tuning")
    parser.add_argument("--ef-grid", type=int, nargs="+", default=[128, 256, 512, 1024], help="HNSW efSearch values tried in tuning")
    parser.add_argument("--target", type=float, default=0.99, help="recall the tuning must reach")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 500_000], help="--part threshold: catalogue sizes")
    parser.add_argument("--candidates", type=int, default=100, help="--part threshold: candidates per table")
    parser.add_argument("--ef-search", type=int, default=128, help="--part threshold: HNSW efSearch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index-cache", type=Path, default=None,
                        help="keep the built index in this folder and reuse it on the next run with the same arguments")
    parser.add_argument("--output", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    result = main_benchmark(args) if args.part == "benchmark" else threshold(args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
