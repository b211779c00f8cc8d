"""``labelclean finetune`` (train on the audited data, export) and ``labelclean predict``."""

from __future__ import annotations

import json
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
        typer.Option(help="Unlabeled per labeled sample in mixed batches.", rich_help_panel=_TRAIN),
    ] = 7,
    tau: Annotated[
        float,
        typer.Option(help="Confidence a pseudo label needs to count.", rich_help_panel=_TRAIN),
    ] = 0.95,
    lambda_m: Annotated[
        float, typer.Option(help="Weight of the mixed-batch loss.", rich_help_panel=_TRAIN)
    ] = 1.0,
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
    import hashlib

    import numpy as np
    import torch

    from labelclean._io import check_work_dir
    from labelclean.checkpoint import (
        WorkDirLock,
        clear_checkpoints,
        default_work_dir,
        save_checkpoint,
    )
    from labelclean.cli._signals import StopRequest, resume_command
    from labelclean.config import FinetuneConfig
    from labelclean.data.images import load_images
    from labelclean.data.manifest import Manifest
    from labelclean.distributed import init_from_env
    from labelclean.errors import CheckpointError, ConfigError
    from labelclean.export import METRICS_NAME, check_export_dir, export_model
    from labelclean.fgcm.finetune import report_architecture, run_finetune, split_report
    from labelclean.fgcm.frozen_finetune import (
        finetune_frozen,
        frozen_audit_config,
        is_frozen_report,
    )
    from labelclean.report.parquet import read_report
    from labelclean.training import ImageBatches, Precision, StepInterrupted, resolve_device

    config = FinetuneConfig(  # options first: a bad number is refused before any reading
        model=model,
        pretrained=pretrained,
        weights=str(weights) if weights else None,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        mu=mu,
        tau=tau,
        lambda_m=lambda_m,
        seed=seed,
        device=device,
        amp=amp,
        eval_every=eval_every,
    )
    rep = read_report(report_path)
    root = _image_root(rep, report_path, image_root)
    inputs = {
        "REPORT": report_path,
        "the report's image folder": root,
        "--test": test,
        "--test-labels": test_labels,
        "--weights": weights,
        "--decisions": decisions,
    }
    check_export_dir(out, overwrite, inputs=inputs)
    work_dir = check_work_dir(work_dir or default_work_dir(out), flag="--work-dir", inputs=inputs)
    dist = init_from_env(resolve_device(device))
    quiet = quiet or not dist.is_main
    md, frame = rep.metadata, rep.frame
    report_hash = hashlib.sha256(Path(report_path).read_bytes())
    if decisions is not None:
        from labelclean.review.apply import reviewed_frame
        from labelclean.review.decisions import load_decisions

        found = load_decisions(decisions, rep, fingerprint=report_hash.hexdigest())
        frame = reviewed_frame(rep, found.by_path)
        report_hash.update(b":" + hashlib.sha256(Path(decisions).read_bytes()).digest())
    # A --frozen report: a head on the audit's cached embeddings, exported with its backbone.
    frozen = is_frozen_report(md) and model is None and not pretrained and weights is None
    if frozen and resume:
        raise ConfigError(
            "--resume: finetune from a --frozen report trains only a head, in seconds, and "
            "keeps no checkpoints; run it again without --resume"
        )
    if not resume and dist.is_main and any(work_dir.glob("checkpoint-*.pt")):
        raise CheckpointError(
            f"{work_dir} holds checkpoints of an earlier run; pass --resume to continue it, "
            "or remove the directory / choose another --work-dir"
        )

    def checkpoint(state: dict) -> None:
        if dist.is_main:
            save_checkpoint(
                work_dir,
                {
                    "epoch": state["epoch"],
                    "tool_version": md.get("tool_version"),
                    "config": config.to_dict(),
                    "manifest_fingerprint": report_hash.hexdigest(),
                    "state": state,
                },
            )

    names = rep.class_names
    split_report(frame, names)  # refuse a report with nothing to learn before any work
    code = {n: i for i, n in enumerate(names)}
    manifest = Manifest(
        root=root,
        paths=frame["path"].tolist(),
        given_labels=np.array([code[g] for g in frame["given_label"]], dtype=np.int64),
        class_names=names,
        source=report_path,
        rows=frame["index"].to_numpy(),
    )
    audit_cfg = md.get("config", {})
    size = int(md.get("image_size") or 32)
    lock = WorkDirLock(work_dir)
    with (
        RichProgress(quiet=quiet) as progress,
        StopRequest() as stop,
        lock.held() if dist.is_main else _null(),
    ):
        data = load_images(
            manifest,
            image_size=size,
            cache_dir=cache_dir,
            on_bad_image=on_bad_image,
            max_bad_fraction=max_bad_fraction,
            progress=progress,
            should_stop=stop,
        )
        if data.rejections and frozen:  # the audit's embeddings are of every row
            raise ConfigError(
                f"{report_path}: {len(data.rejections)} image(s) of the report can no longer "
                "be read; a --frozen report's head needs every image it was audited on"
            )
        if data.rejections:  # --on-bad-image skip: train on the images that are left
            frame = frame[~frame["index"].isin([r.row for r in data.rejections])]
            frame = frame.reset_index(drop=True)
            progress.log(f"skipped {len(data.rejections)} unreadable image(s) of the report")
        labeled_rows, labels, unlabeled_rows = split_report(frame, names)
        report_hash.update(np.asarray([r.row for r in data.rejections], np.int64).tobytes())
        resume_state = (
            _resume_state(work_dir, config.to_dict(), report_hash.hexdigest(), force=force)
            if resume
            else None
        )
        test_data = test_set = None
        if test is not None:
            test_set, test_codes = _load_test(test, test_labels, names, size, cache_dir, progress)
            test_data = (np.ascontiguousarray(test_set.cache.images), test_codes)
        norm = md.get("normalization") or {
            "mean": list(data.cache.mean),
            "std": list(data.cache.std),
        }
        arch = model or report_architecture(md)
        progress.log(
            f"{len(labeled_rows)} labeled and {len(unlabeled_rows)} unlabeled images; model {arch}"
            + (" (frozen) + a head on its embeddings" if frozen else "")
        )

        def on_epoch(line: dict) -> None:
            progress.log(" ".join(f"{k} {v}" for k, v in line.items()))

        try:
            if frozen:
                result, net, section = finetune_frozen(
                    data,
                    labeled_rows,
                    labels,
                    unlabeled_rows,
                    config,
                    audit_config=frozen_audit_config(md, str(report_path)),
                    test=test_set,
                    test_labels=test_data[1] if test_data else None,
                    cache_dir=cache_dir,
                    progress=progress,
                    on_epoch=on_epoch,
                    should_stop=stop,
                )
            else:
                section = None
                result = run_finetune(
                    data.cache.images,
                    labeled_rows,
                    labels,
                    unlabeled_rows,
                    config,
                    n_classes=len(names),
                    model_name=arch,
                    mean=norm["mean"],
                    std=norm["std"],
                    crop_padding=audit_cfg.get("crop_padding") or size // 8,
                    hflip=audit_cfg.get("hflip", True),
                    test=test_data,
                    progress=progress,
                    on_epoch=on_epoch,
                    resume_state=resume_state,
                    on_checkpoint=checkpoint,
                    should_stop=stop,
                    dist=dist,
                )
                net = result.model.float()
        except StepInterrupted:
            typer.echo(
                "interrupted; nothing was written (the frozen finetune keeps no checkpoints)"
                if frozen
                else f"interrupted; checkpoints are in {work_dir}. Resume with:\n  "
                f"{resume_command()}",
                err=True,
            )
            raise typer.Exit(stop.exit_code) from None
    if not dist.is_main:
        return
    precision = Precision.choose(torch.device("cpu"), amp=False)
    sample = ImageBatches(data.cache.images, norm["mean"], norm["std"], precision)
    check = sample.prepare(sample.load(np.arange(min(8, len(manifest)))))
    metrics = {
        "test_accuracy": result.test_accuracy,
        "n_labeled": result.n_labeled,
        "n_unlabeled": result.n_unlabeled,
        "epochs": config.epochs,
        "history": result.history,
    }
    export_model(
        net,
        out,
        overwrite=overwrite,
        check_inputs=check,
        extra_files={METRICS_NAME: json.dumps(metrics, indent=1)},
        config={
            "architecture": arch,
            **({"frozen": section} if section else {}),
            "num_classes": len(names),
            "class_names": names,
            "image_size": size,
            "normalization": {"mean": norm["mean"], "std": norm["std"]},
            "finetune": config.to_dict(),
            "report": str(report_path),
            "metrics": metrics,
        },
    )
    clear_checkpoints(work_dir)
    typer.echo(f"model: {out}")
    if result.test_accuracy is not None:
        typer.echo(f"test accuracy {result.test_accuracy:.4f}")


def _resume_state(work_dir: Path, config: dict, fingerprint: str, *, force: bool) -> dict:
    """The training state of the newest checkpoint, if it was made by this same run."""
    from labelclean.checkpoint import load_latest, resume_differences
    from labelclean.errors import CheckpointError

    payload, ckpt = load_latest(work_dir)
    changes = resume_differences(payload, config=config, manifest_fingerprint=fingerprint)
    if changes and not force:
        raise CheckpointError(
            f"--resume: {ckpt} was made by a different run: "
            + "; ".join(changes)
            + ". Pass --force to resume anyway, or start fresh without --resume"
        )
    return payload["state"]


def _image_root(rep, report_path: Path, image_root: Path | None) -> Path:  # noqa: ANN001
    """The folder the report's images are in now: refuse early when they are not there."""
    from labelclean.errors import ConfigError

    root = image_root.resolve() if image_root is not None else rep.image_root
    flag = "--image-root" if image_root is not None else f"{report_path}: the image root"
    if not root.is_dir():
        raise ConfigError(
            f"{flag} {root} is not a folder"
            + ("" if image_root is not None else "; if the images moved, pass --image-root DIR")
        )
    sample = rep.frame["path"].head(64).tolist()
    if sample and not any((root / p).is_file() for p in sample):
        raise ConfigError(
            f"{flag} {root} holds none of the report's first {len(sample)} images "
            f"(e.g. {sample[0]}); "
            "if they moved, pass --image-root DIR, the folder their paths are relative to"
        )
    return root


def _null():  # noqa: ANN202
    import contextlib

    return contextlib.nullcontext()


def _load_test(images, labels, names, size, cache_dir, progress):  # noqa: ANN001,ANN202
    import numpy as np

    from labelclean.data.images import load_dataset
    from labelclean.errors import ConfigError

    ds = load_dataset(images, labels, image_size=size, cache_dir=cache_dir, progress=progress)
    unknown = sorted(set(ds.manifest.class_names) - set(names))
    if unknown:
        raise ConfigError(f"--test: classes not in the report: {', '.join(unknown[:10])}")
    code = {n: i for i, n in enumerate(names)}
    mapped = np.array([code[ds.manifest.class_names[g]] for g in ds.manifest.given_labels])
    return ds, mapped


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
    import numpy as np
    import pandas as pd
    import torch

    from labelclean._io import atomic_write_with, check_writable
    from labelclean.cli._signals import StopRequest
    from labelclean.data.images import load_images
    from labelclean.data.manifest import IMAGE_SUFFIXES, Manifest, read_manifest
    from labelclean.errors import ManifestError
    from labelclean.export import MODEL_FILES, load_model
    from labelclean.training import ImageBatches, Precision, predict_probs, resolve_device

    inputs = {"IMAGES": images, "LABELS": labels, "MODEL_DIR": model_dir}
    inputs |= {f"the model's {name}": model_dir / name for name in MODEL_FILES}
    check_writable(out, overwrite=overwrite, inputs=inputs)
    model, cfg = load_model(model_dir)
    names = cfg["class_names"]
    has_truth = True
    try:
        manifest = read_manifest(images, labels, path_column=path_column, label_column=label_column)
    except ManifestError:
        if labels is not None:
            raise
        files = sorted(
            p.relative_to(images).as_posix()
            for p in Path(images).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise ManifestError(f"{images}: no images found") from None
        manifest = Manifest(
            Path(images).resolve(),
            files,
            np.zeros(len(files), np.int64),
            ["?", "??"],
            Path(images),
            np.arange(len(files)),
        )
        has_truth = False
    device = resolve_device("auto")
    precision = Precision.choose(device)
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    with RichProgress(quiet=quiet) as progress, StopRequest() as stop:
        data = load_images(
            manifest,
            image_size=int(cfg["image_size"]),
            cache_dir=cache_dir,
            on_bad_image="skip",
            max_bad_fraction=1.0,
            progress=progress,
            should_stop=stop,
        )
        batches = ImageBatches(
            data.cache.images, cfg["normalization"]["mean"], cfg["normalization"]["std"], precision
        )
        probs = predict_probs(
            model,
            batches,
            np.arange(len(data.manifest)),
            batch_size=256,
            progress=progress,
            should_stop=stop,
        )
    pred = probs.argmax(1)
    frame = pd.DataFrame(
        {
            "path": data.manifest.paths,
            "prediction": np.asarray(names, dtype=object)[pred],
            "confidence": probs.max(1).astype(np.float32),
        }
    )
    for j, name in enumerate(names):
        frame[f"prob_{name}"] = probs[:, j]
    if has_truth:
        frame.insert(
            1,
            "label",
            np.asarray(data.manifest.class_names, dtype=object)[data.manifest.given_labels],
        )
        frame.insert(3, "correct", frame["label"] == frame["prediction"])
    if out.suffix.lower() == ".csv":
        atomic_write_with(out, lambda tmp: frame.to_csv(tmp, index=False), overwrite=overwrite)
    else:
        atomic_write_with(out, lambda tmp: frame.to_parquet(tmp, index=False), overwrite=overwrite)
    typer.echo(f"wrote {out}: {len(frame)} predictions")
    if data.rejections:
        typer.echo(f"skipped {len(data.rejections)} unreadable images", err=True)
    if has_truth:
        typer.echo(f"accuracy {frame['correct'].mean():.4f}")
