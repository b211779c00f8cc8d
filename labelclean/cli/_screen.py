"""What ``labelclean audit`` and ``labelclean demo`` print while the library runs, and after."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from labelclean.cli._console import RichProgress, console

if TYPE_CHECKING:
    from labelclean.data.images import Dataset
    from labelclean.fgcm.audit import AuditRun


def format_epoch(line: dict[str, Any], epochs: int) -> str:
    """One epoch's log record as the line the CLI prints."""
    from labelclean.fgcm.clustering import CLUSTER_NAMES

    clusters = " ".join(
        f"{k} {line['clusters'][k]}" for k in CLUSTER_NAMES if k in line["clusters"]
    )
    guard = f"; {line['guard']}" if line.get("guard") else ""
    return (
        f"epoch {line['epoch']:>3}/{epochs} loss {line['loss']:.3f} |T| {line['t_size']} "
        f"{clusters} {line['seconds']:.1f}s{guard}"
    )


class EpochPrinter:
    """Prints one line per epoch and writes JSON lines to --log-json (appends on --resume)."""

    def __init__(self, progress: RichProgress, epochs: int, log_json: Path | None) -> None:
        self.progress, self.epochs, self.log_json = progress, epochs, log_json

    def start(self, *, append: bool) -> None:
        """Empty --log-json for a fresh run (once the data is known to load)."""
        from labelclean._io import append_line

        if self.log_json is not None and not append:
            append_line(self.log_json, "", flag="--log-json", truncate=True)

    def __call__(self, state: Any, line: dict[str, Any]) -> None:
        from labelclean._io import append_line

        self.progress.log(format_epoch(line, self.epochs))
        if self.log_json is not None:
            append_line(self.log_json, json.dumps(line) + "\n", flag="--log-json")


@dataclass
class AuditScreen:
    """What ``labelclean audit`` shows, and writes beside the report, while the library runs."""

    out: Path
    labels: Path | None
    rejected_csv: Path
    log_json: Path | None
    work_dir: Path
    resume: bool
    replace: bool  # --overwrite or --resume: the outputs may be replaced
    quiet: bool
    # set by attach(), inside the command's progress display
    progress: RichProgress = field(init=False)
    printer: EpochPrinter = field(init=False)
    is_main: bool = field(init=False, default=True)

    def attach(self, progress: RichProgress, epochs: int, *, is_main: bool) -> None:
        """Show on ``progress``; only the main rank writes files."""
        self.progress, self.is_main = progress, is_main
        self.printer = EpochPrinter(progress, epochs, self.log_json if is_main else None)

    def loaded(self, dataset: Dataset) -> None:
        """Bad images to report.rejected.csv; the dataset's size; crowd outputs checked."""
        from labelclean.data.images import write_rejected_csv

        if dataset.rejections and self.is_main:
            where = write_rejected_csv(self.rejected_csv, dataset, overwrite=self.replace)
            console.print(f"skipped {len(dataset.rejections)} bad images: see {where}")
        manifest = dataset.manifest
        self.progress.log(
            f"{len(manifest)} images, {len(manifest.class_names)} classes, "
            f"{dataset.cache.image_size}px"
        )
        if manifest.votes is not None:
            from labelclean.cli._crowd import check_crowd_outputs, crowd_line

            check_crowd_outputs(self.out, self.labels, overwrite=self.replace)
            self.progress.log(crowd_line(manifest) + "; the audit starts from their consensus")
        self.printer.start(append=self.resume)

    def started(self, dataset: Dataset, run: AuditRun) -> None:
        """What trains, how, and where the checkpoints go."""
        self.progress.log(
            f"model {run.model_name} on {run.precision.describe()}; {run.config.epochs} epochs, "
            f"batch {run.batch_size}, "
            f"{schedule_note(run.config)}; checkpoints in {self.work_dir}"
        )


def print_outcome(frame: Any, out: Path, quiet: bool) -> None:
    """Results to stdout: counts per action and cluster, and where the report is."""
    n = len(frame)
    actions = frame["action"].value_counts()
    flagged = int(actions.get("relabel", 0) + actions.get("unlabel", 0))
    typer.echo(f"report: {out}  ({n} samples)")
    typer.echo(
        "keep {k}  relabel {r}  unlabel {u}  -> estimated noise {p:.1%}".format(
            k=int(actions.get("keep", 0)),
            r=int(actions.get("relabel", 0)),
            u=int(actions.get("unlabel", 0)),
            p=flagged / max(n, 1),
        )
    )
    moved = frame["guard"].value_counts()
    if len(moved):
        typer.echo("moved by the guard: " + "  ".join(f"{k} {v}" for k, v in moved.items()))
    if not quiet:
        clusters = frame["cluster"].value_counts().to_dict()
        typer.echo("clusters: " + "  ".join(f"{k} {v}" for k, v in sorted(clusters.items())))


def schedule_note(config: Any) -> str:
    """E.g. ``mixup 1, one clustering at the end`` or ``30 warmup, then the loop on T``."""
    mix = f"mixup {config.mixup:g}, " if config.mixup else ""
    if config.schedule == "once":
        return mix + "one clustering at the end"
    return mix + f"{config.warmup} warmup, then the loop on T"
