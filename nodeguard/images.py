"""Image files: writing PNGs and reading image files back as model inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .registry import atomic_write


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) tensor with 1 or 3 channels as a PNG, atomically."""
    if image.dtype != torch.uint8:
        raise ValueError("save_png takes uint8 images")
    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def read_image(path: Path, channels: int) -> torch.Tensor:
    """Read an image file as a float (C, H, W) tensor in [0, 1] with ``channels`` channels."""
    with Image.open(path) as picture:
        picture.load()
        converted = picture.convert("L" if channels == 1 else "RGB")
    array = np.asarray(converted, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
