"""``mmseqrec extract``: frozen text and image features for a prepared domain.

::

    mmseqrec extract --domain Scientific --encoder clip --model ViT-B-32 --pretrained openai --image-dir IMAGES
    mmseqrec extract --domain Office --encoder hf-text --model bert-base-uncased --pooling cls
    mmseqrec extract --domain Office --encoder hf-text --model minilm --pooling mean --text-name text_minilm
    mmseqrec extract --domain Food --encoder clip --pretrained openai --augment word-drop

Feature sets land in ``<Domain>/features/<name>.npy`` (N+1, d) float32 with a presence mask and a
manifest entry (encoder, settings, skipped items). The default names are the ones the models
read: ``text``, ``image`` and, with ``--augment word-drop``, ``text_aug`` (``<text name>_aug`` for
another text name). Items without text, and items whose image is missing or does not decode,
are marked absent in the mask and listed in the manifest; they are never zero vectors passed
off as data. An interrupted extraction resumes where it stopped when run again with the same
settings (``--restart`` discards it); ``--time-limit SECONDS`` stops one cleanly (exit status 3)
on machines that limit how long a command may run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mmseqrec.data.loading import load_domain, resolve_domain_path
from mmseqrec.features.augment import DEFAULT_WORD_DROP_RATIO, word_drop
from mmseqrec.features.clip import ClipEncoder, pick_device
from mmseqrec.features.images import ImageSource, ImageUnavailable
from mmseqrec.features.store import BatchResult, FeatureJob, check_can_write, run_job
from mmseqrec.options import add_data_dir

ENCODERS = ("clip", "hf-text")
#: Exit status of ``mmseqrec extract`` when ``--time-limit`` stopped it before the end.
UNFINISHED = 3
DEFAULT_BATCH_SIZE = {"clip": 256, "hf-text": 64}


@dataclass
class ItemTable:
    """The items of a prepared domain, as extraction needs them (index i-1 is item i)."""

    folder: Path
    raw_id: list[str]
    text: list[str | None]
    image: list[str | None]

    @property
    def num_items(self) -> int:
        return len(self.raw_id)


def read_items(domain: str | Path, data_dir: str | Path | None = None) -> ItemTable:
    """Validate the domain (checksums, counts) and read its items table."""
    folder = resolve_domain_path(domain, data_dir)
    load_domain(folder, features=[])
    table = pq.read_table(folder / "items.parquet", columns=["raw_id", "text", "image"])
    return ItemTable(folder, table.column("raw_id").to_pylist(), table.column("text").to_pylist(), table.column("image").to_pylist())


@dataclass(frozen=True)
class WordDrop:
    """The ``--augment word-drop`` settings."""

    ratio: float = DEFAULT_WORD_DROP_RATIO
    seed: int = 0


def _has_text(text: str | None) -> bool:
    return text is not None and bool(text.strip())


def text_job(items: ItemTable, encoder, name: str, augment: WordDrop | None = None) -> FeatureJob:
    """A text feature set (or its word-dropped version) from any encoder with ``encode_texts``."""
    settings = dict(encoder.settings)
    description = encoder.description
    if augment is not None:
        settings["augment"] = {"kind": "word-drop", "ratio": augment.ratio, "seed": augment.seed}
        description = f"{description}; word-drop text (ratio {augment.ratio}, seed {augment.seed})"

    def encode(ids: np.ndarray) -> BatchResult:
        texts = [items.text[i - 1] for i in ids]
        present = np.array([_has_text(t) for t in texts], dtype=bool)
        values = np.zeros((len(ids), encoder.dim), dtype=np.float32)
        truncated = 0
        if present.any():
            chosen = [t for t, p in zip(texts, present) if p]
            if augment is not None:
                chosen = [word_drop(t, augment.ratio, augment.seed, int(i)) for t, i in zip(chosen, ids[present])]
            values[present], truncated = encoder.encode_texts(chosen)
        skipped = [(int(i), "no text") for i in ids[~present]]
        return BatchResult(values, present, skipped, truncated)

    order = None
    if getattr(encoder, "pads_to_longest", False):
        # Batch similar lengths together (less padding); ties keep item order, so it is fixed.
        lengths = np.array([len(t) if t else 0 for t in items.text], dtype=np.int64)
        order = np.argsort(lengths, kind="stable").astype(np.int64) + 1
        settings["batch_order"] = "text length"
    return FeatureJob(name, "text", description, encoder.dim, settings, encode, order)


def image_job(items: ItemTable, encoder, source: ImageSource, name: str = "image", workers: int = 8) -> FeatureJob:
    """An image feature set from an encoder with ``prepare_image`` / ``encode_prepared``.

    Images are read, decoded and preprocessed by a thread pool, one batch ahead of the encoder
    (the store calls ``prefetch`` with the next batch), so downloads and decoding overlap with
    the model. Failures become absent rows with their reason.
    """
    settings = dict(encoder.settings)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"load-{name}")
    pending: dict[int, Future] = {}

    def load(index: int):
        try:
            return encoder.prepare_image(source.load(items.raw_id[index - 1], items.image[index - 1]))
        except ImageUnavailable as err:
            return err

    def prefetch(ids: np.ndarray) -> None:
        for index in ids.tolist():
            if index not in pending:
                pending[index] = pool.submit(load, index)

    def encode(ids: np.ndarray) -> BatchResult:
        prefetch(ids)
        loaded = [pending.pop(index).result() for index in ids.tolist()]
        present = np.array([not isinstance(x, ImageUnavailable) for x in loaded], dtype=bool)
        values = np.zeros((len(ids), encoder.dim), dtype=np.float32)
        if present.any():
            values[present] = encoder.encode_prepared([x for x in loaded if not isinstance(x, ImageUnavailable)])
        skipped = [(int(i), str(x)) for i, x in zip(ids, loaded) if isinstance(x, ImageUnavailable)]
        return BatchResult(values, present, skipped)

    return FeatureJob(name, "image", encoder.description, encoder.dim, settings, encode, prefetch=prefetch)


def aug_name_for(text_name: str) -> str:
    return f"{text_name}_aug"


def run_jobs(items: ItemTable, jobs: Sequence[FeatureJob], batch_size: int, restart: bool = False, progress: bool = True, **kwargs) -> list[dict]:
    """Run feature jobs one after the other into the domain folder; returns their summaries."""
    return [run_job(items.folder, job, items.num_items, batch_size, restart=restart, progress=progress, **kwargs) for job in jobs]


# --------------------------------------------------------------------------------------------
# The same encoder again, for items that come later
# --------------------------------------------------------------------------------------------


def encoder_from_manifest(entry: dict, where: str, device: str = "auto"):
    """The encoder that made a feature set, rebuilt from its manifest ``entry`` (its
    ``extractor`` settings), for items added after extraction. ``where`` names the manifest and
    the set in errors. The precision is the recorded one on a GPU and fp32 on a CPU (CPU
    autocast in fp16 is slow and inexact), so vectors may differ from the stored ones by
    float16 rounding when those were made on a GPU."""
    settings = entry.get("extractor") or {}
    kind = settings.get("encoder_type")
    resolved = str(pick_device(str(device)))
    precision = settings.get("precision", "fp32") if resolved.startswith("cuda") else "fp32"
    if kind == "clip":
        model, pretrained = settings.get("model"), settings.get("pretrained")
        if pretrained is None and not str(model).startswith(("local-dir:", "hf-hub:")):
            raise ValueError(
                f"{where}: extracted with randomly initialised weights ({entry.get('encoder')}), which cannot be made "
                "again; give the new items their vectors in the items file (\"features\")"
            )
        return ClipEncoder.load(model, pretrained or "none", resolved, precision, bool(settings.get("normalized", False)))
    if kind == "hf-text":
        from mmseqrec.features.text import MODEL_ALIASES, HFTextEncoder

        recorded = str(settings.get("model"))
        # An alias is recorded by what it stands for; map it back to the alias.
        name = next((alias for alias, (_, _, package, text) in MODEL_ALIASES.items() if recorded == f"{text} (from the {package} package)"), recorded)
        return HFTextEncoder.load(name, settings.get("pooling", "cls"), resolved, precision, bool(settings.get("normalized", False)), settings.get("max_length"))
    raise ValueError(
        f"{where}: not made by `mmseqrec extract` (encoder: {entry.get('encoder') or 'not recorded'}), so its encoder "
        "cannot be run again; give the new items their vectors in the items file (\"features\")"
    )


def encode_items(items: ItemTable, name: str, modality: str, encoder, source: ImageSource | None = None, batch_size: int = 64,
                 progress: bool = False) -> BatchResult:
    """Encode all of ``items`` (ids 1..M of the table) for one feature set, in memory: the
    text or image job ``mmseqrec extract`` runs, without the resumable store (a handful of items)."""
    from tqdm.auto import tqdm

    if modality == "image":
        if source is None:
            raise ValueError(f"feature set '{name}' is an image feature: an image source is needed")
        job = image_job(items, encoder, source, name)
    else:
        job = text_job(items, encoder, name)
    ids = np.arange(1, items.num_items + 1, dtype=np.int64)
    parts = []
    for start in tqdm(range(0, len(ids), batch_size), desc=f"encode {name}", unit="batch", disable=not progress):
        parts.append(job.encode(ids[start : start + batch_size]))
    return BatchResult(
        np.concatenate([p.values for p in parts]) if parts else np.zeros((0, encoder.dim), np.float32),
        np.concatenate([p.present for p in parts]) if parts else np.zeros(0, bool),
        [skip for p in parts for skip in p.skipped],
        sum(p.truncated for p in parts),
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _describe(summary: dict, num_items: int) -> str:
    if not summary["finished"]:
        return f"{summary['name']}: stopped after {summary['batches_done']}/{summary['batches']} batches; run again to resume"
    text = (
        f"{summary['name']}: {summary['items_with_feature']:,}/{num_items:,} items, {summary['dim']}-d, "
        f"{summary['skipped']:,} skipped, {summary['seconds']:.1f} s"
    )
    if summary["truncated"]:
        text += f", {summary['truncated']:,} texts cut to the encoder's length limit"
    return text


def _cmd_extract(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    items = read_items(args.domain, args.data_dir)
    augment = WordDrop(args.word_drop_ratio, args.aug_seed) if args.augment == "word-drop" else None
    aug_name = args.aug_name or aug_name_for(args.text_name)

    if args.encoder == "hf-text":
        modalities = ["text"]
        if args.modalities not in (None, "text"):
            raise ValueError("--encoder hf-text encodes text only; drop --modalities or pass --modalities text")
    else:
        modalities = [m.strip() for m in (args.modalities or "text,image").split(",") if m.strip()]
        unknown = sorted(set(modalities) - {"text", "image"})
        if unknown or not modalities:
            raise ValueError(f"--modalities: expected a comma-separated subset of text,image, got {args.modalities!r}")
    source = None
    if "image" in modalities:
        source = ImageSource(items.folder, args.image_dir, download=not args.offline, cache_dir=args.image_cache, timeout=args.timeout)
        if not source.has_any(items.image):
            if args.modalities is None:
                print(f"{items.folder.name}: no image folder given and no image reference in the items table: extracting text only")
                modalities.remove("image")
                source = None
            else:
                raise ValueError(f"{items.folder.name}: no images to extract: pass --image-dir DIR (files named by item raw id) or --modalities text")
    if augment is not None and "text" not in modalities:
        raise ValueError("--augment word-drop augments the text features; include text in --modalities")

    names = ([args.text_name] if "text" in modalities else []) + ([aug_name] if augment else []) + ([args.image_name] if source else [])
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must differ, got {names}")
    check_can_write(items.folder, names, args.overwrite)

    if args.encoder == "clip":
        encoder = ClipEncoder.load(args.model or "ViT-B-32", args.pretrained, args.device, args.precision, bool(args.normalize))
    else:
        from mmseqrec.features.text import HFTextEncoder

        if not args.model:
            raise ValueError("--encoder hf-text needs --model (a folder, a Hub id such as bert-base-uncased, or the alias minilm)")
        encoder = HFTextEncoder.load(args.model, args.pooling, args.device, args.precision, args.normalize, args.max_length)
    print(f"{items.folder.name}: {items.num_items:,} items; encoder {encoder.description} on {encoder.device} ({encoder.precision})")

    jobs = []
    if "text" in modalities:
        jobs.append(text_job(items, encoder, args.text_name))
    if augment is not None:
        jobs.append(text_job(items, encoder, aug_name, augment))
    if source is not None:
        jobs.append(image_job(items, encoder, source, args.image_name, args.workers))
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE[args.encoder]
    deadline = time.monotonic() + args.time_limit if args.time_limit is not None else None
    finished = True
    for job in jobs:
        summary = run_job(items.folder, job, items.num_items, batch_size, restart=args.restart, progress=not args.quiet, deadline=deadline)
        print(_describe(summary, items.num_items))
        finished = finished and summary["finished"]
    if not finished:
        print(f"--time-limit reached after {time.perf_counter() - started:.1f} s: run the same command again to resume")
        return UNFINISHED
    print(f"written to {items.folder / 'features'} in {time.perf_counter() - started:.1f} s")
    return 0


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec extract`` to the top-level commands."""
    parser = commands.add_parser(
        "extract",
        help="extract frozen text/image features (open_clip, transformers) into a prepared domain",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--domain", required=True, help="domain name (looked up in --data-dir) or folder")
    add_data_dir(parser)
    parser.add_argument("--encoder", choices=ENCODERS, default="clip", help="open_clip text+image towers, or a transformers text encoder")
    parser.add_argument("--model", default=None, help="clip: open_clip model name (default ViT-B-32); hf-text: folder, Hub id or alias (minilm)")
    parser.add_argument("--pretrained", default="openai", help="clip weights: an open_clip tag, a local checkpoint file, or 'none' (random, tests only)")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="hf-text: first-token ([CLS], UniSRec) or masked mean (sentence-transformers)")
    parser.add_argument("--max-length", type=int, default=None, help="hf-text: token limit (default: the model's sentence-transformers max_seq_length, else 512)")
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store L2-normalised vectors (default: clip no, as the MISSRec release; hf-text as the model's sentence-transformers pipeline, else no)",
    )
    parser.add_argument("--modalities", default=None, help="clip: text, image or text,image (default: text, plus image when images can be found)")
    parser.add_argument("--image-dir", type=Path, default=None, help="folder of item images named by raw id (ASIN), e.g. B0001.jpg")
    parser.add_argument("--image-cache", type=Path, default=None, help="keep downloaded images here and reuse them")
    parser.add_argument("--offline", action="store_true", help="do not download http(s) image URLs (such items are skipped)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per image download")
    parser.add_argument("--workers", type=int, default=8, help="threads loading/downloading images")
    parser.add_argument("--augment", choices=("word-drop",), default=None, help="also write word-dropped text features (pretraining)")
    parser.add_argument("--word-drop-ratio", type=float, default=DEFAULT_WORD_DROP_RATIO, help="probability of dropping each space-separated word")
    parser.add_argument("--aug-seed", type=int, default=0, help="seed of the word-drop sample (per item)")
    parser.add_argument("--text-name", default="text", help="feature-set name of the text features")
    parser.add_argument("--image-name", default="image", help="feature-set name of the image features")
    parser.add_argument("--aug-name", default=None, help="feature-set name of the augmented text (default: <text name>_aug)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"items per batch (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1...")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto", help="auto: fp16 autocast on a GPU, fp32 on the CPU")
    parser.add_argument("--overwrite", action="store_true", help="replace feature sets of the same names")
    parser.add_argument("--restart", action="store_true", help="discard an interrupted extraction instead of resuming it")
    parser.add_argument(
        "--time-limit", type=float, default=None,
        help=f"seconds; start no batch after this, exit with status {UNFINISHED}, resume on the next run",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_cmd_extract)
    return parser
