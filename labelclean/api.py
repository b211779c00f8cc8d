"""The Python API: the same verbs as the CLI, returning objects instead of printing.

:func:`audit` is here; :func:`finetune` (:mod:`labelclean._finetune`) and :func:`predict`
(:mod:`labelclean._predict`) are re-exported. The CLI commands call these, and only parse
options and print.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelclean._finetune import FinetuneInterrupted, finetune
from labelclean._predict import Predictions, predict
from labelclean.config import AuditConfig, check_keywords, checked
from labelclean.fgcm.audit import AuditResult, AuditRun, EpochHook
from labelclean.progress import Progress

if TYPE_CHECKING:
    from labelclean.data.images import Dataset
    from labelclean.data.manifest import Manifest
    from labelclean.distributed import Dist

__all__ = [
    "FinetuneInterrupted",
    "Predictions",
    "audit",
    "audit_run",
    "finetune",
    "predict",
    "run_checkpointed",
]

logger = logging.getLogger(__name__)


@checked
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
    head: str | None = None,
    frozen_flip: bool = False,
    frozen_folds: int | None = None,
    neighbours: int | None = None,
    dist: Dist | None = None,
    on_loaded: Callable[[Dataset], None] | None = None,
    on_start: Callable[[Dataset, AuditRun], None] | None = None,
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
        head: ``mlp`` or ``linear`` (frozen mode; None = the default, mlp).
        frozen_flip: Also embed mirrored images and use them as augmentation (frozen mode).
        frozen_folds: Cross-fitted heads (frozen mode; None = the default, 1 = one head).
        neighbours: k of the nearest-neighbour label vote (frozen mode; None = the default,
            0 = off).
        dist: This process's place in a torchrun job (:func:`labelclean.distributed.init_from_env`);
            None = a single process.
        on_loaded: Called with the dataset once its images are decoded, before the set-up
            (which for ``frozen`` embeds them); the CLI reports it and lists bad images.
        on_start: Called with the dataset and the set-up run before the first epoch.
        **options: :class:`AuditConfig` fields, e.g. ``epochs=20``, ``preset="paper"``.

    Every argument is checked first, before any image is read: a wrong type or value
    raises :class:`~labelclean.errors.ConfigError` naming it, as the CLI's options are.

    Returns:
        An :class:`AuditResult`; ``.to_pandas()`` gives the report, ``.write(path)`` the file
        (never over one of this audit's inputs). For votes a
        :class:`~labelclean.crowd.report.CrowdAuditResult`, whose ``.annotators`` ranks the
        annotators and whose ``.write`` also writes them.

    Example:
        >>> result = labelclean.audit("images/", "labels.csv", epochs=20)  # doctest: +SKIP
        >>> result.to_pandas().query("action == 'relabel'")  # doctest: +SKIP
    """
    from labelclean.data.images import load_dataset, load_images
    from labelclean.distributed import Dist
    from labelclean.fgcm.frozen import check_frozen_flags, make_head
    from labelclean.fgcm.history import check_audit_memory

    if config is None:
        config = AuditConfig.from_preset(options.pop("preset", None), **options)
    elif options:
        raise TypeError("pass either config= or individual options, not both")
    _refuse_unusable_network(config, frozen=frozen)
    data_options = dict(data_options or {})
    check_keywords(data_options, load_dataset, load_images, what="data_options")
    check_frozen_flags(frozen, folds=frozen_folds, neighbours=neighbours)
    if frozen and head is not None:
        make_head(head, 1, 2)  # --head 'x': refused now, not after the embedding
    data_options.setdefault("should_stop", should_stop)

    def fits(manifest: Manifest) -> None:  # refused before decoding, not in the first epoch
        n, c = len(manifest), len(manifest.class_names)
        check_audit_memory(n, c, where=str(manifest.source))

    with (dist or Dist()).main_first():  # rank 0 builds the image cache; the others reuse it
        dataset = load_dataset(images, labels, progress=progress, on_manifest=fits, **data_options)
    if on_loaded is not None:
        on_loaded(dataset)
    frozen_options = {
        "head": head,
        "flip": frozen_flip,
        "folds": frozen_folds,
        "neighbours": neighbours,
    }
    run = audit_run(
        dataset,
        config,
        dist=dist,
        frozen=frozen_options if frozen else None,
        cache_dir=data_options.get("cache_dir"),
        progress=progress,
    )
    if on_start is not None:
        on_start(dataset, run)
    result = run_checkpointed(
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
    given = {"IMAGES": images, "LABELS": labels, "--weights": config.weights}
    result.inputs = {k: str(Path(v).absolute()) if v else None for k, v in given.items()}
    return result


def _refuse_unusable_network(config: AuditConfig, *, frozen: bool) -> None:
    """Refuse, before any image is decoded, a network the audit cannot use.

    An unknown ``model`` (a typo) would fail only once the network is built, after the
    images are decoded. A frozen backbone without weights embeds images with random filters:
    such an audit relabeled 9.6% of the images right (chance), so it is refused, not warned.
    """
    from labelclean.errors import ConfigError
    from labelclean.models import check_model_name

    if config.model is not None:
        check_model_name(config.model)
    if frozen and not (config.weights or config.pretrained):
        raise ConfigError(
            "--frozen needs the backbone's trained weights (a random backbone's features are "
            "noise and its audit relabels at chance): give --weights FILE, a local state dict "
            "(weights= in Python), or --pretrained, timm's published weights, downloaded "
            "(pretrained=True)"
        )


def audit_run(
    dataset: Dataset,
    config: AuditConfig,
    *,
    dist: Dist | None = None,
    frozen: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> AuditRun:
    """The audit's set-up, shared by :func:`audit` and the CLI: device, model, batches.

    With ``frozen`` options (``head``, ``flip``, ``folds``, ``neighbours``) a frozen-backbone
    run, which embeds the images first.
    """
    if frozen is None:
        return AuditRun(dataset, config, dist=dist)
    from labelclean.fgcm.frozen import FrozenAuditRun, frozen_config

    return FrozenAuditRun(
        dataset,
        frozen_config(config, **frozen),  # marks ``config`` itself as a frozen audit
        dist=dist,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        progress=progress,
    )


def run_checkpointed(
    dataset: Dataset,
    config: AuditConfig,
    *,
    work_dir: Path | None,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    should_stop: Callable[[], bool] | None = None,
    run: AuditRun | None = None,
) -> AuditResult:
    """Run the audit loop with a checkpoint after every epoch (issue 8) when ``work_dir`` is set.

    Only the main rank writes; every rank reads the same checkpoint on resume. A large run
    keeps its confidence traces in ``work_dir/traces`` and checkpoints them by reference
    (:mod:`labelclean.fgcm.history`).
    """
    from labelclean.checkpoint import TRACE_DIR, RunCheckpoints
    from labelclean.errors import CheckpointError
    from labelclean.fgcm.audit import AuditState, checkpoint_payload, restore_state, run_audit
    from labelclean.fgcm.history import traces_on_disk

    run = run or AuditRun(dataset, config)
    loop: dict[str, Any] = {"run": run, "progress": progress, "should_stop": should_stop}
    if work_dir is None:
        if resume:
            raise CheckpointError("--resume needs a work directory (--work-dir)")
        return run_audit(dataset, config, on_epoch=on_epoch, **loop)
    trace_dir = work_dir / TRACE_DIR
    checkpoints = RunCheckpoints(work_dir, is_main=run.dist.is_main)
    with checkpoints.held():
        if resume:
            payload, _ = checkpoints.resume(
                config=run.config.to_dict(),
                manifest_fingerprint=dataset.manifest.fingerprint(),
                images_fingerprint=dataset.cache.key,
                force=force,
            )
            state = restore_state(payload, run, trace_dir=trace_dir)
        else:
            checkpoints.refuse_earlier_run()
            on_disk = traces_on_disk(run.n_samples, run.config.epochs)
            state = AuditState.new(
                run.n_samples,
                run.n_classes,
                run.config.epochs,
                trace_dir=trace_dir if on_disk and run.dist.is_main else None,
            )
            # epoch 0: even a first epoch cut short can be resumed
            checkpoints.save_payload(checkpoint_payload(state, run))

        def checkpoint_then_report(audit_state: Any, line: dict[str, Any]) -> None:
            checkpoints.save_payload(checkpoint_payload(audit_state, run))
            if on_epoch is not None:
                on_epoch(audit_state, line)

        return run_audit(dataset, config, state=state, on_epoch=checkpoint_then_report, **loop)
