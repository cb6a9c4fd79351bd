"""From a trained model to recommendations: the one place that loads a model for use.

    import mmseqrec

    recommender = mmseqrec.load("checkpoints/demo/syn-Office/sasrec-seed2020")   # a run folder
    recommender = mmseqrec.load("my-org/missrec-office", domain="Office")        # a Hub model
    recommender.recommend([["I12", "I7"], ["I3"]], k=10)    # [Recommendation(items, scores, unknown)]
    recommender.encode([["I12", "I7"]])                      # (1, D) sequence vectors
    recommender.item_vectors()                               # {"id": (N, D)}: what items are scored with

``load`` reads the model (``best/`` or ``final/`` of a run folder, a saved-model folder, or a Hub
repository), the prepared domain the run names in its ``config.yaml`` (or the ``domain`` given),
and the items added to the run after training (``mmseqrec.added_items``), and binds them: raw
item ids (ASINs) in, raw item ids and scores out. ``mmseqrec evaluate``, ``mmseqrec recommend``,
``mmseqrec add-items``, ``mmseqrec serve`` and ``finetune --checkpoint`` (``model_folder``) all
load through here.

Ranking is the evaluator's (``mmseqrec.metrics``): every item of the catalogue is scored, in
blocks of ``block_size`` items; ``top_items`` keeps the best k, ties going to the lower item id.
``exclude_seen`` (on by default here, off in the papers' evaluation protocol) removes the items of
the history. ``candidates`` restricts a history's ranking to the given items. ``retrieval="index"`` ranks
large catalogues in two stages instead (``mmseqrec.retrieval``): nearest-neighbour indexes of
the item vectors, stored beside the model by ``mmseqrec index``, propose candidates per history,
and the model re-scores them exactly; the default, ``retrieval="exact"``, scores every item.

Raw ids that the catalogue does not have are never dropped silently: by default
``UnknownItemsError`` lists them (history index and id); with ``on_unknown="report"`` they are
left out of the scoring and listed in the result's ``unknown``, and a history with no known item
gets no recommendations.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml

from mmseqrec import added_items
from mmseqrec.data.format import Examples
from mmseqrec.data.loading import Domain, DomainNotFoundError, load_domain
from mmseqrec.metrics import rank_targets, top_candidates, top_items
from mmseqrec.models import model_classes
from mmseqrec.models.base import Recommender
from mmseqrec.retrieval import INDEX_DIR, IndexSettings, ItemIndex, catalogue_key, weights_sha256
from mmseqrec.savedmodel import find_model_folder, resolve_model_folder
from mmseqrec.training import ranking_loader

#: ``on_unknown`` choices: raise ``UnknownItemsError``, or list the ids in ``Recommendation.unknown``.
ON_UNKNOWN = ("error", "report")
#: ``retrieval`` choices: score every item, or fetch candidates from the stored indexes first.
RETRIEVAL = ("exact", "index")
HUB_ARGUMENTS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


class UnknownItemsError(KeyError):
    """Raw item ids that the catalogue does not have; ``unknown`` lists (history index, raw id)."""

    def __init__(self, unknown: list[tuple[int, str]], where: str = "history"):
        self.unknown = unknown
        shown = ", ".join(f"{where} {i}: {raw!r}" for i, raw in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        super().__init__(f"{len(unknown)} unknown item id(s) ({shown}{more}); known ids are the raw ids of the domain's items.parquet and of the run's added items")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

    @property
    def ids(self) -> list[str]:
        return list(dict.fromkeys(raw for _, raw in self.unknown))


@dataclass
class Recommendation:
    """The recommendations for one history: raw item ids, best first, with their scores, and the
    raw ids of the history that were not in the catalogue (``on_unknown="report"``)."""

    items: list[str]
    scores: list[float]
    unknown: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------------------------
# The model
# -------------------------------------------------------------------------------------------
def model_folder(source: str | Path, **hub_arguments) -> Path:
    """The saved-model folder of ``source``: a run folder's ``best/`` (else ``final/``), a
    saved-model folder itself, or a Hub repository ("org/name") downloaded into the cache."""
    path = Path(source)
    if (path / "config.yaml").is_file():
        return find_model_folder(path)[0]
    return resolve_model_folder(source, **hub_arguments)


def load_pretrained(source: str | Path, **kwargs) -> Recommender:
    """Any saved mmseqrec model (run folder, model folder or Hub id), its class chosen by the
    ``model_type`` of its ``config.json``; ``kwargs`` go to the Hub download and ``from_pretrained``."""
    folder = model_folder(source, **{k: kwargs.pop(k) for k in list(kwargs) if k in HUB_ARGUMENTS})
    config = json.loads((folder / "config.json").read_text())
    if "model_type" not in config:
        raise ValueError(f"{source}: config.json has no model_type; load it with the model class (e.g. MISSRec.from_pretrained)")
    return model_classes(config["model_type"])[0].from_pretrained(folder, **kwargs)


@dataclass
class RunRecord:
    """What a run folder says about how its model was trained and evaluated (empty for a bare
    model folder or a Hub model)."""

    run_dir: Path | None = None
    config: dict = field(default_factory=dict)  # config.yaml
    metrics: dict = field(default_factory=dict)  # metrics.json

    @classmethod
    def read(cls, source: str | Path) -> RunRecord:
        path = Path(source)
        if not (path / "config.yaml").is_file():
            return cls()
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        metrics_file = path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        return cls(path, config, metrics)

    @property
    def domain_name(self) -> str | None:
        return (self.config.get("data") or {}).get("domain") or self.metrics.get("domain")

    @property
    def train(self) -> dict:
        return self.config.get("train") or {}


def _load_run_domain(record: RunRecord, domain: str | Path | None, data_dir: str | Path | None, source) -> Domain:
    """The domain given, else the one the run names: looked up in ``data_dir`` (or the default
    data folder), then at the path the run recorded."""
    if domain is not None:
        return load_domain(domain, data_dir=data_dir)
    name = record.domain_name
    if name is None:
        raise ValueError(f"{source} does not name its domain (no run config.yaml or metrics.json with one): pass domain=")
    try:
        return load_domain(name, data_dir=data_dir)
    except DomainNotFoundError:
        recorded = (record.config.get("data") or {}).get("path")
        if data_dir is None and recorded and (Path(recorded) / "manifest.json").is_file():
            return load_domain(recorded)
        raise


def load(
    source: str | Path,
    domain: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    with_added_items: bool = True,
    batch_size: int = 256,
    retrieval: str = "exact",
    index_dir: str | Path | None = None,
    candidates: int | None = None,
    **hub_arguments,
) -> DomainRecommender:
    """A recommender bound to its domain (see the module docstring).

    Args:
        source: a run folder (``config.yaml`` + ``best/``), a saved-model folder, or a Hub id.
        domain: the prepared domain (name or folder); default: the one the run names.
        data_dir: where prepared domains live (default ``$MMSEQREC_DATA_DIR`` or ``data/processed``).
        device: ``cpu``, ``cuda``...; default: a GPU if there is one.
        with_added_items: also rank the items added to the run (``mmseqrec add-items``).
        batch_size: histories scored at once.
        retrieval: ``exact`` (score every item) or ``index`` (candidates from the run's stored
            indexes, ``mmseqrec index``, re-scored exactly; a model without a run folder gets
            indexes built in memory).
        index_dir: where the indexes are (default ``<run>/index``).
        candidates: items fetched per index and history (default: the index's setting).
    """
    if retrieval not in RETRIEVAL:
        raise ValueError(f"retrieval must be one of {', '.join(RETRIEVAL)}, got {retrieval!r}")
    record = RunRecord.read(source)
    folder = model_folder(source, **{k: hub_arguments.pop(k) for k in list(hub_arguments) if k in HUB_ARGUMENTS})
    model = load_pretrained(folder, **hub_arguments)
    if model.track != "sequential":
        raise ValueError(
            f"{source} holds a {type(model).__name__}, a general top-N model: it scores the users it was trained on by their "
            "id, not a history, so it cannot recommend from histories (load, recommend, serve). Its metrics: "
            "`mmseqrec evaluate --run RUN --domain DOMAIN`."
        )
    bound = _load_run_domain(record, domain, data_dir, source)
    if model.config.num_items != bound.num_items:
        raise ValueError(
            f"{source} was trained on {model.config.num_items:,} items, domain {bound.name} ({bound.path}) has "
            f"{bound.num_items:,}: not the domain it was trained on"
        )
    model.attach_domain(bound)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recommender = DomainRecommender(model.to(device).eval(), bound, record, batch_size=batch_size, model_path=folder)
    if with_added_items and record.run_dir is not None:
        stored = added_items.read_added(record.run_dir, bound)
        if stored is not None:
            model.add_items(stored.features)
            recommender._extend_catalogue(stored.raw_ids)
    if retrieval == "index":
        if index_dir is None and record.run_dir is None:
            recommender.build_index(save=False)  # nowhere to keep it: built for this process
        else:
            recommender.use_index(index_dir)
        if candidates is not None:
            if int(candidates) < 1:
                raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
            recommender.index.settings.candidates = int(candidates)
    return recommender


# -------------------------------------------------------------------------------------------
# Scoring a batch
# -------------------------------------------------------------------------------------------
def cached_scores(model: Recommender, seq_repr: torch.Tensor, num_items: int, block_size: int):
    """``score_block`` for ``top_items`` and ``rank_targets``: a catalogue that fits one block is
    scored once and shared by both; larger ones are scored block by block, as needed."""
    cache: dict[tuple[int, int], torch.Tensor] = {}

    def score_block(first: int, end: int) -> torch.Tensor:
        if num_items > block_size:
            return model.score_items(seq_repr, first, end)
        if (first, end) not in cache:
            cache[(first, end)] = model.score_items(seq_repr, first, end)
        return cache[(first, end)]

    return score_block


@torch.no_grad()
def rank_batch(
    model: Recommender,
    batch: dict[str, torch.Tensor],
    num_items: int,
    k: int,
    block_size: int = 65536,
    exclude: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
    mask_history: bool | None = None,
    index: ItemIndex | None = None,
) -> dict[str, torch.Tensor]:
    """Top-k items of every row of ``batch`` (``scores``, ``ids``: (B, k), -inf / id of a missing
    entry), and, when the batch has ``target``, the target's rank exactly as ``evaluate`` computes
    it (``mask_history``: the evaluator's flag, removing the window's history items but the target).
    With ``index`` (and no ``allowed``), the top k of the candidates it retrieves, re-scored by the model."""
    seq_repr = model(batch)
    if index is not None and index.tables and allowed is None:
        if mask_history is not None:
            raise ValueError("a target's rank needs every item scored: rank with retrieval='exact' to evaluate")
        return retrieve_top(model, seq_repr, index, k, exclude)
    score_block = cached_scores(model, seq_repr, num_items, block_size)
    scores, ids = top_items(score_block, num_items, k, block_size, exclude=exclude, allowed=allowed)
    out = {"scores": scores, "ids": ids}
    if mask_history is not None:
        out["ranks"] = rank_targets(score_block, batch["target"], num_items, block_size, history=batch["item_seq"] if mask_history else None)
    return out


def retrieve_top(model: Recommender, seq_repr: torch.Tensor, index: ItemIndex, k: int, exclude: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The two stages of ``mmseqrec.retrieval``: candidates from ``index`` for every row, then
    the model's exact scores of them, cut to the top ``k`` (``scores``, ``ids``: (B, k))."""
    # Excluded items may be among the best candidates: fetch as many more as a row excludes.
    count = max(index.settings.candidates, k) + (exclude.shape[1] if exclude is not None else 0)
    candidates = index.search(model.index_query(seq_repr), count)
    scores, ids = top_candidates(model.score_candidates(seq_repr, candidates), candidates, k, exclude)
    return {"scores": scores, "ids": ids}


# -------------------------------------------------------------------------------------------
# The bound recommender
# -------------------------------------------------------------------------------------------
class DomainRecommender:
    """A model bound to its domain's catalogue; made by ``load``.

    Attributes:
        model: the model, in evaluation mode, on ``device``.
        domain: the prepared domain.
        run: what the run folder records (config, metrics; empty for a bare model).
        item_raw_ids: the catalogue's raw ids, index i-1 = item id i (the domain's, then the
            added items).
        lock: held while scoring and while adding items (the service scores from a worker thread).
    """

    def __init__(self, model: Recommender, domain: Domain, run: RunRecord | None = None, batch_size: int = 256, block_size: int = 65536,
                 model_path: Path | None = None):
        self.model = model
        self.model_path = model_path
        self._weights_sha256: str | None = None  # computed on first use, for index manifests
        self.index: ItemIndex | None = None  # with retrieval="index"
        self.index_dir: Path | None = None  # where self.index is stored (None: built in memory)
        self.domain = domain
        self.run = run or RunRecord()
        self.batch_size = batch_size
        self.block_size = block_size
        self.max_len = int(self.run.train.get("max_len") or getattr(model.config, "max_len", 50))
        self.item_raw_ids: list[str] = list(domain.item_raw_id)
        self._index = {raw: i + 1 for i, raw in enumerate(self.item_raw_ids)}
        self.num_added = 0
        self.lock = threading.RLock()

    # ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.model.parameters(), self.model.buffers())).device

    @property
    def num_items(self) -> int:
        """Items that can be ranked: the domain's and the added ones."""
        return len(self.item_raw_ids)

    @property
    def model_type(self) -> str:
        return self.model.model_type

    def describe(self) -> dict[str, Any]:
        """Model, domain and catalogue, for logs and the service's /metadata."""
        cfg = self.model.config
        return {
            "model": type(self.model).__name__,
            "model_type": self.model_type,
            "mode": getattr(cfg, "mode", None),
            "run": str(self.run.run_dir) if self.run.run_dir else None,
            "domain": self.domain.name,
            "items": self.num_items,
            "added_items": self.num_added,
            "users": self.domain.num_users,
            "max_len": self.max_len,
            "accepts_new_items": self.new_items_refusal() is None,
            "retrieval": "exact" if self.index is None else "index",
        }

    def new_items_refusal(self) -> str | None:
        """Why this model cannot take new items (None if it can)."""
        try:
            self.model.new_item_features()
        except ValueError as err:
            return str(err)
        return None

    def _extend_catalogue(self, raw_ids: Sequence[str]) -> None:
        for raw in raw_ids:
            self.item_raw_ids.append(raw)
            self._index[raw] = len(self.item_raw_ids)
        self.num_added += len(raw_ids)

    # ---------------------------------------------------------------------------------------
    # Raw ids
    # ---------------------------------------------------------------------------------------
    def item_id(self, raw_id: str) -> int | None:
        """The catalogue id (1..N) of a raw id, or None."""
        return self._index.get(raw_id)

    def to_ids(self, histories: Sequence[Sequence[str]], on_unknown: str = "error", where: str = "history") -> tuple[list[np.ndarray], list[list[str]]]:
        """Catalogue ids of every history, and per history the raw ids left out as unknown."""
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}")
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence):
            raise TypeError(f"expected a list of {where}s (each a list of raw item ids), got {type(histories).__name__}")
        converted, unknown, missing = [], [], []
        for index, history in enumerate(histories):
            if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
                raise TypeError(f"{where} {index}: expected a list of raw item ids, got {type(history).__name__} (a single history goes in a list: [history])")
            ids, lost = [], []
            for raw in history:
                if not isinstance(raw, str):
                    raise TypeError(f"{where} {index}: raw item ids are strings, got {raw!r}")
                item = self._index.get(raw)
                if item is None:
                    lost.append(raw)
                    missing.append((index, raw))
                else:
                    ids.append(item)
            converted.append(np.asarray(ids, dtype=np.int64))
            unknown.append(lost)
        if missing and on_unknown == "error":
            raise UnknownItemsError(missing, where)
        return converted, unknown

    # ---------------------------------------------------------------------------------------
    # Scoring
    # ---------------------------------------------------------------------------------------
    def _batches(self, histories: list[np.ndarray]):
        """(row indices, batch) over ``histories`` (non-empty id arrays), shortest first so that
        each batch pads only as far as its rows need."""
        examples = Examples.from_lists(np.zeros(len(histories), dtype=np.int64), histories, np.zeros(len(histories), dtype=np.int64))
        for batch in ranking_loader(examples, self.batch_size, self.max_len):
            rows = batch["row"]
            batch = {key: value.to(self.device) for key, value in batch.items()}
            yield rows.numpy(), batch

    @torch.no_grad()
    def top_ids(
        self,
        histories: list[np.ndarray],
        k: int,
        exclude_seen: bool | Sequence[bool] = True,
        candidates: list[np.ndarray | None] | None = None,
        retrieval: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(histories), k'), k' = min(k, catalogue), for histories of
        catalogue ids; -inf / 0 where a row has fewer than k' rankable items."""
        item_index = self._index_for(retrieval)
        if not histories:
            width = min(k, self.num_items)
            return np.zeros((0, width), np.float32), np.zeros((0, width), np.int64)
        for index, history in enumerate(histories):
            if len(history) == 0:
                raise ValueError(f"history {index} is empty: a history needs at least one item")
        flags = np.broadcast_to(np.asarray(exclude_seen, dtype=bool), (len(histories),))
        width = min(int(k), self.num_items)
        scores = np.full((len(histories), width), -np.inf, dtype=np.float32)
        ids = np.zeros((len(histories), width), dtype=np.int64)
        with self.lock:
            for rows, batch in self._batches(histories):
                exclude = None
                if flags[rows].any():
                    # The whole history is excluded, not just the window the model reads.
                    exclude = padded_ids([histories[r] if flags[r] else np.zeros(0, np.int64) for r in rows], self.device)
                allowed = None
                if candidates is not None and any(candidates[r] is not None for r in rows):
                    allowed = torch.zeros(len(rows), self.num_items + 1, dtype=torch.bool, device=self.device)
                    for j, r in enumerate(rows):
                        if candidates[r] is None:
                            allowed[j] = True
                        else:
                            allowed[j, torch.as_tensor(candidates[r], dtype=torch.long, device=self.device)] = True
                    allowed = allowed[:, 1:]
                top = rank_batch(self.model, batch, self.num_items, width, self.block_size, exclude=exclude, allowed=allowed, index=item_index)
                scores[rows] = top["scores"].cpu().numpy()
                ids[rows] = top["ids"].cpu().numpy()
        return scores, ids

    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Sequence[str] | Sequence[Sequence[str]] | None = None,
        on_unknown: str = "error",
        retrieval: str | None = None,
    ) -> list[Recommendation]:
        """The ``k`` best items for every history (lists of raw ids, oldest first).

        Args:
            histories: a list of histories; each a non-empty list of raw item ids.
            k: how many items per history (fewer when fewer can be ranked).
            exclude_seen: leave out the items of the history.
            candidates: rank only these raw ids: one list for every history, or a list of
                lists (one per history, None for all items).
            on_unknown: ``error`` (raise ``UnknownItemsError``) or ``report`` (see the module).
            retrieval: ``exact`` or ``index`` for this call (default: as loaded; ``index`` needs
                an index: ``load(..., retrieval="index")`` or ``use_index``).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        ids, unknown = self.to_ids(histories, on_unknown)
        for index, history in enumerate(ids):
            if len(history) == 0 and not unknown[index]:
                raise ValueError(f"history {index} is empty: a history needs at least one item")
        candidate_ids = self._candidate_ids(candidates, len(ids), on_unknown, unknown)
        scorable = [i for i, history in enumerate(ids) if len(history)]  # the others had only unknown ids
        results = [Recommendation([], [], unknown[i]) for i in range(len(ids))]
        top_scores, top_ids = self.top_ids(
            [ids[i] for i in scorable], k, exclude_seen, None if candidate_ids is None else [candidate_ids[i] for i in scorable], retrieval
        )
        for row, index in enumerate(scorable):
            keep = np.isfinite(top_scores[row])
            results[index].items = [self.item_raw_ids[i - 1] for i in top_ids[row][keep]]
            results[index].scores = top_scores[row][keep].astype(float).tolist()
        return results

    def _candidate_ids(self, candidates, count: int, on_unknown: str, unknown: list[list[str]]) -> list[np.ndarray | None] | None:
        if candidates is None:
            return None
        if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
            raise TypeError(f"candidates: expected a list of raw item ids or a list of such lists, got {type(candidates).__name__}")
        shared = all(isinstance(c, str) for c in candidates)
        lists = [candidates] * count if shared else list(candidates)
        if len(lists) != count:
            raise ValueError(f"candidates: {len(lists)} lists for {count} histories")
        converted = []
        for index, chosen in enumerate(lists):
            if chosen is None:
                converted.append(None)
                continue
            ids, lost = self.to_ids([chosen], on_unknown, where="candidates of history")
            if lost[0]:
                unknown[index] += lost[0]
            converted.append(ids[0])
        return converted

    @torch.no_grad()
    def encode(self, histories: Sequence[Sequence[str]], on_unknown: str = "error") -> np.ndarray:
        """(len(histories), D) sequence vectors, as the model scores items with (MostPop: D = 0)."""
        ids, _ = self.to_ids(histories, on_unknown)
        for index, history in enumerate(ids):
            if len(history) == 0:
                raise ValueError(f"history {index} has no known item to encode")
        vectors: np.ndarray | None = None
        with self.lock:
            for rows, batch in self._batches(ids):
                out = self.model(batch).float().cpu().numpy()
                if vectors is None:
                    vectors = np.zeros((len(ids), out.shape[1]), dtype=np.float32)
                vectors[rows] = out
        return vectors if vectors is not None else np.zeros((0, 0), np.float32)

    @torch.no_grad()
    def item_vectors(self) -> dict[str, np.ndarray]:
        """The vectors every item is scored with, by kind (``Recommender.item_tables``): row i is
        the item ``item_raw_ids[i]``."""
        with self.lock:
            tables = self.model.item_tables(1, self.num_items + 1)
        return {name: table.float().cpu().numpy() for name, table in tables.items()}

    # ---------------------------------------------------------------------------------------
    # New items
    # ---------------------------------------------------------------------------------------
    def add_items(self, items: Sequence[added_items.NewItem], base_dir: str | Path | None = None, image_dir: str | Path | None = None,
                  progress: bool = False) -> list[str]:
        """Make ``items`` rankable at once (content-only models) and store them with the run
        (``mmseqrec.added_items``); returns their raw ids. ``base_dir`` resolves relative image
        paths; ``image_dir`` holds images named by raw id."""
        names = self.model.new_item_features()  # NewItemsUnsupported says why not
        if self.run.run_dir is None:
            raise ValueError("adding items needs a run folder (they are stored in <run>/added_items/); a bare model or Hub model has none")
        added_items.check_new(items, self._index)
        features = added_items.extract_features(items, names, self.domain, base_dir, image_dir, self.device, progress)
        with self.lock:
            added_items.append_added(self.run.run_dir, self.domain, items, features, expected=self.num_added)
            first = self.num_items + 1
            self.model.add_items(features)
            self._extend_catalogue([item.id for item in items])
            if self.index is not None:  # the index follows the catalogue, in memory and on disk
                self.index.extend(self.model, first, self.num_items + 1, self.catalogue_key())
                if self.index_dir is not None:
                    self.index.save(self.index_dir)
        return [item.id for item in items]

    # ---------------------------------------------------------------------------------------
    # Retrieval indexes
    # ---------------------------------------------------------------------------------------
    def _index_for(self, retrieval: str | None) -> ItemIndex | None:
        """The index a ranking goes through: the loaded one unless ``retrieval`` says otherwise."""
        if retrieval is None:
            return self.index
        if retrieval not in RETRIEVAL:
            raise ValueError(f"retrieval must be one of {', '.join(RETRIEVAL)}, got {retrieval!r}")
        if retrieval == "index" and self.index is None:
            raise ValueError("retrieval='index' needs an index: load(..., retrieval='index'), or use_index() / build_index() first")
        return self.index if retrieval == "index" else None

    def catalogue_key(self) -> dict:
        """What an index of this recommender must match (``mmseqrec.retrieval.catalogue_key``)."""
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model_path)
        return catalogue_key(self._weights_sha256, self.domain, self.item_raw_ids)

    def default_index_dir(self) -> Path:
        if self.run.run_dir is None:
            raise ValueError("a stored index lives in a run folder (<run>/index); this model has none: pass a folder")
        return self.run.run_dir / INDEX_DIR

    def use_index(self, folder: str | Path | None = None) -> ItemIndex:
        """Rank through the index stored in ``folder`` (default ``<run>/index``), after checking
        that it describes this model and catalogue (``StaleIndexError``, ``MissingIndexError``)."""
        folder = Path(folder) if folder is not None else self.default_index_dir()
        self.index = ItemIndex.load(folder, self.catalogue_key())
        self.index_dir = folder
        return self.index

    def build_index(self, settings: IndexSettings | None = None, folder: str | Path | None = None, save: bool = True,
                    progress: bool = False) -> ItemIndex:
        """Index the catalogue's item vectors, rank through the index from now on, and (``save``)
        store it in ``folder`` (default ``<run>/index``)."""
        with self.lock:
            index = ItemIndex.build(self.model, self.catalogue_key(), settings, progress=progress)
        self.index = index
        self.index_dir = None
        if save:
            self.index_dir = index.save(Path(folder) if folder is not None else self.default_index_dir())
        return index

    # ---------------------------------------------------------------------------------------
    # Users of the domain
    # ---------------------------------------------------------------------------------------
    def user_raw_ids(self) -> list[str]:
        """Raw ids of the domain's users, index = user id."""
        return pq.read_table(self.domain.path / "users.parquet", columns=["raw_id"]).column("raw_id").to_pylist()

    def user_sequence(self, user: int) -> np.ndarray:
        """A user's whole chronological sequence (every interaction the domain has)."""
        offsets = self.domain.sequence_offsets
        return self.domain.sequence_values[offsets[user] : offsets[user + 1]]


def padded_ids(rows: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(B, longest) item ids of ``rows`` (0 = padding): the ``exclude`` argument of ``top_items``."""
    width = max(1, max((len(r) for r in rows), default=1))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out).to(device)
