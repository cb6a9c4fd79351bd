"""A cold-start version of a prepared domain: a share of its items held out of training entirely.

    mmseqrec prepare cold --domain Scientific --share 0.1 --name Scientific-cold [--seed 0]

One post-processing step for every importer (release, lcrec, amazon2018/2023, synthetic): the
original domain stays as it is, and the cold version is a new prepared domain beside it, with
the same items (ids, texts, images, features) and a mask of the cold ones (``cold_items.npy``,
described under ``cold_start`` in the manifest).

**The rule.** ``round(share x N)`` items, drawn uniformly at random with ``seed``, are *cold*.
They stand for items that enter the catalogue after training, so no interaction with them may
precede the evaluated ones:
- a user's interactions with a cold item are removed, except in the user's last two positions
  (the valid and test targets); the remaining sequence is split again by chronological
  leave-one-out, exactly as the domain was (the domain's rows must be that split of its
  sequences, in any order; anything else is refused);
- so no train row holds a cold item, as target or in its history (checked on writing and on
  loading); a cold item can only be a valid or test target, or the last history item of a test
  row (the user's valid target: an item the user met after training, which a deployed model
  would see in the history too);
- users left with fewer than 3 interactions are dropped; the manifest counts them and the
  interactions removed.

**Rows.** A valid or test row whose target is cold is a *cold row*, the others are warm. The
evaluator ranks every item (cold ones included) for every row, as usual; ``metrics.json`` adds
``test_cold`` and ``test_warm`` (the test metrics over each kind of row) to ``test``, and the
comparison tables show them. Early stopping reads all valid rows.

**What a model sees.** In training, nothing of a cold item: it is never a target, never in a
history, and never a negative either (the training loop marks it held out and every softmax over
the catalogue leaves it out, ``Recommender.without_held_out``); MISSRec clusters its interests
from the warm items only, a cold item joining the interest of its nearest warm item (the rule
for items added after training). At evaluation an inductive model (MISSRec or UniSRec with
``--mode inductive``) reads a cold item's frozen content features, which is all it ever knows of
any item; an ID model (SASRec, BERT4Rec, transductive modes) has for it only an embedding that
training never updated (its initial random values), and MostPop a count of zero.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mmseqrec.data.format import MANIFEST, DataFormatError, DomainTables, Examples, FeatureSet, sha256_of, write_domain
from mmseqrec.data.loading import Domain, load_domain, source_and_target
from mmseqrec.data.split import leave_one_out
from mmseqrec.options import add_data_dir

RULE = (
    "cold items: a random share of the items; every interaction with one is removed except in a user's last two positions "
    "(valid and test targets), then the sequences are split again by leave-one-out: no train row holds a cold item; "
    "valid/test rows with a cold target are the cold rows; a test history may end with a cold valid target"
)
#: Manifest fields of a feature set that ``write_domain`` recomputes; the others (the extractor) are kept.
_DERIVED_FEATURE_FIELDS = ("modality", "encoder", "dim", "dtype", "coverage", "items_with_feature", "file", "mask_file")


def _rows(examples: Examples) -> Counter:
    return Counter(
        (int(user), tuple(examples.history(r).tolist()), int(target)) for r, (user, target) in enumerate(zip(examples.user_id, examples.target))
    )


def _check_leave_one_out(domain: Domain, sequences: list[np.ndarray], max_len: int) -> None:
    """The domain's rows must be the leave-one-out split of its sequences: the cold version
    splits its (shortened) sequences that way again, which must not change the protocol."""
    expected = leave_one_out(sequences, max_len)
    for split in ("train", "valid", "test"):
        if _rows(expected[split]) != _rows(domain.splits[split]):
            raise DataFormatError(
                f"{domain.path / (split + '.parquet')}: the rows are not the chronological leave-one-out split (histories of at most "
                f"{max_len} items) of {domain.path / 'interactions.parquet'}; a cold-start split re-splits the sequences that way "
                "and would change this domain's protocol"
            )


def _column(path: Path, name: str) -> list:
    return pq.read_table(path, columns=[name]).column(name).to_pylist()


def build_cold(domain: Domain, share: float, name: str, seed: int = 0) -> DomainTables:
    """The cold-start tables of ``domain`` (see the module docstring); nothing is written."""
    if not 0 < share < 1:
        raise ValueError(f"--share must lie strictly between 0 and 1, got {share}")
    if domain.cold_items is not None:
        raise ValueError(f"{domain.name} is already a cold-start split ({domain.path / MANIFEST}: cold_start); split the original domain")
    max_len = int(domain.manifest.get("protocol", {}).get("max_len") or 50)
    offsets = domain.sequence_offsets
    sequences = [domain.sequence_values[offsets[u] : offsets[u + 1]] for u in range(domain.num_users)]
    _check_leave_one_out(domain, sequences, max_len)

    count = max(1, int(round(share * domain.num_items)))
    cold = np.zeros(domain.num_items + 1, dtype=bool)
    cold[np.random.default_rng(seed).choice(domain.num_items, size=count, replace=False) + 1] = True

    users = _column(domain.path / "users.parquet", "raw_id")
    kept_users, kept_sequences, removed = [], [], 0
    for user, sequence in enumerate(sequences):
        earlier, last_two = sequence[:-2], sequence[-2:]
        warm = earlier[~cold[earlier]]
        removed += len(earlier) - len(warm)
        shortened = np.concatenate([warm, last_two])
        if len(shortened) >= 3:  # leave-one-out needs a train history, a valid and a test target
            kept_users.append(str(users[user]))
            kept_sequences.append(shortened)
    if not kept_sequences:
        raise ValueError(f"no user of {domain.name} keeps 3 interactions once the cold items are removed; choose a smaller --share")
    splits = leave_one_out(kept_sequences, max_len)

    features = {}
    for feature_name, feature in domain.features.items():
        entry = domain.manifest["features"].get(feature_name, {})
        extra = {k: v for k, v in entry.items() if k not in _DERIVED_FEATURE_FIELDS}
        features[feature_name] = FeatureSet(feature.values, feature.present, feature.modality, feature.encoder, extra)
    items = domain.path / "items.parquet"
    record = {
        "share": share,
        "seed": seed,
        "rule": RULE,
        "valid_cold_rows": int(cold[splits["valid"].target].sum()),
        "test_cold_rows": int(cold[splits["test"].target].sum()),
        "users_dropped": domain.num_users - len(kept_users),
        "interactions_removed": removed,
    }
    return DomainTables(
        name=name,
        source={
            "type": "cold-start", "domain": domain.name, "path": str(domain.path.resolve()),
            "manifest_sha256": sha256_of(domain.path / MANIFEST), "share": share, "seed": seed,
        },
        protocol={**domain.manifest.get("protocol", {}), "cold_start": RULE},
        item_raw_id=[str(r) for r in domain.item_raw_id],
        item_text=list(domain.item_text),
        item_image=_column(items, "image"),
        item_domain=[str(d) for d in _column(items, "domain")],
        user_raw_id=kept_users,
        sequences=kept_sequences,
        splits=splits,
        features=features,
        synthetic=bool(domain.manifest.get("synthetic")),
        notes=list(domain.manifest.get("notes", [])) + [f"cold-start split of {domain.name}: {count} of {domain.num_items} items held out of training"],
        cold_items=cold,
        cold_start=record,
    )


def prepare_cold(domain: str, share: float, name: str, seed: int = 0, data_dir: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write the cold-start split of ``domain`` as ``<data_dir>/<name>``."""
    source, target = source_and_target(domain, name, "cold-start split", data_dir, overwrite)
    return write_domain(build_cold(source, share, name, seed), target, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    folder = prepare_cold(args.domain, args.share, args.name, args.seed, args.data_dir, args.overwrite)
    domain = load_domain(folder)
    record = domain.manifest["cold_start"]
    print(domain.describe())
    print(f"{record['users_dropped']:,} users dropped, {record['interactions_removed']:,} interactions with cold items removed; "
          f"{record['valid_cold_rows']:,} valid and {record['test_cold_rows']:,} test rows have a cold target")
    print(f"written to {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare cold``."""
    parser = subparsers.add_parser(
        "cold", help="a cold-start split of a prepared domain: a share of the items held out of training",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--domain", required=True, help="the prepared domain to split (name in --data-dir, or folder)")
    parser.add_argument("--share", type=float, default=0.1, help="share of the items held out (default 0.1)")
    parser.add_argument("--name", required=True, help="name of the new domain, e.g. Scientific-cold")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw of cold items (default 0)")
    add_data_dir(parser, "read")  # the domain is read from it and the cold split written into it
    parser.add_argument("--overwrite", action="store_true", help="replace an existing domain of that name")
    parser.set_defaults(func=_cmd_prepare)
    return parser
