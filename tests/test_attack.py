from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchattacks
from conftest import FIRST_CORRECT
from typer.testing import CliRunner

from nodeguard.attacks import CarliniWagnerL2, FastMinimumNormL2, PinnedTolerance, classification_margin
from nodeguard.cli import app
from nodeguard.data.datasets import load_dataset
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import AttackReport, AttackSettings
from nodeguard.intervals import rate_interval
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import load_model
from nodeguard.progress import RecordingProgress
from nodeguard.stages.attack import run_attack
from nodeguard.stages.attack_sets import load_attack_set
from nodeguard.storage.images import read_image


def test_margin_is_right_when_other_logits_are_negative():
    logits = torch.tensor([[-1.0, -3.0, -2.0], [2.0, 5.0, -1.0]])
    labels = torch.tensor([0, 0])
    assert classification_margin(logits, labels).tolist() == [1.0, -3.0]
    # torchattacks' formula takes the zero of the masked-out true class as "other best" and
    # so calls the first sample misclassified (margin -1) although class 0 wins
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    their_margin = logits[:, 0] - torch.max((1 - onehot) * logits, dim=1)[0]
    assert their_margin.tolist()[0] == -1.0


def test_every_pixel_can_move_in_tanh_space(tiny_model):
    loaded = load_model(tiny_model, device="cpu")
    attack = CarliniWagnerL2(PinnedTolerance(loaded.model, 1e-3))
    images = torch.tensor([0.0, 1.0, 0.5])
    w = attack.to_tanh_space(images)
    assert torch.isfinite(w).all()
    assert torch.allclose(attack.to_pixels(w), images, atol=1e-6)
    w.requires_grad_(True)
    (gradient,) = torch.autograd.grad(attack.to_pixels(w).sum(), w)
    assert (gradient > 0.05).all()  # torchattacks' atanh(+-1) would be infinite here


def correct_test_images(loaded, count):
    test = load_dataset("mnist5k").test
    images, labels = test.float_images(slice(0, 3 * count)), test.labels[: 3 * count]
    predictions = classify_alone(loaded.model, images, 1e-3).predictions
    keep = (predictions == labels).nonzero().squeeze(1)[:count]
    return images[keep], labels[keep]


def test_fixed_c_moves_the_pixels_torchattacks_cw_freezes(tiny_model):
    """What differs by construction: torchattacks maps pixels at exactly 0 or 1 to w = +-inf,
    where tanh has no gradient, so they never move (most of an MNIST digit); ours moves them.
    Comparing the two attacks' success or L2 would compare two optimisers' floats instead."""
    loaded = load_model(tiny_model, device="cpu")
    pinned = PinnedTolerance(loaded.model, 1e-3)
    images, labels = correct_test_images(loaded, 16)
    const, steps, lr = 100.0, 60, 0.05

    theirs = torchattacks.CW(pinned, c=const, kappa=0, steps=steps, lr=lr)(images, labels)
    ours = CarliniWagnerL2(pinned, initial_const=const, binary_steps=1, steps=steps, lr=lr, decision_slack=0.0)(
        images, labels
    )
    saturated = (images == 0) | (images == 1)
    assert saturated.float().mean() > 0.5  # MNIST: mostly background
    assert torch.equal(theirs[saturated], images[saturated])
    # ours: the loss CW descends has a gradient at every image's saturated pixels, so Adam
    # moves them. (Whether the best adversarial it keeps still differs there is a matter of
    # floats: one found early can have them back on 0 or 1. Seen on another tiny model.)
    assert ours.shape == images.shape and float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
    attack = CarliniWagnerL2(pinned)
    w = attack.to_tanh_space(images).requires_grad_(True)
    margins = classification_margin(pinned(attack.to_pixels(w)), labels)
    (gradient,) = torch.autograd.grad(margins.sum(), w)
    for row in range(len(images)):
        assert (gradient[row][saturated[row]] != 0).any()


CW_FAST = {"steps": 30, "binary_steps": 3}
# the attacks that these tests run: CW (whether it succeeds on an image depends on the
# model's floats: what is asserted holds for every success) and blend, which succeeds on
# every image by construction (conftest.check_blend_can_succeed)
ATTACKS_UNDER_TEST = [
    pytest.param("cw", CW_FAST, id="cw"),
    pytest.param("fmn", {"steps": 20}, id="fmn"),
    pytest.param("blend", {}, id="blend"),
]


def check_success_intervals(report: dict, attack_set=None) -> None:
    """Each success rate of an attack report holds its point estimate and is the 95%
    interval of the report's own counts (and of the saved set's, when given)."""
    for suffix in ("", "_8bit"):
        rate = report[f"success_rate{suffix}"]
        successes = rate["count"]
        assert isinstance(successes, int) and 0 <= successes <= report["count"] == rate["total"]
        if attack_set is not None:
            assert successes == int(getattr(attack_set, f"success{suffix}").sum())
        assert rate["value"] == pytest.approx(successes / report["count"])
        assert rate["interval"] == rate_interval(successes, report["count"])
        low, high = rate["interval"]
        assert low <= rate["value"] <= high


@pytest.mark.parametrize(("attack", "options"), ATTACKS_UNDER_TEST)
def test_successful_adversarials_are_valid_and_misclassified_at_tol_attack(tiny_model, registry, attack, options):
    report = run_attack(
        AttackSettings.with_overrides(attack=attack, count=FIRST_CORRECT, batch_size=FIRST_CORRECT, **options),
        model=tiny_model,
        device="cpu",
    )
    assert report.count == FIRST_CORRECT
    if attack == "blend":
        assert report.success_rate.value == 1.0 and report.success_rate_8bit.value == 1.0
    data = load_attack_set(registry, tiny_model, report.set)
    check_success_intervals(report.to_dict(), data)
    summary = json.loads((Path(report.path) / "summary.json").read_text())
    assert summary["success_rate"] == report.success_rate.to_dict()
    adversarial, success, labels = data.adversarial, data.success, data.labels
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    loaded = load_model(tiny_model, device="cpu")
    loaded.model.tol = 1e-1  # the model's own setting must not matter: verify at tol_attack
    predictions = classify_alone(loaded.model, adversarial[success], report.tol_attack).predictions
    assert (predictions != labels[success]).all()
    if success.any():
        assert report.mean_l2 > 0 and report.mean_mse == pytest.approx(
            float((data.l2[success] ** 2 / 784).mean()), rel=1e-5
        )
    else:
        assert report.mean_l2 is None and report.success_rate.count == 0


def test_attack_pins_the_solver_tolerance_and_solves_each_image_alone(tiny_model, monkeypatch):
    import nodeguard.models.networks as models

    loaded = load_model(tiny_model, device="cpu")
    loaded.model.tol = 0.5
    tolerances, batched_calls = [], []
    solve = models.solve_per_sample

    def recording_solve(func, h, tols, **options):
        tolerances.extend(torch.as_tensor(tols).reshape(-1).tolist())
        return solve(func, h, tols, **options)

    monkeypatch.setattr(models, "solve_per_sample", recording_solve)
    loaded.model.odeblock.register_forward_pre_hook(lambda module, args: batched_calls.append(1))
    run_attack(
        AttackSettings.with_overrides(count=4, batch_size=4, steps=5, binary_steps=1, tol_attack=1e-4),
        model=tiny_model,
        device="cpu",
        loaded=loaded,
    )
    assert tolerances and set(tolerances) == {1e-4}
    assert batched_calls == []  # no forward of the attack or its checks shared steps across a batch
    assert loaded.model.tol == 0.5


@pytest.mark.parametrize(("attack", "options"), ATTACKS_UNDER_TEST)
def test_refined_adversarials_land_on_the_boundary(tiny_model, registry, attack, options):
    """Every refined adversarial has margin -(kappa + slack) to within the bisection's
    resolution: 2^-24 of the perturbation moves the margin by far less than EPSILON (the
    margin falls by a few logits over the whole perturbation)."""
    from nodeguard.attacks.boundary import MARGIN_SLACK

    epsilon = 1e-5
    report = run_attack(
        AttackSettings.with_overrides(attack=attack, count=8, batch_size=8, **options), model=tiny_model, device="cpu"
    )
    data = load_attack_set(registry, tiny_model, report.set)
    margins = data.margin[data.success]
    if attack == "blend":
        assert len(margins) == 8
    assert (margins <= -MARGIN_SLACK).all() and (margins >= -MARGIN_SLACK - epsilon).all(), margins
    assert (data.margin_8bit[data.success_8bit] <= -MARGIN_SLACK).all()
    if len(margins):
        assert report.median_abs_margin == pytest.approx(MARGIN_SLACK, abs=epsilon)
        assert report.p90_abs_margin_8bit is not None and report.p90_abs_margin_8bit >= MARGIN_SLACK


def test_grid_tightening_only_moves_pixels_back_and_keeps_the_margin(tiny_model, registry):
    """tighten_on_grid moves pixels toward the original only, never past it, and every row
    keeps a margin of at most the target."""
    from nodeguard.attacks.boundary import MARGIN_SLACK, tighten_on_grid

    report = run_attack(
        AttackSettings.with_overrides(attack="blend", count=8, batch_size=8), model=tiny_model, device="cpu"
    )
    data = load_attack_set(registry, tiny_model, report.set)
    model = load_model(tiny_model, device="cpu").model
    rows = data.success_8bit
    assert rows.all()  # blend: by construction
    clean_levels, labels = (data.clean[rows] * 255).round(), data.labels[rows]
    # start from the plain rounding of the float adversarial (it overshoots the boundary)
    # where that is adversarial, else from the saved 8-bit adversarial (adversarial by construction)
    rounded = (data.adversarial[rows] * 255).round()
    plain_holds = classify_alone(model, rounded / 255, 1e-3, labels).margins <= -MARGIN_SLACK
    start = torch.where(plain_holds.view(-1, 1, 1, 1), rounded, data.adversarial_8bit[rows].float())
    tightened = tighten_on_grid(model, 1e-3, clean_levels, start, labels, -MARGIN_SLACK)
    before, after = start - clean_levels, tightened - clean_levels
    assert (after.abs() <= before.abs()).all() and (after * before >= 0).all()
    margins = classify_alone(model, tightened / 255, 1e-3, labels).margins
    assert (margins <= -MARGIN_SLACK).all()


class StopAfterFirstBatch(RecordingProgress):
    def task(self, description, total):
        class Task:
            def advance(self, steps=1, **fields):
                if "success" in fields:
                    raise KeyboardInterrupt

            def close(self):
                pass

        return Task()


def test_attack_set_is_reused_and_an_interrupted_attack_continues(tiny_model, registry):
    settings = AttackSettings.with_overrides(count=8, batch_size=4, steps=10, binary_steps=2)
    with pytest.raises(KeyboardInterrupt):
        run_attack(settings, model=tiny_model, device="cpu", progress=StopAfterFirstBatch())
    progress = RecordingProgress()
    resumed = run_attack(settings, model=tiny_model, device="cpu", progress=progress)
    assert any("continuing attack" in message and "after 1 finished" in message for message in progress.messages)
    again_progress = RecordingProgress()
    again = run_attack(settings, model=tiny_model, device="cpu", progress=again_progress)
    assert again.reused and again.set == resumed.set and again.success_rate == resumed.success_rate
    assert any("reusing" in message for message in again_progress.messages)

    straight = run_attack(
        AttackSettings.with_overrides(count=8, batch_size=4, steps=10, binary_steps=2, seed=1),
        model=tiny_model,
        device="cpu",
    )
    # CW draws nothing at random: the seed changes the key, not the adversarials
    assert straight.set != resumed.set
    first = load_attack_set(registry, tiny_model, resumed.set).adversarial
    second = load_attack_set(registry, tiny_model, straight.set).adversarial
    assert torch.equal(first, second)


def test_exported_pngs_read_back_as_the_saved_8bit_adversarials(tiny_model, tmp_path):
    report = run_attack(
        AttackSettings.with_overrides(attack="blend", count=6, batch_size=6),
        model=tiny_model,
        device="cpu",
        export_dir=tmp_path / "export",
    )
    pristine = sorted((tmp_path / "export" / "pristine").glob("*.png"))
    adversarial = sorted((tmp_path / "export" / "adversarial").glob("*.png"))
    assert len(pristine) == 6 and len(adversarial) == report.success_rate_8bit.count == 6
    loaded = load_model(tiny_model, device="cpu")
    images = torch.stack([read_image(path, channels=1) for path in adversarial])
    labels = torch.tensor([int(path.stem.split("label")[1]) for path in adversarial])
    assert (classify_alone(loaded.model, images, report.tol_attack).predictions != labels).all()


def test_pgd_linf_stays_in_budget(tiny_model, registry):
    report = run_attack(
        AttackSettings.with_overrides(attack="pgd", count=6, batch_size=6, steps=10, eps=0.2),
        model=tiny_model,
        device="cpu",
    )
    data = load_attack_set(registry, tiny_model, report.set)
    assert (data.adversarial - data.clean).abs().max() <= 0.2 + 1e-6
    # success counts exactly the adversarials misclassified alone at tol_attack
    predictions = classify_alone(
        load_model(tiny_model, device="cpu").model, data.adversarial, report.tol_attack
    ).predictions
    assert torch.equal(data.success, predictions != data.labels)


def test_bad_attack_settings_are_refused():
    with pytest.raises(ConfigError, match="cw, eot-cw, fmn, pgd"):
        AttackSettings(attack="fgsm")
    with pytest.raises(ConfigError, match="`count` must be at least 1"):
        AttackSettings(count=0)
    with pytest.raises(ConfigError, match="pgd takes no option kappa"):
        AttackSettings.with_overrides(attack="pgd", kappa=0.1)
    with pytest.raises(ConfigError, match="unknown PGD norm"):
        AttackSettings.with_overrides(attack="pgd", norm="l1")
    with pytest.raises(ConfigError, match="`steps` must be at least 1"):
        AttackSettings.with_overrides(steps=0)


def test_attack_cli_json(tiny_model):
    result = CliRunner().invoke(
        app, ["attack", "cw", "--count", "4", "--steps", "10", "--binary-steps", "1", "--tol-attack", "1e-3", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("model", "attack", "tol_attack", "count", "success_rate", "mean_l2", "mean_mse", "seconds", "set"):
        assert key in data
    assert data["model"] == "tiny" and data["tol_attack"] == 1e-3 and 0 <= data["success_rate"]["value"] <= 1
    check_success_intervals(data)
    assert AttackReport.from_dict(data).to_dict() == data  # the JSON is the typed report, whole
    human = CliRunner().invoke(app, ["attack", "cw", "--count", "4", "--steps", "10", "--binary-steps", "1"])
    assert "reused" in human.stdout and "success rate" in human.stdout
    assert f"success rate {data['success_rate']['value']:.1%} [" in human.stdout
    assert "intervals: 95% Clopper-Pearson over 4 images" in human.stdout


def test_an_image_gets_the_same_logits_and_gradient_alone_and_in_a_batch(tiny_model):
    """Each image is attacked on its own steps: the function the attack differentiates
    (the pinned per-sample solve) gives each image of a batch its logits and input gradient
    alone, up to float rounding (batched convolutions sum in another order). The bound is
    1e-4, relative to the largest entry. (Comparing whole attacks would compare 90 Adam
    steps, which can carry rounding into another point near the boundary.)"""
    loaded = load_model(tiny_model, device="cpu")
    pinned = PinnedTolerance(loaded.model, 1e-3)
    test = load_dataset("mnist5k").test
    clean, labels = test.float_images(slice(0, 8)), test.labels[:8]

    def logits_and_gradient(images, image_labels):
        images = images.clone().requires_grad_(True)
        logits = pinned(images)
        (gradient,) = torch.autograd.grad(classification_margin(logits, image_labels).sum(), images)
        return logits.detach(), gradient

    batch_logits, batch_gradient = logits_and_gradient(clean, labels)
    for index in (0, 7):
        logits, gradient = logits_and_gradient(clean[index : index + 1], labels[index : index + 1])
        scale = float(logits.abs().max())
        assert float((logits[0] - batch_logits[index]).abs().max()) <= 1e-4 * scale
        scale = float(gradient.abs().max())
        assert float((gradient[0] - batch_gradient[index]).abs().max()) <= 1e-4 * scale


class TwoClassLinear(torch.nn.Module):
    """Logits (w.x + b, 0): the margin of class 0 is w.x + b, the smallest L2 perturbation
    that makes it negative has norm (w.x + b) / ||w|| (while x - that step stays in [0, 1])."""

    def __init__(self, weight: torch.Tensor, bias: float):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = bias

    def forward(self, x):
        score = x.flatten(1) @ self.weight.flatten() + self.bias
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_fmn_reaches_the_closed_form_minimal_perturbation_of_a_linear_model():
    from nodeguard.attacks.boundary import MARGIN_SLACK

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1, 4, 4, generator=generator)
    images = 0.4 + 0.2 * torch.rand(6, 1, 4, 4, generator=generator)  # far enough from 0 and 1
    labels = torch.zeros(6, dtype=torch.long)
    model = TwoClassLinear(weight, bias=0.0)
    scores = images.flatten(1) @ weight.flatten()
    model.bias = float(0.3 - scores.min())  # every image on class 0's side, margin >= 0.3
    margins = scores + model.bias
    exact = (margins + MARGIN_SLACK) / weight.norm()  # the distance to margin -MARGIN_SLACK
    # the minimal step moves pixel i by exact * |w_i| / ||w||: less than the 0.4 to 0 or 1
    assert float(exact.max() * weight.abs().max() / weight.norm()) < 0.4
    adversarial = FastMinimumNormL2(model, steps=60)(images, labels)
    found = (adversarial - images).flatten(1).norm(dim=1)
    adversarial_margins = classification_margin(model(adversarial), labels)
    assert (adversarial_margins <= -MARGIN_SLACK + 1e-6).all()
    # no adversarial is closer than the hyperplane (up to float32 rounding), and FMN gets
    # within 1% of it in 60 steps: its radius shrinks by gamma each adversarial step
    assert (found >= exact * (1 - 1e-5)).all(), (found, exact)
    assert (found <= exact * 1.01).all(), found / exact


def test_fmn_returns_the_clean_image_where_it_finds_nothing():
    model = TwoClassLinear(torch.zeros(1, 2, 2), bias=1.0)  # class 0 everywhere: no adversarial exists
    images = torch.full((2, 1, 2, 2), 0.5)
    adversarial = FastMinimumNormL2(model, steps=5)(images, torch.zeros(2, dtype=torch.long))
    assert torch.equal(adversarial, images)


def test_fmn_from_the_cli(tiny_model):
    result = CliRunner().invoke(
        app, ["attack", "fmn", "--count", "4", "--steps", "5", "--alpha-init", "2", "--gamma-init", "0.1", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["attack"] == "fmn" and data["count"] == 4 and 0 <= data["success_rate"]["value"] <= 1
    refused = CliRunner().invoke(app, ["attack", "fmn", "--count", "4", "--gamma-init", "1.5"])
    assert refused.exit_code == 1 and "--gamma-init must be in (0, 1)" in refused.output
    refused = CliRunner().invoke(app, ["attack", "fmn", "--count", "4", "--binary-steps", "2"])
    assert refused.exit_code == 1 and "fmn takes no option binary_steps" in refused.output
