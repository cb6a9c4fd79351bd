"""Resumable HTTP downloads for raw data files.

``download`` writes to ``<file>.part`` and renames it into place only when the transfer is
complete (and its SHA-256 matches, when one is known). An interrupted download resumes from
the bytes already in ``<file>.part`` with an HTTP ``Range`` request; a server that ignores the
range is answered by starting over. Only the standard library is used (``urllib``).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mmseqrec.data.format import sha256_of

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


class DownloadError(OSError):
    """A file could not be downloaded (no network, a server error, or a checksum mismatch)."""


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _range_start(response) -> int | None:
    """The first byte of a ``206`` answer, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("Content-Range", "")
    if not value.startswith("bytes "):
        return None
    first = value[len("bytes ") :].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    opener: Callable | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download.

    Args:
        url: where to fetch from.
        dest: the final path; the transfer goes to ``dest.part`` first.
        sha256: the expected hex digest, checked before the rename (a mismatch deletes the part
            file so that the next attempt starts clean).
        opener: a stand-in for ``urllib.request.urlopen`` (tests); None uses urlopen.
        progress: show a tqdm bar.
    Raises:
        DownloadError: naming the URL and what went wrong.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "mmseqrec"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = (opener or urllib.request.urlopen)(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            # "Range not satisfiable": complete if the server's size is what we have, else stale.
            total = (err.headers.get("Content-Range", "") if err.headers else "").rpartition("/")[2]
            if total.isdigit() and int(total) == start:
                return _finish(part, dest, url, sha256)
            part.unlink()
            return download(url, dest, sha256=sha256, opener=opener, progress=progress)
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"{url}: {reason}") from err

    with response:
        status = getattr(response, "status", 200)
        if start and status == 206 and _range_start(response) == start:
            mode = "ab"
        else:  # a fresh download, or a server that ignored (or mangled) the range: start over
            start, mode = 0, "wb"
        remaining = _content_length(response)
        total = start + remaining if remaining is not None else None
        with open(part, mode) as handle, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress
        ) as bar:
            try:
                while block := response.read(CHUNK_BYTES):
                    handle.write(block)
                    bar.update(len(block))
            except OSError as err:
                raise DownloadError(
                    f"{url}: the transfer broke off after {part.stat().st_size:,} bytes ({err}); "
                    f"run the command again to resume from {part}"
                ) from err
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size:,} of {total:,} bytes; run the command again to resume from {part}")
    return _finish(part, dest, url, sha256)


def _finish(part: Path, dest: Path, url: str, sha256: str | None) -> Path:
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise DownloadError(f"{url}: SHA-256 {actual} does not match the expected {sha256}; the partial file was deleted")
    os.replace(part, dest)
    return dest


def download_first(urls: Sequence[str], dest: str | os.PathLike, sha256: str | None = None, **kwargs) -> Path:
    """Try the mirrors in ``urls`` in order; the first that works wins."""
    failures = []
    for url in urls:
        try:
            return download(url, dest, sha256=sha256, **kwargs)
        except DownloadError as err:
            failures.append(str(err))
    raise DownloadError("; ".join(failures) or "no URL to download from")
