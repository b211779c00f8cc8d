"""Model factory and weight loading.

``create_model`` builds any timm model by name plus two built-ins for small images: the
paper's PreAct ResNet-18 (section 4.1.2, CIFAR stem) and ``small_cnn``, a fast network for
CPUs. ``load_weights`` reads a local state dict (safetensors, or a torch file with
``weights_only=True``: never a pickle that can run code) and maps it onto the model by
exact keys, then by stripping common wrapper prefixes, then by position when every shape
matches in order; a classifier head whose shape differs is skipped (new class count).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labelclean.errors import ConfigError

logger = logging.getLogger(__name__)

BUILTIN_MODELS = ("small_cnn", "preact_resnet18")
_PREFIXES = ("module.", "model.", "_orig_mod.")


class _PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings in Deep Residual Nets")."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """The paper's backbone for CIFAR (section 4.1.2): 3x3 stem, four stages of two blocks."""

    def __init__(self, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_PreActBlock(in_planes, planes, stride), _PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.num_features = 512
        self.fc = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, 512]``."""
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``."""
        return self.fc(self.forward_features(x))


def _conv_bn(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()
    )


class SmallCNN(nn.Module):
    """A fast CIFAR-style CNN for CPUs: four conv-BN-ReLU stages with pooling, ~0.15M weights.

    Trains at ~1,600 images/s at 32 px on two CPU cores (bf16, channels_last), so a 10k-image
    audit fits in minutes; works for inputs from 8 to 64 pixels (adaptive pooling at the end).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_chans, w),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 4 * w
        self.fc = nn.Linear(4 * w, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, 4 * width]``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``."""
        return self.fc(self.features(x))


def default_model_name(image_size: int, device: torch.device) -> str:
    """Pick a sensible model: small images get a CIFAR-style net, larger ones timm's ResNet-18.

    On a CPU the fast ``small_cnn``; on an accelerator the paper's PreAct ResNet-18.
    """
    if image_size <= 64:
        return "small_cnn" if device.type == "cpu" else "preact_resnet18"
    return "resnet18"


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    in_chans: int = 3,
) -> nn.Module:
    """Build a classifier with ``num_classes`` outputs.

    Args:
        name: ``small_cnn``, ``preact_resnet18`` or any timm model name.
        num_classes: Number of output classes C.
        pretrained: Ask timm to download pretrained weights (timm models only).
        weights: A local state dict to load (see :func:`load_weights`).
        in_chans: Input channels.

    Example:
        >>> model = create_model("small_cnn", 10)
    """
    if name == "small_cnn":
        model: nn.Module = SmallCNN(num_classes, in_chans)
    elif name == "preact_resnet18":
        model = PreActResNet18(num_classes, in_chans)
    else:
        import timm

        if not timm.is_model(name):
            raise ConfigError(
                f"--model {name!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a timm "
                'model; list timm\'s with `python -c "import timm; print(timm.list_models())"`'
            )
        try:
            model = timm.create_model(
                name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans
            )
        except (OSError, RuntimeError) as err:  # no network, missing hub files
            raise ConfigError(f"--model {name} --pretrained: could not get weights: {err}") from err
    if pretrained and name in BUILTIN_MODELS:
        raise ConfigError(f"--pretrained: the built-in {name} has no pretrained weights")
    if weights is not None:
        load_weights(model, weights)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from safetensors or a torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Mapping[str, object] = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False: labelclean never does that (it runs code)
        if "global" not in str(err).lower():
            raise ConfigError(
                f"--weights {path}: not a safetensors or weights-only torch file (it does not "
                "unpickle as tensors, and labelclean never unpickles anything else)"
            ) from None
        raise ConfigError(
            f"--weights {path}: holds pickled Python objects besides tensors, and labelclean "
            "never unpickles (that can run code); save the state dict alone "
            "(torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from None
    except Exception as err:  # noqa: BLE001 - any decode failure is the file's fault
        raise ConfigError(
            f"--weights {path}: cannot read it as safetensors or a weights-only torch file ({err})"
        ) from err
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping):
            state = inner
            break
    if not isinstance(state, Mapping):
        raise ConfigError(f"--weights {path}: expected a state dict, found {type(state).__name__}")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def map_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Map ``source`` tensors onto ``target``'s keys.

    Tries, in order: exact keys; keys with ``module.``/``model.``/``_orig_mod.`` stripped;
    positional (same tensor count, every shape equal in order). Tensors whose shape differs
    from the target (a classifier head for another class count) are skipped by name.

    Returns:
        (mapped state, the mapping used, the skipped target keys).
    """
    for mapping, renamed in (
        ("exact keys", dict(source)),
        ("prefix-stripped keys", {_strip_prefixes(k): v for k, v in source.items()}),
    ):
        common = set(renamed) & set(target)
        missing = [k for k in target if k not in renamed]
        if common and not missing or len(common) >= 0.9 * len(target):
            mapped = {k: v for k, v in renamed.items() if k in target}
            skipped = [k for k in mapped if mapped[k].shape != target[k].shape]
            if len(skipped) <= 2:  # at most a classifier weight and bias
                for k in skipped:
                    del mapped[k]
                return mapped, mapping, sorted(skipped + missing)
    src, tgt = list(source.items()), list(target.items())
    if len(src) == len(tgt) and all(s.shape == t.shape for (_, s), (_, t) in zip(src, tgt)):
        return {tk: sv for (tk, _), (_, sv) in zip(tgt, src)}, "positional", []
    # A classifier-less target (a frozen backbone): the source's trailing head is dropped.
    if len(src) == len(tgt) + 2 and all(s.shape == t.shape for (_, s), (_, t) in zip(src, tgt)):
        return {tk: sv for (tk, _), (_, sv) in zip(tgt, src)}, "positional (head dropped)", []
    # Positional with a different head: all but the last two (weight, bias) match in order.
    if len(src) == len(tgt) and all(
        s.shape == t.shape for (_, s), (_, t) in zip(src[:-2], tgt[:-2])
    ):
        mapped = {tk: sv for (tk, _), (_, sv) in zip(tgt[:-2], src[:-2])}
        return mapped, "positional (classifier head skipped)", [k for k, _ in tgt[-2:]]
    raise ConfigError(
        f"--weights: the file's {len(source)} tensors match neither the model's "
        f"{len(target)} keys (exactly or after stripping {', '.join(_PREFIXES)}) nor its shapes "
        "in order; is it a checkpoint for this --model?"
    )


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Load a local state dict into ``model`` and return the mapping that was used."""
    source = read_state_dict(path)
    target = model.state_dict()
    mapped, mapping, skipped = map_state_dict(source, target)
    model.load_state_dict(mapped, strict=False)
    logger.info("--weights %s: loaded %d tensors by %s", path, len(mapped), mapping)
    if skipped:
        logger.info("--weights: kept the model's own init for %s", ", ".join(skipped[:6]))
    return mapping
