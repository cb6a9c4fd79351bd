"""Write a pretraining mixture of prepared domains as one processed domain.

    mmseqrec prepare mixture --name FHCKM --domains Food,Home,CDs,Kindle,Movies

The result is exactly what ``load_mixture`` builds in memory, stored once: item vocabularies are
disjoint (member k's item ids are shifted by the item counts of the members before it, so the
same ASIN in two domains is two items, as in UniSRec's FHCKM), users are shifted the same way,
every item carries its member's name in the ``domain`` column, and the feature sets that every
member has are concatenated row by row (same dimension and encoder required). Train, valid and
test rows are the members' rows, shifted. The manifest lists the members in order with their id
ranges and manifest checksums, and ``load_domain`` / ``load_mixture`` read the folder back with
the same domain tags as ``load_mixture`` of the members.

Features extracted after the mixture was written do not reach it: extract them for the members
and prepare the mixture again (``--overwrite``), or extract them for the mixture folder itself.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from mmseqrec.data.format import (
    MANIFEST,
    DataFormatError,
    DomainTables,
    FeatureSet,
    sha256_of,
    write_domain,
)
from mmseqrec.data.loading import Domain, default_data_dir, load_domain, merge_domains
from mmseqrec.options import add_data_dir, add_deprecated_spelling

#: The UniSRec / MISSRec pretraining mixture: Food, Home, CDs, Kindle, Movies (Amazon 2018).
FHCKM: tuple[str, ...] = ("Food", "Home", "CDs", "Kindle", "Movies")


def _column(path: Path, column: str, rows: int) -> list:
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    if len(values) != rows:
        raise DataFormatError(f"{path}: {len(values)} rows, expected {rows}")
    return values


def _common_features(members: Sequence[Domain]) -> tuple[list[str], list[str]]:
    """Feature sets every member has (checked for matching encoders), and notes on the rest."""
    names = [f for f in members[0].features if all(f in m.features for m in members)]
    notes = []
    for member in members:
        partial = sorted(set(member.features) - set(names))
        if partial:
            notes.append(f"feature set(s) {', '.join(partial)} of {member.name} left out: not every member has them")
    for fname in names:
        encoders = {m.name: m.features[fname].encoder for m in members}
        if len(set(encoders.values())) > 1:
            listing = "; ".join(f"{m.path / MANIFEST}: {enc!r}" for m, enc in zip(members, encoders.values()))
            raise DataFormatError(
                f"feature set '{fname}' comes from different encoders across the mixture ({listing}); "
                "extract it with one encoder for every member"
            )
    return names, notes


def build_mixture(domains: Sequence[str], name: str, data_dir: str | os.PathLike | None = None) -> DomainTables:
    """Load the member domains and return the mixture's tables (nothing is written)."""
    domains = [d.strip() for d in domains if d.strip()]
    if not domains:
        raise ValueError("a mixture needs at least one domain")
    repeated = sorted({d for d in domains if domains.count(d) > 1})
    if repeated:
        raise ValueError(f"domain(s) {', '.join(repeated)} listed more than once")
    members = [load_domain(d, data_dir=data_dir) for d in domains]
    feature_names, notes = _common_features(members)
    merged = merge_domains(members, features=feature_names, name=name)
    if len(set(merged.domain_names)) != len(merged.domain_names):
        raise ValueError(f"the members' domains overlap ({', '.join(merged.domain_names)}); each domain may enter once")

    item_image: list[str | None] = []
    user_raw_id: list[str] = []
    member_info = []
    item_start, user_start = 1, 0
    for member in members:
        item_image += _column(member.path / "items.parquet", "image", member.num_items)
        user_raw_id += [str(u) for u in _column(member.path / "users.parquet", "raw_id", member.num_users)]
        member_info.append(
            {
                "name": member.name,
                "path": str(member.path.resolve()),
                "source": member.manifest.get("source", {}).get("type"),
                "manifest_sha256": sha256_of(member.path / MANIFEST),
                "counts": member.manifest["counts"],
                "item_ids": [item_start, item_start + member.num_items - 1],
                "user_ids": [user_start, user_start + member.num_users - 1],
            }
        )
        item_start += member.num_items
        user_start += member.num_users

    offsets = merged.sequence_offsets
    sequences = [merged.sequence_values[offsets[u] : offsets[u + 1]] for u in range(merged.num_users)]
    features = {
        fname: FeatureSet(
            values=merged.features[fname].values,
            present=merged.features[fname].present,
            modality=merged.features[fname].modality,
            encoder=merged.features[fname].encoder,
            extra={"members": {m.name: m.manifest["features"][fname].get("file") for m in members}},
        )
        for fname in feature_names
    }
    return DomainTables(
        name=name,
        source={"type": "mixture", "domains": list(merged.domain_names), "members": member_info},
        protocol={
            "mixture": (
                "disjoint item vocabularies: member k's item and user ids are shifted by the counts of the members "
                "before it; rows and features are the members', concatenated in order"
            ),
            "split": "as in each member",
            "max_len": max(int(m.manifest.get("protocol", {}).get("max_len", 0) or 0) for m in members) or None,
            "members": {m.name: m.manifest.get("protocol", {}) for m in members},
        },
        item_raw_id=[str(r) for r in merged.item_raw_id],
        item_text=list(merged.item_text),
        item_image=item_image,
        item_domain=[merged.domain_names[int(k)] for k in merged.item_domain[1:]],
        user_raw_id=user_raw_id,
        sequences=sequences,
        splits=merged.splits,
        features=features,
        synthetic=any(bool(m.manifest.get("synthetic")) for m in members),
        notes=notes + [f"mixture of {', '.join(merged.domain_names)}"],
        cold_items=merged.cold_items,
        cold_start={"rule": "the cold items of the members", "members": [m.name for m in members if m.cold_items is not None]},
    )


def prepare_mixture(
    domains: Sequence[str],
    name: str,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the mixture of ``domains`` (looked up in ``data_dir``) as ``<out>/<name>``."""
    root = Path(out) if out is not None else Path(data_dir) if data_dir is not None else default_data_dir()
    target = root / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it")
    if name in domains:
        raise ValueError(f"the mixture cannot be named after one of its members ({name})")
    tables = build_mixture(domains, name, data_dir=data_dir)
    return write_domain(tables, target, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    folder = prepare_mixture(domains, args.name, data_dir=args.data_dir, out=getattr(args, "mixture_out", None), overwrite=args.overwrite)
    print(load_domain(folder).describe())
    print(f"written to {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare mixture``."""
    parser = subparsers.add_parser(
        "mixture",
        help="write a pretraining mixture of prepared domains (disjoint item ids, domain tags, concatenated features)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--name", required=True, help="name of the mixture domain, e.g. FHCKM")
    parser.add_argument("--domains", required=True, help=f"comma-separated prepared domains, in order (e.g. {','.join(FHCKM)})")
    add_data_dir(parser, "read")  # the members are read from it and the mixture is written into it
    # Formerly a separate folder for the mixture; it still works, with a warning.
    add_deprecated_spelling(parser, "--out", "--data-dir", "mixture_out", type=Path)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing mixture of that name")
    parser.set_defaults(func=_cmd_prepare)
    return parser

