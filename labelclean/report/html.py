"""One self-contained HTML page per report: the paper's figures 1-3 for any dataset.

Everything is inlined -- figures drawn by matplotlib (Agg) at 2x as PNG data URIs,
thumbnails as data URIs, the stylesheet and one small script for sorting, filtering,
paging and the CSV export of the current selection -- so the file opens offline and makes
no network request, and can be shared. The table embeds every flagged sample (only the
kept ones are sampled, and the page says so where a filter reaches the cut) and its first
page is plain HTML, readable without JavaScript. The page is rendered from the Jinja2
templates in ``templates/`` (autoescaped: class names and paths are user data); each
section is a template plus a context builder in :mod:`labelclean.report.sections`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labelclean._io import atomic_write_text, check_writable
from labelclean.errors import ConfigError
from labelclean.progress import Progress
from labelclean.progress import report as report_progress
from labelclean.report.parquet import Report
from labelclean.report.sections import SECTIONS, PageData
from labelclean.report.summary import summarize
from labelclean.report.templating import render
from labelclean.report.thumbs import Enlargements, Thumbnails

logger = logging.getLogger(__name__)

TABLE_THUMB = 40
#: Side of the larger copy a click on a tile opens, and the bytes all such copies may take.
ZOOM_SIZE = 320
ZOOM_BUDGET = 4_000_000


def write_html_report(
    report: Report,
    path: str | Path,
    *,
    overwrite: bool = False,
    max_scatter: int = 20_000,
    max_grid: int = 60,
    table_rows: int = 500,
    thumb_size: int = 64,
    progress: Progress | None = None,
) -> Path:
    """Write the report as one self-contained HTML page (atomically).

    Args:
        report: A report read by :func:`~labelclean.report.parquet.read_report`.
        path: Where to write the page.
        overwrite: Replace an existing file; otherwise an existing ``path`` is an error.
        max_scatter: Points drawn in the joint-confidence scatter (a random sample above).
        max_grid: Images per grid (relabeled; each unlabeled cluster).
        table_rows: Kept samples in the table (the most suspicious ones); every flagged
            sample is always in it.
        thumb_size: Thumbnail side in pixels in the grids.
        progress: Optional ``progress(task, done, total)`` callback.

    Returns:
        ``path``.

    Example:
        >>> write_html_report(read_report("report.parquet"), "report.html")  # doctest: +SKIP
    """
    for flag, value in (
        ("--max-scatter", max_scatter),
        ("--max-grid", max_grid),
        ("--table-rows", table_rows),
        ("--thumb-size", thumb_size),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    path = check_writable(path, overwrite=overwrite, flag="--html")
    import matplotlib

    matplotlib.use("Agg")
    root = report.image_root
    missing: dict[str, str] = {}
    page = PageData(
        report=report,
        summary=summarize(report),
        max_scatter=max_scatter,
        max_grid=max_grid,
        table_rows=table_rows,
        thumbs=Thumbnails(root, thumb_size, missing),
        table_thumbs=Thumbnails(root, TABLE_THUMB, missing),
        missing=missing,
    )
    steps = len(SECTIONS) + 1
    sections = _build_sections(page, progress, steps)
    zoom = Enlargements(Thumbnails(root, ZOOM_SIZE, missing), page.thumbs, ZOOM_BUDGET)
    for tile in _tiles(sections):
        tile["full"] = zoom.uri(str(tile["path"]))
    if zoom.skipped:
        page.sampled.append(
            f"large views: {zoom.skipped} images open at thumbnail size (the page holds larger "
            f"copies up to {ZOOM_BUDGET / 1e6:.0f} MB)"
        )
    text = render(
        "report.html.j2",
        title=report.path.name if report.path else "report",
        source=str(report.path or ""),
        root=str(root),
        facts=_run_facts(report.metadata),
        version=report.metadata.get("tool_version", "?"),
        sections=sections,
        sampled="; ".join(page.sampled),
        missing=(len(missing), *next(iter(missing.items()))) if missing else None,
    )
    out = atomic_write_text(path, text, overwrite=overwrite, flag="--html")
    if missing:
        logger.warning("%d image(s) under %s could not be read for the page", len(missing), root)
    report_progress(progress, "html report", steps, steps)
    return out


def _build_sections(page: PageData, progress: Progress | None, steps: int) -> list[dict[str, Any]]:
    """Each section's template and context, in :data:`SECTIONS` order.

    A section with no data for this report (its builder returns None) is left out, and
    the navigation bar with it.
    """
    sections = []
    for k, section in enumerate(SECTIONS, start=1):
        report_progress(progress, "html report", k, steps)
        context = section.build(page)
        if context is not None:
            sections.append(
                {
                    "id": section.id,
                    "title": section.title,
                    "template": section.template,
                    "c": context,
                }
            )
    return sections


def _tiles(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The image tiles of the sections, in page order: a context's ``tiles``, its groups'."""
    out = []
    for section in sections:
        c = section["c"]
        for group in [c, *(c.get("groups") or [])]:
            out += [t for t in group.get("tiles") or [] if isinstance(t, dict) and t.get("src")]
    return out


def _run_facts(metadata: Mapping[str, Any]) -> str:
    """The run in one line for the page's header (model, epochs, ..., wall time).

    Keys a report does not carry (an older or a frozen run) are skipped, not shown empty.
    """
    facts = [
        f"{k} {metadata[k]}"
        for k in ("model", "epochs", "mode", "device", "seed")
        if metadata.get(k) is not None
    ]
    if isinstance(metadata.get("wall_time_s"), int | float):
        facts.append(f"{metadata['wall_time_s']:.0f} s")
    return ", ".join(facts)
