"""Settings as typed dataclasses: one field per CLI flag, checked once, saved with every output.

Messages from ``__post_init__`` name the CLI flag, so the CLI can pass them straight through.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from labelclean.errors import ConfigError

RECORD_MODES = ("eval", "train")
T_UPDATES = ("union", "latest")
CLUSTER_METHODS = ("gmm", "kmeans")
GUARDS = ("none", "budget", "confident")
SCHEDULES = ("cosine", "step", "constant")

#: The paper's CIFAR schedule (section 4.1.2): 350 epochs, warmup 80, LR x0.1 at 80 and 150.
PAPER_PRESET: dict[str, Any] = {
    "model": "preact_resnet18",
    "epochs": 350,
    "warmup": 80,
    "lr": 0.06,
    "lr_schedule": "step",
    "lr_milestones": (80, 150),
    "batch_size": 128,
}


def _check_choice(value: str, choices: tuple[str, ...], flag: str) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(choices)}")


def _check_number(
    value: float,
    flag: str,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite number from ``low`` to ``high`` (open ends excluded), or ConfigError naming it.

    ``nan`` and ``inf`` parse as floats; unchecked they ran a whole training into NaN.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {value!r}: expected a number") from None
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not math.isfinite(number) or not (above and below):
        bounds = [f"{'>' if low_open else '>='} {low:g}"]
        if math.isfinite(high):
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        raise ConfigError(f"{flag} {value}: expected a finite number {' and '.join(bounds)}")


@dataclass
class AuditConfig:
    """Everything that decides what an audit computes (saved in the report's metadata)."""

    model: str | None = None  #: --model: built-in or timm name; None = chosen from size/device
    pretrained: bool = False  #: --pretrained: timm downloads ImageNet weights
    weights: str | None = None  #: --weights: local state dict to start from
    epochs: int = 40  #: --epochs: total epochs, warmup included
    #: --warmup: epochs on all samples before the first clustering; None = chosen with the
    #: model by :meth:`AuditConfig.resolve` (3/4 of the epochs for the small CPU network)
    warmup: int | None = None
    lr: float = 0.02  #: --lr: base SGD learning rate (paper: 0.06, for its ResNet)
    lr_schedule: str = "cosine"  #: --lr-schedule: cosine (default), step (paper), constant
    lr_milestones: tuple[int, ...] = ()  #: --lr-milestones: epochs where step decays x0.1
    momentum: float = 0.9  #: SGD momentum (paper: 0.9)
    weight_decay: float = 5e-4  #: --weight-decay (paper: 5e-4)
    batch_size: int = 128  #: --batch-size (paper: 128)
    crop_padding: int | None = None  #: random-crop padding; None = image_size // 8 (4 at 32 px)
    hflip: bool = True  #: --hflip/--no-hflip: random horizontal flips
    seed: int = 0  #: --seed
    device: str = "auto"  #: --device: auto, cpu, cuda, cuda:N, mps
    amp: bool = True  #: --amp/--no-amp: autocast where the device has a fast low precision
    record: str = "eval"  #: --record: eval (paper's extra pass) or train (training pass probs)
    components: int = 5  #: --components: 2 (loss-only, prior work) .. 5 (FGCM)
    cluster_method: str = "gmm"  #: --cluster-method: gmm or kmeans (ablation)
    t_update: str = "latest"  #: --t-update: union (paper) or latest (this epoch's clusters)
    #: --guard: low-noise guard (README "How it works"); None = chosen with the model by
    #: :meth:`AuditConfig.resolve` (confident for the small CPU network, else budget)
    guard: str | None = None
    #: --relabel/--no-relabel: NS gets its pseudo label (paper) or is unlabeled; None = chosen
    #: with the model by :meth:`AuditConfig.resolve` (off for the small CPU network)
    relabel: bool | None = None
    gmm_max_iter: int = 100  #: EM iterations per fit
    deterministic: bool = False  #: --deterministic: deterministic algorithms
    preset: str | None = None  #: --preset: "paper" applies PAPER_PRESET where not overridden
    extra: dict[str, Any] = field(default_factory=dict)  #: mode-specific settings

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be at least 1")
        if self.warmup is not None and not 0 <= self.warmup < self.epochs:
            raise ConfigError(
                f"--warmup {self.warmup}: must be at least 0 and below --epochs {self.epochs} "
                "(the audit needs at least one clustering epoch)"
            )
        _check_training_numbers(self)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if not 2 <= self.components <= 5:
            raise ConfigError(f"--components {self.components}: expected 2, 3, 4 or 5")
        _check_choice(self.record, RECORD_MODES, "--record")
        _check_choice(self.t_update, T_UPDATES, "--t-update")
        _check_choice(self.cluster_method, CLUSTER_METHODS, "--cluster-method")
        if self.guard is not None:
            _check_choice(self.guard, GUARDS, "--guard")
        _check_choice(self.lr_schedule, SCHEDULES, "--lr-schedule")
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if self.preset not in (None, "paper"):
            raise ConfigError(f"--preset {self.preset!r}: the only preset is 'paper'")

    @classmethod
    def from_preset(cls, preset: str | None, **overrides: Any) -> AuditConfig:
        """Start from a preset and apply the options the user set explicitly."""
        values: dict[str, Any] = {}
        if preset == "paper":
            values.update(PAPER_PRESET)
        elif preset is not None:
            raise ConfigError(f"--preset {preset!r}: the only preset is 'paper'")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(preset=preset, **values)

    def resolve(self, model_name: str) -> AuditConfig:
        """A copy with the model-dependent defaults filled in (``warmup``, ``guard``, ``relabel``).

        All three follow from one measured fact: the small CPU network (``small_cnn``)
        underfits. Trained 40 epochs on all of 10,000 CIFAR-10 images at 5% noise it fitted
        79% of the right labels and 5% of the wrong ones: too small to memorise, still learning.

        - Warmup ends where the network has fitted the right labels but not yet memorised the
          wrong ones: the paper's ResNet early (80 of 350 epochs; a quarter here), the small
          network late (3/4 of the epochs), since a sample left out of T is never learned.
        - Guard: ``confident`` for the small network, whose disagreement overstates the
          noise; ``budget`` for networks that fit (see ``fgcm.guard.flag_budget``).
        - Relabel NS: off for the small network, whose guesses were 30-75% right on CIFAR-10
          (README "How it works"), so it returns the cleanest labels it can; on otherwise.
        """
        underfits = model_name == "small_cnn"
        values: dict[str, Any] = {}
        if self.warmup is None:
            share = 0.75 if underfits else 0.25
            values["warmup"] = min(int(self.epochs * share), self.epochs - 1)
        if self.guard is None:
            values["guard"] = "confident" if underfits else "budget"
        if self.relabel is None:
            values["relabel"] = not underfits
        return dataclasses.replace(self, **values) if values else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for metadata and checkpoints."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AuditConfig:
        """Inverse of :meth:`to_dict`, ignoring keys from newer versions."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class FinetuneConfig:
    """Settings of the mixed semi-training (paper 3.3); saved in the exported config.json."""

    model: str | None = None  #: --model: architecture [default: the audit's]
    pretrained: bool = False  #: --pretrained: timm downloads ImageNet weights
    weights: str | None = None  #: --weights: local state dict to start from
    epochs: int = 30  #: --epochs: each as many labeled draws as there are images
    lr: float = 0.02  #: --lr: base SGD learning rate (cosine schedule)
    momentum: float = 0.9  #: SGD momentum
    weight_decay: float = 5e-4  #: --weight-decay
    batch_size: int = 64  #: --batch-size: B, labeled samples per step
    mu: int = 7  #: --mu: unlabeled samples per labeled one in a mixed batch (paper: 7)
    tau: float = 0.95  #: --tau: confidence a pseudo label needs to count (paper: 0.95)
    lambda_m: float = 1.0  #: --lambda-m: weight of the mixed-batch loss (paper: 1)
    seed: int = 0  #: --seed
    device: str = "auto"  #: --device
    amp: bool = True  #: --amp/--no-amp
    eval_every: int = 1  #: --eval-every: test-set evaluation period in epochs

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be at least 1")
        _check_training_numbers(self)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.mu < 0:
            raise ConfigError(f"--mu {self.mu}: must be 0 or more")
        _check_number(self.tau, "--tau", high=1.0)
        _check_number(self.lambda_m, "--lambda-m")
        if self.eval_every < 1:
            raise ConfigError(f"--eval-every {self.eval_every}: must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def _check_training_numbers(config: AuditConfig | FinetuneConfig) -> None:
    """The SGD settings both configs share: finite, and where SGD can work at all.

    The learning rate has no upper limit here: how large is too large depends on the
    network; a run that diverges stops at the epoch with an error (labelclean.fgcm.health).
    Momentum 1 or more never converges; negative weight decay grows the weights.
    """
    _check_number(config.lr, "--lr", low_open=True)
    _check_number(config.momentum, "--momentum", high=1.0, high_open=True)
    _check_number(config.weight_decay, "--weight-decay")
