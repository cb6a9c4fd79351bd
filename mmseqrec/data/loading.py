"""Reading processed domains: ``load_domain`` for one, ``load_mixture`` for a pretraining mixture.

Every model reads data only through the ``Domain`` these return. Loading validates the folder
against its manifest (checksums, counts, id ranges, feature shapes, finiteness) before any
training starts, and fails with a message that names the file and what is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmseqrec.data.format import (
    SPLITS,
    TRACKS,
    DataFormatError,
    Examples,
    FeatureSet,
    UserItems,
    _check_ids,
    check_cold_items,
    check_feature_values,
    check_user_items,
    read_manifest,
    read_user_items,
    verify_checksums,
)

DEFAULT_DATA_DIR = Path("data") / "processed"


class DomainNotFoundError(FileNotFoundError):
    """A domain was asked for that has not been prepared."""


def default_data_dir() -> Path:
    """``$MMSEQREC_DATA_DIR`` if set, else ``data/processed`` under the working directory."""
    return Path(os.environ.get("MMSEQREC_DATA_DIR", DEFAULT_DATA_DIR))


def _coverage(present: np.ndarray) -> str:
    """The share of items with a feature; "100%" only when every item has it (17 of 11,924
    missing would round to 100%)."""
    missing = int((~present).sum())
    if missing == 0:
        return "100%"
    return f"{present.mean():.1%}, {missing:,} missing"


@dataclass
class Domain:
    """A loaded, validated domain (or mixture of domains).

    Attributes:
        name: the domain name (``"Office"``) or the mixture name.
        path: the folder it was read from (the first folder for a mixture).
        manifest: the parsed manifest (for a mixture: one per member under ``"members"``).
        num_items: N; item ids run 1..N, 0 is padding.
        num_users: U; user ids run 0..U-1.
        splits: ``train`` / ``valid`` / ``test`` examples.
        features: feature name -> FeatureSet with (N+1, d) values and an (N+1,) presence mask.
        item_domain: (N+1,) int array, the index into ``domain_names`` of every item (0 for padding).
        domain_names: the member domains, in order.
        item_raw_id: raw ids (ASINs) of items 1..N, index i-1.
        sequences: every user's chronological sequence, stored flat (``Examples`` without targets).
        cold_items: (N+1,) bool, True for the items a cold-start split holds out of training
            (``mmseqrec prepare cold``); None for an ordinary domain.
        topn: the top-N track's ``train`` / ``valid`` / ``test`` item sets per user (general
            recommenders: LightGCN, VBPR, ...); None when the domain does not carry that track.
            A domain with only this track has no ``splits`` and no sequences.
    """

    name: str
    path: Path
    manifest: dict
    num_items: int
    num_users: int
    splits: dict[str, Examples]
    features: dict[str, FeatureSet]
    item_domain: np.ndarray
    domain_names: list[str]
    item_raw_id: list[str]
    sequence_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    sequence_offsets: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(1, np.int64))
    item_text: list[str | None] = field(repr=False, default_factory=list)
    cold_items: np.ndarray | None = field(repr=False, default=None)
    topn: dict[str, UserItems] | None = field(repr=False, default=None)

    @property
    def tracks(self) -> list[str]:
        """The tracks this domain carries: ``sequential`` and/or ``topn``."""
        return [t for t, present in zip(TRACKS, (bool(self.splits), self.topn is not None)) if present]

    def require_track(self, track: str, who: str = "this model") -> None:
        """A clear error when ``who`` needs a track this domain does not carry."""
        if track in self.tracks:
            return
        if track == "topn":
            how = (f"make one from its sequences with `mmseqrec prepare general-split --domain {self.name} --rule random "
                   f"--name {self.name}-topn`, or import a top-N release (`mmseqrec prepare diffmm`)")
            what = "general top-N splits (per-user train / valid / test item sets)"
        else:
            how = "sequential models need chronological sequences, which a top-N release (DiffMM, MMRec) does not have"
            what = "sequential (leave-one-out) splits"
        raise DataFormatError(f"{who} needs {what}, and domain {self.name} ({self.path / 'manifest.json'}) has only {', '.join(self.tracks)}: {how}")

    def train_item_counts(self) -> np.ndarray:
        """Training popularity of every item id 0..N (0 stays 0).

        Counts each user's interactions except the last two (the valid and test targets), i.e.
        exactly what a model may learn popularity from under leave-one-out. A domain with the
        top-N track only counts its training pairs.
        """
        if not self.splits and self.topn is not None:
            return np.bincount(self.topn["train"].items, minlength=self.num_items + 1).astype(np.int64)
        lengths = np.diff(self.sequence_offsets)
        position = np.arange(self.sequence_values.size) - np.repeat(self.sequence_offsets[:-1], lengths)
        keep = position < np.repeat(lengths - 2, lengths)
        return np.bincount(self.sequence_values[keep], minlength=self.num_items + 1).astype(np.int64)

    def hf_datasets(self):
        """The splits as a Hugging Face ``DatasetDict`` (user_id, history, target), zero-copy from Arrow."""
        import datasets

        out = {}
        for split, ex in self.splits.items():
            table = pa.table(
                {
                    "user_id": pa.array(ex.user_id, type=pa.int32()),
                    "history": pa.ListArray.from_arrays(
                        pa.array(ex.history_offsets, type=pa.int32()), pa.array(ex.history_values, type=pa.int32())
                    ),
                    "target": pa.array(ex.target, type=pa.int32()),
                }
            )
            out[split] = datasets.Dataset(table)
        return datasets.DatasetDict(out)

    def describe(self) -> str:
        feats = ", ".join(f"{k} ({v.modality}, {v.dim}-d, {_coverage(v.present[1:])})" for k, v in self.features.items())
        cold = ""
        if self.cold_items is not None:
            cold_rows = int(self.cold_items[self.splits["test"].target].sum())
            cold = f"; cold start: {int(self.cold_items.sum()):,} items held out of training, {cold_rows:,} test rows with a cold target"
        parts = []
        if self.splits:
            parts.append(f"{len(self.splits['train']):,} train / {len(self.splits['valid']):,} valid / {len(self.splits['test']):,} test rows")
        if self.topn is not None:
            held = ", ".join(f"{split} {len(self.topn[split]):,} pairs ({int((self.topn[split].counts() > 0).sum()):,} users)" for split in ("valid", "test"))
            parts.append(f"top-N: {len(self.topn['train']):,} train pairs, {held}")
        return (
            f"{self.name}: {self.num_users:,} users, {self.num_items:,} items, " + "; ".join(parts)
            + (f"; features: {feats}" if feats else "") + cold
        )


def resolve_domain_path(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The name is looked up in the data dir first; otherwise a folder holding a manifest is used as is."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / str(name_or_path)
    if (folder / "manifest.json").exists():
        return folder
    candidate = Path(name_or_path)
    if (candidate / "manifest.json").exists():
        return candidate
    available = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists()) if root.is_dir() else []
    hint = (
        "Prepare it first, for example:\n"
        "  mmseqrec prepare synthetic                       (the ten synthetic demo domains)\n"
        "  mmseqrec prepare release --path DIR --name NAME   (UniSRec/MISSRec release files)\n"
        "  mmseqrec prepare lcrec --path DIR --name NAME     (LC-Rec style JSON)\n"
        "  mmseqrec prepare amazon2018 --domain Office       (Amazon Reviews 2018, the UniSRec protocol)\n"
        "  mmseqrec prepare amazon2023 --domain Office       (Amazon Reviews 2023, the same protocol)\n"
        "  mmseqrec prepare mixture --name FHCKM --domains Food,Home,CDs,Kindle,Movies\n"
        "or point --data-dir at the folder that holds it."
    )
    have = f"Prepared domains in {root}: {', '.join(available)}." if available else f"No prepared domain in {root}."
    raise DomainNotFoundError(f"Domain '{name_or_path}' is not prepared (looked for {folder / 'manifest.json'}). {have}\n{hint}")


def _read_examples(path: Path) -> Examples:
    table = pq.read_table(path)
    for column in ("user_id", "history", "target"):
        if column not in table.column_names:
            raise DataFormatError(f"{path}: column '{column}' is missing")
    history = table.column("history").combine_chunks()
    return Examples(
        user_id=table.column("user_id").to_numpy().astype(np.int64),
        history_values=history.values.to_numpy().astype(np.int64),
        history_offsets=history.offsets.to_numpy().astype(np.int64),
        target=table.column("target").to_numpy().astype(np.int64),
    )



def source_and_target(domain: str, name: str, kind: str, data_dir=None, overwrite: bool = False) -> tuple["Domain", Path]:
    """For a command that derives a new domain ``name`` from a prepared ``domain`` (a cold-start
    split, a top-N split): the loaded source and the folder to write, refusing an existing folder
    without ``overwrite`` and a target that is the source itself."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    target = root / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    source = load_domain(domain, data_dir=data_dir)
    if source.path.resolve() == target.resolve():
        raise ValueError(f"the {kind} cannot replace its own domain ({target}); give it another --name")
    return source, target


def load_domain(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    features: Sequence[str] | None = None,
    verify: bool = True,
) -> Domain:
    """Load and validate one processed domain.

    Args:
        name_or_path: a domain name looked up under ``data_dir`` or a folder path.
        data_dir: where prepared domains live (default ``$MMSEQREC_DATA_DIR`` or ``data/processed``).
        features: feature sets to load (default: all in the manifest). Unknown names are errors.
        verify: check file checksums against the manifest (cheap next to training; on by default).
    """
    folder = resolve_domain_path(name_or_path, data_dir)
    manifest = read_manifest(folder)
    if verify:
        verify_checksums(folder, manifest)
    counts = manifest["counts"]
    n_items, n_users = int(counts["items"]), int(counts["users"])

    items = pq.read_table(folder / "items.parquet")
    if items.num_rows != n_items:
        raise DataFormatError(f"{folder / 'items.parquet'}: {items.num_rows} rows, manifest says {n_items} items")
    item_ids = items.column("item_id").to_numpy()
    if not np.array_equal(item_ids, np.arange(1, n_items + 1)):
        raise DataFormatError(f"{folder / 'items.parquet'}: item_id must run 1..{n_items} in order")

    tracks = manifest.get("tracks", ["sequential"])  # a manifest from before the top-N track is sequential
    unknown = sorted(set(tracks) - set(TRACKS)) if isinstance(tracks, list) else [str(tracks)]
    if unknown or not tracks:
        raise DataFormatError(f"{folder / 'manifest.json'}: field 'tracks' must list some of {', '.join(TRACKS)}, got {tracks!r}")
    topn = _read_topn(folder, manifest, n_users, n_items) if "topn" in tracks else None

    splits = {}
    for split in SPLITS if "sequential" in tracks else ():
        path = folder / f"{split}.parquet"
        ex = _read_examples(path)
        expected = int(counts[f"{split}_examples"])
        if len(ex) != expected:
            raise DataFormatError(f"{path}: {len(ex)} rows, manifest says {expected}")
        _check_ids(str(path), "target", ex.target, 1, n_items)
        _check_ids(str(path), "history", ex.history_values, 1, n_items)
        _check_ids(str(path), "user_id", ex.user_id, 0, n_users - 1)
        if len(ex) and ex.lengths().min() < 1:
            raise DataFormatError(f"{path}: row {int(np.argmin(ex.lengths()))} has an empty history")
        splits[split] = ex

    wanted = list(manifest["features"]) if features is None else list(features)
    loaded: dict[str, FeatureSet] = {}
    for name in wanted:
        if name not in manifest["features"]:
            raise DataFormatError(
                f"{folder / 'manifest.json'}: no feature set '{name}' (available: {', '.join(manifest['features']) or 'none'}); "
                "extract it with `mmseqrec extract` or import it with the domain"
            )
        meta = manifest["features"][name]
        values_path, mask_path = folder / meta["file"], folder / meta["mask_file"]
        try:
            values = np.load(values_path, mmap_mode="r")
            present = np.load(mask_path)
        except (ValueError, OSError) as err:
            raise DataFormatError(f"{values_path}: cannot be read as .npy ({err})") from err
        check_feature_values(str(values_path), values, present, n_items, int(meta["dim"]))
        loaded[name] = FeatureSet(np.asarray(values), present, meta.get("modality", name), meta.get("encoder", ""))

    seq_values, seq_offsets = np.zeros(0, np.int64), np.zeros(1, np.int64)
    if "sequential" in tracks:
        interactions = pq.read_table(folder / "interactions.parquet").column("items").combine_chunks()
        seq_values = interactions.values.to_numpy().astype(np.int64)
        seq_offsets = interactions.offsets.to_numpy().astype(np.int64)
        if seq_values.size != int(counts["interactions"]):
            raise DataFormatError(
                f"{folder / 'interactions.parquet'}: {seq_values.size} interactions, manifest says {counts['interactions']}"
            )
        _check_ids(str(folder / "interactions.parquet"), "items", seq_values, 1, n_items)

    cold_items = None
    if "cold_start" in manifest:
        cold_path = folder / manifest["cold_start"].get("file", "cold_items.npy")
        try:
            cold_items = np.load(cold_path)
        except (ValueError, OSError) as err:
            raise DataFormatError(f"{cold_path}: cannot be read as .npy ({err}); the manifest's cold_start names it") from err
        check_cold_items(str(cold_path), cold_items, splits["train"], n_items)

    domains = items.column("domain").to_pylist()
    # A prepared mixture lists its members in order; keep that order for the domain tags.
    declared = manifest.get("source", {}).get("domains") if isinstance(manifest.get("source"), dict) else None
    if isinstance(declared, list) and set(declared) == set(domains):
        names = [str(d) for d in declared]
    else:
        names = sorted(set(domains)) if domains else [manifest["name"]]
    index = {d: i for i, d in enumerate(names)}
    item_domain = np.zeros(n_items + 1, dtype=np.int64)
    item_domain[1:] = [index[d] for d in domains]
    return Domain(
        name=manifest["name"],
        path=folder,
        manifest=manifest,
        num_items=n_items,
        num_users=n_users,
        splits=splits,
        features=loaded,
        item_domain=item_domain,
        domain_names=names,
        item_raw_id=items.column("raw_id").to_pylist(),
        sequence_values=seq_values,
        sequence_offsets=seq_offsets,
        item_text=items.column("text").to_pylist(),
        cold_items=cold_items,
        topn=topn,
    )


def _read_topn(folder: Path, manifest: dict, n_users: int, n_items: int) -> dict[str, UserItems]:
    """The top-N splits named by the manifest, each checked, then checked against each other."""
    entry = manifest.get("topn")
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
        raise DataFormatError(f"{folder / 'manifest.json'}: 'tracks' lists topn but the 'topn' field (with its files) is missing")
    paths = {}
    for split in SPLITS:
        if split not in entry["files"]:
            raise DataFormatError(f"{folder / 'manifest.json'}: topn.files has no '{split}' split")
        paths[split] = folder / entry["files"][split]
    splits = {split: read_user_items(path, n_users, n_items) for split, path in paths.items()}
    for split, part in splits.items():
        expected = (entry.get("counts") or {}).get(f"{split}_pairs")
        if expected is not None and int(expected) != len(part):
            raise DataFormatError(f"{paths[split]}: {len(part)} pairs, manifest says {expected}")
    check_user_items({split: str(path) for split, path in paths.items()}, splits, n_users, n_items)
    return splits


def load_mixture(
    names: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike | None = None,
    features: Sequence[str] | None = None,
    name: str | None = None,
    verify: bool = True,
) -> Domain:
    """Merge several domains into one item vocabulary for pretraining.

    Item ids of the k-th domain are shifted by the item counts of the domains before it, so
    vocabularies are disjoint (the same ASIN in two domains is two items, as in UniSRec's
    FHCKM); users are shifted the same way. Every item is tagged with its domain
    (``item_domain``). Feature sets must exist in every member with the same dimension. A member
    that is itself a prepared mixture (``mmseqrec prepare mixture``) keeps its own domain tags.
    """
    if not names:
        raise ValueError("load_mixture needs at least one domain")
    members = [load_domain(n, data_dir=data_dir, features=features, verify=verify) for n in names]
    return merge_domains(members, features=features, name=name)


def _shifted_concat(arrays: Sequence[np.ndarray], shifts: np.ndarray) -> np.ndarray:
    """``concatenate([a + shifts[k] for k, a in enumerate(arrays)])`` written straight into one
    preallocated array, without a shifted temporary per member (at FHCKM size the histories
    alone are hundreds of MB)."""
    out = np.empty(sum(a.size for a in arrays), dtype=np.result_type(*arrays, np.int64) if arrays else np.int64)
    start = 0
    for k, a in enumerate(arrays):
        np.add(a, shifts[k], out=out[start : start + a.size])
        start += a.size
    return out


def _release_pages(values: np.ndarray) -> None:
    """Let the kernel drop the resident pages of a memory-mapped feature table once it has been
    copied into a mixture's table, so the two are not both held while the next member is copied.
    The mapping stays valid: a later read faults the pages in again from the file. Arrays that
    are not memory-mapped are left alone."""
    import mmap

    base = values
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    handle = getattr(base, "_mmap", None)
    # Only read-only mappings: dropping the pages of a copy-on-write one would lose its changes.
    if handle is not None and base.mode == "r" and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def merge_domains(members: Sequence[Domain], features: Sequence[str] | None = None, name: str | None = None) -> Domain:
    """The mixture of already loaded domains (see ``load_mixture``)."""
    if not members:
        raise ValueError("merge_domains needs at least one domain")
    for member in members:
        member.require_track("sequential", "a mixture (for pretraining)")
    feature_names = list(features) if features is not None else [f for f in members[0].features if all(f in m.features for m in members)]
    for fname in feature_names:
        dims = {m.name: m.features[fname].dim for m in members}
        if len(set(dims.values())) != 1:
            files = ", ".join(
                f"{m.path / m.manifest['features'][fname]['file']} ({m.features[fname].dim}-d)"
                if fname in m.manifest.get("features", {}) else f"{m.name} ({m.features[fname].dim}-d)"
                for m in members
            )
            raise DataFormatError(
                f"feature '{fname}' has different dimensions across the mixture: {files}; "
                "every member needs the same encoder for a feature set"
            )

    item_offsets = np.cumsum([0] + [m.num_items for m in members])
    user_offsets = np.cumsum([0] + [m.num_users for m in members])
    value_offsets = np.cumsum([0] + [m.sequence_values.size for m in members])
    splits = {}
    for split in SPLITS:
        parts = [m.splits[split] for m in members]
        lengths = np.concatenate([p.lengths() for p in parts])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        splits[split] = Examples(
            user_id=_shifted_concat([p.user_id for p in parts], user_offsets),
            history_values=_shifted_concat([p.history_values for p in parts], item_offsets),
            history_offsets=offsets,
            target=_shifted_concat([p.target for p in parts], item_offsets),
        )
    merged_features = {}
    for fname in feature_names:
        first = members[0].features[fname]
        values = np.empty((int(item_offsets[-1]) + 1, first.dim), dtype=first.values.dtype)
        values[0] = first.values[0]
        for k, m in enumerate(members):
            source = m.features[fname].values
            values[int(item_offsets[k]) + 1 : int(item_offsets[k + 1]) + 1] = source[1:]
            _release_pages(source)
        present = np.concatenate([[False]] + [m.features[fname].present[1:] for m in members])
        merged_features[fname] = FeatureSet(values, present, first.modality, first.encoder)

    # A plain member is one domain; a member that is a mixture brings its own tags along.
    domain_names: list[str] = []
    item_domain = np.zeros(int(item_offsets[-1]) + 1, dtype=np.int64)
    for k, m in enumerate(members):
        block = slice(int(item_offsets[k]) + 1, int(item_offsets[k + 1]) + 1)
        if len(m.domain_names) > 1:
            item_domain[block] = m.item_domain[1:] + len(domain_names)
            domain_names.extend(m.domain_names)
        else:
            item_domain[block] = len(domain_names)
            domain_names.append(m.name)
    label = name or "+".join(m.name for m in members)
    return Domain(
        name=label,
        path=members[0].path,
        manifest={"name": label, "members": [m.manifest for m in members]},
        num_items=int(item_offsets[-1]),
        num_users=int(user_offsets[-1]),
        splits=splits,
        features=merged_features,
        item_domain=item_domain,
        domain_names=domain_names,
        item_raw_id=[r for m in members for r in m.item_raw_id],
        sequence_values=_shifted_concat([m.sequence_values for m in members], item_offsets),
        sequence_offsets=np.concatenate(
            [[0]] + [m.sequence_offsets[1:] + value_offsets[k] for k, m in enumerate(members)]
        ).astype(np.int64),
        item_text=[t for m in members for t in m.item_text],
        # The members' cold items stay out of training in the mixture too.
        cold_items=(
            np.concatenate([[False]] + [m.cold_items[1:] if m.cold_items is not None else np.zeros(m.num_items, bool) for m in members])
            if any(m.cold_items is not None for m in members) else None
        ),
    )
