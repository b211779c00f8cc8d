"""``labelclean audit`` and ``labelclean demo``: run FGCM and write report.parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from labelclean.cli._app import app
from labelclean.cli._console import RichProgress, console
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
    OnBadImageOpt,
    PathColumnOpt,
    data_kwargs,
)
from labelclean.cli._signals import StopRequest, resume_command

_MODEL = "Model"
_TRAIN = "Training"
_CLUSTER = "Clustering"
_OUT = "Output"


def _format_epoch(line: dict[str, Any], epochs: int) -> str:
    from labelclean.fgcm.clustering import CLUSTER_NAMES

    clusters = " ".join(
        f"{k} {line['clusters'][k]}" for k in CLUSTER_NAMES if k in line["clusters"]
    )
    guard = f"; {line['guard']}" if line.get("guard") else ""
    return (
        f"epoch {line['epoch']:>3}/{epochs} loss {line['loss']:.3f} |T| {line['t_size']} "
        f"{clusters} {line['seconds']:.1f}s{guard}"
    )


class _EpochPrinter:
    """Prints one line per epoch and writes JSON lines to --log-json (appends on --resume)."""

    def __init__(
        self, progress: RichProgress, epochs: int, log_json: Path | None, *, append: bool = False
    ) -> None:
        from labelclean._io import append_line

        self.progress, self.epochs, self.log_json = progress, epochs, log_json
        if log_json is not None and not append:
            append_line(log_json, "", flag="--log-json", truncate=True)

    def __call__(self, state: Any, line: dict[str, Any]) -> None:
        from labelclean._io import append_line

        self.progress.log(_format_epoch(line, self.epochs))
        if self.log_json is not None:
            append_line(self.log_json, json.dumps(line) + "\n", flag="--log-json")


def _print_outcome(frame: Any, out: Path, quiet: bool) -> None:
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


def _schedule_note(config: Any) -> str:
    """E.g. ``mixup 1, one clustering at the end`` or ``30 warmup, then the loop on T``."""
    mix = f"mixup {config.mixup:g}, " if config.mixup else ""
    if config.schedule == "once":
        return mix + "one clustering at the end"
    return mix + f"{config.warmup} warmup, then the loop on T"


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
            "(small_cnn, or with --mixup), 1/4 for others].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    mixup: Annotated[
        float | None,
        typer.Option(
            help="Beta(a, a) input mixup while training, 0 = off; needs --record eval "
            "\\[default: 1 with --schedule once, 0 with paper].",
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
        int | None, typer.Option(help="Batch size \\[default: 128].", rich_help_panel=_TRAIN)
    ] = None,
    hflip: Annotated[
        bool | None,
        typer.Option(
            "--hflip/--no-hflip",
            help="Random horizontal flips \\[default: on].",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.", rich_help_panel=_TRAIN)] = 0,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=_TRAIN)
    ] = "auto",
    amp: Annotated[
        bool,
        typer.Option(
            "--amp/--no-amp",
            help="bf16/fp16 autocast where the device is fast at it.",
            rich_help_panel=_TRAIN,
        ),
    ] = True,
    deterministic: Annotated[
        bool,
        typer.Option(
            help="Deterministic algorithms (identical reports on the CPU).", rich_help_panel=_TRAIN
        ),
    ] = False,
    record: Annotated[
        str,
        typer.Option(
            help="eval: the paper's extra pass over all samples; train: the "
            "training pass's probabilities (cheaper, noisier).",
            rich_help_panel=_CLUSTER,
        ),
    ] = "eval",
    components: Annotated[
        int,
        typer.Option(
            help="5 = FGCM; 2 = the loss-only split of prior work.", rich_help_panel=_CLUSTER
        ),
    ] = 5,
    cluster_method: Annotated[
        str, typer.Option(help="gmm or kmeans (ablation).", rich_help_panel=_CLUSTER)
    ] = "gmm",
    t_update: Annotated[
        str,
        typer.Option(
            help="latest: T = this epoch's refined clusters; union: the paper's growing T.",
            rich_help_panel=_CLUSTER,
        ),
    ] = "latest",
    guard: Annotated[
        str | None,
        typer.Option(
            help="Low-noise guard: budget (confident relabels only, flags capped near the "
            "model's disagreement, no class dropped from T), confident (the cap is the "
            "estimated share of wrong labels, unsure disagreements keep their label) or none "
            "(the paper's literal rule) \\[default: none with --schedule once; with paper, "
            "confident for a network that does not memorise (small_cnn, --mixup), else budget].",
            rich_help_panel=_CLUSTER,
        ),
    ] = None,
    relabel: Annotated[
        bool | None,
        typer.Option(
            "--relabel/--no-relabel",
            help="NS samples get their pseudo label (the paper) or are unlabeled (safer with a weak network). "
            "\\[default: relabel, except for a network that does not memorise: small_cnn, "
            "or with --mixup]",
            rich_help_panel=_CLUSTER,
            show_default=False,
        ),
    ] = None,
    frozen: Annotated[
        bool,
        typer.Option(
            help="Fast audit: train only a head on embeddings of a frozen --model (with --weights or --pretrained).",
            rich_help_panel=_MODEL,
        ),
    ] = False,
    head: Annotated[
        str, typer.Option(help="With --frozen: linear or mlp.", rich_help_panel=_MODEL)
    ] = "linear",
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
    from labelclean._io import check_work_dir, check_writable, sidecar_path
    from labelclean.api import run_checkpointed
    from labelclean.checkpoint import clear_checkpoints, default_work_dir
    from labelclean.config import AuditConfig
    from labelclean.data.images import load_dataset, write_rejected_csv
    from labelclean.distributed import init_from_env
    from labelclean.fgcm.audit import AuditInterrupted, AuditRun
    from labelclean.fgcm.frozen import check_frozen_flags
    from labelclean.training import resolve_device

    inputs = {"IMAGES": images, "LABELS": labels, "--weights": weights}
    check_writable(out, overwrite=overwrite or resume, inputs=inputs)
    check_frozen_flags(frozen, folds=frozen_folds, neighbours=neighbours)
    work_dir = check_work_dir(work_dir or default_work_dir(out), flag="--work-dir", inputs=inputs)
    rejected_csv = sidecar_path(out, ".rejected.csv")
    if on_bad_image == "skip":
        check_writable(rejected_csv, overwrite=overwrite or resume, inputs=inputs)
    if log_json is not None:
        check_writable(log_json, overwrite=overwrite or resume, flag="--log-json", inputs=inputs)
    dist = init_from_env(resolve_device(device))
    quiet = quiet or not dist.is_main
    config = AuditConfig.from_preset(
        preset,
        model=model,
        pretrained=pretrained or None,
        weights=str(weights) if weights else None,
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
    )
    with RichProgress(quiet=quiet) as progress, StopRequest() as stop:
        if not dist.is_main:
            dist.barrier()  # rank 0 builds the image cache first; the others then reuse it
        dataset = load_dataset(
            images,
            labels,
            progress=progress,
            should_stop=stop,
            **data_kwargs(
                path_column=path_column,
                label_column=label_column,
                annotator_column=annotator_column,
                allow_outside_root=allow_outside_root,
                on_bad_image=on_bad_image,
                max_bad_fraction=max_bad_fraction,
                max_pixels=max_pixels,
                image_size=image_size,
                cache_dir=cache_dir,
            ),
        )
        if dist.is_main:
            dist.barrier()
        if dataset.rejections and dist.is_main:
            rejected = write_rejected_csv(rejected_csv, dataset, overwrite=overwrite or resume)
            console.print(f"skipped {len(dataset.rejections)} bad images: see {rejected}")
        manifest = dataset.manifest
        progress.log(
            f"{len(manifest)} images, {len(manifest.class_names)} classes, "
            f"{dataset.cache.image_size}px"
        )
        if manifest.votes is not None:
            from labelclean.cli._crowd import check_crowd_outputs, crowd_line

            check_crowd_outputs(out, labels, overwrite=overwrite or resume)
            progress.log(crowd_line(manifest) + "; the audit starts from their consensus")
        printer = _EpochPrinter(
            progress, config.epochs, log_json if dist.is_main else None, append=resume
        )
        if frozen:
            from labelclean.fgcm.frozen import FrozenAuditRun, frozen_config

            config = frozen_config(
                config, head=head, flip=frozen_flip, folds=frozen_folds, neighbours=neighbours
            )
            run: AuditRun = FrozenAuditRun(
                dataset, config, dist=dist, cache_dir=cache_dir, progress=progress
            )
        else:
            run = AuditRun(dataset, config, dist=dist)
        progress.log(
            f"model {run.model_name} on {run.precision.describe()}; {run.config.epochs} epochs, "
            f"{_schedule_note(run.config)}; checkpoints in {work_dir}"
        )
        try:
            result = run_checkpointed(
                dataset,
                config,
                work_dir=work_dir,
                resume=resume,
                force=force,
                progress=progress,
                on_epoch=printer,
                should_stop=stop,
                run=run,
            )
        except AuditInterrupted as interrupted:
            typer.echo(
                f"interrupted; the checkpoint of epoch {interrupted.state.epoch} is in "
                f"{work_dir}. Resume with:\n  {resume_command()}",
                err=True,
            )
            raise typer.Exit(stop.exit_code) from None
        progress.log(
            f"model {result.metadata['model']} on {result.metadata['precision']}, "
            f"{result.metadata['wall_time_s']:.0f}s"
        )
    if not dist.is_main:
        return
    result.write(out, overwrite=overwrite or resume)
    clear_checkpoints(work_dir)  # the report is complete: its checkpoints are moot
    _print_outcome(result.to_pandas(), out, quiet)
    if getattr(result, "annotators", None) is not None:
        from labelclean.cli._crowd import print_crowd_outcome

        print_crowd_outcome(result, out)


@app.command()
def demo(
    folder: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the images, labels and report.")
    ] = Path("labelclean-demo"),
    noise: Annotated[float, typer.Option(help="Fraction of labels to flip.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the demo's epochs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """The built-in example: digits with 30% wrong labels, audited and scored against truth.

    --out must be a new or empty folder, or one an earlier demo wrote (its files are replaced).
    """
    from labelclean.demo import DEMO_CONFIG, check_noise_rate, run_demo

    check_noise_rate(noise)
    n_epochs = epochs or DEMO_CONFIG["epochs"]
    overrides = {"epochs": epochs} if epochs else {}
    if epochs and epochs <= DEMO_CONFIG["warmup"]:
        overrides["warmup"] = max(0, epochs // 3)
    with RichProgress(quiet=quiet) as progress:
        progress.log(f"writing 1797 digit images with {noise:.0%} wrong labels to {folder}/")
        printer = _EpochPrinter(progress, n_epochs, None)
        result = run_demo(
            folder, noise_rate=noise, seed=seed, progress=progress, on_epoch=printer, **overrides
        )
    m = result.metrics
    typer.echo(f"report: {result.report}")
    typer.echo(
        f"wrong labels found: precision {m['detection_precision']:.3f}, "
        f"recall {m['detection_recall']:.3f} (F1 {m['detection_f1']:.3f})"
    )
    typer.echo(
        f"labeled set precision {m['label_precision']:.3f} vs given {m['given_precision']:.3f}; "
        f"relabel accuracy {m['relabel_accuracy']:.3f}; cleaned accuracy "
        f"{m['cleaned_accuracy']:.3f}"
    )
    typer.echo(f"next: labelclean report {result.report} --html {folder}/report.html")
