"""The per-sample confidence history in O(N*C) memory, whatever the number of epochs.

The paper keeps every epoch's softmax ``C^k`` (N*C*E) to compute, after epoch k, the mean
confidence of any label over epochs 0..k (its eq. 3) and the most frequent argmax (``H^k``).
Both follow exactly from a running sum ``S[i] += p_i^k`` and argmax counts
``cnt[i, argmax p_i^k] += 1``, so that is all we keep (DESIGN.md "The audit, pinned down"),
plus the two per-epoch traces the report shows (given label, and the then max-repeating
label), in float16 and on disk when N is large (issue 9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelclean.errors import CheckpointError

# int16, not uint16: torch < 2.3 cannot convert uint16 arrays, and 32,767 epochs is plenty.
_COUNT_DTYPE = np.int16
_SUM_DTYPE = np.float32
_TRACE_DTYPE = np.float16


class ConfidenceHistory:
    """Running sums ``[N, C]``, argmax counts ``[N, C]`` and two traces ``[N, E]``.

    Memory: 4C (float32 sums) + 2C (int16 counts) + 2 * 2E (float16 traces) bytes per
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
        shape = (n_samples, max_epochs)
        if trace_dir is not None:  # large N: traces live on disk, paged in as written
            trace_dir = Path(trace_dir)
            trace_dir.mkdir(parents=True, exist_ok=True)
            self.trace_given = np.lib.format.open_memmap(
                trace_dir / "trace_given.npy", mode="w+", dtype=_TRACE_DTYPE, shape=shape
            )
            self.trace_pseudo = np.lib.format.open_memmap(
                trace_dir / "trace_pseudo.npy", mode="w+", dtype=_TRACE_DTYPE, shape=shape
            )
        else:
            self.trace_given = np.zeros(shape, dtype=_TRACE_DTYPE)
            self.trace_pseudo = np.zeros(shape, dtype=_TRACE_DTYPE)
        self.epochs_recorded = 0

    @staticmethod
    def memory_bytes(n_samples: int, n_classes: int, max_epochs: int) -> int:
        """Bytes the history takes for these sizes (traces counted even when memmapped)."""
        per_class = np.dtype(_SUM_DTYPE).itemsize + np.dtype(_COUNT_DTYPE).itemsize
        per_epoch = 2 * np.dtype(_TRACE_DTYPE).itemsize
        return n_samples * (n_classes * per_class + max_epochs * per_epoch)

    def update(self, probs: np.ndarray | torch.Tensor, given_labels: np.ndarray) -> None:
        """Add one epoch's softmax ``probs`` ``[N, C]`` (all samples, in sample order).

        Also writes this epoch's trace columns: the confidence of the given label and of the
        max-repeating label *after* this update (the label the report's trace follows).
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
        self.sums += probs
        self.counts[rows, probs.argmax(1)] += 1  # one index per row: no repeated indices
        k = self.epochs_recorded
        self.trace_given[:, k] = probs[rows, given_labels]
        self.trace_pseudo[:, k] = probs[rows, self.pseudo_labels()]
        self.epochs_recorded += 1

    def pseudo_labels(self) -> np.ndarray:
        """Max-repeating pseudo label ``my`` ``[N]`` int64.

        Ties in the count go to the larger running sum (DESIGN.md), then the lowest index.
        Vectorised: among the classes with the maximal count, take the argmax of the sums
        (argmax returns the first maximum, hence the lowest index).
        """
        top = self.counts == self.counts.max(1, keepdims=True)
        masked = np.where(top, self.sums, -np.inf)
        return masked.argmax(1).astype(np.int64)

    def mean_confidence(self) -> np.ndarray:
        """Mean softmax over the recorded epochs ``[N, C]`` float32 (a copy; avoid at large N*C)."""
        return self.sums / np.float32(max(self.epochs_recorded, 1))

    def joint_confidence(
        self, given_labels: np.ndarray, *, pseudo_labels: np.ndarray | None = None
    ) -> np.ndarray:
        """The paper's eq. 3: ``(mean conf of ay, mean conf of my)`` ``[N, 2]`` float32.

        Args:
            given_labels: ``ay`` ``[N]``.
            pseudo_labels: ``my`` ``[N]`` if already computed (saves one pass over ``[N, C]``).
        """
        rows = np.arange(self.n_samples)
        if pseudo_labels is None:
            pseudo_labels = self.pseudo_labels()
        out = np.empty((self.n_samples, 2), dtype=np.float32)
        k = np.float32(max(self.epochs_recorded, 1))
        out[:, 0] = self.sums[rows, given_labels] / k
        out[:, 1] = self.sums[rows, pseudo_labels] / k
        return out

    def traces(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-epoch confidence of ``ay`` and of the then ``my``: two ``[N, E_recorded]`` views."""
        k = self.epochs_recorded
        return self.trace_given[:, :k], self.trace_pseudo[:, :k]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and ints only, so ``torch.load(weights_only=True)`` reads it back."""
        k = self.epochs_recorded
        return {
            "sums": torch.from_numpy(self.sums.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
            "trace_given": torch.from_numpy(np.ascontiguousarray(self.trace_given[:, :k])),
            "trace_pseudo": torch.from_numpy(np.ascontiguousarray(self.trace_pseudo[:, :k])),
            "epochs_recorded": k,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; a checkpoint of other sizes is refused."""
        try:
            sums = state["sums"].numpy()
            counts = state["counts"].numpy()
            k = int(state["epochs_recorded"])
            trace_given = state["trace_given"].numpy()
            trace_pseudo = state["trace_pseudo"].numpy()
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(
                f"the checkpoint's confidence history is incomplete ({exc!r}); "
                "start a fresh audit in a new work directory"
            ) from exc
        if sums.shape != self.sums.shape or counts.shape != self.counts.shape:
            raise CheckpointError(
                f"the checkpoint's history is for N, C = {sums.shape}, this run has "
                f"{self.sums.shape}: resume with the same data, or use a new work directory"
            )
        if not 0 <= k <= self.max_epochs or trace_given.shape != (self.n_samples, k):
            raise CheckpointError(
                f"the checkpoint recorded {k} epochs, this run allows {self.max_epochs}: "
                "resume with at least as many --epochs, or use a new work directory"
            )
        self.sums[...] = sums
        self.counts[...] = counts
        self.trace_given[:, :k] = trace_given
        self.trace_pseudo[:, :k] = trace_pseudo
        self.epochs_recorded = k
