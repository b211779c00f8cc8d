"""``labelclean finetune`` (train on the audited data, export) and ``labelclean predict``.

Both only parse options, call the library (:func:`labelclean.finetune`,
:func:`labelclean.predict`) and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelclean.cli._app import app
from labelclean.cli._console import RichProgress
from labelclean.cli._options import (
    CacheDirOpt,
    ImagesArg,
    LabelColumnOpt,
    LabelsArg,
    MaxBadFractionOpt,
    OnBadImageOpt,
    PathColumnOpt,
    network_fields,
)

_TRAIN = "Training"


@app.command(no_args_is_help=True)
def finetune(
    report_path: Annotated[Path, typer.Argument(help="report.parquet from `labelclean audit`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the exported model.")],
    test: Annotated[
        Path | None,
        typer.Option(help="Test images: a class-folder tree, or a folder with --test-labels."),
    ] = None,
    test_labels: Annotated[
        Path | None, typer.Option(help="CSV/Parquet manifest (path,label) for --test.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Architecture \\[default: the audit's].", rich_help_panel=_TRAIN),
    ] = None,
    pretrained: Annotated[
        bool, typer.Option(help="Start from timm's pretrained weights.", rich_help_panel=_TRAIN)
    ] = False,
    weights: Annotated[
        Path | None, typer.Option(help="Start from a local state dict.", rich_help_panel=_TRAIN)
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="audit: start from the network the audit trained (saved beside the report); "
            "scratch: a fresh one \\[default: audit when the report has a network that fits].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    epochs: Annotated[
        int,
        typer.Option(
            help="Epochs; each draws as many labeled samples as there are images (the labeled "
            "set cycled), the budget of training on everything.",
            rich_help_panel=_TRAIN,
        ),
    ] = 30,
    lr: Annotated[float, typer.Option(help="SGD learning rate.", rich_help_panel=_TRAIN)] = 0.02,
    batch_size: Annotated[
        int, typer.Option(help="B: labeled samples per step.", rich_help_panel=_TRAIN)
    ] = 64,
    mu: Annotated[
        int,
        typer.Option(
            help="Unlabeled per labeled sample in mixed batches, at most the unlabeled set's "
            "share (so no unlabeled sample is drawn far more often than a labeled one).",
            rich_help_panel=_TRAIN,
        ),
    ] = 7,
    tau: Annotated[
        float,
        typer.Option(help="Confidence a pseudo label needs to count.", rich_help_panel=_TRAIN),
    ] = 0.95,
    lambda_m: Annotated[
        float, typer.Option(help="Weight of the mixed-batch loss.", rich_help_panel=_TRAIN)
    ] = 1.0,
    mixup: Annotated[
        float | None,
        typer.Option(
            help="Beta(a, a) input mixup on the labeled batch; 0 = off \\[default: 1 for a head "
            "on a --frozen report's embeddings, 0 for a network].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    eval_every: Annotated[
        int, typer.Option(help="Evaluate --test every k epochs.", rich_help_panel=_TRAIN)
    ] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.", rich_help_panel=_TRAIN)] = 0,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=_TRAIN)
    ] = "auto",
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="Autocast where fast.", rich_help_panel=_TRAIN)
    ] = True,
    image_root: Annotated[
        Path | None,
        typer.Option(
            help="Folder the report's paths are relative to, if the images moved "
            "\\[default: the report's image root].",
            rich_help_panel="Data",
        ),
    ] = None,
    on_bad_image: OnBadImageOpt = "error",
    max_bad_fraction: MaxBadFractionOpt = 0.05,
    cache_dir: CacheDirOpt = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace a model folder an earlier finetune wrote (nothing else)."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    work_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints after every epoch \\[default: <out>.work].")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest good checkpoint in --work-dir.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="With --resume: continue even if the report or options changed.")
    ] = False,
    decisions: Annotated[
        Path | None,
        typer.Option(
            help="Train on the reviewed labels: a decisions file of `labelclean review` (or a "
            "Label Studio export); dropped images are left out."
        ),
    ] = None,
) -> None:
    """Train a model on the cleaned labels plus the unlabeled rest (paper 3.3) and export it."""
    from labelclean.api import FinetuneInterrupted
    from labelclean.api import finetune as finetune_report
    from labelclean.cli._signals import StopRequest, resume_command
    from labelclean.config import FinetuneConfig
    from labelclean.distributed import init_from_env
    from labelclean.training import resolve_device

    config = FinetuneConfig(  # options first: a bad number is refused before any reading
        **network_fields(model, pretrained, weights),
        init=init,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        mu=mu,
        tau=tau,
        lambda_m=lambda_m,
        mixup=mixup,
        seed=seed,
        device=device,
        amp=amp,
        eval_every=eval_every,
    )
    dist = init_from_env(resolve_device(device))
    with RichProgress(quiet=quiet or not dist.is_main) as progress, StopRequest() as stop:
        try:
            result = finetune_report(
                report_path,
                out,
                config=config,
                test=test,
                test_labels=test_labels,
                image_root=image_root,
                decisions=decisions,
                on_bad_image=on_bad_image,
                max_bad_fraction=max_bad_fraction,
                cache_dir=cache_dir,
                overwrite=overwrite,
                work_dir=work_dir,
                resume=resume,
                force=force,
                progress=progress,
                on_epoch=lambda line: progress.log(" ".join(f"{k} {v}" for k, v in line.items())),
                log=progress.log,
                should_stop=stop,
                dist=dist,
            )
        except FinetuneInterrupted as stopped:
            typer.echo(
                "interrupted before any checkpoint; nothing was written and there is nothing "
                "to resume: run the command again to start over"
                if stopped.work_dir is None
                else f"interrupted; checkpoints are in {stopped.work_dir}. Resume with:\n  "
                f"{resume_command()}",
                err=True,
            )
            raise typer.Exit(stop.exit_code) from None
    if not dist.is_main:
        return
    typer.echo(f"model: {out}")
    if result.test_accuracy is not None:
        typer.echo(f"test accuracy {result.test_accuracy:.4f}")


@app.command(no_args_is_help=True)
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model exported by `labelclean finetune`.")],
    images: ImagesArg,
    labels: LabelsArg = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Predictions (.parquet or .csv).")
    ] = Path("predictions.parquet"),
    path_column: PathColumnOpt = "path",
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Predict classes for new images with an exported model.

    Without LABELS every image file under IMAGES is predicted; with LABELS (or class
    folders) the true label is kept and accuracy printed.
    """
    from labelclean._io import check_writable
    from labelclean._predict import predict_inputs
    from labelclean.api import predict as predict_images
    from labelclean.cli._signals import StopRequest

    inputs = predict_inputs(model_dir, images, labels)
    check_writable(out, overwrite=overwrite, inputs=inputs)
    with RichProgress(quiet=quiet) as progress, StopRequest() as stop:
        found = predict_images(
            model_dir,
            images,
            labels,
            path_column=path_column,
            label_column=label_column,
            cache_dir=cache_dir,
            progress=progress,
            should_stop=stop,
        )
    found.write(out, overwrite=overwrite)
    typer.echo(f"wrote {out}: {len(found.frame)} predictions")
    if found.rejections:
        typer.echo(f"skipped {len(found.rejections)} unreadable images", err=True)
    if found.accuracy is not None:
        typer.echo(f"accuracy {found.accuracy:.4f}")
