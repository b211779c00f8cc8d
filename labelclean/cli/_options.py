"""Data options shared by the commands that read a dataset (check, audit, predict, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

_DATA = "Data"

ImagesArg = Annotated[
    Path,
    typer.Argument(
        help="Image folder (one sub-folder per class when no LABELS file is given).",
        show_default=False,
    ),
]
LabelsArg = Annotated[
    Path | None,
    typer.Argument(
        help="CSV or Parquet manifest with path,label columns (or crowd votes: "
        "path,annotator,label).",
        show_default=False,
    ),
]
PathColumnOpt = Annotated[
    str, typer.Option(help="Manifest column with image paths.", rich_help_panel=_DATA)
]
LabelColumnOpt = Annotated[
    str, typer.Option(help="Manifest column with labels.", rich_help_panel=_DATA)
]
LabelColumnsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label-column",
        help="Manifest column with labels; repeat it for one vote column per annotator "
        "(crowd votes, wide: --label-column a1 --label-column a2; empty cells are missing "
        "votes) \\[default: label].",
        rich_help_panel=_DATA,
        show_default=False,
    ),
]
AnnotatorColumnOpt = Annotated[
    str | None,
    typer.Option(
        help="Manifest column naming who voted: one row per vote (crowd votes, long) "
        "\\[default: annotator, when the manifest has it].",
        rich_help_panel=_DATA,
        show_default=False,
    ),
]
AllowOutsideRootOpt = Annotated[
    bool,
    typer.Option(help="Accept paths that leave the image folder.", rich_help_panel=_DATA),
]
NormalizeLabelsOpt = Annotated[
    bool,
    typer.Option(
        help="Merge class names that differ only in case or surrounding spaces ('cat', "
        "'cat ', 'Cat'): spaces stripped, each takes its most frequent spelling \\[default: "
        "such names are an error naming both].",
        rich_help_panel=_DATA,
        show_default=False,
    ),
]
OnBadImageOpt = Annotated[
    str,
    typer.Option(
        help="error: refuse bad images (listing them); skip: leave them out (audit lists them "
        "beside --out: report.rejected.csv for report.parquet; check in --rejected-out).",
        rich_help_panel=_DATA,
    ),
]
MaxBadFractionOpt = Annotated[
    float,
    typer.Option(
        help="With --on-bad-image skip: refuse above this fraction.", rich_help_panel=_DATA
    ),
]
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option(
        help="Refuse larger images as decompression bombs, and files larger than 8 bytes a "
        "pixel of it plus 64 MiB \\[default: 89.5M].",
        rich_help_panel=_DATA,
    ),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="Square size images are resized to \\[default: inferred, e.g. 32 for CIFAR].",
        rich_help_panel=_DATA,
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Decoded-image cache \\[default: $LABELCLEAN_CACHE_DIR or ~/.cache/labelclean].",
        rich_help_panel=_DATA,
    ),
]


def data_kwargs(
    *,
    path_column: str,
    label_column: str | list[str] | None,
    allow_outside_root: bool,
    on_bad_image: str,
    max_bad_fraction: float,
    max_pixels: int | None,
    image_size: int | None,
    cache_dir: Path | None,
    annotator_column: str | None = None,
    normalize_labels: bool = False,
) -> dict[str, Any]:
    """The data options as keyword arguments for ``labelclean.data.images.load_dataset``."""
    out: dict[str, Any] = {
        "path_column": path_column,
        "label_column": label_column or "label",
        "annotator_column": annotator_column,
        "allow_outside_root": allow_outside_root,
        "normalize_labels": normalize_labels,
        "on_bad_image": on_bad_image,
        "max_bad_fraction": max_bad_fraction,
        "image_size": image_size,
        "cache_dir": cache_dir,
    }
    if max_pixels is not None:
        out["max_pixels"] = max_pixels
    return out


def network_fields(
    model: str | None, pretrained: bool | None, weights: Path | None
) -> dict[str, Any]:
    """The network options as config fields: ``weights`` a string, as the config's JSON has it."""
    return {"model": model, "pretrained": pretrained, "weights": str(weights) if weights else None}
