"""Device, precision and the two passes every loop needs: one training epoch, one prediction pass.

Shared by the audit and finetune loops. Batches are sliced from the uint8 image cache by
sample index, moved to the device once, augmented there, and run under autocast where it
pays: bf16 on CPUs with AVX512-BF16 (measured 2.6x for PreAct ResNet-18 on a 2-core box),
bf16/fp16 plus channels_last on GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelclean.data.augment import normalize, random_crop_flip
from labelclean.errors import ConfigError, Interrupted
from labelclean.progress import Progress, report


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("--device mps: Apple MPS is not available here; use --device cpu")
    return device


def _cpu_has_fast_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Precision:
    """How a device runs: autocast dtype (None = float32) and memory format."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def choose(cls, device: torch.device, *, amp: bool = True) -> Precision:
        """bf16 on CPUs that have it and on bf16-capable GPUs, fp16 on older GPUs, else fp32."""
        dtype: torch.dtype | None = None
        if amp and device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif amp and device.type == "cpu" and _cpu_has_fast_bf16():
            dtype = torch.bfloat16
        # channels_last pays on GPUs and for oneDNN's bf16 kernels on CPUs (1.3-2.6x measured
        # on a 2-core AVX512-BF16 machine for the small CNN); in fp32 on a CPU a model asks
        # for it with its recipe (``models.RECIPES``; see :meth:`for_model`).
        channels_last = device.type == "cuda" or dtype is not None
        return cls(device, dtype, channels_last=channels_last)

    def for_model(self, name: str) -> Precision:
        """The same precision, with channels_last where the model's recipe asks for it."""
        from labelclean.models import RECIPES

        if self.channels_last or not RECIPES.get(name, {}).get("channels_last"):
            return self
        return dataclasses.replace(self, channels_last=True)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 needs loss scaling; bf16 and fp32 do not (a disabled scaler is a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def describe(self) -> str:
        """E.g. ``cpu, bf16 autocast``."""
        kind = "fp32" if self.dtype is None else f"{str(self.dtype).split('.')[-1]} autocast"
        return f"{self.device}, {kind}" + (", channels_last" if self.channels_last else "")


class BatchSource(Protocol):
    """What the loops read batches from by sample index: :class:`ImageBatches`, embeddings."""

    @property
    def precision(self) -> Precision:
        """The device and precision the batches are on."""
        ...

    def load(self, index: np.ndarray) -> torch.Tensor:
        """The raw batch of samples ``index``, on the device."""
        ...

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A randomly augmented copy of a loaded batch (training only)."""
        ...

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """A loaded (or augmented) batch -> the model's input."""
        ...


@dataclass(frozen=True)
class ImageBatches:
    """Reads batches of a uint8 cache ``[N, 3, S, S]`` by sample index and prepares them.

    The loops only call ``load``, ``augment`` and ``prepare``, so another input source
    (frozen embeddings) plugs in by offering the same three methods.
    """

    images: np.ndarray
    mean: Sequence[float]
    std: Sequence[float]
    precision: Precision
    crop_padding: int = 0
    hflip: bool = False

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The weak augmentation of the paper: random crop with padding, horizontal flip."""
        return random_crop_flip(
            batch, padding=self.crop_padding, flip=self.hflip, generator=generator
        )

    def load(self, index: np.ndarray) -> torch.Tensor:
        """uint8 batch on the device; sorted reads keep a memmap cache sequential."""
        order = np.argsort(index, kind="stable")
        batch = np.empty((len(index), *self.images.shape[1:]), dtype=np.uint8)
        batch[order] = self.images[index[order]]
        return torch.from_numpy(batch).to(self.precision.device, non_blocking=True)

    def prepare(self, uint8: torch.Tensor) -> torch.Tensor:
        """uint8 device batch -> normalised float input."""
        return normalize(uint8, self.mean, self.std, channels_last=self.precision.channels_last)


class StepInterrupted(Exception):  # noqa: N818 - a control-flow signal
    """``should_stop()`` became true mid-epoch; the partial epoch is abandoned."""


@dataclass
class EpochResult:
    """What one training epoch returns."""

    loss: float
    seen: int
    #: Softmax of the training forward pass for the samples seen, by sample index
    #: (``--record train``); None when not requested.
    probs: np.ndarray | None = None
    index: np.ndarray | None = None


def train_epoch(
    model: nn.Module,
    batches: BatchSource,
    index: np.ndarray,
    labels: np.ndarray,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch_size: int,
    generator: torch.Generator,
    keep_probs: bool = False,
    task: str = "train",
    progress: Progress | None = None,
    shard: Callable[[np.ndarray], np.ndarray] | None = None,
    should_stop: Callable[[], bool] | None = None,
    augment_generator: torch.Generator | None = None,
    mixup: float = 0.0,
) -> EpochResult:
    """One epoch of cross-entropy on ``(index, labels)`` with the batches' weak augmentation.

    Args:
        model: The network (possibly DDP-wrapped), put in train mode here.
        batches: The image source.
        index: Sample indices ``[n]`` to train on.
        labels: Their labels ``[n]`` (class codes).
        optimizer: The optimizer; the LR scheduler is stepped by the caller per epoch.
        scaler: Loss scaler (only active for fp16).
        batch_size: Samples per step.
        generator: Seeded CPU generator for shuffling and augmentation.
        keep_probs: Return the training pass's softmax per sample (``--record train``).
        task: Progress label.
        progress: Progress callback.
        shard: Optional function selecting this rank's share of the shuffled order (DDP).
        should_stop: Checked before every step; True raises :class:`StepInterrupted`, so a
            Ctrl-C does not wait for the end of a long epoch.
        augment_generator: Draws the augmentations instead of ``generator`` (each DDP rank
            its own, while the shuffled order stays shared and sharded).
        mixup: Beta(a, a) parameter of input mixup (Zhang et al. 2018); 0 = off. Each batch
            is blended with a shuffled copy of itself, and so is its loss.
    """
    if mixup > 0 and keep_probs:
        raise ConfigError("--mixup: the training pass sees blended images; use --record eval")
    model.train()
    device = batches.precision.device
    label_of = np.full(int(index.max()) + 1 if len(index) else 0, -1, dtype=np.int64)
    label_of[index] = labels
    order = index[torch.randperm(len(index), generator=generator).numpy()]
    if shard is not None:
        order = shard(order)
    n_steps = math.ceil(len(order) / batch_size)
    total = torch.zeros((), device=device)
    seen = 0
    kept_probs: list[torch.Tensor] = []
    for step, start in enumerate(range(0, len(order), batch_size)):
        if should_stop is not None and should_stop():
            raise StepInterrupted
        idx = order[start : start + batch_size]
        x = batches.load(idx)
        x = batches.prepare(batches.augment(x, augment_generator or generator))
        y = torch.from_numpy(label_of[idx]).to(device, non_blocking=True)
        with batches.precision.autocast():
            logits, loss = _forward(model, x, y, mixup, augment_generator or generator)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch: unannotated
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach() * len(idx)
        seen += len(idx)
        if keep_probs:
            kept_probs.append(logits.detach().float().softmax(1).cpu())
        report(progress, task, step + 1, n_steps)
    probs = torch.cat(kept_probs).numpy() if keep_probs and kept_probs else None
    return EpochResult(
        loss=float(total) / max(seen, 1),
        seen=seen,
        probs=probs,
        index=order if keep_probs else None,
    )


def _forward(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, mixup: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss of one batch; with ``mixup``, of its blend with a shuffled copy."""
    x, loss_of = mixup_batch(x, y, mixup, generator)
    logits = model(x)
    return logits, loss_of(logits)


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Input mixup (Zhang et al. 2018): the blended batch and its cross-entropy on logits.

    ``alpha <= 0`` leaves the batch as it is (plain cross-entropy, nothing drawn).
    """
    if alpha <= 0:
        return x, lambda logits: F.cross_entropy(logits, y)
    lam, partner = mixup_pairs(len(y), alpha, generator)
    partner = partner.to(x.device)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[partner])

    return lam * x + (1 - lam) * x[partner], loss_of


def mixup_pairs(n: int, alpha: float, generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """A mixup weight ``lam`` >= 0.5 from Beta(alpha, alpha) and a partner permutation.

    Folding ``lam`` to the upper half keeps each blend closest to its own sample, so the
    batch's first labels stay the dominant ones; the draws come from ``generator``.
    """
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(lam, 1 - lam), torch.randperm(n, generator=generator)


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    batches: BatchSource,
    index: np.ndarray,
    *,
    batch_size: int,
    task: str = "record",
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    flip: bool = False,
) -> np.ndarray:
    """Softmax ``[n, C]`` (float32, host) for ``index`` in eval mode, no augmentation.

    ``flip``: the mean of the softmax of each image and of its mirror (test-time
    augmentation; twice the work). ``should_stop()`` is checked before every batch; True
    raises :class:`~labelclean.errors.Interrupted`.
    """
    model.eval()
    out: list[torch.Tensor] = []
    n_steps = math.ceil(len(index) / batch_size)
    for step, start in enumerate(range(0, len(index), batch_size)):
        if should_stop is not None and should_stop():
            raise Interrupted(f"stopped after {start} of {len(index)} predictions")
        x = batches.prepare(batches.load(index[start : start + batch_size]))
        with batches.precision.autocast():
            logits = model(x)
            mirrored = model(x.flip(-1)) if flip else None
        probs = logits.float().softmax(1)
        if mirrored is not None:
            probs = (probs + mirrored.float().softmax(1)) / 2
        out.append(probs.cpu())
        report(progress, task, step + 1, n_steps)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def lr_factor(
    epoch: int, *, epochs: int, schedule: str, milestones: Sequence[int] = (), gamma: float = 0.1
) -> float:
    """Multiplier of the base LR at ``epoch`` (0-based).

    ``step``: the paper's (x gamma at each milestone). ``cosine``: half-cosine over all
    epochs to 1% of the base, which suits the short default schedule.
    """
    if schedule == "step":
        return gamma ** sum(epoch >= m for m in milestones)
    if schedule == "cosine":
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "constant":
        return 1.0
    raise ConfigError(f"--lr-schedule {schedule!r}: expected step, cosine or constant")


def build_optimizer(
    model: nn.Module, *, lr: float, momentum: float, weight_decay: float, nesterov: bool = False
) -> torch.optim.SGD:
    """SGD as in the paper (section 4.1.2): momentum 0.9, weight decay 5e-4."""
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov and momentum > 0,
    )


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed torch/numpy and return the CPU generator the loops draw from."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
