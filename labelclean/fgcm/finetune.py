"""Mixed semi-training on an audited dataset (paper section 3.3; DESIGN.md "finetune").

Labeled set X_l = rows the audit kept or relabeled, with their clean labels; unlabeled
X_u = the rest. The network starts from ``config.weights``: by default the network the audit
trained (``--init audit``, a deviation from DESIGN.md's re-initialisation measured in
:mod:`labelclean.audit_network`), else a fresh one (``--init scratch``) or ``--pretrained``.
Each step draws B labeled samples (weak augmentation, cross-entropy: L_x) and a mixed batch
of B labeled + mu*B unlabeled samples (at most the unlabeled set's share,
:func:`unlabeled_draws`, a deviation): the target is the clean label for labeled rows and
the argmax of the weak view's prediction for unlabeled ones; the loss is cross-entropy on a
strong view, counted only where the weak view's top confidence exceeds tau, averaged over
the whole mixed batch (eq. 7): L_m. Total loss L_x + lambda * L_m (eq. 8).

``--mixup`` blends the labeled batch of L_x; a network's default is off, the paper's plain
cross-entropy (blending cost 2 points on CIFAR-10N "worst"; a frozen head's default is on).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from labelclean.config import FinetuneConfig
from labelclean.data.strong_augment import strong_augment
from labelclean.errors import ReportError
from labelclean.fgcm.health import Where, check_finite, check_finite_weights
from labelclean.models import create_model, fit_data_init
from labelclean.progress import Progress, report
from labelclean.training import (
    ImageBatches,
    Precision,
    StepInterrupted,
    build_optimizer,
    lr_factor,
    mixup_batch,
    predict_probs,
    resolve_device,
    seed_everything,
)

logger = logging.getLogger(__name__)


#: ``guard`` reasons of labels the report kept only as a guess: a quarter to a third wrong.
GUESSED = ("partly_disputed", "semi_agrees")


def guessed_rows(frame: pd.DataFrame) -> np.ndarray:
    """``[N]`` bool: rows whose label the report kept only as a guess.

    The ``guard`` reasons of :data:`GUESSED`: ``partly_disputed``
    (:func:`~labelclean.fgcm.guard.partly_disputed`) and ``semi_agrees``
    (:mod:`labelclean.fgcm.semi`); none in a report written before the ``guard`` column.
    """
    if "guard" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    guessed: npt.NDArray[np.bool_] = frame["guard"].isin(GUESSED).to_numpy()
    return guessed


def split_report(
    frame: pd.DataFrame, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labeled_rows, labels, unlabeled_rows)`` from report rows (positions in ``frame``).

    Labeled X_l = action keep or relabel, with its ``clean_label`` as the class code;
    unlabeled X_u = every other row (the paper's NHR and NHI clusters, and anything unlabeled),
    and the labels the report kept only because little of the data is wrong (``guard``
    ``partly_disputed``): a quarter to a third of them are wrong, the best single guess for
    the cleaned labels but not labels to train on. Measured on imagenette-dev at 40% pair
    noise, 4 folds: training on them cost every fold, .981 -> .975 test accuracy
    (benchmarks/RESULTS.md, "The report at low noise on frozen heads"). A reviewer's decision
    clears the guard (:func:`~labelclean.review.apply.reviewed_frame`).

    Raises:
        ReportError: A labeled row has no or an unknown clean label, or the labeled set is
            empty or has a single class (nothing to learn a classifier from).
    """
    for column in ("action", "clean_label"):
        if column not in frame.columns:
            raise ReportError(f"report: no {column!r} column; is it a labelclean audit report?")
    code = {name: i for i, name in enumerate(class_names)}
    labeled = frame["action"].isin(["keep", "relabel"]).to_numpy() & ~guessed_rows(frame)
    clean = frame["clean_label"].to_numpy(dtype=object)
    bad = [i for i in np.flatnonzero(labeled) if clean[i] not in code]
    if bad:
        shown = ", ".join(f"row {i} ({clean[i]!r})" for i in bad[:5])
        raise ReportError(
            f"report: {len(bad)} kept/relabeled row(s) have a clean_label outside the report's "
            f"classes {class_names[:10]}: {shown}; the file was edited or is damaged"
        )
    rows = np.flatnonzero(labeled)
    labels = np.array([code[c] for c in clean[labeled]], dtype=np.int64)
    if len(rows) == 0:
        raise ReportError(
            "report: the labeled set is empty (no row has action keep or relabel), so there is "
            "nothing to train on; look at the report with `labelclean report`, or audit again "
            "with more epochs"
        )
    if len(np.unique(labels)) < 2:
        only = class_names[int(labels[0])]
        raise ReportError(
            f"report: every labeled row has the class {only!r}; a classifier needs at least "
            "two classes (look at the report with `labelclean report`)"
        )
    return rows, labels, np.flatnonzero(~labeled)


def mixed_loss(
    strong_logits: torch.Tensor, weak_logits: torch.Tensor, labels: torch.Tensor, *, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7: masked cross-entropy on the strong view; returns ``(loss, mask)``.

    Args:
        strong_logits: ``[M, C]`` logits of the strong view (with gradient).
        weak_logits: ``[M, C]`` logits of the weak view (no gradient needed).
        labels: ``[M]`` clean label for labeled rows, -1 for unlabeled rows.
        tau: Confidence threshold on the weak view's softmax.
    """
    probs = weak_logits.detach().float().softmax(1)
    confidence, guess = probs.max(1)
    target = torch.where(labels >= 0, labels, guess)
    mask = confidence > tau
    per_sample = F.cross_entropy(strong_logits.float(), target, reduction="none")
    return (per_sample * mask).sum() / max(len(labels), 1), mask


@dataclass
class FinetuneResult:
    """The trained model and what happened."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    test_accuracy: float | None = None
    n_labeled: int = 0
    n_unlabeled: int = 0
    model_name: str = ""
    precision: str = ""


def epoch_line(epoch: int, totals: torch.Tensor, steps: int, seconds: float) -> dict[str, Any]:
    """An epoch's log record from the summed ``(loss_x, loss_m, mask rate)`` of its steps."""
    return {
        "epoch": epoch + 1,
        "loss_x": round(float(totals[0]) / steps, 5),
        "loss_m": round(float(totals[1]) / steps, 5),
        "mask_rate": round(float(totals[2]) / steps, 4),
        "seconds": round(seconds, 2),
    }


def report_architecture(metadata: dict[str, Any]) -> str:
    """The architecture the audit trained, as ``finetune`` builds it.

    Reports made before ``architecture`` was stored: for a ``--frozen`` report the backbone
    (``config.model``, resnet18 when none was named), never the display name in ``model``.
    """
    if metadata.get("architecture"):
        return str(metadata["architecture"])
    if metadata.get("mode") == "frozen":
        return str((metadata.get("config") or {}).get("model") or "resnet18")
    return str(metadata.get("model") or "small_cnn")


def cycled_order(n: int, total: int, generator: torch.Generator) -> np.ndarray:
    """``total`` indices into ``range(n)``: fresh permutations back to back, the last cut."""
    reps = -(-total // n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])[:total].numpy()


def unlabeled_draws(mu: int, n_batch: int, n_labeled: int, n_unlabeled: int) -> int:
    """Unlabeled samples in a mixed batch: ``mu`` per labeled one, at most their set's share.

    The paper's ``mu`` (from FixMatch) assumes far more unlabeled samples than labeled ones.
    An audit that unlabels few rows would otherwise show each of them to the model tens to
    hundreds of times an epoch (about 120 of 2,944 photos at 20% noise: 170 times each), a
    labeled row twice, and the model fits their pseudo labels' mistakes. Capped at
    ``n_batch * n_unlabeled / n_labeled``, an unlabeled row is drawn about as often as a
    labeled one. A deviation, measured (README "How it works"): frozen heads .981 -> .984
    at 20% noise, the same at 40% pair noise; a network on CIFAR-10N "worst" .743 at the
    default mu against .735 with mu 2 uncapped, in less time.
    """
    if n_unlabeled == 0 or n_labeled == 0:
        return 0
    return min(mu * n_batch, max(1, round(n_batch * n_unlabeled / n_labeled)))


def draw_mixed_batch(
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    unlabeled_rows: np.ndarray,
    n_labeled: int,
    *,
    mu: int,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The mixed batch's rows and targets: ``n_labeled`` labeled + the unlabeled draws.

    Drawn with replacement; unlabeled rows get the target -1 (pseudo-labeled later). How
    many unlabeled: :func:`unlabeled_draws`.
    """
    mix_l = torch.randint(0, len(labeled_rows), (n_labeled,), generator=generator).numpy()
    n_u = unlabeled_draws(mu, n_labeled, len(labeled_rows), len(unlabeled_rows))
    mix_u = torch.randint(0, max(len(unlabeled_rows), 1), (n_u,), generator=generator).numpy()
    rows = np.concatenate([labeled_rows[mix_l], unlabeled_rows[mix_u]])
    return rows, np.concatenate([labels[mix_l], np.full(n_u, -1)])


@dataclass
class _Trainer:
    """The network and what steps it, built once per run so a checkpoint can hold it all."""

    model: nn.Module
    train_model: nn.Module  # ``model``, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    batches: ImageBatches  # its ``precision`` holds the device
    dist: Any  # the torchrun job's :class:`~labelclean.distributed.Dist`; None in one process

    @property
    def world(self) -> int:
        """How many processes train (each takes its share of an epoch)."""
        return int(self.dist.world_size) if self.dist is not None else 1

    def state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The full training state after ``epoch`` epochs (tensors and plain values only)."""
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": list(history),
        }

    def restore(self, state: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        """Continue from :meth:`state`'s dict: returns ``(first epoch, history so far)``."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"]), list(state["history"])


def _build_trainer(
    batches: ImageBatches,
    labeled_rows: np.ndarray,
    config: FinetuneConfig,
    n_classes: int,
    model_name: str,
    dist: Any,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> _Trainer:
    """Seed, then the model on the device with its optimizer (in this order: reproducible).

    ``dist``: the torchrun job, or None in one process; ``init_state``: weights to load.
    """
    precision = batches.precision
    generator = seed_everything(config.seed)
    model = create_model(
        model_name, n_classes, pretrained=config.pretrained, weights=config.weights
    )
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(precision.device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if init_state is None and not (config.pretrained or config.weights) and len(labeled_rows):
        with torch.no_grad():  # the whitening stem of air_cnn, from the labeled images
            fit_data_init(model, batches.prepare(batches.load(np.sort(labeled_rows)[:5000])))
    train_model: nn.Module = model
    if dist is not None:
        device = precision.device
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(
        model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scaler = precision.grad_scaler()
    return _Trainer(model, train_model, optimizer, scaler, generator, batches, dist)


def _train_step(
    trainer: _Trainer,
    pick: np.ndarray,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    unlabeled_rows: np.ndarray,
    config: FinetuneConfig,
    draw: torch.Generator,
) -> torch.Tensor:
    """One optimizer step on the labeled rows ``pick`` (+ a mixed batch); ``(L_x, L_m, mask)``.

    ``lambda_m = 0`` is cross-entropy on the labeled set: the mixed batch (~4x the work) is
    skipped.
    """
    t, batches, mixed = trainer, trainer.batches, config.lambda_m > 0
    device = batches.precision.device
    y = torch.from_numpy(labels[pick]).to(device)
    if mixed:
        mix_rows, mix_labels = draw_mixed_batch(
            labeled_rows, labels, unlabeled_rows, len(pick), mu=config.mu, generator=draw
        )
        y_mix = torch.from_numpy(mix_labels).to(device)
        raw_mix = batches.load(mix_rows)
        weak_mix = batches.prepare(batches.augment(raw_mix, draw))
        strong_mix = batches.prepare(strong_augment(raw_mix, generator=draw))
    x = batches.prepare(batches.augment(batches.load(labeled_rows[pick]), draw))
    x, loss_of = mixup_batch(x, y, config.labeled_mixup(frozen=False), draw)
    with batches.precision.autocast():
        if mixed:
            with torch.no_grad():
                weak_logits = t.model(weak_mix)
            logits = t.train_model(torch.cat([x, strong_mix]))
        else:
            logits = t.train_model(x)
        loss_x = loss_of(logits[: len(x)].float())
        if mixed:
            loss_m, mask = mixed_loss(logits[len(x) :], weak_logits, y_mix, tau=config.tau)
            loss = loss_x + config.lambda_m * loss_m
        else:
            loss, loss_m, mask = loss_x, torch.zeros(()), torch.zeros(1, dtype=torch.bool)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch: unannotated
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return torch.stack([loss_x.detach().cpu(), loss_m.detach().cpu(), mask.float().mean().cpu()])


def _train_epoch(
    t: _Trainer,
    epoch: int,
    steps: int,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    unlabeled_rows: np.ndarray,
    config: FinetuneConfig,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    task: str = "finetune",
) -> torch.Tensor:
    """One epoch of ``steps`` steps at its cosine learning rate; the summed ``(L_x, L_m, mask)``.

    One labeled order for all ranks, each takes its shard; the mixed batches and the
    augmentations come from the rank's own stream (otherwise every rank draws the same).
    """
    for group in t.optimizer.param_groups:
        group["lr"] = config.lr * lr_factor(epoch, epochs=config.epochs, schedule="cosine")
    t.train_model.train()
    b = config.batch_size
    order = cycled_order(len(labeled_rows), steps * b * t.world, t.generator)
    draw = t.generator
    if t.dist is not None:
        order = t.dist.shard_training(order)
        draw = t.dist.rank_generator(config.seed, epoch)
    totals = torch.zeros(3)
    for step in range(steps):
        if should_stop is not None and should_stop():
            raise StepInterrupted
        pick = order[step * b : (step + 1) * b]
        totals += _train_step(t, pick, labeled_rows, labels, unlabeled_rows, config, draw)
        report(progress, f"{task} {epoch + 1}/{config.epochs}", step + 1, steps)
    return totals


def run_finetune(
    images: np.ndarray,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    unlabeled_rows: np.ndarray,
    config: FinetuneConfig,
    *,
    n_classes: int,
    model_name: str,
    mean: list[float],
    std: list[float],
    crop_padding: int,
    hflip: bool,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume_state: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: Any = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
    task: str = "finetune",
) -> FinetuneResult:
    """Train a model with the mixed semi-training and return it.

    Args:
        images: The uint8 cache ``[N, 3, S, S]`` (rows indexed by the row arrays).
        labeled_rows: Rows of X_l; ``labels`` their clean labels.
        labels: ``[len(labeled_rows)]`` class codes.
        unlabeled_rows: Rows of X_u.
        config: Settings.
        n_classes: C.
        model_name: Architecture for :func:`labelclean.models.create_model`.
        mean: Normalisation mean.
        std: Normalisation std.
        crop_padding: Weak augmentation crop padding.
        hflip: Weak augmentation flips.
        test: Optional ``(uint8 images, labels)`` evaluated every ``config.eval_every`` epochs.
        progress: Progress callback.
        on_epoch: Called with each epoch's log record.
        resume_state: A checkpoint from ``on_checkpoint`` to continue from.
        on_checkpoint: Called after every epoch with the full training state (tensors and
            plain values only), for ``--resume``.
        should_stop: Checked before every step; True raises :class:`StepInterrupted`
            (the last checkpoint is the epoch before).
        dist: A :class:`~labelclean.distributed.Dist` under torchrun: gradients are
            all-reduced (DDP) and each rank takes its share of every epoch's labeled order.
        init_state: Weights to start from instead of ``config.weights`` (the audit's network in
            memory, :mod:`labelclean.fgcm.semi`).
        task: The progress bars' label.
    """
    job = dist if dist is not None and dist.active else None  # None: one process
    device = job.device if job is not None else resolve_device(config.device)
    precision = Precision.choose(device, amp=config.amp).for_model(model_name)
    batches = ImageBatches(images, mean, std, precision, crop_padding=crop_padding, hflip=hflip)
    t = _build_trainer(batches, labeled_rows, config, n_classes, model_name, job, init_state)
    # An epoch is as many labeled draws as there are images (labeled + unlabeled), the
    # labeled set cycled: the budget of cross-entropy on everything, however much the
    # audit unlabeled (a pass over a small labeled set alone would undertrain).
    per_epoch = len(labeled_rows) + len(unlabeled_rows)
    steps = max(1, math.ceil(-(-per_epoch // t.world) / config.batch_size))
    result = FinetuneResult(
        t.model,
        n_labeled=len(labeled_rows),
        n_unlabeled=len(unlabeled_rows),
        model_name=model_name,
        precision=precision.describe(),
    )
    first_epoch = 0
    if resume_state is not None:
        first_epoch, result.history = t.restore(resume_state)
    for epoch in range(first_epoch, config.epochs):
        start = time.perf_counter()
        totals = _train_epoch(
            t,
            epoch,
            steps,
            labeled_rows,
            labels,
            unlabeled_rows,
            config,
            progress,
            should_stop,
            task,
        )
        health = Where(epoch=epoch, epochs=config.epochs, lr=config.lr, task=task)
        check_finite(float(totals[0] + totals[1]), what="the loss", **health)
        check_finite_weights(t.model, **health)
        line = epoch_line(epoch, totals, steps, time.perf_counter() - start)
        if test is not None and (
            (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        ):
            line["test_accuracy"] = evaluate_accuracy(t.model, test, mean, std, precision)
            result.test_accuracy = line["test_accuracy"]
        result.history.append(line)
        if on_epoch is not None:
            on_epoch(line)
        if on_checkpoint is not None:
            on_checkpoint(t.state(epoch + 1, result.history))
    return result


def evaluate_accuracy(
    model: nn.Module,
    test: tuple[np.ndarray, np.ndarray],
    mean: list[float],
    std: list[float],
    precision: Precision,
) -> float:
    """Top-1 accuracy on ``(uint8 images, labels)``."""
    images, labels = test
    batches = ImageBatches(images, mean, std, precision)
    probs = predict_probs(model, batches, np.arange(len(labels)), batch_size=256)
    return float((probs.argmax(1) == labels).mean())
