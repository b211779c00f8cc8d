"""What the audit loop carries between epochs, and the clustering step that updates it.

:class:`AuditState` holds only arrays and plain values, so a checkpoint is ``state_dict()``
plus the model/optimizer, and a resumed or multi-rank run rebuilds exactly the same object.
The clustering step (DESIGN.md, steps 3-5): joint confidence -> mixture -> named clusters
-> refinement -> the training set T of the next epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from labelclean.config import AuditConfig
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
from labelclean.fgcm.guard import TRAINING_SLACK, apply_guard, report_slack
from labelclean.fgcm.history import ConfidenceHistory

if TYPE_CHECKING:
    from labelclean.fgcm.run import AuditRun

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
    slack: float = TRAINING_SLACK,
    keep_partly_disputed: bool = False,
) -> tuple[Clustering, np.ndarray]:
    """Joint confidence -> mixture fit -> named clusters (DESIGN.md, steps 3-4).

    ``slack``: the flag budget's room (:func:`~labelclean.fgcm.guard.flag_budget`).
    ``keep_partly_disputed``: at low noise, flag only the labels disputed in every late
    epoch, or in a class pair flipped systematically
    (:func:`~labelclean.fgcm.guard.partly_disputed`; the report, where it flags exactly what
    the model disputes: no slack, :func:`~labelclean.fgcm.guard.report_slack`).

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
    if config.guard is not None and config.guard != "none" and k >= 3:
        late_disputes, late_epochs = (
            history.late_disputes(given_labels) if keep_partly_disputed else (None, 0)
        )
        guarded = apply_guard(
            codes,
            joint,
            given_labels,
            pseudo,
            n_classes=history.n_classes,
            method=config.guard,
            slack=slack,
            late_disputes=late_disputes,
            late_epochs=late_epochs,
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


def update_clusters(state: AuditState, run: AuditRun, epoch: int) -> None:
    """Cluster on rank 0, broadcast, refine and grow T (no-op before any history exists)."""
    if state.history.epochs_recorded == 0:
        return
    config = run.config
    if run.dist.is_main:
        slack, keep_partly = TRAINING_SLACK, False
        if epoch >= config.epochs:  # the report's clustering
            slack = report_slack(config.guard, memorised=config.recordings_memorise(run.model_name))
            keep_partly = slack == 0.0  # it flags exactly what the model disputes
        clustering, pseudo = cluster_samples(
            state.history,
            run.given,
            config,
            previous=state.gmm,
            slack=slack,
            keep_partly_disputed=keep_partly,
        )
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
    gmm, names, note = cast(
        tuple[GMMParams | None, list[str], str], run.dist.broadcast_object(meta)
    )
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
