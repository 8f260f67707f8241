"""Image files: writing PNGs, and reading any image file exactly as a viewer shows it, or refusing it.

The rule for reading (:func:`read_image_frames`), one for every mode Pillow decodes:

- **orientation**: the EXIF orientation tag is applied as viewers apply it
  (``PIL.ImageOps.exif_transpose``);
- **integer images by their bit depth**: ``1`` (bilevel) as 0 or 1; 8-bit modes (``L``,
  ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ...) as level / 255; 16-bit ``I;16*`` as level /
  65535; 32-bit ``I`` by the bit depth the file declares (TIFF ``BitsPerSample``, else 16
  as PNG stores it) as level / (2^bits - 1), refused when a value lies outside that depth;
- **float images** (``F``) as they are when every value lies in [0, 1] (no rounding to 8
  bits), refused with the range found otherwise (a float image has no scale to divide by);
- **transparency**: an image whose alpha (or palette transparency) is opaque everywhere
  is read without it; one with any transparent pixel is refused, because what lies behind
  it is the viewer's choice, not the file's (flatten it onto the background you mean);
- **channels**: a colour image for a one-channel model is converted to luma by Pillow
  (ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B); a one-channel image for a colour model
  is repeated over the three channels;
- **frames**: a file with several frames or pages (GIF, TIFF, WebP, ...) gives one image
  per frame, named ``path#N`` (N from 0); none is judged by its first frame alone.

Folders are scanned by content: every file Pillow can identify is read, whatever its
name; the others are listed as skipped, with the reason (:func:`find_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from nodeguard.errors import ImageReadError
from nodeguard.storage.files import atomic_write, display_path

# modes whose values are 8-bit levels, read through Pillow's own conversions
EIGHT_BIT_MODES = ("L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV", "1")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
TIFF_BITS_PER_SAMPLE = 258
TIFF_SAMPLE_FORMAT = 339  # 1 unsigned integer, 2 signed integer, 3 float
# formats Pillow identifies but cannot decode here (stubs, or needing an outside program)
UNDECODABLE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS")


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) tensor with 1 or 3 channels as a PNG, atomically."""
    if image.dtype != torch.uint8:
        raise ValueError("save_png takes uint8 images")
    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


def _refuse_transparent(count: int, total: int) -> ImageReadError:
    return ImageReadError(f"has {count} transparent pixel(s) of {total}; flatten it onto the background you mean first")


def _opaque(picture: Image.Image) -> Image.Image:
    """``picture`` without its transparency, which must be opaque everywhere."""
    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    elif "transparency" in picture.info and picture.mode not in ALPHA_MODES:
        # a colour key (PNG tRNS): pixels of exactly that value are shown transparent
        key = picture.info["transparency"]
        values = np.asarray(picture)
        keyed = (values == np.asarray(key)).all(axis=-1) if values.ndim == 3 else values == key
        if keyed.any():
            raise _refuse_transparent(int(keyed.sum()), keyed.size)
        return picture
    if picture.mode in ALPHA_MODES:
        alpha = np.asarray(picture.getchannel("A"))
        if alpha.min() < 255:
            raise _refuse_transparent(int((alpha < 255).sum()), alpha.size)
        picture = picture.convert("RGB" if picture.mode.startswith(("RGB", "P")) else "L")
    return picture


def _declared_bits(picture: Image.Image) -> int:
    tags = getattr(picture, "tag_v2", None)
    bits = tags.get(TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0]
    return int(bits) if bits else 16


def _check_depth(picture: Image.Image) -> None:
    """Refuse what Pillow would read at less than the file's precision, or with another sign."""
    tile = getattr(picture, "tile", None) or []
    args = tile[0][3] if tile else ""
    rawmode = str(args[0] if isinstance(args, tuple) and args else args or "")
    if picture.mode not in SIXTEEN_BIT_MODES and picture.mode != "I" and ";16" in rawmode:
        raise ImageReadError(
            f"16-bit colour image (stored as {rawmode}): Pillow decodes it to 8 bits; save it as 16-bit "
            "greyscale, float, or 8-bit colour"
        )
    tags = getattr(picture, "tag_v2", None)
    sample_format = tags.get(TIFF_SAMPLE_FORMAT) if tags is not None else None
    if isinstance(sample_format, tuple):
        sample_format = sample_format[0]
    if sample_format == 2:
        raise ImageReadError("signed integer image: nodeguard reads unsigned levels (or floats in [0, 1])")


def _frame_values(picture: Image.Image, channels: int, bits: int) -> np.ndarray:
    """One frame as a float32 (H, W, C) array in [0, 1] (the module's rule)."""
    picture = _opaque(picture)
    mode = picture.mode
    if mode in EIGHT_BIT_MODES:
        converted = picture.convert("L" if channels == 1 else "RGB")
        values = np.asarray(converted, dtype=np.float32) / 255.0
    elif mode in SIXTEEN_BIT_MODES:
        values = np.asarray(picture).astype(np.float32) / 65535.0
    elif mode == "I":
        levels = np.asarray(picture).astype(np.int64)
        top = 2**bits - 1
        if levels.min() < 0 or levels.max() > top:
            raise ImageReadError(
                f"32-bit integer image with values in [{levels.min()}, {levels.max()}], outside its "
                f"declared {bits}-bit depth [0, {top}]"
            )
        values = levels.astype(np.float64) / top
    elif mode == "F":
        values = np.asarray(picture).astype(np.float32)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if not np.isfinite(values).all() or low < 0 or high > 1:
            raise ImageReadError(
                f"float image with values in [{low:g}, {high:g}]; nodeguard reads float images in [0, 1] as they are"
            )
    else:
        raise ImageReadError(f"image mode {mode!r} has no stated mapping to [0, 1]")
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.shape[2] == 1 and channels != 1:
        values = np.repeat(values, 3, axis=2)
    return values


@dataclass(frozen=True)
class ImageFrame:
    """One image read from a file: its name (``path`` or ``path#N``) and its (C, H, W) values."""

    name: str
    path: Path
    frame: int | None
    image: torch.Tensor


def read_image_frames(path: Path, channels: int) -> list[ImageFrame]:
    """Every frame of an image file as (C, H, W) float32 in [0, 1], read by the module's rule.

    Args:
        path: an image file of any format Pillow decodes.
        channels: the model's channels: 1 (luma) or 3 (RGB).

    Returns:
        One ``ImageFrame`` per frame (one for a still image, named by the path alone).

    Raises:
        ImageReadError: the file is refused (transparency, values outside the stated
            range, an unmapped mode) or cannot be decoded; the message says why.
        OSError: the file cannot be opened at all.
    """
    frames: list[ImageFrame] = []
    try:
        with Image.open(path) as picture:
            if picture.format in UNDECODABLE_FORMATS:
                raise ImageReadError(f"Pillow identifies it as {picture.format} but cannot decode it here")
            count = int(getattr(picture, "n_frames", 1) or 1)
            bits = _declared_bits(picture)  # read before a transposed copy drops the file's tags
            for index in range(count):
                picture.seek(index)
                _check_depth(picture)
                shown = ImageOps.exif_transpose(picture) or picture
                shown.load()
                values = _frame_values(shown, channels, bits)
                image = torch.from_numpy(values.copy()).permute(2, 0, 1).contiguous()
                name = display_path(path) if count == 1 else f"{display_path(path)}#{index}"
                frames.append(ImageFrame(name, Path(path), None if count == 1 else index, image))
    except (ImageReadError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # Pillow raises many kinds for files it cannot decode
        raise ImageReadError(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__) from None
    return frames


def read_image(path: Path, channels: int) -> torch.Tensor:
    """The one image of a still image file as (C, H, W) float32 in [0, 1] (see :func:`read_image_frames`).

    Raises:
        ImageReadError: the file is refused or has several frames.
        OSError: the file cannot be opened.
    """
    frames = read_image_frames(path, channels)
    if len(frames) != 1:
        raise ImageReadError(f"has {len(frames)} frames; read them with read_image_frames")
    return frames[0].image


def looks_like_an_image(path: Path) -> bool:
    """The name is that of a format Pillow decodes (a broken ``cat.png`` is an unreadable image)."""
    Image.init()
    image_format = Image.registered_extensions().get(path.suffix.lower())
    return image_format in Image.OPEN and image_format not in UNDECODABLE_FORMATS


@dataclass
class FoundImages:
    """What a scan found: image files to read, and the files it skipped with the reason."""

    files: list[Path]
    skipped: list[tuple[Path, str]]


def find_images(paths: list[Path]) -> FoundImages:
    """Image files among ``paths``: files as given; folders scanned recursively by content.

    In a folder, every file Pillow identifies as an image it can decode is taken,
    whatever its name; any other file is skipped and listed with the reason, except one
    named as an image (``cat.png``), which is taken and reported unreadable by
    :func:`load_image_files`.

    Raises:
        ImageReadError: a path does not exist, or nothing readable was found.
    """
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            raise ImageReadError(f"{display_path(path)} does not exist")
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
            if _identifies(candidate) or looks_like_an_image(candidate):
                found.append(candidate)
            else:
                skipped.append((candidate, "not an image file Pillow can decode"))
    if not found:
        where = ", ".join(display_path(p) for p in paths)
        raise ImageReadError(f"no image files in {where} ({len(skipped)} other files skipped)")
    return FoundImages(found, skipped)


def _identifies(path: Path) -> bool:
    try:
        with Image.open(path) as picture:
            return picture.format not in UNDECODABLE_FORMATS
    except Exception:  # Pillow raises many kinds for files that are not images
        return False


def load_image_files(
    paths: list[Path], channels: int, height: int, width: int, resize: bool = False
) -> tuple[list[str], torch.Tensor, list[tuple[str, str]]]:
    """Read image files for a model.

    Args:
        paths: image files (see :func:`find_images`).
        channels, height, width: the model's input shape.
        resize: resize an image of another size (bilinear, antialiased); else refuse it.

    Returns:
        (names, images, errors): the name of every image read (``path`` or ``path#N``
        per frame), their (N, C, H, W) float32 values in [0, 1], and (name, reason) for
        every file or frame refused.
    """
    names: list[str] = []
    images: list[torch.Tensor] = []
    errors: list[tuple[str, str]] = []
    for path in paths:
        try:
            frames = read_image_frames(path, channels)
        except (ImageReadError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            errors.append((display_path(path), f"cannot read image: {reason}"))
            continue
        for frame in frames:
            image = frame.image
            if tuple(image.shape[1:]) != (height, width):
                if not resize:
                    errors.append(
                        (
                            frame.name,
                            f"size {image.shape[2]}x{image.shape[1]} differs from the model's {width}x{height} "
                            "(set `resize` to resize)",
                        )
                    )
                    continue
                image = torch.nn.functional.interpolate(
                    image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
                )[0].clamp(0, 1)
            names.append(frame.name)
            images.append(image)
    stacked = torch.stack(images) if images else torch.empty(0, channels, height, width)
    return names, stacked, errors
