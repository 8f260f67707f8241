"""Training augmentations on batches of float images, driven by an explicit generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nodeguard.catalog import Catalog

AUGMENTATIONS: Catalog = Catalog("augmentation")


@AUGMENTATIONS.register("digits")
def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_shift: float = 2.0,
    max_degrees: float = 10.0,
    max_scale: float = 0.1,
) -> torch.Tensor:
    """Random shift (pixels), rotation (degrees) and scale per image, zero padding."""
    n, _, height, width = images.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-max_degrees, max_degrees) * math.pi / 180
    scale = uniform(1 - max_scale, 1 + max_scale)
    shift_x = uniform(-max_shift, max_shift) * 2 / width
    shift_y = uniform(-max_shift, max_shift) * 2 / height
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


@AUGMENTATIONS.register("natural")
def random_crop_flip_jitter(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, jitter: float = 0.2
) -> torch.Tensor:
    """CIFAR-style: random crop after zero padding, horizontal flip, brightness/contrast jitter."""
    n, _, height, width = images.shape
    padded = F.pad(images, [padding] * 4)
    offsets_y = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    offsets_x = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    crops = torch.stack(
        [padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(zip(offsets_y, offsets_x, strict=True))]
    )
    flip = torch.rand(n, generator=generator) < 0.5
    crops[flip] = crops[flip].flip(-1)
    brightness = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    return ((crops - mean) * contrast + mean * brightness).clamp(0, 1)


def augment(kind: str, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply the augmentation registered for a data set kind (``digits`` or ``natural``)."""
    return AUGMENTATIONS.get(kind)(images, generator)
