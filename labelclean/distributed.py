"""Rank awareness for the loops: one object that shards work and gathers results.

A single process uses :class:`Dist` as a no-op (rank 0 of 1). Under ``torchrun`` the same
calls shard training batches, split the recording pass so every sample is recorded exactly
once (no DistributedSampler padding in the history), gather probabilities by sample index
and broadcast rank 0's clustering, so the audit loop has one code path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    """The place of this process in the job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main rank prints, writes reports and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    def shard_training(self, order: np.ndarray) -> np.ndarray:
        """The share of a shuffled training order for this rank, padded so every rank steps equally.

        DDP all-reduces gradients every step, so ranks must run the same number of steps;
        like DistributedSampler we repeat the first samples to pad (training only).
        """
        if not self.active or len(order) == 0:
            return order
        pad = (-len(order)) % self.world_size
        if pad:
            order = np.concatenate([order, order[:pad]])
        return order[self.rank :: self.world_size]

    def rank_generator(self, seed: int, epoch: int) -> torch.Generator:
        """A CPU generator of this rank's own for ``epoch``, for what ranks must draw apart.

        Shuffled orders come from the generator every rank shares (they are sharded);
        augmentations and sampled batches come from here, or every rank would draw the
        same. Derived from ``(seed, rank, epoch)`` alone, so a run is reproducible and a
        resumed one draws the same without checkpointing every rank's generator.
        """
        entropy = np.random.SeedSequence([seed % 2**64, self.rank, epoch])
        return torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0]))

    def record_range(self, n: int) -> tuple[int, int]:
        """Contiguous, non-overlapping slice of ``range(n)`` for this rank's recording pass."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """Concatenate every rank's ``record_range`` rows into the full ``[n, ...]`` array."""
        if not self.active:
            return local
        tensor = torch.from_numpy(np.ascontiguousarray(local)).to(self._comm_device())
        longest = -(-n // self.world_size)  # ceil: the largest share record_range gives
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch_dist.all_gather(parts, padded)
        rows = []
        for r, part in enumerate(parts):
            start, stop = n * r // self.world_size, n * (r + 1) // self.world_size
            rows.append(part[: stop - start].cpu())
        return torch.cat(rows).numpy()

    def broadcast_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rank 0's arrays on every rank (shapes and dtypes must match across ranks)."""
        if not self.active:
            return arrays
        out = {}
        for key, value in arrays.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value)).to(self._comm_device())
            torch_dist.broadcast(tensor, src=0)
            out[key] = tensor.cpu().numpy()
        return out

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's small Python object (e.g. GMM parameters) on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on the main rank first (it builds the image cache), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            torch_dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if torch_dist.get_backend() == "nccl" else torch.device("cpu")


def init_from_env(device: torch.device) -> Dist:
    """Join the torchrun job described by the environment, or return the single-process Dist."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(device=device)
    if not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend)
    rank = torch_dist.get_rank()
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return Dist(rank=rank, world_size=world_size, device=device)
