"""Image files: writing PNGs and reading image files back as model inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nodeguard.errors import NodeguardError
from nodeguard.storage.files import atomic_write


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) tensor with 1 or 3 channels as a PNG, atomically."""
    if image.dtype != torch.uint8:
        raise ValueError("save_png takes uint8 images")
    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def read_image(path: Path, channels: int) -> torch.Tensor:
    """Read an image file as a float (C, H, W) tensor in [0, 1] with ``channels`` channels.

    Args:
        path: any image file PIL reads (PNG, JPEG, BMP, TIFF, WebP, ...).
        channels: 1 (converted to grayscale "L") or anything else (converted to "RGB", 3 channels).

    Returns:
        (C, H, W) float32 in [0, 1] (8-bit levels / 255), at the file's own size.

    Raises:
        OSError: the file is missing or not a readable image (PIL's ``UnidentifiedImageError``
            included); no nodeguard error is raised here.
    """
    with Image.open(path) as picture:
        picture.load()
        converted = picture.convert("L" if channels == 1 else "RGB")
    array = np.asarray(converted, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_images(paths: list[Path]) -> list[Path]:
    """Image files among ``paths`` (files as given, folders searched recursively), sorted.

    A missing path, or no image file at all, is an error.
    """
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise NodeguardError(f"{path} does not exist")
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    if not found:
        raise NodeguardError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(str(p) for p in paths)}")
    return found


def load_image_files(
    paths: list[Path], channels: int, height: int, width: int, resize: bool = False
) -> tuple[list[Path], torch.Tensor, list[tuple[Path, str]]]:
    """(readable paths, their images (N, C, H, W) in [0, 1], [(path, reason)] for the rest)."""
    good: list[Path] = []
    images: list[torch.Tensor] = []
    errors: list[tuple[Path, str]] = []
    for path in paths:
        try:
            image = read_image(path, channels)
        except Exception as exc:  # PIL raises many kinds for bad files
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            errors.append((path, f"cannot read image: {reason}"))
            continue
        if tuple(image.shape[1:]) != (height, width):
            if not resize:
                errors.append(
                    (
                        path,
                        f"size {image.shape[2]}x{image.shape[1]} differs from the model's {width}x{height} "
                        "(set `resize` to resize)",
                    )
                )
                continue
            image = torch.nn.functional.interpolate(
                image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
            )[0].clamp(0, 1)
        good.append(path)
        images.append(image)
    stacked = torch.stack(images) if images else torch.empty(0, channels, height, width)
    return good, stacked, errors
