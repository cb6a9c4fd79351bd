"""The contract and shared blocks of the general top-N models (MF-BPR, LightGCN, VBPR, LATTICE,
FREEDOM, BM3, DiffMM).

These models represent users by an ID, not by a history: a batch is (``user_id``, ``pos_item``,
``neg_item``) triples for training (``PairBatchSampler``) and ``user_id`` rows for ranking.
``TopNRecommender`` is their base (next to ``Recommender``, never another model):

- ``track = "topn"``: the training loop feeds them the domain's top-N split and the evaluator
  ranks each user's held-out items with the training items masked;
- ``attach_domain`` takes what is not saved with the weights: the training interactions (the
  user-item graph) and the feature sets the model reads; a subclass builds its own graphs in
  ``prepare_domain``;
- ``forward(batch)`` gives the user vectors (B, D) and ``score_items`` their dot products with
  item vectors; both come from ``embeddings()`` (all users, all items), which a graph model
  computes by propagating over the whole graph. In evaluation that is done once and kept until
  the model changes mode (``train()`` / ``eval()``) or domain, so ranking all users costs one
  propagation, not one per batch.

Shared blocks: the normalised user-item graph, LightGCN propagation, item-item kNN graphs
through faiss (no dense N x N matrix anywhere), the BPR loss and the L2 penalty, feature
projection with missing modalities masked. Item ids are 1..N in batches; the embedding tables
hold items 0..N-1 (row = id - 1); graph nodes are users 0..U-1 then items U..U+N-1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmseqrec.models.base import NewItemsUnsupported, Recommender

#: How a domain's feature sets are chosen: every set it has, or a comma-separated list of names.
ALL_FEATURES = "all"


def topn_domain_config(domain, config: dict | None, config_cls, multimodal: bool) -> dict:
    """The config values a top-N model takes from the domain: user and item counts and, for a
    multimodal model, the names and dimensions of the feature sets named by ``features``
    (``all``: every set the domain has). A clear error when a multimodal model meets a domain
    without features, or names a set the domain lacks."""
    values = {"num_users": domain.num_users, "num_items": domain.num_items}
    if not multimodal:
        return values
    wanted = (config or {}).get("features", config_cls.__dataclass_fields__["features"].default)
    names = list(domain.features) if wanted == ALL_FEATURES else [n.strip() for n in str(wanted).split(",") if n.strip()]
    missing = [n for n in names if n not in domain.features]
    if missing:
        raise ValueError(f"{config_cls.__name__[:-6]}: domain {domain.name} has no feature set {', '.join(missing)} "
                         f"(it has {', '.join(domain.features) or 'none'}); set model.features")
    if not names:
        raise ValueError(
            f"{config_cls.__name__[:-6]} is a multimodal model and domain {domain.name} has no item features; "
            "use an ID-only model (mfbpr, lightgcn) or extract features first"
        )
    return {**values, "feature_names": names, "feature_dims": [domain.features[n].dim for n in names]}


@dataclass
class TopNConfig:
    """The fields every general top-N model's configuration starts with.

    Attributes:
        num_users: U, the number of users (set from the domain).
        num_items: N, the number of items (set from the domain).
        embedding_size: width of the user and item ID vectors (64, as in MMRec and DiffMM).
    """

    num_users: int = 0
    num_items: int = 0
    embedding_size: int = 64


@dataclass
class MultimodalConfig(TopNConfig):
    """``TopNConfig`` and the item feature sets a multimodal model reads.

    Attributes:
        features: the feature sets to read, comma-separated, or ``all`` (every set the domain has).
        feature_names: the feature sets read (set from the domain and ``features``).
        feature_dims: their dimensions (set from the domain).
    """

    features: str = ALL_FEATURES
    feature_names: list[str] = field(default_factory=list)
    feature_dims: list[int] = field(default_factory=list)


class TopNRecommender(Recommender):
    """Base of the general top-N models (see the module docstring). A subclass names its
    ``config_class`` (a ``TopNConfig``, or a ``MultimodalConfig`` when it reads features)."""

    track = "topn"
    config_class: type = TopNConfig

    def __init__(self, config: TopNConfig, user_width: int | None = None):
        """Check the fields set from the domain and make the ID tables (``user_width``: the
        user vectors' width, ``embedding_size`` unless given)."""
        super().__init__()
        name = type(config).__name__
        if config.num_users < 1 or config.num_items < 1:
            raise ValueError(f"{name}.num_users and num_items must be set from the domain")
        if isinstance(config, MultimodalConfig) and not config.feature_names:
            raise ValueError(f"{name}.feature_names must be set from the domain (a multimodal model needs item features)")
        self.config = config
        self.user_embedding = xavier_embedding(config.num_users, user_width or config.embedding_size)
        self.item_embedding = xavier_embedding(config.num_items, config.embedding_size)
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def domain_config(cls, domain, config: dict | None = None) -> dict:
        return topn_domain_config(domain, config, cls.config_class, multimodal=issubclass(cls.config_class, MultimodalConfig))

    # --- the domain -------------------------------------------------------------------------
    def attach_domain(self, domain) -> None:
        """Take the training graph and the features (not saved with the model), then let the
        model build its own structures (``prepare_domain``)."""
        cfg = self.config
        if (domain.num_users, domain.num_items) != (cfg.num_users, cfg.num_items):
            raise ValueError(
                f"{type(self).__name__} was built for {cfg.num_users} users x {cfg.num_items} items; domain {domain.name} "
                f"has {domain.num_users} x {domain.num_items}"
            )
        domain.require_track("topn", type(self).__name__)
        device = self._device()
        train = domain.topn["train"]
        self.register_buffer("train_users", torch.as_tensor(train.users(), device=device), persistent=False)
        self.register_buffer("train_items", torch.as_tensor(train.items - 1, device=device), persistent=False)
        self.register_buffer("ui_graph", user_item_graph(self.train_users, self.train_items, cfg.num_users, cfg.num_items), persistent=False)
        for k, name in enumerate(getattr(cfg, "feature_names", [])):
            feature = domain.features[name]
            if feature.dim != cfg.feature_dims[k]:
                raise ValueError(f"{type(self).__name__} expects feature set '{name}' of dimension {cfg.feature_dims[k]}, domain {domain.name} has {feature.dim}")
            # a copy: the domain's arrays may be read-only memory maps
            self.register_buffer(f"feature_{k}", torch.tensor(np.asarray(feature.values[1:]), device=device), persistent=False)
            self.register_buffer(f"present_{k}", torch.as_tensor(feature.present[1:], device=device), persistent=False)
        self.prepare_domain(domain)
        self._cached = None

    def prepare_domain(self, domain) -> None:
        """Hook for graphs built from the domain (kNN item graphs, ...), after ``attach_domain``."""

    def features(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(values (N, d_m), present (N,)) of every feature set the model reads, in config order."""
        return [(getattr(self, f"feature_{k}"), getattr(self, f"present_{k}")) for k in range(len(self.config.feature_names))]

    def _device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def _require_graph(self) -> None:
        if self._buffers.get("ui_graph") is None:
            raise RuntimeError(f"{type(self).__name__} needs its training graph: call attach_domain(domain) first")

    # --- scoring ----------------------------------------------------------------------------
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, D) user and (N, D) item vectors whose dot products are the scores."""
        raise NotImplementedError

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``embeddings()``, computed once per evaluation (kept until the mode or domain changes)."""
        if self.training:
            return self.embeddings()
        if self._cached is None:
            with torch.no_grad():
                self._cached = self.embeddings()
        return self._cached

    def train(self, mode: bool = True):
        self._cached = None  # the weights are about to change, or have just been restored
        return super().train(mode)

    def bpr_terms(
        self, users: torch.Tensor, items: torch.Tensor, batch: dict[str, torch.Tensor], reg_weight: float,
        penalised: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """BPR on the batch's (user, positive, negative) triples scored with the final ``users``
        and ``items`` vectors, and ``reg_weight`` x the L2 penalty of the batch's rows of the
        ``penalised`` (user, item) tables (default: the ID tables)."""
        u, pos, neg = batch["user_id"], batch["pos_item"] - 1, batch["neg_item"] - 1
        user_table, item_table = penalised if penalised is not None else (self.user_embedding.weight, self.item_embedding.weight)
        return {
            "bpr": bpr_loss((users[u] * items[pos]).sum(-1), (users[u] * items[neg]).sum(-1)),
            "l2": reg_weight * l2_penalty(user_table[u], item_table[pos], item_table[neg]),
        }

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The sum of ``loss_terms`` (every top-N model names its terms)."""
        return sum(self.loss_terms(batch).values())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.scoring_embeddings()[0][batch["user_id"]]

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        return seq_repr @ self.scoring_embeddings()[1][first_id - 1 : end_id - 1].T

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        items = self.scoring_embeddings()[1]
        return torch.einsum("bd,bcd->bc", seq_repr, items[(ids - 1).clamp(min=0)])

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``id``: the item vectors; the score is their dot product with the user vector."""
        return {"id": self.scoring_embeddings()[1][first_id - 1 : end_id - 1]}

    def new_item_features(self) -> list[str]:
        raise NewItemsUnsupported(
            f"{type(self).__name__} is a general top-N model: it learns a vector per training user and item from the "
            "interaction graph, so an item added afterwards has none. Content-only models rank new items: MISSRec or "
            "UniSRec fine-tuned with --mode inductive."
        )


# ---------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------


def sparse(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A coalesced sparse COO matrix (invariants are guaranteed by construction here, so torch
    is told not to re-check them on every call)."""
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, size, check_invariants=False).coalesce()


def symmetric_weights(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """The values of D^-1/2 A D^-1/2 for the n x n matrix A given by (rows, cols, values), D the
    row sums; a node without weight keeps 0 (no division by zero). Differentiable in ``values``."""
    degree = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    inverse = torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))
    return inverse[rows] * values * inverse[cols]


def user_item_graph(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The normalised (U+N) x (U+N) bipartite graph of interactions (users 0..U-1, items
    U..U+N-1, ``items`` 0-based): D^-1/2 A D^-1/2 with A symmetric (LightGCN's propagation
    matrix). ``weights`` (default ones) give each interaction's weight in A."""
    n = num_users + num_items
    rows = torch.cat([users, items + num_users])
    cols = torch.cat([items + num_users, users])
    values = torch.ones(rows.shape[0], device=users.device) if weights is None else torch.cat([weights, weights])
    return sparse(rows, cols, symmetric_weights(rows, cols, values, n), (n, n))


def propagate_edges(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A @ x for the sparse A given as an edge list, by gather and scatter-add: differentiable in
    the edge ``values`` at the cost of one (edges, D) product. For graphs whose weights learn
    (LATTICE): ``torch.sparse.mm``'s gradient with respect to a sparse matrix's values forms a
    dense N x N product on the CPU."""
    return torch.zeros_like(x).index_add(0, rows, values[:, None] * x[cols])


def light_gcn(graph: torch.Tensor, start: torch.Tensor, layers: int, combine: str = "mean") -> torch.Tensor:
    """LightGCN propagation: x_{l+1} = graph @ x_l, no weights or nonlinearity; the output is the
    mean (LightGCN's 1/(L+1) weights) or the sum of x_0..x_L."""
    outputs = [start]
    for _ in range(layers):
        outputs.append(torch.sparse.mm(graph, outputs[-1]))
    stacked = torch.stack(outputs)
    return stacked.mean(dim=0) if combine == "mean" else stacked.sum(dim=0)


def knn_neighbours(vectors: torch.Tensor, present: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols): each present item's ``k`` most cosine-similar present items (itself
    included, as the item is its own nearest neighbour), found with an exact faiss inner-product
    search over L2-normalised vectors, so no N x N similarity matrix is formed. Items without the
    modality (``present`` False) neither have neighbours nor are one. No gradient."""
    kept = torch.nonzero(present, as_tuple=True)[0]
    if kept.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=vectors.device)
        return empty, empty
    points = F.normalize(vectors.detach()[kept].float(), dim=1).cpu().numpy()
    points = np.ascontiguousarray(points, dtype=np.float32)
    index = faiss.IndexFlatIP(points.shape[1])
    index.add(points)
    width = min(k, points.shape[0])
    _, found = index.search(points, width)
    found = torch.as_tensor(found, dtype=torch.long, device=vectors.device)
    rows = kept[:, None].expand(-1, width).reshape(-1)
    return rows, kept[found.reshape(-1)]


def cosine_of_pairs(vectors: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """cos(vectors[rows], vectors[cols]) per pair, differentiable (the values of a kNN graph)."""
    unit = F.normalize(vectors, dim=1)
    return (unit[rows] * unit[cols]).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# Losses and small blocks
# ---------------------------------------------------------------------------------------------


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BPR: mean of -log sigmoid(positive - negative) (softplus form, stable for large gaps)."""
    return F.softplus(negative - positive).mean()


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """Half the squared norm of the batch's embedding rows, summed over tensors and averaged
    over the batch rows (the usual BPR regulariser, restricted to the rows the batch used)."""
    rows = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * max(rows, 1))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` holds; 0 (with a gradient path) where nothing does."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def xavier_embedding(rows: int, width: int) -> nn.Embedding:
    """An ID table with Xavier-normal initial values (MMRec's choice for these models)."""
    table = nn.Embedding(rows, width)
    nn.init.xavier_normal_(table.weight)
    return table


def project_features(projections: nn.ModuleList, features: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Each modality's (N, D) projection, with the rows of items that lack it set to zero (a
    missing modality contributes nothing, rather than the projection's bias)."""
    out = []
    for projection, (values, present) in zip(projections, features):
        out.append(projection(values) * present[:, None].to(values.dtype))
    return out
