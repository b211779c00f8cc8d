"""``labelclean audit``: run FGCM and write report.parquet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelclean.cli._app import app
from labelclean.cli._console import RichProgress
from labelclean.cli._options import (
    AllowOutsideRootOpt,
    AnnotatorColumnOpt,
    CacheDirOpt,
    ImagesArg,
    ImageSizeOpt,
    LabelColumnsOpt,
    LabelsArg,
    MaxBadFractionOpt,
    MaxPixelsOpt,
    NormalizeLabelsOpt,
    OnBadImageOpt,
    PathColumnOpt,
    data_kwargs,
    network_fields,
)
from labelclean.cli._screen import AuditScreen, print_outcome
from labelclean.cli._signals import StopRequest, resume_command

if TYPE_CHECKING:
    from labelclean.config import AuditConfig
    from labelclean.distributed import Dist

_MODEL = "Model"
_TRAIN = "Training"
_CLUSTER = "Clustering"
_OUT = "Output"


def _check_outputs(
    out: Path,
    work_dir: Path | None,
    *,
    inputs: dict[str, Path | None],
    replace: bool,
    on_bad_image: str,
    log_json: Path | None,
    frozen: tuple[bool, int | None, int | None],
) -> tuple[Path, Path]:
    """Refuse unusable outputs and frozen-only flags before any work.

    Returns the work directory and the rejected-images CSV beside ``out``.
    """
    from labelclean._io import check_work_dir, check_writable, sidecar_path
    from labelclean.audit_network import check_network_output
    from labelclean.checkpoint import default_work_dir
    from labelclean.fgcm.frozen import check_frozen_flags

    check_writable(out, overwrite=replace, inputs=inputs)
    check_frozen_flags(frozen[0], folds=frozen[1], neighbours=frozen[2])
    if not frozen[0]:  # the network the audit trains goes beside the report
        check_network_output(out, overwrite=replace, inputs=inputs)
    work_dir = check_work_dir(work_dir or default_work_dir(out), flag="--work-dir", inputs=inputs)
    rejected_csv = sidecar_path(out, ".rejected.csv")
    if on_bad_image == "skip":
        check_writable(rejected_csv, overwrite=replace, inputs=inputs)
    if log_json is not None:
        check_writable(log_json, overwrite=replace, flag="--log-json", inputs=inputs)
    return work_dir, rejected_csv


@app.command(no_args_is_help=True)
def audit(
    images: ImagesArg,
    labels: LabelsArg = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Report file to write.", rich_help_panel=_OUT)
    ] = Path("report.parquet"),
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing --out.", rich_help_panel=_OUT)
    ] = False,
    log_json: Annotated[
        Path | None,
        typer.Option(
            help="Write one JSON line per epoch to this file (appended to with --resume).",
            rich_help_panel=_OUT,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bars or epoch lines.", rich_help_panel=_OUT
        ),
    ] = False,
    path_column: PathColumnOpt = "path",
    label_column: LabelColumnsOpt = None,
    annotator_column: AnnotatorColumnOpt = None,
    allow_outside_root: AllowOutsideRootOpt = False,
    normalize_labels: NormalizeLabelsOpt = False,
    on_bad_image: OnBadImageOpt = "error",
    max_bad_fraction: MaxBadFractionOpt = 0.05,
    max_pixels: MaxPixelsOpt = None,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="air_cnn, small_cnn, preact_resnet18 or any timm model name \\[default: "
            "air_cnn on a CPU for 16-64 px, small_cnn below; else preact_resnet18 or resnet18].",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    pretrained: Annotated[
        bool,
        typer.Option(
            help="Start from timm's pretrained weights (downloads).", rich_help_panel=_MODEL
        ),
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Local state dict (.safetensors or weights-only torch file).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="'paper': the paper's Algorithm 1 exactly (PreAct ResNet-18, 350 epochs, warmup "
            "80, union T, no guard, relabel, no extra clustering); with --epochs, scaled.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Total epochs \\[default: 40].", rich_help_panel=_TRAIN)
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help="once: train on all samples, cluster once after the last epoch (best measured "
            "on human label noise); paper: the paper's loop on T after --warmup \\[default: "
            "once; paper with --preset paper, --warmup or --frozen].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(
            help="Epochs on all samples before the loop on T (implies --schedule paper) "
            "\\[default: 3/4 of the epochs for a network that does not memorise in them "
            "(small_cnn, or with --mixup except --frozen), 1/4 for others].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    mixup: Annotated[
        float | None,
        typer.Option(
            help="Beta(a, a) input mixup while training, 0 = off; needs --record eval "
            "\\[default: 1 with --schedule once or --frozen, 0 with paper].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="SGD learning rate \\[default: 0.1 for air_cnn, else 0.02; the paper preset "
            "uses 0.06].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(
            help="cosine, step (paper) or constant \\[default: cosine].", rich_help_panel=_TRAIN
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Batch size \\[default: 128; smaller on a set too small for 100 optimizer "
            "steps in --epochs, at least 8].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    hflip: Annotated[
        bool | None,
        typer.Option(
            "--hflip/--no-hflip",
            help="Random horizontal flips \\[default: on].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed \\[default: 0].", rich_help_panel=_TRAIN)
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto, cpu, cuda, cuda:N or mps \\[default: auto].", rich_help_panel=_TRAIN
        ),
    ] = None,
    amp: Annotated[
        bool | None,
        typer.Option(
            "--amp/--no-amp",
            help="bf16/fp16 autocast where the device is fast at it \\[default: amp].",
            rich_help_panel=_TRAIN,
            show_default=False,
        ),
    ] = None,
    deterministic: Annotated[
        bool,
        typer.Option(
            help="Deterministic algorithms (identical reports on the CPU).", rich_help_panel=_TRAIN
        ),
    ] = False,
    record: Annotated[
        str | None,
        typer.Option(
            help="eval: the paper's extra pass over all samples; train: the "
            "training pass's probabilities (cheaper, noisier) \\[default: eval].",
            rich_help_panel=_CLUSTER,
        ),
    ] = None,
    components: Annotated[
        int | None,
        typer.Option(
            help="5 = FGCM; 2 = the loss-only split of prior work \\[default: 5].",
            rich_help_panel=_CLUSTER,
        ),
    ] = None,
    cluster_method: Annotated[
        str | None,
        typer.Option(help="gmm or kmeans (ablation) \\[default: gmm].", rich_help_panel=_CLUSTER),
    ] = None,
    t_update: Annotated[
        str | None,
        typer.Option(
            help="latest: T = this epoch's refined clusters; union: the paper's growing T "
            "\\[default: latest; union with --preset paper].",
            rich_help_panel=_CLUSTER,
        ),
    ] = None,
    guard: Annotated[
        str | None,
        typer.Option(
            help="Low-noise guard: budget (confident relabels only, flags capped near the "
            "model's disagreement, and the report flags only labels it disputes when it did "
            "not memorise them; no class dropped from T), confident (the cap is the "
            "estimated share of wrong labels, unsure disagreements keep their label) or none "
            "(the paper's literal rule) \\[default: budget; with --schedule paper, confident "
            "for a network that does not memorise (small_cnn, --mixup except --frozen)].",
            rich_help_panel=_CLUSTER,
        ),
    ] = None,
    relabel: Annotated[
        bool | None,
        typer.Option(
            "--relabel/--no-relabel",
            help="NS samples get their pseudo label (the paper) or are unlabeled (safer with a weak network). "
            "\\[default: relabel, except for a network that does not memorise: small_cnn, "
            "or with --mixup except --frozen]",
            rich_help_panel=_CLUSTER,
            show_default=False,
        ),
    ] = None,
    semi_epochs: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Epochs of finetune's mixed semi-training after the report, on its kept and "
            "relabeled rows plus the unlabeled rest; that network then suggests the "
            "unlabeled rows' pseudo labels (keeping those whose suggestion is their given "
            "label: guard semi_agrees) and is the one saved for finetune. 0 = off. "
            "\\[default: 5; 0 with --schedule paper or --frozen]",
            rich_help_panel=_CLUSTER,
            show_default=False,
        ),
    ] = None,
    frozen: Annotated[
        bool,
        typer.Option(
            help="Fast audit: train only a head on embeddings of a frozen --model; needs its "
            "weights, --weights or --pretrained.",
            rich_help_panel=_MODEL,
        ),
    ] = False,
    head: Annotated[
        str | None,
        typer.Option(
            help="With --frozen: the head, mlp (one hidden layer of 512) or linear "
            "\\[default: mlp].",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    frozen_flip: Annotated[
        bool,
        typer.Option(
            help="With --frozen: also embed mirrored images (augmentation).", rich_help_panel=_MODEL
        ),
    ] = False,
    frozen_folds: Annotated[
        int | None,
        typer.Option(
            help="With --frozen: cross-fitted heads; each sample's confidence comes from a head "
            "that never trained on it (1 = one head on everything) \\[default: 5].",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    neighbours: Annotated[
        int | None,
        typer.Option(
            help="With --frozen: k nearest neighbours in the embedding space whose labels vote "
            "on each sample (0 = off) \\[default: 10].",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoints go here after every epoch \\[default: <out>.work].",
            rich_help_panel=_OUT,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from the newest good checkpoint in --work-dir.", rich_help_panel=_OUT
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="With --resume: continue even if the manifest, options or tool version changed.",
            rich_help_panel=_OUT,
        ),
    ] = False,
) -> None:
    """Find wrong labels: train with FGCM and write one report row per image.

    IMAGES is a folder; LABELS a CSV/Parquet manifest (path,label) with paths relative to
    IMAGES. Without LABELS, each sub-folder of IMAGES is a class. Crowd votes (a manifest
    with an annotator column, one row per vote, or several --label-column) start from their
    consensus, and the annotators table is written beside the report
    (report.parquet -> report.annotators.parquet).
    """
    from labelclean.config import AuditConfig
    from labelclean.distributed import init_from_env
    from labelclean.training import resolve_device

    work_dir, rejected_csv = _check_outputs(
        out,
        work_dir,
        inputs={"IMAGES": images, "LABELS": labels, "--weights": weights},
        replace=overwrite or resume,
        on_bad_image=on_bad_image,
        log_json=log_json,
        frozen=(frozen, frozen_folds, neighbours),
    )
    dist = init_from_env(resolve_device(device or "auto"))
    # Every option that is a setting defaults to None, "not given": only the options given
    # override the preset (``--preset paper`` is Algorithm 1 whatever the CLI's defaults).
    config = AuditConfig.from_preset(
        preset,
        **network_fields(model, pretrained or None, weights),  # None: the preset's choice
        epochs=epochs,
        schedule=schedule,
        warmup=warmup,
        mixup=mixup,
        lr=lr,
        lr_schedule=lr_schedule,
        batch_size=batch_size,
        hflip=hflip,
        seed=seed,
        device=device,
        amp=amp,
        deterministic=deterministic or None,
        record=record,
        components=components,
        cluster_method=cluster_method,
        t_update=t_update,
        guard=guard,
        relabel=relabel,
        semi_epochs=semi_epochs,
    )
    data_options = data_kwargs(
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
    )
    frozen_options = {"frozen": frozen, "head": head, "frozen_flip": frozen_flip}
    frozen_options |= {"frozen_folds": frozen_folds, "neighbours": neighbours}
    screen = AuditScreen(
        out=out,
        labels=labels,
        rejected_csv=rejected_csv,
        log_json=log_json,
        work_dir=work_dir,
        resume=resume,
        replace=overwrite or resume,
        quiet=quiet,
    )
    _run_audit(
        images,
        labels,
        config,
        screen,
        dist=dist,
        force=force,
        data_options=data_options,
        frozen_options=frozen_options,
    )


def _run_audit(
    images: Path,
    labels: Path | None,
    config: AuditConfig,
    screen: AuditScreen,
    *,
    dist: Dist,
    force: bool,
    data_options: dict[str, Any],
    frozen_options: dict[str, Any],
) -> None:
    """``labelclean.audit`` with the CLI's screen attached; then write and print the outcome."""
    from labelclean.api import audit as audit_images
    from labelclean.checkpoint import clear_checkpoints
    from labelclean.fgcm.audit import AuditInterrupted

    with RichProgress(quiet=screen.quiet or not dist.is_main) as progress, StopRequest() as stop:
        screen.attach(progress, config.epochs, is_main=dist.is_main)
        try:
            result = audit_images(
                images,
                labels,
                config=config,
                data_options=data_options,
                progress=progress,
                on_loaded=screen.loaded,
                on_start=screen.started,
                on_epoch=screen.printer,
                work_dir=screen.work_dir,
                resume=screen.resume,
                force=force,
                should_stop=stop,
                dist=dist,
                **frozen_options,
            )
        except AuditInterrupted as interrupted:
            typer.echo(
                f"interrupted; the checkpoint of epoch {interrupted.state.epoch} is in "
                f"{screen.work_dir}. Resume with:\n  {resume_command()}",
                err=True,
            )
            raise typer.Exit(stop.exit_code) from None
        progress.log(
            f"model {result.metadata['model']} on {result.metadata['precision']}, "
            f"{result.metadata['wall_time_s']:.0f}s"
        )
        if semi := result.metadata.get("semi"):
            progress.log(
                f"semi-training, {semi['epochs']} epoch{'s' * (semi['epochs'] != 1)} "
                f"({semi['seconds']:.0f}s): "
                f"{semi['changed']} of {semi['guessed'] + semi['kept_systematic_pair']} "
                "unlabeled rows got another suggested label "
                f"({semi.get('weighed_by_given', 0)} of them from the given label's usual "
                f"confusions); {semi['kept_agreeing']} of them their given label, so they "
                "are kept"
            )
    if not dist.is_main:
        return
    result.write(screen.out, overwrite=screen.replace)
    clear_checkpoints(screen.work_dir)  # the report is complete: its checkpoints are moot
    print_outcome(result.to_pandas(), screen.out, screen.quiet)
    if getattr(result, "annotators", None) is not None:
        from labelclean.cli._crowd import print_crowd_outcome

        print_crowd_outcome(result, screen.out)
