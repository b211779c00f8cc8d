"""The audit's outcome: the final state -> report table of DESIGN.md plus metadata."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelclean._version import __version__
from labelclean.data.manifest import leaves_root
from labelclean.fgcm.clustering import CLUSTER_NAMES
from labelclean.fgcm.guard import GUARD_REASONS
from labelclean.fgcm.health import collapse_warning
from labelclean.fgcm.state import AuditState

if TYPE_CHECKING:
    from labelclean.fgcm.run import AuditRun

logger = logging.getLogger(__name__)


@dataclass
class AuditResult:
    """The audit's outcome: one row per sample plus metadata; ``write`` gives report.parquet."""

    table: Any  #: pyarrow.Table in the report schema
    metadata: dict[str, Any]
    #: The trained network's weights (on the CPU), saved beside the report for ``finetune``
    #: (:mod:`labelclean.audit_network`); None for a ``--frozen`` audit.
    network: dict[str, torch.Tensor] | None = None
    #: The audit's inputs by the names the CLI gives them (``IMAGES``, ``LABELS``,
    #: ``--weights``): :meth:`write` never writes over one of them, as the CLI never does.
    inputs: dict[str, str | None] = field(default_factory=dict)

    def to_pandas(self) -> Any:
        """The report as a pandas DataFrame (one row per sample, manifest order)."""
        return self.table.to_pandas()

    def write(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write report.parquet atomically (refuses to replace a file unless ``overwrite``).

        Neither the report nor the network beside it may be one of the audit's inputs (the
        manifest, an image, the starting weights), ``overwrite`` or not: the same check as
        ``labelclean audit --out`` (:func:`labelclean._io.check_writable`).

        The network goes beside it, to ``<report>.network.safetensors``, named in the
        report's metadata with its SHA-256. Both appear together: the network's temp file is
        renamed into place only once the report is written, so a failure keeps the old pair.
        """
        from labelclean._io import atomic_path, check_writable
        from labelclean.audit_network import check_network_output, network_file

        path = Path(path)
        check_writable(path, overwrite=overwrite, inputs=self.inputs)
        if self.network is None:
            return self._write_report(path, self.metadata, overwrite=overwrite)
        side = check_network_output(path, overwrite=overwrite, inputs=self.inputs)
        blob, entry = network_file(self.network, architecture=str(self.metadata["architecture"]))
        metadata = {**self.metadata, "network": {"file": side.name, **entry}}
        with atomic_path(side, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as fh:  # on disk (a full one fails here) before the report
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            written = self._write_report(path, metadata, overwrite=overwrite)
        self.metadata = metadata
        return written

    def _write_report(self, path: Path, metadata: dict[str, Any], *, overwrite: bool) -> Path:
        """The report file(s); a refusal here still leaves the network unwritten."""
        from labelclean.report.parquet import write_report

        return write_report(path, self.table, metadata, overwrite=overwrite)


def audit_result(state: AuditState, run: AuditRun, *, wall_time: float) -> AuditResult:
    """The report of a finished audit (with votes: combined with the crowd's)."""
    return _with_votes(_build_result(state, run, wall_time=wall_time), state, run)


def _with_votes(result: AuditResult, state: AuditState, run: AuditRun) -> AuditResult:
    """Crowd input: the final combination of the network and the votes (labelclean.crowd)."""
    votes = run.dataset.manifest.votes
    if votes is None:
        return result
    from labelclean.crowd.report import finish_crowd_audit

    probs = np.empty_like(state.history.sums)
    probs[run.canon] = state.history.mean_confidence()  # canonical -> manifest order
    return finish_crowd_audit(result, votes, probs)


def _weighed_by_given(
    state: AuditState, given: np.ndarray, pseudo: np.ndarray, clean: np.ndarray
) -> tuple[np.ndarray, float]:
    """``pseudo`` with the unlabeled rows' guesses weighed by how their given label is confused.

    Only for recordings made out of fold (the frozen audit's cross-fitted heads), where a
    row's softmax never saw its own label (:mod:`labelclean.fgcm.transition`). A network
    fitted to every given label already leans to each row's own: weighing its softmax by
    the label again counts it twice (CIFAR-10N "worst", no epilogue: cleaned labels 74.5% ->
    62.7% right). The late-window softmax is tempered first, to the temperature fitted on
    every row (returned with the guesses).
    """
    from labelclean.fgcm.transition import guess_flagged

    flagged = clean < 0
    probs = state.history.mean_confidence(window="late")
    weighed = pseudo.copy()
    weighed[flagged], temperature = guess_flagged(
        probs[flagged], given, clean, pseudo[flagged], every_row=probs
    )
    return weighed, temperature


def _build_result(state: AuditState, run: AuditRun, *, wall_time: float) -> AuditResult:
    """Arrays -> the report table of DESIGN.md, plus metadata."""
    from labelclean.report.schema import build_report_table

    manifest, cache, config = run.dataset.manifest, run.dataset.cache, run.config
    back = np.empty_like(run.canon)
    back[run.canon] = np.arange(len(run.canon))  # manifest row -> canonical position
    given = run.given
    pseudo = state.history.pseudo_labels(window="late")  # as cluster_samples
    clean = np.where(state.in_t, state.t_labels, -1)
    temperature = None  # of the softmax the unlabeled rows' guesses weigh (frozen audits)
    if config.frozen and not config.recordings_memorise(run.model_name):
        pseudo, temperature = _weighed_by_given(state, given, pseudo, clean)
    joint = state.history.joint_confidence(given, pseudo_labels=pseudo, window="late")
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
    if temperature is not None:
        metadata["guess_temperature"] = round(temperature, 4)
    # a --frozen audit's heads see embeddings: nothing for finetune to start from
    network = network_weights(run.model) if metadata["mode"] != "frozen" else None
    return AuditResult(table=table, metadata=metadata, network=network)


def network_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights saved beside the report: float32 on the CPU, contiguous.

    Contiguous because channels_last tensors cannot be saved.
    """
    return {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
