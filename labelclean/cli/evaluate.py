"""``labelclean corrupt`` and ``labelclean evaluate``: make noisy labels, score a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from labelclean.cli._app import app
from labelclean.cli._options import LabelColumnOpt, PathColumnOpt


@app.command(no_args_is_help=True)
def corrupt(
    source: Annotated[
        Path, typer.Argument(help="A CSV/Parquet manifest (path,label) or a class-folder tree.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Noisy manifest to write (.csv/.parquet).")
    ],
    noise: Annotated[str, typer.Option(help="symmetric or asymmetric.")] = "symmetric",
    rate: Annotated[float, typer.Option(help="Fraction of labels to flip, in [0, 1).")] = 0.4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    mapping: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="Asymmetric map class->class, as JSON or a JSON file "
            "[default: the paper's CIFAR-10 pairs, else the next class].",
        ),
    ] = None,
    truth_out: Annotated[
        Path | None,
        typer.Option(help="Write path,label truth here instead of a true_label column."),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder the manifest's paths are relative to.")
    ] = None,
    path_column: PathColumnOpt = "path",
    label_column: LabelColumnOpt = "label",
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Inject label noise (as in the paper) to measure cleaning against known truth."""
    import numpy as np
    import pandas as pd

    from labelclean._io import atomic_write_with, check_writable
    from labelclean.data.manifest import read_manifest
    from labelclean.errors import ConfigError
    from labelclean.evaluate import corrupt_labels

    check_writable(out, overwrite=overwrite)
    if truth_out is not None:
        check_writable(truth_out, overwrite=overwrite, flag="--truth-out")
    if source.is_dir():
        manifest = read_manifest(source)
    else:
        manifest = read_manifest(
            images or source.parent,
            source,
            path_column=path_column,
            label_column=label_column,
            allow_outside_root=True,
        )
    parsed = None
    if mapping is not None:
        text = Path(mapping).read_text() if Path(mapping).is_file() else mapping
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--map: not valid JSON ({err})") from err
        if not isinstance(parsed, dict):
            raise ConfigError('--map: expected an object such as {"cat": "dog"}')
    noisy = corrupt_labels(
        manifest.given_labels,
        manifest.class_names,
        noise=noise,
        rate=rate,
        seed=seed,
        mapping=parsed,
    )
    names = np.asarray(manifest.class_names, dtype=object)
    frame = pd.DataFrame({path_column: manifest.paths, label_column: names[noisy]})
    truth = pd.DataFrame({path_column: manifest.paths, label_column: names[manifest.given_labels]})
    if truth_out is None:
        frame["true_label"] = truth[label_column]

    def writer(df: pd.DataFrame, suffix: str):  # noqa: ANN202 - local helper
        if suffix == ".parquet":
            return lambda tmp: df.to_parquet(tmp, index=False)
        return lambda tmp: df.to_csv(tmp, index=False)

    atomic_write_with(out, writer(frame, out.suffix.lower()), overwrite=overwrite)
    if truth_out is not None:
        atomic_write_with(truth_out, writer(truth, truth_out.suffix.lower()), overwrite=overwrite)
    realised = float((noisy != manifest.given_labels).mean())
    typer.echo(f"wrote {out}: {len(frame)} rows, {realised:.1%} of labels flipped ({noise})")


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command(no_args_is_help=True)
def evaluate(
    report: Annotated[Path, typer.Argument(help="report.parquet from `labelclean audit`.")],
    truth: Annotated[Path, typer.Option(help="CSV/Parquet with the true label of each path.")],
    truth_label_column: Annotated[
        str | None,
        typer.Option(help="Truth column [default: true_label if present, else label]."),
    ] = None,
    truth_path_column: Annotated[str, typer.Option(help="Truth path column.")] = "path",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a report against the true labels: detection and label precision/recall."""
    from rich.console import Console
    from rich.table import Table

    from labelclean.data.manifest import _read_table
    from labelclean.evaluate import cleaning_metrics, metrics_json, read_truth
    from labelclean.report.parquet import read_report

    rep = read_report(report)
    if truth_label_column is None:
        columns = _read_table(truth).columns if truth.is_file() else []
        truth_label_column = "true_label" if "true_label" in columns else "label"
    labels = read_truth(
        truth, rep.frame, path_column=truth_path_column, label_column=truth_label_column
    )
    m = cleaning_metrics(rep.frame, labels)
    if as_json:
        typer.echo(metrics_json(m))
        return
    console = Console()
    table = Table(title=f"{report} vs {truth}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in (
        "n",
        "noisy",
        "given_precision",
        "flagged",
        "detection_precision",
        "detection_recall",
        "detection_f1",
        "label_precision",
        "label_recall",
        "relabel_accuracy",
        "cleaned_accuracy",
    ):
        table.add_row(key.replace("_", " "), _fmt(m[key]))
    console.print(table)
    clusters = Table(title="per cluster")
    for col in ("cluster", "n", "noise rate"):
        clusters.add_column(col, justify="right")
    for name, c in m["clusters"].items():
        clusters.add_row(name, str(c["n"]), _fmt(c["noise_rate"]))
    console.print(clusters)
    classes = Table(title="per class (by given label)")
    for col in ("class", "n", "true noise", "flagged", "relabeled out", "relabeled in"):
        classes.add_column(col, justify="right")
    for row in m["per_class"]:
        classes.add_row(
            row["class"],
            str(row["n"]),
            _fmt(row["true_noise"]),
            _fmt(row["flagged"]),
            str(row["relabeled_out"]),
            str(row["relabeled_in"]),
        )
    console.print(classes)
    if m["top_flips"]:
        flips = Table(title="top given -> clean relabels")
        for col in ("given", "clean", "count"):
            flips.add_column(col, justify="right")
        for f in m["top_flips"][:10]:
            flips.add_row(f["given"], f["clean"], str(f["count"]))
        console.print(flips)
