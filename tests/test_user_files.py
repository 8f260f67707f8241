"""Folders, links, checkpoints and caches as users really have them (issue 32): every file
read as a viewer and torchvision would read it, or refused with the true reason in one
line, and nothing skipped without being listed.

Permission errors are real ones: as root (CI), the test drops the capabilities that let
root ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from its
thread for the duration of the check, so the kernel refuses writes to a folder of mode
0555 as it refuses them to any user; the code paths are those a user on a shared
read-only registry goes through. Where that cannot be done, those checks are skipped,
saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import os
import pathlib
import shutil
import stat
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import TEST_SEED
from foreign_nets import save_torchdiffeq, torchdiffeq_layout
from PIL import Image, TiffImagePlugin
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.data import folders
from nodeguard.data.datasets import dataset_empty_test_classes, dataset_skipped, load_dataset
from nodeguard.errors import (
    CheckpointRefusedError,
    ConfigError,
    DataUnavailableError,
    ImageReadError,
    RegistryError,
    StorageError,
)
from nodeguard.models.importing import import_checkpoint
from nodeguard.models.loading import load_model
from nodeguard.storage.images import find_images, read_image, read_image_frames, walk_folder
from nodeguard.storage.registry import ModelEntry, Registry

runner = CliRunner()
TOL = 1e-3


# -- helpers -------------------------------------------------------------------------------------


def digit(index: int = 0) -> np.ndarray:
    """A real test digit, (28, 28) uint8."""
    return load_dataset("mnist5k").test.images[index, 0].numpy()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: pathlib.Path, width: int = 20000, height: int = 20000) -> None:
    """A PNG that declares ``width`` x ``height`` grey pixels (what a decompression bomb
    declares); its pixel data is never reached, because the size alone is refused."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def mpo_photo(path: pathlib.Path, picture: np.ndarray) -> None:
    """A phone photo as an MPO: the picture and a 14x14 preview of it."""
    primary = Image.fromarray(picture).convert("RGB")
    primary.save(path, format="MPO", save_all=True, append_images=[primary.resize((14, 14))])


def tiff_with_thumbnail(path: pathlib.Path, picture: np.ndarray) -> None:
    """A TIFF of one page and its 14x14 reduced-resolution copy (NewSubfileType 1)."""
    page = Image.fromarray(picture)
    with TiffImagePlugin.AppendingTiffWriter(str(path), True) as writer:
        page.save(writer, format="TIFF")
        writer.newFrame()
        page.resize((14, 14)).save(writer, format="TIFF", tiffinfo={254: 1})


def one_line_error(result, *needles: str) -> str:
    """The CLI failed with exit 1, ending on one 'error:' line (after any progress lines)
    that holds every needle, and printed no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, result.stderr)
    return lines[-1]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


CAPABILITY_VERSION_3 = 0x20080522
FILE_MODE_OVERRIDES = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


@contextlib.contextmanager
def _caps_without_overrides():
    libc = ctypes.CDLL(None, use_errno=True)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(_CapHeader(CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = [(item.effective, item.permitted, item.inheritable) for item in data]
    data[0].effective &= ~FILE_MODE_OVERRIDES
    if libc.capset(ctypes.byref(_CapHeader(CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        for item, (effective, permitted, inheritable) in zip(data, saved, strict=True):
            item.effective, item.permitted, item.inheritable = effective, permitted, inheritable
        libc.capset(ctypes.byref(_CapHeader(CAPABILITY_VERSION_3, 0)), data)


@pytest.fixture
def as_a_user(tmp_path):
    """A context manager under which file modes bind this process as they bind any user."""
    if os.geteuid() != 0:
        return contextlib.nullcontext
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        with _caps_without_overrides():
            try:
                (probe / "x").write_text("root still writes here")
            except PermissionError:
                return _caps_without_overrides
    except OSError as exc:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here ({exc}): no honest permission error")
    pytest.skip("running as root and file modes still do not bind after dropping CAP_DAC_OVERRIDE")


def read_only(root: pathlib.Path) -> None:
    """Make a tree read-only, as another user's shared registry looks to this one."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def writable(root: pathlib.Path) -> None:
    for folder, _dirs, _files in os.walk(root):
        os.chmod(folder, 0o755)


# -- 1. trees as torchvision walks them ----------------------------------------------------------


def nested_tree(root: pathlib.Path) -> pathlib.Path:
    """An ImageFolder tree of 2 classes; each class folder holds 1 image at its top, 1 in a
    sub-folder and 1 two levels down (3 per class and split: 6 train, 6 test), plus what a
    Mac, a notebook and a loop leave behind."""
    for split in ("train", "test"):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            (folder / "more" / "deeper").mkdir(parents=True)
            for where, index in ((folder, 0), (folder / "more", 1), (folder / "more" / "deeper", 2)):
                Image.fromarray(digit(3 * label + index)).save(where / f"{index}.png")
            (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")  # a Mac's shadow file
            (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
            (folder / "more" / "loop").symlink_to(folder)  # a link back to a folder it lies in
    (root / "train" / ".ipynb_checkpoints").mkdir()  # a notebook's hidden folder: not a class
    Image.fromarray(digit(9)).save(root / "train" / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "train" / "README.txt").write_text("a file outside the class folders")
    return root


def test_class_folders_are_read_with_their_sub_folders_and_what_is_left_out_is_listed(tmp_path):
    root = nested_tree(tmp_path / "pets")
    dataset = load_dataset(f"folder:{root}")
    assert dataset.info.num_classes == 2 and dataset.info.input_shape == (1, 28, 28)
    assert len(dataset.train) == 6 and len(dataset.test) == 6  # as ImageFolder counts them
    assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(dataset.train.images[2, 0], torch.from_numpy(digit(2)))  # two levels down, read as is
    skipped = {(path.relative_to(root).as_posix(), reason) for path, reason in dataset_skipped(f"folder:{root}")}
    hidden = "hidden (its name starts with a dot)"
    assert ("train/.ipynb_checkpoints", hidden) in skipped and ("train/cat/._0.png", hidden) in skipped
    assert ("test/dog/.DS_Store", hidden) in skipped and ("train/README.txt", "not in a class folder") in skipped
    loops = [name for name, reason in skipped if "(a loop): not followed" in reason]
    assert sorted(loops) == [f"{split}/{name}/more/loop" for split in ("test", "train") for name in ("cat", "dog")]
    assert len(skipped) == 4 * 3 + 2  # ._0.png, .DS_Store and the loop per class folder; the two in train/


def test_links_are_followed_and_a_dangling_one_is_reported(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for index in range(2):
        Image.fromarray(digit(index)).save(elsewhere / f"{index}.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(digit(2)).save(folder / "own.png")
    (folder / "linked-folder").symlink_to(elsewhere)
    (folder / "linked.png").symlink_to(elsewhere / "0.png")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "self").symlink_to(folder / "self")  # a link to itself
    found = find_images([folder])
    assert sorted(path.relative_to(folder).as_posix() for path in found.files) == [
        "linked-folder/0.png",
        "linked-folder/1.png",
        "linked.png",
        "own.png",
    ]
    reasons = {path.name: reason for path, reason in found.unreadable}
    assert (
        reasons["dangling.png"].startswith("a broken symbolic link: its target")
        and "gone.png" in reasons["dangling.png"]
    )
    assert "symbolic links" in reasons["self"]  # ELOOP: too many levels of symbolic links
    with pytest.raises(ImageReadError, match="dangling.png is a broken symbolic link"):
        find_images([folder / "dangling.png"])
    # a loop through two folders is cut where it comes back
    (elsewhere / "back").symlink_to(folder)
    walk = walk_folder(folder)
    assert [path.relative_to(folder).as_posix() for path, _reason in walk.skipped] == ["linked-folder/back"]


# -- 2. every error on the way in: one line naming the file and the reason --------------------


def test_a_set_refuses_all_its_unreadable_files_in_one_message(tmp_path):
    root = nested_tree(tmp_path / "pets")
    for index in range(6):
        (root / "train" / "cat" / f"broken{index}.png").write_text("not a picture")
    (root / "test" / "dog" / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataUnavailableError) as refused:
        load_dataset(f"folder:{root}")
    message = str(refused.value)
    assert message.startswith(f"7 files of the data set {root.resolve()} cannot be read: ")
    assert "train/cat/broken0.png (named as an image, but Pillow cannot read it)" in message
    assert message.count("(named as an image") == 5 and "and 2 more" in message  # the first five, then the count
    for index in range(6):
        (root / "train" / "cat" / f"broken{index}.png").unlink()
    (root / "test" / "dog" / "dangling.png").unlink()

    # files whose header reads but whose pixels do not: found while reading, all at once
    good = (root / "train" / "cat" / "0.png").read_bytes()
    for split in ("train", "test"):
        (root / split / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    folders.scan.cache_clear()
    with pytest.raises(DataUnavailableError, match=r"^2 files .* cannot be read: train/dog/cut.png \(.*\), test/dog"):
        load_dataset(f"folder:{root}")
    result = runner.invoke(app, ["train", f"folder:{root}", "--epochs", "1"])
    one_line_error(result, "2 files of the data set", "cut.png")


def test_a_decompression_bomb_is_refused_naming_its_size_and_how_to_raise_the_limit(tmp_path, monkeypatch):
    bomb_png(tmp_path / "huge.png")
    assert (tmp_path / "huge.png").stat().st_size < 1000
    with pytest.raises(
        ImageReadError, match=r"declares 20000x20000 = 400,000,000 pixels, more than the limit of 89,478,485"
    ):
        read_image(tmp_path / "huge.png", 1)
    root = nested_tree(tmp_path / "pets")
    bomb_png(root / "train" / "dog" / "huge.png")
    result = runner.invoke(app, ["train", f"folder:{root}", "--epochs", "1"])
    one_line_error(result, "train/dog/huge.png (declares 20000x20000", "set NODEGUARD_MAX_PIXELS to 400000000 or more")

    # the limit is stated and can be moved either way
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "forty.png")
    monkeypatch.setenv("NODEGUARD_MAX_PIXELS", "1599")
    with pytest.raises(ImageReadError, match="40x40 = 1,600 pixels, more than the limit of 1,599"):
        read_image(tmp_path / "forty.png", 1)
    monkeypatch.setenv("NODEGUARD_MAX_PIXELS", "1600")
    assert read_image(tmp_path / "forty.png", 1).shape == (1, 40, 40)
    monkeypatch.setenv("NODEGUARD_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="NODEGUARD_MAX_PIXELS must be a whole number of pixels"):
        read_image(tmp_path / "forty.png", 1)


# -- 5. frames that are not pages ---------------------------------------------------------------


def test_previews_and_thumbnails_are_not_images_and_pages_are(tmp_path):
    mpo_photo(tmp_path / "photo.jpg", digit(0))
    with Image.open(tmp_path / "photo.jpg") as raw:
        assert raw.format == "MPO" and raw.n_frames == 2  # the picture and its preview
    frames = read_image_frames(tmp_path / "photo.jpg", 1)
    assert [(frame.name.split("/")[-1], frame.frame, tuple(frame.image.shape)) for frame in frames] == [
        ("photo.jpg", None, (1, 28, 28))
    ]
    tiff_with_thumbnail(tmp_path / "scan.tif", digit(1))
    assert [frame.name.split("/")[-1] for frame in read_image_frames(tmp_path / "scan.tif", 1)] == ["scan.tif"]
    pages = [Image.fromarray(digit(index)) for index in range(3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    assert len(read_image_frames(tmp_path / "pages.tif", 1)) == 3  # pages are images of their own
    with pytest.raises(ImageReadError, match="has 3 frames") as refused:
        read_image(tmp_path / "pages.tif", 1)
    assert "read_image_frames" not in str(refused.value)

    # the same rule in a folder set: the photo is one image, the three pages three
    root = nested_tree(tmp_path / "pets")
    mpo_photo(root / "train" / "cat" / "photo.jpg", digit(0))
    pages[0].save(root / "test" / "dog" / "pages.tif", save_all=True, append_images=pages[1:])
    dataset = load_dataset(f"folder:{root}")
    assert len(dataset.train) == 7 and len(dataset.test) == 9 and dataset.info.channels == 3


# -- 3. the cache root as users set it ----------------------------------------------------------


def test_a_cache_root_that_is_a_file_or_lies_under_one_is_one_line(tmp_path, monkeypatch, as_a_user):
    (tmp_path / "a-file").write_text("not a folder")
    Image.fromarray(digit(0)).save(tmp_path / "a.png")
    cases = [
        (tmp_path / "a-file", "is a file, not a folder; point NODEGUARD_HOME at a folder you can write"),
        (tmp_path / "a-file" / "nodeguard", f"lies under {tmp_path / 'a-file'}, which is a file"),
    ]
    for home, reason in cases:
        monkeypatch.setenv("NODEGUARD_HOME", str(home))
        for args in (["models"], ["models", "show", "x"], ["defend", str(tmp_path / "a.png")], ["train", "mnist5k"]):
            one_line_error(runner.invoke(app, args), f"the cache root {home} (set by NODEGUARD_HOME)", reason)
        with pytest.raises(RegistryError, match="the cache root"):
            Registry().entries()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.setenv("NODEGUARD_HOME", str(locked / "nodeguard"))
    with as_a_user():
        assert json.loads(runner.invoke(app, ["models", "--json"]).stdout)["models"] == []  # nothing to read
        with pytest.raises(StorageError, match=r"cannot be created or reached \(Permission denied\)"):
            Registry().put(ModelEntry("m", "odenet", "mnist5k", "ready"))
    assert not (locked / "nodeguard").exists()


def test_a_read_only_registry_is_listed_shown_and_used_and_refuses_to_store_with_the_reason(
    tiny_model, isolated_home, tmp_path, monkeypatch, as_a_user
):
    Image.fromarray(digit(0)).save(tmp_path / "a.png")
    net = torchdiffeq_layout().build("conv", TOL, filters=8)
    checkpoint = save_torchdiffeq(net, tmp_path / "theirs.pth", TOL, "conv")
    seeded = runner.invoke(app, ["defend", str(tmp_path / "a.png"), "--votes", "3", "--vmin", "1"])
    assert seeded.exit_code == 0  # the owner's own run: the secret key is made
    (isolated_home / "index.json").unlink()  # and a missing index, rebuilt in memory only
    (isolated_home / "index.json.lock").unlink(missing_ok=True)
    read_only(isolated_home)
    os.chmod(isolated_home / "defense.key", 0)  # the owner's key: no one else reads it
    before = sorted(str(path.relative_to(isolated_home)) for path in isolated_home.rglob("*"))
    try:
        with as_a_user():
            listed = runner.invoke(app, ["models", "--json"])
            assert listed.exit_code == 0 and [entry["name"] for entry in json.loads(listed.stdout)["models"]] == [
                "tiny"
            ]
            shown = runner.invoke(app, ["models", "show", "tiny", "--json"])
            assert shown.exit_code == 0 and json.loads(shown.stdout)["name"] == "tiny"
            public = runner.invoke(
                app, ["defend", str(tmp_path / "a.png"), "--votes", "3", "--vmin", "1", "--seed", "0"]
            )
            assert public.exit_code == 0 and "Traceback" not in public.output and "accepted" in public.stdout
            assert len(load_model("tiny", device="cpu").config) > 0
            secret = runner.invoke(app, ["defend", str(tmp_path / "a.png"), "--votes", "3", "--vmin", "1"])
            one_line_error(secret, "defense.key cannot be read (Permission denied)", "give a public --seed")
            attack = runner.invoke(app, ["attack", "blend", "--model", "tiny", "--count", "2"])
            one_line_error(attack, "of model 'tiny' cannot be saved in the registry", "it is read-only for you")
            removed = runner.invoke(app, ["models", "rm", "tiny"])
            one_line_error(removed, f"cannot change the registry {isolated_home} (Permission denied)")
            imported = runner.invoke(
                app,
                ["models", "import", str(checkpoint), "--format", "torchdiffeq-example", "--dataset", "mnist5k"],
            )
            one_line_error(imported, "cannot change the registry")  # said before any test image is classified
            assert "test split" not in imported.stderr
    finally:
        writable(isolated_home)
    assert (
        sorted(str(path.relative_to(isolated_home)) for path in isolated_home.rglob("*")) == before
    )  # nothing written


# -- 4. checkpoints as other code saves them ------------------------------------------------------


def test_compiled_and_data_parallel_checkpoints_import_exactly(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = torchdiffeq_layout().build("conv", TOL, filters=8).eval()
    wrapped = {
        "compiled": torch.compile(net),  # keys start with _orig_mod.
        "parallel-compiled": torch.nn.DataParallel(torch.compile(net)),  # module._orig_mod.
        "compiled-parallel": torch.compile(torch.nn.DataParallel(net)),  # _orig_mod.module.
    }
    expected = {key: value for key, value in net.state_dict().items()}
    for name, model in wrapped.items():
        keys = list(model.state_dict())
        assert all(key.startswith(("_orig_mod.", "module._orig_mod.")) for key in keys), keys[:2]
        path = save_torchdiffeq(model, tmp_path / f"{name}.pth", TOL, "conv")
        result = import_checkpoint(path, "torchdiffeq-example", "mnist5k", name=name, test_limit=5, registry=registry)
        assert result.count == 5
        loaded = load_model(name, registry=registry, device="cpu").model
        assert torch.equal(loaded.downsampling[0].weight, expected["0.weight"])  # the weights themselves
        assert torch.equal(loaded.head[-1].weight, expected["12.weight"])


def test_plain_values_beside_the_weights_are_allowed_and_code_still_is_not(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = torchdiffeq_layout().build("conv", TOL, filters=8)
    path = save_torchdiffeq(
        net, tmp_path / "numpy.pth", np.float64(TOL), "conv", best_acc=np.float64(0.987), save=pathlib.Path("/runs/x")
    )
    checkpoint = torch.load(path, weights_only=False)
    checkpoint.update(best_acc=np.float64(0.987), epoch=np.int64(12), history=np.arange(3.0), where=pathlib.Path("x"))
    torch.save(checkpoint, path)
    result = import_checkpoint(path, "torchdiffeq-example", "mnist5k", test_limit=5, registry=registry)
    assert result.count == 5 and result.tol_train == TOL
    settings = load_model(result.name, registry=registry, device="cpu").config["source"]["settings"]
    assert settings["best_acc"] == 0.987 and settings["save"] == "/runs/x" and type(settings["tol"]) is float

    # an object array holds Python objects, not numbers: refused by name, with a way forward
    checkpoint["history"] = np.array([1, "a"], dtype=object)
    torch.save(checkpoint, tmp_path / "objects.pth")
    with pytest.raises(CheckpointRefusedError, match="it needs numpy.dtypes.ObjectDType.*If you trust the file"):
        import_checkpoint(tmp_path / "objects.pth", "torchdiffeq-example", "mnist5k", test_limit=5, registry=registry)


def _truncated_checkpoint(path: pathlib.Path) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"0.weight": torch.zeros(64, 1, 3, 3)}}, buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


NOT_CHECKPOINTS = {
    "notes.pth": (
        lambda path: path.write_text("my notes\n"),
        "is a text file, not a checkpoint (it begins 'my notes')",
    ),
    "page.pth": (
        lambda path: path.write_text("<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>"),
        "is a web page (HTML), not a checkpoint",
    ),
    "pointer.pth": (
        lambda path: path.write_text(
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize 3276800\n"
        ),
        "is a Git LFS pointer (",
        "stand for the real file of 3,276,800 bytes, which was never downloaded): run `git lfs pull`",
    ),
    "empty.pth": (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    "cut.pth": (_truncated_checkpoint, "is truncated or damaged: a zip archive (as torch.save writes)"),
}


@pytest.mark.parametrize("name", sorted(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_refused_as_what_it_is(name, tmp_path):
    write, *reasons = NOT_CHECKPOINTS[name]
    write(tmp_path / name)
    for format in ("torchdiffeq-example", "neural-ode-features"):
        args = [
            "models",
            "import",
            str(tmp_path / name),
            "--format",
            format,
            "--dataset",
            "mnist5k",
            "--tol-train",
            "1e-3",
        ]
        stderr = one_line_error(runner.invoke(app, args), *reasons)
        assert "never runs code" not in stderr and "Unsupported operand" not in stderr


def test_hints_point_only_where_the_weights_fit(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    example = torchdiffeq_layout().build("conv", TOL, filters=8).state_dict()
    torch.save({"model": {f"odeblock.odefunc.{k}": v for k, v in example.items()}}, tmp_path / "features.pth")
    with pytest.raises(CheckpointRefusedError, match="in the neural-ode-features layout: try `format` neural-ode"):
        import_checkpoint(tmp_path / "features.pth", "torchdiffeq-example", "mnist5k", tol_train=TOL, registry=registry)
    # parameters in a layout neither format reads: each says so, and neither sends the user to the other
    torch.save({"state_dict": {f"net.odefunc.{k}": v for k, v in example.items()}}, tmp_path / "mine.pth")
    for format in ("torchdiffeq-example", "neural-ode-features"):
        args = ["models", "import", str(tmp_path / "mine.pth"), "--format", format, "--dataset", "mnist5k"]
        stderr = one_line_error(runner.invoke(app, [*args, "--tol-train", "1e-3"]))
        assert "try --format" not in stderr, stderr
    # a neural-ode-features file that needs the example's Namespace: no hint unless the example's layout fits
    torch.save(
        {"model": {f"odeblock.odefunc.{k}": v for k, v in example.items()}, "args": argparse.Namespace()},
        tmp_path / "ns.pth",
    )
    args = ["models", "import", str(tmp_path / "ns.pth"), "--format", "neural-ode-features", "--dataset", "mnist5k"]
    stderr = one_line_error(runner.invoke(app, args), "it needs argparse.Namespace")
    assert "try --format" not in stderr
    # the example's own file given as neural-ode-features: one hint, and the format it names reads the file
    example_file = save_torchdiffeq(
        torchdiffeq_layout().build("conv", TOL, filters=8), tmp_path / "ex.pth", TOL, "conv"
    )
    args = ["models", "import", str(example_file), "--format", "neural-ode-features", "--dataset", "mnist5k"]
    one_line_error(runner.invoke(app, args), "the weights are in its layout: try --format torchdiffeq-example")
    result = import_checkpoint(example_file, "torchdiffeq-example", "mnist5k", test_limit=3, registry=registry)
    assert result.count == 3


# -- 6. defend on a folder as a user has it -----------------------------------------------------------


def test_defend_on_a_folder_as_users_have_it(tiny_model, tmp_path, as_a_user):
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(digit(0)).save(folder / "top.png")
    Image.fromarray(digit(1)).save(folder / "sub" / "nested.png")
    Image.fromarray(digit(2)).save(elsewhere / "shared.png")
    (folder / "linked-folder").symlink_to(elsewhere)
    (folder / "linked.png").symlink_to(folder / "top.png")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "sub" / "loop").symlink_to(folder)
    (folder / "._top.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    mpo_photo(folder / "photo.jpg", digit(3))
    bomb_png(folder / "huge.png")
    cut = (folder / "top.png").read_bytes()
    (folder / "cut.png").write_bytes(cut[: len(cut) // 2])
    (folder / "private.png").write_bytes(cut)
    os.chmod(folder / "private.png", 0)
    with as_a_user():
        result = runner.invoke(app, ["defend", str(folder), "--votes", "3", "--vmin", "1", "--seed", "0", "--json"])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    report = json.loads(result.stdout)
    voted = sorted(pathlib.Path(image["path"]).relative_to(folder).as_posix() for image in report["images"])
    assert voted == ["linked-folder/shared.png", "linked.png", "photo.jpg", "sub/nested.png", "top.png"]
    errors = {pathlib.Path(error["path"]).name: error["error"] for error in report["errors"]}
    assert set(errors) == {"dangling.png", "huge.png", "cut.png", "private.png"} and report["unreadable"] == 4
    assert "a broken symbolic link" in errors["dangling.png"]
    assert "20000x20000 = 400,000,000 pixels" in errors["huge.png"] and "NODEGUARD_MAX_PIXELS" in errors["huge.png"]
    assert "truncated" in errors["cut.png"] and errors["private.png"] == "cannot read it: Permission denied"
    skipped = {pathlib.Path(item["path"]).name: item["reason"] for item in report["skipped"]}
    assert set(skipped) == {"._top.png", ".DS_Store", "loop"} and skipped[".DS_Store"].startswith("hidden")
    human = runner.invoke(app, ["defend", str(folder), "--votes", "3", "--vmin", "1", "--seed", "0"])
    assert "skipped 2, hidden (its name starts with a dot): " in human.stdout and "Traceback" not in human.output


def test_dataset_notes_for_an_import(tmp_path):
    root = nested_tree(tmp_path / "pets")
    shutil.rmtree(root / "test" / "dog")
    (root / "test" / "dog").mkdir()
    assert dataset_empty_test_classes(f"folder:{root}") == ["dog"]
    assert dataset_empty_test_classes("mnist5k") == [] and dataset_skipped("mnist5k") == []
    assert stat.S_ISDIR(os.stat(root / "test" / "dog").st_mode)
