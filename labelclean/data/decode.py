"""Decode one image fully and safely to RGB, and resize it to the cache's square.

Decoding is defensive: only allow-listed formats are opened (an EPS renamed .png never
reaches Ghostscript), the whole image is decoded (``Image.open`` reads only the header, so a
truncated file would otherwise pass), decompression bombs are errors, animations give
their first frame, and EXIF rotation, palettes with transparency, CMYK and 16-bit images are
converted to RGB correctly.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Pillow plugins we accept; anything else (EPS, PSD, ...) is refused before decoding.
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default bomb threshold


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


def decode_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert one image to RGB (frame 0, EXIF-upright)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadImage("missing", "file not found") from None
    except OSError as err:
        raise BadImage("unreadable", str(err)) from None
    if size == 0:
        raise BadImage("empty", "zero-byte file")
    data = path.read_bytes()
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            except Image.UnidentifiedImageError:
                head = data[:64].lstrip().lower()
                if head.startswith((b"<!doctype html", b"<html")):
                    raise BadImage("not_an_image", "an HTML page saved as an image") from None
                if _known_other_format(data):
                    raise BadImage(
                        "format_not_allowed",
                        f"image format not allowed (allowed: {', '.join(ALLOWED_FORMATS)})",
                    ) from None
                raise BadImage("not_an_image", "not a recognised image") from None
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
    """Shorter side to ``size`` (antialiased), centre crop; returns ``[3, S, S]`` uint8."""
    w, h = img.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        img = img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
