"""The synthetic corpus: ten small, fully synthetic domains that need no download.

``mmseqrec prepare synthetic`` writes ``syn-Food`` ... ``syn-Office`` so that every model and
every transfer experiment in this project can be run end to end in minutes, on a laptop, with
nothing fetched from anywhere. The domains are *not* Amazon data: their names only echo the
pretraining (Food, Home, CDs, Kindle, Movies) and transfer (Scientific, Pantry, Instruments,
Arts, Office) domains of UniSRec / MISSRec, and every folder, manifest, raw id and item text
says "synthetic".

The generative story
--------------------
1. **One shared latent world.** A seed fixes a ``latent_dim``-dimensional (32) semantic space
   holding ``num_topics`` (16) topics. A topic is a centre plus a few principal directions, so
   the items of a topic spread along a low-dimensional sheet (sub-genres) rather than in a
   round blob: in 32 dimensions a round blob has no meaningful "nearby" items.
   The same seed fixes two *different* noisy maps from this space to 512-d features:

   - text  = A z + noise                (linear)
   - image = B tanh(C z) + noise        (non-linear)

   The two modalities therefore carry related but not identical information about an item,
   and because A, B and C are shared by all ten domains, a content encoder learnt on the
   sources means the same thing on the targets.

2. **Domains occupy regions of that world.** Each domain draws its items from a handful of
   the topics (listed in ``DOMAIN_PROFILES``; sources together cover all of them, and every
   target shares topics with some source) plus a small domain-specific shift, so domains
   overlap partly but not exactly. Domains also differ in their popularity skew (a Zipf
   exponent) and in how long their users' sequences are.

3. **Items.** Every item gets a latent vector ``z`` in its domain's region, rescaled to the
   sphere of radius sqrt(latent_dim) (so that latent distance and angle agree, as they do for
   the normalised embeddings real encoders produce), and a long-tailed base popularity: a
   random permutation of ranks, popularity ∝ (rank + 2)^-zipf (Zipf with a flattened head).
   About 15% of items have no image and about 2% no text; their feature row is zero and
   their mask entry ``False``, exactly as for a real item whose picture is missing.

4. **Users.** A user has 2 to 4 interests. An interest is anchored at an item of the domain
   (drawn with a mild preference for popular items); the user attends to one interest at a
   time, switches interest now and then, and the active anchor slowly drifts by stepping to
   one of its nearest neighbours in the latent space.

5. **The transition rule (the same in every domain).** Real purchase sequences mostly move to
   *complements* (a camera, then a lens), not to more of the same. Every topic therefore has a
   shared complement map, a rotation of its sub-genre coordinates by at least 90 degrees in
   every plane; an item's complement point is its own coordinates turned by that map. At step t
   the user aims, with probability ``complement_share`` (0.7), at::

       target = w * complement(previous item) + (1 - w) * z[active anchor] + noise

   and otherwise (a substitute) at ``w * z[previous item] + (1 - w) * z[active anchor] + noise``,
   and picks the next item i with probability proportional to::

       popularity_i ** a * exp(-||z_i - target||^2 / temperature)

   The previous item's term makes the next item predictable from the recent history (what a
   sequential model can learn and a popularity ranking cannot); because the complement maps
   are the same in every domain, what a content model learns about them on the sources holds
   on the targets, while a target alone has few examples of each. The anchor term keeps the
   sequence near the user's interests; popularity keeps some mass on the head. To keep this
   cheap at large scales the distribution is evaluated on a candidate set (the anchor, its
   nearest latent neighbours, and the items nearest to where the step aims) rather than on the
   whole catalogue. Items already in the sequence are not picked again (unless nothing else is
   left), as repeat purchases are rare in the Amazon data this imitates.

6. **Like a real benchmark.** Sequences (5 to 50 interactions, long-tailed, mean about 8 to
   10) are filtered to the iterative 5-core, items are numbered 1..N by first appearance
   walking users in order, and the splits are the usual chronological leave-one-out with
   histories of at most 50.

At the default scale a source domain has about 2,000 users, 620 items and 17,000-20,000
interactions, a target about 300-350 users, 200-250 items and 2,300-3,100 interactions (targets
are the small, sparse domains that transfer is for); all ten are generated in seconds.
``scale`` multiplies users and items (``--scale 100`` gives about 1.6 million interactions per
source domain in a minute or two). On the test split the cosine nearest neighbour of the last
item in text-feature space beats MostPop's NDCG@10 (substitute steps), and averaging the text
of what followed the most similar items in a *source* domain beats it too (complement steps):
there is sequential structure to learn beyond popularity, and some of it transfers.

Everything is drawn from ``numpy`` generators keyed by (seed, purpose, domain, user block),
so a domain is a pure function of the seed, scale and its own name: preparing one domain or
all ten, in any order, gives byte-identical files. (The kNN search and the matrix products are
floating-point computations, so bit-identical output is guaranteed on the same software stack,
not across BLAS builds.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmseqrec.data.filters import iterative_kcore
from mmseqrec.data.format import MANIFEST, DomainTables, FeatureSet, write_domain
from mmseqrec.data.split import leave_one_out
from mmseqrec.options import add_data_dir

__all__ = [
    "GENERATOR_VERSION",
    "SOURCE_DOMAINS",
    "TARGET_DOMAINS",
    "ALL_DOMAINS",
    "DomainProfile",
    "DOMAIN_PROFILES",
    "SyntheticConfig",
    "folder_name",
    "source_params",
    "build_domain",
    "prepare",
    "register",
]

# Bump whenever a change to this file changes any generated byte, so that manifests written by
# an older generator are never taken for "already prepared".
GENERATOR_VERSION = 3

SOURCE_DOMAINS: tuple[str, ...] = ("Food", "Home", "CDs", "Kindle", "Movies")
TARGET_DOMAINS: tuple[str, ...] = ("Scientific", "Pantry", "Instruments", "Arts", "Office")
ALL_DOMAINS: tuple[str, ...] = SOURCE_DOMAINS + TARGET_DOMAINS

FOLDER_PREFIX = "syn-"


@dataclass(frozen=True)
class DomainProfile:
    """What makes one synthetic domain different from the others.

    Attributes:
        role: ``"source"`` (pretraining) or ``"target"`` (transfer).
        users: users generated at scale 1 (the 5-core removes a few).
        items: items generated at scale 1 (the 5-core removes the coldest tail).
        topics: indices of the shared topics its items are drawn from.
        zipf: popularity skew; popularity ∝ rank^-zipf.
        mean_length: mean sequence length before filtering (lengths are 5 + a long tail).
    """

    role: str
    users: int
    items: int
    topics: tuple[int, ...]
    zipf: float
    mean_length: float


# Sources chain around the 16 topics with overlaps (Movies wraps back to topic 0); each target
# takes three topics spread over two or three sources, so pretraining on all sources has seen
# every region a target lives in, but no single source covers a target.
DOMAIN_PROFILES: dict[str, DomainProfile] = {
    "Food": DomainProfile("source", 2000, 680, (0, 1, 2, 3, 4), 0.95, 9.0),
    "Home": DomainProfile("source", 2100, 700, (3, 4, 5, 6, 7), 0.85, 9.5),
    "CDs": DomainProfile("source", 1900, 680, (6, 7, 8, 9, 10), 1.05, 10.0),
    "Kindle": DomainProfile("source", 2000, 650, (9, 10, 11, 12, 13), 0.80, 10.5),
    "Movies": DomainProfile("source", 2000, 690, (12, 13, 14, 15, 0), 1.10, 9.0),
    "Scientific": DomainProfile("target", 375, 390, (2, 5, 8), 0.90, 9.0),
    "Pantry": DomainProfile("target", 375, 375, (0, 1, 4), 1.05, 8.5),
    "Instruments": DomainProfile("target", 390, 390, (8, 9, 11), 0.80, 9.5),
    "Arts": DomainProfile("target", 360, 375, (5, 6, 14), 0.90, 9.0),
    "Office": DomainProfile("target", 375, 390, (3, 7, 15), 0.95, 9.5),
}

# Pseudo-words for item texts: dimension k of the latent space reads as _WORDS[2k] when it is
# strongly positive and _WORDS[2k+1] when strongly negative, so items of one topic share words.
_WORDS = (
    "amber azure brass cedar cobalt coral crimson dusk ember fern flint frost garnet hazel "
    "indigo ivory jade jasper lilac linen maple marble meadow moss nickel oak ochre olive onyx "
    "opal pearl pine plum quartz raven rose rust saffron sage sand scarlet silver slate smoke "
    "spruce steel stone storm teak thistle tide topaz umber velvet violet walnut willow wool "
    "zinc birch canyon delta harbor cloud"
).split()

# Users are generated in fixed blocks, each with its own random stream: the result then does
# not depend on how work is batched, and a block's memory stays small at any scale.
_USER_BLOCK = 2048
_ZIPF_OFFSET = 2.0
# Random-stream purposes (part of every stream key; never renumber).
_STREAM_WORLD, _STREAM_ITEMS, _STREAM_FEATURES, _STREAM_USERS = 1, 2, 3, 4


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic generator. The defaults make the standard demo corpus.

    Every field is recorded in each manifest's ``source`` entry, so a prepared folder says
    exactly how to regenerate it.

    Attributes:
        seed: master seed; the same seed gives identical domains.
        scale: multiplies users and items of every domain (0.3 for tests, 100 for benchmarks
            with millions of interactions).
        latent_dim: dimension of the shared semantic space.
        feature_dim: dimension of the ``text`` and ``image`` feature vectors.
        num_topics: topics in the shared space (domain profiles refer to 0..15).
        topic_rank: principal directions per topic (the "sub-genre" axes).
        topic_spread: standard deviation along those directions (before items are rescaled
            to the sphere of radius sqrt(latent_dim)).
        item_noise: isotropic standard deviation of an item around its topic sheet.
        domain_shift: standard deviation of each domain's shift of its region.
        neighbours: latent nearest neighbours per item; the candidate set of a step is the
            neighbours of the previous item and of the active anchor.
        complement_share: share of steps that aim at the previous item's complements (the
            topic's shared complement map applied to it) rather than at the item itself.
        prev_weight: w, the weight of the previous item in a step's target (vs the anchor).
        target_noise: per-dimension standard deviation of the noise added to a target.
        temperature: width of the exp(-distance^2 / temperature) transition kernel.
        popularity_exponent: a, the power of base popularity in the transition weight.
        anchor_popularity_exponent: power of popularity when choosing interest anchors.
        interest_switch: per-step probability of attending to another of one's interests.
        interest_drift: per-step probability that the active anchor moves to a neighbour.
        min_length: shortest generated sequence.
        max_length: longest generated sequence.
        text_noise: per-dimension noise of the text map (signal is about unit scale).
        image_noise: per-dimension noise of the image map.
        missing_image: share of items without an image feature.
        missing_text: share of items without a text feature.
        k_core: threshold of the iterative user/item k-core.
        max_len: history cut of the leave-one-out splits.
    """

    seed: int = 0
    scale: float = 1.0
    latent_dim: int = 32
    feature_dim: int = 512
    num_topics: int = 16
    topic_rank: int = 4
    topic_spread: float = 1.0
    item_noise: float = 0.25
    domain_shift: float = 0.1
    neighbours: int = 24
    complement_share: float = 0.7
    prev_weight: float = 0.6
    target_noise: float = 0.25
    temperature: float = 1.5
    popularity_exponent: float = 0.4
    anchor_popularity_exponent: float = 0.3
    interest_switch: float = 0.15
    interest_drift: float = 0.1
    min_length: int = 5
    max_length: int = 50
    text_noise: float = 0.5
    image_noise: float = 1.6
    missing_image: float = 0.15
    missing_text: float = 0.02
    k_core: int = 5
    max_len: int = 50

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.min_length < 3 or self.max_length < self.min_length:
            raise ValueError(f"need 3 <= min_length <= max_length, got {self.min_length}..{self.max_length}")
        if self.num_topics <= max(t for p in DOMAIN_PROFILES.values() for t in p.topics):
            raise ValueError(f"num_topics={self.num_topics} is too small for the domain profiles")


# --------------------------------------------------------------------------------------------
# Names and parameters
# --------------------------------------------------------------------------------------------


def canonical_domain(name: str) -> str:
    """``"office"``, ``"Office"`` or ``"syn-Office"`` -> ``"Office"``; unknown names are errors."""
    bare = name[len(FOLDER_PREFIX) :] if name.lower().startswith(FOLDER_PREFIX) else name
    for known in ALL_DOMAINS:
        if known.lower() == bare.lower():
            return known
    raise ValueError(f"unknown synthetic domain '{name}'; choose from {', '.join(ALL_DOMAINS)}")


def folder_name(name: str) -> str:
    """The folder (and manifest) name of a synthetic domain: ``syn-Office``."""
    return FOLDER_PREFIX + canonical_domain(name)


def source_params(name: str, config: SyntheticConfig) -> dict:
    """The manifest ``source`` entry of a domain: everything needed to regenerate it.

    Computed without generating anything, so ``prepare`` can tell an up-to-date folder apart.
    """
    name = canonical_domain(name)
    profile = DOMAIN_PROFILES[name]
    return {
        "type": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "domain": name,
        "role": profile.role,
        "seed": int(config.seed),
        "scale": float(config.scale),
        "profile": {**dataclasses.asdict(profile), "topics": list(profile.topics)},
        "config": dataclasses.asdict(config),
    }


def _rng(config: SyntheticConfig, purpose: int, *key: int) -> np.random.Generator:
    """An independent random stream for (seed, purpose, *key)."""
    return np.random.default_rng(np.random.SeedSequence(int(config.seed), spawn_key=(purpose, *key)))


# --------------------------------------------------------------------------------------------
# The shared world: topics and feature maps
# --------------------------------------------------------------------------------------------


@dataclass
class _World:
    centres: np.ndarray  # (topics, d)
    axes: np.ndarray  # (topics, d, topic_rank), orthonormal columns
    text_map: np.ndarray  # (feature_dim, d)
    image_inner: np.ndarray  # (hidden, d)
    image_outer: np.ndarray  # (feature_dim, hidden)
    complements: np.ndarray  # (topics, topic_rank, topic_rank), orthogonal


def _world(config: SyntheticConfig) -> _World:
    rng = _rng(config, _STREAM_WORLD)
    d, f = config.latent_dim, config.feature_dim
    centres = rng.standard_normal((config.num_topics, d))
    # QR of a Gaussian matrix gives a uniformly random orthonormal frame per topic.
    axes = np.linalg.qr(rng.standard_normal((config.num_topics, d, config.topic_rank)))[0]
    hidden = 2 * d
    # Scales keep both modalities at about unit variance per feature dimension.
    text_map = rng.standard_normal((f, d)) / math.sqrt(d)
    image_inner = rng.standard_normal((hidden, d)) / math.sqrt(d)
    image_outer = rng.standard_normal((f, hidden)) * math.sqrt(2.0 / hidden)
    # The complement map of a topic turns an item's sub-genre coordinates into those of the items
    # bought next to it. A rotation by at least 90 degrees in every plane (eigen-angles drawn in
    # [pi/2, pi]) keeps the complement far from the item itself, so "more of the same" never
    # explains a complementary step.
    r = config.topic_rank
    complements = np.empty((config.num_topics, r, r))
    for t in range(config.num_topics):
        basis = np.linalg.qr(rng.standard_normal((r, r)))[0]
        block = np.zeros((r, r))
        for j in range(0, r - 1, 2):
            angle = rng.uniform(math.pi / 2, math.pi)
            c, s_ = math.cos(angle), math.sin(angle)
            block[j : j + 2, j : j + 2] = [[c, -s_], [s_, c]]
        if r % 2:
            block[r - 1, r - 1] = -1.0
        complements[t] = basis @ block @ basis.T
    return _World(centres, axes, text_map, image_inner, image_outer, complements)


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


@dataclass
class _Items:
    latent: np.ndarray  # (N, d) float64
    topic: np.ndarray  # (N,) index into the shared topics
    log_popularity: np.ndarray  # (N,) log of base popularity, max 0
    neighbours: np.ndarray  # (N, K) nearest latent neighbours, nearest first, self excluded
    complement: np.ndarray  # (N, d) where an item's complements lie (on the latent sphere)
    complement_neighbours: np.ndarray  # (N, K) items nearest to ``complement``, self excluded


def _domain_index(name: str) -> int:
    return ALL_DOMAINS.index(name)


def _scaled(count: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(count * scale)))


def _make_items(name: str, config: SyntheticConfig, world: _World) -> _Items:
    profile = DOMAIN_PROFILES[name]
    rng = _rng(config, _STREAM_ITEMS, _domain_index(name))
    n = _scaled(profile.items, config.scale, minimum=config.neighbours + 8)
    d = config.latent_dim

    topics = np.asarray(profile.topics)
    weights = rng.dirichlet(np.full(len(topics), 4.0))  # uneven but not degenerate topic sizes
    topic = topics[rng.choice(len(topics), size=n, p=weights)]
    shift = rng.standard_normal(d) * config.domain_shift
    along = rng.standard_normal((n, config.topic_rank)) * config.topic_spread
    latent = (
        world.centres[topic]
        + shift
        + np.einsum("ndr,nr->nd", world.axes[topic], along)
        + rng.standard_normal((n, d)) * config.item_noise
    )
    latent *= math.sqrt(d) / np.linalg.norm(latent, axis=1, keepdims=True)
    # Complements: same topic and domain, sub-genre coordinates turned by the topic's shared map.
    turned = np.einsum("nrs,ns->nr", world.complements[topic], along)
    complement = world.centres[topic] + shift + np.einsum("ndr,nr->nd", world.axes[topic], turned)
    complement *= math.sqrt(d) / np.linalg.norm(complement, axis=1, keepdims=True)
    # Zipf-Mandelbrot: popularity ∝ (rank + offset)^-zipf. The small offset flattens the very
    # head a little, so that no domain is dominated by one or two runaway items.
    ranks = rng.permutation(n) + 1
    log_popularity = -profile.zipf * np.log((ranks + _ZIPF_OFFSET) / (1 + _ZIPF_OFFSET))
    return _Items(
        latent,
        topic,
        log_popularity,
        _nearest_neighbours(latent, latent, config.neighbours),
        complement,
        _nearest_neighbours(complement, latent, config.neighbours),
    )


def _nearest_neighbours(queries: np.ndarray, latent: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """For query row i, the k items nearest to it (Euclidean, item i excluded), nearest first.

    Exact search in blocks of rows; ``torch.topk`` is several times faster than
    ``np.argpartition`` here, which matters at benchmark scales (tens of thousands of items).
    """
    import torch

    z = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    n = z.shape[0]
    sq = (z * z).sum(1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        dist = torch.addmm(sq[None, :], q[start:stop], z.T, alpha=-2.0)
        dist[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")
        out[start:stop] = torch.topk(dist, k, dim=1, largest=False, sorted=True).indices.numpy()
    return out


# --------------------------------------------------------------------------------------------
# Users and sequences
# --------------------------------------------------------------------------------------------


def _sequence_lengths(rng: np.random.Generator, count: int, profile: DomainProfile, config: SyntheticConfig) -> np.ndarray:
    """min_length + a log-normal tail with the profile's mean, capped at max_length."""
    sigma = 1.0
    extra_mean = max(profile.mean_length - config.min_length, 0.5)
    mu = math.log(extra_mean) - sigma**2 / 2  # so that E[lognormal] == extra_mean
    extra = np.floor(rng.lognormal(mu, sigma, size=count)).astype(np.int64)
    return np.minimum(config.min_length + extra, config.max_length)


def _generate_block(
    rng: np.random.Generator, n_users: int, items: _Items, profile: DomainProfile, config: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of one block of users, as (lengths (B,), items (sum of lengths,) in user order).

    The loop runs over positions, vectorised over the block's users still active there.
    """
    n_items, k = items.neighbours.shape
    lengths = _sequence_lengths(rng, n_users, profile, config)
    max_interests = 4
    n_interests = rng.integers(2, max_interests + 1, size=n_users)
    anchor_p = np.exp(config.anchor_popularity_exponent * items.log_popularity)
    anchors = rng.choice(n_items, size=(n_users, max_interests), p=anchor_p / anchor_p.sum())
    active = rng.integers(0, n_interests)  # index of the attended interest, per user
    prev = np.full(n_users, -1, dtype=np.int64)
    seqs = np.full((n_users, int(lengths.max())), -1, dtype=np.int64)
    pop_term = config.popularity_exponent * items.log_popularity

    for t in range(int(lengths.max())):
        users = np.flatnonzero(lengths > t)
        b = users.size
        anchor = anchors[users, active[users]]
        z_anchor = items.latent[anchor]
        noise = rng.standard_normal((b, config.latent_dim)) * config.target_noise
        if t == 0:
            # No history yet: start from the interest alone.
            target = z_anchor + noise
            cands = np.concatenate([anchor[:, None], items.neighbours[anchor]], axis=1)
        else:
            last = prev[users]
            # A complementary step aims where the last item's complements lie, a substitute step
            # at the last item itself.
            complementary = rng.random(b) < config.complement_share
            aim = np.where(complementary[:, None], items.complement[last], items.latent[last])
            near_aim = np.where(complementary[:, None], items.complement_neighbours[last], items.neighbours[last])
            target = config.prev_weight * aim + (1 - config.prev_weight) * z_anchor + noise
            cands = np.concatenate([anchor[:, None], items.neighbours[anchor], near_aim], axis=1)
        dist = ((items.latent[cands] - target[:, None, :]) ** 2).sum(-1)
        logits = pop_term[cands] - dist / config.temperature
        # A candidate listed twice (in both neighbour lists) must not get two chances.
        order = np.argsort(cands, axis=1, kind="stable")
        sorted_c = np.take_along_axis(cands, order, axis=1)
        dup_sorted = np.zeros_like(sorted_c, dtype=bool)
        dup_sorted[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        logits[dup] = -np.inf
        if t > 0:
            # Like most Amazon-style data, users rarely buy the same thing twice: items already
            # in the sequence are excluded, unless that would leave no candidate at all.
            seen = (cands[:, :, None] == seqs[users, None, :t]).any(-1)
            blocked = np.where(seen, -np.inf, logits)
            fine = np.isfinite(blocked).any(1)
            logits[fine] = blocked[fine]
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
        pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        chosen = cands[np.arange(b), pick]
        seqs[users, t] = chosen
        prev[users] = chosen

        # Attention moves to another interest now and then (possibly back to the same one)...
        switch = rng.random(b) < config.interest_switch
        active[users[switch]] = rng.integers(0, n_interests[users[switch]])
        # ...and the attended interest itself drifts along the item manifold.
        drift = rng.random(b) < config.interest_drift
        moved = users[drift]
        step = rng.integers(0, min(8, k), size=moved.size)
        anchors[moved, active[moved]] = items.neighbours[anchors[moved, active[moved]], step]

    flat = seqs[np.arange(seqs.shape[1])[None, :] < lengths[:, None]]
    return lengths, flat


# --------------------------------------------------------------------------------------------
# Features and item metadata
# --------------------------------------------------------------------------------------------


def _features(
    name: str, config: SyntheticConfig, world: _World, latent: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Text and image features (N, f) float32 and their presence masks (N,), for every
    generated item (filtering happens later, so noise does not depend on the filter)."""
    rng = _rng(config, _STREAM_FEATURES, _domain_index(name))
    n, f = latent.shape[0], config.feature_dim
    # float32 throughout: at benchmark scales these are the largest arrays of the generator.
    z = latent.astype(np.float32)
    text = z @ world.text_map.T.astype(np.float32)
    text += rng.standard_normal((n, f), dtype=np.float32) * np.float32(config.text_noise)
    image = np.tanh(z @ world.image_inner.T.astype(np.float32)) @ world.image_outer.T.astype(np.float32)
    image += rng.standard_normal((n, f), dtype=np.float32) * np.float32(config.image_noise)
    has_text = rng.random(n) >= config.missing_text
    has_image = rng.random(n) >= config.missing_image
    text[~has_text] = 0.0
    image[~has_image] = 0.0
    return text, has_text, image, has_image


def _item_text(name: str, index: int, latent: np.ndarray) -> str:
    """``[synthetic Office] item 123: cobalt, moss, frost`` - the words name the item's three
    strongest latent directions, so items of one topic read alike."""
    top = np.argsort(-np.abs(latent), kind="stable")[:3]
    words = [_WORDS[(2 * int(j) + int(latent[j] < 0)) % len(_WORDS)] for j in top]
    return f"[synthetic {name}] item {index}: {', '.join(words)}"


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def build_domain(name: str, config: SyntheticConfig | None = None) -> DomainTables:
    """Generate one synthetic domain (``"Office"`` or ``"syn-Office"``) as ``DomainTables``.

    Pure function of (name, config): the same inputs give identical tables.
    """
    config = config or SyntheticConfig()
    name = canonical_domain(name)
    profile = DOMAIN_PROFILES[name]
    world = _world(config)
    items = _make_items(name, config, world)

    n_users = _scaled(profile.users, config.scale, minimum=10)
    all_lengths, all_items = [], []
    for block, start in enumerate(range(0, n_users, _USER_BLOCK)):
        rng = _rng(config, _STREAM_USERS, _domain_index(name), block)
        lengths, flat = _generate_block(rng, min(_USER_BLOCK, n_users - start), items, profile, config)
        all_lengths.append(lengths)
        all_items.append(flat)
    lengths = np.concatenate(all_lengths)
    item_gen = np.concatenate(all_items)  # generation indices 0..n_gen-1, users in order
    user_gen = np.repeat(np.arange(n_users), lengths)

    keep = iterative_kcore(user_gen, item_gen, k_user=config.k_core, k_item=config.k_core)
    user_gen, item_gen = user_gen[keep], item_gen[keep]
    if not keep.any():
        raise ValueError(f"{name}: scale {config.scale} is too small, no user survives the {config.k_core}-core")

    # Items are numbered 1..N in order of first appearance (users in order, then positions);
    # users keep their generation order and are renumbered 0..U-1.
    kept_items, first_seen = np.unique(item_gen, return_index=True)
    by_appearance = kept_items[np.argsort(first_seen, kind="stable")]
    new_id = np.zeros(items.latent.shape[0], dtype=np.int64)
    new_id[by_appearance] = np.arange(1, by_appearance.size + 1)
    kept_users, user_lengths = np.unique(user_gen, return_counts=True)
    sequences = np.split(new_id[item_gen], np.cumsum(user_lengths)[:-1]) if kept_users.size else []

    text, has_text, image, has_image = _features(name, config, world, items.latent)
    n = by_appearance.size
    feature_sets = {}
    for key, values, present, encoder in (
        ("text", text, has_text, "synthetic-text-v1"),
        ("image", image, has_image, "synthetic-image-v1"),
    ):
        table = np.zeros((n + 1, config.feature_dim), dtype=np.float32)
        table[1:] = values[by_appearance]
        mask = np.zeros(n + 1, dtype=bool)
        mask[1:] = present[by_appearance]
        feature_sets[key] = FeatureSet(table, mask, modality=key, encoder=encoder, extra={"synthetic": True})

    upper = name.upper()
    item_raw = [f"SYN-{upper}-{int(g):06d}" for g in by_appearance]
    item_text = [
        _item_text(name, int(g), items.latent[g]) if has_text[g] else None for g in by_appearance
    ]
    folder = folder_name(name)
    return DomainTables(
        name=folder,
        source=source_params(name, config),
        protocol={
            "split": "leave-one-out",
            "max_len": config.max_len,
            "filters": {"iterative_kcore": {"k_user": config.k_core, "k_item": config.k_core}},
            "item_order": "first appearance, users in generation order",
            "generated": {"users": n_users, "items": int(items.latent.shape[0]), "interactions": int(lengths.sum())},
        },
        item_raw_id=item_raw,
        item_text=item_text,
        item_image=[None] * n,
        item_domain=[folder] * n,
        user_raw_id=[f"SYN-{upper}-U{int(u):07d}" for u in kept_users],
        sequences=sequences,
        splits=leave_one_out(sequences, max_len=config.max_len),
        features=feature_sets,
        synthetic=True,
        notes=[
            "Synthetic data generated by mmseqrec.data.sources.synthetic; not real user behaviour.",
            "Features are drawn directly from latent item vectors; there are no image files, "
            "and item texts are placeholders.",
        ],
    )


def _existing_source(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def prepare(
    out_dir: str | Path,
    config: SyntheticConfig | None = None,
    domains: Sequence[str] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> list[Path]:
    """Generate and write synthetic domains under ``out_dir`` (as ``syn-<Name>`` folders).

    An existing folder is kept unless ``overwrite``: if its manifest records the same source
    parameters it is reported as already prepared, otherwise it is skipped with a message.

    Args:
        out_dir: the data directory (usually ``default_data_dir()``).
        config: generator parameters (default ``SyntheticConfig()``).
        domains: names to prepare (``"Office"`` or ``"syn-Office"``); default all ten.
        overwrite: regenerate and replace existing folders.
        log: where to send one status line per domain (e.g. ``print``); silent if None.
        progress: show a tqdm progress bar over domains.

    Returns:
        The folders of all requested domains, in order, whether written now or already there.
    """
    config = config or SyntheticConfig()
    out_dir = Path(out_dir)
    names = [canonical_domain(d) for d in (domains or ALL_DOMAINS)]
    names = list(dict.fromkeys(names))  # drop repeats, keep order
    say = log or (lambda message: None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc="synthetic domains", unit="domain")
        say = (lambda message: tqdm.write(message)) if log is not None else say
    paths = []
    try:
        for name in names:
            folder = out_dir / folder_name(name)
            if bar is not None:
                bar.set_postfix_str(folder.name)
            if folder.exists() and not overwrite:
                if _existing_source(folder) == json.loads(json.dumps(source_params(name, config))):
                    say(f"{folder.name}: already prepared in {folder} (same seed, scale and generator)")
                else:
                    say(f"{folder.name}: {folder} exists with other parameters; skipped (use --overwrite to replace it)")
            else:
                tables = build_domain(name, config)
                write_domain(tables, folder, overwrite=overwrite)
                interactions = sum(len(s) for s in tables.sequences)
                say(
                    f"{folder.name}: {tables.num_users:,} users, {tables.num_items:,} items, "
                    f"{interactions:,} interactions -> {folder}"
                )
            paths.append(folder)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return paths


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from mmseqrec.data.loading import default_data_dir

    config = SyntheticConfig(seed=args.seed, scale=args.scale)
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    try:
        names = [canonical_domain(d) for d in domains] if domains else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.data_dir or default_data_dir()
    prepare(out, config, domains=names, overwrite=args.overwrite, log=print, progress=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare synthetic``."""
    parser = subparsers.add_parser(
        "synthetic",
        help="generate the ten synthetic demo domains (no download)",
        description=(
            "Generate synthetic domains syn-Food, syn-Home, syn-CDs, syn-Kindle, syn-Movies (sources) and "
            "syn-Scientific, syn-Pantry, syn-Instruments, syn-Arts, syn-Office (targets), with 512-d "
            "synthetic text and image features, 5-core filtered and split leave-one-out."
        ),
    )
    add_data_dir(parser, "write", old="--out")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply users and items of every domain (default 1.0)")
    parser.add_argument("--domains", default=None, help="comma-separated subset, e.g. Food,Office (default: all ten)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing domain folders")
    parser.set_defaults(func=_run)
    return parser
