"""Load test of ``mmseqrec serve``: latency and throughput, then a flood of bad requests.

    python benchmarks/serve_load.py --run checkpoints/bench/sasrec-seed2020 --data-dir /tmp/rec-data --requests 1000

Starts the server on 127.0.0.1 (a free port) in a subprocess, sends ``--requests`` valid
recommendation requests (histories of the domain's test rows, k=10) one at a time and then from
32 concurrent clients (keep-alive connections), and reports the median and 99th-percentile
latency and the requests per second of each. Then it sends ``--malformed`` bad requests, cycling
through ten kinds (``mmseqrec.serve_check.malformed_requests``), checks that every answer is the
expected 4xx with a JSON error message, and that /health still answers. Everything is bounded:
``--time-limit`` seconds in all (phases that would start later are skipped and said so), and
the server is stopped at the end. Exit status 1 if a bad request was not refused as it must be
or the server stopped answering. Results go to stdout as a Markdown table (for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmseqrec.data.loading import load_domain  # noqa: E402
from mmseqrec.inference import RunRecord  # noqa: E402
from mmseqrec.serve_check import Client, ServerProcess, check_refused, malformed_requests  # noqa: E402

MALFORMED_KINDS = (
    "malformed JSON", "wrong content type", "missing history", "history not a list", "empty history",
    "history over the limit", "unknown item ids", "k = 0", "k not an integer", "unknown route",
)
CONCURRENCY = (1, 32)


def histories_of(run: str, domain: str | None, data_dir: str | None, count: int, seed: int) -> list[list[str]]:
    """Raw-id histories of ``count`` test rows (drawn with replacement, seeded)."""
    loaded = load_domain(domain or RunRecord.read(run).domain_name, data_dir=data_dir)
    test = loaded.splits["test"]
    rows = np.random.default_rng(seed).integers(0, len(test), size=count)
    return [[loaded.item_raw_id[i - 1] for i in test.history(r)] for r in rows]


def timed_requests(port: int, histories: list[list[str]], concurrency: int, deadline: float) -> dict:
    """Send one request per history from ``concurrency`` clients; latencies and throughput."""
    local = threading.local()
    errors = []

    def one(history: list[str]) -> float | None:
        if time.monotonic() > deadline:
            return None
        if not hasattr(local, "client"):
            local.client = Client(port)
        started = time.perf_counter()
        status, body, raw = local.client.call("POST", "/recommend", {"history": history, "k": 10})
        elapsed = time.perf_counter() - started
        if status != 200 or len(body["items"]) != 10:
            errors.append(f"status {status}: {raw[:200]!r}")
        return elapsed

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = [x for x in pool.map(one, histories) if x is not None]
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "per_second": len(latencies) / wall if wall > 0 else float("nan"),
        "complete": len(latencies) == len(histories),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder to serve")
    parser.add_argument("--domain", default=None, help="prepared domain (default: the run's)")
    parser.add_argument("--data-dir", default=None, help="where prepared domains live")
    parser.add_argument("--requests", type=int, default=1000, help="valid requests per concurrency level (default 1000)")
    parser.add_argument("--malformed", type=int, default=1000, help="bad requests, cycling through ten kinds (default 1000)")
    parser.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for everything, server start included (default 900)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=None, help="keep the server's output here")
    args = parser.parse_args(argv)

    deadline = time.monotonic() + args.time_limit
    histories = histories_of(args.run, args.domain, args.data_dir, args.requests, args.seed)
    server_args = ["--run", args.run, "--cpu", "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    server_args += ["--domain", args.domain] if args.domain else []
    server_args += ["--data-dir", args.data_dir] if args.data_dir else []
    problems: list[str] = []
    with ServerProcess(server_args, startup_seconds=min(300.0, args.time_limit), log=args.log) as server:
        client = Client(server.port)
        meta = client.call("GET", "/metadata")[1]
        print(f"serving {meta['model']} on {meta['domain']}: {meta['items']:,} items, device {meta['device']}, "
              f"max batch {args.max_batch}, max wait {args.max_wait_ms} ms; torch {meta['versions']['torch']}")
        timed_requests(server.port, histories[: min(50, len(histories))], 1, deadline)  # warm-up, not reported
        results = []
        for concurrency in CONCURRENCY:
            before = client.call("GET", "/metadata")[1]["batching"]
            result = timed_requests(server.port, histories, concurrency, deadline)
            after = client.call("GET", "/metadata")[1]["batching"]
            batches = after["batches"] - before["batches"]
            result["mean_batch"] = (after["requests"] - before["requests"]) / batches if batches else float("nan")
            results.append(result)
            if result["errors"]:
                problems.append(f"concurrency {concurrency}: {result['errors']} failed requests, e.g. {result['first_error']}")

        kinds = {bad.kind: bad for bad in malformed_requests(histories[0][0], meta["limits"]["max_history"], meta["limits"]["max_body_bytes"])}
        chosen = [kinds[kind] for kind in MALFORMED_KINDS]
        sent = refused = 0
        started = time.perf_counter()
        for index in range(args.malformed):
            if time.monotonic() > deadline:
                problems.append(f"time limit: only {sent} of {args.malformed} bad requests sent")
                break
            problem = check_refused(client, chosen[index % len(chosen)])
            sent += 1
            if problem is None:
                refused += 1
            elif len(problems) < 20:
                problems.append(problem)
        malformed_seconds = time.perf_counter() - started
        health = client.call("GET", "/health")
        if health[0] != 200:
            problems.append(f"/health answered {health[0]} after the bad requests")
        after = client.call("POST", "/recommend", {"history": histories[0], "k": 10})
        if after[0] != 200:
            problems.append(f"a valid request after the bad ones got {after[0]}")

    print()
    print("| clients | requests | p50 latency (ms) | p99 latency (ms) | requests/s | requests per scored batch |")
    print("|---|---|---|---|---|---|")
    for r in results:
        note = "" if r["complete"] else " (time limit)"
        print(f"| {r['concurrency']} | {r['requests']:,}{note} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['per_second']:.1f} | {r['mean_batch']:.1f} |")
    print()
    print(f"bad requests: {sent:,} sent ({len(chosen)} kinds: {', '.join(MALFORMED_KINDS)}), {refused:,} refused with the "
          f"expected 4xx and a JSON message, in {malformed_seconds:.1f} s; /health afterwards: {health[0]}")
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
