from __future__ import annotations

import json
import re

import pytest
import typer
from conftest import SEED_OPTION
from typer.testing import CliRunner

from nodeguard import __version__
from nodeguard.cli import app

runner = CliRunner()
TINY = [
    "--epochs",
    "1",
    "--filters",
    "8",
    "--train-limit",
    "128",
    "--test-limit",
    "64",
    "--batch-size",
    "64",
    *SEED_OPTION,
]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_train_json_then_models_list_show_rm():
    trained = runner.invoke(app, ["train", "mnist5k", *TINY, "--json"])
    assert trained.exit_code == 0, trained.output
    data = json.loads(trained.stdout)
    for key in ("model", "dataset", "arch", "tol_train", "epochs", "test_error", "nfe", "seconds"):
        assert key in data
    assert data["model"] == "odenet-mnist5k" and data["tol_train"] == 1e-3

    listed = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert [m["name"] for m in listed["models"]] == ["odenet-mnist5k"]

    shown = runner.invoke(app, ["models", "show", "odenet-mnist5k", "--json"])
    assert shown.exit_code == 0
    details = json.loads(shown.stdout)
    assert details["config"]["training"]["filters"] == 8 and "checkpoint.pt" in details["files"]

    human = runner.invoke(app, ["models"])
    assert "odenet-mnist5k" in human.stdout

    removed = runner.invoke(app, ["models", "rm", "odenet-mnist5k"])
    assert removed.exit_code == 0
    assert json.loads(runner.invoke(app, ["models", "--json"]).stdout)["models"] == []


def test_train_human_output_names_the_model():
    result = runner.invoke(app, ["train", "mnist5k", *TINY, "--arch", "resnet", "--name", "base"])
    assert result.exit_code == 0, result.output
    assert "base: resnet on mnist5k" in result.stdout and "test error" in result.stdout


def test_bad_input_is_one_line_without_traceback():
    for args in (
        ["train", "imagenet"],
        ["train", "folder:/no/such/tree"],
        ["models", "import", "no-such.pth", "--format", "torchdiffeq-example", "--dataset", "mnist5k"],
        ["models", "import", "no-such.pth", "--format", "keras", "--dataset", "mnist5k"],
        ["train", "mnist5k", "--arch", "vit"],
        ["models", "show", "nope"],
        ["train", "mnist5k", "--epochs", "0"],
        ["train", "mnist5k", "--name", "../x"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        assert "Traceback" not in result.output
        assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0, result.stderr


def test_every_command_has_help():
    commands = [[name] for name in sorted(command.name for command in typer.main.get_command(app).commands.values())]
    assert ["security"] in commands and ["train"] in commands
    for command in [*commands, ["models", "show"], ["models", "rm"]]:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "--json" in result.stdout, command


def test_train_help_states_the_default_recipes_settings(monkeypatch):
    """The defaults `nodeguard train --help` prints are the default recipe's (and
    TrainConfig's where no recipe sets them), the settings a bare `nodeguard train` uses."""
    from nodeguard.training.recipes import resolve_training

    monkeypatch.setenv("COLUMNS", "250")  # one line per option: help text is not wrapped
    help_text = " ".join(runner.invoke(app, ["train", "--help"]).stdout.split())
    config = resolve_training(None, None, None, {})[0]
    for option, setting in (
        ("--tol-train", "tol_train"),
        ("--epochs", "epochs"),
        ("--batch-size", "batch_size"),
        ("--lr", "lr"),
        ("--weight-decay", "weight_decay"),
        ("--dropout", "dropout"),
        ("--optimizer", "optimizer"),
        ("--schedule", "schedule"),
        ("--seed", "seed"),
        ("--arch", "arch"),
    ):
        value = getattr(config, setting)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert re.search(rf"{option}\b[^│]*\[default: {re.escape(shown)}\]", help_text), (option, shown)
    assert config.augment and "[default: on]" in help_text


def test_debug_variable_lets_the_error_through_with_its_traceback(monkeypatch):
    from nodeguard.errors import ConfigError

    monkeypatch.setenv("NODEGUARD_DEBUG", "1")
    result = runner.invoke(app, ["train", "imagenet"])
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError)
    assert not result.stderr.startswith("error:")


def test_cli_defaults_are_the_library_defaults():
    from nodeguard.defense.randomization import DefenseSettings
    from nodeguard.stages.roc import RocSettings

    defend_help = runner.invoke(app, ["defend", "--help"], env={"COLUMNS": "200"}).stdout
    defense = DefenseSettings()
    for value in (defense.votes, defense.vmin, defense.batch_size):
        assert f"(default: {value})" in defend_help or f"[default: {value}]" in defend_help, value
    roc_help = runner.invoke(app, ["roc", "--help"], env={"COLUMNS": "200"}).stdout
    assert str(RocSettings().count) in roc_help


def test_library_errors_name_settings_and_the_cli_shows_their_options():
    from nodeguard.errors import ConfigError
    from nodeguard.stages.security import SecuritySettings

    with pytest.raises(ConfigError) as raised:
        SecuritySettings(kappas=(), autoattack_eps=(), eot=False)
    assert raised.value.settings == ("kappas", "autoattack_eps", "eot")
    assert str(raised.value) == "no attacker: give `kappas` or `autoattack_eps`, or keep `eot`"
    # the command line names the same settings by its own options (--aa-eps for autoattack_eps)
    result = runner.invoke(app, ["security", "--kappas", "", "--aa-eps", "", "--no-eot"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("error: no attacker: give --kappas or --aa-eps, or keep --eot")
    result = runner.invoke(app, ["sweep", "--tol-attack", "1e-3"])
    assert result.exit_code == 1 and result.stderr.startswith("error: --tol-attack needs an --attack")
    result = runner.invoke(app, ["security", "--draws", "0"])
    assert result.exit_code == 1 and result.stderr.startswith("error: --draws must be at least 1"), result.stderr
    result = runner.invoke(app, ["train", "mnist5k", "--threads", "0"])
    assert result.exit_code == 1 and result.stderr.startswith("error: --threads must be at least 1")
