"""``mmseqrec serve``: a trained run's recommendations over HTTP (Starlette on uvicorn).

    mmseqrec serve --run checkpoints/demo/syn-Office/sasrec-seed2020 --port 8000
    curl -s localhost:8000/recommend -H 'content-type: application/json' -d '{"history": ["<raw id>"], "k": 5}'

Routes, JSON in and out:

    GET  /health     {"status": "ok"}
    GET  /metadata   model, domain, item and user counts, limits, batching, versions
    POST /recommend  {"history": [raw item ids, oldest first], "k": 10, "exclude_seen": true}
                     -> {"items": [raw ids, best first], "scores": [...]}
    POST /items      {"items": [{"id": ..., "text": ..., "image": ...}]}  (as ``mmseqrec add-items``)
                     -> {"added": [raw ids], "items": catalogue size}

Every error is a JSON object ``{"error": message, ...}``, and bad input is always a 4xx: 400
malformed JSON, 404 unknown route, 405 wrong method, 413 a body over ``--max-body`` bytes, 415 a
content type other than ``application/json``, 422 a missing or unknown field, a wrong type, ``k``
not an integer in 1..catalogue size, a history empty or longer than ``--max-history``, raw ids
the catalogue lacks (listed in ``unknown_items``); 409 ``/items`` on a model that cannot take new
items (the reason says why). An unexpected failure is a 500 with a message, and the server keeps
serving.

**Micro-batching.** Requests are not scored one by one: a single worker collects them from a
queue, starting with the first that arrives, taking at once every request already waiting, and
waiting for more until ``--max-batch`` requests are there or ``--max-wait-ms`` milliseconds have
passed since the first; then it scores them as one batch on the
device (a forward pass and a full-catalogue ranking for all of them, with the largest ``k``
asked, each answer cut to its own ``k``), in a worker thread so that the server keeps accepting
requests meanwhile. Under load a batch fills while the previous one is being scored; alone, a
request waits at most ``--max-wait-ms``. Adding items runs on the same worker, so no request is
scored while the catalogue grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import starlette
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import mmseqrec
from mmseqrec.added_items import parse_items
from mmseqrec.inference import DomainRecommender, load
from mmseqrec.models.base import NewItemsUnsupported
from mmseqrec.options import add_data_dir

DEFAULT_MAX_HISTORY = 1000
DEFAULT_MAX_BODY = 1 << 20
log = logging.getLogger("mmseqrec.serve")


class ApiError(Exception):
    """A request the service refuses: its HTTP status, message and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


# -------------------------------------------------------------------------------------------
# Micro-batching
# -------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    history: np.ndarray
    k: int
    exclude_seen: bool
    future: asyncio.Future


class MicroBatcher:
    """Scores queued requests together (see the module docstring); one worker thread does all
    the model work, so scoring and adding items never overlap."""

    def __init__(self, recommender: DomainRecommender, max_batch: int = 64, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("--max-batch must be at least 1 and --max-wait-ms at least 0")
        self.recommender = recommender
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmseqrec-model")
        self.queue: asyncio.Queue[_Pending] | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.requests = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def recommend(self, history: np.ndarray, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of one history, scored with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(history, k, exclude_seen, future))
        return await future

    async def run_exclusively(self, function, *args):
        """Run ``function(*args)`` on the model's worker thread (between batches)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _collect(self) -> list[_Pending]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            try:  # whatever is already waiting joins at once, wait or no wait
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [p for p in batch if not p.future.done()]  # a client that went away was cancelled

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            k = max(p.k for p in batch)
            try:
                scores, ids = await self.run_exclusively(
                    self.recommender.top_ids, [p.history for p in batch], k, [p.exclude_seen for p in batch]
                )
            except Exception as err:  # noqa: BLE001 - every waiting request must get an answer
                log.exception("scoring a batch of %d requests failed", len(batch))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            self.batches += 1
            self.requests += len(batch)
            for row, p in enumerate(batch):
                if not p.future.done():
                    p.future.set_result((scores[row, : p.k], ids[row, : p.k]))


# -------------------------------------------------------------------------------------------
# Reading requests
# -------------------------------------------------------------------------------------------
async def _json_body(request: Request, max_body: int) -> dict:
    """The request's JSON object, or an ``ApiError`` saying what is wrong with it."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, f"expected a JSON body with content-type application/json, got {content_type or 'no content type'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
        raise ApiError(413 if declared.isdigit() else 400, f"the body may have at most {max_body:,} bytes (content-length {declared})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ApiError(413, f"the body may have at most {max_body:,} bytes")
        chunks.append(chunk)

    def no_constant(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(b"".join(chunks).decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"malformed JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _check_fields(body: dict, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    missing = [f for f in required if f not in body]
    if missing:
        raise ApiError(422, f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}; expected {', '.join(required + optional)}")


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


# -------------------------------------------------------------------------------------------
# The application
# -------------------------------------------------------------------------------------------
def create_app(recommender: DomainRecommender, max_batch: int = 64, max_wait_ms: float = 5.0, max_history: int = DEFAULT_MAX_HISTORY,
               max_body: int = DEFAULT_MAX_BODY, image_dir: Path | None = None) -> Starlette:
    """The ASGI application serving ``recommender`` (see the module docstring)."""
    batcher = MicroBatcher(recommender, max_batch, max_wait_ms)
    started = time.time()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({
            **recommender.describe(),
            "limits": {"max_history": max_history, "max_k": recommender.num_items, "max_body_bytes": max_body},
            "batching": {
                "max_batch": max_batch, "max_wait_ms": max_wait_ms, "batches": batcher.batches, "requests": batcher.requests,
                "mean_batch": round(batcher.requests / batcher.batches, 2) if batcher.batches else None,
            },
            "device": str(recommender.device),
            "uptime_seconds": round(time.time() - started, 1),
            "versions": {
                "mmseqrec": mmseqrec.__version__, "torch": torch.__version__, "python": platform.python_version(),
                "starlette": starlette.__version__, "uvicorn": uvicorn.__version__,
            },
        })

    async def recommend(request: Request) -> JSONResponse:
        body = await _json_body(request, max_body)
        _check_fields(body, ("history",), ("k", "exclude_seen"))
        history, k, exclude_seen = body["history"], body.get("k", 10), body.get("exclude_seen", True)
        if not isinstance(history, list):
            raise ApiError(422, f"'history' must be an array of raw item ids (strings), got {_type_name(history)}")
        if not history:
            raise ApiError(422, "'history' is empty: give at least one raw item id")
        if len(history) > max_history:
            raise ApiError(422, f"'history' has {len(history):,} items; the limit is {max_history:,} (the model reads the last {recommender.max_len})")
        wrong = [i for i, raw in enumerate(history) if not isinstance(raw, str)]
        if wrong:
            raise ApiError(422, f"'history' must hold raw item ids as strings; element {wrong[0]} is {_type_name(history[wrong[0]])}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= recommender.num_items:
            raise ApiError(422, f"'k' must be an integer from 1 to {recommender.num_items:,} (the catalogue), got {json.dumps(k)}")
        if not isinstance(exclude_seen, bool):
            raise ApiError(422, f"'exclude_seen' must be true or false, got {_type_name(exclude_seen)}")
        ids = [recommender.item_id(raw) for raw in history]
        unknown = list(dict.fromkeys(raw for raw, item in zip(history, ids) if item is None))
        if unknown:
            raise ApiError(422, f"unknown item id(s): {', '.join(map(repr, unknown[:20]))}{' ...' if len(unknown) > 20 else ''}", unknown_items=unknown)
        scores, top = await batcher.recommend(np.asarray(ids, dtype=np.int64), k, exclude_seen)
        keep = np.isfinite(scores)
        return JSONResponse({"items": [recommender.item_raw_ids[i - 1] for i in top[keep]], "scores": scores[keep].astype(float).tolist()})

    async def add(request: Request) -> JSONResponse:
        body = await _json_body(request, max_body)
        _check_fields(body, ("items",), ())
        try:
            items = parse_items(body["items"], "request body")
        except ValueError as err:
            raise ApiError(422, str(err)) from None
        refusal = recommender.new_items_refusal()
        if refusal is not None:
            raise ApiError(409, f"this model cannot take new items: {refusal}")
        try:
            added = await batcher.run_exclusively(recommender.add_items, items, image_dir, image_dir)
        except NewItemsUnsupported as err:
            raise ApiError(409, f"this model cannot take new items: {err}") from None
        except ValueError as err:
            raise ApiError(422, str(err)) from None
        return JSONResponse({"added": added, "items": recommender.num_items})

    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message, **err.extra}, status_code=err.status)

    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        messages = {404: f"no route {request.url.path}; routes: GET /health, GET /metadata, POST /recommend, POST /items",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": messages.get(err.status_code, str(err.detail))}, status_code=err.status_code, headers=err.headers)

    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await batcher.start()
        yield
        await batcher.stop()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metadata", metadata, methods=["GET"]),
            Route("/recommend", recommend, methods=["POST"]),
            Route("/items", add, methods=["POST"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------
def _cmd_serve(args: argparse.Namespace) -> int:
    recommender = load(args.run, args.domain, args.data_dir, device="cpu" if args.cpu else None,
                       retrieval="exact" if args.index is None else "index", index_dir=args.index or None)
    info = recommender.describe()
    print(f"serving {info['model']} on {info['domain']} ({info['items']:,} items) at http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    app = create_app(recommender, args.max_batch, args.max_wait_ms, args.max_history, args.max_body, args.image_dir)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``mmseqrec serve``."""
    parser = commands.add_parser(
        "serve", help="serve a trained run's recommendations over HTTP (JSON)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run folder (config.yaml + best/), or a saved-model folder / Hub id with --domain")
    parser.add_argument("--domain", default=None, help="prepared domain (default: the one the run names)")
    add_data_dir(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-batch", type=int, default=64, help="requests scored together at most (default 64)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default 5 ms)")
    parser.add_argument("--max-history", type=int, default=DEFAULT_MAX_HISTORY, help=f"longest history accepted (default {DEFAULT_MAX_HISTORY})")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help=f"largest request body in bytes (default {DEFAULT_MAX_BODY:,})")
    parser.add_argument("--image-dir", type=Path, default=None, help="POST /items: folder of images named by raw id, and of relative image paths")
    parser.add_argument("--cpu", action="store_true", help="score on the CPU even if a GPU is present")
    parser.add_argument("--index", nargs="?", const="", default=None, metavar="DIR",
                        help="rank through the stored indexes (mmseqrec index; default DIR: RUN/index); POST /items extends them")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="uvicorn's log level")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False, help="log every request (off: it costs time under load)")
    parser.set_defaults(func=_cmd_serve)
