"""Where an item's image comes from, and turning it into an RGB picture.

Two sources, tried in this order for every item:
1. ``--image-dir DIR``: a file in DIR whose name (without extension) is the item's raw id (ASIN),
   e.g. ``DIR/B00004Z5D1.jpg``.
2. The items table's ``image`` column: an ``http(s)://`` or ``file://`` URL (downloaded unless
   offline; with ``--image-cache`` the downloaded bytes are kept there, named by raw id, and read
   back on the next run), or a file path (absolute, or relative to the domain folder).

An image that cannot be had (no file, no reference, a failed download, bytes that do not decode)
raises ``ImageUnavailable`` with the reason; the extractor records the item as skipped and its
mask as False. Nothing is ever replaced by a blank picture.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
URL_SCHEMES = ("http://", "https://", "file://")


class ImageUnavailable(Exception):
    """The item has no usable image; the message is the reason recorded in the manifest."""


class ImageSource:
    """Finds and decodes item images.

    Args:
        domain_folder: the prepared domain (relative image paths are resolved against it).
        image_dir: a folder of files named by item raw id, or None.
        download: fetch ``http(s)`` URLs from the items table (False: such items are skipped as
            "offline").
        cache_dir: keep downloaded bytes here (named by raw id) and reuse them.
        timeout: seconds per download.
    """

    def __init__(
        self,
        domain_folder: Path,
        image_dir: Path | None = None,
        download: bool = True,
        cache_dir: Path | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.domain_folder = Path(domain_folder)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.download = download
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout = timeout
        self._by_stem: dict[str, Path] = {}
        if self.image_dir is not None:
            if not self.image_dir.is_dir():
                raise FileNotFoundError(f"--image-dir {self.image_dir}: not a folder")
            self._by_stem = _index_folder(self.image_dir)
        self._cached: dict[str, Path] = {}
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._cached = _index_folder(self.cache_dir)

    def has_any(self, references: Sequence[str | None]) -> bool:
        """Whether any image could come from anywhere (false means: nothing to extract)."""
        return bool(self._by_stem) or any(references)

    def load(self, raw_id: str, reference: str | None):
        """The item's image as an RGB ``PIL.Image``; raises ``ImageUnavailable`` with the reason."""
        data, origin = self._read_bytes(raw_id, reference)
        return decode_image(data, origin)

    def _read_bytes(self, raw_id: str, reference: str | None) -> tuple[bytes, str]:
        local = self._by_stem.get(raw_id)
        if local is not None:
            return _read_file(local), str(local)
        cached = self._cached.get(raw_id)
        if cached is not None:
            return _read_file(cached), str(cached)
        if not reference:
            where = f" (no file named {raw_id}.* in {self.image_dir})" if self.image_dir is not None else ""
            raise ImageUnavailable(f"missing: no image reference in the items table{where}")
        if reference.startswith(URL_SCHEMES):
            if reference.startswith(("http://", "https://")) and not self.download:
                raise ImageUnavailable(f"offline: not downloaded ({reference})")
            data = self._fetch(reference)
            if self.cache_dir is not None:
                suffix = Path(reference.split("?", 1)[0]).suffix.lower()
                target = self.cache_dir / f"{raw_id}{suffix if suffix in IMAGE_EXTENSIONS else ''}"
                tmp = target.with_name(target.name + f".{os.getpid()}.partial")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            return data, reference
        path = Path(reference)
        if not path.is_absolute():
            path = self.domain_folder / path
        if not path.is_file():
            raise ImageUnavailable(f"missing: {path} does not exist")
        return _read_file(path), str(path)

    def _fetch(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "mmseqrec-extract"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ImageUnavailable(f"download failed: {url}: {getattr(err, 'reason', err)}") from err


def _index_folder(folder: Path) -> dict[str, Path]:
    """raw id -> file for the image files of a folder (the first by name when a stem repeats)."""
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            index.setdefault(path.stem, path)
        elif path.suffix == "":
            index.setdefault(path.name, path)
    return index


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageUnavailable(f"unreadable: {path}: {err}") from err


def decode_image(data: bytes, origin: str):
    """Decode bytes into an RGB picture, fully (a truncated file fails here, not later)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageUnavailable(f"undecodable: {origin} is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError as err:
        raise ImageUnavailable(f"undecodable: {origin}: not an image format Pillow can read") from err
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise ImageUnavailable(f"undecodable: {origin}: {err}") from err
