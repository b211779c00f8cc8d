"""FixMatch-style strong augmentation, batched on the device (paper 3.3, after Sohn et al.).

Each image gets ``n_ops`` operations drawn from a RandAugment-like list, each with a random
magnitude, then a cutout square. Every operation runs on the whole sub-batch that drew it
with tensor ops (colour maths, one ``affine_grid``/``grid_sample`` for geometry), so a GPU
is never starved by per-image PIL work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = (
    "identity", "autocontrast", "brightness", "color", "contrast", "sharpness",
    "posterize", "solarize", "rotate", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``b + factor * (a - b)`` per sample, clamped: factor 1 = a, 0 = b."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp(0, 1)


def _geometry(x: torch.Tensor, op: str, mag: torch.Tensor) -> torch.Tensor:
    """``mag`` in [-1, 1]: its sign is the direction."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    m = mag.to(x.dtype)
    if op == "rotate":
        angle = m * math.radians(30)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    elif op == "shear_x":
        theta[:, 0, 1] = m * 0.3
    elif op == "shear_y":
        theta[:, 1, 0] = m * 0.3
    elif op == "translate_x":
        theta[:, 0, 2] = m * 0.6  # up to 30% of the width (grid units span 2)
    elif op == "translate_y":
        theta[:, 1, 2] = m * 0.6
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def _apply(x: torch.Tensor, op: str, mag: torch.Tensor) -> torch.Tensor:
    """One operation on a float batch in [0, 1]; ``mag`` in [-1, 1] per sample."""
    if op in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        return _geometry(x, op, mag)
    mag = mag.abs()
    if op == "identity":
        return x
    if op == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return ((x - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)
    factor = 1 + (mag * 1.8 - 0.9)  # 0.1 .. 1.9 as in RandAugment
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), factor)
    if op == "color":
        return _blend(x, _gray(x), factor)
    if op == "contrast":
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean.expand_as(x), factor)
    if op == "sharpness":
        kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype)
        kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        return _blend(x, blurred, factor)
    if op == "posterize":
        bits = (8 - (mag * 4).round()).view(-1, 1, 1, 1)  # keep 4..8 bits
        step = 2 ** (8 - bits)
        return (torch.floor(x * 255 / step) * step / 255).clamp(0, 1)
    if op == "solarize":
        threshold = (1 - mag).view(-1, 1, 1, 1)
        return torch.where(x >= threshold, 1 - x, x)
    raise ValueError(f"unknown operation {op!r}")


def cutout(
    x: torch.Tensor, *, fraction: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Grey out one random square (side ``fraction`` * S at most) per image."""
    n, _, h, w = x.shape
    side = (torch.rand(n, generator=generator) * fraction * min(h, w)).long().clamp_min(1)
    cy = (torch.rand(n, generator=generator) * h).long()
    cx = (torch.rand(n, generator=generator) * w).long()
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    half = (side // 2).view(n, 1, 1)
    box = ((ys - cy.view(n, 1, 1)).abs() <= half) & ((xs - cx.view(n, 1, 1)).abs() <= half)
    return torch.where(box.unsqueeze(1).to(x.device), torch.full_like(x, 0.5), x)


def strong_augment(
    images: torch.Tensor, *, n_ops: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """RandAugment-style ``n_ops`` random operations + cutout on a uint8 batch ``[B, C, S, S]``.

    Returns a uint8 batch of the same shape on the same device.
    """
    x = images.float() / 255
    n = x.shape[0]
    for _ in range(n_ops):
        choice = torch.randint(0, len(OPS), (n,), generator=generator)
        mags = (torch.rand(n, generator=generator) * 2 - 1).to(x.device)  # sign = direction
        for k, op in enumerate(OPS):
            rows = (choice == k).nonzero().flatten().to(x.device)
            if len(rows):
                x[rows] = _apply(x[rows], op, mags[rows])
    x = cutout(x, generator=generator)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)
