"""``labelclean review`` (decide in the browser) and ``labelclean apply`` (the final labels)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labelclean.cli._app import app

if TYPE_CHECKING:
    from labelclean._io import Inputs

ReportArg = Annotated[Path, typer.Argument(help="report.parquet from `labelclean audit`.")]


def _decisions_path(report_path: Path, decisions: Path | None, *, inputs: Inputs) -> Path:
    """The decisions file to use, refused when it cannot be one (a folder, an input)."""
    from labelclean._io import check_writable
    from labelclean.errors import ConfigError
    from labelclean.review.decisions import default_decisions_path, writable_decisions_path

    given = decisions or default_decisions_path(report_path)
    path = writable_decisions_path(given)  # a link: the file it leads to is rewritten
    # read to resume, then rewritten: an existing file is fine; an input, a folder or an
    # unwritable place is refused before the server starts
    for p in dict.fromkeys((given, path)):
        check_writable(p, overwrite=True, flag="--decisions", inputs=inputs)
    if path.suffix.lower() != ".csv":
        raise ConfigError(f"--decisions {path}: the review writes CSV; name the file *.csv")
    if not path.parent.is_dir():
        raise ConfigError(f"--decisions {path}: the folder {path.parent} does not exist")
    return path


@app.command(no_args_is_help=True)
def review(
    report_path: ReportArg,
    decisions: Annotated[
        Path | None,
        typer.Option(
            help="Decisions file, read to resume and updated on every decision (its other "
            "rows, columns and comments kept) \\[default: <report>.decisions.csv].",
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 0,
    host: Annotated[
        str,
        typer.Option(
            help="Loopback address to serve on (127.0.0.1, ::1, localhost); others are refused."
        ),
    ] = "127.0.0.1",
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser; just print the address.")
    ] = False,
) -> None:
    """Review the audit's suggestions in your browser: accept, keep, relabel or drop each image.

    A local web app shows the images the audit flagged (relabeled, unlabeled) first, then the
    kept ones something disputes (the network, a guard, a crowd split), then the rest, each
    with the given label most likely wrong first; the kept, undisputed CS images on demand.
    The suggestion is the audit's decision (its clean label, or its best guess for an image
    it unlabeled); the network's own guess shows beside it. Keys: a accept the suggestion,
    k keep the given label, 1-9 and 0 a class (/ searches all), d drop, u undo, j/l
    next/previous, g a grid of the filtered samples to select and decide in bulk (a heatmap
    cell can be accepted whole; u undoes a bulk). Each decision is written to the decisions
    file (path,decision,label,time) as it is taken, so a restart resumes; `labelclean apply`
    turns it into the final labels. Stop the server with Ctrl-C.
    """
    import signal
    import threading
    import webbrowser

    from labelclean.errors import ConfigError
    from labelclean.report.parquet import read_report
    from labelclean.review.decisions import claim_report, report_fingerprint
    from labelclean.review.server import ReviewServer, loopback_host
    from labelclean.review.state import ReviewState

    host = loopback_host(host)
    rep = read_report(report_path)
    inputs = {"REPORT": report_path, "the report's image folder": rep.image_root}
    path = _decisions_path(report_path, decisions, inputs=inputs)
    state = ReviewState(rep, path, fingerprint=report_fingerprint(report_path))
    try:
        server = ReviewServer(state, host, port)
    except OSError as err:
        raise ConfigError(
            f"--host {host} --port {port}: cannot serve there ({err.strerror})"
        ) from None
    if not claim_report(report_path):
        typer.echo(
            f"warning: another `labelclean review` is serving {report_path}; decisions are "
            "merged into the decisions file, none is lost, but a page shows the other's only "
            "after a reload",
            err=True,
        )
    typer.echo(f"serving at {server.url}")
    typer.echo(
        f"{len(state.queue)} samples to review ({len(state.decisions)} decided); "
        f"decisions go to {path}. Ctrl-C stops.",
        err=True,
    )
    sys.stdout.flush()
    stopped = {"code": 130}

    def _term(signum: int, frame: object) -> None:
        stopped["code"] = 143
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, _term)
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    typer.echo(f"stopped; {len(state.decisions)} decisions are in {path}", err=True)
    raise typer.Exit(stopped["code"])


@app.command(name="apply", no_args_is_help=True)
def apply_(
    report_path: ReportArg,
    decisions: Annotated[
        Path,
        typer.Argument(
            help="Decisions: the CSV of `labelclean review`, the report page's CSV export "
            "(its new_label column), or a Label Studio export (JSON, JSON-MIN or CSV)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Final labels: .csv or .parquet.")],
    only_reviewed: Annotated[
        bool,
        typer.Option(
            "--only-reviewed",
            help="Where nobody decided, keep the given label (instead of the audit's outcome).",
        ),
    ] = False,
    drop_unlabeled: Annotated[
        bool,
        typer.Option(
            "--drop-unlabeled",
            help="Leave out the images the audit unlabeled and nobody decided (as export) "
            "instead of keeping their given label (with --only-reviewed too).",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out.")
    ] = False,
) -> None:
    """Write the final path,label file: reviewer decisions first, the audit's outcome for the rest.

    accept takes the audit's suggestion (the label the review showed), keep the given one,
    relabel the chosen class, and dropped images are left out. Images nobody decided get the
    audit's clean label, or their given label with --only-reviewed. No label is ever written
    empty: an image the audit unlabeled and nobody decided keeps its given label by default,
    so the file names every image nobody dropped and no label the audit was unsure of
    changes without a person; --drop-unlabeled leaves those images out instead (for a
    training set of the labels the audit or a person stands behind).
    """
    from labelclean._csv import frame_to_csv
    from labelclean._io import atomic_write_with, check_writable
    from labelclean.errors import ConfigError
    from labelclean.report.parquet import read_report
    from labelclean.review.apply import apply_decisions
    from labelclean.review.decisions import load_decisions, report_fingerprint

    check_writable(out, overwrite=overwrite, inputs={"REPORT": report_path, "DECISIONS": decisions})
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: name the file *.csv or *.parquet")
    rep = read_report(report_path)
    found = load_decisions(decisions, rep, fingerprint=report_fingerprint(report_path))
    table, summary = apply_decisions(
        rep, found.by_path, only_reviewed=only_reviewed, drop_unlabeled=drop_unlabeled
    )
    if suffix == ".parquet":
        atomic_write_with(out, lambda tmp: table.to_parquet(tmp, index=False), overwrite=overwrite)
    else:
        atomic_write_with(out, lambda tmp: frame_to_csv(table, tmp), overwrite=overwrite)
    typer.echo(f"wrote {out}")
    for line in summary.lines():
        typer.echo(line)


def export_label_studio(
    report_path: Path,
    out: Path,
    *,
    document_root: Path | None,
    overwrite: bool,
    only_flagged: bool = False,
) -> None:
    """``export --format label-studio``: the import tasks and their labeling config."""
    import json

    from labelclean._io import atomic_write_text, check_writable
    from labelclean.errors import ConfigError, OutputError
    from labelclean.interop.label_studio import export_tasks, label_config
    from labelclean.report.parquet import read_report
    from labelclean.review.decisions import report_fingerprint

    config_path = out.with_suffix(".label-config.xml")
    for p in (out, config_path):
        check_writable(p, overwrite=overwrite, inputs={"REPORT": report_path})
    if out.suffix.lower() != ".json":
        raise ConfigError(f"--out {out}: Label Studio tasks are JSON; name the file *.json")
    rep = read_report(report_path)
    root = document_root or rep.image_root.parent
    tasks = export_tasks(
        rep,
        document_root=root,
        fingerprint=report_fingerprint(report_path),
        only_flagged=only_flagged,
    )
    new_config = not config_path.exists()
    atomic_write_text(config_path, label_config(rep.class_names), overwrite=overwrite)
    try:
        text = json.dumps(tasks, indent=1, ensure_ascii=False)
        atomic_write_text(out, text, overwrite=overwrite)
    except OutputError:  # a full disk, ...: no config left behind without its tasks
        if new_config:
            config_path.unlink(missing_ok=True)
        raise
    which = " (the flagged images)" if only_flagged else ""
    typer.echo(
        f"wrote {out}: {len(tasks)} Label Studio tasks{which}, the audit's suggestion pre-annotated"
    )
    typer.echo(f"wrote {config_path}: the labeling config to paste into the project")
    typer.echo(
        f"serve the images with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root.resolve()}; then "
        f"`labelclean apply {report_path} <export>.json --out final.csv` (JSON, JSON-MIN "
        "or CSV export)"
    )
