"""The per-sample confidence history in O(N*C) memory, whatever the number of epochs.

The paper keeps every epoch's softmax ``C^k`` (N*C*E) to compute, after epoch k, the mean
confidence of any label over epochs 0..k (its eq. 3) and the most frequent argmax (``H^k``).
Both follow exactly from a running sum ``S[i] += p_i^k`` and argmax counts
``cnt[i, argmax p_i^k] += 1``, so that is all we keep (DESIGN.md "The audit, pinned down"),
plus the two per-epoch traces the report shows (given label, and the then max-repeating
label), in float16 and on disk when N is large (issue 9).

A second pair of running sums and counts covers only the epochs the caller marks *late*
(``update(..., late=True)``); ``window="late"`` reads the pseudo label and the joint
confidence from them. ``--schedule once`` marks the epochs whose LR has fallen to at most
half its base (:func:`is_late_epoch`): the early high-LR mixup epochs are poor guesses,
and a uniform mean over all 40 epochs of the default drags the pseudo label toward them.
On CIFAR-10N "worst" (10,000 images, 41% wrong) the late window raised the pseudo labels'
accuracy, hence the cleaned accuracy, from .705 to .722 and detection F1 from .781 to .786
(the same training read both ways; README "How it works"). The paper's loop never marks an
epoch late, so it reads the uniform mean of its eq. 3 exactly.

The traces are stored epoch-major (``[E, N]``), so recording an epoch writes one contiguous
row (2N bytes per trace) instead of touching every page of an ``[N, E]`` array. Traces on
disk are checkpointed by reference: a checkpoint records the trace files and the number of
epochs written, not the arrays (1.4 GB at 1M samples and 350 epochs). That is safe under
``kill -9`` because of the order of writes: row ``k`` is written only while epoch ``k`` is
recorded, the files are flushed before a checkpoint stating ``epochs_recorded = k + 1`` is
written, and a run resumed from an older checkpoint never reads a row it has not rewritten
itself (``traces()`` stops at ``epochs_recorded``). A row written after the last complete
checkpoint is simply overwritten by the resumed run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from labelclean.errors import CheckpointError, ConfigError, ManifestError

# int16, not uint16: torch < 2.3 cannot convert uint16 arrays, and 32,767 epochs is plenty.
_COUNT_DTYPE = np.int16
_SUM_DTYPE = np.float32
_TRACE_DTYPE = np.float16
#: Bytes per sample and class: sums and counts, over every epoch and the late ones.
_BYTES_PER_CELL = 2 * (np.dtype(_SUM_DTYPE).itemsize + np.dtype(_COUNT_DTYPE).itemsize)
TRACE_FILES = ("trace_given.npy", "trace_pseudo.npy")
#: ``--schedule once`` reads its pseudo labels and confidences from the epochs whose LR is
#: at most this share of the base LR (see the module doc).
LATE_LR_SHARE = 0.5
WINDOWS = ("all", "late")
#: Traces larger than this live in memory-mapped files in the work directory
#: (``$LABELCLEAN_TRACE_MEMMAP_BYTES`` overrides; 0 puts every run's traces on disk).
TRACE_MEMMAP_BYTES = 256 << 20


def traces_on_disk(n_samples: int, max_epochs: int) -> bool:
    """Whether a checkpointed run of this size keeps its traces in files (see the module doc)."""
    raw = os.environ.get("LABELCLEAN_TRACE_MEMMAP_BYTES", str(TRACE_MEMMAP_BYTES))
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigError(
            f"$LABELCLEAN_TRACE_MEMMAP_BYTES {raw!r}: expected a number of bytes"
        ) from None
    return 2 * n_samples * max_epochs * np.dtype(_TRACE_DTYPE).itemsize > limit


#: ``[N, C]`` bytes the audit holds beside the history while it records an epoch: that
#: epoch's softmax (float32), the pseudo labels' mask and masked sums (bool + float32).
#: Measured (tracemalloc): the history's 12 bytes per cell peak at 21 during ``update``.
WORKING_BYTES_PER_CELL = 4 + 1 + 4


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a lower cgroup limit.

    None where the platform does not say (the audit then starts unchecked).
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(limit_file).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max": no lower limit
            continue
    return total if total > 0 else None


def check_audit_memory(n_samples: int, n_classes: int, *, where: str) -> None:
    """Refuse, before any image is decoded, an audit whose ``[N, C]`` arrays cannot fit.

    The history's sums and counts and the working arrays around them grow with N x C: at
    100,000 images of 100,000 classes the first of them alone is 37 GiB, which failed as
    a MemoryError deep in the first epoch. The estimate counts only those arrays, a lower
    bound (the traces, the network, its batches and outputs and the image cache come on
    top), so an audit refused here could not run.

    A compact dtype would not rescue it (float16 sums lose the means' precision after a
    few hundred epochs, and the working arrays stay float32), hence a refusal.
    """
    limit = machine_memory()
    per_cell = _BYTES_PER_CELL + WORKING_BYTES_PER_CELL
    need = per_cell * n_samples * n_classes
    if limit is not None and need > limit:
        raise ManifestError(
            f"{where}: {n_samples:,} images in {n_classes:,} classes: the audit's per-image "
            f"confidences need at least {need / 2**30:,.2f} GiB of memory ({per_cell} bytes "
            f"per image and class), more than the {limit / 2**30:,.2f} GiB this machine has; "
            "merge rare classes, or audit a subset of the classes"
        )


def is_late_epoch(lr: float, base_lr: float) -> bool:
    """Whether an epoch trained at ``lr`` counts in the late window (see the module doc)."""
    return lr <= LATE_LR_SHARE * base_lr


def _open_trace(path: Path, shape: tuple[int, int]) -> tuple[np.memmap, bool]:
    """The ``[E, N]`` trace file at ``path`` opened for update, created when absent.

    Returns ``(array, existed)``. An existing file of another epoch count (``--epochs``
    changed on a forced resume) is copied into one of the new shape, its common epochs kept.
    """
    old = None
    if path.is_file():
        try:
            old = np.load(path, mmap_mode="r+")
        except (OSError, ValueError):  # cut short while being created: nothing referred to it
            old = None
    if old is not None and old.dtype == _TRACE_DTYPE and old.shape == shape:
        return old, True
    if old is not None and old.dtype == _TRACE_DTYPE and old.ndim == 2 and old.shape[1] == shape[1]:
        tmp = path.with_name(path.name + ".resize")
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=_TRACE_DTYPE, shape=shape)
        common = min(len(old), shape[0])
        new[:common] = old[:common]
        new.flush()
        del old
        os.replace(tmp, path)
        return new, True
    del old
    return np.lib.format.open_memmap(path, mode="w+", dtype=_TRACE_DTYPE, shape=shape), False


class ConfidenceHistory:
    """Running sums ``[N, C]``, argmax counts ``[N, C]`` and two traces (stored ``[E, N]``).

    The sums and counts exist twice: over every epoch and over the late ones only.
    Memory: 2 * (4C (float32 sums) + 2C (int16 counts)) + 2 * 2E (float16 traces) bytes per
    sample, under the (C + E) * 8 budget of issue 9. Precision: each float32 addition to a
    sum of at most E rounds by at most E * 6e-8, so the mean over E epochs is off by at most
    E * 6e-8 (6e-5 after 1,000 epochs): fine for a few thousand epochs, far below what the
    clustering can see.

    Example:
        >>> h = ConfidenceHistory(2, 3, max_epochs=10)
        >>> h.update(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), np.array([0, 1]))
        >>> h.pseudo_labels().tolist()
        [0, 2]
        >>> h.joint_confidence(np.array([0, 1])).astype(float).round(2).tolist()
        [[0.7, 0.7], [0.1, 0.8]]
    """

    def __init__(
        self, n_samples: int, n_classes: int, max_epochs: int, *, trace_dir: Path | None = None
    ) -> None:
        if n_samples < 0 or n_classes < 1 or max_epochs < 1:
            raise ValueError(f"bad history sizes N={n_samples}, C={n_classes}, E={max_epochs}")
        if max_epochs > np.iinfo(_COUNT_DTYPE).max:
            raise ValueError(f"at most {np.iinfo(_COUNT_DTYPE).max} epochs, got {max_epochs}")
        self.n_samples, self.n_classes, self.max_epochs = n_samples, n_classes, max_epochs
        self.sums = np.zeros((n_samples, n_classes), dtype=_SUM_DTYPE)
        self.counts = np.zeros((n_samples, n_classes), dtype=_COUNT_DTYPE)
        #: The same over the epochs recorded with ``late=True`` only (see the module doc).
        self.late_sums = np.zeros_like(self.sums)
        self.late_counts = np.zeros_like(self.counts)
        self.late_epochs = 0
        shape = (max_epochs, n_samples)  # epoch-major: one contiguous row per epoch
        #: Folder of the memory-mapped trace files, or None when the traces are in memory.
        self.trace_dir = Path(trace_dir) if trace_dir is not None else None
        self._traces_existed = False
        #: ``[E, N]`` float16 traces: memory-mapped files or in-memory arrays.
        self.trace_given: npt.NDArray[np.float16]
        self.trace_pseudo: npt.NDArray[np.float16]
        if self.trace_dir is not None:  # large N: traces live on disk, paged in as written
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            (self.trace_given, given_existed), (self.trace_pseudo, pseudo_existed) = (
                _open_trace(self.trace_dir / name, shape) for name in TRACE_FILES
            )
            self._traces_existed = given_existed and pseudo_existed
        else:
            self.trace_given = np.zeros(shape, dtype=_TRACE_DTYPE)
            self.trace_pseudo = np.zeros(shape, dtype=_TRACE_DTYPE)
        self.epochs_recorded = 0

    @staticmethod
    def memory_bytes(n_samples: int, n_classes: int, max_epochs: int) -> int:
        """Bytes the history takes for these sizes (traces counted even when memmapped)."""
        per_epoch = 2 * np.dtype(_TRACE_DTYPE).itemsize
        return n_samples * (n_classes * _BYTES_PER_CELL + max_epochs * per_epoch)

    def update(
        self, probs: np.ndarray | torch.Tensor, given_labels: np.ndarray, *, late: bool = False
    ) -> None:
        """Add one epoch's softmax ``probs`` ``[N, C]`` (all samples, in sample order).

        ``late``: also add it to the late window (see the module doc). Also writes this
        epoch's trace columns: the confidence of the given label and of the max-repeating
        label (over all epochs) *after* this update (the label the report's trace follows).
        """
        if isinstance(probs, torch.Tensor):
            probs = probs.detach().float().cpu().numpy()
        probs = np.asarray(probs, dtype=_SUM_DTYPE)
        if probs.shape != self.sums.shape:
            raise ValueError(f"probs has shape {probs.shape}, expected {self.sums.shape}")
        if self.epochs_recorded >= self.max_epochs:
            raise ValueError(f"history is full: {self.max_epochs} epochs already recorded")
        given_labels = np.asarray(given_labels)
        if given_labels.shape != (self.n_samples,):
            raise ValueError(f"given_labels has shape {given_labels.shape}, expected [N]")
        rows = np.arange(self.n_samples)
        top = probs.argmax(1)
        self.sums += probs
        self.counts[rows, top] += 1  # one index per row: no repeated indices
        if late:
            self.late_sums += probs
            self.late_counts[rows, top] += 1
            self.late_epochs += 1
        k = self.epochs_recorded
        self.trace_given[k] = probs[rows, given_labels]
        self.trace_pseudo[k] = probs[rows, self.pseudo_labels()]
        self.epochs_recorded += 1

    def _window(self, window: str) -> tuple[np.ndarray, np.ndarray, int]:
        """``(sums, counts, epochs)`` of ``window``; ``late`` before any late epoch is ``all``."""
        if window not in WINDOWS:
            raise ValueError(f"unknown history window {window!r}: expected all or late")
        if window == "late" and self.late_epochs > 0:
            return self.late_sums, self.late_counts, self.late_epochs
        return self.sums, self.counts, self.epochs_recorded

    def pseudo_labels(self, *, window: str = "all") -> np.ndarray:
        """Max-repeating pseudo label ``my`` ``[N]`` int64 over ``window`` (all or late epochs).

        Ties in the count go to the larger running sum (DESIGN.md), then the lowest index.
        Vectorised: among the classes with the maximal count, take the argmax of the sums
        (argmax returns the first maximum, hence the lowest index).
        """
        sums, counts, _ = self._window(window)
        top = counts == counts.max(1, keepdims=True)
        masked = np.where(top, sums, -np.inf)
        labels: npt.NDArray[np.int64] = masked.argmax(1).astype(np.int64)
        return labels

    def late_disputes(self, given_labels: np.ndarray) -> tuple[np.ndarray, int]:
        """``(disputes [N], K)``: in how many of the K late epochs the argmax was not ``given``.

        K is :attr:`late_epochs`, or every epoch recorded before the late window starts.
        """
        _, counts, epochs = self._window("late")
        rows = np.arange(self.n_samples)
        disputes: npt.NDArray[np.int64] = epochs - counts[rows, given_labels].astype(np.int64)
        return disputes, epochs

    def mean_confidence(self, *, window: str = "all") -> np.ndarray:
        """Mean softmax over ``window`` ``[N, C]`` float32 (a copy)."""
        sums, _, epochs = self._window(window)
        return sums / np.float32(max(epochs, 1))

    def joint_confidence(
        self,
        given_labels: np.ndarray,
        *,
        pseudo_labels: np.ndarray | None = None,
        window: str = "all",
    ) -> np.ndarray:
        """The paper's eq. 3: ``(mean conf of ay, mean conf of my)`` ``[N, 2]`` float32.

        Args:
            given_labels: ``ay`` ``[N]``.
            pseudo_labels: ``my`` ``[N]`` if already computed (saves one pass over ``[N, C]``).
            window: ``all`` (the paper's mean over every epoch) or ``late`` (the late epochs).
        """
        rows = np.arange(self.n_samples)
        if pseudo_labels is None:
            pseudo_labels = self.pseudo_labels(window=window)
        sums, _, epochs = self._window(window)
        out = np.empty((self.n_samples, 2), dtype=np.float32)
        k = np.float32(max(epochs, 1))
        out[:, 0] = sums[rows, given_labels] / k
        out[:, 1] = sums[rows, pseudo_labels] / k
        return out

    def traces(self, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-epoch confidence of ``ay`` and of the then ``my``: two ``[N, E_recorded]``.

        Views of the storage; with ``order`` (sample indices), copies with the samples in
        that order, gathered epoch by epoch (contiguous reads even from disk).
        """
        k = self.epochs_recorded
        given, pseudo = self.trace_given[:k], self.trace_pseudo[:k]
        if order is not None:
            given, pseudo = given[:, order], pseudo[:, order]
        return given.T, pseudo.T

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back.

        In-memory traces are copied in; traces on disk are flushed and referred to
        (``trace_files``: folder and epochs written), see the module docstring.
        """
        k = self.epochs_recorded
        state: dict[str, Any] = {
            "sums": torch.from_numpy(self.sums.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
            "epochs_recorded": k,
            "late_epochs": self.late_epochs,
        }
        if self.late_epochs:  # the paper's loop never marks an epoch late: nothing to copy
            state["late_sums"] = torch.from_numpy(self.late_sums.copy())
            state["late_counts"] = torch.from_numpy(self.late_counts.copy())
        if self.trace_dir is not None:
            for trace in (self.trace_given, self.trace_pseudo):
                if isinstance(trace, np.memmap):  # always, with a trace_dir
                    trace.flush()  # durable before the checkpoint that says they are written
            state["trace_files"] = {"dir": str(self.trace_dir), "epochs": k}
        else:
            given, pseudo = (np.ascontiguousarray(t) for t in self.traces())  # [N, k]
            state["trace_given"], state["trace_pseudo"] = map(torch.from_numpy, (given, pseudo))
        return state

    def load_state_dict(self, state: dict[str, Any], *, trace_source: Path | None = None) -> None:
        """Restore from :meth:`state_dict`; a checkpoint of other sizes is refused.

        A checkpoint whose traces are on disk needs this history to have opened the same
        files (the work directory's), already holding the epochs the checkpoint counts; an
        in-memory history (another rank's) reads them from ``trace_source`` instead.
        """
        try:
            sums = state["sums"].numpy()
            counts = state["counts"].numpy()
            k = int(state["epochs_recorded"])
            # Checkpoints of versions before the late window have none: it restarts empty.
            late = int(state.get("late_epochs", 0))
            late_sums = state["late_sums"].numpy() if late else np.zeros_like(self.sums)
            late_counts = state["late_counts"].numpy() if late else np.zeros_like(self.counts)
            on_disk = "trace_files" in state
            if on_disk and self.trace_dir is None and trace_source is not None:
                trace_given, trace_pseudo = (
                    np.load(Path(trace_source) / name, mmap_mode="r")[:k].T for name in TRACE_FILES
                )
                on_disk = False  # copied into memory below
            elif on_disk:  # by reference: the files already hold the epochs counted
                self._check_trace_files(state["trace_files"], k)
                trace_given = trace_pseudo = self.trace_given[: min(k, self.max_epochs)].T
            else:
                trace_given = state["trace_given"].numpy()
                trace_pseudo = state["trace_pseudo"].numpy()
        except (KeyError, AttributeError, TypeError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint's confidence history is incomplete ({exc!r}); "
                "start a fresh audit in a new work directory"
            ) from exc
        shapes = {a.shape for a in (sums, counts, late_sums, late_counts)}
        if shapes != {self.sums.shape}:
            raise CheckpointError(
                f"the checkpoint's history is for N, C = {sums.shape}, this run has "
                f"{self.sums.shape}: resume with the same data, or use a new work directory"
            )
        if not 0 <= late <= k:
            raise CheckpointError(f"the checkpoint counts {late} late epochs of {k}: it is corrupt")
        if not 0 <= k <= self.max_epochs or trace_given.shape != (self.n_samples, k):
            raise CheckpointError(
                f"the checkpoint recorded {k} epochs, this run allows {self.max_epochs}: "
                "resume with at least as many --epochs, or use a new work directory"
            )
        self.sums[...] = sums
        self.counts[...] = counts
        self.late_sums[...], self.late_counts[...] = late_sums, late_counts
        self.late_epochs = late
        if not on_disk:
            self.trace_given[:k] = trace_given.T
            self.trace_pseudo[:k] = trace_pseudo.T
        self.epochs_recorded = k

    def _check_trace_files(self, ref: dict[str, Any], k: int) -> None:
        """The checkpoint's on-disk traces must be the files this history opened."""
        where = ref["dir"]
        if self.trace_dir is None or not self._traces_existed:
            found = "no trace files" if self.trace_dir is None else f"none in {self.trace_dir}"
            raise CheckpointError(
                f"the checkpoint keeps its confidence traces in files ({where}), but there are "
                f"{found}: resume in the work directory the checkpoint was written to, with "
                "its traces/ folder, or start a fresh audit"
            )
        if int(ref["epochs"]) != k:
            raise CheckpointError(f"the checkpoint's trace reference ({ref}) does not match it")
