"""``labelclean report`` (terminal summary, HTML page) and ``labelclean export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelclean.cli._app import app
from labelclean.cli._progress import RichProgress

ReportArg = Annotated[Path, typer.Argument(help="report.parquet from `labelclean audit`.")]


@app.command(no_args_is_help=True)
def report(
    report_path: ReportArg,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page here.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --html file.")] = False,
    max_grid: Annotated[int, typer.Option(help="Images per grid in the HTML page.")] = 60,
    table_rows: Annotated[int, typer.Option(help="Rows in the HTML sample table.")] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No terminal summary.")] = False,
) -> None:
    """Summarise a report in the terminal and, with --html, as a page to look at."""
    from labelclean._io import check_writable
    from labelclean.report.html import write_html_report
    from labelclean.report.parquet import read_report
    from labelclean.report.summary import render_terminal, summarize

    if html is not None:
        check_writable(html, overwrite=overwrite, flag="--html")
    rep = read_report(report_path)
    if not quiet:
        render_terminal(summarize(rep))
    if html is not None:
        with RichProgress(quiet=quiet) as progress:
            write_html_report(
                rep,
                html,
                overwrite=overwrite,
                max_grid=max_grid,
                table_rows=table_rows,
                progress=progress,
            )
        typer.echo(f"wrote {html}")


@app.command(no_args_is_help=True)
def export(
    report_path: ReportArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Cleaned manifest (.csv or .parquet).")],
    drop_unlabeled: Annotated[
        bool, typer.Option(help="Leave out the samples whose label was dropped.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Write the cleaned manifest (path,label) for any training pipeline.

    By default every sample is kept and an ``action`` column says what the audit did;
    unlabeled samples have an empty label (use them as unlabeled data, or pass
    --drop-unlabeled).
    """
    from labelclean._io import atomic_write_with, check_writable
    from labelclean.report.parquet import read_report

    check_writable(out, overwrite=overwrite)
    rep = read_report(report_path)
    f = rep.frame
    if drop_unlabeled:
        f = f[f["action"] != "unlabel"]
    table = f[["path", "clean_label", "given_label", "action"]].rename(
        columns={"clean_label": "label"}
    )
    if drop_unlabeled:
        table = table[["path", "label"]]
    if out.suffix.lower() == ".parquet":
        atomic_write_with(out, lambda tmp: table.to_parquet(tmp, index=False), overwrite=overwrite)
    else:
        atomic_write_with(out, lambda tmp: table.to_csv(tmp, index=False), overwrite=overwrite)
    typer.echo(f"wrote {out}: {len(table)} rows (root {rep.image_root})")
