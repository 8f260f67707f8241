from __future__ import annotations

import pytest
import torch

from nodeguard.registry import Registry
from nodeguard.train import TrainConfig

torch.set_num_threads(2)


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
        seed=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)
