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
- **frames**: a file whose frames are pages or animation frames (GIF, APNG, TIFF pages,
  WebP, DCX, FLI, ...) gives one image per frame, named ``path#N`` (N from 0); none is
  judged by its first frame alone. Frames that are not pictures of their own are not read:
  the other entries of an MPO (the JPEG of phones and stereo cameras: previews, thumbnails,
  a second view, gain maps), a TIFF page marked as a reduced-resolution copy or a
  transparency mask of another page, the layers of a PSD. Such a file is the picture a
  viewer shows (the MPO's primary image, the PSD's composite), named ``path``;
- **size**: an image of more than :func:`pixel_limit` pixels (Pillow's own default,
  89,478,485, unless ``NODEGUARD_MAX_PIXELS`` says otherwise) is refused before it is
  decoded, naming its size: a small file can unpack to gigabytes (a decompression bomb).

Folders are walked as torchvision walks them (``os.walk(followlinks=True)``), with a
guard against loops (:func:`walk_folder`): symbolic links to files and folders are
followed, a link back to a folder it lies in is listed as skipped, a link to nothing is
reported unreadable; hidden entries (names starting with a dot: ``.DS_Store``, ``._*``
AppleDouble files, ``.ipynb_checkpoints``) are skipped and listed. Files are recognised by
content: every file Pillow can identify is read, whatever its name; the others are listed
as skipped, with the reason (:func:`find_images`). Every error on the way in (Pillow's or
the operating system's) becomes one reason naming the file.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nodeguard.errors import ConfigError, ImageReadError
from nodeguard.storage.files import atomic_write, display_path

# modes whose values are 8-bit levels, read through Pillow's own conversions
EIGHT_BIT_MODES = ("L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV", "1")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
TIFF_BITS_PER_SAMPLE = 258
TIFF_SAMPLE_FORMAT = 339  # 1 unsigned integer, 2 signed integer, 3 float
TIFF_NEW_SUBFILE_TYPE = 254  # bit 0: a reduced-resolution copy of another page; bit 2: a transparency mask
TIFF_NOT_A_PAGE = 0b101
EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that show the stored picture turned a quarter
# formats Pillow identifies but cannot decode here (stubs, or needing an outside program)
UNDECODABLE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS")
# formats whose extra frames are renditions or layers of one picture, not pictures of their own
ONE_PICTURE_FORMATS = ("MPO", "PSD")

PIXEL_LIMIT_VARIABLE = "NODEGUARD_MAX_PIXELS"
DEFAULT_PIXEL_LIMIT = 89_478_485  # Pillow's own Image.MAX_IMAGE_PIXELS (above it Pillow warns, above twice it refuses)

HIDDEN = "hidden (its name starts with a dot)"
NOT_AN_IMAGE = "not an image file Pillow can decode"


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) tensor with 1 or 3 channels as a PNG, atomically."""
    if image.dtype != torch.uint8:
        raise ValueError("save_png takes uint8 images")
    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))


# -- the reasons a file cannot be read ----------------------------------------------------------


def reason_of(exc: BaseException) -> str:
    """One line saying why reading failed: the operating system's words for an OSError that
    carries an error number (``Permission denied``, ``Input/output error``), else the first
    line of the message (Pillow's ``image file is truncated``), else the exception's name."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def pixel_limit() -> int:
    """The most pixels an image may have to be read (per frame): ``NODEGUARD_MAX_PIXELS``,
    else Pillow's own default, 89,478,485 (about 9459 x 9459).

    The limit guards against decompression bombs: a PNG of a few hundred kilobytes can
    declare 20000 x 20000 pixels, which decode to gigabytes. Raise it by setting
    ``NODEGUARD_MAX_PIXELS`` to a larger number of pixels.

    Raises:
        ConfigError: the variable is set but is not a whole number of at least 1.
    """
    text = os.environ.get(PIXEL_LIMIT_VARIABLE, "").strip().replace("_", "")
    if not text:
        return DEFAULT_PIXEL_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(
            f"{PIXEL_LIMIT_VARIABLE} must be a whole number of pixels of at least 1, got "
            f"{os.environ.get(PIXEL_LIMIT_VARIABLE)!r}"
        )
    return limit


_PILLOW_LIMIT = threading.RLock()


def _check_pixels(picture: Image.Image, limit: int) -> None:
    width, height = picture.size
    if width * height > limit:
        raise ImageReadError(
            f"declares {width}x{height} = {width * height:,} pixels, more than the limit of {limit:,} that guards "
            f"against decompression bombs; to read it, set {PIXEL_LIMIT_VARIABLE} to {width * height} or more"
        )


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """``PIL.Image.open(path)`` with nodeguard's pixel limit in place of Pillow's.

    The size the file declares is checked against :func:`pixel_limit` before any pixel is
    decoded (Pillow's own check, which warns below twice its limit and names no file, is
    off while the file is open); :func:`image_pages` checks every further frame it visits.

    Raises:
        ImageReadError: the image is larger than the limit.
        UnidentifiedImageError: Pillow does not recognise the file as an image.
        OSError: the file cannot be opened (no permission, an I/O error, a folder).
        ConfigError: ``NODEGUARD_MAX_PIXELS`` is not a whole number.
    """
    limit = pixel_limit()
    with _PILLOW_LIMIT:  # Pillow's limit is a global: no other thread sees it lifted
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as picture:
                _check_pixels(picture, limit)
                picture.info["nodeguard_pixel_limit"] = limit
                yield picture
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def image_pages(picture: Image.Image) -> list[int] | None:
    """The frames of an open file that are images of their own, by the module's rule.

    Returns:
        None when the file is one picture, read as opened (a still image, an MPO's primary
        image, a PSD's composite); else the indices of its pages or animation frames (a
        TIFF's reduced-resolution copies and masks left out). The file is left at frame 0.

    Raises:
        ImageReadError: a frame is larger than the pixel limit.
    """
    if picture.format in ONE_PICTURE_FORMATS:
        return None
    count = int(getattr(picture, "n_frames", 1) or 1)
    if count == 1:
        return None
    limit = int(picture.info.get("nodeguard_pixel_limit", pixel_limit()))
    pages = []
    for index in range(count):
        picture.seek(index)
        _check_pixels(picture, limit)
        tags = getattr(picture, "tag_v2", None)
        kind = tags.get(TIFF_NEW_SUBFILE_TYPE, 0) if tags is not None else 0
        if picture.format != "TIFF" or not int(kind or 0) & TIFF_NOT_A_PAGE:
            pages.append(index)
    picture.seek(0)
    pages = pages or [0]  # every page marked as a copy of another: the first is the picture
    return None if pages == [0] else pages


def shown_size(picture: Image.Image) -> tuple[int, int]:
    """(width, height) of the open frame as a viewer shows it (EXIF orientation applied)."""
    width, height = picture.size
    try:
        orientation = picture.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the picture as stored
        orientation = 1
    return (height, width) if orientation in QUARTER_TURNS else (width, height)


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
class SkippedFile:
    """An entry a scan left out, and why: its path as shown to the user (``display_path``)
    and the reason ("hidden name", "not an image file", ...)."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImageFrame:
    """One image read from a file: its name (``path`` or ``path#N``) and its (C, H, W) values."""

    name: str
    path: Path
    frame: int | None
    image: torch.Tensor


def _read_frame(picture: Image.Image, channels: int, bits: int) -> torch.Tensor:
    _check_depth(picture)
    shown = ImageOps.exif_transpose(picture) or picture
    shown.load()
    values = _frame_values(shown, channels, bits)
    return torch.from_numpy(values.copy()).permute(2, 0, 1).contiguous()


def read_image_frames(path: Path, channels: int) -> list[ImageFrame]:
    """Every image of an image file as (C, H, W) float32 in [0, 1], read by the module's rule.

    Args:
        path: an image file of any format Pillow decodes.
        channels: the model's channels: 1 (luma) or 3 (RGB).

    Returns:
        One ``ImageFrame`` per page or animation frame (one for a still image, an MPO or a
        PSD, named by the path alone; ``path#N`` for frame N of several).

    Raises:
        ImageReadError: the file is refused (transparency, values outside the stated
            range, an unmapped mode, more pixels than :func:`pixel_limit`) or cannot be
            decoded (truncated, damaged); the message says why.
        OSError: the file cannot be opened at all (missing, a folder, no permission).
        ConfigError: ``NODEGUARD_MAX_PIXELS`` is not a whole number.
    """
    frames: list[ImageFrame] = []
    try:
        with open_image(path) as picture:
            if picture.format in UNDECODABLE_FORMATS:
                raise ImageReadError(f"Pillow identifies it as {picture.format} but cannot decode it here")
            bits = _declared_bits(picture)  # read before a transposed copy drops the file's tags
            pages = image_pages(picture)
            if pages is None:
                frames.append(ImageFrame(display_path(path), Path(path), None, _read_frame(picture, channels, bits)))
            for index in pages or []:
                picture.seek(index)
                name = f"{display_path(path)}#{index}" if len(pages or []) > 1 else display_path(path)
                frame = index if len(pages or []) > 1 else None
                frames.append(ImageFrame(name, Path(path), frame, _read_frame(picture, channels, bits)))
    except (ImageReadError, ConfigError):
        raise
    except UnidentifiedImageError:
        raise ImageReadError(NOT_AN_IMAGE) from None
    except OSError as exc:
        if exc.errno is not None:  # the operating system's: no such file, a folder, no permission, I/O
            raise
        raise ImageReadError(reason_of(exc)) from None
    except Exception as exc:  # Pillow raises many kinds for files it cannot decode
        raise ImageReadError(reason_of(exc)) from None
    return frames


def read_image(path: Path, channels: int) -> torch.Tensor:
    """The one image of an image file as (C, H, W) float32 in [0, 1] (see :func:`read_image_frames`).

    Raises:
        ImageReadError: the file is refused, or holds several images (pages or frames).
        OSError: the file cannot be opened.
    """
    frames = read_image_frames(path, channels)
    if len(frames) != 1:
        raise ImageReadError(f"has {len(frames)} frames (pages or animation frames) where one image was expected")
    return frames[0].image


@dataclass(frozen=True)
class ImagePage:
    """What one image of a file is, read from its header without decoding pixels."""

    frame: int | None
    mode: str
    size: tuple[int, int]  # (width, height) as shown (EXIF orientation applied)


def inspect_image(path: Path) -> list[ImagePage]:
    """The images of a file (one per page or animation frame, by the module's rule), from
    its header: their frame numbers, modes and sizes as shown. Nothing is decoded.

    Raises:
        ImageReadError: Pillow recognises the file but cannot read it (damaged, a format it
            cannot decode here, more pixels than :func:`pixel_limit`).
        UnidentifiedImageError: not an image file.
        OSError: the file cannot be opened (no permission, an I/O error).
        ConfigError: ``NODEGUARD_MAX_PIXELS`` is not a whole number.
    """
    try:
        with open_image(path) as picture:
            if picture.format in UNDECODABLE_FORMATS:
                raise ImageReadError(f"Pillow identifies it as {picture.format} but cannot decode it here")
            pages = image_pages(picture)
            if pages is None:
                return [ImagePage(None, picture.mode, shown_size(picture))]
            found = []
            for index in pages:
                picture.seek(index)
                found.append(ImagePage(index if len(pages) > 1 else None, picture.mode, shown_size(picture)))
            return found
    except (ImageReadError, ConfigError, UnidentifiedImageError):
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise ImageReadError(reason_of(exc)) from None
    except Exception as exc:  # Pillow raises many kinds for damaged headers
        raise ImageReadError(reason_of(exc)) from None


def looks_like_an_image(path: Path) -> bool:
    """The name is that of a format Pillow decodes (a broken ``cat.png`` is an unreadable image)."""
    Image.init()
    image_format = Image.registered_extensions().get(path.suffix.lower())
    return image_format in Image.OPEN and image_format not in UNDECODABLE_FORMATS


# -- walking folders ----------------------------------------------------------------------------


@dataclass
class FolderWalk:
    """What a walk of folders found: the files, and what it did not take, with the reason.

    Attributes:
        files: regular files (links to files included), in walk order.
        skipped: (path, reason) of entries left out on purpose: hidden names, links back
            to a folder the walk is in (a loop), entries that are neither files nor folders.
        unreadable: (path, reason) of entries that could not be read: a link to nothing,
            a folder without permission to list it.
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _link_target(path: Path) -> str:
    try:
        return display_path(os.readlink(path))
    except OSError:
        return "?"


def walk_folder(folder: Path, walk: FolderWalk | None = None) -> FolderWalk:
    """Every file under ``folder``, as ``os.walk(folder, followlinks=True)`` finds them
    (torchvision's ``ImageFolder`` walks so), sorted by name in each folder, except:

    - hidden entries (names starting with a dot: ``.DS_Store``, ``._photo.png``,
      ``.ipynb_checkpoints``) are skipped, a hidden folder with everything in it;
    - a link to a folder that the walk is already inside (a loop) is skipped;
    - a link to nothing (dangling) and a folder that cannot be listed are unreadable.

    Args:
        folder: the folder to walk (itself not checked for a hidden name).
        walk: a walk to add to (several folders into one); None starts a new one.

    Returns:
        The :class:`FolderWalk`.
    """
    walk = walk if walk is not None else FolderWalk()
    try:
        top = os.stat(folder)
    except OSError as exc:
        walk.unreadable.append((folder, reason_of(exc)))
        return walk
    _walk(Path(folder), {(top.st_dev, top.st_ino)}, walk)
    return walk


def _walk(folder: Path, inside: set[tuple[int, int]], walk: FolderWalk) -> None:
    try:
        with os.scandir(folder) as listing:
            names = sorted(entry.name for entry in listing)
    except OSError as exc:
        walk.unreadable.append((folder, f"cannot list the folder: {reason_of(exc)}"))
        return
    for name in names:
        path = folder / name
        if name.startswith("."):
            walk.skipped.append((path, HIDDEN))
            continue
        try:
            status = os.stat(path)  # follows links
        except FileNotFoundError:
            if path.is_symlink():
                walk.unreadable.append(
                    (path, f"a broken symbolic link: its target {_link_target(path)} does not exist")
                )
            else:  # removed while the walk ran
                walk.unreadable.append((path, "went away while the folder was read"))
            continue
        except OSError as exc:  # a link to itself (ELOOP), no permission on the way, ...
            walk.unreadable.append((path, reason_of(exc)))
            continue
        if stat.S_ISDIR(status.st_mode):
            identity = (status.st_dev, status.st_ino)
            if identity in inside:
                walk.skipped.append(
                    (path, f"a symbolic link to {_link_target(path)}, a folder it lies in (a loop): not followed")
                )
                continue
            _walk(path, inside | {identity}, walk)
        elif stat.S_ISREG(status.st_mode):
            walk.files.append(path)
        else:
            walk.skipped.append((path, "not a regular file (a pipe, socket or device)"))


# -- defend: image files among paths ---------------------------------------------------------------


@dataclass
class FoundImages:
    """What a scan found: image files to read, the files it skipped with the reason, and
    the entries it could not read with the reason."""

    files: list[Path]
    skipped: list[tuple[Path, str]]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def find_images(paths: list[Path]) -> FoundImages:
    """Image files among ``paths``: files as given; folders walked by :func:`walk_folder`.

    In a folder, every file Pillow identifies as an image it can decode is taken,
    whatever its name; any other file is skipped and listed with the reason, except one
    named as an image (``cat.png``), which is taken and reported unreadable by
    :func:`load_image_files`. Hidden entries and links that would loop are skipped and
    listed; a broken link, or a file or folder that cannot be read, is unreadable, with
    the reason.

    Raises:
        ImageReadError: a path does not exist (or is a broken link), or nothing was found
            to read at all.
    """
    found: list[Path] = []
    walk = FolderWalk()
    for path in paths:
        if not path.exists():
            if path.is_symlink():
                raise ImageReadError(
                    f"{display_path(path)} is a broken symbolic link: its target {_link_target(path)} does not exist"
                )
            raise ImageReadError(f"{display_path(path)} does not exist")
        if not path.is_dir():
            found.append(path)
            continue
        walked = walk_folder(path)
        walk.skipped.extend(walked.skipped)
        walk.unreadable.extend(walked.unreadable)
        for candidate in walked.files:
            kind, reason = _identify(candidate)
            if kind == "image" or (kind == "other" and looks_like_an_image(candidate)):
                found.append(candidate)
            elif kind == "other":
                walk.skipped.append((candidate, reason))
            else:
                walk.unreadable.append((candidate, reason))
    if not found and not walk.unreadable:
        where = ", ".join(display_path(p) for p in paths)
        raise ImageReadError(f"no image files in {where} ({len(walk.skipped)} other files skipped)")
    return FoundImages(found, walk.skipped, walk.unreadable)


def _identify(path: Path) -> tuple[str, str]:
    """("image", ""), ("other", why it is not an image) or ("unreadable", why it cannot be read)."""
    try:
        with open_image(path) as picture:
            if picture.format in UNDECODABLE_FORMATS:
                return "other", NOT_AN_IMAGE
            return "image", ""
    except ImageReadError:
        return "image", ""  # too large: reading it says so
    except UnidentifiedImageError:
        return "other", NOT_AN_IMAGE
    except OSError as exc:
        if exc.errno is not None:
            return "unreadable", f"cannot read it: {reason_of(exc)}"
        return "image", ""  # recognised but damaged: reading it says how
    except ConfigError:
        raise
    except Exception:  # Pillow recognised it and failed on its header: reading it says how
        return "image", ""


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

    Raises:
        ConfigError: ``NODEGUARD_MAX_PIXELS`` is not a whole number.
    """
    names: list[str] = []
    images: list[torch.Tensor] = []
    errors: list[tuple[str, str]] = []
    for path in paths:
        try:
            frames = read_image_frames(path, channels)
        except (ImageReadError, OSError) as exc:
            errors.append((display_path(path), f"cannot read image: {reason_of(exc)}"))
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
