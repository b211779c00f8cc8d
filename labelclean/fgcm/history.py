"""The per-sample confidence history in O(N*C) memory, whatever the number of epochs.

The paper keeps every epoch's softmax (N*C*E) to compute, after epoch k, the mean
confidence of any label over epochs 0..k and the most frequent argmax. Both follow exactly
from a running sum ``S[i] += p_i^k`` and argmax counts ``cnt[i, argmax p_i^k] += 1``, so
that is all we keep, plus the two per-epoch traces the report shows (given label, and the
then max-repeating label), in float16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

_COUNT_DTYPE = np.int16  # up to 32,767 epochs; torch has no uint16 for weights-only loads


class ConfidenceHistory:
    """Running sums ``[N, C]``, argmax counts ``[N, C]`` and two traces ``[N, E]``.

    Memory: 4C + 2C + 2*2E bytes per sample, under the (C + E) * 8 budget of DESIGN.md.
    float32 sums of probabilities lose nothing that matters below ~10^4 epochs.
    """

    def __init__(
        self, n_samples: int, n_classes: int, max_epochs: int, *, trace_dir: Path | None = None
    ) -> None:
        self.n_samples, self.n_classes, self.max_epochs = n_samples, n_classes, max_epochs
        self.sums = np.zeros((n_samples, n_classes), dtype=np.float32)
        self.counts = np.zeros((n_samples, n_classes), dtype=_COUNT_DTYPE)
        shape = (n_samples, max_epochs)
        if trace_dir is not None:  # large N: traces live on disk, paged in as written
            trace_dir.mkdir(parents=True, exist_ok=True)
            self.trace_given = np.lib.format.open_memmap(
                trace_dir / "trace_given.npy", mode="w+", dtype=np.float16, shape=shape
            )
            self.trace_pseudo = np.lib.format.open_memmap(
                trace_dir / "trace_pseudo.npy", mode="w+", dtype=np.float16, shape=shape
            )
        else:
            self.trace_given = np.zeros(shape, dtype=np.float16)
            self.trace_pseudo = np.zeros(shape, dtype=np.float16)
        self.epochs_recorded = 0

    @staticmethod
    def memory_bytes(n_samples: int, n_classes: int, max_epochs: int) -> int:
        """Bytes the history takes for these sizes."""
        return n_samples * (n_classes * (4 + np.dtype(_COUNT_DTYPE).itemsize) + max_epochs * 4)

    def update(self, probs: np.ndarray | torch.Tensor, given_labels: np.ndarray) -> None:
        """Add one epoch's softmax ``probs`` ``[N, C]`` (all samples, sample order)."""
        if isinstance(probs, torch.Tensor):
            probs = probs.detach().float().cpu().numpy()
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != self.sums.shape:
            raise ValueError(f"probs has shape {probs.shape}, expected {self.sums.shape}")
        if self.epochs_recorded >= self.max_epochs:
            raise ValueError(f"history is full: {self.max_epochs} epochs already recorded")
        rows = np.arange(self.n_samples)
        self.sums += probs
        self.counts[rows, probs.argmax(1)] += 1  # one argmax per row: no repeated indices
        k = self.epochs_recorded
        self.trace_given[:, k] = probs[rows, given_labels]
        self.trace_pseudo[:, k] = probs[rows, self.pseudo_labels()]
        self.epochs_recorded += 1

    def pseudo_labels(self) -> np.ndarray:
        """Max-repeating pseudo label ``[N]``; ties go to the larger running sum, then index.

        Vectorised: among the classes with the maximal count, take the argmax of the sums.
        """
        top = self.counts == self.counts.max(1, keepdims=True)
        masked = np.where(top, self.sums, -np.inf)
        return masked.argmax(1).astype(np.int64)

    def mean_confidence(self) -> np.ndarray:
        """Mean softmax over the recorded epochs ``[N, C]`` (float32)."""
        return self.sums / max(self.epochs_recorded, 1)

    def joint_confidence(self, given_labels: np.ndarray) -> np.ndarray:
        """The paper's eq. 3: ``(mean conf of given label, of pseudo label)`` ``[N, 2]``."""
        rows = np.arange(self.n_samples)
        k = max(self.epochs_recorded, 1)
        a = self.sums[rows, given_labels] / k
        m = self.sums[rows, self.pseudo_labels()] / k
        return np.stack([a, m], axis=1).astype(np.float32)

    def traces(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-epoch confidence of the given label and of the then max-repeating label."""
        k = self.epochs_recorded
        return self.trace_given[:, :k], self.trace_pseudo[:, :k]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and ints only (``torch.load(weights_only=True)`` reads it)."""
        k = self.epochs_recorded
        return {
            "sums": torch.from_numpy(self.sums.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
            "trace_given": torch.from_numpy(np.ascontiguousarray(self.trace_given[:, :k])),
            "trace_pseudo": torch.from_numpy(np.ascontiguousarray(self.trace_pseudo[:, :k])),
            "epochs_recorded": k,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (sizes must match)."""
        sums = state["sums"].numpy()
        if sums.shape != self.sums.shape:
            raise ValueError(f"history state has shape {sums.shape}, expected {self.sums.shape}")
        k = int(state["epochs_recorded"])
        self.sums[...] = sums
        self.counts[...] = state["counts"].numpy()
        self.trace_given[:, :k] = state["trace_given"].numpy()
        self.trace_pseudo[:, :k] = state["trace_pseudo"].numpy()
        self.epochs_recorded = k
