"""The evaluation's checks of itself: each indicator fires where it is built to, and only there."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from nodeguard.attacks import CarliniWagnerL2, CWOptions, PinnedTolerance
from nodeguard.attacks.cw import run_cw
from nodeguard.attacks.spec import still_shrinking, window_start
from nodeguard.data.datasets import load_dataset
from nodeguard.experiments.attack_sets import AttackSettings
from nodeguard.experiments.indicators import (
    budget_check,
    incomplete_optimization,
    margin_gradient_norms,
    optimality,
    randomized_model,
    silent_success,
    smallest_per_image,
    square_beats_white_box,
    unconstrained_failure,
    zero_gradient,
)
from nodeguard.experiments.security import JudgedAttack, SecurityRow, verdict
from nodeguard.models.loading import load_model
from nodeguard.stages.attack import run_attack
from nodeguard.stages.attack_sets import load_attack_set
from nodeguard.stages.in_memory import evaluate_in_memory
from nodeguard.stages.roc import RocSettings
from nodeguard.stages.security import SecuritySettings

INF = math.inf
FAST_CW = {"steps": 30, "binary_steps": 3}


def test_each_indicator_fires_exactly_on_the_images_built_to_fire():
    norms = torch.tensor([1.0, 0.0, float("nan"), 1e-13, float("inf")])
    assert zero_gradient(norms, "model").images == [1, 2, 3, 4]
    assert not zero_gradient(torch.tensor([0.5, 2.0]), "model").fired

    fooled = torch.tensor([True, False, True])
    failure = unconstrained_failure("cw k=0", fooled)
    assert failure.images == [1] and failure.unreliable and failure.count == 1 and failure.total == 3
    low, high = failure.rate.interval
    assert low <= failure.rate.value == 1 / 3 <= high and (failure.count, failure.total) == (1, 3)

    # a budgeted attack rerun unbounded: a failure where its bounded run fooled the image is a note
    rerun = unconstrained_failure("apgd-rand unbounded", fooled, torch.tensor([False, True, False]), minimal=False)
    assert rerun.images == [1] and rerun.fired and not rerun.unreliable
    assert unconstrained_failure("apgd-rand unbounded", fooled, torch.zeros(3, dtype=torch.bool)).unreliable

    silent = silent_success("cw k=0", torch.tensor([True, True, False]), torch.tensor([True, False, False]))
    assert silent.images == [1]

    square = torch.tensor([True, True, False, True, False])
    white = [torch.tensor([True, False, False, False, False]), torch.tensor([False, False, True, False, False])]
    beaten = square_beats_white_box(1.5, square, white)
    # image 0: a gradient attacker fooled it too; 1 and 3: Square alone; 2: the gradient attacker alone
    assert beaten.images == [1, 3] and beaten.about == "square e=1.5"

    # within a budget: a minimal attacker's L2 at most eps; a budgeted one's own budget
    # (rounding to 8 bits may put it a hair past eps)
    budgeted = _judged("square e=1.5", [1.5009, INF, 0.7], [True, False, True], budget=1.5)
    assert budgeted.within(1.5).tolist() == [True, False, True]
    assert budgeted.within(1.0).tolist() == [False, False, True]
    assert _judged("cw k=0", [1.5009, INF, 0.7], [True, False, True]).within(1.5).tolist() == [False, False, True]


def test_a_randomized_model_is_expected_and_unreliable_only_without_an_eot_attacker():
    steady = torch.ones(4, 5, 10)
    assert not randomized_model(steady, ["eot-cw d=4"]).fired
    moving = steady.clone()
    moving[2, 3, 1] += 0.1
    expected = randomized_model(moving, ["eot-cw d=4"])
    assert expected.fired and expected.images == [2] and not expected.unreliable
    assert randomized_model(moving, []).unreliable


def test_optimality_is_one_for_the_worst_case_and_the_ratio_of_areas_otherwise():
    best = torch.tensor([1.0, 2.0, INF])
    worse = torch.tensor([2.0, INF, INF])
    worst, owners = smallest_per_image({"a": best, "b": worse})
    assert torch.equal(worst, best) and owners == ["a", "a", None]
    assert optimality(best, worst, 4.0) == 1.0
    # areas under the robust-accuracy curves over [0, 4]: mean of min(l2, 4)
    assert optimality(worse, worst, 4.0) == pytest.approx(((1 + 2 + 4) / 3) / ((2 + 4 + 4) / 3))
    assert optimality(worse, torch.full((3,), INF), 4.0) is None


def _judged(label: str, l2: list[float], fooled_defended: list[bool], budget: float | None = None) -> JudgedAttack:
    row = SecurityRow("cw", label, 0.0, "set", len(l2), None, None, 0.0, None, 0.0, None)
    distances = torch.tensor(l2)
    return JudgedAttack(row, distances, torch.isfinite(distances), torch.tensor(fooled_defended), budget)


def test_the_verdict_names_the_attacker_that_breaks_a_budget_and_the_unreliable_checks():
    rows = [
        _judged("cw k=0", [0.5, 3.0, INF], [True, False, False]),
        _judged("eot-cw", [2.0, 1.2, INF], [False, True, False]),
    ]
    ok = torch.tensor([True, True, True])
    clean = [unconstrained_failure("cw k=0", torch.tensor([True, True, True]))]
    text = verdict(rows, ok, (0.25, 1.0), clean)
    assert "At L2 0.25: robust against these attackers" in text and "3 of 3 images kept" in text
    assert "At L2 1: not robust: cw k=0 is accepted with a wrong class on 1 of 3 images" in text
    assert "No indicator makes the evaluation unreliable" in text
    broken = [zero_gradient(torch.tensor([0.0, 1.0, 1.0]), "model at tol_train")]
    assert "may be unreliable: zero-gradient on model at tol_train (1 of 3 images)" in verdict(rows, ok, (1.0,), broken)


class EightLevels(nn.Module):
    """Inputs rounded to eight grey levels: the same class on most digits, a zero input
    gradient everywhere (the derivative of rounding): gradient masking by construction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 7) / 7


def _evaluate(model, count: int):
    test = load_dataset("mnist5k").test
    settings = SecuritySettings(
        count=count,
        kappas=(0.0,),
        eot=False,
        autoattack_eps=(),
        votes=3,
        vmin=0,
        eps=(0.0, 1.0, 2.0),
        attack_options={"steps": 20, "binary_steps": 2},
        square=False,
        seed=0,
    )
    roc = RocSettings(votes=(3,), count=count, seed=0, attack="blend")
    return evaluate_in_memory(
        model, test.images[:40], test.labels[:40], roc_settings=roc, security_settings=settings, device="cpu"
    ).security


def test_masked_gradients_fire_and_the_plain_model_stays_silent(tiny_model):
    plain = load_model(tiny_model, device="cpu").model
    masked = copy.deepcopy(plain)
    masked.normalize = nn.Sequential(EightLevels(), masked.normalize)
    images = load_dataset("mnist5k").test.float_images(slice(0, 4))
    labels = load_dataset("mnist5k").test.labels[:4]
    assert (margin_gradient_norms(masked, images, labels) == 0).all()
    assert (margin_gradient_norms(plain, images, labels) > 0).all()

    report = _evaluate(masked, 4)
    fired = {item.name: item for item in report.indicators if item.fired}
    assert fired["zero-gradient"].count == report.count  # every image, by construction
    # CW cannot move on a zero margin gradient: it fails where no image is adversarial already
    assert "unconstrained-failure" in fired
    assert "may be unreliable" in report.verdict and "zero-gradient" in report.verdict

    plain_report = _evaluate(plain, 4)
    gradient = [item for item in plain_report.indicators if item.name == "zero-gradient"]
    assert gradient and not any(item.fired for item in gradient)
    assert {score.label for score in plain_report.optimality} == {"cw k=0"}


def test_a_crippled_attack_is_flagged_where_it_runs(tiny_model):
    """CW with a step of 1e-9 cannot reach the decision boundary (margin -0.01 past it) from
    any correctly classified digit: it fails on every one, by construction, and says so; the
    model's gradients are there (the attack, not the model, failed)."""
    settings = AttackSettings(attack="cw", count=4, batch_size=4, options={"steps": 1, "binary_steps": 1, "lr": 1e-9})
    report = run_attack(settings, model=tiny_model, device="cpu")
    checks = {item.name: item for item in report.indicators}
    assert checks["unconstrained-failure"].count == report.count == 4 and checks["unconstrained-failure"].unreliable
    assert not checks["zero-gradient"].fired and not checks["silent-success"].fired


def test_incomplete_optimization_fires_where_the_smallest_adversarial_still_shrinks():
    # window: the last tenth of the steps (at least one); shrinking: by more than 1%, or first found there
    assert window_start(100) == 90 and window_start(5) == 4 and window_start(1) == 0
    at_window = torch.tensor([1.0, 1.0, INF, INF, 2.0])
    now = torch.tensor([0.98, 0.995, 1.2, INF, 2.0])
    assert still_shrinking(at_window, now).tolist() == [True, False, True, False, False]
    fired = incomplete_optimization("fmn", still_shrinking(at_window, now))
    assert fired.images == [0, 2] and fired.unreliable
    # in security: unreliable only where the attacker holds the image's smallest adversarial
    elsewhere = torch.tensor([False, True, False, True, True])
    assert not incomplete_optimization("fmn", still_shrinking(at_window, now), elsewhere).unreliable
    holds = torch.tensor([False, False, True, False, False])
    assert incomplete_optimization("fmn", still_shrinking(at_window, now), holds).unreliable


def test_the_budget_check_flags_a_rise_beyond_the_interval_only():
    own = torch.tensor([True] * 5 + [False] * 15)
    check, flag = budget_check("apgd-rand e=1.5", 1.5, (20, 100), own, own.clone())
    assert check.converged and not flag.fired and not flag.unreliable
    one_more = own.clone()
    one_more[7] = True  # 6 of 20 lies inside 5 of 20's interval: fired, not unreliable
    check, flag = budget_check("apgd-rand e=1.5", 1.5, (20, 100), own, one_more)
    assert check.images == flag.images == [7] and check.converged and flag.fired and not flag.unreliable
    everything = torch.ones(20, dtype=torch.bool)  # 20 of 20: far above [9%, 49%]
    check, flag = budget_check("apgd-rand e=1.5", 1.5, (20, 100), own, everything)
    assert not check.converged and flag.unreliable and check.fooled_more.count == 20 and check.fooled.count == 5
    assert "not converged" in verdict([], torch.ones(20, dtype=torch.bool), (), [flag], check, "")


def test_an_attack_stopped_as_it_finds_its_adversarials_is_flagged(tiny_model):
    """CW started from another class's digit (misclassified there, by construction) with one
    step and one search over c finds each image's adversarial at its only step, inside the
    window: incomplete on every image; started from the clean images it finds none there."""
    loaded = load_model(tiny_model, device="cpu")
    pinned = PinnedTolerance(loaded.model, loaded.tol_train).eval()
    found = run_attack(AttackSettings(attack="cw", count=4, batch_size=4, options=FAST_CW), model=tiny_model)
    data = load_attack_set(loaded.registry, tiny_model, found.set)
    assert data.still_improving is not None and len(data.still_improving) == 4
    (check,) = [item for item in found.indicators if item.name == "incomplete-optimization"]
    correct = data.clean_predictions == data.labels
    assert check.images == (data.still_improving & correct).nonzero().flatten().tolist()

    other = torch.tensor([next(j for j in range(4) if data.labels[j] != data.labels[i]) for i in range(4)])
    starts = data.clean[other]  # classified correctly alone: as a class other than row i's
    hot = CarliniWagnerL2(pinned, steps=1, binary_steps=1, decision_slack=0.0)
    hot(data.clean, data.labels, starts)
    assert hot.still_improving is not None and hot.still_improving.all()
    cold = run_cw(pinned, CWOptions(steps=1, binary_steps=1), data.clean, data.labels, 0)
    assert cold.still_improving is not None and not cold.still_improving.any()
    # found at the first step of the first of two searches (long before the last one's
    # window) and never shrunk after (a step of 1e-12): complete, by construction
    early = CarliniWagnerL2(pinned, steps=10, binary_steps=2, lr=1e-12, decision_slack=0.0, abort_early=False)
    early(data.clean, data.labels, starts)
    assert early.still_improving is not None and not early.still_improving.any()
