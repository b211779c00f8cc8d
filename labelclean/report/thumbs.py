"""Thumbnails of a report's images, read from disk once and shared by the page and the review app.

Images are only ever shrunk: a source smaller than the tile (digits, CIFAR) keeps its own
size and the browser enlarges it crisply (``image-rendering: pixelated``), which keeps a
table of CIFAR thumbnails small. Few-colour images are stored as PNG (exact), photos as JPEG.
Unreadable paths are remembered with their reason, never raised: a missing image shows as a
placeholder.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _opened(file: Any, formats: tuple[str, ...]) -> Any:
    """``Image.open`` with Pillow's decompression-bomb warning raised as an error."""
    from PIL import Image

    warnings.simplefilter("error", Image.DecompressionBombWarning)
    return Image.open(file, formats=formats)


class Thumbnails:
    """Thumbnails of ``root / path`` fitting ``size`` pixels; failures' reasons in ``missing``."""

    def __init__(
        self,
        root: Path,
        size: int,
        missing: dict[str, str] | None = None,
        *,
        opener: Callable[[str], bytes] | None = None,
    ) -> None:
        self.root, self.size = root, size
        #: Reads an image's bytes instead of opening ``root / path`` (the review server's
        #: checked reader); an OSError it raises is a missing image.
        self.opener = opener
        self.missing = missing if missing is not None else {}
        self._cache: dict[str, tuple[bytes, str, int, int] | None] = {}

    def image(self, rel: str) -> Any:
        """The image shrunk to fit ``size``, as RGB PIL image, or None (reason in ``missing``)."""
        from PIL import Image

        from labelclean.data.decode import ALLOWED_FORMATS, DEFAULT_MAX_PIXELS, open_image_file

        try:  # opened as the audit opens images: a FIFO swapped in cannot hang the page
            with (
                warnings.catch_warnings(),  # Pillow's bomb warning: a refusal, as in the audit
                (
                    io.BytesIO(self.opener(rel))
                    if self.opener
                    else open_image_file(self.root / rel)
                ) as file,
                _opened(file, ALLOWED_FORMATS) as img,
            ):
                if img.width * img.height > DEFAULT_MAX_PIXELS:
                    # a bomb swapped in after the audit (a small PNG of 150,000,000 pixels
                    # took 550 MB to shrink): refused from its header, as the audit would
                    raise ValueError(
                        f"{img.width:,} x {img.height:,} pixels, more than {DEFAULT_MAX_PIXELS:,}"
                    )
                img.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced size
                img = img.convert("RGB")
                img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
                return img
        except Exception as err:  # noqa: BLE001 - missing/broken images show a placeholder
            self.missing.setdefault(rel, f"{type(err).__name__}: {err}")
            return None

    def encoded(self, rel: str) -> tuple[bytes, str, int, int] | None:
        """``(bytes, mime type, display width, display height)`` fitting ``size``, or None."""
        if rel not in self._cache:
            img = self.image(rel)
            if img is None:
                self._cache[rel] = None
            else:
                buf = io.BytesIO()
                if img.getcolors(256) is not None:  # digits, icons: PNG is exact and tiny
                    img.save(buf, format="PNG", optimize=True)
                    mime = "image/png"
                else:
                    img.save(buf, format="JPEG", quality=85)
                    mime = "image/jpeg"
                scale = self.size / max(img.size)
                w, h = round(img.width * scale), round(img.height * scale)
                self._cache[rel] = (buf.getvalue(), mime, w, h)
        return self._cache[rel]

    def get(self, rel: str) -> tuple[str, int, int] | None:
        """``(data URI, display width, display height)``, or None when unreadable."""
        got = self.encoded(rel)
        if got is None:
            return None
        data, mime, w, h = got
        return f"data:{mime};base64," + base64.b64encode(data).decode("ascii"), w, h

    def uri(self, rel: str) -> str | None:
        """A data URI of the thumbnail, or None when the image cannot be read."""
        got = self.get(rel)
        return got[0] if got else None


class Enlargements:
    """Larger copies of the page's tiles, for the view a click opens, within a byte budget.

    A tile whose source is no larger than its thumbnail (CIFAR, digits: images are only ever
    shrunk) needs no copy: the page enlarges the thumbnail itself. Past ``budget`` bytes of
    copies the rest open as their enlarged thumbnail and ``skipped`` counts them, so the
    page stays one file of bounded size (the caller says so).
    """

    def __init__(self, large: Thumbnails, small: Thumbnails, budget: int) -> None:
        self.large, self.small, self.budget = large, small, budget
        self.used, self.skipped = 0, 0
        self._uris: dict[str, str | None] = {}

    def uri(self, rel: str) -> str | None:
        """A data URI of the larger copy of ``rel``, or None (open the thumbnail instead)."""
        if rel in self._uris:
            return self._uris[rel]
        big, thumb = self.large.encoded(rel), self.small.encoded(rel)
        got: str | None = None
        if big is not None and (thumb is None or big[0] != thumb[0]):
            if self.used + len(big[0]) > self.budget:
                self.skipped += 1
            else:
                self.used += len(big[0])
                got = self.large.uri(rel)
        self._uris[rel] = got
        return got
