"""``labelclean.finetune()``: train on an audit report's cleaned labels, export the model.

The report becomes a dataset (kept and relabeled rows labeled, the rest unlabeled), trained
with the mixed semi-training (paper 3.3, :mod:`labelclean.fgcm.finetune`), or for a
``--frozen`` report a head on the cached embeddings (:mod:`labelclean.fgcm.frozen_finetune`),
and exported as one model for :func:`labelclean.load_model` and ``labelclean predict``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelclean.config import FinetuneConfig, checked
from labelclean.progress import Progress
from labelclean.training import StepInterrupted

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from labelclean.checkpoint import RunCheckpoints
    from labelclean.data.images import Dataset
    from labelclean.distributed import Dist
    from labelclean.fgcm.finetune import FinetuneResult
    from labelclean.report.parquet import Report

logger = logging.getLogger(__name__)


class FinetuneInterrupted(StepInterrupted):
    """``should_stop()`` stopped the training; nothing was exported.

    ``work_dir`` holds the checkpoints to resume from; None when there are none: stopped
    before the first one, or a frozen report's finetune, which trains in seconds and keeps
    none. Then ``--resume`` has nothing to start from.
    """

    def __init__(self, work_dir: Path | None) -> None:
        super().__init__("finetune interrupted")
        self.work_dir = work_dir


@dataclass
class _Source:
    """The report as training data: its rows, image folder and fingerprint for --resume."""

    report: Report
    path: Path
    root: Path
    frame: pd.DataFrame
    fingerprint: Any  # hashlib object: report bytes (+ decisions, + unreadable rows)

    @classmethod
    def read(cls, path: Path, image_root: str | Path | None) -> _Source:
        """The report at ``path``, its images found (refused early when they are not there)."""
        from labelclean.report.parquet import read_report

        report = read_report(path)
        root = report.images_now(image_root)
        return cls(report, path, root, report.frame, hashlib.sha256(path.read_bytes()))

    @property
    def metadata(self) -> dict[str, Any]:
        return self.report.metadata

    @property
    def frozen(self) -> bool:
        """A ``--frozen`` report: its finetune trains a head on the cached embeddings."""
        from labelclean.fgcm.frozen_finetune import is_frozen_report

        return is_frozen_report(self.metadata)

    def apply_decisions(self, decisions: Path) -> None:
        """Train on the reviewed labels (``labelclean review``); dropped rows go."""
        from labelclean.review.apply import reviewed_frame
        from labelclean.review.decisions import load_decisions

        found = load_decisions(decisions, self.report, fingerprint=self.fingerprint.hexdigest())
        self.frame = reviewed_frame(self.report, found.by_path)
        self.fingerprint.update(b":" + hashlib.sha256(Path(decisions).read_bytes()).digest())


@dataclass
class _Hooks:
    """The caller's callbacks: progress, epoch records, stop requests, one-line notes."""

    progress: Progress | None
    on_epoch: Callable[[dict[str, Any]], None] | None
    stop: Callable[[], bool] | None
    log: Callable[[str], None] | None

    @property
    def loop(self) -> dict[str, Any]:
        """As keyword arguments of the training loops."""
        return dict(progress=self.progress, on_epoch=self.on_epoch, should_stop=self.stop)

    def note(self, message: str) -> None:
        """Logged, and passed to ``log`` (the CLI shows it above the progress bars)."""
        logger.info(message)
        if self.log is not None:
            self.log(message)


@dataclass
class _Trained:
    """What the export needs from the training: the result (its model exported) and more."""

    result: FinetuneResult
    architecture: str
    normalization: dict[str, Any]
    frozen_section: dict[str, Any] | None  # config.json's ``frozen`` part, for a frozen report
    data: Dataset


@checked
def finetune(
    report: str | Path,
    out: str | Path,
    *,
    config: FinetuneConfig | None = None,
    test: str | Path | None = None,
    test_labels: str | Path | None = None,
    image_root: str | Path | None = None,
    decisions: str | Path | None = None,
    on_bad_image: str = "error",
    max_bad_fraction: float = 0.05,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    work_dir: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: Dist | None = None,
    **options: Any,
) -> FinetuneResult:
    """Train a model on an audit's cleaned labels plus the unlabeled rest, and export it.

    Args:
        report: ``report.parquet`` from :func:`labelclean.audit` or ``labelclean audit``.
        out: Folder for the exported model (new, empty, or an earlier export with
            ``overwrite``).
        config: Full settings; or pass individual :class:`FinetuneConfig` fields as keywords.
        test: Test images, evaluated every ``eval_every`` epochs: a class-folder tree, or a
            folder with ``test_labels``.
        test_labels: CSV/Parquet manifest (path,label) for ``test``.
        image_root: The folder the report's paths are relative to, if the images moved.
        decisions: A decisions file of ``labelclean review`` (or a Label Studio export):
            train on the reviewed labels, leave dropped images out.
        on_bad_image: ``error`` refuses unreadable images, ``skip`` trains on the rest.
        max_bad_fraction: With ``skip``: refuse above this fraction.
        cache_dir: Decoded-image cache (default ``$LABELCLEAN_CACHE_DIR`` or ~/.cache).
        overwrite: Replace a model folder an earlier finetune wrote (nothing else).
        work_dir: Checkpoints after every epoch (default ``<out>.work``), removed once the
            model is exported.
        resume: Continue from the newest good checkpoint in ``work_dir``.
        force: Resume even though the report or options changed.
        progress: ``progress(task, done, total)`` callback.
        on_epoch: Called with each epoch's log record.
        log: Called with one-line notes (what trains, skipped images) for a CLI to show.
        should_stop: Checked before every step; True raises :class:`FinetuneInterrupted`.
        dist: This process's place in a torchrun job; None = joined from the environment.
        **options: :class:`FinetuneConfig` fields, e.g. ``epochs=10``, ``mu=2``.

    Returns:
        The :class:`~labelclean.fgcm.finetune.FinetuneResult`: ``model`` (the exported
        network), ``history``, ``test_accuracy``, ``n_labeled``, ``n_unlabeled``.

    Raises:
        LabelcleanError: A bad option, report, image or output folder, named in the message;
            every argument's type is checked first (ConfigError), before anything is read.

    Example:
        >>> result = labelclean.finetune("report.parquet", "model/", epochs=10)  # doctest: +SKIP
        >>> model, info = labelclean.load_model("model/")  # doctest: +SKIP
    """
    if config is None:  # options first: a bad number is refused before any reading
        config = FinetuneConfig.from_options(**options)
    elif options:
        raise TypeError("pass either config= or individual options, not both")
    source, checkpoints, dist, frozen = _refuse_early(
        Path(report),
        Path(out),
        config,
        image_root=image_root,
        test=test,
        test_labels=test_labels,
        decisions=decisions,
        overwrite=overwrite,
        work_dir=work_dir,
        resume=resume,
        dist=dist,
    )
    hooks = _Hooks(progress, on_epoch, should_stop, log)
    config, start = _starting_point(source, config, frozen=frozen)
    if start:
        hooks.note(start)
    with checkpoints.held():
        trained = _train(
            source,
            config,
            hooks,
            frozen=frozen,
            checkpoints=checkpoints,
            resume=resume,
            force=force,
            test=(Path(test), test_labels) if test is not None else None,
            data_options={
                "cache_dir": cache_dir,
                "on_bad_image": on_bad_image,
                "max_bad_fraction": max_bad_fraction,
            },
            dist=dist,
        )
    if dist.is_main:
        _export(trained, Path(out), source, config, overwrite=overwrite)
        checkpoints.clear()
    return trained.result


def _refuse_early(
    report: Path,
    out: Path,
    config: FinetuneConfig,
    *,
    image_root: str | Path | None,
    test: str | Path | None,
    test_labels: str | Path | None,
    decisions: str | Path | None,
    overwrite: bool,
    work_dir: str | Path | None,
    resume: bool,
    dist: Dist | None,
) -> tuple[_Source, RunCheckpoints, Dist, bool]:
    """Read the report, refuse every bad input or output before an image is decoded.

    ``frozen`` in the returned tuple: train only a head on a --frozen report's embeddings.
    """
    from labelclean._io import check_work_dir
    from labelclean.checkpoint import RunCheckpoints, default_work_dir
    from labelclean.distributed import init_from_env
    from labelclean.errors import ConfigError
    from labelclean.export import check_export_dir
    from labelclean.fgcm.finetune import split_report
    from labelclean.models import check_model_name
    from labelclean.training import resolve_device

    if config.model is not None:  # a typo is refused before any image is decoded
        check_model_name(config.model)
    source = _Source.read(report, image_root)
    inputs = {"REPORT": report, "the report's image folder": source.root, "--test": test}
    inputs |= {"--test-labels": test_labels, "--weights": config.weights, "--decisions": decisions}
    check_export_dir(out, overwrite, inputs=inputs)
    work = check_work_dir(work_dir or default_work_dir(out), flag="--work-dir", inputs=inputs)
    dist = dist or init_from_env(resolve_device(config.device))
    if decisions is not None:
        source.apply_decisions(Path(decisions))
    # A --frozen report: a head on the audit's cached embeddings, exported with its backbone,
    # unless a network to train on the images was asked for.
    network = config.model is not None or config.pretrained or config.weights is not None
    frozen = source.frozen and not network
    if frozen and resume:
        raise ConfigError(
            "--resume: finetune from a --frozen report trains only a head, in seconds, and "
            "keeps no checkpoints; run it again without --resume"
        )
    checkpoints = RunCheckpoints(work, is_main=dist.is_main)
    if not resume:
        checkpoints.refuse_earlier_run()
    split_report(source.frame, source.report.class_names)  # refuse a report with nothing to learn
    return source, checkpoints, dist, frozen


def _starting_point(
    source: _Source, config: FinetuneConfig, *, frozen: bool
) -> tuple[FinetuneConfig, str | None]:
    """``config`` with ``init`` resolved (and ``weights`` = the audit's network), and a note.

    ``--weights``/``--pretrained`` name the start themselves; a head on a ``--frozen``
    report's embeddings has no network to start from.
    """
    import dataclasses

    from labelclean.audit_network import finetune_start
    from labelclean.errors import ConfigError

    if config.weights is not None or config.pretrained:
        if config.init == "audit":
            raise ConfigError(
                "--init audit starts from the audit's network; --weights and --pretrained "
                "name another start: give one of them"
            )
        return config, None
    if frozen and config.init != "audit":
        return config, None
    path, note = finetune_start(
        source.path, source.metadata, init=config.init, architecture=config.model
    )
    if path is None:
        return dataclasses.replace(config, init="scratch"), note
    return dataclasses.replace(config, init="audit", weights=str(path)), note


def _load_images(source: _Source, hooks: _Hooks, *, frozen: bool, **options: Any) -> Dataset:
    """The report's images, decoded at the audit's size; unreadable ones per --on-bad-image."""
    import numpy as np

    from labelclean.data.images import load_images
    from labelclean.data.manifest import Manifest
    from labelclean.errors import ConfigError

    names, frame = source.report.class_names, source.frame
    code = {n: i for i, n in enumerate(names)}
    manifest = Manifest(
        root=source.root,
        paths=frame["path"].tolist(),
        given_labels=np.array([code[g] for g in frame["given_label"]], dtype=np.int64),
        class_names=names,
        source=source.path,
        rows=frame["index"].to_numpy(),
    )
    data = load_images(
        manifest,
        image_size=_image_size(source),
        progress=hooks.progress,
        should_stop=hooks.stop,
        **options,
    )
    if data.rejections and frozen:  # the audit's embeddings are of every row
        raise ConfigError(
            f"{source.path}: {len(data.rejections)} image(s) of the report can no longer "
            "be read; a --frozen report's head needs every image it was audited on"
        )
    if data.rejections:  # --on-bad-image skip: train on the images that are left
        source.frame = frame[~frame["index"].isin([r.row for r in data.rejections])]
        source.frame = source.frame.reset_index(drop=True)
        hooks.note(f"skipped {len(data.rejections)} unreadable image(s) of the report")
    source.fingerprint.update(np.asarray([r.row for r in data.rejections], np.int64).tobytes())
    return data


def _train(
    source: _Source,
    config: FinetuneConfig,
    hooks: _Hooks,
    *,
    frozen: bool,
    checkpoints: RunCheckpoints,
    resume: bool,
    force: bool,
    test: tuple[Path, str | Path | None] | None,
    data_options: dict[str, Any],
    dist: Dist,
) -> _Trained:
    """Load the images (and test set), then train a network, or a head for a frozen report."""
    import numpy as np

    from labelclean.fgcm.finetune import (
        guessed_rows,
        report_architecture,
        run_finetune,
        split_report,
    )
    from labelclean.fgcm.frozen_finetune import finetune_frozen, frozen_audit_config

    md, names, cache_dir = source.metadata, source.report.class_names, data_options["cache_dir"]
    data = _load_images(source, hooks, frozen=frozen, **data_options)
    labeled_rows, labels, unlabeled_rows = split_report(source.frame, names)
    run_id = {
        "config": config.to_dict(),
        "manifest_fingerprint": source.fingerprint.hexdigest(),
        "images_fingerprint": data.cache.key,  # the images' sizes and times: edited ones
    }
    state = checkpoints.resume(**run_id, force=force)[0]["state"] if resume else None
    test_set = test_codes = None
    if test is not None:
        test_set, test_codes = _load_test(*test, names, _image_size(source), cache_dir, hooks)
    norm = md.get("normalization") or {"mean": list(data.cache.mean), "std": list(data.cache.std)}
    arch = config.model or report_architecture(md)
    partly = int(guessed_rows(source.frame).sum())
    hooks.note(
        f"{len(labeled_rows)} labeled and {len(unlabeled_rows)} unlabeled images"
        + (f" ({partly} of them kept by the report only as a guess)" if partly else "")
        + f"; model {arch}"
        + (" (frozen) + a head on its embeddings" if frozen else "")
    )
    rows, section = (labeled_rows, labels, unlabeled_rows), None
    try:
        if frozen:
            result, net, section = finetune_frozen(
                data,
                *rows,
                config,
                audit_config=frozen_audit_config(md, str(source.path)),
                test=test_set,
                test_labels=test_codes,
                cache_dir=Path(cache_dir) if cache_dir is not None else None,
                **hooks.loop,
            )
            result.model = net  # backbone + standardisation + head: the model to export
        else:
            audit_cfg, size = md.get("config", {}), _image_size(source)
            test_pair = None
            if test_set is not None and test_codes is not None:
                test_pair = (np.ascontiguousarray(test_set.cache.images), test_codes)
            result = run_finetune(
                data.cache.images,
                *rows,
                config,
                n_classes=len(names),
                model_name=arch,
                mean=norm["mean"],
                std=norm["std"],
                crop_padding=audit_cfg.get("crop_padding") or size // 8,
                hflip=audit_cfg.get("hflip", True),
                test=test_pair,
                resume_state=state,
                on_checkpoint=lambda s: checkpoints.save(s["epoch"], **run_id, state=s),
                dist=dist,
                **hooks.loop,
            )
            result.model = result.model.float()
    except StepInterrupted:
        resumable = not frozen and checkpoints.exist()
        raise FinetuneInterrupted(checkpoints.work_dir if resumable else None) from None
    return _Trained(result, arch, norm, section, data)


def _image_size(source: _Source) -> int:
    """The audit's image size: the model trains (and predicts) at the size it was audited."""
    return int(source.metadata.get("image_size") or 32)


def _load_test(
    images: Path,
    labels: str | Path | None,
    names: list[str],
    size: int,
    cache_dir: str | Path | None,
    hooks: _Hooks,
) -> tuple[Dataset, np.ndarray]:
    """The test set with its labels coded as the report's classes (refused if it has others)."""
    import numpy as np

    from labelclean.data.images import load_dataset
    from labelclean.errors import ConfigError

    ds = load_dataset(images, labels, image_size=size, cache_dir=cache_dir, progress=hooks.progress)
    unknown = sorted(set(ds.manifest.class_names) - set(names))
    if unknown:
        raise ConfigError(f"--test: classes not in the report: {', '.join(unknown[:10])}")
    code = {n: i for i, n in enumerate(names)}
    mapped = np.array([code[ds.manifest.class_names[g]] for g in ds.manifest.given_labels])
    return ds, mapped


def _export(
    trained: _Trained,
    out: Path,
    source: _Source,
    config: FinetuneConfig,
    *,
    overwrite: bool,
) -> Path:
    """Write the model with its config.json and metrics.json, checked on a few images."""
    import numpy as np
    import torch

    from labelclean.export import METRICS_NAME, export_model
    from labelclean.training import ImageBatches, Precision

    result, norm, data = trained.result, trained.normalization, trained.data
    precision = Precision.choose(torch.device("cpu"), amp=False)
    sample = ImageBatches(data.cache.images, norm["mean"], norm["std"], precision)
    check = sample.prepare(sample.load(np.arange(min(8, len(data.manifest)))))
    metrics = {
        "test_accuracy": result.test_accuracy,
        "n_labeled": result.n_labeled,
        "n_unlabeled": result.n_unlabeled,
        "epochs": config.epochs,
        "history": result.history,
    }
    names, section = source.report.class_names, trained.frozen_section
    return export_model(
        result.model,
        out,
        overwrite=overwrite,
        check_inputs=check,
        extra_files={METRICS_NAME: json.dumps(metrics, indent=1)},
        config={
            "architecture": trained.architecture,
            **({"frozen": section} if section else {}),
            "num_classes": len(names),
            "class_names": names,
            "image_size": _image_size(source),
            "normalization": {"mean": norm["mean"], "std": norm["std"]},
            # the mixup the labeled batch trained with, not None for "the default"
            "finetune": {**config.to_dict(), "mixup": config.labeled_mixup(frozen=bool(section))},
            "report": str(source.path),
            "metrics": metrics,
        },
    )
