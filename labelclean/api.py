"""The Python API: the same verbs as the CLI, returning objects instead of printing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labelclean.config import AuditConfig
from labelclean.fgcm.audit import AuditResult, EpochHook
from labelclean.progress import Progress

logger = logging.getLogger(__name__)


def audit(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    config: AuditConfig | None = None,
    data_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    work_dir: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    should_stop: Callable[[], bool] | None = None,
    frozen: bool = False,
    head: str = "linear",
    frozen_flip: bool = False,
    frozen_folds: int | None = None,
    neighbours: int | None = None,
    **options: Any,
) -> AuditResult:
    """Audit the labels of an image dataset with FGCM.

    Args:
        images: Image folder (one sub-folder per class when ``labels`` is None).
        labels: CSV or Parquet manifest with ``path,label`` columns, paths relative to
            ``images``; or crowd votes, ``path,annotator,label`` (one row per vote; wide
            layouts through ``data_options={"label_column": [...]}``).
        config: Full settings; or pass individual :class:`AuditConfig` fields as keywords.
        data_options: Keyword arguments for :func:`labelclean.data.images.load_dataset`
            (``image_size``, ``on_bad_image``, ``cache_dir``, ...).
        progress: ``progress(task, done, total)`` callback.
        on_epoch: Called after every epoch with the audit state and the epoch's log record.
        work_dir: Checkpoint after every epoch into this directory (locked while in use).
        resume: Continue from the newest good checkpoint in ``work_dir``.
        force: Resume even though the manifest, config or tool version changed.
        should_stop: Checked at epoch boundaries; True stops with
            :class:`~labelclean.fgcm.audit.AuditInterrupted` after the checkpoint is written.
        frozen: Train only a light head on embeddings of a frozen backbone (``model``,
            ``weights``/``pretrained``): the fast audit.
        head: ``linear`` or ``mlp`` (frozen mode).
        frozen_flip: Also embed mirrored images and use them as augmentation (frozen mode).
        frozen_folds: Cross-fitted heads (frozen mode; None = the default, 1 = one head).
        neighbours: k of the nearest-neighbour label vote (frozen mode; None = the default,
            0 = off).
        **options: :class:`AuditConfig` fields, e.g. ``epochs=20``, ``preset="paper"``.

    Returns:
        An :class:`AuditResult`; ``.to_pandas()`` gives the report, ``.write(path)`` the file.
        For votes a :class:`~labelclean.crowd.report.CrowdAuditResult`, whose
        ``.annotators`` ranks the annotators and whose ``.write`` also writes them.

    Example:
        >>> result = labelclean.audit("images/", "labels.csv", epochs=20)  # doctest: +SKIP
        >>> result.to_pandas().query("action == 'relabel'")  # doctest: +SKIP
    """
    from labelclean.data.images import load_dataset

    if config is None:
        config = AuditConfig.from_preset(options.pop("preset", None), **options)
    elif options:
        raise TypeError("pass either config= or individual options, not both")
    data_options = dict(data_options or {})
    data_options.setdefault("should_stop", should_stop)
    dataset = load_dataset(images, labels, progress=progress, **data_options)
    run = None
    if frozen:
        from labelclean.fgcm.frozen import FrozenAuditRun, frozen_config

        config = frozen_config(
            config, head=head, flip=frozen_flip, folds=frozen_folds, neighbours=neighbours
        )
        run = FrozenAuditRun(
            dataset, config, cache_dir=data_options.get("cache_dir"), progress=progress
        )
    return run_checkpointed(
        dataset,
        config,
        run=run,
        work_dir=Path(work_dir) if work_dir is not None else None,
        resume=resume,
        force=force,
        progress=progress,
        on_epoch=on_epoch,
        should_stop=should_stop,
    )


def run_checkpointed(
    dataset: Any,
    config: AuditConfig,
    *,
    work_dir: Path | None,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    should_stop: Callable[[], bool] | None = None,
    run: Any = None,
) -> AuditResult:
    """Run the audit loop with a checkpoint after every epoch (issue 8) when ``work_dir`` is set.

    Only the main rank writes; every rank reads the same checkpoint on resume. A large run
    keeps its confidence traces in ``work_dir/traces`` and checkpoints them by reference
    (:mod:`labelclean.fgcm.history`).
    """
    from labelclean.checkpoint import (
        TRACE_DIR,
        WorkDirLock,
        load_latest,
        resume_differences,
        save_checkpoint,
    )
    from labelclean.errors import CheckpointError
    from labelclean.fgcm.audit import (
        AuditRun,
        AuditState,
        checkpoint_payload,
        restore_state,
        run_audit,
    )
    from labelclean.fgcm.history import traces_on_disk

    run = run or AuditRun(dataset, config)
    if work_dir is None:
        if resume:
            raise CheckpointError("--resume needs a work directory (--work-dir)")
        return run_audit(
            dataset,
            config,
            run=run,
            progress=progress,
            on_epoch=on_epoch,
            should_stop=should_stop,
        )
    trace_dir = work_dir / TRACE_DIR
    lock = WorkDirLock(work_dir)
    with lock.held() if run.dist.is_main else contextlib.nullcontext():
        if resume:
            payload, path = load_latest(work_dir)
            changes = resume_differences(
                payload,
                config=run.config.to_dict(),
                manifest_fingerprint=dataset.manifest.fingerprint(),
            )
            if changes and not force:
                raise CheckpointError(
                    f"--resume: {path} was made by a different run: "
                    + "; ".join(changes)
                    + ". Pass --force to resume anyway, or start fresh without --resume"
                )
            state = restore_state(payload, run, trace_dir=trace_dir)
            logger.info("resuming from %s (epoch %d)", path, state.epoch)
        elif run.dist.is_main and any(work_dir.glob("checkpoint-*.pt")):
            raise CheckpointError(
                f"{work_dir} holds checkpoints of an earlier run; pass --resume to continue it, "
                "or remove the directory / choose another --work-dir to start fresh"
            )
        else:
            on_disk = traces_on_disk(run.n_samples, run.config.epochs)
            state = AuditState.new(
                run.n_samples,
                run.n_classes,
                run.config.epochs,
                trace_dir=trace_dir if on_disk and run.dist.is_main else None,
            )
            if run.dist.is_main:  # epoch 0: even a first epoch cut short can be resumed
                save_checkpoint(work_dir, checkpoint_payload(state, run))

        def checkpoint_then_report(audit_state: Any, line: dict[str, Any]) -> None:
            if run.dist.is_main:
                save_checkpoint(work_dir, checkpoint_payload(audit_state, run))
            if on_epoch is not None:
                on_epoch(audit_state, line)

        return run_audit(
            dataset,
            config,
            state=state,
            run=run,
            progress=progress,
            on_epoch=checkpoint_then_report,
            should_stop=should_stop,
        )
