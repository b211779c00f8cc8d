"""``labelclean check``: validate a dataset and build its image cache without training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelclean.cli import _options as opt
from labelclean.cli._app import app
from labelclean.cli._console import RichProgress
from labelclean.cli._signals import StopRequest


@app.command(no_args_is_help=True)
def check(
    images: opt.ImagesArg,
    labels: opt.LabelsArg = None,
    path_column: opt.PathColumnOpt = "path",
    label_column: opt.LabelColumnsOpt = None,
    annotator_column: opt.AnnotatorColumnOpt = None,
    allow_outside_root: opt.AllowOutsideRootOpt = False,
    normalize_labels: opt.NormalizeLabelsOpt = False,
    on_bad_image: opt.OnBadImageOpt = "error",
    max_bad_fraction: opt.MaxBadFractionOpt = 0.05,
    max_pixels: opt.MaxPixelsOpt = None,
    image_size: opt.ImageSizeOpt = None,
    cache_dir: opt.CacheDirOpt = None,
    rejected_out: Annotated[
        Path, typer.Option(help="Where skipped rows are listed (with --on-bad-image skip).")
    ] = Path("rejected.csv"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --rejected-out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Validate a dataset: read the manifest, decode every image once, print a summary."""
    import numpy as np

    from labelclean._io import check_writable
    from labelclean.data.images import load_dataset, write_rejected_csv

    if on_bad_image == "skip":
        check_writable(
            rejected_out,
            overwrite=overwrite,
            flag="--rejected-out",
            inputs={"IMAGES": images, "LABELS": labels},
        )
    with RichProgress(quiet=quiet) as progress, StopRequest() as stop:
        dataset = load_dataset(
            images,
            labels,
            progress=progress,
            should_stop=stop,
            **opt.data_kwargs(
                path_column=path_column,
                label_column=label_column,
                annotator_column=annotator_column,
                allow_outside_root=allow_outside_root,
                normalize_labels=normalize_labels,
                on_bad_image=on_bad_image,
                max_bad_fraction=max_bad_fraction,
                max_pixels=max_pixels,
                image_size=image_size,
                cache_dir=cache_dir,
            ),
        )
    m, cache = dataset.manifest, dataset.cache
    counts = np.bincount(m.given_labels, minlength=len(m.class_names))
    typer.echo(f"{len(m)} images in {len(m.class_names)} classes from {m.source}")
    typer.echo("  " + "  ".join(f"{n}: {c}" for n, c in zip(m.class_names, counts)))
    if m.votes is not None:
        from labelclean.cli._crowd import crowd_line

        typer.echo(crowd_line(m) + "; the class counts above are of their consensus")
    typer.echo(f"image size {cache.image_size}px; cache {cache.path}")
    if dataset.rejections:
        path = write_rejected_csv(rejected_out, dataset, overwrite=overwrite, flag="--rejected-out")
        typer.echo(f"skipped {len(dataset.rejections)} bad images, listed in {path}")
