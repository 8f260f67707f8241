"""Files, values and names from elsewhere: every image read as a viewer shows it or refused,
every number checked before any work, output that keeps its work, secret draws."""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nodeguard.checks import TOL_MAX, TOL_MIN
from nodeguard.cli import app
from nodeguard.data.datasets import load_dataset
from nodeguard.defense.files import defend_paths
from nodeguard.defense.keys import installation_key
from nodeguard.defense.randomization import DEFAULT_TOL_RANGE, DefenseSettings, ToleranceRange, draw_tolerances
from nodeguard.errors import ImageReadError, SolverError, StorageError
from nodeguard.models.evaluation import logits_alone
from nodeguard.models.loading import load_model
from nodeguard.models.solver import solve_per_sample
from nodeguard.storage.files import display_path, json_text, storage_error
from nodeguard.storage.images import find_images, read_image, read_image_frames

runner = CliRunner()


@pytest.fixture
def digits():
    """Four real test digits as 8-bit arrays (H, W) and their labels."""
    test = load_dataset("mnist5k").test
    return [test.images[index, 0].numpy() for index in range(4)], test.labels[:4].tolist()


def levels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0)


# -- reading: every mode by its rule --------------------------------------------------------


def test_every_mode_maps_to_the_same_values_as_its_8bit_png(tmp_path, digits):
    digit = digits[0][0]
    expected = levels(digit)
    files = {
        "L.png": Image.fromarray(digit),
        "P.gif": Image.fromarray(digit).convert("P"),
        "RGB.png": Image.fromarray(digit).convert("RGB"),
        "RGBA_opaque.png": Image.fromarray(digit).convert("RGBA"),
        "LA_opaque.png": Image.fromarray(digit).convert("LA"),
        "I16.png": Image.fromarray(digit.astype(np.uint16) * 257),  # 16-bit: level * 257 / 65535 = level / 255
        "F.tif": Image.fromarray(digit.astype(np.float32) / 255.0),  # float in [0, 1], as it is
        "CMYK.tif": Image.fromarray(digit).convert("CMYK"),
        "pgm.pgm": Image.fromarray(digit),
    }
    for name, picture in files.items():
        picture.save(tmp_path / name)
        image = read_image(tmp_path / name, channels=1)
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32, name
        assert float((image[0] - expected).abs().max()) <= 1 / 255 + 1e-6, name
    bilevel = (digit > 127).astype(np.uint8) * 255
    Image.fromarray(bilevel).convert("1").save(tmp_path / "one.png")
    assert torch.equal(read_image(tmp_path / "one.png", 1)[0], torch.from_numpy(bilevel > 127).float())
    # a float image keeps precision an 8-bit file cannot hold
    fine = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    Image.fromarray(fine).save(tmp_path / "fine.tif")
    assert torch.equal(read_image(tmp_path / "fine.tif", 1)[0], torch.from_numpy(fine))
    # a colour model gets a grey image on all three channels
    colour = read_image(tmp_path / "I16.png", channels=3)
    assert colour.shape == (3, 28, 28) and torch.equal(colour[0], colour[2])


def test_refusals_say_why(tmp_path, digits):
    digit = digits[0][0]
    Image.fromarray(digit.astype(np.float32) / 255.0 * 3).save(tmp_path / "range.tif")
    rgba = np.array(Image.fromarray(digit).convert("RGBA"))
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    Image.fromarray(np.full((28, 28), 70000, dtype=np.int32)).save(tmp_path / "int32.tif")  # signed 32-bit
    for name, reason in (
        ("range.tif", r"float image with values in \[0, 3\]"),
        ("transparent.png", "1 transparent pixel"),
        ("int32.tif", "signed integer image"),
    ):
        with pytest.raises(ImageReadError, match=reason):
            read_image(tmp_path / name, 1)


def sixteen_bit_rgb_png(path, height: int = 4, width: int = 4) -> None:
    """A 16-bit RGB PNG, written chunk by chunk (Pillow cannot save one)."""
    rows = b"".join(b"\x00" + np.full((width, 3), 1000, dtype=">u2").tobytes() for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_what_a_viewer_would_show_otherwise_is_refused(tmp_path, digits):
    digit = digits[0][0]
    # a colour key (PNG tRNS) makes every pixel of that level transparent
    Image.fromarray(digit).save(tmp_path / "keyed.png", transparency=int(digit[14, 14]))
    with pytest.raises(ImageReadError, match="transparent pixel"):
        read_image(tmp_path / "keyed.png", 1)
    unused = int(np.setdiff1d(np.arange(256), digit)[0])  # a key no pixel has: nothing is transparent
    Image.fromarray(digit).save(tmp_path / "unkeyed.png", transparency=unused)
    assert torch.equal(read_image(tmp_path / "unkeyed.png", 1)[0], levels(digit))
    sixteen_bit_rgb_png(tmp_path / "rgb16.png")  # Pillow would decode it to 8 bits
    with pytest.raises(ImageReadError, match="16-bit colour"):
        read_image(tmp_path / "rgb16.png", 1)


def test_every_page_of_a_tiff_is_read(tmp_path, digits):
    pages = [Image.fromarray(picture) for picture in digits[0][:2]]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    frames = read_image_frames(tmp_path / "pages.tif", 1)
    assert [frame.frame for frame in frames] == [0, 1]
    assert torch.equal(frames[1].image[0], levels(digits[0][1]))


def test_exif_orientation_is_applied_as_viewers_do(tmp_path, digits):
    digit = digits[0][0]
    Image.fromarray(digit).save(tmp_path / "upright.jpg", quality=100, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": stored turned the other way
    Image.fromarray(digit).rotate(90, expand=True).save(tmp_path / "stored.jpg", exif=exif, quality=100, subsampling=0)
    upright, shown = read_image(tmp_path / "upright.jpg", 1), read_image(tmp_path / "stored.jpg", 1)
    assert float((upright - shown).abs().max()) <= 3 / 255  # JPEG at quality 100
    with Image.open(tmp_path / "stored.jpg") as raw:  # as stored, it is another picture
        assert float((levels(np.asarray(raw.convert("L"))) - upright[0]).abs().max()) > 0.5


def test_every_frame_is_judged(tiny_model, tmp_path, digits):
    pictures, _labels = digits
    frames = [Image.fromarray(picture) for picture in pictures[:3]]
    frames[0].save(tmp_path / "three.gif", save_all=True, append_images=frames[1:])
    read = read_image_frames(tmp_path / "three.gif", 1)
    assert [frame.name.split("/")[-1] for frame in read] == ["three.gif#0", "three.gif#1", "three.gif#2"]
    for frame, picture in zip(read, pictures, strict=False):
        assert torch.equal(frame.image[0], levels(picture))
    with pytest.raises(ImageReadError, match="3 frames"):
        read_image(tmp_path / "three.gif", 1)
    report = defend_paths([tmp_path / "three.gif"], DefenseSettings(votes=3, vmin=1, seed=0), device="cpu")
    assert [image.path.split("/")[-1] for image in report.images] == ["three.gif#0", "three.gif#1", "three.gif#2"]


def test_a_float_tiff_is_classified_like_its_8bit_png(tiny_model, tmp_path, digits):
    """The same values (level / 255, as float32) give the same votes: by construction."""
    pictures, _labels = digits
    for index, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"d{index}.png")
        Image.fromarray(picture.astype(np.float32) / 255.0).save(tmp_path / f"d{index}.tif")
    report = defend_paths([tmp_path], DefenseSettings(votes=5, vmin=3, seed=0), device="cpu")
    by_name = {image.path.split("/")[-1]: image for image in report.images}
    for index in range(len(pictures)):
        assert by_name[f"d{index}.png"].votes == by_name[f"d{index}.tif"].votes


def test_a_folder_is_scanned_by_content_and_what_is_skipped_is_listed(tmp_path, digits):
    digit = digits[0][0]
    for name in ("a.png", "b.PNG", "c.pgm", "d.ppm", "e.gif", "f.jpe", "g.jfif", "h.bmp"):
        picture = Image.fromarray(digit).convert("RGB") if name.endswith("ppm") else Image.fromarray(digit)
        picture.save(tmp_path / name, format=None if not name.endswith(("jpe", "jfif")) else "JPEG")
    Image.fromarray(digit).save(tmp_path / "no_suffix", format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(digit).save(tmp_path / "report.pdf")  # Pillow writes PDFs but does not read them
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # identified, never decoded
    found = find_images([tmp_path])
    assert sorted(path.name for path in found.files) == [
        "a.png",
        "b.PNG",
        "c.pgm",
        "d.ppm",
        "e.gif",
        "f.jpe",
        "g.jfif",
        "h.bmp",
        "no_suffix",
    ]
    assert [(path.name, reason) for path, reason in found.skipped] == [
        (name, "not an image file Pillow can decode") for name in ("notes.txt", "report.pdf", "weights.h5")
    ]
    for path in found.files:
        assert read_image(path, 1).shape == (1, 28, 28)


# -- numbers: checked before any work ---------------------------------------------------------

BAD_VALUES = [
    (["defend", ".", "--tol-range", "1e-40,1e-38"], "--tol-range must be in"),
    (["defend", ".", "--tol-range", "1e-15,1e-15"], "--tol-range must be in"),
    (["roc", "--tol-range", "nan,1e-1"], "--tol-range must be a finite number"),
    (["attack", "cw", "--tol-attack", "1e-40"], "--tol-attack must be in"),
    (["attack", "cw", "--tol-attack", "nan"], "--tol-attack must be a finite number"),
    (["attack", "cw", "--kappa", "inf"], "--kappa must be a finite number"),
    (["attack", "cw", "--initial-const", "-1"], "--initial-const must be in"),
    (["attack", "pgd", "--eps", "nan"], "--eps must be a finite number"),
    (["sweep", "--tols", "1e-40"], "--tols must be in"),
    (["sweep", "--tols", "nan"], "--tols must be a finite number"),
    (["security", "--eps", "nan"], "--eps must be a finite number"),
    (["security", "--kappas", "-0.1"], "--kappas must be in"),
    (["train", "mnist5k", "--lr", "nan"], "--lr must be a finite number"),
    (["train", "mnist5k", "--tol-train", "100"], "--tol-train must be in"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_a_bad_number_is_one_line_before_any_model_is_loaded(args, message):
    """The registry is empty here: an error about the value, not about a missing model,
    shows that the value was checked first."""
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr and "Traceback" not in result.output


def test_the_tolerance_floor_and_ceiling_are_stated_and_the_floor_can_be_met(tiny_model, digits):
    assert TOL_MIN == 1e-6 and TOL_MAX == 10.0
    DefenseSettings(tol_range=ToleranceRange(TOL_MIN, TOL_MAX))  # both ends allowed
    model = load_model(tiny_model, device="cpu").model
    images = torch.stack([levels(picture)[None] for picture in digits[0]])
    for tol in (TOL_MIN, TOL_MAX):  # each image solved alone, within the step budget
        logits, nfe = logits_alone(model, images, tol=tol)
        assert torch.isfinite(logits).all() and (nfe > 0).all()
        with torch.no_grad():  # and the batched torchdiffeq path
            assert torch.isfinite(model(images, tol=tol)).all()


def test_the_solver_stops_with_one_error_at_a_tolerance_it_cannot_meet():
    """dy/dt = -60 y in float32 at tol 1e-12: float32 rounding (1e-7) keeps every error
    estimate above the tolerance, so the step shrinks until the budget (or the step size) runs out."""

    def decay(t, y):
        return -60.0 * y

    y0 = torch.ones(2, 3)
    with pytest.raises(SolverError, match="cannot meet tolerance 1e-12"):
        solve_per_sample(decay, y0, torch.tensor([1e-12, 1e-3]), max_steps=300)
    solution = solve_per_sample(decay, y0, torch.tensor([1e-3, 1e-3]), max_steps=300)  # a tolerance it can meet
    assert torch.allclose(solution.y1, torch.full((2, 3), math.exp(-60.0)), atol=1e-3)  # within a few tolerances


def test_json_is_standard_json():
    text = json_text({"a": math.nan, "b": [math.inf, 1.5], "c": torch.tensor([1.0, math.nan])})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": [1.0, None]}
    assert "NaN" not in text and "Infinity" not in text


# -- names and output: nothing garbled, nothing lost -------------------------------------------


def test_names_that_are_not_utf8_or_look_like_markup_are_written_and_printed(tiny_model, tmp_path, digits):
    folder = tmp_path / "imgs"
    folder.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")  # not UTF-8: Python keeps the byte as a surrogate
    Image.fromarray(digits[0][0]).save(folder / odd)
    Image.fromarray(digits[0][1]).save(folder / "[red]x.png")
    out = tmp_path / "verdicts.csv"
    result = runner.invoke(app, ["defend", str(folder), "--votes", "3", "--vmin", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "[red]x.png" in result.stdout and "caf\\xe9.png" in result.stdout
    written = out.read_text(encoding="utf-8")
    assert "caf\\xe9.png" in written and "[red]x.png" in written and len(written.splitlines()) == 3
    assert display_path(folder / odd).endswith("caf\\xe9.png")


def test_an_output_file_that_cannot_be_written_fails_before_any_vote(tiny_model, tmp_path, digits):
    Image.fromarray(digits[0][0]).save(tmp_path / "a.png")
    (tmp_path / "blocker").write_text("a file, so no folder can be made under it")
    result = runner.invoke(app, ["defend", str(tmp_path / "a.png"), "--out", str(tmp_path / "blocker" / "v.csv")])
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot write")
    assert "voting" not in result.stderr and result.stdout == ""


def test_a_full_disk_or_a_read_only_folder_is_one_line_naming_the_path():
    full = storage_error(__import__("pathlib").Path("/cache/x.pt"), OSError(28, "No space left on device"))
    assert isinstance(full, StorageError) and "no room to write /cache/x.pt" in str(full)
    assert "run the same command again" in str(full)
    read_only = storage_error(__import__("pathlib").Path("/ro/x.pt"), OSError(30, "Read-only file system"))
    assert isinstance(read_only, StorageError) and "cannot write /ro/x.pt" in str(read_only)
    assert storage_error(__import__("pathlib").Path("/x"), ValueError("other")) is None


# -- secret draws ------------------------------------------------------------------------------


def test_the_draws_are_secret_per_installation_and_public_with_a_seed(tmp_path, digits):
    images = torch.stack([levels(picture)[None] for picture in digits[0]])
    first_root, second_root = tmp_path / "one", tmp_path / "two"
    first = draw_tolerances(images, 8, DEFAULT_TOL_RANGE, None, installation_key(first_root))
    again = draw_tolerances(images, 8, DEFAULT_TOL_RANGE, None, installation_key(first_root))
    other = draw_tolerances(images, 8, DEFAULT_TOL_RANGE, None, installation_key(second_root))
    assert torch.equal(first, again) and not torch.equal(first, other)
    key_file = first_root / "defense.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    public = draw_tolerances(images, 8, DEFAULT_TOL_RANGE, 0)  # --seed 0: the draws anyone can recompute
    assert not torch.equal(public, first)
    assert torch.equal(public, draw_tolerances(images, 8, DEFAULT_TOL_RANGE, 0, installation_key(second_root)))
    assert DefenseSettings().seed is None and DefenseSettings().draws_label(b"k" * 32).startswith("secret key ")
    assert DefenseSettings(seed=3).draws_label() == "public seed 3"


def test_reports_say_which_draws_they_used(tiny_model, tmp_path, digits):
    Image.fromarray(digits[0][0]).save(tmp_path / "a.png")
    secret = runner.invoke(app, ["defend", str(tmp_path / "a.png"), "--votes", "3", "--vmin", "1", "--json"])
    public = runner.invoke(
        app, ["defend", str(tmp_path / "a.png"), "--votes", "3", "--vmin", "1", "--json", "--seed", "0"]
    )
    secret_report, public_report = json.loads(secret.stdout), json.loads(public.stdout)
    assert secret_report["draws"].startswith("secret key ") and secret_report["seed"] is None
    assert public_report["draws"] == "public seed 0" and public_report["seed"] == 0
    expected = draw_tolerances(levels(digits[0][0])[None, None], 3, DEFAULT_TOL_RANGE, 0)
    assert public_report["images"][0]["tols"] == expected[0].tolist()
