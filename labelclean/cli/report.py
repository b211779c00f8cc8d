"""``labelclean report`` (terminal summary, HTML page) and ``labelclean export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from labelclean.cli._app import app
from labelclean.cli._console import RichProgress

ReportArg = Annotated[Path, typer.Argument(help="report.parquet from `labelclean audit`.")]
EXPORT_SUFFIXES = (".csv", ".parquet")


def _page(help_text: str, *, low: int = 1) -> Any:
    """A whole-number option of the HTML page, at least ``low``, in the help's "Page" panel."""
    return typer.Option(min=low, help=help_text, rich_help_panel="Page")


@app.command(no_args_is_help=True)
def report(
    report_path: ReportArg,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write one self-contained HTML page here (opens offline).",
            rich_help_panel="Output",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace an existing --html file.", rich_help_panel="Output"
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No terminal summary and no progress bar.",
            rich_help_panel="Output",
        ),
    ] = False,
    max_scatter: Annotated[
        int, _page("Points in the joint-confidence scatter (a random sample above).")
    ] = 20_000,
    max_grid: Annotated[int, _page("Images per grid (relabeled; each unlabeled cluster).")] = 60,
    table_rows: Annotated[
        int,
        _page(
            "Kept samples in the page's table, the most suspicious (every flagged one is in it)."
        ),
    ] = 500,
    thumb_size: Annotated[int, _page("Thumbnail side in pixels in the grids.", low=8)] = 64,
) -> None:
    """Summarise a report in the terminal and, with --html, as a page to look at.

    The page shows the paper's figures for your data: the joint-confidence clusters, the
    confidence of typical samples over the epochs, the relabeled and unlabeled images, a
    per-class table with a given->clean heatmap, and a filterable table of the most
    suspicious samples whose selection exports as CSV for re-annotation. To decide on the
    suggestions, use `labelclean review`.
    """
    from labelclean._io import check_writable
    from labelclean.report.html import write_html_report
    from labelclean.report.parquet import read_report
    from labelclean.report.summary import render_terminal, summarize

    if html is not None:
        check_writable(html, overwrite=overwrite, flag="--html", inputs={"REPORT": report_path})
    rep = read_report(report_path)
    if not quiet:
        render_terminal(summarize(rep))
        if "votes" in rep.frame:
            from labelclean.report.annotators import read_annotators
            from labelclean.report.crowd import crowd_summary, render_crowd

            crowd = crowd_summary(rep, read_annotators(report_path, rep.metadata))
            if crowd is not None:
                render_crowd(crowd)
    if html is not None:
        with RichProgress(quiet=quiet) as progress:
            write_html_report(
                rep,
                html,
                overwrite=overwrite,
                max_scatter=max_scatter,
                max_grid=max_grid,
                table_rows=table_rows,
                thumb_size=thumb_size,
                progress=progress,
            )
        typer.echo(f"wrote {html}")


@app.command(no_args_is_help=True)
def export(
    report_path: ReportArg,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Cleaned manifest: .csv or .parquet.", rich_help_panel="Output"
        ),
    ],
    drop_unlabeled: Annotated[
        bool,
        typer.Option(
            "--drop-unlabeled",
            help="Leave out the samples whose label the audit dropped; write only path,label.",
            rich_help_panel="Output",
        ),
    ] = False,
    absolute_paths: Annotated[
        bool,
        typer.Option(
            "--absolute-paths",
            help="Write paths joined to the report's image root, so the manifest works from anywhere.",
            rich_help_panel="Output",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an existing --out.", rich_help_panel="Output"),
    ] = False,
    format: Annotated[  # noqa: A002 - the option's name
        str,
        typer.Option(
            "--format",
            help="manifest (.csv/.parquet by --out), or label-studio: import tasks (.json) with "
            "the suggestion as a pre-annotation, and their labeling config beside them.",
            rich_help_panel="Output",
        ),
    ] = "manifest",
    document_root: Annotated[
        Path | None,
        typer.Option(
            help="label-studio: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, which "
            "image URLs are relative to \\[default: the image folder's parent].",
            rich_help_panel="Output",
        ),
    ] = None,
    only_flagged: Annotated[
        bool,
        typer.Option(
            "--only-flagged",
            help="label-studio: only the images the audit relabeled or unlabeled, the ones "
            "that need a person (default: every image, flagged clusters first).",
            rich_help_panel="Output",
        ),
    ] = False,
) -> None:
    """Write the cleaned manifest (path,label) for any training pipeline.

    label is the audit's clean label (the given label if kept, the new one if relabeled).
    By default every sample is written, with given_label, action and suggested_label (the
    audit's guess where it unlabeled) columns so you can filter; samples the audit unlabeled
    have an empty label (use them as unlabeled data).
    With --drop-unlabeled they are left out and only path,label is written. Paths are as
    in your manifest (relative to the image folder) unless --absolute-paths.
    --format label-studio writes Label Studio import tasks instead (see README).
    """
    from labelclean._csv import frame_to_csv
    from labelclean._io import atomic_write_with, check_writable
    from labelclean.errors import ConfigError
    from labelclean.report.parquet import read_report
    from labelclean.report.summary import cleaned_manifest

    if format not in ("manifest", "label-studio"):
        raise ConfigError(f"--format {format!r}: choose manifest or label-studio")
    # an option of the other format would be silently ignored: refused, naming it
    other = (
        {"--drop-unlabeled": drop_unlabeled, "--absolute-paths": absolute_paths}
        if format == "label-studio"
        else {"--document-root": document_root is not None}
    )
    given = [flag for flag, on in other.items() if on]
    if given:
        raise ConfigError(
            f"{given[0]} is not an option of --format {format} "
            + (
                "(tasks name every image, or the flagged ones with --only-flagged; their "
                "URLs follow --document-root)"
                if format == "label-studio"
                else "(it is for --format label-studio)"
            )
        )
    if format == "label-studio":
        from labelclean.cli.review import export_label_studio

        export_label_studio(
            report_path,
            out,
            document_root=document_root,
            overwrite=overwrite,
            only_flagged=only_flagged,
        )
        return
    if only_flagged:
        raise ConfigError(
            "--only-flagged is for --format label-studio; a manifest names every image "
            "(filter its action column, or use --drop-unlabeled)"
        )
    check_writable(out, overwrite=overwrite, inputs={"REPORT": report_path})
    suffix = out.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ConfigError(
            f"--out {out}: unknown format {suffix or '(no suffix)'!r}; "
            "name the file *.csv or *.parquet"
        )
    rep = read_report(report_path)
    table = cleaned_manifest(rep.frame, drop_unlabeled=drop_unlabeled)
    if absolute_paths:
        root = rep.image_root
        table["path"] = [str(root / p) for p in table["path"]]
    if suffix == ".parquet":
        atomic_write_with(out, lambda tmp: table.to_parquet(tmp, index=False), overwrite=overwrite)
    else:
        atomic_write_with(out, lambda tmp: frame_to_csv(table, tmp), overwrite=overwrite)
    counts = rep.frame["action"].value_counts()
    dropped = int(counts.get("unlabel", 0))
    typer.echo(
        f"wrote {out}: {len(table)} rows ({int(counts.get('relabel', 0))} relabeled, {dropped} "
        f"unlabeled {'dropped' if drop_unlabeled else 'with an empty label'}); "
        f"paths relative to {rep.image_root}"
        if not absolute_paths
        else f"wrote {out}: {len(table)} rows with absolute paths"
    )
