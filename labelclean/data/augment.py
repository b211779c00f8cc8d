"""Batched augmentation on the training device, straight from the uint8 image cache.

No per-sample PIL work per epoch: a batch of uint8 images ``[B, 3, S, S]`` is moved to the
device once and cropped/flipped there with tensor indexing, then normalised to float.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 ``[B, 3, S, S]`` -> float32, scaled to [0, 1] then standardised per channel."""
    x = images.float().div_(255.0)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    x = x.sub_(m).div_(s)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_crop_flip(
    images: torch.Tensor,
    *,
    padding: int,
    flip: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's weak augmentation: random crop after zero padding, random horizontal flip.

    Args:
        images: ``[B, C, S, S]`` on any device (uint8 or float).
        padding: Pixels of zero padding on each side before cropping back to S.
        flip: Flip each image horizontally with probability 1/2.
        generator: A CPU generator for reproducible offsets.

    Returns:
        ``[B, C, S, S]``, same dtype and device.
    """
    b, _, h, w = images.shape
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(images.device)
        rows = off[0].view(b, 1) + torch.arange(h, device=images.device).view(1, h)  # [B, S]
        cols = off[1].view(b, 1) + torch.arange(w, device=images.device).view(1, w)  # [B, S]
        batch = torch.arange(b, device=images.device).view(b, 1, 1)
        # Advanced indexing on dims (0, 2, 3) puts the channel dim last: [B, S, S, C].
        out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]
        out = out.permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(images.device).view(b, 1, 1, 1)
        out = torch.where(mask, out.flip(-1), out)
    return out.contiguous()
