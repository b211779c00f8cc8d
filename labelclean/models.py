"""Model factory and weight loading.

``create_model`` builds any timm model by name plus three built-ins for small images: the
paper's PreAct ResNet-18 (section 4.1.2, CIFAR stem), ``air_cnn``, the default on CPUs (an
airbench-like network with a whitened stem), and ``small_cnn``, the previous CPU default.
``load_weights`` reads a local state dict (safetensors, or a torch file with
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

BUILTIN_MODELS = ("air_cnn", "small_cnn", "preact_resnet18")
_PREFIXES = ("module.", "model.", "_orig_mod.")
#: Settings measured for a built-in (the audit's defaults when not given): LR, nesterov
#: momentum, and channels_last in fp32 on CPUs (1.5x for these convs on 2 AVX2 cores).
RECIPES: dict[str, dict[str, float | bool]] = {
    "air_cnn": {"lr": 0.1, "nesterov": True, "channels_last": True}
}


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


class _AirGroup(nn.Module):
    """conv -> max pool -> BN -> GELU -> conv -> BN -> GELU (airbench's block)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(self.pool(self.conv1(x))))
        return F.gelu(self.bn2(self.conv2(x)))


class AirCNN(nn.Module):
    """The default CPU network: airbench-like (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds").

    A 2x2 patch stem whose filters are fitted to whiten the training patches
    (:meth:`fit_whitening`, called once before training), then three groups of
    conv-pool-BN-GELU-conv-BN-GELU and a max-pooled, scaled linear head. On 5,000 CIFAR-10N
    "worst" images it trained 2.4x faster per image than ``small_cnn`` at equal or better
    accuracy (the small CNN's 64-channel conv at full resolution is what costs).

    Where it departs from airbench, and why:

    - Widths 32/64/128 instead of 64/256/256: the wider net ran 4x slower on two CPU cores
      and, trained with cross-entropy on noisy labels, memorised them sooner (fits the given
      labels better than the truth by 40 epochs); 48/96/192 was no better at .5x the speed.
    - The project's SGD and cosine schedule with nesterov momentum at LR 0.1 (``RECIPES``;
      .05 to .2 gave the same accuracy), no lookahead, no per-layer learning rates, and the
      stem is trained after its init: one optimizer for every model keeps checkpoints and
      finetune simple.
    - Adaptive max pooling at the end (airbench pools a fixed 3x3), so 16-64 px inputs work.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (32, 64, 128),
        stem: int = 24,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, stem, 2, bias=True)
        groups: list[nn.Module] = []
        in_ch = stem
        for width in widths:
            groups.append(_AirGroup(in_ch, width))
            in_ch = width
        self.groups = nn.Sequential(*groups)
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes, bias=False)
        self.scale = 1 / 9  # airbench's logit scale: soft outputs early in training

    @torch.no_grad()
    def fit_whitening(self, images: torch.Tensor, *, eps: float = 5e-4) -> None:
        """Set the stem to whiten 2x2 patches of ``images`` (normalised, ``[B, C, H, W]``).

        The first half of the filters are the patch covariance's top eigenvectors scaled by
        1/sqrt(eigenvalue), the second half their negatives (GELU passes both signs).
        """
        weight = self.stem.weight
        half = weight.shape[0] // 2
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # B, C, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, weight[0].numel())
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / max(len(patches) - 1, 1)
        evals, evecs = torch.linalg.eigh(cov.double())
        order = evals.argsort(descending=True)[:half]
        filters = (evecs[:, order].T / torch.sqrt(evals[order, None].clamp_min(0) + eps)).float()
        filters = filters.reshape(half, *weight.shape[1:]).to(weight.dtype)
        weight[:half] = filters
        weight[half : 2 * half] = -filters
        if self.stem.bias is not None:  # built with a bias; the check is for the type checker
            self.stem.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, 128]``."""
        x = self.groups(F.gelu(self.stem(x)))
        return F.adaptive_max_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``."""
        return self.fc(self.forward_features(x)) * self.scale


def fit_data_init(model: nn.Module, images: torch.Tensor) -> bool:
    """Give a model its data-dependent init (the whitening stem) from a training batch.

    Returns whether the model has one; call it only for from-scratch weights.
    """
    fit = getattr(model, "fit_whitening", None)
    if fit is None:
        return False
    fit(images)
    return True


def default_model_name(image_size: int, device: torch.device) -> str:
    """Pick a sensible model: small images get a CIFAR-style net, larger ones timm's ResNet-18.

    On a CPU the fast ``air_cnn`` (``small_cnn`` below 16 px); on an accelerator the paper's
    PreAct ResNet-18.
    """
    if image_size <= 64:
        if device.type != "cpu":
            return "preact_resnet18"
        return "air_cnn" if image_size >= 16 else "small_cnn"  # air_cnn pools 16 px to 1
    return "resnet18"


def check_model_name(name: str) -> None:
    """Refuse a ``--model`` that is neither a built-in nor a timm model, naming close names.

    Called at the edge, before any image is decoded, so a typo costs a second rather than
    the decoding of a whole dataset; :func:`create_model` checks the same way.
    """
    if name in BUILTIN_MODELS:
        return
    import difflib

    import timm

    if timm.is_model(name):
        return
    known = [*BUILTIN_MODELS, *timm.list_models()]
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"--model {name!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a timm "
        f"model; {hint}list timm's with "
        "`python -c \"import timm; print(timm.list_models('*resnet*'))\"`"
    )


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
        name: ``air_cnn``, ``small_cnn``, ``preact_resnet18`` or any timm model name.
        num_classes: Number of output classes C.
        pretrained: Ask timm to download pretrained weights (timm models only).
        weights: A local state dict to load (see :func:`load_weights`).
        in_chans: Input channels.

    Example:
        >>> model = create_model("small_cnn", 10)
    """
    if name == "air_cnn":
        model: nn.Module = AirCNN(num_classes, in_chans)
    elif name == "small_cnn":
        model = SmallCNN(num_classes, in_chans)
    elif name == "preact_resnet18":
        model = PreActResNet18(num_classes, in_chans)
    else:
        import timm

        check_model_name(name)
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
