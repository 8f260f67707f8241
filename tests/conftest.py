from __future__ import annotations

import os

import pytest
import torch

from nodeguard.storage.registry import Registry
from nodeguard.training.train import TrainConfig

torch.set_num_threads(2)

# Every model the tests train takes this seed. Another seed gives another tiny model, as
# another CPU's floats would: `.ci/run` runs the suite at two seeds so that an assertion
# that holds only for the floats of one model fails in CI, not on a user's machine.
TEST_SEED = int(os.environ.get("NODEGUARD_TEST_SEED", "0"))
SEED_OPTION = ["--seed", str(TEST_SEED)]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own cache root and data root."""
    home = tmp_path / "home"
    monkeypatch.setenv("NODEGUARD_HOME", str(home))
    monkeypatch.setenv("NODEGUARD_DATA", str(tmp_path / "data"))
    return home


@pytest.fixture
def registry(isolated_home) -> Registry:
    return Registry()


def tiny_config(**overrides) -> TrainConfig:
    """A model small enough to train in seconds on real mnist5k digits."""
    settings = dict(
        dataset="mnist5k",
        arch="odenet",
        epochs=2,
        batch_size=64,
        filters=8,
        train_limit=192,
        test_limit=64,
        lr=3e-3,
        seed=TEST_SEED,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory):
    """A cache root holding 'tiny', a small ODE-Net trained once per session on real digits."""
    from nodeguard.training.train import train_model

    root = tmp_path_factory.mktemp("trained")
    config = tiny_config(filters=32, train_limit=1500, test_limit=200, epochs=3, batch_size=32, lr=5e-3, augment=False)
    train_model(config, name="tiny", registry=Registry(root), device="cpu")
    check_blend_can_succeed(root)
    return root


# Tests that need adversarials make them with the blend attack (nodeguard.attacks.blend),
# which succeeds by construction, at any kappa below CONFIDENT_MARGIN - BLEND_CLEARANCE, on
# every image of a batch that holds images of two labels each classified with a margin of
# at least CONFIDENT_MARGIN: the other label's image is itself adversarial. These tests
# attack the first FIRST_CORRECT correctly classified test digits (or more, in one batch);
# a model of which that holds is what "trained" means here (the first test digits are of
# seven classes), and the fixture checks it once.
FIRST_CORRECT = 5
CONFIDENT_MARGIN = 0.1  # the tiny model's median test margin is about 0.2 logits


def check_blend_can_succeed(root) -> None:
    from nodeguard.data.datasets import load_dataset
    from nodeguard.models.evaluation import classify_alone
    from nodeguard.models.loading import load_model

    model = load_model("tiny", registry=Registry(root), device="cpu").model
    test = load_dataset("mnist5k").test
    images, labels = test.float_images(slice(0, 40)), test.labels[:40]
    margins = classify_alone(model, images, 1e-3, labels).margins
    first = (margins > 0).nonzero().squeeze(1)[:FIRST_CORRECT]
    confident = {int(labels[i]) for i in first if margins[i] >= CONFIDENT_MARGIN}
    assert len(first) == FIRST_CORRECT and len(confident) >= 2, (
        f"the tiny model (NODEGUARD_TEST_SEED={TEST_SEED}) is not trained: among its first "
        f"{FIRST_CORRECT} correctly classified test digits, labels {sorted(confident)} are confident"
    )


@pytest.fixture
def tiny_model(trained_root, isolated_home) -> str:
    """'tiny' copied into this test's own registry."""
    import shutil

    shutil.copytree(trained_root, isolated_home, dirs_exist_ok=True)
    return "tiny"


def check_rate(rate: dict, total: int | None = None) -> None:
    """A rate as JSON holds it: its count of ``total`` images (when given), its share k / n,
    and the Clopper-Pearson interval of those counts around the share."""
    from nodeguard.intervals import rate_interval

    assert set(rate) == {"value", "count", "total", "interval"}, rate
    if total is not None:
        assert rate["total"] == total, (rate, total)
    assert 0 <= rate["count"] <= rate["total"]
    assert rate["interval"] == rate_interval(rate["count"], rate["total"])
    if rate["total"] == 0:
        assert rate["value"] is None
        return
    assert rate["value"] == rate["count"] / rate["total"]
    low, high = rate["interval"]
    assert low <= rate["value"] <= high
