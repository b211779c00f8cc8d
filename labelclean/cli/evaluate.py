"""``labelclean corrupt`` and ``labelclean evaluate``: make noisy labels, score a report.

Together they answer "how good is it on data like mine": corrupt clean labels with the
paper's noise, audit the noisy copy, and score the report against the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelclean.cli._app import app
from labelclean.cli._options import LabelColumnOpt, PathColumnOpt

if TYPE_CHECKING:
    import pandas as pd

    from labelclean.data.manifest import Manifest

_NOISE = "Noise"
_OUT = "Output"
_TRUTH = "Truth"
_CROWD = "Crowd"
_TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


class Noise(str, Enum):
    """Noise models of the paper (section 4.1.1)."""

    symmetric = "symmetric"
    asymmetric = "asymmetric"


def _parse_map(value: str) -> dict[str, Any]:
    """``--map`` as inline JSON (starts with ``{``) or the name of a JSON file."""
    from labelclean._io import loads_json, read_json
    from labelclean.errors import ConfigError

    if value.lstrip().startswith(("{", "[")):
        parsed = loads_json(value, ConfigError, source="--map", expected="valid JSON")
    elif Path(value).is_file():
        parsed = read_json(Path(value), ConfigError, expected="valid JSON (--map)")
    else:
        raise ConfigError(
            f'--map {value!r}: neither a JSON object (such as {{"cat": "dog"}}) nor a file'
        )
    if not isinstance(parsed, dict):
        raise ConfigError('--map: expected a JSON object of class -> class, e.g. {"cat": "dog"}')
    return parsed


def table_writer(frame: pd.DataFrame, path: Path, flag: str) -> Callable[[Path], object]:
    """A ``write(tmp)`` for the atomic writer, in the format ``path``'s suffix asks for."""
    from labelclean.errors import ConfigError

    kind = _TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{flag} {path}: expected a .csv, .tsv or .parquet file name")
    if kind == "parquet":
        return lambda tmp: frame.to_parquet(tmp, index=False)
    from labelclean._csv import frame_to_csv

    return lambda tmp: frame_to_csv(frame, tmp, sep="\t" if kind == "tsv" else ",")


@app.command(no_args_is_help=True)
def corrupt(
    source: Annotated[
        Path,
        typer.Argument(
            help="Clean labels: a CSV/Parquet manifest (path,label) or a class-folder tree.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Noisy manifest to write (.csv, .tsv or .parquet): path,label[,true_label].",
            rich_help_panel=_OUT,
            show_default=False,
        ),
    ],
    noise: Annotated[
        Noise,
        typer.Option(
            help="symmetric: a flipped label is uniform over the other classes; asymmetric: class -> class pairs.",
            rich_help_panel=_NOISE,
        ),
    ] = Noise.symmetric,
    rate: Annotated[
        float,
        typer.Option(
            help="Fraction to flip, in [0, 1): of all samples (symmetric) or of each source class (asymmetric).",
            rich_help_panel=_NOISE,
        ),
    ] = 0.4,
    seed: Annotated[
        int,
        typer.Option(
            help="Random seed; the same seed gives the same flips.", rich_help_panel=_NOISE
        ),
    ] = 0,
    mapping: Annotated[
        str | None,
        typer.Option(
            "--map",
            help='Asymmetric pairs as JSON or a JSON file, e.g. \'{"cat": "dog"}\' \\[default: the paper\'s CIFAR-10 pairs for CIFAR-10 class names, else each class to the next].',
            rich_help_panel=_NOISE,
        ),
    ] = None,
    truth_out: Annotated[
        Path | None,
        typer.Option(
            help="Write the clean labels (path,label) here instead of a true_label column.",
            rich_help_panel=_OUT,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="Folder the manifest's paths are relative to \\[default: the manifest's folder].",
            rich_help_panel="Data",
        ),
    ] = None,
    path_column: PathColumnOpt = "path",
    label_column: LabelColumnOpt = "label",
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing outputs.", rich_help_panel=_OUT)
    ] = False,
    annotators: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Simulate a crowd instead: K votes per image from K different workers, "
            "written one row per vote (path,annotator,label); --noise, --rate and --map do "
            "not apply.",
            rich_help_panel=_CROWD,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --annotators: W workers of different accuracy (.55-.95), each with "
            "their own class confusions and share of the work.",
            rich_help_panel=_CROWD,
        ),
    ] = 50,
    spammers: Annotated[
        float,
        typer.Option(
            help="With --annotators: share of the workers who vote at random.",
            rich_help_panel=_CROWD,
        ),
    ] = 0.1,
) -> None:
    """Inject label noise as in the paper, or simulate a crowd, to measure cleaning against known truth.

    Example: labelclean corrupt labels.csv --noise symmetric --rate 0.4 --out noisy.csv

    Crowd: labelclean corrupt labels.csv --annotators 3 --workers 50 --out votes.csv
    """
    import numpy as np
    import pandas as pd

    from labelclean._io import atomic_write_with, check_writable
    from labelclean.errors import ConfigError
    from labelclean.evaluate import asymmetric_map, corrupt_labels

    if not 0 <= rate < 1:  # before reading anything
        raise ConfigError(f"--rate {rate}: expected a fraction in [0, 1), e.g. 0.4")
    inputs = {"SOURCE": source, "--images": images}
    check_writable(out, overwrite=overwrite, inputs=inputs)
    if truth_out is not None:
        check_writable(
            truth_out, overwrite=overwrite, flag="--truth-out", inputs={**inputs, "--out": out}
        )
    pairs = _parse_map(mapping) if mapping is not None else None
    if pairs is not None and (noise is not Noise.asymmetric or annotators is not None):
        raise ConfigError("--map applies to --noise asymmetric only, not to --annotators")
    manifest = _read_source(source, images, path_column=path_column, label_column=label_column)
    if annotators is not None:
        from labelclean.cli._crowd import write_crowd

        write_crowd(
            manifest,
            out,
            truth_out,
            overwrite=overwrite,
            votes_per_image=annotators,
            workers=workers,
            spammers=spammers,
            seed=seed,
        )
        return
    noisy = corrupt_labels(
        manifest.given_labels,
        manifest.class_names,
        noise=noise.value,
        rate=rate,
        seed=seed,
        mapping=pairs,
    )
    names = np.asarray(manifest.class_names, dtype=object)
    paths = np.asarray(manifest.paths, dtype=object)
    frame = pd.DataFrame({"path": paths, "label": names[noisy]})
    truth = pd.DataFrame({"path": paths, "label": names[manifest.given_labels]})
    if truth_out is None:
        frame["true_label"] = truth["label"]
    write_out = table_writer(frame, out, "--out")
    write_truth = table_writer(truth, truth_out, "--truth-out") if truth_out else None
    atomic_write_with(out, write_out, overwrite=overwrite)
    if truth_out is not None and write_truth is not None:
        atomic_write_with(truth_out, write_truth, overwrite=overwrite, flag="--truth-out")

    flipped = noisy != manifest.given_labels
    n = len(noisy)
    typer.echo(
        f"wrote {out}: {n} rows, {int(flipped.sum())} labels flipped "
        f"({flipped.mean():.1%}, {noise.value} noise at --rate {rate}, seed {seed})"
    )
    if noise is Noise.asymmetric:
        code = {c: i for i, c in enumerate(manifest.class_names)}
        for src, dst in (pairs or asymmetric_map(manifest.class_names)).items():
            members = manifest.given_labels == code[src]
            typer.echo(
                f"  {src} -> {dst}: {int((flipped & members).sum())} of {int(members.sum())}"
            )
    print_next(manifest, out, truth_out)


def _read_source(source: Path, images: Path | None, *, path_column: str, label_column: str) -> Any:
    """The manifest to corrupt: a class-folder tree, or a CSV/Parquet file (never opened)."""
    from labelclean.data.manifest import read_manifest

    if source.is_dir():
        return read_manifest(source)
    return read_manifest(
        images if images is not None else source.parent,
        source,
        path_column=path_column,
        label_column=label_column,
        allow_outside_root=True,  # corrupt never opens the images
    )


def print_next(manifest: Manifest, out: Path, truth_out: Path | None) -> None:
    """Where the truth went, and the commands that measure a cleaning against it."""
    truth_file = truth_out if truth_out is not None else out
    typer.echo(f"truth: {truth_file}" + ("" if truth_out else " (column true_label)"))
    typer.echo(
        f"next: labelclean audit {manifest.root} {out} --out report.parquet && "
        f"labelclean evaluate report.parquet --truth {truth_file}"
    )


def format_value(value: object) -> str:
    """A figure for the tables: floats to 3 decimals, a missing one as ``n/a``."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


_FIGURES = (
    ("n", "samples"),
    ("noisy", "wrong given labels"),
    ("given_precision", "given labels' precision (1 - noise rate)"),
    ("flagged", "flagged (relabel or unlabel)"),
    ("detection_precision", "flagged and wrong / flagged"),
    ("detection_recall", "flagged and wrong / wrong"),
    ("detection_f1", "harmonic mean of the two"),
    ("label_precision", "labeled rows with a true clean label / labeled rows"),
    ("label_recall", "labeled rows with a true clean label / all rows"),
    ("relabel_accuracy", "relabel rows with a true clean label / relabel rows"),
    ("cleaned_accuracy", "clean label (pseudo label if unlabeled) true / all rows"),
)


def _print_tables(m: dict[str, Any], title: str, *, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    figures = Table(title=title)
    for col, justify in (("figure", "left"), ("value", "right"), ("definition", "left")):
        figures.add_column(col, justify=justify)  # type: ignore[arg-type]
    for key, definition in _FIGURES:
        figures.add_row(key.replace("_", " "), format_value(m[key]), definition)
    console.print(figures)
    console.print("actions: " + ", ".join(f"{a} {count}" for a, count in m["actions"].items()))
    if m["clusters"]:
        clusters = Table(title="per cluster")
        for col in ("cluster", "n", "noise rate", "keep", "relabel", "unlabel"):
            clusters.add_column(col, justify="right")
        for name, c in m["clusters"].items():
            clusters.add_row(
                name,
                str(c["n"]),
                format_value(c["noise_rate"]),
                str(c["keep"]),
                str(c["relabel"]),
                str(c["unlabel"]),
            )
        console.print(clusters)
    classes = Table(
        title="per class (noise, flagged, detection by given label; precision by clean label)"
    )
    columns = (
        ("class", "class"), ("n", "n_given"), ("noise", "noise_rate"), ("flagged", "flagged_rate"),
        ("det. recall", "detection_recall"), ("label P", "label_precision"), ("label R", "label_recall"),
        ("out", "relabeled_out"), ("in", "relabeled_in"),
    )  # fmt: skip
    for header, _ in columns:
        classes.add_column(header, justify="right")
    for row in m["per_class"]:
        classes.add_row(*(format_value(row[key]) for _, key in columns))
    console.print(classes)
    confusion = m["confusion"]
    if len(confusion["given"]) <= 12:
        conf = Table(title="given (rows) -> clean (columns)")
        conf.add_column("given")
        for name in confusion["clean"]:
            conf.add_column(name, justify="right")
        for name, counts in zip(confusion["given"], confusion["counts"]):
            conf.add_row(name, *(str(v) for v in counts))
        console.print(conf)
    else:
        console.print(f"given -> clean confusion: {len(confusion['given'])} classes, see --json")
    if m["top_flips"]:
        flips = Table(title="most frequent given -> clean relabels")
        for col in ("given", "clean", "count", "correct"):
            flips.add_column(col, justify="right")
        for f in m["top_flips"][:top]:
            flips.add_row(f["given"], f["clean"], str(f["count"]), str(f["correct"]))
        console.print(flips)


@app.command(no_args_is_help=True)
def evaluate(
    report: Annotated[
        Path, typer.Argument(help="report.parquet from `labelclean audit`.", show_default=False)
    ],
    truth: Annotated[
        Path,
        typer.Option(
            help="CSV/Parquet with the true label of each path (e.g. from `labelclean corrupt`).",
            rich_help_panel=_TRUTH,
            show_default=False,
        ),
    ],
    truth_label_column: Annotated[
        str | None,
        typer.Option(
            help="Truth column with the true labels \\[default: true_label if present, else label].",
            rich_help_panel=_TRUTH,
        ),
    ] = None,
    truth_path_column: Annotated[
        str, typer.Option(help="Truth column with the image paths.", rich_help_panel=_TRUTH)
    ] = "path",
    top: Annotated[
        int,
        typer.Option(
            min=0,
            help="How many given -> clean relabel pairs to list (at most 20).",
            rich_help_panel=_OUT,
        ),
    ] = 10,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON object instead of tables.", rich_help_panel=_OUT
        ),
    ] = False,
) -> None:
    """Score a report against the true labels: detection and label precision/recall, per class.

    For crowd votes also the majority vote, the consensus the audit started from, the final
    labels, and how well the annotators table ranks the annotators (Spearman's rho of
    estimated against true accuracy; needs <report>.annotators.parquet beside the report).

    Example: labelclean evaluate report.parquet --truth truth.csv
    """
    from labelclean.evaluate import cleaning_metrics, metrics_json, read_truth
    from labelclean.report.parquet import read_report

    needed = ["path", "given_label", "cluster", "action", "clean_label", "pseudo_label"]
    crowd = "crowd" in read_report(report, columns=["path"]).metadata
    rep = read_report(report, columns=needed + ["votes"] * crowd)  # the traces are not needed
    labels = read_truth(
        truth,
        rep.frame,
        path_column=truth_path_column,
        label_column=truth_label_column,
        class_names=rep.class_names,
    )
    metrics = cleaning_metrics(rep.frame, labels)
    if crowd:
        from labelclean.crowd.scoring import crowd_scores
        from labelclean.report.annotators import read_annotators

        annotators = read_annotators(report, rep.metadata)
        metrics["crowd"] = crowd_scores(rep.frame, labels, annotators)
    if as_json:
        typer.echo(metrics_json(metrics))
        return
    _print_tables(metrics, f"{report} vs {truth}", top=top)
    if crowd:
        from labelclean.cli._crowd import print_crowd_scores

        print_crowd_scores(metrics["crowd"])
