"""Candidate retrieval for large catalogues: nearest-neighbour indexes of the item vectors, then
an exact re-scoring of the candidates by the model.

    mmseqrec index --run RUN                                   # writes RUN/index/
    recommender = mmseqrec.load(RUN, retrieval="index")        # or: mmseqrec recommend --run RUN --index

**Two stages.** Scoring every item for every history costs B x N scores; at a million items that
is most of a request's time. Instead, each of the model's item tables (``index_tables``) has a
maximum-inner-product index; a history's query vector (``index_query``) fetches the ``candidates``
best items of every table, and the union is scored by the model itself (``score_candidates``,
the same numbers as ``score_items``) and cut to the top k, ties to the lower item id as in the
evaluator. The final scores are therefore always exact; only an item that no index returns can
be missed.

- SASRec, MMMLP: one table (the item vectors), score = query . vector.
- BERT4Rec: one table [embedding, bias] searched with [s, 1], so the bias is part of the product.
- UniSRec: one table of normalised item vectors; the score is the cosine over the temperature.
- MISSRec: a table per modality (normalised adapted text / image vectors, items lacking the
  modality left out) and, transductive, the ID table. Its score is not one inner product: it
  is a convex combination of the per-table cosines (softmax(alpha cos) weights, and (ID + 2 fused)
  / 3), so it never exceeds an item's best cosine: an item in the top k has a cosine at least
  as high as the k-th score in some table, which is what the per-table searches fetch.
- MostPop: no index (its scores are a lookup, the same for everyone); ranking stays exact.

**Index kinds.** ``flat`` (faiss ``IndexFlatIP``) scans every vector: exact, nothing to tune,
a build of seconds, but a cost per query that grows with the catalogue. ``hnsw``
(``IndexHNSWFlat``) is a graph searched greedily: a cost per query that hardly grows, at the
price of a build (about 8 minutes for three 1M-item tables on 2 cores) and a small recall loss.
``auto`` (the default) takes ``flat`` up to ``EXACT_UP_TO`` = 100,000 items per table and
``hnsw`` above. Measured on MISSRec's three 64-d tables (benchmarks/retrieval.py --part
threshold, BENCHMARKS.md), two-stage queries per second were 381 flat / 204 HNSW at 50,000
items, 97 / 178 at 200,000 and 49 / 163 at 500,000: the exact scan is faster up to about 100,000
items, and there it costs nothing in recall or build time.
HNSW parameters: M = 32, efConstruction = 80, efSearch = 512 and 50 candidates per table, the
cheapest setting of the grid (50/100/200 candidates x efSearch 128..1024) that kept recall@10
>= 0.99 on tuning queries of the 1M-item benchmark (0.993 on the measured ones). HNSW searches
Euclidean neighbours: inner products become distances by appending sqrt(R^2 - |v|^2) to every
item vector (R the largest norm) and 0 to the query, so that |q - v|^2 = |q|^2 + R^2 - 2 q.v
(Bachrach et al., RecSys 2014); the graph stays a metric one, which HNSW navigates better than
raw inner products of vectors of unequal norms.

**Stored beside the model**, written atomically (a complete folder, then renamed)::

    RUN/index/manifest.json     what was indexed: model weights and domain checksums, the
                                catalogue (item count with added items, checksum of its raw ids),
                                and per table the kind, parameters, items indexed, build time
    RUN/index/<table>.faiss     one faiss index per table (ids = item ids)

Loading compares the manifest with the run as it is now; a different model, domain or catalogue
(items added since) is a ``StaleIndexError`` naming the field, to be fixed with ``mmseqrec
index``. ``mmseqrec add-items`` and the service's ``POST /items`` extend a current index with
the new items (an HNSW table whose new vectors exceed its R is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from mmseqrec.data.format import sha256_of, write_folder_atomically
from mmseqrec.data.loading import Domain

INDEX_DIR = "index"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
KINDS = ("auto", "flat", "hnsw")
#: Largest table (items) that ``auto`` indexes exactly; see the module docstring.
EXACT_UP_TO = 100_000


class StaleIndexError(ValueError):
    """A stored index does not describe the run's model and catalogue as they are now."""


class MissingIndexError(FileNotFoundError):
    """Retrieval from an index was asked for and none is stored."""


@dataclass
class IndexSettings:
    """How the indexes are built and searched.

    Attributes:
        kind: ``auto`` (flat up to ``exact_up_to`` items, HNSW above), ``flat`` or ``hnsw``.
        exact_up_to: the ``auto`` threshold, in items per table.
        hnsw_m: HNSW graph degree (links per node on the upper layers, twice that on the base).
        ef_construction: HNSW candidate list while building (higher: better graph, slower build).
        ef_search: HNSW candidate list while searching (raised to the number asked for).
        candidates: items fetched per table and history before the exact re-scoring.
    """

    kind: str = "auto"
    exact_up_to: int = EXACT_UP_TO
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 512
    candidates: int = 50

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("exact_up_to", "hnsw_m", "ef_construction", "ef_search", "candidates"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"index setting {name} must be a positive integer, got {getattr(self, name)!r}")


def weights_sha256(model_path: Path | None) -> str | None:
    """The checksum of a saved model's weights (None for a model without a folder)."""
    weights = Path(model_path) / "model.safetensors" if model_path is not None else None
    return sha256_of(weights) if weights is not None and weights.is_file() else None


def catalogue_key(model_sha256: str | None, domain: Domain, item_raw_ids: Sequence[str]) -> dict:
    """What an index must match to be current: the model's weights (``weights_sha256``), the
    domain's files and the catalogue it ranks (the domain's items, then the added ones, in id
    order)."""
    domain_files = json.dumps(domain.manifest.get("checksums", {}), sort_keys=True).encode()
    return {
        "model_sha256": model_sha256,
        "domain": domain.name,
        "domain_sha256": hashlib.sha256(domain_files).hexdigest(),
        "items": len(item_raw_ids),
        "added_items": len(item_raw_ids) - domain.num_items,
        "item_ids_sha256": hashlib.sha256("\n".join(item_raw_ids).encode()).hexdigest(),
    }


def _file_name(table: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", table) + ".faiss"


class TableIndex:
    """The index of one item table: a faiss index whose ids are item ids, and, for HNSW, the
    norm bound R of the inner-product-to-distance transform."""

    def __init__(self, name: str, kind: str, dim: int, index, max_norm: float | None = None, ef_search: int = 512):
        self.name, self.kind, self.dim, self.index, self.max_norm, self.ef_search = name, kind, dim, index, max_norm, ef_search

    @classmethod
    def create(cls, name: str, kind: str, dim: int, settings: IndexSettings, max_norm: float | None) -> TableIndex:
        if kind == "flat":
            return cls(name, kind, dim, faiss.IndexIDMap(faiss.IndexFlatIP(dim)))
        graph = faiss.IndexHNSWFlat(dim + 1, settings.hnsw_m)  # one extra column: see _augment
        graph.hnsw.efConstruction = settings.ef_construction
        return cls(name, kind, dim, faiss.IndexIDMap(graph), max_norm, settings.ef_search)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def fits(self, vectors: np.ndarray) -> bool:
        """Whether ``vectors`` can join without rebuilding (their norms within R, for HNSW)."""
        return self.kind == "flat" or not len(vectors) or float(np.linalg.norm(vectors, axis=1).max()) <= self.max_norm

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self.kind == "hnsw":
            vectors = self._augment(vectors)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))

    def _augment(self, vectors: np.ndarray) -> np.ndarray:
        """[v, sqrt(R^2 - |v|^2)]: every item at distance R from the origin, so that the nearest
        item to [q, 0] is the one with the largest q . v."""
        squared = np.einsum("ij,ij->i", vectors, vectors)
        extra = np.sqrt(np.maximum(self.max_norm**2 - squared, 0.0))
        return np.concatenate([vectors, extra[:, None]], axis=1).astype(np.float32)

    def search(self, queries: np.ndarray, count: int) -> np.ndarray:
        """(B, count) item ids, best first; 0 where the table has fewer items."""
        count = min(count, self.size)
        if count == 0:
            return np.zeros((len(queries), 0), dtype=np.int64)
        params = None
        if self.kind == "hnsw":
            queries = np.concatenate([queries, np.zeros((len(queries), 1), np.float32)], axis=1)
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, count))
        _, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), count, params=params)
        return np.where(ids < 0, 0, ids)

    def describe(self, settings: IndexSettings) -> dict:
        entry = {"kind": self.kind, "dim": self.dim, "indexed_items": self.size, "file": _file_name(self.name)}
        if self.kind == "hnsw":
            entry.update({"max_norm": self.max_norm, "hnsw_m": settings.hnsw_m, "ef_construction": settings.ef_construction,
                          "ef_search": self.ef_search, "metric": "L2 on [v, sqrt(R^2 - |v|^2)] (inner product)"})
        else:
            entry["metric"] = "inner product, exact"
        return entry


def _present(vectors: np.ndarray) -> np.ndarray:
    """Rows the table represents: all-zero rows are items without it (a missing modality)."""
    return np.any(vectors != 0, axis=1)


@torch.no_grad()
def _table_vectors(model, first_id: int, end_id: int, chunk: int, progress: bool) -> dict[str, np.ndarray]:
    """Every ``index_tables`` table of items ``first_id .. end_id-1`` as float32 arrays."""
    parts: dict[str, list[np.ndarray]] = {}
    starts = range(first_id, end_id, chunk)
    for start in tqdm(starts, desc="item vectors", unit="chunk", disable=not progress or len(starts) < 2):
        for name, table in model.index_tables(start, min(start + chunk, end_id)).items():
            parts.setdefault(name, []).append(table.float().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


class ItemIndex:
    """The indexes of a model's item tables over one catalogue (see the module docstring)."""

    def __init__(self, tables: dict[str, TableIndex], settings: IndexSettings, key: dict, built: dict | None = None):
        self.tables, self.settings, self.key, self.built = tables, settings, key, built or {}

    # ---------------------------------------------------------------------------------------
    @classmethod
    def build(cls, model, key: dict, settings: IndexSettings | None = None, progress: bool = False, chunk: int = 65536) -> ItemIndex:
        """Index items 1..``key["items"]`` of ``model``."""
        settings = settings or IndexSettings()
        started = time.time()
        vectors = _table_vectors(model, 1, key["items"] + 1, chunk, progress)
        tables = {}
        for name, table in vectors.items():
            tables[name] = cls._build_table(name, table, settings, progress, chunk)
        built = {"seconds": round(time.time() - started, 3), "faiss": faiss.__version__, "torch": torch.__version__}
        return cls(tables, settings, dict(key), built)

    @staticmethod
    def _build_table(name: str, table: np.ndarray, settings: IndexSettings, progress: bool, chunk: int) -> TableIndex:
        present = np.flatnonzero(_present(table))
        kind = settings.kind if settings.kind != "auto" else ("flat" if len(present) <= settings.exact_up_to else "hnsw")
        max_norm = float(np.linalg.norm(table[present], axis=1).max()) if len(present) else 1.0
        index = TableIndex.create(name, kind, table.shape[1], settings, max_norm)
        steps = range(0, len(present), chunk)
        for start in tqdm(steps, desc=f"index {name} ({kind})", unit="chunk", disable=not progress or len(steps) < 2):
            rows = present[start : start + chunk]
            index.add(table[rows], rows + 1)  # row r is item r + 1
        return index

    def extend(self, model, first_id: int, end_id: int, key: dict, chunk: int = 65536) -> list[str]:
        """Add items ``first_id .. end_id-1`` (appended to the catalogue) and adopt ``key``;
        returns the tables that had to be rebuilt (new HNSW vectors longer than their R)."""
        vectors = _table_vectors(model, first_id, end_id, chunk, False)
        rebuilt = []
        for name, table in vectors.items():
            rows = np.flatnonzero(_present(table))
            current = self.tables[name]
            if current.fits(table[rows]):
                current.add(table[rows], rows + first_id)
            else:
                self.tables[name] = self._build_table(name, _table_vectors(model, 1, end_id, chunk, False)[name], self.settings, False, chunk)
                rebuilt.append(name)
        self.key = dict(key)
        return rebuilt

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def search(self, queries: torch.Tensor, count: int) -> torch.Tensor:
        """(B, U) candidate item ids for query vectors ``queries`` (B, d): the union of every
        table's best ``count``, in ascending id order, 0 where a row has fewer (padding)."""
        found = [table.search(queries.float().cpu().numpy(), count) for table in self.tables.values()]
        ids = np.sort(np.concatenate(found, axis=1), axis=1)
        repeated = np.zeros_like(ids, dtype=bool)
        repeated[:, 1:] = ids[:, 1:] == ids[:, :-1]
        ids[repeated] = 0
        return torch.from_numpy(ids).to(queries.device)

    def manifest(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            **self.key,
            "settings": asdict(self.settings),
            "tables": {name: table.describe(self.settings) for name, table in self.tables.items()},
            "built": self.built,
        }

    # ---------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder`` atomically: a complete sibling folder, then renamed."""
        def fill(staging: Path) -> None:
            for name, table in self.tables.items():
                faiss.write_index(table.index, str(staging / _file_name(name)))
            (staging / MANIFEST).write_text(json.dumps(self.manifest(), indent=2) + "\n")

        return write_folder_atomically(Path(folder), fill)

    @classmethod
    def load(cls, folder: str | Path, key: dict | None = None) -> ItemIndex:
        """The index stored in ``folder``; with ``key``, checked to be current (``StaleIndexError``)."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise MissingIndexError(f"{folder}: no index ({MANIFEST} missing); build one with `mmseqrec index --run RUN`")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise StaleIndexError(f"{path}: format {manifest.get('format')!r}, this version of mmseqrec reads {FORMAT_VERSION}; rebuild it with `mmseqrec index`")
        if key is not None:
            check_current(path, manifest, key)
        settings = IndexSettings(**manifest["settings"])
        tables = {}
        for name, entry in manifest["tables"].items():
            file = folder / entry["file"]
            if not file.is_file():
                raise StaleIndexError(f"{path}: table '{name}' names {file}, which is missing; rebuild it with `mmseqrec index`")
            index = faiss.read_index(str(file))
            if int(index.ntotal) != int(entry["indexed_items"]):
                raise StaleIndexError(f"{file}: {index.ntotal} vectors, {path} says indexed_items={entry['indexed_items']}; rebuild it with `mmseqrec index`")
            tables[name] = TableIndex(name, entry["kind"], int(entry["dim"]), index, entry.get("max_norm"), int(entry.get("ef_search", settings.ef_search)))
        stored_key = {k: manifest.get(k) for k in (key or manifest) if k not in ("format", "settings", "tables", "built")}
        return cls(tables, settings, stored_key, manifest.get("built"))


def check_current(path: Path, manifest: dict, key: dict) -> None:
    """Raise ``StaleIndexError`` naming every field of ``key`` that the manifest at ``path``
    records differently."""
    differing = [name for name, value in key.items() if manifest.get(name) != value]
    if not differing:
        return
    details = "; ".join(f"{name}: index {manifest.get(name)!r}, now {key[name]!r}" for name in differing)
    reason = ""
    if "items" in differing or "item_ids_sha256" in differing:
        reason = " (items were added to the run after the index was built)" if key.get("added_items", 0) > (manifest.get("added_items") or 0) else ""
    elif "model_sha256" in differing:
        reason = " (the model was trained again)"
    raise StaleIndexError(f"{path} is stale{reason}: {details}. Rebuild it with `mmseqrec index --run RUN`")


def read_settings(folder: str | Path) -> IndexSettings | None:
    """The settings a stored index was built with (None if there is none or it is unreadable),
    so that a rebuild keeps them."""
    try:
        return IndexSettings(**json.loads((Path(folder) / MANIFEST).read_text())["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
