"""Run one measurement in a fresh Python process and read back its result and peak memory.

A measurement is a function ``measure(**params) -> dict`` in one of the ``mmseqrec.bench``
modules. Each runs in its own subprocess (``python -m mmseqrec.bench.child``), so the peak
resident memory that the kernel reports for that process (``ru_maxrss``) is the measurement's
own, data loading included, and nothing one measurement allocates inflates the next. The child
prints its result as the last line, ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULT_PREFIX = "RESULT "


class MeasurementError(RuntimeError):
    """A measurement's process failed or timed out; the message says how (and its last output line)."""


def run_measurement(part: str, params: dict, threads: int, timeout: float | None = None) -> dict:
    """``part``'s ``measure(**params)`` in a subprocess with ``threads`` intra-op threads: its
    result, which carries ``peak_rss_mb`` (the child's peak resident memory, reported by the
    child itself), plus ``wall_seconds`` (process start included) and the 1-minute load
    average before and after."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "mmseqrec.bench.child", part, json.dumps(params), str(threads)]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
        raise MeasurementError(f"no result within {timeout:.0f} s")
    wall = time.perf_counter() - start
    lines = output.strip().splitlines()
    results = [line for line in lines if line.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not results:
        why = "killed by SIGKILL (most likely the kernel's out-of-memory killer)" if child.returncode == -9 else f"exit {child.returncode}"
        raise MeasurementError(f"{why}: {lines[-1] if lines else 'no output'}")
    result = json.loads(results[-1][len(RESULT_PREFIX):])
    return {**result, "wall_seconds": wall, "load_before": load_before, "load_after": os.getloadavg()[0]}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    """What the report says about where it ran."""
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = None
    try:
        with open("/proc/meminfo") as handle:
            memory = round(int(handle.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
