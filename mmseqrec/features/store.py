"""Writing one feature set into a prepared domain, resumably and atomically.

A ``FeatureJob`` says what to compute (a name, a dimension, the settings that determine the
bytes, and a function from a batch of item ids to vectors). ``run_job`` walks the items 1..N in
fixed batches and keeps its state in a work folder inside the domain::

    <Domain>/.extract/<name>/
      job.json        the settings, the batch size and the checksum of items.parquet
      values.npy      (N+1, d) float32, memory-mapped; rows of finished batches are final
      present.npy     (N+1,) bool, memory-mapped
      skips.tsv       journal of the items skipped so far (batch, item id, reason)
      progress.json   how many batches are done

After every batch the arrays and the journal are flushed and only then ``progress.json`` is
replaced (journal lines of a batch not marked done are dropped on resume), so an
interrupted run (Ctrl-C, a killed job, a full disk) resumes at the first unfinished batch and
produces the same bytes as an uninterrupted run. At the end the two arrays are renamed into
``features/<name>.npy`` and ``features/<name>.mask.npy`` and the manifest gets the feature entry
and the new checksums (written to a temporary file and renamed). The work folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmseqrec.data.format import MANIFEST, DataFormatError, read_manifest, sha256_of

WORK_DIR = ".extract"
#: How many skipped items are listed in the manifest itself; all of them go to the .skipped.tsv file.
MANIFEST_SKIP_LIST = 50


@dataclass
class BatchResult:
    """What an encoder returns for one batch of items.

    Attributes:
        values: (B, d) float32; rows of items without the feature are ignored (stored as zeros).
        present: (B,) bool; False where the item has no such feature.
        skipped: (item id, reason) for every item marked absent, e.g. "no text", "image missing".
        truncated: how many inputs of the batch were cut to the encoder's maximum length.
    """

    values: np.ndarray
    present: np.ndarray
    skipped: list[tuple[int, str]] = field(default_factory=list)
    truncated: int = 0


@dataclass
class FeatureJob:
    """One feature set to extract.

    Attributes:
        name: the feature-set name in the domain (``text``, ``image``, ``text_aug``, ``text_minilm``).
        modality: ``text`` or ``image``; recorded in the manifest.
        encoder: a human-readable description of the encoder, recorded in the manifest.
        dim: the output dimension d.
        settings: everything that determines the output bytes (model, weights, pooling,
            normalisation, precision, augmentation seed...). A resumed run must have the same.
        encode: item ids (1-based int64 array) -> ``BatchResult``.
        order: the order in which items are batched (a permutation of 1..N; default 1..N). Text
            encoders that pad to the longest text of a batch go faster on texts sorted by length.
            It must be a function of the items table only, so that a resumed run batches alike.
        prefetch: optional; called with the current and then the next batch's ids before
            ``encode`` of the current one, so input loading can run ahead of the model.
    """

    name: str
    modality: str
    encoder: str
    dim: int
    settings: dict
    encode: Callable[[np.ndarray], BatchResult]
    order: np.ndarray | None = None
    prefetch: Callable[[np.ndarray], None] | None = None


class ResumeMismatchError(DataFormatError):
    """An interrupted extraction with different settings is in the way."""


def work_folder(domain_folder: Path, name: str) -> Path:
    return Path(domain_folder) / WORK_DIR / name


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def check_can_write(domain_folder: Path, names: Sequence[str], overwrite: bool) -> None:
    """Fail before any encoding if a feature set of one of these names already exists."""
    manifest = read_manifest(Path(domain_folder))
    existing = [n for n in names if n in manifest["features"]]
    if existing and not overwrite:
        have = ", ".join(f"{n} ({manifest['features'][n].get('encoder', '?')})" for n in existing)
        raise FileExistsError(
            f"{Path(domain_folder) / MANIFEST}: feature set(s) {have} already exist; pass --overwrite to replace them "
            "or choose another name (--text-name / --image-name)"
        )


def run_job(
    domain_folder: Path,
    job: FeatureJob,
    num_items: int,
    batch_size: int,
    restart: bool = False,
    progress: bool = True,
    stop_after_batches: int | None = None,
    deadline: float | None = None,
) -> dict:
    """Compute ``job`` for items 1..``num_items`` and install it into the domain.

    Args:
        domain_folder: the prepared domain.
        job: what to compute.
        num_items: N (from the manifest).
        batch_size: items per batch; part of the resume key (a resumed run must use the same).
        restart: discard an interrupted run of this feature instead of resuming it.
        progress: show a tqdm bar.
        stop_after_batches: stop (without installing) after this many batches in this call;
            for tests and for splitting a long extraction over several jobs.
        deadline: a ``time.monotonic()`` value; no new batch starts after it (the run stops
            cleanly and resumes next time), for machines that limit how long a command runs.

    Returns:
        a summary: name, dim, items with the feature, skipped count, truncated count, seconds,
        and ``finished`` (False when stopped by ``stop_after_batches``).
    """
    from tqdm.auto import tqdm

    domain_folder = Path(domain_folder)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    items_checksum = sha256_of(domain_folder / "items.parquet")
    key = {
        "name": job.name,
        "modality": job.modality,
        "dim": job.dim,
        "num_items": num_items,
        "batch_size": batch_size,
        "order_sha256": hashlib.sha256(np.ascontiguousarray(job.order, dtype="<i8").tobytes()).hexdigest() if job.order is not None else None,
        "items_sha256": items_checksum,
        "settings": job.settings,
    }
    key = json.loads(json.dumps(key))  # the form it has after a round trip through job.json
    folder = work_folder(domain_folder, job.name)
    if restart and folder.exists():
        shutil.rmtree(folder)
    state = _open_state(folder, key, num_items, job.dim)
    values, present, done, skipped, truncated, seconds = state

    order = np.arange(1, num_items + 1, dtype=np.int64) if job.order is None else np.asarray(job.order, dtype=np.int64)
    if not np.array_equal(np.sort(order), np.arange(1, num_items + 1)):
        raise ValueError(f"the batching order of '{job.name}' must be a permutation of the item ids 1..{num_items}")
    n_batches = (num_items + batch_size - 1) // batch_size
    started = time.perf_counter()
    bar = tqdm(total=n_batches, initial=done, desc=f"extract {job.name}", unit="batch", disable=not progress)
    ran = 0
    try:
        for batch in range(done, n_batches):
            if stop_after_batches is not None and ran >= stop_after_batches:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            ids = order[batch * batch_size : (batch + 1) * batch_size]
            if job.prefetch is not None:
                job.prefetch(ids)
                job.prefetch(order[(batch + 1) * batch_size : (batch + 2) * batch_size])
            result = job.encode(ids)
            rows, mask = _check_batch(job, ids, result)
            values[ids] = rows
            present[ids] = mask
            values.flush()
            present.flush()
            batch_skips = [(int(i), " ".join(str(reason).split())) for i, reason in result.skipped]
            _append_skips(folder, batch, batch_skips)
            skipped.extend(batch_skips)
            truncated += int(result.truncated)
            done = batch + 1
            ran += 1
            elapsed = seconds + time.perf_counter() - started
            _write_json_atomic(folder / "progress.json", {"batches_done": done, "truncated": truncated, "seconds": round(elapsed, 3)})
            bar.update(1)
    finally:
        bar.close()
    seconds += time.perf_counter() - started
    summary = {
        "name": job.name,
        "dim": job.dim,
        "batches_done": done,
        "batches": n_batches,
        "skipped": len(skipped),
        "truncated": truncated,
        "seconds": round(seconds, 3),
        "finished": done == n_batches,
    }
    if done < n_batches:
        del values, present
        return summary
    summary["items_with_feature"] = int(present[1:].sum())
    del values, present  # close the memory maps before renaming the files
    _install(domain_folder, folder, job, key, skipped, truncated, seconds)
    return summary


def _open_state(folder: Path, key: dict, num_items: int, dim: int):
    """Resume the work folder if it matches ``key``, else start a fresh one."""
    job_file = folder / "job.json"
    if job_file.exists():
        stored = json.loads(job_file.read_text())
        if stored != key:
            differing = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
            raise ResumeMismatchError(
                f"{folder}: an interrupted extraction of '{key['name']}' with different {', '.join(differing)} is there; "
                "run again with the same settings to resume it, or pass --restart to discard it"
            )
        progress = json.loads((folder / "progress.json").read_text()) if (folder / "progress.json").exists() else {}
        values = np.load(folder / "values.npy", mmap_mode="r+")
        present = np.load(folder / "present.npy", mmap_mode="r+")
        if values.shape != (num_items + 1, dim) or present.shape != (num_items + 1,):
            raise ResumeMismatchError(f"{folder}: the stored arrays do not have the expected shape; pass --restart")
        done = int(progress.get("batches_done", 0))
        return values, present, done, _read_skips(folder, done), int(progress.get("truncated", 0)), float(progress.get("seconds", 0.0))
    if folder.exists():  # left over from a run that died before writing job.json
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    values = np.lib.format.open_memmap(folder / "values.npy", mode="w+", dtype=np.float32, shape=(num_items + 1, dim))
    present = np.lib.format.open_memmap(folder / "present.npy", mode="w+", dtype=bool, shape=(num_items + 1,))
    values.flush()
    present.flush()
    _write_json_atomic(job_file, key)  # last: a work folder with job.json is a valid resume point
    return values, present, 0, [], 0, 0.0


def _append_skips(folder: Path, batch: int, skips: list[tuple[int, str]]) -> None:
    """Journal the skipped items of a batch (before the batch is marked done in progress.json)."""
    if not skips:
        return
    with open(folder / "skips.tsv", "a", encoding="utf-8") as handle:
        handle.writelines(f"{batch}\t{item}\t{reason}\n" for item, reason in skips)
        handle.flush()
        os.fsync(handle.fileno())


def _read_skips(folder: Path, batches_done: int) -> list[tuple[int, str]]:
    """The journalled skips of finished batches (a batch that was not marked done is redone)."""
    path = folder / "skips.tsv"
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if int(line.split("\t", 1)[0]) < batches_done]
    tmp = path.with_name(path.name + ".tmp")  # drop the lines of a batch that was not finished
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    kept = []
    for line in lines:
        _, item, reason = line.split("\t", 2)
        kept.append((int(item), reason))
    return kept


def _check_batch(job: FeatureJob, ids: np.ndarray, result: BatchResult) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(result.values, dtype=np.float32)
    mask = np.asarray(result.present, dtype=bool)
    if rows.shape != (len(ids), job.dim) or mask.shape != (len(ids),):
        raise ValueError(
            f"encoder for '{job.name}' returned values {rows.shape} and mask {mask.shape} for {len(ids)} items of dimension {job.dim}"
        )
    reported = {int(i) for i, _ in result.skipped}
    absent = {int(i) for i in ids[~mask]}
    if reported != absent:
        raise ValueError(f"encoder for '{job.name}': items marked absent {sorted(absent)} differ from those reported skipped {sorted(reported)}")
    rows = np.where(mask[:, None], rows, np.float32(0))
    finite = np.isfinite(rows)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise DataFormatError(f"encoder for '{job.name}' produced a non-finite value for item {int(ids[row])}; try --precision fp32")
    return rows, mask


def _install(domain_folder: Path, folder: Path, job: FeatureJob, key: dict, skipped: list, truncated: int, seconds: float) -> None:
    """Rename the finished arrays into ``features/`` and record them in the manifest."""
    import pyarrow.parquet as pq

    features_dir = domain_folder / "features"
    features_dir.mkdir(exist_ok=True)
    raw_ids = pq.read_table(domain_folder / "items.parquet", columns=["raw_id"]).column("raw_id").to_pylist()
    present = np.load(folder / "present.npy")
    num_items = key["num_items"]

    files = {"file": f"features/{job.name}.npy", "mask_file": f"features/{job.name}.mask.npy"}
    skipped_file = f"features/{job.name}.skipped.tsv"
    if skipped:
        staged = folder / "skipped.tsv"
        with open(staged, "w", encoding="utf-8") as handle:
            handle.write("item_id\traw_id\treason\n")
            handle.writelines(f"{item}\t{raw_ids[item - 1]}\t{reason}\n" for item, reason in sorted(skipped))
        os.replace(staged, domain_folder / skipped_file)
    elif (domain_folder / skipped_file).exists():
        os.remove(domain_folder / skipped_file)
    os.replace(folder / "values.npy", domain_folder / files["file"])
    os.replace(folder / "present.npy", domain_folder / files["mask_file"])

    reasons: dict[str, int] = {}
    for _, reason in skipped:
        kind = reason.split(":", 1)[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    entry = {
        "modality": job.modality,
        "encoder": job.encoder,
        "dim": job.dim,
        "dtype": "float32",
        "coverage": round(float(present[1:].mean()) if num_items else 0.0, 6),
        "items_with_feature": int(present[1:].sum()),
        **files,
        "extractor": {**job.settings, "batch_size": key["batch_size"], "seconds": round(seconds, 3)},
        "skipped": len(skipped),
        "skip_reasons": reasons,
        "skipped_items": [
            {"item_id": item, "raw_id": raw_ids[item - 1], "reason": reason} for item, reason in sorted(skipped)[:MANIFEST_SKIP_LIST]
        ],
        "texts_truncated": truncated,
    }
    if skipped:
        entry["skipped_file"] = skipped_file

    manifest = read_manifest(domain_folder)
    manifest["features"][job.name] = entry
    checksums = manifest["checksums"]
    checksums.pop(skipped_file, None)
    for rel in (files["file"], files["mask_file"], skipped_file):
        if (domain_folder / rel).exists():
            checksums[rel] = sha256_of(domain_folder / rel)
    manifest["checksums"] = dict(sorted(checksums.items()))
    _write_json_atomic(domain_folder / MANIFEST, manifest)
    shutil.rmtree(folder)
    try:
        (domain_folder / WORK_DIR).rmdir()  # only if no other extraction is pending
    except OSError:
        pass
