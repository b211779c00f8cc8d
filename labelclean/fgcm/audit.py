"""The FGCM audit loop (paper Algorithm 1, pinned down in DESIGN.md "The audit").

setup -> for each epoch: [cluster -> refine -> update T] -> one epoch on T (all samples
during warmup) -> recording pass over ALL samples -> history update -> epoch hook.
After the last epoch one more clustering on the full history gives the report.

``--schedule once`` (the default for from-scratch training) skips the bracket: every epoch
trains on all samples (with mixup) and only the final clustering runs. A deviation from
Algorithm 1, measured on CIFAR-10N human noise, where training on T alone starved the
samples outside T of signal (README "How it works").

Everything that changes across epochs lives in one :class:`AuditState`, which holds only
arrays and plain values, so a checkpoint is ``state_dict()`` plus the model/optimizer and
a resumed or multi-rank run rebuilds exactly the same object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelclean._faults import maybe_fail
from labelclean._version import __version__
from labelclean.config import AuditConfig
from labelclean.data.images import Dataset
from labelclean.data.manifest import leaves_root
from labelclean.distributed import Dist
from labelclean.fgcm.clustering import (
    CLUSTER_NAMES,
    GMMParams,
    fit_gmm,
    fit_kmeans,
    gmm_posteriors,
    name_components,
    refine,
    update_training_set,
)
from labelclean.fgcm.guard import GUARD_REASONS, apply_guard
from labelclean.fgcm.health import check_finite, check_finite_weights, collapse_warning
from labelclean.fgcm.history import ConfidenceHistory, is_late_epoch
from labelclean.models import RECIPES, create_model, default_model_name, fit_data_init
from labelclean.progress import Progress
from labelclean.training import (
    ImageBatches,
    Precision,
    StepInterrupted,
    build_optimizer,
    lr_factor,
    predict_probs,
    resolve_device,
    seed_everything,
    train_epoch,
)

logger = logging.getLogger(__name__)

_NAME_CODE = {name: code for code, name in enumerate(CLUSTER_NAMES)}


@dataclass
class Clustering:
    """One clustering of the joint confidences: per-sample component names and posteriors."""

    cluster: np.ndarray  #: int8 [N], index into CLUSTER_NAMES
    cluster_prob: np.ndarray  #: float32 [N], posterior of the assigned component
    gmm: GMMParams | None  #: the fit (None for k-means)
    component_names: list[str]  #: name of each component, aligned with gmm.means
    guard_note: str = ""  #: what the low-noise guard changed, if anything
    keep_given: np.ndarray | None = None  #: bool [N], kept with the given label by the guard
    guard_reason: np.ndarray | None = None  #: int8 [N], index into GUARD_REASONS (0: none)


@dataclass
class AuditState:
    """Everything the loop carries between epochs (saved by checkpoints, shared by ranks)."""

    history: ConfidenceHistory
    in_t: np.ndarray  #: bool [N], sample is in the training set T
    t_labels: np.ndarray  #: int64 [N], its label in T (-1 outside)
    admitted_epoch: np.ndarray  #: int32 [N], epoch it first entered T (-1 never)
    cluster: np.ndarray  #: int8 [N], latest cluster (-1 before the first clustering)
    cluster_prob: np.ndarray  #: float32 [N]
    guard: np.ndarray  #: int8 [N], the guard that moved it in the latest clustering (0: none)
    epoch: int = 0  #: epochs completed
    gmm: GMMParams | None = None
    component_names: list[str] = field(default_factory=list)
    epoch_log: list[dict[str, Any]] = field(default_factory=list)
    guard_note: str = ""  #: what the guard did in the latest clustering

    @classmethod
    def new(
        cls, n_samples: int, n_classes: int, epochs: int, *, trace_dir: Path | None = None
    ) -> AuditState:
        """Fresh state: empty history (traces in ``trace_dir`` if given), T empty, no clusters."""
        return cls(
            history=ConfidenceHistory(n_samples, n_classes, epochs, trace_dir=trace_dir),
            in_t=np.zeros(n_samples, dtype=bool),
            t_labels=np.full(n_samples, -1, dtype=np.int64),
            admitted_epoch=np.full(n_samples, -1, dtype=np.int32),
            cluster=np.full(n_samples, -1, dtype=np.int8),
            cluster_prob=np.zeros(n_samples, dtype=np.float32),
            guard=np.zeros(n_samples, dtype=np.int8),
        )

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back."""
        return {
            "history": self.history.state_dict(),
            "in_t": torch.from_numpy(self.in_t.copy()),
            "t_labels": torch.from_numpy(self.t_labels.copy()),
            "admitted_epoch": torch.from_numpy(self.admitted_epoch.copy()),
            "cluster": torch.from_numpy(self.cluster.copy()),
            "cluster_prob": torch.from_numpy(self.cluster_prob.copy()),
            "guard": torch.from_numpy(self.guard.copy()),
            "guard_note": self.guard_note,
            "epoch": self.epoch,
            "gmm": None if self.gmm is None else self.gmm.to_dict(),
            "component_names": list(self.component_names),
            "epoch_log": list(self.epoch_log),
        }

    def load_state_dict(self, state: dict[str, Any], *, trace_source: Path | None = None) -> None:
        """Restore from :meth:`state_dict` (``trace_source``: see ConfidenceHistory)."""
        self.history.load_state_dict(state["history"], trace_source=trace_source)
        for key in ("in_t", "t_labels", "admitted_epoch", "cluster", "cluster_prob", "guard"):
            if key in state:  # "guard": not in checkpoints of earlier versions
                setattr(self, key, state[key].numpy().copy())
        self.guard_note = str(state.get("guard_note", ""))
        self.epoch = int(state["epoch"])
        self.gmm = None if state["gmm"] is None else GMMParams.from_dict(state["gmm"])
        self.component_names = list(state["component_names"])
        self.epoch_log = list(state["epoch_log"])


def cluster_samples(
    history: ConfidenceHistory,
    given_labels: np.ndarray,
    config: AuditConfig,
    *,
    previous: GMMParams | None = None,
) -> tuple[Clustering, np.ndarray]:
    """Joint confidence -> mixture fit -> named clusters (DESIGN.md, steps 3-4).

    Returns the clustering and the max-repeating pseudo labels ``[N]`` it used.
    With ``--components 2`` the points are 1-D (mean confidence of the given label only):
    the loss-only two-component split of prior work (DivideMix) that the paper compares to.
    """
    pseudo = history.pseudo_labels(window="late")  # all epochs unless --schedule once
    joint = history.joint_confidence(given_labels, pseudo_labels=pseudo, window="late")
    points = joint[:, :1] if config.components == 2 else joint
    k = config.components
    if config.cluster_method == "kmeans":
        assign, centers = fit_kmeans(points, n_components=k, seed=config.seed)
        names = name_components(centers)
        gmm = None
        prob = np.ones(len(points), dtype=np.float32)
    else:
        init = previous if previous is not None and len(previous.weights) == k else None
        gmm = fit_gmm(
            points, n_components=k, init=init, max_iter=config.gmm_max_iter, seed=config.seed
        )
        post = gmm_posteriors(points, gmm)
        assign = post.argmax(1)
        prob = post[np.arange(len(points)), assign].astype(np.float32)
        names = name_components(gmm.means)
    codes = np.array([_NAME_CODE[n] for n in names], dtype=np.int8)[assign]
    clustering = Clustering(codes, prob, gmm, list(names))
    if config.guard != "none" and k >= 3:
        guarded = apply_guard(
            codes, joint, given_labels, pseudo, n_classes=history.n_classes, method=config.guard
        )
        clustering.cluster, clustering.guard_note = guarded.codes, guarded.note
        clustering.keep_given, clustering.guard_reason = guarded.keep_given, guarded.reason
    return clustering, pseudo


def admit_samples(
    clustering: Clustering,
    given_labels: np.ndarray,
    pseudo_labels: np.ndarray,
    components: int,
    *,
    relabel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Refined clusters -> (admit [N] bool, label [N]) for this epoch (paper section 3.2).

    With two components the clean side is admitted as is: prior work has no refinement.
    ``relabel=False`` unlabels NS instead of relabeling it (for weak networks, whose
    confident disagreements are often wrong: see README "How it works").
    """
    names = np.asarray(CLUSTER_NAMES)[clustering.cluster]
    if components == 2:
        admit = names == "CS"
        return admit, np.where(admit, given_labels, -1).astype(np.int64)
    if not relabel:
        names = np.where(names == "NS", "NHI", names)
    admit, labels = refine(names, given_labels, pseudo_labels)
    if clustering.keep_given is not None:  # kept by the guard: budget and class floor
        admit = admit | clustering.keep_given
        labels = np.where(clustering.keep_given, given_labels, labels)
    return admit, labels


@dataclass
class AuditResult:
    """The audit's outcome: one row per sample plus metadata; ``write`` gives report.parquet."""

    table: Any  #: pyarrow.Table in the report schema
    metadata: dict[str, Any]

    def to_pandas(self) -> Any:
        """The report as a pandas DataFrame (one row per sample, manifest order)."""
        return self.table.to_pandas()

    def write(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write report.parquet atomically (refuses to replace a file unless ``overwrite``)."""
        from labelclean.report.parquet import write_report

        return write_report(Path(path), self.table, self.metadata, overwrite=overwrite)


EpochHook = Callable[[AuditState, dict[str, Any]], None]


class AuditInterrupted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised at an epoch boundary when ``should_stop()`` asked the loop to stop.

    Carries the state so the caller can checkpoint it, or continue it later.
    """

    def __init__(self, state: AuditState, run: AuditRun) -> None:
        super().__init__(f"stopped after epoch {state.epoch}")
        self.state, self.run = state, run


class AuditRun:
    """Set-up shared by every epoch: device, model, optimizer, image batches, generator."""

    def __init__(self, dataset: Dataset, config: AuditConfig, *, dist: Dist | None = None) -> None:
        self.dataset = dataset
        manifest, cache = dataset.manifest, dataset.cache
        # The loop works in path-sorted ("canonical") order, so shuffling the manifest's rows
        # changes nothing but the report's row order; `canon[j]` is the manifest row of j.
        self.canon = np.argsort(np.asarray(manifest.paths, dtype=object), kind="stable")
        self.given = np.asarray(manifest.given_labels, dtype=np.int64)[self.canon]
        self.n_samples, self.n_classes = len(manifest), len(manifest.class_names)
        device = resolve_device(config.device)
        self.dist = dist or Dist(device=device)
        device = self.dist.device if self.dist.active else device
        self.precision = Precision.choose(device, amp=config.amp)
        self.generator = seed_everything(config.seed, deterministic=config.deterministic)
        self.model_name = config.model or default_model_name(cache.image_size, device)
        self.precision = self.precision.for_model(self.model_name)
        self.architecture = self.model_name  #: what ``finetune`` trains (report metadata)
        self.config = config.resolve(self.model_name)
        model = create_model(
            self.model_name,
            self.n_classes,
            pretrained=config.pretrained,
            weights=config.weights,
        ).to(device)
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.train_model: torch.nn.Module = model
        if self.dist.active:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.normalization = _normalization(
            model, cache, pretrained=bool(config.pretrained or config.weights)
        )
        self.batches: Any = ReindexedBatches(
            ImageBatches(
                cache.images,
                self.normalization["mean"],
                self.normalization["std"],
                self.precision,
                crop_padding=(
                    config.crop_padding
                    if config.crop_padding is not None
                    else cache.image_size // 8
                ),
                hflip=config.hflip,
            ),
            self.canon,
        )
        if not (config.pretrained or config.weights):
            first = np.arange(min(self.n_samples, 5000))  # canonical order: the same on every rank
            with torch.no_grad():
                fit_data_init(model, self.batches.prepare(self.batches.load(first)))
        self.optimizer = build_optimizer(
            model,
            lr=self.config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=bool(RECIPES.get(self.model_name, {}).get("nesterov", False)),
        )
        self.scaler = self.precision.grad_scaler()

    def train_epoch(
        self,
        index: np.ndarray,
        labels: np.ndarray,
        epoch: int,
        keep_probs: bool,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ) -> Any:
        """One training epoch on ``(index, labels)``; a subclass may train differently."""
        return _train(self, index, labels, epoch, keep_probs, progress, should_stop)

    def record(self, result: Any, progress: Progress | None) -> np.ndarray:
        """The epoch's softmax ``[N, C]`` of every sample; a subclass may record differently."""
        return _record(self, result, progress)

    @property
    def relabel(self) -> bool:
        """Relabel NS? ``--relabel`` decides; by default off for the small CPU network only."""
        return bool(self.config.relabel)

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, loss scaler and RNG states (tensors and plain values only)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])


@dataclass(frozen=True)
class ReindexedBatches:
    """A batch source read through an index map (canonical position -> cache row)."""

    inner: Any
    rows: np.ndarray

    @property
    def precision(self) -> Precision:
        """The wrapped source's device and precision."""
        return self.inner.precision

    def load(self, index: np.ndarray) -> torch.Tensor:
        """The batch for canonical positions ``index``."""
        return self.inner.load(self.rows[index])

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Delegates to the wrapped source."""
        return self.inner.augment(batch, generator)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Delegates to the wrapped source."""
        return self.inner.prepare(batch)


def checkpoint_payload(state: AuditState, run: AuditRun) -> dict[str, Any]:
    """Everything needed to continue exactly where ``state`` is (see labelclean.checkpoint)."""
    return {
        "epoch": state.epoch,
        "tool_version": __version__,
        "config": run.config.to_dict(),
        "manifest_fingerprint": run.dataset.manifest.fingerprint(),
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


def _normalization(model: torch.nn.Module, cache: Any, *, pretrained: bool) -> dict[str, Any]:
    """Pretrained timm weights expect their own mean/std; from-scratch models use the data's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if pretrained and "mean" in cfg and "std" in cfg:
        return {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "source": "model"}
    return {"mean": list(cache.mean), "std": list(cache.std), "source": "data"}


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
    """
    start = time.perf_counter()
    run = run or AuditRun(dataset, config, dist=dist)
    config = run.config  # with the model-dependent defaults filled in
    state = state or AuditState.new(run.n_samples, run.n_classes, config.epochs)
    given, n = run.given, run.n_samples
    all_index = np.arange(n)
    for epoch in range(state.epoch, config.epochs):
        epoch_start = time.perf_counter()
        lr = config.lr * lr_factor(
            epoch,
            epochs=config.epochs,
            schedule=config.lr_schedule,
            milestones=config.lr_milestones,
        )
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        if epoch >= config.clusters_from:  # never with --schedule once
            _update_clusters(state, run, epoch)
            train_index = np.flatnonzero(state.in_t)
            train_labels = state.t_labels[train_index]
            if len(train_index) == 0:  # degenerate fit: never train on nothing
                logger.warning("epoch %d: the training set T is empty; training on all", epoch)
                train_index, train_labels = all_index, given
        else:
            train_index, train_labels = all_index, given
        keep = config.record == "train"
        steps = [0]

        def stop_or_fault(epoch: int = epoch, steps: list[int] = steps) -> bool:
            steps[0] += 1
            if steps[0] == 3:  # mid-epoch: after two optimizer steps
                maybe_fail("train_step", epoch)
            return should_stop is not None and should_stop()

        try:
            result = run.train_epoch(
                train_index, train_labels, epoch, keep, progress, stop_or_fault
            )
        except StepInterrupted:
            raise AuditInterrupted(state, run) from None
        health = {"epoch": epoch, "epochs": config.epochs, "lr": config.lr, "task": "audit"}
        check_finite(result.loss, what="the training loss", **health)
        check_finite_weights(run.model, **health)
        maybe_fail("record", epoch)
        probs = run.record(result, progress)
        check_finite(probs, what="the recorded probabilities", **health)
        late = config.schedule == "once" and is_late_epoch(lr, config.lr)  # history.py
        state.history.update(probs, given, late=late)
        state.epoch = epoch + 1
        line = _epoch_line(state, epoch, result.loss, lr, time.perf_counter() - epoch_start)
        state.epoch_log.append(line)
        if on_epoch is not None:
            on_epoch(state, line)
        maybe_fail("epoch_end", epoch)
        if should_stop is not None and should_stop() and state.epoch < config.epochs:
            raise AuditInterrupted(state, run)
    if config.final_clustering or not (state.cluster >= 0).any():  # the paper: no extra one
        _update_clusters(state, run, config.epochs)
    return _with_votes(_build_result(state, run, wall_time=time.perf_counter() - start), state, run)


def _with_votes(result: AuditResult, state: AuditState, run: AuditRun) -> AuditResult:
    """Crowd input: the final combination of the network and the votes (labelclean.crowd)."""
    votes = run.dataset.manifest.votes
    if votes is None:
        return result
    from labelclean.crowd.report import finish_crowd_audit

    probs = np.empty_like(state.history.sums)
    probs[run.canon] = state.history.mean_confidence()  # canonical -> manifest order
    return finish_crowd_audit(result, votes, probs)


def _train(
    run: AuditRun,
    index: np.ndarray,
    labels: np.ndarray,
    epoch: int,
    keep_probs: bool,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> Any:
    """One training epoch on ``(index, labels)``, sharded across ranks under torchrun."""
    return train_epoch(
        run.train_model,
        run.batches,
        index,
        labels,
        optimizer=run.optimizer,
        scaler=run.scaler,
        batch_size=run.config.batch_size,
        generator=run.generator,
        keep_probs=keep_probs and not run.dist.active,
        task=f"epoch {epoch + 1}/{run.config.epochs}",
        progress=progress if run.dist.is_main else None,
        shard=run.dist.shard_training if run.dist.active else None,
        should_stop=should_stop,
        augment_generator=(
            run.dist.rank_generator(run.config.seed, epoch) if run.dist.active else None
        ),
        mixup=float(run.config.mixup or 0.0),
    )


def _record(run: AuditRun, result: Any, progress: Progress | None) -> np.ndarray:
    """Per-sample softmax ``[N, C]`` for this epoch, every sample exactly once.

    ``--record eval`` (the paper): an eval-mode pass over all samples, split across ranks
    by contiguous ranges and gathered. ``--record train``: the training pass's softmax for
    the samples it saw, an eval pass only for the rest (outside T).
    """
    n = run.n_samples
    bs = max(run.config.batch_size * 2, 256)
    if result.probs is not None:
        probs = np.empty((n, run.n_classes), dtype=np.float32)
        seen = np.zeros(n, dtype=bool)
        probs[result.index] = result.probs
        seen[result.index] = True
        rest = np.flatnonzero(~seen)
        if len(rest):
            probs[rest] = predict_probs(run.model, run.batches, rest, batch_size=bs)
        return probs
    start, stop = run.dist.record_range(n)
    local = predict_probs(
        run.model,
        run.batches,
        np.arange(start, stop),
        batch_size=bs,
        task="record",
        progress=progress if run.dist.is_main else None,
    )
    return run.dist.gather_rows(local, n)


def _update_clusters(state: AuditState, run: AuditRun, epoch: int) -> None:
    """Cluster on rank 0, broadcast, refine and grow T (no-op before any history exists)."""
    if state.history.epochs_recorded == 0:
        return
    config = run.config
    if run.dist.is_main:
        clustering, pseudo = cluster_samples(state.history, run.given, config, previous=state.gmm)
        admit, labels = admit_samples(
            clustering, run.given, pseudo, config.components, relabel=run.relabel
        )
        reason = clustering.guard_reason
        arrays = {
            "cluster": clustering.cluster,
            "cluster_prob": clustering.cluster_prob,
            "admit": admit,
            "labels": labels,
            "guard": np.zeros(run.n_samples, np.int8) if reason is None else reason,
        }
        meta = (clustering.gmm, clustering.component_names, clustering.guard_note)
    else:
        n = run.n_samples
        arrays = {
            "cluster": np.zeros(n, np.int8),
            "cluster_prob": np.zeros(n, np.float32),
            "admit": np.zeros(n, bool),
            "labels": np.zeros(n, np.int64),
            "guard": np.zeros(n, np.int8),
        }
        meta = None
    arrays = run.dist.broadcast_arrays(arrays)
    gmm, names, note = run.dist.broadcast_object(meta)  # type: ignore[misc]
    state.cluster, state.cluster_prob = arrays["cluster"], arrays["cluster_prob"]
    state.guard, state.guard_note = arrays["guard"], note
    state.gmm, state.component_names = gmm, list(names)
    state.in_t, state.t_labels, state.admitted_epoch = update_training_set(
        state.in_t,
        state.t_labels,
        state.admitted_epoch,
        arrays["admit"],
        arrays["labels"],
        epoch=epoch,
        rule=config.t_update,
    )


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
    line = {
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


def _build_result(state: AuditState, run: AuditRun, *, wall_time: float) -> AuditResult:
    """Arrays -> the report table of DESIGN.md, plus metadata."""
    from labelclean.report.parquet import build_report_table

    manifest, cache, config = run.dataset.manifest, run.dataset.cache, run.config
    back = np.empty_like(run.canon)
    back[run.canon] = np.arange(len(run.canon))  # manifest row -> canonical position
    given = run.given
    pseudo = state.history.pseudo_labels(window="late")  # as cluster_samples
    joint = state.history.joint_confidence(given, pseudo_labels=pseudo, window="late")
    clean = np.where(state.in_t, state.t_labels, -1)
    action = np.where(~state.in_t, "unlabel", np.where(state.t_labels == given, "keep", "relabel"))
    trace_given, trace_pseudo = state.history.traces(order=back)  # already in manifest order
    canonical = {
        "given_label": given,
        "cluster": np.asarray(CLUSTER_NAMES)[state.cluster],
        "action": action,
        "clean_label": clean,
        "pseudo_label": pseudo,
        "conf_given": joint[:, 0],
        "conf_pseudo": joint[:, 1],
        "cluster_prob": state.cluster_prob,
        "admitted_epoch": state.admitted_epoch,
        "guard": np.asarray(GUARD_REASONS, dtype=object)[state.guard],  # 0 -> None
    }
    columns = {
        "index": np.asarray(manifest.rows, dtype=np.int64),
        "path": list(manifest.paths),
        **{name: np.asarray(values)[back] for name, values in canonical.items()},
        "trace_given": trace_given,
        "trace_pseudo": trace_pseudo,
    }
    table = build_report_table(columns, class_names=list(manifest.class_names))
    warnings = [w for w in [collapse_warning(pseudo, given, manifest.class_names)] if w]
    for warning in warnings if run.dist.is_main else []:
        logger.warning(warning)
    metadata = {
        "tool_version": __version__,
        "image_root": str(Path(manifest.root).resolve()),
        "paths_outside_root": any(map(leaves_root, manifest.paths)),  # --allow-outside-root
        "class_names": list(manifest.class_names),
        "config": config.to_dict(),
        "seed": config.seed,
        "epochs": config.epochs,
        "device": str(run.precision.device),
        "precision": run.precision.describe(),
        "mode": config.extra.get("mode", "train"),
        "relabel": run.relabel,
        "model": run.model_name,
        "architecture": run.architecture,
        "wall_time_s": round(wall_time, 3),
        "gmm": None if state.gmm is None else state.gmm.to_dict(),
        "cluster_names": list(state.component_names),
        "image_size": cache.image_size,
        "normalization": run.normalization,
        "n_samples": run.n_samples,
        "manifest_fingerprint": manifest.fingerprint(),
        "rejected": len(run.dataset.rejections),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "epoch_log": state.epoch_log,
        "guard_note": state.guard_note,
        "warnings": warnings,
    }
    return AuditResult(table=table, metadata=metadata)
