"""Settings as typed dataclasses: one field per CLI flag, checked once, saved with every output.

Messages from ``__post_init__`` name the CLI flag, so the CLI can pass them straight through.
The fields' type annotations are checked first (:func:`check_fields`), and the public verbs'
arguments by their signatures (:func:`checked`): the Python API refuses ``epochs="3"`` or
``config={...}`` with the same kind of line as the CLI, before any image is read.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from labelclean.errors import ConfigError

_F = TypeVar("_F", bound=Callable[..., Any])

RECORD_MODES = ("eval", "train")
T_UPDATES = ("union", "latest")
CLUSTER_METHODS = ("gmm", "kmeans")
GUARDS = ("none", "budget", "confident")
SCHEDULES = ("cosine", "step", "constant")
#: --schedule: when the audit clusters. ``once``: train on every sample, cluster the whole
#: history at the end; ``paper``: Algorithm 1, train on the refined set T after warmup.
AUDIT_SCHEDULES = ("once", "paper")
#: finetune --init: start from the network the audit trained, or from a fresh one.
FINETUNE_INITS = ("audit", "scratch")

#: The paper's Algorithm 1 with its CIFAR schedule (section 4.1.2): PreAct ResNet-18, 350
#: epochs, warmup 80, LR 0.06 x0.1 at 80 and 150, T only grows (union), no guard, NS
#: relabeled, and the report is the clustering of the last epoch (no extra one after it).
PAPER_PRESET: dict[str, Any] = {
    "model": "preact_resnet18",
    "epochs": 350,
    "warmup": 80,
    "lr": 0.06,
    "lr_schedule": "step",
    "lr_milestones": (80, 150),
    "batch_size": 128,  # given, so a small set keeps it too (AuditConfig.batch_size)
    "schedule": "paper",
    "mixup": 0.0,
    "t_update": "union",
    "guard": "none",
    "relabel": True,
    "final_clustering": False,
}


#: The audit's batch (the paper's), and the fewest optimizer steps a from-scratch audit
#: makes by default. Measured on 120 images of 3 classes that brightness alone separates
#: (README "When training goes wrong"): at 128 a batch (one step an epoch) the network
#: predicted one class for every image at 3, 8 and 20 epochs, so the report flagged two
#: thirds of the labels; it needed some 30-40 steps at any batch from 8 to 128.
DEFAULT_BATCH_SIZE, MIN_STEPS, MIN_BATCH_SIZE = 128, 100, 8


def default_batch_size(n_samples: int, epochs: int) -> int:
    """The default batch: 128, smaller so that ``epochs`` make :data:`MIN_STEPS` steps.

    Never below :data:`MIN_BATCH_SIZE`, where a batch's statistics (batch norm) turn to noise;
    a larger set than ``128 * MIN_STEPS / epochs`` images keeps 128.
    """
    per_epoch = math.ceil(MIN_STEPS / max(epochs, 1))
    return max(MIN_BATCH_SIZE, min(DEFAULT_BATCH_SIZE, n_samples // per_epoch))


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


_SIMPLE = {
    bool: "True or False",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "None",
}


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the type ``annotation`` names (the annotations this package uses).

    ``bool`` is not an integer here and an integer is not a bool, whatever Python says:
    ``epochs=True`` is a slip, not one epoch. A path is a ``str`` or any ``os.PathLike``.
    Types it cannot check (a non-callable protocol, a generic it does not know) pass.
    """
    if annotation is Any or annotation is object:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False
        inner = args[0] if args and (len(args) == 1 or args[1] is Ellipsis) else Any
        return all(_fits(item, inner) for item in value)
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if origin is Callable:
        return callable(value)
    if origin is not None:  # os.PathLike[str]: a path; other generics are not checked
        return not _is_path_type(origin) or isinstance(value, str | os.PathLike)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if _is_path_type(annotation):
        return isinstance(value, str | os.PathLike)
    if getattr(annotation, "_is_protocol", False):  # Progress: anything with its __call__
        return callable(value) if "__call__" in vars(annotation) else True
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _is_path_type(annotation: Any) -> bool:
    """``Path``, ``os.PathLike`` (the origin of ``os.PathLike[str]``)."""
    return isinstance(annotation, type) and issubclass(annotation, os.PathLike)


def _describe(annotation: Any) -> str:
    """``int | None`` -> "an integer or None", for the messages."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        names = [_describe(arg) for arg in args]
        if "a path" in names:  # ``str | Path``: a path
            names = [n for n in names if n != "a string"]
        return " or ".join(dict.fromkeys(names))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (tuple, list):
        inner = args[0] if args else Any
        return f"a list of {_describe(inner).removeprefix('an ').removeprefix('a ')}s"
    if origin in (dict, Mapping):
        return "a dict"
    if origin is Callable or getattr(annotation, "_is_protocol", False):
        return "a function"
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    if annotation is None:
        return "None"
    if _is_path_type(annotation) or _is_path_type(origin):
        return "a path"
    name = getattr(annotation, "__name__", str(annotation))
    return f"an {name}" if name[:1] in "AEIOU" else f"a {name}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_type(name: str, value: Any, annotation: Any, *, flag: bool = True) -> None:
    """Raise ConfigError naming the parameter, what was expected and what was found.

    ``flag``: name it as the CLI does (``--batch-size 2.5``), else as the Python call does
    (``config={...}``), for the arguments only the Python API has.
    """
    if _fits(value, annotation):
        return
    label = f"--{name.replace('_', '-')} {_shown(value)}" if flag else f"{name}={_shown(value)}"
    raise ConfigError(f"{label}: expected {_describe(annotation)}, found {type(value).__name__}")


def _annotations(func: Callable[..., Any]) -> dict[str, Any]:
    """A function's parameter annotations, evaluated; those it cannot resolve are left out.

    (Names imported only for type checkers cannot be resolved at run time.)
    """
    found = {}
    func = inspect.unwrap(func)
    hints = getattr(func, "__annotations__", {})
    for name, text in hints.items():
        try:
            found[name] = eval(text, func.__globals__) if isinstance(text, str) else text  # noqa: S307
        except Exception:  # noqa: BLE001,S112 - only for type checkers: not checked here
            continue
    return found


def check_fields(config: Any) -> None:
    """Every field of the dataclass ``config`` has its annotated type (ConfigError if not)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        check_type(f.name, getattr(config, f.name), hints[f.name])


def check_keywords(values: Mapping[str, Any], *functions: Callable[..., Any], what: str) -> None:
    """Check ``values`` against the parameters of ``functions`` they will be passed to.

    A name no function takes is refused too (``what`` names the argument that held it).
    """
    for name, value in values.items():
        for func in functions:
            if name in inspect.signature(func).parameters:
                if name in (hints := _annotations(func)):
                    check_type(name, value, hints[name])
                break
        else:
            known = sorted(
                {
                    p.name
                    for func in functions
                    for p in inspect.signature(func).parameters.values()
                    if p.kind == p.KEYWORD_ONLY
                }
            )
            raise ConfigError(f"{what}: unknown option {name!r} (expected: {', '.join(known)})")


def checked(func: _F) -> _F:
    """Check a public verb's arguments against its annotations before it runs.

    The same check as the settings' fields (:func:`check_type`), so the Python API refuses
    a wrong type at the edge, naming the parameter, where it would otherwise fail deep
    inside, after the images were decoded. ``**options`` are left to the config they build.
    """
    signature = inspect.signature(func)
    resolved: list[dict[str, Any]] = []  # at the first call: the names exist by then

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise ConfigError(f"{func.__name__}(): {err}") from None
        if not resolved:
            resolved.append(_annotations(func))
        hints = resolved[0]
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if name in hints and kind not in (kind.VAR_KEYWORD, kind.VAR_POSITIONAL):
                check_type(name, value, hints[name], flag=False)
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _weights_as_text(config: Any) -> None:
    """``weights=Path(...)`` is a path like any other: kept as the text the metadata saves."""
    if isinstance(config.weights, os.PathLike):
        config.weights = os.fspath(config.weights)


def _known_fields(cls: type, names: Any) -> None:
    """Refuse keyword options that are no field of the config ``cls``, naming them."""
    unknown = sorted(set(names) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(
            f"unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}: "
            f"not a setting of {cls.__name__} (see labelclean.{cls.__name__})"
        )


def _underfits(model_name: str, mixup: float) -> bool:
    """Whether the network fits the right labels, not the wrong ones, in the budget.

    The small CPU network, or any trained with mixup (measured on human noise, README "How
    it works").
    """
    return model_name == "small_cnn" or mixup > 0


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
    #: --schedule: once or paper (see AUDIT_SCHEDULES); None = once, paper with --preset paper
    schedule: str | None = None
    #: --lr: base SGD learning rate (paper: 0.06, for its ResNet); None = the model's
    #: measured recipe (``models.RECIPES``: 0.1 for air_cnn), else 0.02
    lr: float | None = None
    #: --mixup: Beta(a, a) input mixup, 0 = off; None = 1 with --schedule once or --frozen, else 0
    mixup: float | None = None
    lr_schedule: str = "cosine"  #: --lr-schedule: cosine (default), step (paper), constant
    lr_milestones: tuple[int, ...] = ()  #: --lr-milestones: epochs where step decays x0.1
    momentum: float = 0.9  #: SGD momentum (paper: 0.9)
    weight_decay: float = 5e-4  #: --weight-decay (paper: 5e-4)
    #: --batch-size (paper: 128); None = 128, or smaller on a set too small for the
    #: audit to make :data:`MIN_STEPS` optimizer steps (:meth:`AuditConfig.resolve`)
    batch_size: int | None = None
    crop_padding: int | None = None  #: random-crop padding; None = image_size // 8 (4 at 32 px)
    hflip: bool = True  #: --hflip/--no-hflip: random horizontal flips
    seed: int = 0  #: --seed
    device: str = "auto"  #: --device: auto, cpu, cuda, cuda:N, mps
    amp: bool = True  #: --amp/--no-amp: autocast where the device has a fast low precision
    record: str = "eval"  #: --record: eval (paper's extra pass) or train (training pass probs)
    components: int = 5  #: --components: 2 (loss-only, prior work) .. 5 (FGCM)
    cluster_method: str = "gmm"  #: --cluster-method: gmm or kmeans (ablation)
    t_update: str = "latest"  #: --t-update: union (paper) or latest (this epoch's clusters)
    #: --guard: low-noise guard (README "How it works"); None = chosen by
    #: :meth:`AuditConfig.resolve` (budget; confident for the small CPU network's loop)
    guard: str | None = None
    #: --relabel/--no-relabel: NS gets its pseudo label (paper) or is unlabeled; None = chosen
    #: with the model by :meth:`AuditConfig.resolve` (off for the small CPU network)
    relabel: bool | None = None
    gmm_max_iter: int = 100  #: EM iterations per fit
    #: cluster once more after the last epoch, so the report uses its evidence too; the
    #: paper reports the clustering that started the last epoch (False, ``--preset paper``)
    final_clustering: bool = True
    #: --semi-epochs: epochs of finetune's mixed semi-training after the report, whose network
    #: then guesses the unlabeled rows' pseudo labels (:mod:`labelclean.fgcm.semi`); None = 5
    #: with --schedule once, 0 (the paper: the audit ends with the clustering) otherwise
    semi_epochs: int | None = None
    deterministic: bool = False  #: --deterministic: deterministic algorithms
    preset: str | None = None  #: --preset: "paper" applies PAPER_PRESET where not overridden
    extra: dict[str, Any] = field(default_factory=dict)  #: mode-specific settings

    def __post_init__(self) -> None:
        _weights_as_text(self)
        check_fields(self)  # types first: ``epochs="3"`` is named here, not in a comparison
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be at least 1")
        if self.warmup is not None and not 0 <= self.warmup < self.epochs:
            raise ConfigError(
                f"--warmup {self.warmup}: must be at least 0 and below --epochs {self.epochs} "
                "(the audit needs at least one clustering epoch)"
            )
        _check_training_numbers(self)
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.semi_epochs is not None and self.semi_epochs < 0:
            raise ConfigError(f"--semi-epochs {self.semi_epochs}: must be 0 (off) or more")
        if self.schedule is not None:
            _check_choice(self.schedule, AUDIT_SCHEDULES, "--schedule")
        if self.schedule == "once" and self.warmup is not None:
            raise ConfigError(
                f"--warmup {self.warmup}: --schedule once clusters only after the last epoch; "
                "use --schedule paper for a warmup and the loop on T"
            )
        if self.mixup is not None and not 0 <= self.mixup <= 100:
            raise ConfigError(f"--mixup {self.mixup}: expected a Beta parameter in [0, 100]")
        if self.mixup and self.record == "train":
            raise ConfigError("--mixup: --record train records blended images; use --record eval")
        if not 2 <= self.components <= 5:
            raise ConfigError(f"--components {self.components}: expected 2, 3, 4 or 5")
        _check_choice(self.record, RECORD_MODES, "--record")
        _check_choice(self.t_update, T_UPDATES, "--t-update")
        _check_choice(self.cluster_method, CLUSTER_METHODS, "--cluster-method")
        if self.guard is not None:
            _check_choice(self.guard, GUARDS, "--guard")
        if not self.final_clustering and self.schedule == "once":
            raise ConfigError(
                "final_clustering=False: --schedule once clusters only after the last epoch"
            )
        _check_choice(self.lr_schedule, SCHEDULES, "--lr-schedule")
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if self.preset not in (None, "paper"):
            raise ConfigError(f"--preset {self.preset!r}: the only preset is 'paper'")

    @classmethod
    def from_preset(cls, preset: str | None, **overrides: Any) -> AuditConfig:
        """Start from a preset and apply the options the user set explicitly.

        ``--preset paper --epochs E`` keeps the paper's proportions: warmup and LR milestones
        at 80/350 and (80, 150)/350 of E, unless given too.
        """
        _known_fields(cls, overrides)
        values: dict[str, Any] = {}
        if preset == "paper":
            values.update(PAPER_PRESET)
        elif preset is not None:
            raise ConfigError(f"--preset {preset!r}: the only preset is 'paper'")
        given = {k: v for k, v in overrides.items() if v is not None}
        epochs = given.get("epochs")
        if preset == "paper" and epochs is not None and epochs != PAPER_PRESET["epochs"]:

            def scale(epoch: int) -> int:
                return min(max(1, round(epoch * epochs / PAPER_PRESET["epochs"])), epochs - 1)

            values["warmup"] = scale(PAPER_PRESET["warmup"])
            values["lr_milestones"] = tuple(scale(m) for m in PAPER_PRESET["lr_milestones"])
        values.update(given)
        return cls(preset=preset, **values)

    def resolve(self, model_name: str, *, n_samples: int | None = None) -> AuditConfig:
        """A copy with the defaults that depend on the run filled in (README "How it works").

        - ``batch_size``: 128 (the paper's), smaller when the ``n_samples`` images would give
          the audit fewer than :data:`MIN_STEPS` optimizer steps in its epochs
          (:func:`default_batch_size`); 128 for a frozen audit (not measured there).
        - ``schedule``: ``once`` (train on every sample, one clustering of the whole history
          at the end) unless ``--preset paper``, an explicit ``--warmup`` or a frozen-feature
          audit (not measured there). On CIFAR-10N human noise the paper's loop
          (training on T only after warmup) did not beat one clustering of a plain run:
          samples outside T get no signal and the hard clean ones never come back.
        - ``mixup``: 1 with ``once`` (measured: +4 points test accuracy on "worst" and no
          memorisation of the wrong labels in 40 epochs), 0 with the paper's loop, except
          for a frozen-feature audit: 1, the heads blend embeddings (measured: 40% pair noise
          on natural photos, 98.1-98.7% -> 98.8-98.9% of the clean-probe ceiling). It does not
          change the frozen warmup, guard or relabeling: the heads are cross-fitted because
          they fit the labels they train on, blended or not.
        - ``lr``: the model's recipe (``models.RECIPES``), else 0.02.
        - ``warmup`` (paper loop only): late (3/4) for a network that does not memorise
          in the budget (the small CPU network, or any with mixup: trained 40 epochs it fitted
          the right labels, not the wrong ones), early (1/4, like the paper's 80 of 350) else.
        - ``guard``: ``budget`` with ``once``: its report then flags exactly the labels the
          network disputes (:func:`~labelclean.fgcm.guard.report_slack`), where the forced
          5-way split also unlabels hard samples the network agrees with (CIFAR-10N aggre:
          detection F1 .39 -> .54; sym-20 .58 -> .76; cleaned accuracy unchanged). Not
          ``confident``: on human noise the "unsure disagreements" it keeps were mostly
          wrong labels. Paper loop: ``confident`` for a network that does not memorise,
          whose disagreement overstates the noise, ``budget`` otherwise.
        - ``relabel``: NS gets its pseudo label only for a network that memorises (the
          others' guesses were 30-75% right on CIFAR-10): it returns the cleanest labels.
        - ``semi_epochs``: 5 with ``once`` (:mod:`labelclean.fgcm.semi`: the unlabeled rows'
          guesses from a network semi-trained on the cleaned labels; CIFAR-10N "worst"
          cleaned labels .745 -> .766, .778 with the weighed guess), 0 with the paper's
          loop and for a frozen audit, which trains no network.
        """
        from labelclean.models import RECIPES

        values: dict[str, Any] = {}
        # Measured on from-scratch image training; frozen-feature audits keep the paper's loop.
        loop = self.preset == "paper" or self.warmup is not None or self.frozen
        schedule = self.schedule or ("paper" if loop else "once")
        mixup = self.mixup
        if mixup is None:
            mixup = 1.0 if schedule == "once" or self.frozen else 0.0
        values.update(schedule=schedule, mixup=mixup)
        if self.lr is None:
            values["lr"] = float(RECIPES.get(model_name, {}).get("lr", 0.02))
        # Frozen heads on blended embeddings still fit what they train on (hence cross-fitting).
        underfits = _underfits(model_name, 0.0 if self.frozen else mixup)
        if self.warmup is None and schedule == "paper":
            share = 0.75 if underfits else 0.25
            values["warmup"] = min(int(self.epochs * share), self.epochs - 1)
        if self.guard is None:
            values["guard"] = "confident" if underfits and schedule == "paper" else "budget"
        if self.relabel is None:
            values["relabel"] = not underfits
        if self.semi_epochs is None:
            values["semi_epochs"] = 5 if schedule == "once" and not self.frozen else 0
        if self.batch_size is None:
            values["batch_size"] = (
                default_batch_size(n_samples, self.epochs)
                if n_samples is not None and not self.frozen
                else DEFAULT_BATCH_SIZE
            )
        return dataclasses.replace(self, **values)

    def recordings_memorise(self, model_name: str) -> bool:
        """Whether the model that records a sample may have fitted that sample's own label.

        Then agreeing with a label is weak evidence that it is right. Not so for one head per
        fold on frozen features (each records only samples it never trained on), nor for a
        network trained with mixup or the small CPU network (40 epochs on human noise fitted
        the right labels, not the wrong ones; README "How it works").
        """
        if self.frozen:
            return int(self.extra.get("folds", 1)) <= 1
        return not _underfits(model_name, self.mixup or 0.0)

    @property
    def frozen(self) -> bool:
        """An audit of frozen-backbone embeddings (``--frozen``), not of the images."""
        return self.extra.get("mode") == "frozen"

    @property
    def clusters_from(self) -> int:
        """First epoch that clusters and trains on T (``epochs`` for ``--schedule once``)."""
        return self.epochs if self.schedule == "once" else int(self.warmup or 0)

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
    #: --init: start from the network the audit trained (``audit``) or a fresh one
    #: (``scratch``); None = the audit's when its report has one that fits
    #: (:func:`labelclean.audit_network.finetune_start`)
    init: str | None = None
    epochs: int = 30  #: --epochs: each as many labeled draws as there are images
    lr: float = 0.02  #: --lr: base SGD learning rate (cosine schedule)
    momentum: float = 0.9  #: SGD momentum
    weight_decay: float = 5e-4  #: --weight-decay
    batch_size: int = 64  #: --batch-size: B, labeled samples per step
    #: --mu: unlabeled samples per labeled one in a mixed batch (paper: 7), at most the
    #: unlabeled set's share (:func:`labelclean.fgcm.finetune.unlabeled_draws`)
    mu: int = 7
    tau: float = 0.95  #: --tau: confidence a pseudo label needs to count (paper: 0.95)
    lambda_m: float = 1.0  #: --lambda-m: weight of the mixed-batch loss (paper: 1)
    #: --mixup: Beta(a, a) input mixup on the labeled batch (L_x), 0 = off; None = the
    #: default of :meth:`labeled_mixup`
    mixup: float | None = None
    seed: int = 0  #: --seed
    device: str = "auto"  #: --device
    amp: bool = True  #: --amp/--no-amp
    eval_every: int = 1  #: --eval-every: test-set evaluation period in epochs

    def __post_init__(self) -> None:
        _weights_as_text(self)
        check_fields(self)
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be at least 1")
        _check_training_numbers(self)
        if self.init is not None:
            _check_choice(self.init, FINETUNE_INITS, "--init")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.mu < 0:
            raise ConfigError(f"--mu {self.mu}: must be 0 or more")
        _check_number(self.tau, "--tau", high=1.0)
        _check_number(self.lambda_m, "--lambda-m")
        if self.mixup is not None:
            _check_number(self.mixup, "--mixup", high=100.0)
        if self.eval_every < 1:
            raise ConfigError(f"--eval-every {self.eval_every}: must be at least 1")

    @classmethod
    def from_options(cls, **options: Any) -> FinetuneConfig:
        """The config of the options given as keywords; a name that is no field is refused."""
        _known_fields(cls, options)
        return cls(**options)

    def labeled_mixup(self, *, frozen: bool) -> float:
        """``--mixup``, or by default 1 for a head on frozen embeddings and 0 for a network.

        Measured (README "How it works"): blending the labeled batch lifted a frozen head at
        40% pair noise (.977 -> .981, every fold) and cost a network trained from scratch for
        30 epochs on CIFAR-10N "worst" 2 points (.716 -> .696).
        """
        if self.mixup is not None:
            return self.mixup
        return 1.0 if frozen else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def _check_training_numbers(config: AuditConfig | FinetuneConfig) -> None:
    """The SGD settings both configs share: finite, and where SGD can work at all.

    The learning rate has no upper limit here: how large is too large depends on the
    network; a run that diverges stops at the epoch with an error (labelclean.fgcm.health).
    Momentum 1 or more never converges; negative weight decay grows the weights.
    """
    if config.lr is not None:  # None: the model's recipe, resolved later
        _check_number(config.lr, "--lr", low_open=True)
    _check_number(config.momentum, "--momentum", high=1.0, high_open=True)
    _check_number(config.weight_decay, "--weight-decay")
