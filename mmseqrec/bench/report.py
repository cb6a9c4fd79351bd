"""The Markdown report of a ``mmseqrec bench`` run."""

from __future__ import annotations


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(_f(c) for c in row) + " |" for row in rows)]


def render(run: dict) -> str:
    m = run["machine"]
    lines = [
        f"Command: `{run['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPU: {m['gpu'] or 'none'}; "
        f"Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}; {run['threads']} thread(s) per measurement; "
        f"started {run['started']}, {run['seconds']:.0f} s in all.",
        "",
    ]
    done = [r for r in run["results"] if "error" not in r]
    train = [r for r in done if r["part"] == "train"]
    if train:
        lines += ["Training throughput (random weights, default configuration of each stage):", ""]
        lines += _table(
            ["model", "stage", "domain (users / items / train rows)", "batch", "length-grouped", "timed steps", "rows/s", "peak RSS MB", "load"],
            [[r["model"], r["stage"], f"{r['domain']} ({_f(r.get('users'), 0)} / {r['items']:,} / {r['train_rows']:,})", r["batch_size"],
              "yes" if r["group_by_length"] else "no", r["timed_steps"], r["rows_per_second"], r["peak_rss_mb"], f"{r['load_before']:.2f}"]
             for r in train],
        ) + [""]
    evals = [r for r in done if r["part"] == "evaluate"]
    if evals:
        lines += ["Full-ranking evaluation (test split, every item ranked for every user):", ""]
        lines += _table(["model", "domain", "items", "users", "seconds", "users/s", "peak RSS MB", "load"],
                        [[r["model"], r["domain"], r["items"], r["users"], r["seconds"], r["users_per_second"], r["peak_rss_mb"],
                          f"{r['load_before']:.2f}"] for r in evals]) + [""]
    interest = [r for r in done if r["part"] == "interest"]
    if interest:
        lines += ["Interest discovery (300-d synthetic tokens, K = 0.02 N, DPC-KNN k = 10):", ""]
        lines += _table(["algorithm", "tokens", "K", "seconds", "peak RSS MB", "load"],
                        [[r["algorithm"], r["tokens"], r["clusters"], r["seconds"], r["peak_rss_mb"], f"{r['load_before']:.2f}"]
                         for r in interest]) + [""]
    for r in (r for r in done if r["part"] == "extract"):
        lines += [f"Feature extraction ({r['encoder']}, {r['device']}, {r['precision']}, batch {r['batch_size']}): "
                  f"{r['texts_per_second']:.1f} texts/s ({r['texts']} texts), {r['images_per_second']:.1f} images/s "
                  f"({r['images']} images, preprocessing included); peak RSS {r['peak_rss_mb']:,.0f} MB; load {r['load_before']:.2f}.", ""]
    loads = [r for r in done if r["part"] == "load"]
    if loads:
        lines += ["Data loading (`load_mixture`):", ""]
        lines += _table(["domains", "users", "items", "train rows", "seconds", "data held MB", "peak RSS MB", "peak growth / data"],
                        [[", ".join(r["domains"]), r["users"], r["items"], r["train_rows"], r["seconds"], r["data_mb"], r["peak_rss_mb"],
                          f"{r['peak_over_data']:.2f}x"] for r in loads]) + [""]
    failed = [r for r in run["results"] if "error" in r]
    if failed:
        lines += ["Not measured:", ""] + [f"- {r['part']} {r['params']}: {r['error']}" for r in failed] + [""]
    return "\n".join(lines)
