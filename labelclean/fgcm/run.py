"""The audit's set-up: one :class:`AuditRun` shared by every epoch, whatever it trains.

An :class:`AuditRun` is the samples in canonical order, the ranks, the seeded generator,
the resolved config, the optimizer and the loss scaler, built once for every kind of audit.
What it trains and how it records is its :class:`Learner`: :class:`ImageNetwork` (a network
on the images, the default) or the frozen audit's heads on embeddings
(:class:`labelclean.fgcm.frozen.FrozenHeads`). A change to the shared set-up reaches both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from labelclean.config import DEFAULT_BATCH_SIZE, MIN_STEPS, AuditConfig
from labelclean.data.images import Dataset, ImageCache
from labelclean.distributed import Dist
from labelclean.models import RECIPES, create_model, default_model_name, fit_data_init
from labelclean.progress import Progress
from labelclean.training import (
    BatchSource,
    EpochResult,
    ImageBatches,
    Precision,
    build_optimizer,
    predict_probs,
    resolve_device,
    seed_everything,
    train_epoch,
)

logger = logging.getLogger(__name__)

#: ``should_stop()`` as the loops take it: checked before every step, True stops the epoch.
StopCheck = Callable[[], bool] | None


@dataclass
class Network:
    """What a :class:`Learner` sets up: the model, its input and how the report names it."""

    model_name: str  #: the report's ``model``
    architecture: str  #: what ``finetune`` trains (the report's ``architecture``)
    model: nn.Module
    train_model: nn.Module  #: ``model``, DDP-wrapped under torchrun
    precision: Precision
    normalization: dict[str, Any]  #: input mean/std and where they come from
    batches: BatchSource  #: read by canonical position
    nesterov: bool = False  #: the model's recipe asks for Nesterov momentum


class Learner(Protocol):
    """What an :class:`AuditRun` trains and records with."""

    def setup(self, run: AuditRun, config: AuditConfig, device: torch.device) -> Network:
        """Build the model and its batch source (the run's generator is already seeded)."""
        ...

    def train_epoch(
        self,
        run: AuditRun,
        index: np.ndarray,
        labels: np.ndarray,
        epoch: int,
        *,
        keep_probs: bool,
        progress: Progress | None,
        should_stop: StopCheck,
    ) -> EpochResult:
        """One training epoch on ``(index, labels)`` (canonical positions, class codes)."""
        ...

    def record(
        self, run: AuditRun, result: EpochResult, progress: Progress | None, *, flip: bool = False
    ) -> np.ndarray:
        """The epoch's softmax ``[N, C]`` of every sample, in canonical order.

        ``flip``: average each image with its mirror where the learner can.
        """
        ...


class AuditRun:
    """Set-up shared by every epoch: device, model, optimizer, image batches, generator.

    Args:
        dataset: Validated manifest + image cache.
        config: The audit settings (``self.config`` is their resolved copy).
        dist: Rank information under torchrun.
        learner: What to train; :class:`ImageNetwork` when None.
    """

    def __init__(
        self,
        dataset: Dataset,
        config: AuditConfig,
        *,
        dist: Dist | None = None,
        learner: Learner | None = None,
    ) -> None:
        self.dataset = dataset
        manifest = dataset.manifest
        # The loop works in path-sorted ("canonical") order, so shuffling the manifest's rows
        # changes nothing but the report's row order; `canon[j]` is the manifest row of j.
        self.canon = np.argsort(np.asarray(manifest.paths, dtype=object), kind="stable")
        self.given = np.asarray(manifest.given_labels, dtype=np.int64)[self.canon]
        self.n_samples, self.n_classes = len(manifest), len(manifest.class_names)
        device = resolve_device(config.device)
        self.dist = dist or Dist(device=device)
        self.generator = seed_everything(config.seed, deterministic=config.deterministic)
        self.learner: Learner = learner or ImageNetwork()
        net = self.learner.setup(self, config, device)
        self.model_name, self.architecture = net.model_name, net.architecture
        self.model, self.train_model = net.model, net.train_model
        self.precision, self.normalization, self.batches = (
            net.precision,
            net.normalization,
            net.batches,
        )
        self.config = config.resolve(self.model_name, n_samples=self.n_samples)
        if config.batch_size is None and self.config.batch_size != DEFAULT_BATCH_SIZE:
            logger.info(
                "batch size %d, not %d: %d images would make fewer than %d optimizer steps "
                "in %d epochs (pass --batch-size to choose)",
                self.config.batch_size,
                DEFAULT_BATCH_SIZE,
                self.n_samples,
                MIN_STEPS,
                config.epochs,
            )
        assert self.config.lr is not None  # resolve() fills it in
        self.optimizer = build_optimizer(
            self.model,
            lr=self.config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=net.nesterov,
        )
        self.scaler = self.precision.grad_scaler()

    @property
    def batch_size(self) -> int:
        """The training batch: ``--batch-size``, or the default resolved for this data."""
        return int(self.config.batch_size or DEFAULT_BATCH_SIZE)

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

    inner: BatchSource
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


class ImageNetwork:
    """The default learner: a network trained on the images, from scratch or from weights."""

    def setup(self, run: AuditRun, config: AuditConfig, device: torch.device) -> Network:
        """The model on the device (DDP-wrapped under torchrun) and its image batches."""
        cache = run.dataset.cache
        device = run.dist.device if run.dist.active else device
        name = config.model or default_model_name(cache.image_size, device)
        precision = Precision.choose(device, amp=config.amp).for_model(name)
        model = create_model(
            name, run.n_classes, pretrained=config.pretrained, weights=config.weights
        ).to(device)
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        train_model: nn.Module = model
        if run.dist.active:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        normalization = _normalization(
            model, cache, pretrained=bool(config.pretrained or config.weights)
        )
        padding = config.crop_padding
        images = ImageBatches(
            cache.images,
            normalization["mean"],
            normalization["std"],
            precision,
            crop_padding=padding if padding is not None else cache.image_size // 8,
            hflip=config.hflip,
        )
        batches = ReindexedBatches(images, run.canon)
        if not (config.pretrained or config.weights):
            first = np.arange(min(run.n_samples, 5000))  # canonical order: the same on every rank
            with torch.no_grad():
                fit_data_init(model, batches.prepare(batches.load(first)))
        nesterov = bool(RECIPES.get(name, {}).get("nesterov", False))
        return Network(name, name, model, train_model, precision, normalization, batches, nesterov)

    def train_epoch(
        self,
        run: AuditRun,
        index: np.ndarray,
        labels: np.ndarray,
        epoch: int,
        *,
        keep_probs: bool,
        progress: Progress | None,
        should_stop: StopCheck,
    ) -> EpochResult:
        """One training epoch on ``(index, labels)``, sharded across ranks under torchrun."""
        return train_epoch(
            run.train_model,
            run.batches,
            index,
            labels,
            optimizer=run.optimizer,
            scaler=run.scaler,
            batch_size=run.batch_size,
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

    def record(
        self, run: AuditRun, result: EpochResult, progress: Progress | None, *, flip: bool = False
    ) -> np.ndarray:
        """Per-sample softmax ``[N, C]`` for this epoch, every sample exactly once.

        ``--record eval`` (the paper): an eval-mode pass over all samples, split across ranks
        by contiguous ranges and gathered. ``--record train``: the training pass's softmax for
        the samples it saw, an eval pass only for the rest (outside T). ``flip``: the eval
        passes average each image with its mirror.
        """
        n = run.n_samples
        bs = max(run.batch_size * 2, 256)
        if result.probs is not None and result.index is not None:
            probs = np.empty((n, run.n_classes), dtype=np.float32)
            seen = np.zeros(n, dtype=bool)
            probs[result.index] = result.probs
            seen[result.index] = True
            rest = np.flatnonzero(~seen)
            if len(rest):
                probs[rest] = predict_probs(run.model, run.batches, rest, batch_size=bs, flip=flip)
            return probs
        start, stop = run.dist.record_range(n)
        local = predict_probs(
            run.model,
            run.batches,
            np.arange(start, stop),
            batch_size=bs,
            task="record",
            progress=progress if run.dist.is_main else None,
            flip=flip,
        )
        return run.dist.gather_rows(local, n)


def _normalization(model: nn.Module, cache: ImageCache, *, pretrained: bool) -> dict[str, Any]:
    """Pretrained timm weights expect their own mean/std; from-scratch models use the data's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if pretrained and "mean" in cfg and "std" in cfg:
        return {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "source": "model"}
    return {"mean": list(cache.mean), "std": list(cache.std), "source": "data"}
