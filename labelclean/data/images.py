"""Decode every image once, fully and safely, into a uint8 ``[N, 3, S, S]`` cache.

Training never touches PIL: the cache is built once (in parallel, with a progress bar),
saved under a key of paths, sizes, mtimes and the target size so the next run reuses it,
and memory-mapped when it is larger than the memory budget.

One image is decoded by :mod:`labelclean.data.decode` (defensively: allow-listed formats,
full decode, bomb limit); :func:`decode_image` and :func:`resize_square` are re-exported
here for the callers that predict on new images the way the cache was built.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from labelclean._csv import csv_writer
from labelclean._faults import maybe_fail
from labelclean._io import (
    atomic_path,
    atomic_write_text,
    check_work_dir,
    read_json,
    reserve_space,
)
from labelclean.data.decode import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    BadImage,
    decode_image,
    open_image_file,
    resize_square,
)
from labelclean.data.manifest import Manifest, read_manifest
from labelclean.errors import ConfigError, ImageError, Interrupted
from labelclean.progress import Progress, report

__all__ = [
    "CACHE_VERSION",
    "Dataset",
    "ImageCache",
    "Rejection",
    "decode_image",
    "default_cache_dir",
    "infer_image_size",
    "load_dataset",
    "load_images",
    "resize_square",
    "write_rejected_csv",
]

logger = logging.getLogger(__name__)

#: 2: the resize works on the centre square (decode.resize_square), a sub-pixel change.
CACHE_VERSION = 2


@dataclass(frozen=True)
class Rejection:
    """A row that could not be used, with a short reason code."""

    row: int
    path: str
    #: missing, empty, truncated, not_an_image, format_not_allowed, too_many_pixels,
    #: aspect_ratio, too_large, not_a_file, unreadable
    reason: str
    detail: str


@dataclass
class ImageCache:
    """Decoded images ``[N, 3, S, S]`` uint8 and their channel statistics."""

    images: np.ndarray
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key: str
    path: Path | None


@dataclass
class Dataset:
    """A validated manifest with its image cache (rows that failed are in ``rejections``)."""

    manifest: Manifest
    cache: ImageCache
    rejections: list[Rejection]


def infer_image_size(manifest: Manifest, *, sample: int = 256) -> int:
    """A sensible square size from the data: the median shorter side of a sample.

    Up to 32 px it is rounded up to a multiple of 8 (digits 8, CIFAR 32); above, to a
    multiple of 32, capped at 224 (what ImageNet backbones expect). Files are opened as
    the decode opens them (regular files of a plausible size only), so a FIFO cannot hang it.
    """
    rng = np.random.default_rng(0)
    picks = rng.choice(len(manifest), min(sample, len(manifest)), replace=False)
    sides = []
    for i in picks:
        try:
            with (
                open_image_file(manifest.root / manifest.paths[i]) as file,
                Image.open(file, formats=ALLOWED_FORMATS) as img,
            ):
                sides.append(min(img.size))
        except Exception:  # noqa: BLE001,S112 - bad files are reported by the full decode
            continue
    if not sides:
        return 32
    median = float(np.median(sides))
    if median <= 32:
        return int(max(8, -(-median // 8) * 8))
    return int(min(224, max(32, round(median / 32) * 32)))


def _cache_key(manifest: Manifest, image_size: int, max_pixels: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{manifest.root}|{image_size}|{max_pixels}".encode())
    for rel in manifest.paths:
        try:
            st = (manifest.root / rel).stat()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{rel}|missing\n".encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    """``$LABELCLEAN_CACHE_DIR``, else ``~/.cache/labelclean``."""
    env = os.environ.get("LABELCLEAN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "labelclean"


def load_images(
    manifest: Manifest,
    *,
    image_size: int | None = None,
    on_bad_image: str = "error",
    max_bad_fraction: float = 0.05,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: Path | None = None,
    memory_budget: int = 4 << 30,
    workers: int = 2,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Dataset:
    """Decode (or reuse) every image of ``manifest`` into the uint8 cache.

    Args:
        manifest: The validated manifest.
        image_size: Square side S; inferred from the data when None.
        on_bad_image: ``error`` (refuse, listing up to 20 rows) or ``skip`` (drop them).
        max_bad_fraction: With ``skip``, refuse to start above this fraction of bad rows.
        max_pixels: Larger images are refused as decompression bombs.
        cache_dir: Where decoded caches live (see :func:`default_cache_dir`).
        memory_budget: Above this many bytes the cache is memory-mapped, not loaded.
        workers: Decoding threads (PIL releases the GIL while decoding).
        progress: ``progress(task, done, total)``.
        should_stop: Checked between small blocks of images; True stops the decode with
            :class:`~labelclean.errors.Interrupted` and no cache written (so does Ctrl-C).
    """
    _check_options(image_size, on_bad_image, max_bad_fraction, max_pixels)
    size = image_size or infer_image_size(manifest)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(manifest, size, max_pixels)
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"

    def reuse() -> Dataset:
        return _reuse(
            manifest,
            array_path,
            meta_path,
            size,
            key,
            memory_budget,
            on_bad_image,
            max_bad_fraction,
        )

    try:
        hit = array_path.is_file() and meta_path.is_file()
    except OSError:  # a name too long, ...: the check below says so, naming --cache-dir
        hit = False
    if hit:
        try:
            return reuse()
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("image cache %s is unusable (%s); decoding again", array_path, err)
    check_work_dir(cache_dir, flag="--cache-dir")  # before decoding, not after
    ok, bad = _decode_to(
        array_path,
        manifest,
        size,
        max_pixels=max_pixels,
        workers=workers,
        progress=progress,
        should_stop=should_stop,
    )
    _write_meta(meta_path, size, ok, bad, _channel_stats(np.load(array_path, mmap_mode="r"), ok))
    return reuse()


def _check_options(
    image_size: int | None, on_bad_image: str, max_bad_fraction: float, max_pixels: int
) -> None:
    """Refuse bad options before any work, naming the CLI flag the user typed."""
    if on_bad_image not in ("error", "skip"):
        raise ConfigError(f"--on-bad-image {on_bad_image!r}: expected error or skip")
    if not 0 <= max_bad_fraction <= 1:
        raise ConfigError(f"--max-bad-fraction {max_bad_fraction}: expected a value in [0, 1]")
    if image_size is not None and not 4 <= image_size <= 1024:
        raise ConfigError(f"--image-size {image_size}: expected 4 to 1024 pixels")
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels {max_pixels}: expected a positive number of pixels")


def _decode_to(
    array_path: Path,
    manifest: Manifest,
    size: int,
    *,
    max_pixels: int,
    workers: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[np.ndarray, list[Rejection]]:
    """Decode every image into a ``.npy`` at ``array_path``; the good-row mask, the rejections.

    Written through a memmap to a temp file renamed at the end, so a large set never sits
    in memory twice and a crash or a stop leaves no half-written cache to be reused.
    """
    n = len(manifest)
    bad: list[Rejection] = []
    with atomic_path(array_path, flag="--cache-dir") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        reserve_space(tmp)  # a full disk fails here, not as SIGBUS in a memmap write
        ok = np.ones(n, dtype=bool)

        def work(i: int) -> None:
            try:
                out[i] = resize_square(
                    decode_image(manifest.root / manifest.paths[i], max_pixels=max_pixels), size
                )
            except BadImage as err:
                ok[i] = False
                bad.append(
                    Rejection(int(manifest.rows[i]), manifest.paths[i], err.reason, err.detail)
                )

        _decode_all(n, work, workers=workers, progress=progress, should_stop=should_stop)
        out.flush()
    bad.sort(key=lambda r: r.row)
    return ok, bad


def _write_meta(
    meta_path: Path,
    size: int,
    ok: np.ndarray,
    bad: list[Rejection],
    stats: tuple[list[float], list[float]],
) -> None:
    """The cache's sidecar: written after the array, so its presence means the array is whole."""
    atomic_write_text(
        meta_path,
        flag="--cache-dir",
        text=json.dumps(
            {
                "version": CACHE_VERSION,
                "image_size": size,
                "n": len(ok),
                "ok": ok.tolist(),
                "rejections": [r.__dict__ for r in bad],
                "mean": stats[0],
                "std": stats[1],
            }
        ),
    )


def _decode_all(
    n: int,
    work: Callable[[int], None],
    *,
    workers: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """``work(i)`` for every image, in blocks, so a stop request (or Ctrl-C) ends it fast.

    Only one block is ever queued, and its images still waiting are skipped once a stop
    is asked: a stop waits for the images being decoded (one per worker), not for a
    block of them, nor for every image still to decode. Since only regular files are
    opened (:func:`~labelclean.data.decode.open_image_file`), no read waits without end.
    """
    workers = max(1, workers)
    block = 16 * workers

    def stop_if_asked(done: int) -> None:
        if should_stop is not None and should_stop():
            raise Interrupted(f"stopped while decoding images ({done} of {n}); nothing was written")

    def unless_stopped(i: int) -> None:
        if should_stop is None or not should_stop():
            work(i)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, n, block):
            maybe_fail("decode", start // block)
            stop_if_asked(start)
            list(pool.map(unless_stopped, range(start, min(n, start + block))))
            stop_if_asked(start)  # before the skipped images could count as decoded
            report(progress, "decode images", min(n, start + block), n)


def _channel_stats(images: np.ndarray, ok: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in [0, 1] units over the good images.

    Sums are exact integers, so the figures do not depend on the order of the rows (a
    shuffled manifest normalises identically).
    """
    s = np.zeros(3, dtype=np.int64)
    s2 = np.zeros(3, dtype=np.int64)
    count = 0
    for start in range(0, len(images), 4096):
        block = images[start : start + 4096][ok[start : start + 4096]].astype(np.int64)
        s += block.sum((0, 2, 3))
        s2 += (block * block).sum((0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    count = max(count, 1)
    mean = s / count
    var = np.maximum(s2 / count - mean**2, 1e-12)
    return (mean / 255).tolist(), np.maximum(np.sqrt(var) / 255, 1e-3).tolist()


def _reuse(
    manifest: Manifest,
    array_path: Path,
    meta_path: Path,
    size: int,
    key: str,
    memory_budget: int,
    on_bad_image: str,
    max_bad_fraction: float,
) -> Dataset:
    meta = read_json(meta_path, ValueError, expected="a cache index")
    if meta["n"] != len(manifest) or meta["image_size"] != size:
        raise ValueError("cache does not match the manifest")
    ok = np.asarray(meta["ok"], dtype=bool)
    rejections = [Rejection(**r) for r in meta["rejections"]]
    if rejections:
        _check_bad(manifest, rejections, on_bad_image, max_bad_fraction)
    images = np.load(array_path, mmap_mode="r")
    if images.shape != (len(manifest), 3, size, size):
        raise ValueError(f"cache shape {images.shape}")
    if not ok.all():
        images = images[ok]  # fancy indexing copies: only the good rows stay
    elif images.nbytes <= memory_budget:
        images = np.ascontiguousarray(images)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    cache = ImageCache(images, size, mean, std, key, array_path)
    return Dataset(manifest.subset(ok) if not ok.all() else manifest, cache, rejections)


def _check_bad(
    manifest: Manifest, bad: list[Rejection], on_bad_image: str, max_bad_fraction: float
) -> None:
    source = manifest.source if not manifest.source.is_dir() else manifest.root
    listing = "\n".join(
        f"  {source}{'' if manifest.source.is_dir() else f' line {r.row + 2}'}: {r.path}: "
        f"{r.reason} ({r.detail})"
        for r in bad[:20]
    )
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    if on_bad_image == "error":
        raise ImageError(
            f"{len(bad)} bad image(s):\n{listing}{more}\n"
            "Fix or remove them, or pass --on-bad-image skip to leave them out"
        )
    fraction = len(bad) / len(manifest)
    if fraction > max_bad_fraction:
        raise ImageError(
            f"{len(bad)} of {len(manifest)} images ({fraction:.1%}) are bad, above "
            f"--max-bad-fraction {max_bad_fraction:.0%}:\n{listing}{more}"
        )
    for r in bad:
        logger.warning("skipping %s: %s (%s)", r.path, r.reason, r.detail)


def write_rejected_csv(
    path: Path, dataset: Dataset, *, overwrite: bool, flag: str = "--out"
) -> Path:
    """One line per skipped image: line, path, reason, detail.

    ``line`` is the manifest line as every message gives it (the header is line 1); it is
    empty for the class-folder layout, which has no lines.
    """
    table = not dataset.manifest.source.is_dir()
    buf = io.StringIO()
    writer = csv_writer(buf)
    writer.writerow(["line", "path", "reason", "detail"])
    for r in dataset.rejections:
        writer.writerow([r.row + 2 if table else "", r.path, r.reason, r.detail])
    return atomic_write_text(path, buf.getvalue(), overwrite=overwrite, flag=flag)


def load_dataset(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    path_column: str = "path",
    label_column: str | Sequence[str] = "label",
    annotator_column: str | None = None,
    allow_outside_root: bool = False,
    normalize_labels: bool = False,
    on_manifest: Callable[[Manifest], None] | None = None,
    **load_images_kwargs: object,
) -> Dataset:
    """:func:`read_manifest` then :func:`load_images`, in one call.

    ``on_manifest`` sees the manifest before any image is decoded, so a caller can refuse
    a dataset it cannot handle (the audit: one too large for memory) before that work.
    """
    manifest = read_manifest(
        images,
        labels,
        path_column=path_column,
        label_column=label_column,
        annotator_column=annotator_column,
        allow_outside_root=allow_outside_root,
        normalize_labels=normalize_labels,
    )
    if on_manifest is not None:
        on_manifest(manifest)
    return load_images(manifest, **load_images_kwargs)  # type: ignore[arg-type]
