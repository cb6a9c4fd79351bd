"""``mmseqrec bench``: speed and memory of training, evaluation, interest discovery, feature
extraction and data loading, on synthetic domains at the sizes of the real ones.

    mmseqrec bench --quick                       # Scientific scale, few steps
    mmseqrec bench --scales scientific,office    # more steps, larger clusterings and extractions
    mmseqrec bench --scales fhckm --parts load,train

Every measurement runs in a fresh subprocess (``measure.run_measurement``) so that its peak
resident memory is its own; the synthetic data is generated first, once per scale, into
``<data-dir>/bench-scale<S>/`` (``plan.SCALES``). The report (Markdown, ``report.render``) and
the raw results (JSON) are written to ``--output``; a measurement that fails or runs past
``--timeout`` is listed as not measured, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from mmseqrec.bench.measure import MeasurementError, machine, run_measurement
from mmseqrec.bench.plan import SCALES, make_plan
from mmseqrec.bench.report import render
from mmseqrec.options import add_data_dir

PARTS = ("train", "evaluate", "interest", "extract", "load")


def prepare_scales(data_dir: Path, scales: list[str], log) -> None:
    """Generate the synthetic domains of ``scales`` (kept if already there)."""
    from mmseqrec.data.sources.synthetic import SyntheticConfig, prepare

    for name in scales:
        scale = SCALES[name]
        start = time.perf_counter()
        prepare(data_dir / scale.data_subdir(), SyntheticConfig(scale=scale.scale), domains=list(scale.domains), log=log)
        log(f"{name}: data ready in {time.perf_counter() - start:.0f} s")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def run(args: argparse.Namespace) -> int:
    scales = ["scientific"] if args.quick and not args.scales else [s.strip() for s in (args.scales or "scientific,office,fhckm").split(",") if s.strip()]
    unknown = [s for s in scales if s not in SCALES]
    if unknown:
        raise ValueError(f"--scales: unknown {', '.join(unknown)}; choose from {', '.join(SCALES)}")
    parts = [p.strip() for p in (args.parts or ",".join(PARTS)).split(",") if p.strip()]
    if set(parts) - set(PARTS):
        raise ValueError(f"--parts: unknown {', '.join(sorted(set(parts) - set(PARTS)))}; choose from {', '.join(PARTS)}")
    from mmseqrec.data.loading import default_data_dir

    data_dir = Path(args.data_dir or default_data_dir())
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    plan = [m for m in make_plan(args.quick, scales) if m.part in parts and (models is None or m.params.get("model", models[0]) in models)]
    started, t0 = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    say = print if not args.quiet else (lambda message: None)
    needed = sorted({m.scale for m in plan if m.scale})
    prepare_scales(data_dir, needed, say)
    results = []
    for number, item in enumerate(plan, 1):
        params = dict(item.params)
        if item.scale:
            params["data_dir"] = str(data_dir / SCALES[item.scale].data_subdir())
        try:
            result = run_measurement(item.part, params, args.threads, timeout=args.timeout)
        except MeasurementError as err:
            result = {"part": item.part, "params": item.params, "error": str(err)[:300]}
        results.append({**result, "scale": item.scale})
        say(f"[{number}/{len(plan)}] {item.part} {json.dumps(item.params)}: "
            + (result["error"] if "error" in result else f"done ({result['wall_seconds']:.0f} s, load {result['load_before']:.2f})"))
    record = {"command": args.command, "started": started, "seconds": time.perf_counter() - t0, "threads": args.threads,
              "quick": args.quick, "scales": scales, "machine": machine(), "results": results}
    text = render(record)
    output = Path(args.output)
    _write_atomically(output / "bench.json", json.dumps(record, indent=2) + "\n")
    _write_atomically(output / "bench.md", text + "\n")
    print(text)
    print(f"written to {output}/bench.md and bench.json")
    return 0


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mmseqrec bench``."""
    parser = commands.add_parser("bench", help="measure speed and memory on synthetic data at real sizes",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Scientific scale, few steps, small clusterings and extractions (about 5 min of CPU time on the 2-core development machine)")
    parser.add_argument("--scales", default=None, help=f"comma-separated, from {', '.join(SCALES)} (default: all; --quick: scientific)")
    parser.add_argument("--parts", default=None, help=f"comma-separated, from {', '.join(PARTS)} (default: all)")
    parser.add_argument("--models", default=None, help="comma-separated: only the training and evaluation measurements of these models")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every measurement (default 1)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which one measurement is given up")
    add_data_dir(parser, "write")
    parser.add_argument("--output", default="checkpoints/bench", help="folder for bench.md and bench.json (default checkpoints/bench)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)
    return parser

