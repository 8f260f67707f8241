from __future__ import annotations

import json

import pytest
import torch
from conftest import check_rate
from typer.testing import CliRunner

from nodeguard.attacks import PinnedTolerance
from nodeguard.attacks.boundary import MARGIN_SLACK
from nodeguard.attacks.cw import CarliniWagnerL2
from nodeguard.attacks.eot_cw import ToleranceDraws, attacker_generator
from nodeguard.cli import app
from nodeguard.data.datasets import load_dataset
from nodeguard.defense.randomization import DEFAULT_TOL_RANGE, draw_tolerances
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import AttackSettings
from nodeguard.experiments.security import choose_vmin
from nodeguard.models.loading import load_model
from nodeguard.progress import RecordingProgress
from nodeguard.stages.attack import run_attack
from nodeguard.stages.attack_sets import load_attack_set
from nodeguard.stages.report import security_command
from nodeguard.stages.roc import RocSettings, run_roc
from nodeguard.stages.security import ATTACK_SEED_STRIDE, SecurityReport, SecuritySettings, run_security
from nodeguard.storage.registry import Registry

FAST = {"steps": 30, "binary_steps": 3}


@pytest.mark.parametrize(("attack", "kappa", "options"), [("cw", 0.3, FAST), ("blend", 0.05, {})])
def test_an_attack_at_kappa_lands_at_minus_kappa(tiny_model, registry, attack, kappa, options):
    """With confidence kappa, every refined adversarial's margin is -(kappa + slack) to
    within the bisection's resolution (2^-24 of the perturbation moves the margin by far
    less than 1e-5), and its 8-bit version is at least that confident. CW's successes
    depend on the model's floats; blend succeeds on all 8 by construction (its targets
    clear kappa 0.05: conftest.CONFIDENT_MARGIN)."""
    epsilon = 1e-5
    report = run_attack(
        AttackSettings.with_overrides(attack=attack, count=8, batch_size=8, kappa=kappa, **options),
        model=tiny_model,
        device="cpu",
    )
    data = load_attack_set(registry, tiny_model, report.set)
    margins = data.margin[data.success]
    if attack == "blend":
        assert len(margins) == 8
    target = -(kappa + MARGIN_SLACK)
    assert (margins <= target).all() and (margins >= target - epsilon).all(), margins
    assert (data.margin_8bit[data.success_8bit] <= target).all()


def test_eot_draws_are_the_attackers_own(tiny_model):
    """The attacker's tolerances come from its own generator: the same attack seed gives
    the same draws, and they are not the defense's draws for any defense seed."""
    loaded = load_model(tiny_model, device="cpu")
    images = load_dataset("mnist5k").test.float_images(slice(0, 3))
    first = ToleranceDraws(loaded.model, 4, 1e-5, 1e-1, attacker_generator(0))
    second = ToleranceDraws(loaded.model, 4, 1e-5, 1e-1, attacker_generator(0))
    first(images)
    second(images)
    assert torch.equal(first.last_tolerances, second.last_tolerances)
    assert first.last_tolerances.min() >= 1e-5 and first.last_tolerances.max() <= 1e-1
    for defense_seed in range(4):
        assert not torch.equal(first.last_tolerances, draw_tolerances(images, 4, DEFAULT_TOL_RANGE, defense_seed))


def check_report(data: dict, attackers: int) -> None:
    assert len(data["points"]) == attackers
    for point in data["points"]:
        assert set(point) >= {"attack", "kappa", "mean_l2", "success_rate", "rejected", "defended_success"}
        # defended success counts only adversarials that fool the undefended model
        assert 0 <= point["defended_success"]["count"] <= point["success_rate"]["count"]
    curve = data["curve"]
    budgets = [point["eps"] for point in curve]
    assert budgets == sorted(budgets)
    for name in ("robust_accuracy_defended", "robust_accuracy_undefended"):
        values = [point[name]["count"] for point in curve]
        assert all(later <= earlier for earlier, later in zip(values, values[1:], strict=False)), values


def check_intervals(data: dict) -> None:
    """Every rate's interval contains it and is the Clopper–Pearson interval of its own counts."""
    count = data["count"]
    for point in data["points"]:
        check_rate(point["success_rate"], count)
        check_rate(point["defended_success"], count)
        # rejected: of the successful 8-bit adversarials
        check_rate(point["rejected"], point["success_rate"]["count"])
    for budget in data["curve"]:
        for name in ("robust_accuracy_defended", "robust_accuracy_undefended"):
            check_rate(budget[name], count)
    check_rate(data["pristine_accepted"], count)
    check_rate(data["pristine_accepted_correct"], count)


def check_spread(data: dict) -> None:
    """One spread per image set; its summary agrees with the per-image margins it came from."""
    labels = ["pristine"] + [point["label"] for point in data["points"]]
    assert [item["label"] for item in data["spreads"]] == labels
    for item in data["spreads"]:
        images = data["spread_images"][item["label"]]
        assert len(images["low"]) == item["count"] == len(images["high"]) == len(images["reference"])
        assert all(low <= high for low, high in zip(images["low"], images["high"], strict=True))
    pristine = data["spreads"][0]
    assert pristine["count"] == data["count"]
    minimal = data["minimal_label"]
    assert minimal == "cw k=0"
    assert [check["kappa"] for check in data["kappa_checks"]] == [0.0, 0.5]
    for check in data["kappa_checks"]:
        check_rate(check["defended_success"], data["count"])
        if check["predicted_survival"] is not None:
            assert 0 <= check["predicted_survival"] <= 1
    # the prediction at kappa 0 counts the minimal adversarials whose every draw lowers the margin
    images = data["spread_images"][minimal]
    rises = [high - reference for high, reference in zip(images["high"], images["reference"], strict=True)]
    if rises:
        assert data["kappa_checks"][0]["predicted_survival"] == pytest.approx(sum(r < 0 for r in rises) / len(rises))


def test_security_rows_curve_cache_and_the_defense_seed(tiny_model, tmp_path):
    args = ["security", "--model", tiny_model, "--count", "6", "--kappas", "0,0.5", "--draws", "2", "--votes", "5"]
    args += ["--steps", "30", "--binary-steps", "3", "--eps", "0,0.5,1,2,4", "--device", "cpu"]
    args += ["--aa-eps", "1.5", "--aa-steps", "5", "--aa-eot-iter", "2", "--square-queries", "8", "--square-draws", "2"]
    args += ["--tol-ranges", "1e-6:1", "--certify", "0.25", "--certify-n", "20"]
    result = CliRunner().invoke(app, [*args, "--json", "--plot", str(tmp_path / "security.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_report(data, attackers=6)
    assert [point["attack"] for point in data["points"]] == ["cw", "cw", "eot-cw", "apgd-rand", "square", "square"]
    assert [point["label"] for point in data["points"]][4:] == ["square e=1.5", "square-rand e=1.5 d=2"]
    # each row carries the time its attack set took (stored with the set)
    for point in data["points"]:
        stored = load_attack_set(Registry(), tiny_model, point["set"])
        assert point["attack_seconds"] == stored.seconds > 0
    check_intervals(data)
    check_spread(data)
    assert SecurityReport.from_dict(data).to_dict() == data  # the JSON is the typed report, whole
    assert (data["attack_seed"], data["attack_batch_size"]) == (0, 100)  # the defaults, recorded
    assert [item["tol_range"] for item in data["ranges"]] == [[1e-6, 1.0]]
    assert [row["label"] for row in data["ranges"][0]["rows"]] == [point["label"] for point in data["points"]]
    # the certified curve covers the very images attacked, read from certificates of the first test images
    (certified,) = data["certified"]
    assert certified["count"] == data["count"] == len(data["indices"])
    test_labels = load_dataset("mnist5k").test.labels
    assert certified["labels"] == [int(test_labels[index]) for index in data["indices"]]
    for point in certified["curve"]:
        check_rate(point["certified_accuracy"], data["count"])
    assert (tmp_path / "security.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # at eps 0 no adversarial is admitted: the defended model keeps what it accepts correctly
    assert data["curve"][0]["robust_accuracy_undefended"]["value"] == 1.0
    assert data["curve"][0]["robust_accuracy_defended"] == data["pristine_accepted_correct"]
    assert data["vmin_chosen"] and data["pristine_accepted"]["value"] >= 0.9
    # the budget check: AutoAttack-rand rerun with 5x its steps on the same first images
    budget = data["budget_check"]
    assert (budget["label"], budget["count"], budget["steps"], budget["steps_more"]) == ("apgd-rand e=1.5", 6, 5, 25)
    rerun = load_attack_set(Registry(), tiny_model, budget["set_key"])
    own = load_attack_set(Registry(), tiny_model, data["points"][3]["set"])
    assert rerun.settings.options["steps"] == 25 and torch.equal(rerun.indices, own.indices)
    assert budget["fooled"]["count"] == int(own.success_8bit.sum())
    assert budget["fooled_more"]["count"] == int(rerun.success_8bit.sum())
    check_rate(budget["fooled"], 6)
    check_rate(budget["fooled_more"], 6)
    assert budget["images"] == (rerun.success_8bit & ~own.success_8bit).nonzero().flatten().tolist()
    unbounded = {item["about"]: item for item in data["indicators"] if "unbounded" in item["about"]}
    assert sorted(unbounded) == ["apgd-rand unbounded", "square unbounded", "square-rand unbounded d=2"]
    assert all(item["name"] == "unconstrained-failure" and item["rate"]["total"] == 6 for item in unbounded.values())
    (not_converged,) = [item for item in data["indicators"] if item["name"] == "not-converged"]
    assert not_converged["unreliable"] == (not budget["converged"])
    assert "reduced budget, 5 steps with 2 EOT samples" in data["verdict"] and "rerun with 25 steps" in data["verdict"]

    settings = SecuritySettings(
        count=6,
        kappas=(0.0, 0.5),
        eot_draws=2,
        autoattack_eps=(1.5,),
        autoattack_steps=5,
        autoattack_eot_iter=2,
        votes=5,
        eps=(0, 0.5, 1, 2, 4),
        attack_options=FAST,
        square_queries=8,
        square_draws=2,
        tol_ranges=((1e-6, 1.0),),
    )
    progress = RecordingProgress()
    again = run_security(settings, model=tiny_model, device="cpu", progress=progress)
    assert again.reused and again.to_dict()["points"] == data["points"] and again.to_dict()["curve"] == data["curve"]

    # another defense seed: new votes, but the very same attack sets (no attacker reads it)
    progress = RecordingProgress()
    reseeded = run_security(
        SecuritySettings(**{**settings.__dict__, "seed": 7}), model=tiny_model, device="cpu", progress=progress
    )
    assert not reseeded.reused
    assert [p.set for p in reseeded.points] == [p["set"] for p in data["points"]]
    # six attackers, the budget check and the three fixed-budget attacks with no bound
    assert sum("reusing it" in message for message in progress.messages) == 10
    check_report(reseeded.to_dict(), attackers=6)

    # EOT-CW continued from the kappa = 0 CW adversarials: its set names that set as its start
    eot_stored = load_attack_set(Registry(), tiny_model, data["points"][2]["set"])
    assert eot_stored.settings.start == data["points"][0]["set"]
    assert eot_stored.settings.options["binary_steps"] == settings.warm_binary_steps

    # roc --attack cw finds the very cw attack set that security made (or, where that set
    # holds no adversarial on this model's floats, says the ROC has no negatives)
    cw_set = data["points"][0]["set"]
    roc_progress = RecordingProgress()
    roc_settings = RocSettings(votes=(5,), count=6, attack="cw", attack_options=FAST)
    try:
        roc = run_roc(roc_settings, model=tiny_model, device="cpu", progress=roc_progress)
        assert roc.set == cw_set and cw_set in roc.adversarials_used
    except ConfigError as error:
        assert data["points"][0]["success_rate"]["count"] == 0 and "at least one successful adversarial" in str(error)
    assert any(f"attack set {cw_set} already exists" in message for message in roc_progress.messages)
    # votes are stored by image content: the ROC's pristine digits are security's, voted once
    roc_progress = RecordingProgress()
    blend = run_roc(
        RocSettings(votes=(5,), count=6, attack="blend"), model=tiny_model, device="cpu", progress=roc_progress
    )
    assert blend.adversarial == 6
    assert any("6 pristine images found in the cache" in message for message in roc_progress.messages)


def test_choose_vmin_and_bad_settings():
    v_agree = torch.tensor([5, 5, 5, 5, 5, 5, 5, 5, 4, 3])
    assert choose_vmin(v_agree, 5, 0.9) == 3  # v_agree > 3 accepts 9 of 10
    assert choose_vmin(v_agree, 5, 0.8) == 4  # v_agree > 4 accepts 8 of 10
    with pytest.raises(ConfigError, match="no attacker"):
        SecuritySettings(kappas=(), eot=False, autoattack_eps=())
    with pytest.raises(ConfigError, match="vmin"):
        SecuritySettings(votes=5, vmin=5)
    with pytest.raises(ConfigError, match="draws"):
        SecuritySettings(eot_draws=0)


def test_apgd_rand_stays_in_budget_is_reproducible_and_leaves_the_global_generator_alone(tiny_model):
    from nodeguard.attacks import APGDRandOptions, PinnedTolerance
    from nodeguard.attacks.apgd_rand import run_apgd_rand

    loaded = load_model(tiny_model, device="cpu")
    test = load_dataset("mnist5k").test
    images, labels = test.float_images(slice(0, 4)), test.labels[:4]
    options = APGDRandOptions(eps=0.8, steps=4, eot_iter=2, judge_draws=2)
    pinned = PinnedTolerance(loaded.model, 1e-3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = run_apgd_rand(pinned, options, images, labels, seed=5)
    assert torch.equal(torch.rand(3), expected)  # APGD's use of the global generator stays inside fork_rng
    again = run_apgd_rand(pinned, options, images, labels, seed=5)
    assert torch.equal(first, again)
    l2 = (first - images).flatten(1).norm(dim=1)
    assert (l2 <= 0.8 + 1e-4).all(), l2
    assert first.min() >= 0 and first.max() <= 1


def test_a_continued_attack_starts_from_its_start_set_and_lands_past_kappa(tiny_model, registry, monkeypatch):
    """A CW run continued from another set's adversarials: the start is part of its key, its
    refined adversarials land at -(kappa + slack) as a cold run's do, a start from the clean
    images is a cold start, and a start set of other images is refused in one line."""
    base = run_attack(AttackSettings(attack="cw", count=4, batch_size=4, options=FAST), model=tiny_model, device="cpu")
    kappa = 0.3
    continued = AttackSettings(attack="cw", count=4, batch_size=4, options={**FAST, "kappa": kappa}, start=base.set)
    seen = []
    forward = CarliniWagnerL2.forward

    def spy(self, images, labels, starts=None):
        seen.append(starts)
        return forward(self, images, labels, starts)

    monkeypatch.setattr(CarliniWagnerL2, "forward", spy)
    report = run_attack(continued, model=tiny_model, device="cpu")
    monkeypatch.setattr(CarliniWagnerL2, "forward", forward)
    # the attack began at the start set's adversarials, not at the clean images
    (starts,) = seen
    assert torch.equal(starts, load_attack_set(registry, tiny_model, base.set).adversarial)
    data = load_attack_set(registry, tiny_model, report.set)
    assert data.settings.start == base.set and report.set != base.set
    target = -(kappa + MARGIN_SLACK)
    assert (data.margin[data.success] <= target).all() and (data.margin[data.success] >= target - 1e-5).all()
    assert (data.margin_8bit[data.success_8bit] <= target).all()

    loaded = load_model(tiny_model, device="cpu")
    images, labels = data.clean, data.labels
    pinned = PinnedTolerance(loaded.model, loaded.tol_train).eval()
    cold = CarliniWagnerL2(pinned, steps=5, binary_steps=1)(images, labels)
    assert torch.equal(CarliniWagnerL2(pinned, steps=5, binary_steps=1)(images, labels, images), cold)

    other_images = AttackSettings(attack="cw", count=3, batch_size=3, options={**FAST, "kappa": kappa}, start=base.set)
    with pytest.raises(ConfigError, match="attacked other images"):
        run_attack(other_images, model=tiny_model, device="cpu")
    with pytest.raises(ConfigError, match="starts from the clean images only"):
        AttackSettings(attack="square", start=base.set)


def test_the_attack_seed_reaches_every_attacker_that_draws_and_only_those():
    """By construction: CW draws nothing and keeps seed 0 (its sets are reused); EOT-CW,
    AutoAttack-rand, Square and the checks' reruns of them take the attack seed; every
    attacker takes the attack batch size; the defaults keep the key of reports stored
    before the options existed."""
    base = SecuritySettings(kappas=(0.0, 0.1), square_draws=1)
    seeded = SecuritySettings(kappas=(0.0, 0.1), square_draws=1, attack_seed=7, attack_batch_size=250)
    assert "attack_seed" not in base.identity() and seeded.identity()["attack_seed"] == 7
    assert "attack_batch_size" not in base.identity() and seeded.identity()["attack_batch_size"] == 250
    assert all(attacker.settings.batch_size == 100 for attacker in base.attackers())
    for attacker in seeded.attackers():
        assert attacker.settings.seed == (0 if attacker.attack == "cw" else 7 * ATTACK_SEED_STRIDE), attacker.label
        assert attacker.settings.batch_size == 250
    drawing = {attacker.attack for attacker in seeded.attackers() if attacker.seed == 7 * ATTACK_SEED_STRIDE}
    assert drawing == {"eot-cw", "apgd-rand", "square"}
    pair = seeded.budget_attacker()
    assert pair is not None and pair[1].seed == 7 * ATTACK_SEED_STRIDE
    reruns = seeded.unbounded_attackers()
    assert reruns and all(rerun.seed == 7 * ATTACK_SEED_STRIDE for _, rerun in reruns)
    command = security_command("m", {**seeded.identity(), "seed": 0})
    assert "--attack-seed 7" in command and "--attack-batch-size 250" in command
    assert "--attack-seed" not in security_command("m", {**base.identity(), "seed": 0})
    for bad in (-1, 2**63 // ATTACK_SEED_STRIDE + 1):
        with pytest.raises(ConfigError, match="attack_seed"):
            SecuritySettings(attack_seed=bad)
    with pytest.raises(ConfigError, match="attack_batch_size"):
        SecuritySettings(attack_batch_size=0)
