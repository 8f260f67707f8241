"""Any image data set laid out as an ImageFolder tree: ``folder:PATH``.

``PATH/train/<class>/**`` and ``PATH/test/<class>/**``, as torchvision's ``ImageFolder``
reads them: the classes are the sub-folder names of ``train``, sorted (class i is the
i-th name), and ``test`` must use the same names (a class may be empty there). Each class
folder is read recursively, following symbolic links (``os.walk(followlinks=True)``, as
``ImageFolder`` walks it), with a guard against links that loop. Every file Pillow
identifies is an image, whatever its name; other files are skipped, and so are hidden
entries (names starting with a dot: ``.DS_Store``, ``._*`` AppleDouble files,
``.ipynb_checkpoints``, a hidden class folder) and files lying outside a class folder:
all of them are listed (:attr:`FolderSet.skipped`). A file with several pages or
animation frames gives one image per frame; an MPO gives its primary image (the rule of
:mod:`nodeguard.storage.images`). Images are read by nodeguard's one reading rule (EXIF
orientation, no transparency, the pixel limit) and kept as 8-bit levels like every data
set here. The set is grayscale (1 channel) when every image is, colour (3 channels, gray
images repeated) otherwise; every image must have the size of the first (the size of the
set). Files that cannot be read are refused all at once, in one message (the first few
named, and the count), never one per run.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import UnidentifiedImageError

from nodeguard.errors import DataUnavailableError, ImageReadError
from nodeguard.storage.files import display_path
from nodeguard.storage.images import (
    HIDDEN,
    NOT_AN_IMAGE,
    FolderWalk,
    ImageFrame,
    inspect_image,
    looks_like_an_image,
    read_image_frames,
    reason_of,
    walk_folder,
)

PREFIX = "folder:"
GRAY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
SPLITS = ("train", "test")
NAMED_IN_A_MESSAGE = 5  # the files an error names before it gives the count of the others


@dataclass(frozen=True)
class FolderSet:
    """What :func:`scan` found in an ImageFolder tree.

    Attributes:
        classes: the class names, sorted (class i is the i-th).
        files: per split, one (path, class index, frame) per image; frame is None for a
            file that is one picture, N for frame N of a file with several.
        channels, height, width: the shape of every image of the set.
        skipped: (path, reason) of every entry left out: hidden names, files that are not
            images, files outside a class folder, links that would loop.
        empty_test_classes: classes that have no image in ``test``.
    """

    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int, int | None]]]
    channels: int
    height: int
    width: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    empty_test_classes: tuple[str, ...] = ()


def _listing(base: Path, names: list[tuple[Path, str]], more: int) -> str:
    shown = ", ".join(f"{_relative(path, base)} ({reason})" for path, reason in names)
    return shown + (f" and {more} more" if more > 0 else "")


def _relative(path: Path, base: Path) -> str:
    try:
        return display_path(path.relative_to(base))
    except ValueError:
        return display_path(path)


def _refuse_unreadable(base: Path, unreadable: list[tuple[Path, str]]) -> DataUnavailableError:
    count = len(unreadable)
    return DataUnavailableError(
        f"{count} file{'' if count == 1 else 's'} of the data set {display_path(base)} cannot be read: "
        f"{_listing(base, unreadable[:NAMED_IN_A_MESSAGE], count - NAMED_IN_A_MESSAGE)}; "
        "fix, replace or remove them (names starting with a dot are skipped)"
    )


def _class_folders(split_folder: Path, skipped: list[tuple[Path, str]]) -> list[str]:
    """The class folders of a split (links to folders included); the rest is listed as skipped."""
    classes = []
    for child in sorted(split_folder.iterdir()):
        if child.name.startswith("."):
            skipped.append((child, HIDDEN))
        elif child.is_dir():
            classes.append(child.name)
        else:
            skipped.append((child, "not in a class folder"))
    return classes


@functools.lru_cache(maxsize=8)
def scan(root: str) -> FolderSet:
    """The classes, image files and shape of the tree at ``root``, from the files' headers.

    Raises:
        DataUnavailableError: no such folder, no train/test sub-folders, no classes, test
            classes that train lacks, an empty split, images of several sizes, or files that
            cannot be read (all of them in one message: named as an image but not one,
            damaged, too many pixels, no permission, a broken link).
        ConfigError: ``NODEGUARD_MAX_PIXELS`` is not a whole number.
    """
    base = Path(root)
    for split in SPLITS:
        if not (base / split).is_dir():
            raise DataUnavailableError(
                f"{base} is not an ImageFolder data set: it needs {base / split}/<class>/<images> "
                "(train/ and test/, one sub-folder per class)"
            )
    skipped: list[tuple[Path, str]] = []
    classes = tuple(_class_folders(base / "train", skipped))
    if not classes:
        raise DataUnavailableError(f"{base / 'train'} has no class folders")
    extra = sorted(set(_class_folders(base / "test", skipped)) - set(classes))
    if extra:
        raise DataUnavailableError(f"{base / 'test'} has classes that train/ lacks: {', '.join(extra)}")
    files: dict[str, list[tuple[Path, int, int | None]]] = {}
    unreadable: list[tuple[Path, str]] = []
    sizes: dict[tuple[int, int], list[Path]] = {}
    colour = False
    for split in SPLITS:
        files[split] = []
        for index, name in enumerate(classes):
            folder = base / split / name
            if not folder.is_dir():
                continue
            walk = walk_folder(folder, FolderWalk())
            skipped.extend(walk.skipped)
            unreadable.extend(walk.unreadable)
            for path in walk.files:
                try:
                    pages = inspect_image(path)
                except UnidentifiedImageError:
                    if looks_like_an_image(path):
                        unreadable.append((path, "named as an image, but Pillow cannot read it"))
                    else:
                        skipped.append((path, NOT_AN_IMAGE))
                    continue
                except (ImageReadError, OSError) as exc:
                    unreadable.append((path, reason_of(exc)))
                    continue
                for page in pages:
                    sizes.setdefault(page.size, []).append(path)
                    colour = colour or page.mode not in GRAY_MODES
                    files[split].append((path, index, page.frame))
    if unreadable:
        raise _refuse_unreadable(base, unreadable)
    if len(sizes) > 1:
        size, first = next(iter(sizes.items()))
        others = [(other, paths) for other, paths in sizes.items() if other != size]
        count = sum(len(paths) for _size, paths in others)
        raise DataUnavailableError(
            f"images differ in size: {first[0]} is {size[0]}x{size[1]}, {others[0][1][0]} is "
            f"{others[0][0][0]}x{others[0][0][1]} ({count} image{'' if count == 1 else 's'} of another size than "
            f"the first); resize the set to one size first"
        )
    for split in SPLITS:
        if not files[split]:
            raise DataUnavailableError(f"{base / split} holds no image files")
    seen = {index for _path, index, _frame in files["train"]}
    empty = [name for index, name in enumerate(classes) if index not in seen]
    if empty:
        raise DataUnavailableError(f"{base / 'train'} has class folders without images: {', '.join(empty)}")
    in_test = {index for _path, index, _frame in files["test"]}
    empty_test = tuple(name for index, name in enumerate(classes) if index not in in_test)
    width, height = next(iter(sizes))
    return FolderSet(classes, files, 3 if colour else 1, height, width, skipped, empty_test)


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
    that results made on one version of the files are not taken for another's.

    Raises:
        DataUnavailableError: see :func:`scan`; or a file went away while it was read.
    """
    found = scan(root)
    digest = hashlib.sha256()
    for split in SPLITS:
        for path, index, _frame in found.files[split]:
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


def _read_into(root: str, split: str, unreadable: list[tuple[Path, str]]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One split's images and labels, adding the files it cannot read to ``unreadable``."""
    found = scan(root)
    entries = found.files[split]
    images = torch.empty((len(entries), found.channels, found.height, found.width), dtype=torch.uint8)
    labels = torch.empty(len(entries), dtype=torch.long)
    failed_before = len(unreadable)
    current: tuple[Path, list[ImageFrame] | None] = (Path(), None)
    for row, (path, index, frame) in enumerate(entries):
        if current[0] != path:
            try:
                current = (path, read_image_frames(path, found.channels))
            except (ImageReadError, OSError) as exc:
                current = (path, None)
                unreadable.append((path, reason_of(exc)))
        frames = current[1]
        if frames is None:
            continue
        image = next((item.image for item in frames if item.frame == frame), None)
        if image is None or tuple(image.shape) != tuple(images.shape[1:]):
            shape = "no such frame" if image is None else f"reads as {tuple(image.shape)}"
            unreadable.append((path, f"{shape}, where the set's images are {tuple(images.shape[1:])}"))
            continue
        images[row] = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        labels[row] = index
    return (images, labels) if len(unreadable) == failed_before else None


def read_splits(root: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Both splits of the tree, train then test (see :func:`read_split`).

    Raises:
        DataUnavailableError: see :func:`read_split`; the files neither split can read are
            named together in one message.
    """
    unreadable: list[tuple[Path, str]] = []
    train = _read_into(root, "train", unreadable)
    test = _read_into(root, "test", unreadable)
    if train is None or test is None:
        raise _refuse_unreadable(Path(root), unreadable)
    return train, test
