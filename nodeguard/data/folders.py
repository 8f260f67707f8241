"""Any image data set laid out as an ImageFolder tree: ``folder:PATH``.

``PATH/train/<class>/*`` and ``PATH/test/<class>/*``, as torchvision's ``ImageFolder``
reads them: the classes are the sub-folder names of ``train``, sorted (class i is the
i-th name), and ``test`` must use the same names (a class may be empty there). Every
file Pillow identifies is an image, whatever its name; other files are skipped. Images
are read by nodeguard's one reading rule (:mod:`nodeguard.storage.images`: EXIF
orientation, no transparency) and kept as 8-bit levels like every data set here. The set
is grayscale (1 channel) when every image is, colour (3 channels, gray images repeated)
otherwise; every image must have the size of the first (the size of the set).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from nodeguard.errors import DataUnavailableError, ImageReadError
from nodeguard.storage.images import looks_like_an_image, read_image

PREFIX = "folder:"
GRAY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
SPLITS = ("train", "test")
EXIF_ORIENTATION = 0x0112


@functools.lru_cache(maxsize=8)
def scan(root: str) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]], int, int, int]:
    """(classes, files of each split with their class index, channels, height, width).

    Raises:
        DataUnavailableError: no such folder, no train/test sub-folders, no classes,
            test classes that train lacks, an empty split, or images of several sizes.
    """
    base = Path(root)
    for split in SPLITS:
        if not (base / split).is_dir():
            raise DataUnavailableError(
                f"{base} is not an ImageFolder data set: it needs {base / split}/<class>/<images> "
                "(train/ and test/, one sub-folder per class)"
            )
    classes = tuple(sorted(child.name for child in (base / "train").iterdir() if child.is_dir()))
    if not classes:
        raise DataUnavailableError(f"{base / 'train'} has no class folders")
    extra = sorted({child.name for child in (base / "test").iterdir() if child.is_dir()} - set(classes))
    if extra:
        raise DataUnavailableError(f"{base / 'test'} has classes that train/ lacks: {', '.join(extra)}")
    files: dict[str, list[tuple[Path, int]]] = {}
    colour, size, first = False, None, None
    for split in SPLITS:
        files[split] = []
        for index, name in enumerate(classes):
            folder = base / split / name
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                try:
                    with Image.open(path) as picture:
                        mode, picture_size = picture.mode, picture.size
                        if picture.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # read turned a quarter
                            picture_size = (picture_size[1], picture_size[0])
                except (UnidentifiedImageError, IsADirectoryError, PermissionError, OSError):
                    if path.is_file() and looks_like_an_image(path):
                        raise DataUnavailableError(
                            f"{path} is named as an image but Pillow cannot read it; remove or replace it"
                        ) from None
                    continue  # not an image (notes, a CSV): skipped, as a folder scan skips it
                if size is None:
                    size, first = picture_size, path
                elif picture_size != size:
                    raise DataUnavailableError(
                        f"images differ in size: {first} is {size[0]}x{size[1]}, {path} is "
                        f"{picture_size[0]}x{picture_size[1]}; resize the set to one size first"
                    )
                colour = colour or mode not in GRAY_MODES
                files[split].append((path, index))
        if not files[split]:
            raise DataUnavailableError(f"{base / split} holds no image files")
    seen = {index for _path, index in files["train"]}
    empty = [name for index, name in enumerate(classes) if index not in seen]
    if empty:
        raise DataUnavailableError(f"{base / 'train'} has class folders without images: {', '.join(empty)}")
    assert size is not None
    return classes, files, 3 if colour else 1, size[1], size[0]


def canonical(name: str) -> str:
    """``folder:`` and the absolute path of the tree (so the name works from any folder).

    Raises:
        DataUnavailableError: no path after ``folder:``.
    """
    if not name[len(PREFIX) :].strip():
        raise DataUnavailableError("folder: needs the path of an ImageFolder tree, like folder:./my-images")
    return PREFIX + str(Path(name[len(PREFIX) :]).expanduser().resolve())


def fingerprint(root: str) -> str:
    """A digest of the tree's image files (relative path, size, modification time), so
    that results made on one version of the files are not taken for another's."""
    _classes, files, _channels, _height, _width = scan(root)
    digest = hashlib.sha256()
    for split in SPLITS:
        for path, index in files[split]:
            try:
                status = path.stat()
            except OSError:
                raise DataUnavailableError(f"{path} went away while nodeguard read the set") from None
            digest.update(f"{path.relative_to(root)}\0{index}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def slug(name: str) -> str:
    """A model-name-safe short name for a folder data set: its folder's name."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "-", Path(name[len(PREFIX) :]).name).strip("-.") or "folder"
    return cleaned[:60]


def read_split(root: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, C, H, W), int64 labels (N,)) of one split of the tree.

    Raises:
        DataUnavailableError: see :func:`scan`; or an image refused by the reading rule
            (the message names the file).
    """
    _classes, files, channels, height, width = scan(root)
    images = torch.empty((len(files[split]), channels, height, width), dtype=torch.uint8)
    labels = torch.empty(len(files[split]), dtype=torch.long)
    for row, (path, index) in enumerate(files[split]):
        try:
            image = read_image(path, channels)
        except (ImageReadError, OSError) as exc:
            raise DataUnavailableError(f"{path}: {exc}") from None
        if tuple(image.shape) != tuple(images.shape[1:]):
            raise DataUnavailableError(
                f"{path} reads as {tuple(image.shape)}, the set's images are {tuple(images.shape[1:])}"
            )
        images[row] = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        labels[row] = index
    return images, labels
