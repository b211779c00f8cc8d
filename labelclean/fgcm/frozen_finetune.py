"""``finetune`` from a ``--frozen`` report: a head on cached embeddings, exported with its backbone.

The audit embedded every image once with a frozen backbone; training the head again on those
embeddings takes seconds, where training a network on the images takes an hour on a CPU.
The paper's mixed semi-training (section 3.3, as in :mod:`labelclean.fgcm.finetune`) carries
over to embeddings: each step has B labeled samples (weak view, cross-entropy: L_x) and a
mixed batch of B labeled + mu*B unlabeled samples (capped as there) whose targets are the
clean label or the weak view's prediction, with the loss on a strong view counted where that
prediction is more confident than tau (L_m).

Views of an embedding (a deviation: the paper's views are augmented images, re-embedding
them every step would cost what training the network costs): the weak view is one of the
cached views (the image or its mirror with ``--frozen-flip``), the strong view is the other
one with feature dropout (:data:`STRONG_DROPOUT`).

L_x trains on mixup blends of the labeled batch by default (another deviation,
:meth:`FinetuneConfig.labeled_mixup`): a head fits the wrong labels an audit kept, blended
targets pull it less toward each one (held-out photos at 40% pair noise: .977 -> .981).

The export is ONE model, :class:`FrozenClassifier` (backbone + feature standardisation +
head), so ``labelclean predict`` and :func:`labelclean.load_model` need nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelclean.config import AuditConfig, FinetuneConfig
from labelclean.data.augment import normalize
from labelclean.data.images import Dataset
from labelclean.errors import ConfigError
from labelclean.fgcm.finetune import (
    FinetuneResult,
    cycled_order,
    draw_mixed_batch,
    epoch_line,
    mixed_loss,
)
from labelclean.fgcm.frozen import (
    FROZEN_OPTIONS,
    FeatureBatches,
    backbone_and_input,
    backbone_module,
    embed_images,
    make_head,
)
from labelclean.progress import Progress, report
from labelclean.training import (
    Precision,
    StepInterrupted,
    build_optimizer,
    lr_factor,
    mixup_batch,
    resolve_device,
    seed_everything,
)

#: Feature dropout of the strong view: strong enough that agreeing with the weak view is a
#: real consistency constraint, weak enough that the prediction stays informative.
STRONG_DROPOUT = 0.5


class FrozenClassifier(nn.Module):
    """Backbone -> pooled features -> standardisation -> head: the exported frozen model.

    Inputs are the backbone's normalised images at any size (resized to ``input_size`` as
    the embedding was); with ``flip`` the features are the mean over the image and its
    mirror, as the audit recorded them.
    """

    feature_mean: torch.Tensor  #: buffer [D]
    feature_std: torch.Tensor  #: buffer [D]

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        input_size: int,
        flip: bool,
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("feature_mean", feature_mean.float().clone())
        self.register_buffer("feature_std", feature_std.float().clone())
        self.input_size, self.flip = int(input_size), bool(flip)

    def train(self, mode: bool = True) -> FrozenClassifier:
        """Only the head trains: the backbone (its batch norms) stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised pooled features ``[B, D]``."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            size = (self.input_size, self.input_size)
            x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
        f: torch.Tensor = self.backbone(x).float()
        if self.flip:
            f = (f + self.backbone(x.flip(-1)).float()) / 2
        return (f - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``."""
        logits: torch.Tensor = self.head(self.features(x))
        return logits


def frozen_export_config(
    *, backbone: str, head: str, dim: int, input_size: int, flip: bool
) -> dict[str, Any]:
    """The ``frozen`` section of an exported model's config.json."""
    return {
        "backbone": backbone,
        "head": head,
        "embedding_dim": int(dim),
        "input_size": int(input_size),
        "flip": bool(flip),
    }


def build_frozen_classifier(config: dict[str, Any]) -> FrozenClassifier:
    """An untrained :class:`FrozenClassifier` shaped as an exported ``config.json`` says."""
    try:
        spec = config["frozen"]
        backbone = backbone_module(str(spec["backbone"]))
        head = make_head(str(spec["head"]), int(spec["embedding_dim"]), int(config["num_classes"]))
        dim, size, flip = int(spec["embedding_dim"]), int(spec["input_size"]), bool(spec["flip"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json: a bad 'frozen' section ({err!r})") from err
    return FrozenClassifier(
        backbone,
        head,
        feature_mean=torch.zeros(dim),
        feature_std=torch.ones(dim),
        input_size=size,
        flip=flip,
    )


def _weak_strong(
    batch: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, V, D]`` views -> (weak ``[B, 1, D]``, strong ``[B, 1, D]``).

    Two different views when there are two; the strong one gets feature dropout.
    """
    b, v, _ = batch.shape
    pick = torch.randint(0, v, (b,), generator=generator).to(batch.device)
    rows = torch.arange(b, device=batch.device)
    weak = batch[rows, pick].unsqueeze(1)
    strong = batch[rows, (pick + 1) % v].unsqueeze(1)
    keep = torch.rand(strong.shape, generator=generator).to(batch.device) >= STRONG_DROPOUT
    return weak, strong * keep / (1 - STRONG_DROPOUT)


def run_frozen_finetune(
    features: np.ndarray,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    unlabeled_rows: np.ndarray,
    config: FinetuneConfig,
    *,
    n_classes: int,
    head: str,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[FinetuneResult, FeatureBatches]:
    """Train a fresh head on embeddings with the mixed semi-training; returns it and its input.

    Args:
        features: Embeddings ``[N, V, D]`` (V = 2 with ``--frozen-flip``) in report order.
        labeled_rows: Rows of X_l; ``labels`` their clean labels.
        labels: ``[len(labeled_rows)]`` class codes.
        unlabeled_rows: Rows of X_u.
        config: Settings (``lambda_m = 0``: cross-entropy on the labeled set only).
        n_classes: C.
        head: ``linear`` or ``mlp``.
        test: Optional ``(embeddings [M, V, D], labels [M])``, scored every ``eval_every``.
        progress: Progress callback.
        on_epoch: Called with each epoch's log record.
        should_stop: Checked before every step; True raises :class:`StepInterrupted`.

    Returns:
        The result (``.model`` is the head, on standardised features) and the
        :class:`FeatureBatches` whose statistics standardise them.
    """
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    feats = FeatureBatches(features, Precision(device, None, channels_last=False))
    model = make_head(head, features.shape[-1], n_classes).to(device)
    optimizer = build_optimizer(
        model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    b = config.batch_size
    steps = max(1, math.ceil((len(labeled_rows) + len(unlabeled_rows)) / b))
    result = FinetuneResult(
        model, n_labeled=len(labeled_rows), n_unlabeled=len(unlabeled_rows), model_name=head
    )
    mixed = config.lambda_m > 0
    for epoch in range(config.epochs):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(epoch, epochs=config.epochs, schedule="cosine")
        model.train()
        order = cycled_order(len(labeled_rows), steps * b, generator)
        totals = torch.zeros(3)
        for step in range(steps):
            if should_stop is not None and should_stop():
                raise StepInterrupted
            pick = order[step * b : (step + 1) * b]
            x = feats.prepare(feats.augment(feats.load(labeled_rows[pick]), generator))
            y = torch.from_numpy(labels[pick]).to(device)
            x, loss_of = mixup_batch(x, y, config.labeled_mixup(frozen=True), generator)
            loss = loss_x = loss_of(model(x))
            loss_m, mask = torch.zeros(()), torch.zeros(1)
            if mixed:
                rows, mix_labels = draw_mixed_batch(
                    labeled_rows,
                    labels,
                    unlabeled_rows,
                    len(pick),
                    mu=config.mu,
                    generator=generator,
                )
                y_mix = torch.from_numpy(mix_labels).to(device)
                weak, strong = _weak_strong(feats.load(rows), generator)
                with torch.no_grad():
                    weak_logits = model(feats.prepare(weak))
                loss_m, mask = mixed_loss(
                    model(feats.prepare(strong)), weak_logits, y_mix, tau=config.tau
                )
                loss = loss_x + config.lambda_m * loss_m
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch: unannotated
            optimizer.step()
            totals += torch.stack(
                [loss_x.detach().cpu(), loss_m.detach().cpu(), mask.float().mean().cpu()]
            )
            report(progress, f"finetune {epoch + 1}/{config.epochs}", step + 1, steps)
        line = epoch_line(epoch, totals, steps, time.perf_counter() - start)
        if test is not None and (
            (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        ):
            line["test_accuracy"] = head_accuracy(model, feats, *test)
            result.test_accuracy = line["test_accuracy"]
        result.history.append(line)
        if on_epoch is not None:
            on_epoch(line)
    return result, feats


@torch.inference_mode()
def head_accuracy(
    model: nn.Module, feats: FeatureBatches, features: np.ndarray, labels: np.ndarray
) -> float:
    """Top-1 accuracy of a head on embeddings ``[M, V, D]`` (standardised as in training)."""
    model.eval()
    x = feats.prepare(torch.from_numpy(features.astype(np.float32)).to(feats.precision.device))
    return float((model(x).argmax(1).cpu().numpy() == labels).mean())


def is_frozen_report(metadata: dict[str, Any]) -> bool:
    """True for a report made by ``audit --frozen``."""
    return metadata.get("mode") == "frozen"


def frozen_audit_config(metadata: dict[str, Any], report: str) -> AuditConfig:
    """The audit's settings from a frozen report, with its backbone weights checked."""
    config = AuditConfig.from_dict(metadata.get("config") or {})
    config.model = config.model or "resnet18"  # the frozen audit's default backbone
    if config.weights and not Path(config.weights).is_file():
        raise ConfigError(
            f"{report}: the audit's backbone weights {config.weights} are gone; put them back, "
            "or pass --model (and --weights) to train a network on the images instead"
        )
    return config


def finetune_frozen(
    dataset: Dataset,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    unlabeled_rows: np.ndarray,
    config: FinetuneConfig,
    *,
    audit_config: AuditConfig,
    test: Dataset | None = None,
    test_labels: np.ndarray | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[FinetuneResult, FrozenClassifier, dict[str, Any]]:
    """The frozen report's finetune: embeddings (cached by the audit), head, one model.

    Returns the training result, the model to export (backbone + standardisation + head)
    and the ``frozen`` section of its config.json.
    """
    options = {**FROZEN_OPTIONS, **audit_config.extra}
    head, flip = str(options["head"]), bool(options["flip"])
    features, info = embed_images(
        dataset, audit_config, flip=flip, cache_dir=cache_dir, progress=progress
    )
    test_pair = None
    if test is not None and test_labels is not None:
        test_features, _ = embed_images(
            test, audit_config, flip=flip, cache_dir=cache_dir, progress=progress
        )
        test_pair = (test_features, test_labels)
    result, feats = run_frozen_finetune(
        features,
        labeled_rows,
        labels,
        unlabeled_rows,
        config,
        n_classes=len(dataset.manifest.class_names),
        head=head,
        test=test_pair,
        progress=progress,
        on_epoch=on_epoch,
        should_stop=should_stop,
    )
    backbone, _, size = backbone_and_input(audit_config)
    model = FrozenClassifier(
        backbone,
        result.model.cpu(),
        feature_mean=feats.mean,
        feature_std=feats.std,
        input_size=size,
        flip=flip,
    ).eval()
    _check_cache_matches(model, dataset, features, feats, info)
    section = frozen_export_config(
        backbone=info["backbone"], head=head, dim=features.shape[-1], input_size=size, flip=flip
    )
    return result, model, section


@torch.inference_mode()
def _check_cache_matches(
    model: FrozenClassifier,
    dataset: Dataset,
    features: np.ndarray,
    feats: FeatureBatches,
    info: dict[str, Any],
) -> None:
    """The exported backbone must give the cached embeddings the head was trained on.

    A cache written by other weights under the same key (a file replaced in place with the
    same size and time) would otherwise export a model that predicts something else.
    """
    rows = np.arange(min(8, len(features)))
    norm = info["normalization"]
    x = normalize(torch.from_numpy(dataset.cache.images[rows]), norm["mean"], norm["std"])
    got = model.features(x)
    want = feats.prepare(torch.from_numpy(features[rows].astype(np.float32)))
    agreement = float(F.cosine_similarity(got, want, dim=1).min())
    if agreement < 0.9:
        raise ConfigError(
            f"the cached embeddings {info['cache']} do not match the backbone "
            f"{info['backbone']} (cosine {agreement:.2f}); delete that file and run again"
        )
