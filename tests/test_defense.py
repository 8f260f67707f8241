from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import tiny_config
from torchdiffeq import odeint
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.data.datasets import load_dataset
from nodeguard.defense.files import defend_paths
from nodeguard.defense.randomization import (
    DEFAULT_TOL_RANGE,
    DefenseSettings,
    ToleranceRandomization,
    ToleranceRange,
    draw_tolerances,
)
from nodeguard.errors import ConfigError, NodeguardError
from nodeguard.intervals import rate_interval
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import load_model
from nodeguard.models.solver import solve_per_sample
from nodeguard.storage.images import save_png
from nodeguard.training.train import train_model

runner = CliRunner()


def check_verdict_intervals(report: dict) -> None:
    """The accepted and rejected shares are of the images voted on, each with the 95%
    interval of its count."""
    voted = len(report["images"])
    assert report["accepted"] == sum(image["accepted"] for image in report["images"])
    for verdict in ("accepted", "rejected"):
        rate = report[f"{verdict}_rate"]
        if voted == 0:
            assert rate == {"value": None, "count": 0, "total": 0, "interval": None}
            continue
        assert rate["count"] == report[verdict] and rate["total"] == voted
        assert rate["value"] == report[verdict] / voted
        assert rate["interval"] == rate_interval(report[verdict], voted)
        low, high = rate["interval"]
        assert low <= rate["value"] <= high


def test_image_in_a_mixed_batch_matches_torchdiffeq_alone(tiny_model):
    model = load_model(tiny_model, device="cpu").model
    images = load_dataset("mnist5k").test.float_images(slice(0, 8))
    tolerances = draw_tolerances(images, 8, DEFAULT_TOL_RANGE, seed=3)  # 64 (image, tolerance) pairs
    pair_images = images.repeat_interleave(8, 0)
    pair_tols = tolerances.reshape(-1)

    with torch.no_grad():
        solution = solve_per_sample(model.odeblock.func, model.features(pair_images), pair_tols)
        batched_logits = model.head(solution.y1)
        alone_logits, alone_nfe = [], []
        for image, tol in zip(pair_images, pair_tols.tolist(), strict=True):
            alone_logits.append(model(image[None], tol=tol))
            alone_nfe.append(model.last_nfe)
    alone_logits = torch.cat(alone_logits)
    assert solution.nfe.tolist() == alone_nfe  # the same steps, pair by pair
    assert torch.allclose(batched_logits, alone_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(batched_logits.argmax(1), alone_logits.argmax(1))

    votes_64 = classify_alone(model, images, tolerances, batch_size=64).predictions
    votes_5 = classify_alone(model, images, tolerances, batch_size=5).predictions
    assert torch.equal(votes_64, alone_logits.argmax(1).view(8, 8))
    assert torch.equal(votes_5, votes_64)


def test_a_shared_step_sequence_cannot_be_each_samples_own():
    """Why the per-sample solver exists, on a problem whose step counts differ by construction.

    dy/dt = -k y with k = 1 and k = 60 (k rides along as a second, constant component):
    dopri5's stability bound (|h k| <~ 3.3) keeps the stiff sample at about 18 steps or
    more (108 evaluations), while the mild one needs a handful at this tolerance (about
    30 evaluations; 236 for the stiff one on the machine this was written on). torchdiffeq solves a
    batch of both on one step sequence, so one of them cannot be on its own steps; the
    per-sample solver gives each sample the steps torchdiffeq takes on it alone.
    """

    class Decay(torch.nn.Module):
        def forward(self, t, state):
            value, rate = state[:, :1], state[:, 1:]
            return torch.cat([-rate * value, torch.zeros_like(rate)], dim=1)

    func = Decay()
    y0 = torch.tensor([[1.0, 1.0], [1.0, 60.0]], dtype=torch.float64)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def torchdiffeq_nfe(state):
        counted = []
        odeint(lambda t, y: counted.append(1) or func(t, y), state, times, rtol=1e-6, atol=1e-6, method="dopri5")
        return len(counted)

    alone = [torchdiffeq_nfe(y0[i : i + 1]) for i in range(2)]
    assert alone[1] >= 6 * 18 > alone[0]  # at least 18 steps of 6 evaluations for the stiff one
    # in one batch, the stability bound holds the shared steps to the stiff sample's pace,
    # so the mild sample is solved on far more steps than it takes alone
    shared = torchdiffeq_nfe(y0)
    assert shared >= 6 * 18 > alone[0]
    solution = solve_per_sample(lambda t, y: func(t, y), y0, torch.full((2,), 1e-6, dtype=torch.float64))
    assert solution.nfe.tolist() == alone
    # global error of a few tolerances: 1.5e-6 on the stiff one here
    assert torch.allclose(solution.y1[:, 0], torch.exp(-y0[:, 1]), rtol=0, atol=1e-5)


def test_draws_are_reproducible_per_image_and_prefix_consistent():
    images = load_dataset("mnist5k").test.float_images(slice(0, 6))
    first = draw_tolerances(images, 20, DEFAULT_TOL_RANGE, seed=0)
    assert torch.equal(first, draw_tolerances(images, 20, DEFAULT_TOL_RANGE, seed=0))
    assert not torch.equal(first, draw_tolerances(images, 20, DEFAULT_TOL_RANGE, seed=1))
    assert torch.equal(draw_tolerances(images.flip(0), 20, DEFAULT_TOL_RANGE, seed=0), first.flip(0))
    assert torch.equal(draw_tolerances(images, 5, DEFAULT_TOL_RANGE, seed=0), first[:, :5])
    assert first.min() >= 1e-5 and first.max() <= 1e-1
    logs = first.log10()
    assert logs.min() < -4 and logs.max() > -2  # spread over the decades, not clustered


def test_verdicts_follow_vmin_and_are_reproducible(tiny_model):
    model = load_model(tiny_model, device="cpu").model
    images = load_dataset("mnist5k").test.float_images(slice(0, 10))
    defense = ToleranceRandomization(model, DefenseSettings(votes=7, vmin=4, seed=2))
    votes = defense.vote(images)
    again = defense.vote(images)
    assert torch.equal(votes.predictions, again.predictions)
    v_agree = votes.v_agree()
    assert torch.equal(votes.accepted(4), v_agree > 4)
    # the votes carry the operating point they were drawn for; another is a value away
    assert votes.vmin == 4 and torch.equal(votes.accepted(), v_agree > 4)
    assert torch.equal(votes.at(6).accepted(), v_agree > 6) and votes.vmin == 4
    with pytest.raises(ConfigError, match="`vmin` must be in"):
        votes.at(7)
    with pytest.raises(ValueError, match="no operating point"):
        replace(votes, vmin=None).accepted()
    counts = votes.counts()
    assert counts.sum(1).tolist() == [7] * 10 and torch.equal(counts.max(1).values, v_agree)


def test_defense_settings_and_model_are_checked(tiny_model, registry):
    with pytest.raises(ConfigError, match="`vmin` must be in"):
        DefenseSettings(votes=5, vmin=5)
    with pytest.raises(ConfigError, match="`tol_range` must be low <= high"):
        ToleranceRange(1e-1, 1e-5)
    # a pair is made a range, checked once, where it enters
    assert DefenseSettings(tol_range=(1e-5, 1e-2)).tol_range == ToleranceRange(1e-5, 1e-2)
    with pytest.raises(ConfigError, match="`tol_range` must be low <= high"):
        DefenseSettings(tol_range=(1e-1, 1e-5))
    with pytest.raises(TypeError, match="ToleranceRange"):
        DefenseSettings(tol_range=1e-3)
    train_model(tiny_config(arch="resnet", epochs=1), name="res", registry=registry)
    with pytest.raises(ConfigError, match="needs an ODE model"):
        ToleranceRandomization(load_model("res", registry=registry).model)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    test = load_dataset("mnist5k").test
    for index in range(3):
        save_png(test.images[index], folder / f"good{index}.png")
    save_png(test.images[3], folder / "nested" / "deep.png")
    (folder / "empty.png").write_bytes(b"")
    good_bytes = (folder / "good0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good_bytes[: len(good_bytes) // 2])
    (folder / "text.png").write_text("this is not an image")
    (folder / "noise.jpg").write_bytes(bytes(range(256)) * 4)
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_bad_files_are_reported_and_good_images_classified(tiny_model, image_folder):
    report = defend_paths([image_folder], DefenseSettings(votes=5, vmin=3), device="cpu")
    voted = sorted(image.path.split("/")[-1] for image in report.images)
    failed = sorted(error.path.split("/")[-1] for error in report.errors)
    assert voted == ["deep.png", "good0.png", "good1.png", "good2.png"]
    assert failed == ["empty.png", "noise.jpg", "text.png", "truncated.png"]
    assert all(error.error.startswith("cannot read image") for error in report.errors)
    assert report.accepted + report.rejected == 4 and report.unreadable == 4
    check_verdict_intervals(report.to_dict())
    assert [item.path.split("/")[-1] for item in report.skipped] == ["notes.txt"]  # listed, with its reason
    for image in report.images:
        assert len(image.votes) == 5 and len(image.tols) == 5 and 1 <= image.v_agree <= 5


def test_wrong_size_is_refused_unless_resize(tiny_model, tmp_path):
    big = torch.randint(0, 256, (1, 56, 56), dtype=torch.uint8)
    save_png(big, tmp_path / "big.png")
    report = defend_paths([tmp_path / "big.png"], DefenseSettings(votes=3, vmin=1), device="cpu")
    assert report.images == [] and "set `resize`" in report.errors[0].error
    check_verdict_intervals(report.to_dict())  # nothing voted on: no share, no interval
    resized = defend_paths([tmp_path / "big.png"], DefenseSettings(votes=3, vmin=1), device="cpu", resize=True)
    assert len(resized.images) == 1 and resized.errors == []


def test_defend_cli_json_table_and_exit_status(tiny_model, image_folder, tmp_path):
    result = runner.invoke(
        app, ["defend", str(image_folder), "--votes", "5", "--vmin", "3", "--json", "--out", str(tmp_path / "out.csv")]
    )
    assert result.exit_code == 3, result.output  # some files were unreadable
    data = json.loads(result.stdout)
    assert {"images", "errors"} <= set(data) and len(data["images"]) == 4 and len(data["errors"]) == 4
    for key in ("path", "prediction", "votes", "v_agree", "accepted", "tols"):
        assert key in data["images"][0]
    assert {"accepted_rate", "rejected_rate"} <= set(data)
    check_verdict_intervals(data)
    # a header, 4 verdicts, 4 unreadable files and the skipped notes.txt
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 8 + 1

    clean = image_folder / "nested"
    human = runner.invoke(app, ["defend", str(clean), "--votes", "5", "--vmin", "3"])
    assert human.exit_code == 0 and "deep.png" in human.stdout and "accepted" in human.stdout
    assert "intervals: 95% Clopper-Pearson over 1 image" in human.stdout


def test_defend_cli_errors_are_one_line(tiny_model, tmp_path):
    (tmp_path / "empty_folder").mkdir()
    for args in (
        ["defend", str(tmp_path / "missing")],
        ["defend", str(tmp_path / "empty_folder")],
        ["defend", str(tmp_path), "--vmin", "20"],
        ["defend", str(tmp_path), "--tol-range", "x"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0
        assert "Traceback" not in result.output


def test_find_images_refuses_missing_paths(tmp_path):
    from nodeguard.storage.images import find_images

    with pytest.raises(NodeguardError, match="does not exist"):
        find_images([tmp_path / "nope"])
