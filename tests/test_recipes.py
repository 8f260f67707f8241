from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import TEST_SEED
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.errors import ConfigError
from nodeguard.models.loading import load_model
from nodeguard.training.recipes import resolve_training, shipped_recipes
from nodeguard.training.train import TrainConfig, make_optimizer, seeded_model

runner = CliRunner()


def test_the_default_recipe_is_the_library_default_and_paper_sets_the_papers_settings():
    assert {"default", "paper"} <= set(shipped_recipes())
    assert resolve_training()[0] == TrainConfig()
    paper, provenance = resolve_training("mnist5k", recipe="paper")
    assert provenance["name"] == "paper"
    assert (paper.optimizer, paper.schedule, paper.lr, paper.dropout) == ("adam", "constant", 0.1, 0.5)
    assert (paper.epochs, paper.augment, paper.filters, paper.weight_decay) == (25, False, 64, 1e-4)
    cifar = resolve_training("cifar10", recipe="paper")[0]
    assert (cifar.epochs, cifar.augment, cifar.filters) == (250, True, 256)


def test_file_over_recipe_and_options_over_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("recipe: paper\nepochs: 3\nlr: 1e-2\ndatasets:\n  mnist5k:\n    dropout: 0.25\n")
    config, provenance = resolve_training(None, None, path, {"epochs": 2, "seed": None})
    assert config.optimizer == "adam"  # from the recipe the file names
    assert config.lr == 0.01 and config.dropout == 0.25  # from the file (YAML reads 1e-2 as text)
    assert config.epochs == 2  # the option wins; a None option is no override
    assert provenance == {
        "name": "paper",
        "file": str(path),
        "from_file": {"epochs": 3, "lr": 0.01, "dropout": 0.25},
        "overrides": {"epochs": 2},
    }
    assert resolve_training(None, "default", path)[0].optimizer == "adamw"  # --recipe beats the file's


@pytest.mark.parametrize(
    "text, message",
    [
        ("epoch: 3\n", "unknown setting 'epoch'"),
        ("epochs: three\n", "epochs must be int"),
        ("recipe: nope\n", "unknown recipe 'nope'; valid: default, paper"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("optimizer: rmsprop\n", "unknown optimizer 'rmsprop'"),
    ],
)
def test_bad_recipe_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve_training(config_file=path)


def test_a_yaml_recipe_round_trips_into_the_models_config_and_an_option_overrides_it(tmp_path, registry):
    path = tmp_path / "tiny.yaml"
    recipe = {
        "recipe": "paper",
        "epochs": 1,
        "lr": 1e-3,
        "filters": 8,
        "batch_size": 64,
        "train_limit": 128,
        "test_limit": 32,
        "dropout": 0.3,
        "seed": TEST_SEED,
    }
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["train", "--config", str(path), "--dropout", "0.2", "--name", "r", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "r"
    stored = registry.read_config("r")
    training = stored["training"]
    for setting in ("epochs", "lr", "filters", "batch_size", "train_limit", "test_limit"):
        assert training[setting] == recipe[setting], setting
    assert training["dropout"] == 0.2 and stored["model"]["dropout"] == 0.2
    assert (training["optimizer"], training["schedule"], training["augment"]) == ("adam", "constant", False)
    assert stored["recipe"]["name"] == "paper" and stored["recipe"]["overrides"] == {"dropout": 0.2}
    assert stored["recipe"]["from_file"]["dropout"] == 0.3
    # the stored settings rebuild the same config, and the model loads with its dropout layer
    assert TrainConfig(**training) == resolve_training(None, None, path, {"dropout": 0.2})[0]
    loaded = load_model("r", registry=registry, device="cpu")
    assert any(isinstance(layer, torch.nn.Dropout) and layer.p == 0.2 for layer in loaded.model.head)
    again = runner.invoke(app, ["train", "--config", str(path), "--dropout", "0.2", "--name", "r", "--json"])
    assert json.loads(again.stdout)["reused"] is True


def test_models_from_before_the_new_settings_are_still_the_same_model(registry):
    """A config.yaml written before optimizer/schedule/dropout existed reads as today's defaults."""
    stored = {key: value for key, value in TrainConfig().as_dict().items()}
    for added in ("optimizer", "schedule", "dropout"):
        stored.pop(added)
    assert TrainConfig.stored_settings(stored) == TrainConfig().as_dict()
    plain = seeded_model(TrainConfig(filters=8))
    assert not any(isinstance(layer, torch.nn.Dropout) for layer in plain.head)
    assert "head.4.weight" in plain.state_dict()  # the parameter names older checkpoints use


def test_the_optimizer_and_schedule_settings_build_what_they_name():
    model = torch.nn.Linear(2, 2)
    for name, kind in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        optimizer, schedule = make_optimizer(model, TrainConfig(optimizer=name, schedule="constant", lr=0.1), 10)
        assert type(optimizer) is kind
        for _ in range(5):
            optimizer.step()
            schedule.step()
        assert schedule.get_last_lr() == [0.1]
    _, onecycle = make_optimizer(model, TrainConfig(lr=0.1), 10)
    assert onecycle.get_last_lr()[0] < 0.1
