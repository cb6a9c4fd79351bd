"""A prepared sequential domain with a general top-N split added, for the general recommenders.

    mmseqrec prepare general-split --domain Scientific --rule random --name Scientific-topn [--seed 0] [--ratios 8:1:1]

The new domain is a copy of the original (items, users, sequences, leave-one-out rows, features)
that also carries the top-N track: each user's distinct items divided into train / valid / test
sets, 8:1:1 by default (``mmseqrec.data.split.per_user_split``):
- ``--rule random``: the held-out items are drawn at random (MMRec's protocol; its leaderboard
  numbers are on such a split);
- ``--rule chronological``: a user's newest items are held out (test the last, valid the ones
  before), which MMRec's own comparison found much harder for every model.
The original domain stays as it is. The new one carries both tracks, so the sequential models
still train on it, by leave-one-out, and the general ones on its top-N split; the two protocols
differ and their numbers go in separate tables.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pyarrow.parquet as pq

from mmseqrec.data.format import MANIFEST, DomainTables, FeatureSet, sha256_of, write_domain
from mmseqrec.data.loading import Domain, load_domain, source_and_target
from mmseqrec.data.split import SPLIT_RULES, per_user_split
from mmseqrec.options import add_data_dir

#: Manifest fields of a feature set that ``write_domain`` recomputes; the others (the extractor) are kept.
_DERIVED_FEATURE_FIELDS = ("modality", "encoder", "dim", "dtype", "coverage", "items_with_feature", "file", "mask_file")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"8:1:1"`` -> (8.0, 1.0, 1.0); a clear error for anything else."""
    parts = text.split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"--ratios must be three positive numbers train:valid:test (e.g. 8:1:1), got '{text}'")
    return values


def build_general_split(domain: Domain, rule: str, name: str, seed: int = 0, ratios=(8.0, 1.0, 1.0)) -> DomainTables:
    """The tables of ``domain`` plus its top-N split (see the module docstring); nothing is written."""
    domain.require_track("sequential", "a general split (made from the users' sequences)")
    if domain.topn is not None:
        raise ValueError(f"{domain.name} already carries a top-N split ({domain.path / MANIFEST}: topn); split the original domain")
    if domain.cold_items is not None:
        raise ValueError(f"{domain.name} is a cold-start split; make the general split from the original domain")
    offsets = domain.sequence_offsets
    sequences = [domain.sequence_values[offsets[u] : offsets[u + 1]] for u in range(domain.num_users)]
    topn, record = per_user_split(sequences, rule, ratios, seed)
    features = {}
    for feature_name, feature in domain.features.items():
        entry = domain.manifest["features"].get(feature_name, {})
        extra = {k: v for k, v in entry.items() if k not in _DERIVED_FEATURE_FIELDS}
        features[feature_name] = FeatureSet(feature.values, feature.present, feature.modality, feature.encoder, extra)
    items = domain.path / "items.parquet"
    column = lambda path, field: pq.read_table(path, columns=[field]).column(field).to_pylist()  # noqa: E731
    return DomainTables(
        name=name,
        source={
            "type": "general-split", "domain": domain.name, "path": str(domain.path.resolve()),
            "manifest_sha256": sha256_of(domain.path / MANIFEST),
        },
        protocol=dict(domain.manifest.get("protocol", {})),
        item_raw_id=[str(r) for r in domain.item_raw_id],
        item_text=list(domain.item_text),
        item_image=column(items, "image"),
        item_domain=[str(d) for d in column(items, "domain")],
        user_raw_id=[str(u) for u in column(domain.path / "users.parquet", "raw_id")],
        sequences=sequences,
        splits=domain.splits,
        features=features,
        synthetic=bool(domain.manifest.get("synthetic")),
        notes=list(domain.manifest.get("notes", [])) + [f"general top-N split of {domain.name} added: {record['split']}"],
        topn=topn,
        topn_protocol=record,
    )


def prepare_general_split(
    domain: str, rule: str, name: str, seed: int = 0, ratios=(8.0, 1.0, 1.0), data_dir: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """Write ``domain`` with its top-N split as ``<data_dir>/<name>``."""
    source, target = source_and_target(domain, name, "general split", data_dir, overwrite)
    return write_domain(build_general_split(source, rule, name, seed, ratios), target, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    folder = prepare_general_split(args.domain, args.rule, args.name, args.seed, parse_ratios(args.ratios), args.data_dir, args.overwrite)
    domain = load_domain(folder)
    print(domain.describe())
    print(f"{domain.manifest['topn']['protocol']['train_only_users']:,} users with fewer than 3 distinct items are train-only")
    print(f"written to {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare general-split``."""
    parser = subparsers.add_parser(
        "general-split", help="a copy of a prepared domain with a per-user train/valid/test item split for the general models",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--domain", required=True, help="the prepared sequential domain (name in --data-dir, or folder)")
    parser.add_argument("--rule", required=True, choices=SPLIT_RULES, help="random (MMRec's) or chronological (newest items held out)")
    parser.add_argument("--name", required=True, help="name of the new domain, e.g. Scientific-topn")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rule (default 0)")
    parser.add_argument("--ratios", default="8:1:1", help="train:valid:test shares of each user's items (default 8:1:1)")
    add_data_dir(parser, "read")  # the domain is read from it and the new one written into it
    parser.add_argument("--overwrite", action="store_true", help="replace an existing domain of that name")
    parser.set_defaults(func=_cmd_prepare)
    return parser
