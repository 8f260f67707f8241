from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.defense.randomization import DefenseSettings, ToleranceRandomization
from nodeguard.errors import ConfigError
from nodeguard.experiments.roc import roc_from_scores
from nodeguard.intervals import Rate, rate_interval
from nodeguard.models.loading import load_model
from nodeguard.plain import to_plain
from nodeguard.progress import RecordingProgress
from nodeguard.stages.roc import RocSettings, run_roc

# blend succeeds on every image by construction (conftest.check_blend_can_succeed), so
# the ROC has negatives whatever floats the tiny model came out with
BLEND = {"attack": "blend"}


def test_auc_and_operating_points_by_hand():
    # pairs (pristine, adversarial): 5>3, 5>4, 5=5 (half), twice; 4>3, 4=4 (half), 4<5 -> 6.5 of 9
    curve = roc_from_scores(np.array([5, 5, 4]), np.array([3, 4, 5]), votes=5)
    assert curve.auc == pytest.approx(6.5 / 9)
    by_vmin = {point.vmin: point for point in curve.points}
    shares = {vmin: (point.tpr.value, point.fpr.value) for vmin, point in by_vmin.items()}
    assert shares[0] == (1.0, 1.0) and shares[5] == (0.0, 0.0)
    assert by_vmin[3].tpr.value == 1.0 and by_vmin[3].fpr.value == pytest.approx(2 / 3)
    assert by_vmin[4].tpr.value == pytest.approx(2 / 3) and by_vmin[4].fpr.value == pytest.approx(1 / 3)
    assert [(p.tpr.count, p.fpr.count) for p in curve.points] == [
        (3, 3),
        (3, 3),
        (3, 3),
        (3, 2),
        (2, 1),
        (0, 0),
    ]
    # at least 90% of pristine accepted only up to v_min = 3, which rejects 1 adversarial in 3
    assert curve.rejected_at_90_accept == Rate.of(1, 3) and curve.vmin_at_90_accept == 3
    # every pristine image accepted: the same point
    assert curve.rejected_at_100_accept == Rate.of(1, 3) and curve.vmin_at_100_accept == 3
    assert curve.rejected_at(3) == Rate.of(1, 3) and curve.rejected_at_accept(100) == Rate.of(1, 3)


def check_curve_intervals(curve, pristine: int, adversarial: int) -> None:
    """Each share of a curve holds its point estimate and is the interval of its own counts:
    over the pristine images for tpr, over the adversarials for fpr and the rejected shares."""
    for point in curve["points"]:
        for share, total in (("tpr", pristine), ("fpr", adversarial)):
            rate = point[share]
            assert rate["total"] == total and rate["value"] == pytest.approx(rate["count"] / total)
            assert rate["interval"] == rate_interval(rate["count"], total)
            low, high = rate["interval"]
            assert low <= rate["value"] <= high
    by_vmin = {point["vmin"]: point for point in curve["points"]}
    for level in (90, 95, 100):
        rejected, vmin = curve[f"rejected_at_{level}_accept"], curve[f"vmin_at_{level}_accept"]
        if rejected is None:
            assert vmin is None
            continue
        point = by_vmin[vmin]
        assert point["tpr"]["value"] >= level / 100
        assert rejected["count"] == adversarial - point["fpr"]["count"] and rejected["total"] == adversarial
        assert rejected["interval"] == rate_interval(rejected["count"], adversarial)
        low, high = rejected["interval"]
        assert low <= rejected["value"] <= high


def test_every_share_of_a_curve_carries_the_interval_of_its_counts():
    rng = np.random.default_rng(0)
    for votes in (1, 4, 9):
        pristine, adversarial = rng.integers(1, votes + 1, 37), rng.integers(1, votes + 1, 23)
        curve = roc_from_scores(pristine, adversarial, votes)
        check_curve_intervals(to_plain(curve), 37, 23)
    # only v_min = 0 accepts every pristine image, and it accepts every adversarial too
    curve = roc_from_scores(np.array([1, 5]), np.array([1, 1]), votes=5)
    assert curve.vmin_at_100_accept == 0 and curve.rejected_at_100_accept == Rate.of(0, 2)


def test_perfect_and_useless_detectors():
    assert roc_from_scores(np.array([5, 5]), np.array([1, 2]), votes=5).auc == 1.0
    assert roc_from_scores(np.array([3, 3]), np.array([3, 3]), votes=5).auc == 0.5
    perfect = roc_from_scores(np.array([5, 5]), np.array([1, 2]), votes=5)
    assert perfect.rejected_at_90_accept == perfect.rejected_at_95_accept == Rate.of(2, 2)
    with pytest.raises(ConfigError, match="at least one successful adversarial"):
        roc_from_scores(np.array([5]), np.array([]), votes=5)


def test_roc_runs_the_attack_then_caches_the_votes(tiny_model, tmp_path):
    from nodeguard.reporting.plots import plot_roc

    settings = RocSettings(votes=(3, 5), count=6, **BLEND)
    progress = RecordingProgress()
    first = run_roc(settings, model=tiny_model, device="cpu", progress=progress)
    plot_roc(first, tmp_path / "roc.png")  # the stage never draws; reporting does
    assert any("running the attack" in message for message in progress.messages)
    assert not first.votes_reused and first.pristine == 6 and first.adversarial == 6
    assert [curve.votes for curve in first.curves] == [3, 5]
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for curve in first.curves:
        assert 0.0 <= curve.auc <= 1.0 and len(curve.points) == curve.votes + 1
        check_curve_intervals(to_plain(curve), first.pristine, first.adversarial)

    again_progress = RecordingProgress()
    again = run_roc(settings, model=tiny_model, device="cpu", progress=again_progress)
    assert again.votes_reused and again.curves == first.curves
    assert any("nothing to solve" in message for message in again_progress.messages)


def test_smaller_v_curves_use_the_first_draws_of_the_largest(tiny_model):
    from nodeguard.experiments.attack_sets import AttackSettings
    from nodeguard.stages.attack import run_attack
    from nodeguard.stages.attack_sets import load_attack_set
    from nodeguard.storage.registry import Registry

    settings = RocSettings(votes=(2, 6), count=5, **BLEND)
    report = run_roc(settings, model=tiny_model, device="cpu")
    attack = run_attack(AttackSettings.with_overrides(count=5, **BLEND), model=tiny_model, device="cpu")
    pristine = load_attack_set(Registry(), tiny_model, attack.set).clean
    model = load_model(tiny_model, device="cpu").model
    two = ToleranceRandomization(model, DefenseSettings(votes=2, vmin=0)).vote(pristine)
    expected_tpr = [float((two.v_agree() > vmin).float().mean()) for vmin in range(3)]
    curve_two = report.curves[0]
    assert [point.tpr.value for point in curve_two.points] == pytest.approx(expected_tpr)
    six = ToleranceRandomization(model, DefenseSettings(votes=6, vmin=0)).vote(pristine)
    assert torch.equal(six.predictions[:, :2], two.predictions)


def test_roc_cli_json(tiny_model, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "roc",
            "--votes",
            "3,5",
            "--count",
            "5",
            "--attack",
            "blend",
            "--json",
            "--plot",
            str(tmp_path / "r.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    curve = data["curves"][0]
    for key in ("votes", "auc", "points", "rejected_at_90_accept"):
        assert key in curve
    for level in (90, 95, 100):
        assert {f"rejected_at_{level}_accept", f"vmin_at_{level}_accept"} <= set(curve)
    assert set(curve["points"][0]) == {"vmin", "tpr", "fpr"}
    for curve in data["curves"]:
        check_curve_intervals(curve, data["pristine"], data["adversarial"])
    human = CliRunner().invoke(app, ["roc", "--votes", "3,5", "--count", "5", "--attack", "blend"])
    assert human.exit_code == 0 and "AUC" in human.stdout
    assert f"intervals: 95% Clopper-Pearson over {data['adversarial']} adversarial images" in human.stdout
    bad = CliRunner().invoke(app, ["roc", "--votes", "five"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error:")
