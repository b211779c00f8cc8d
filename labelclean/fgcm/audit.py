"""The FGCM audit loop (paper Algorithm 1, pinned down in DESIGN.md "The audit").

setup -> for each epoch: [cluster -> refine -> update T] -> one epoch on T (all samples
during warmup) -> recording pass over ALL samples -> history update -> epoch hook.
After the last epoch one more clustering on the full history gives the report, and
``--semi-epochs`` of semi-training guess the unlabeled rows' labels (:mod:`labelclean.fgcm.semi`).

``--schedule once`` (the default for from-scratch training) skips the bracket: every epoch
trains on all samples (with mixup) and only the final clustering runs. A deviation from
Algorithm 1, measured on CIFAR-10N human noise, where training on T alone starved the
samples outside T of signal (README "How it works").

This module is the audit's front door (``__all__``); the pieces live beside it: the set-up
in :mod:`labelclean.fgcm.run`, the state and the clustering step in
:mod:`labelclean.fgcm.state`, the report in :mod:`labelclean.fgcm.result`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labelclean._faults import maybe_fail
from labelclean._version import __version__
from labelclean.config import AuditConfig
from labelclean.data.images import Dataset
from labelclean.distributed import Dist
from labelclean.fgcm.clustering import CLUSTER_NAMES
from labelclean.fgcm.health import Where, check_finite, check_finite_weights
from labelclean.fgcm.history import is_late_epoch
from labelclean.fgcm.result import AuditResult, audit_result
from labelclean.fgcm.run import AuditRun
from labelclean.fgcm.semi import semi_epilogue
from labelclean.fgcm.state import AuditState, update_clusters
from labelclean.progress import Progress
from labelclean.training import StepInterrupted, lr_factor

__all__ = [
    "AuditInterrupted",
    "AuditResult",
    "AuditRun",
    "AuditState",
    "EpochHook",
    "FaultHook",
    "checkpoint_payload",
    "restore_state",
    "run_audit",
]

logger = logging.getLogger(__name__)

EpochHook = Callable[[AuditState, dict[str, Any]], None]

#: ``faults(point, epoch)``, called at the loop's named points: ``train_step`` (mid-epoch,
#: after two optimizer steps), ``record`` (before the recording pass) and ``epoch_end``
#: (after the epoch's hook, so after its checkpoint). The crash-and-resume tests stop the
#: process there; ``epoch`` is 0-based.
FaultHook = Callable[[str, int], None]


class AuditInterrupted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised at an epoch boundary when ``should_stop()`` asked the loop to stop.

    Carries the state so the caller can checkpoint it, or continue it later.
    """

    def __init__(self, state: AuditState, run: AuditRun) -> None:
        super().__init__(f"stopped after epoch {state.epoch}")
        self.state, self.run = state, run


def checkpoint_payload(state: AuditState, run: AuditRun) -> dict[str, Any]:
    """Everything needed to continue exactly where ``state`` is (see labelclean.checkpoint)."""
    return {
        "epoch": state.epoch,
        "tool_version": __version__,
        "config": run.config.to_dict(),
        "manifest_fingerprint": run.dataset.manifest.fingerprint(),
        "images_fingerprint": run.dataset.cache.key,  # the files' sizes and times
        "audit": state.state_dict(),
        "run": run.state_dict(),
    }


def restore_state(
    payload: dict[str, Any], run: AuditRun, *, trace_dir: Path | None = None
) -> AuditState:
    """Load a checkpoint's run and audit state; returns the state to continue from.

    ``trace_dir``: the work directory's trace folder, used when the checkpoint refers to
    trace files. Only the main rank writes there; other ranks read it into memory.
    """
    run.load_state_dict(payload["run"])
    on_disk = "trace_files" in payload["audit"]["history"]
    state = AuditState.new(
        run.n_samples,
        run.n_classes,
        run.config.epochs,
        trace_dir=trace_dir if on_disk and run.dist.is_main else None,
    )
    state.load_state_dict(payload["audit"], trace_source=trace_dir)
    return state


def run_audit(
    dataset: Dataset,
    config: AuditConfig,
    *,
    state: AuditState | None = None,
    run: AuditRun | None = None,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    dist: Dist | None = None,
    should_stop: Callable[[], bool] | None = None,
    faults: FaultHook | None = None,
) -> AuditResult:
    """Run (or continue) the FGCM audit and return the report.

    Args:
        dataset: Validated manifest + image cache.
        config: The audit settings.
        state: A restored state to continue from (``--resume``); fresh when None.
        run: A prepared :class:`AuditRun` (model/optimizer restored by the caller); built
            here when None.
        progress: Progress callback (``progress(task, done, total)``).
        on_epoch: Called after every epoch with the state and that epoch's log line
            (checkpoints, ``--log-json``, the CLI's per-epoch line).
        dist: Rank information under torchrun.
        should_stop: Checked before every training step and after each epoch's hook; when
            it returns True the loop raises :class:`AuditInterrupted` carrying the state of
            the last completed epoch (Ctrl-C, benchmarks).
        faults: See :data:`FaultHook`. None: the one fault ``LABELCLEAN_FAULT`` asks for,
            which the subprocess crash tests set (:mod:`labelclean._faults`); inert unset.
    """
    start = time.perf_counter()
    run = run or AuditRun(dataset, config, dist=dist)
    config = run.config  # with the model-dependent defaults filled in
    state = state or AuditState.new(run.n_samples, run.n_classes, config.epochs)
    fault = faults if faults is not None else maybe_fail
    for epoch in range(state.epoch, config.epochs):
        line = _run_epoch(state, run, epoch, progress, should_stop, fault)
        if on_epoch is not None:
            on_epoch(state, line)
        fault("epoch_end", epoch)
        if should_stop is not None and should_stop() and state.epoch < config.epochs:
            raise AuditInterrupted(state, run)
    if config.final_clustering or not (state.cluster >= 0).any():  # the paper: no extra one
        update_clusters(state, run, config.epochs)
    result = audit_result(state, run, wall_time=time.perf_counter() - start)
    try:  # --semi-epochs: a stop here leaves the last epoch's checkpoint to resume from
        return semi_epilogue(result, state, run, progress=progress, should_stop=should_stop)
    except StepInterrupted:
        raise AuditInterrupted(state, run) from None


def _run_epoch(
    state: AuditState,
    run: AuditRun,
    epoch: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    fault: FaultHook,
) -> dict[str, Any]:
    """One epoch: [cluster -> T], train, record, update the history; returns its log line."""
    config, epoch_start = run.config, time.perf_counter()
    assert config.lr is not None  # the run's config is resolved
    lr = config.lr * lr_factor(
        epoch, epochs=config.epochs, schedule=config.lr_schedule, milestones=config.lr_milestones
    )
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    train_index, train_labels = _training_set(state, run, epoch)
    steps = 0

    def stop_or_fault() -> bool:
        nonlocal steps
        steps += 1
        if steps == 3:  # mid-epoch: after two optimizer steps
            fault("train_step", epoch)
        return should_stop is not None and should_stop()

    try:
        result = run.learner.train_epoch(
            run,
            train_index,
            train_labels,
            epoch,
            keep_probs=config.record == "train",
            progress=progress,
            should_stop=stop_or_fault,
        )
    except StepInterrupted:
        raise AuditInterrupted(state, run) from None
    where = Where(epoch=epoch, epochs=config.epochs, lr=config.lr, task="audit")
    check_finite(result.loss, what="the training loss", **where)
    check_finite_weights(run.model, **where)
    fault("record", epoch)
    late = config.schedule == "once" and is_late_epoch(lr, config.lr)  # history.py
    # Late epochs feed the report: record them with their mirror too (hflip-trained only)
    probs = run.learner.record(run, result, progress, flip=late and config.hflip)
    check_finite(probs, what="the recorded probabilities", **where)
    state.history.update(probs, run.given, late=late)
    state.epoch = epoch + 1
    line = _epoch_line(state, epoch, result.loss, lr, time.perf_counter() - epoch_start)
    state.epoch_log.append(line)
    return line


def _training_set(state: AuditState, run: AuditRun, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's ``(index, labels)``: T after warmup (clustered first), else every sample."""
    everyone = np.arange(run.n_samples)
    if epoch < run.config.clusters_from:  # always with --schedule once
        return everyone, run.given
    update_clusters(state, run, epoch)
    index = np.flatnonzero(state.in_t)
    if len(index) == 0:  # degenerate fit: never train on nothing
        logger.warning("epoch %d: the training set T is empty; training on all", epoch)
        return everyone, run.given
    return index, state.t_labels[index]


def _epoch_line(
    state: AuditState, epoch: int, loss: float, lr: float, seconds: float
) -> dict[str, Any]:
    """The per-epoch log record (printed by the CLI, written by --log-json).

    ``guard``: what the guard did in this epoch's clustering, when it did anything.
    """
    counts = {}
    if (state.cluster >= 0).any():
        codes, freq = np.unique(state.cluster, return_counts=True)
        counts = {CLUSTER_NAMES[c]: int(f) for c, f in zip(codes, freq) if c >= 0}
    line: dict[str, Any] = {
        "epoch": epoch + 1,
        "loss": round(loss, 5),
        "lr": lr,
        "t_size": int(state.in_t.sum()),
        "clusters": counts,
        "seconds": round(seconds, 3),
    }
    if state.guard_note:
        line["guard"] = state.guard_note
    return line
