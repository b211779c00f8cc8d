"""Decode one image fully and safely to RGB, and resize it to the cache's square.

Decoding is defensive: only allow-listed formats are opened (an EPS renamed .png never
reaches Ghostscript), the whole image is decoded (``Image.open`` reads only the header, so a
truncated file would otherwise pass), decompression bombs are errors, animations give
their first frame, and EXIF rotation, palettes with transparency, CMYK and 16-bit images are
converted to RGB correctly.

Memory is bounded by design, before any pixel is read (issue 38): only regular files are
opened (a FIFO or a device named ``.png`` would block or never end), without blocking, and
checked on the opened descriptor; a file larger than any image of ``--max-pixels`` could
be (:func:`max_file_bytes`) is refused by its size, never read; the header's dimensions are
checked against ``--max-pixels`` and :data:`MAX_ASPECT_RATIO` before decoding; and the
resize works on the centre square only, so its memory follows that square and the output,
not the long side (a 2,000,000 x 1 PNG of 2 KB once asked for a 64,000,000 x 32 resize).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

#: Pillow plugins we accept; anything else (EPS, PSD, ...) is refused before decoding.
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default bomb threshold
#: The most bytes one pixel takes in an allowed format: uncompressed 16-bit RGBA (TIFF,
#: PNG, PPM); a compressed file is smaller, and deflate's stored blocks add only 0.01%.
MAX_BYTES_PER_PIXEL = 8
#: Room for metadata beside the pixels (EXIF, ICC profiles, XMP, thumbnails).
METADATA_BYTES = 64 << 20
#: Longer side over shorter side. The cache keeps the centre square, so an image wider than
#: this keeps under 1% of itself: a banner or a corrupt header, not a photo to learn from.
MAX_ASPECT_RATIO = 100


class BadImage(Exception):
    """One image that cannot be used: its reason code (as in ``Rejection.reason``), a detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB: transparency composited on white, 16-bit scaled (not clipped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255.0).round().clip(0, 255).astype(np.uint8)).convert(
            "RGB"
        )
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray((arr * scale).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def max_file_bytes(max_pixels: int) -> int:
    """The largest file an image of at most ``max_pixels`` pixels can plausibly be.

    Tied to ``--max-pixels`` so one option bounds both: raising it for genuine large images
    raises this too. The default (89.5 M pixels) allows 780 MB.
    """
    return MAX_BYTES_PER_PIXEL * max_pixels + METADATA_BYTES


def _kind(mode: int) -> str:
    """What a non-regular file is, in the words ``ls -l`` users know."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "another kind of file")


@contextmanager
def open_image_file(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a regular file of a plausible size (BadImage else).

    The open never blocks (``O_NONBLOCK``: opening a FIFO with no writer would wait forever,
    out of reach of Ctrl-C's flag), and the checks are made on the opened descriptor, so a
    file swapped in between a check and the open cannot slip through. Links are followed:
    the manifest's checks decide whether a link may leave the image folder.
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to open
    try:
        fd = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise BadImage("missing", "file not found") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BadImage("unreadable", "a symlink loop: too many levels of links") from None
        raise BadImage("unreadable", err.strerror or str(err)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadImage("not_a_file", f"not a regular file but {_kind(st.st_mode)}")
        if st.st_size == 0:
            raise BadImage("empty", "zero-byte file")
        if st.st_size > (limit := max_file_bytes(max_pixels)):
            raise BadImage(
                "too_large",
                f"{st.st_size:,} bytes, more than an image of --max-pixels {max_pixels:,} can "
                f"take ({limit:,} bytes); raise --max-pixels if the image is genuine",
            )
        if nonblocking:
            os.set_blocking(fd, True)  # a regular file: reads as usual from here
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def _check_shape(img: Image.Image) -> None:
    """Refuse an absurd aspect ratio from the header, before a pixel is decoded."""
    w, h = img.size
    if min(w, h) < 1:
        raise BadImage("unreadable", f"{w} x {h} pixels")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise BadImage(
            "aspect_ratio",
            f"{w:,} x {h:,} pixels, more than {MAX_ASPECT_RATIO}:1; the centre square the "
            f"cache keeps would be {min(w, h):,} x {min(w, h):,} of it",
        )


def decode_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert one image to RGB (frame 0, EXIF-upright)."""
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with (
            open_image_file(path, max_pixels=max_pixels) as file,
            warnings.catch_warnings(),
        ):
            head = file.read(64)
            file.seek(0)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                img = Image.open(file, formats=ALLOWED_FORMATS)
            except Image.UnidentifiedImageError:
                if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
                    raise BadImage("not_an_image", "an HTML page saved as an image") from None
                if _known_other_format(head):
                    raise BadImage(
                        "format_not_allowed",
                        f"image format not allowed (allowed: {', '.join(ALLOWED_FORMATS)})",
                    ) from None
                raise BadImage("not_an_image", "not a recognised image") from None
            _check_shape(img)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()  # decode everything now: a truncated file fails here, not mid-training
            return _to_rgb(ImageOps.exif_transpose(img) or img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage("too_many_pixels", _too_many_pixels(err, max_pixels)) from None
    except BadImage:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise BadImage(reason, str(err)) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _too_many_pixels(err: Exception, max_pixels: int) -> str:
    """Our limit in our words: Pillow's error states twice the limit it was given."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"{size}, above --max-pixels {max_pixels:,} (raise it if the image is genuine)"


def _known_other_format(data: bytes) -> bool:
    """Recognised by some Pillow plugin, but not an allowed one (checked without decoding)."""
    return data[:4] in (b"%!PS", b"\xc5\xd0\xd3\xc6", b"8BPS") or data[:2] == b"\x00\x00"


def resize_square(img: Image.Image, size: int) -> np.ndarray:
    """The centre square, resized to ``size`` (antialiased); returns ``[3, S, S]`` uint8.

    Pillow resizes only the ``box`` (reading the pixels just around it for the filter), so
    the work is that square's, whatever the long side: resizing the whole image first
    would make a 2,000,000 x 1 strip 64,000,000 x 32 before cropping.
    """
    w, h = img.size
    if (w, h) != (size, size):
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        box = (left, top, left + side, top + side)
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
