"""Checks at full size: minutes each, run with `pytest -m slow`."""

from __future__ import annotations

import pytest

from nodeguard.experiments.attack_sets import AttackSettings
from nodeguard.stages.attack import run_attack
from nodeguard.training.train import TrainConfig, train_model


@pytest.mark.slow
def test_default_recipe_reaches_three_percent_and_cw_reaches_ninety(registry):
    result = train_model(TrainConfig(), registry=registry, device="cpu")
    assert result.test_error <= 0.03, result.test_error
    report = run_attack(AttackSettings(count=100), model=result.model, registry=registry, device="cpu")
    assert report.success_rate.value >= 0.90, report.success_rate
