"""Import the DiffMM release (HKUDS/DiffMM ``Datasets/<name>/``) as a domain with the top-N track.

    mmseqrec prepare diffmm --path ../shared/data/diffmm-tiktok --name tiktok

A release folder holds::

    trnMat.pkl  valMat.pkl  tstMat.pkl
        pickles of scipy.sparse.coo_matrix (users x items, float ones), one per split; the
        splits are disjoint per user (random, not chronological)
    image_feat.npy  audio_feat.npy  text_feat.npy      (each optional)
        numpy arrays (items, d), row = item index (TikTok: float16 (6710, 128) image and audio)

The pickles are read through ``mmseqrec.data.safe_pickle`` (a pickle naming anything but the
scipy sparse and numpy classes is refused before anything is built); the ``.npy`` files with
``allow_pickle=False``. Mapping to the processed format: item id = column index + 1 (0 is
padding), user id = row index; raw ids are the release's indices as text. The domain carries
the top-N track only (the release has no order of interactions). An item whose feature row is
all zeros (or not finite) has no such feature: ``False`` in the mask. Every user must have an
interaction in some split; a user with no training item (TikTok has 10) is kept: evaluated,
with nothing to learn them from (the manifest counts them).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from mmseqrec.data.format import SPLITS, DataFormatError, DomainTables, FeatureSet, UserItems, sha256_of, write_domain
from mmseqrec.data.loading import default_data_dir, load_domain
from mmseqrec.data.safe_pickle import load_sparse_matrix
from mmseqrec.options import add_data_dir

MATRIX_FILES = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
#: feature file -> (feature-set name, modality)
FEATURE_FILES = {"image_feat.npy": ("image", "image"), "audio_feat.npy": ("audio", "audio"), "text_feat.npy": ("text", "text")}


def read_split(path: Path) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """(shape, rows, columns) of one release matrix; its stored values must be positive and
    finite (an interaction), each (row, column) at most once."""
    matrix = load_sparse_matrix(path)
    values = np.asarray(matrix.data)
    bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
    if bad.size:
        raise DataFormatError(
            f"{path}: entry ({int(matrix.row[bad[0]])}, {int(matrix.col[bad[0]])}) is {values[bad[0]]}; every stored "
            "value must be a positive interaction weight"
        )
    return tuple(int(n) for n in matrix.shape), np.asarray(matrix.row, np.int64), np.asarray(matrix.col, np.int64)


def read_feature(path: Path, n_items: int) -> FeatureSet:
    name, modality = FEATURE_FILES[path.name]
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataFormatError(f"{path}: cannot be read as a .npy array without pickles ({err})") from err
    if raw.ndim != 2 or raw.shape[0] != n_items:
        raise DataFormatError(f"{path}: expected shape ({n_items}, d) (one row per item of the matrices), got {raw.shape}")
    if not np.issubdtype(raw.dtype, np.floating):
        raise DataFormatError(f"{path}: expected floating-point features, got {raw.dtype}")
    values = np.zeros((n_items + 1, raw.shape[1]), dtype=np.float32)
    values[1:] = raw.astype(np.float32)
    present = np.zeros(n_items + 1, dtype=bool)
    present[1:] = np.isfinite(values[1:]).all(axis=1) & (values[1:] != 0).any(axis=1)
    values[~present] = 0  # a missing row stays zero and masked, never data
    encoder = f"DiffMM release {path.name} ({modality}, {raw.shape[1]}-d, stored as {raw.dtype})"
    return FeatureSet(values, present, modality, encoder, {"source_file": path.name})


def build_diffmm(path: str | os.PathLike, name: str) -> DomainTables:
    """The tables of a DiffMM release folder (see the module docstring); nothing is written."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected a DiffMM release with {', '.join(MATRIX_FILES.values())})")
    missing = [file for file in MATRIX_FILES.values() if not (folder / file).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: {', '.join(missing)} missing; a DiffMM release has {', '.join(MATRIX_FILES.values())}")
    read = {split: read_split(folder / MATRIX_FILES[split]) for split in SPLITS}
    shape = read["train"][0]
    for split in ("valid", "test"):
        if read[split][0] != shape:
            raise DataFormatError(
                f"{folder / MATRIX_FILES[split]}: a {read[split][0][0]} x {read[split][0][1]} matrix, but "
                f"{folder / MATRIX_FILES['train']} is {shape[0]} x {shape[1]}; the three splits must have one shape"
            )
    n_users, n_items = shape
    splits = {split: UserItems.from_pairs(rows, cols + 1, n_users) for split, (_, rows, cols) in read.items()}
    features = {}
    for file in FEATURE_FILES:
        if (folder / file).is_file():
            feature = read_feature(folder / file, n_items)
            features[FEATURE_FILES[file][0]] = feature
    extra = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in MATRIX_FILES.values() and p.name not in FEATURE_FILES)
    notes = [f"DiffMM release {folder.name}: user-item matrices only, no order of interactions (top-N track only)"]
    if extra:
        notes.append(f"files in the release not imported: {', '.join(extra)}")
    return DomainTables(
        name=name,
        source={
            "type": "diffmm", "path": str(folder.resolve()),
            "files": {file: sha256_of(folder / file) for file in [*MATRIX_FILES.values(), *[f for f in FEATURE_FILES if (folder / f).is_file()]]},
        },
        protocol={"split": "top-N (no sequential split)"},
        item_raw_id=[str(i) for i in range(n_items)],
        item_text=[None] * n_items,
        item_image=[None] * n_items,
        item_domain=[name] * n_items,
        user_raw_id=[str(u) for u in range(n_users)],
        sequences=[],
        splits={},
        features=features,
        notes=notes,
        topn=splits,
        topn_protocol={
            "split": "as released (DiffMM; random per user, disjoint)",
            "rule": "release",
            "files": dict(MATRIX_FILES),
        },
    )


def prepare_diffmm(path: str | os.PathLike, name: str, data_dir: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return write_domain(build_diffmm(path, name), root / name, overwrite=overwrite)


def _cmd_prepare(args: argparse.Namespace) -> int:
    folder = prepare_diffmm(args.path, args.name, args.data_dir, args.overwrite)
    print(load_domain(folder).describe())
    print(f"written to {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec prepare diffmm``."""
    parser = subparsers.add_parser(
        "diffmm", help="the DiffMM release (user-item matrices as pickles, item features): a top-N domain",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--path", required=True, help="the release folder (trnMat.pkl, valMat.pkl, tstMat.pkl, *_feat.npy)")
    parser.add_argument("--name", required=True, help="name of the prepared domain, e.g. tiktok")
    add_data_dir(parser, "write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing domain of that name")
    parser.set_defaults(func=_cmd_prepare)
    return parser
