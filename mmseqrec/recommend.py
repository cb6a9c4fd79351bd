"""``mmseqrec recommend`` (batch recommendations to Parquet), ``mmseqrec index`` and ``mmseqrec add-items``.

    mmseqrec recommend --run RUN --split test --k 10 --output recs.parquet --evaluate
    mmseqrec recommend --run RUN --users users.jsonl --k 20 --output recs.parquet
    accelerate launch --multi_gpu --num_processes 2 -m mmseqrec.cli recommend --run RUN --output recs.parquet
    mmseqrec index --run RUN                      # nearest-neighbour indexes of the item vectors, in RUN/index/
    mmseqrec recommend --run RUN --index --k 10 --output recs.parquet
    mmseqrec add-items --run RUN --items new-items.jsonl

Whose recommendations (one row of histories each):
- ``--split valid|test``: every row of that split, its history as the evaluator reads it; with
  ``--evaluate`` the rank of each row's held-out target is computed exactly as in training
  (``mmseqrec.training.evaluate``: same loader, batch size, window, blocks and ties counted
  against the target), and the metrics are compared with the run's ``metrics.json``;
- ``--users FILE``: ``.txt`` with one raw user id per line (their whole sequence is the
  history), or ``.jsonl`` with ``{"user": ..., "history": [raw item ids]}`` per line (``history``
  may be left out for a user of the domain);
- neither: every user of the domain, with their whole sequence.

Output: Parquet with one row per recommended item, ``user`` (raw id), ``rank`` (1 = best),
``item`` (raw id) and ``score``, written to a temporary file and renamed. ``--exclude-seen``
(the default, except with ``--evaluate``, where the run's own ``train.mask_history`` applies as
in the papers' protocol) leaves each history's items out. Under ``accelerate launch`` every
process scores its share of the rows and the main process gathers and writes them.

``--index`` ranks in two stages (``mmseqrec.retrieval``): the indexes that ``mmseqrec index``
stored beside the model propose ``--candidates`` items per index and history, which the model
re-scores exactly. A stale index (another model, or items added since) is an error; ``mmseqrec
add-items`` keeps a current one up to date.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from mmseqrec import added_items, retrieval
from mmseqrec.data.format import Examples
from mmseqrec.inference import DomainRecommender, RunRecord, load, padded_ids, rank_batch
from mmseqrec.metrics import metrics_from_ranks
from mmseqrec.options import add_data_dir, add_output
from mmseqrec.retrieval import IndexSettings, StaleIndexError
from mmseqrec.training import finish_accelerator, make_accelerator, ranking_loader

#: How far recomputed metrics may be from metrics.json and still count as the same.
REPRODUCTION_TOLERANCE = 1e-6


def read_users(path: Path, recommender: DomainRecommender) -> tuple[list[str], list[np.ndarray]]:
    """(user labels, histories as catalogue ids) from a ``--users`` file."""
    if not path.is_file():
        raise FileNotFoundError(f"--users {path}: no such file")
    index = {raw: u for u, raw in enumerate(recommender.user_raw_ids())}
    labels, histories, unknown_users = [], [], []
    raw_histories: list[list[str] | None] = []
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    for number, line in lines:
        if path.suffix.lower() == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("user"), str):
                raise ValueError(f"{path}, line {number}: expected an object with a string 'user' (and optionally 'history')")
            history = record.get("history")
            if history is not None and (not isinstance(history, list) or not all(isinstance(x, str) for x in history) or not history):
                raise ValueError(f"{path}, line {number}: 'history' must be a non-empty list of raw item ids")
            labels.append(record["user"])
            raw_histories.append(history)
        else:
            labels.append(line)
            raw_histories.append(None)
    for label, history in zip(labels, raw_histories):
        if history is None and label not in index:
            unknown_users.append(label)
    if unknown_users:
        raise ValueError(f"{path}: {len(unknown_users)} user(s) not in domain {recommender.domain.name} and given no history: {', '.join(unknown_users[:20])}")
    given = [h for h in raw_histories if h is not None]
    converted = iter(recommender.to_ids(given)[0])  # raises UnknownItemsError naming every unknown item
    for label, history in zip(labels, raw_histories):
        histories.append(next(converted) if history is not None else recommender.user_sequence(index[label]))
    if not labels:
        raise ValueError(f"{path}: no users")
    return labels, histories


def _write_parquet(path: Path, users: list[str], scores: np.ndarray, ids: np.ndarray, item_raw_ids: list[str]) -> int:
    keep = np.isfinite(scores)
    ranks = np.cumsum(keep, axis=1)
    rows, columns = np.nonzero(keep)
    table = pa.table({
        "user": pa.array([users[r] for r in rows], type=pa.string()),
        "rank": pa.array(ranks[rows, columns], type=pa.int32()),
        "item": pa.array([item_raw_ids[i - 1] for i in ids[rows, columns]], type=pa.string()),
        "score": pa.array(scores[rows, columns], type=pa.float32()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table.num_rows


def _cmd_recommend(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    if args.evaluate and args.split is None:
        raise ValueError("--evaluate needs --split valid or test: rows whose held-out target can be ranked")
    if args.evaluate and args.index is not None:
        raise ValueError("--evaluate ranks every item to find each target's rank; it cannot go through --index (drop one)")
    record = RunRecord.read(args.run)
    train = record.train
    # The evaluator's settings, so that --evaluate computes what training computed.
    accelerator = make_accelerator(train.get("mixed_precision", "no") if args.evaluate else "no", cpu=args.cpu)
    batch_size = args.batch_size or int(train.get("eval_batch_size") or 256)
    recommender = load(
        args.run, args.domain, args.data_dir, device=accelerator.device, with_added_items=not args.evaluate, batch_size=batch_size,
        retrieval="exact" if args.index is None else "index", index_dir=args.index or None, candidates=args.candidates,
    )
    mask_history = bool(train.get("mask_history", False))
    exclude_seen = args.exclude_seen if args.exclude_seen is not None else (mask_history if args.evaluate else True)
    block_size = int(train.get("eval_block_size") or 65536)

    if args.split is not None:
        examples = recommender.domain.splits[args.split]
        user_ids = recommender.user_raw_ids()
        labels = [user_ids[u] for u in examples.user_id]
        histories = [examples.history(r) for r in range(len(examples))]
    elif args.users is not None:
        labels, histories = read_users(Path(args.users), recommender)
        examples = Examples.from_lists(np.zeros(len(histories), np.int64), histories, np.zeros(len(histories), np.int64))
    else:
        labels = recommender.user_raw_ids()
        histories = [recommender.user_sequence(u) for u in range(len(labels))]
        examples = Examples.from_lists(np.zeros(len(histories), np.int64), histories, np.zeros(len(histories), np.int64))
    k = min(args.k, recommender.num_items)
    loader = accelerator.prepare(ranking_loader(examples, batch_size, recommender.max_len))
    model = recommender.model
    gathered = {"rows": [], "scores": [], "ids": [], "ranks": []}
    for batch in tqdm(loader, desc=f"recommend {recommender.domain.name}", unit="batch", disable=args.quiet or not accelerator.is_local_main_process):
        rows = batch["row"].cpu().numpy()
        exclude = padded_ids([histories[r] for r in rows], accelerator.device) if exclude_seen else None
        with torch.no_grad(), accelerator.autocast():
            out = rank_batch(model, batch, recommender.num_items, k, block_size, exclude=exclude, mask_history=exclude_seen if args.evaluate else None,
                             index=recommender.index)
        parts = (batch["row"], out["scores"], out["ids"], out.get("ranks", batch["row"]))
        for key, value in zip(("rows", "scores", "ids", "ranks"), accelerator.gather_for_metrics(parts)):
            gathered[key].append(value.cpu())
    if accelerator.is_main_process:
        rows = torch.cat(gathered["rows"]).numpy()
        order = np.argsort(rows, kind="stable")
        scores, ids = torch.cat(gathered["scores"]).numpy()[order], torch.cat(gathered["ids"]).numpy()[order]
        if sorted(rows.tolist()) != list(range(len(labels))):
            raise RuntimeError(f"gathered {len(rows)} rows for {len(labels)} histories: a row was scored twice or skipped")
        written = _write_parquet(Path(args.output), labels, scores, ids, recommender.item_raw_ids)
        how = "" if recommender.index is None else f", candidates from {recommender.index_dir}"
        print(f"{written:,} recommendations for {len(labels):,} users ({recommender.describe()['model']}, k={k}{how}) written to {args.output}")
        if args.evaluate:
            code = _report(args, record, torch.cat(gathered["ranks"]).numpy()[order], exclude_seen, mask_history, accelerator.num_processes)
            finish_accelerator(accelerator)
            return code
    finish_accelerator(accelerator)
    return 0


def _report(args: argparse.Namespace, record: RunRecord, ranks: np.ndarray, exclude_seen: bool, mask_history: bool, processes: int) -> int:
    """Print the metrics; fail if, under the run's own protocol, they differ from metrics.json."""
    metrics = metrics_from_ranks(ranks)
    recorded = record.metrics.get(args.split) or {}
    common = sorted(set(metrics) & set(recorded))
    difference = max((abs(metrics[m] - recorded[m]) for m in common), default=None)
    same_protocol = exclude_seen == mask_history
    report = {
        "split": args.split, "users": int(len(ranks)), "processes": processes, "metrics": metrics, "metrics_json": recorded or None,
        "largest_difference": difference, "exclude_seen": exclude_seen,
    }
    print(json.dumps(report, indent=2))
    if difference is not None and same_protocol and difference > REPRODUCTION_TOLERANCE:
        print(f"error: the recomputed {args.split} metrics differ from {record.run_dir / 'metrics.json'} by {difference:.3g} (> {REPRODUCTION_TOLERANCE})")
        return 1
    if difference is not None and not same_protocol:
        print(f"note: --{'' if exclude_seen else 'no-'}exclude-seen differs from the run's train.mask_history={mask_history}, so metrics.json is not comparable")
    return 0


def _cmd_add_items(args: argparse.Namespace) -> int:
    items = added_items.read_items_file(args.items)
    device = "cpu" if args.cpu else None
    recommender = load(args.run, args.domain, args.data_dir, device=device)
    refusal = recommender.new_items_refusal()
    if refusal is not None:
        raise ValueError(f"{args.run}: cannot add items: {refusal}")
    # A stored index must follow the catalogue: a current one takes the new items, a stale one
    # (built before an earlier change) is rebuilt afterwards with the settings it had.
    stored = Path(args.run) / retrieval.INDEX_DIR
    rebuild = None
    if (stored / retrieval.MANIFEST).is_file():
        try:
            recommender.use_index(stored)
        except StaleIndexError:
            rebuild = retrieval.read_settings(stored) or IndexSettings()
    added = recommender.add_items(items, base_dir=Path(args.items).parent, image_dir=args.image_dir, progress=not args.quiet)
    print(
        f"added {len(added)} item(s) ({', '.join(added[:5])}{' ...' if len(added) > 5 else ''}); {recommender.num_items:,} items can be "
        f"ranked, {recommender.num_added} of them added; stored in {Path(args.run) / 'added_items'}"
    )
    if rebuild is not None:
        recommender.build_index(rebuild, stored, progress=not args.quiet)
        print(f"the index in {stored} was stale: rebuilt for the {recommender.num_items:,} items")
    elif recommender.index is not None:
        print(f"the index in {stored} now holds the new items too")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    settings = IndexSettings(args.kind, args.exact_up_to, args.hnsw_m, args.ef_construction, args.ef_search, args.candidates)
    recommender = load(args.run, args.domain, args.data_dir, device="cpu" if args.cpu else None)
    output = args.output or recommender.default_index_dir()
    index = recommender.build_index(settings, output, progress=not args.quiet)
    manifest = index.manifest()
    if not manifest["tables"]:
        print(f"{recommender.describe()['model']} needs no index (its scores are the same lookup for everyone); {output} records that")
    for name, table in manifest["tables"].items():
        print(f"{name}: {table['kind']}, {table['indexed_items']:,} items, {table['dim']}-d")
    print(f"index of {recommender.num_items:,} items ({recommender.num_added} added) built in {manifest['built']['seconds']:.1f}s, written to {output}")
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder (config.yaml + best/), or a saved-model folder / Hub id with --domain")
    parser.add_argument("--domain", default=None, help="prepared domain (default: the one the run names)")
    add_data_dir(parser)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``mmseqrec recommend`` and ``mmseqrec add-items``."""
    parser = commands.add_parser(
        "recommend", help="batch recommendations of a trained run, as Parquet (user, rank, item, score)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(parser)
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--users", default=None, help=".txt (raw user ids) or .jsonl ({\"user\", \"history\"}) file")
    who.add_argument("--split", choices=("valid", "test"), default=None, help="the histories of a split's rows")
    parser.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="leave each history's items out (default: on; with --evaluate, the run's train.mask_history)")
    parser.add_argument("--evaluate", action="store_true", help="with --split: also rank the held-out targets and compare with metrics.json")
    parser.add_argument("--batch-size", type=int, default=None, help="histories per batch and process (default: the run's train.eval_batch_size)")
    parser.add_argument("--index", nargs="?", const="", default=None, type=str, metavar="DIR",
                        help="candidates from the stored indexes (mmseqrec index), re-scored exactly (default DIR: RUN/index)")
    parser.add_argument("--candidates", type=int, default=None, help="with --index: items fetched per index and history (default: the index's)")
    add_output(parser, "the Parquet file to write", required=True)
    parser.set_defaults(func=_cmd_recommend)

    index = commands.add_parser(
        "index", help="build nearest-neighbour indexes of a run's item vectors, for --index retrieval",
        description=retrieval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(index)
    defaults = IndexSettings()
    index.add_argument("--kind", choices=retrieval.KINDS, default=defaults.kind,
                       help=f"flat (exact), hnsw, or auto: flat up to --exact-up-to items, hnsw above (default {defaults.kind})")
    index.add_argument("--exact-up-to", type=int, default=defaults.exact_up_to, help=f"the auto threshold, items per table (default {defaults.exact_up_to:,})")
    index.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m, help=f"HNSW links per node (default {defaults.hnsw_m})")
    index.add_argument("--ef-construction", type=int, default=defaults.ef_construction, help=f"HNSW build breadth (default {defaults.ef_construction})")
    index.add_argument("--ef-search", type=int, default=defaults.ef_search, help=f"HNSW search breadth (default {defaults.ef_search})")
    index.add_argument("--candidates", type=int, default=defaults.candidates,
                       help=f"items fetched per index and history before re-scoring (default {defaults.candidates})")
    add_output(index, "the index folder to write (default: RUN/index, where --index and mmseqrec.load look)")
    index.set_defaults(func=_cmd_index)

    add = commands.add_parser(
        "add-items", help="make new items rankable by an inductive content model, without retraining",
        description=added_items.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(add)
    add.add_argument("--items", required=True, type=Path, help=".jsonl or .csv file: id, text, image (path or URL)")
    add.add_argument("--image-dir", type=Path, default=None, help="folder of images named by raw id (e.g. NEW1.jpg)")
    add.set_defaults(func=_cmd_add_items)
