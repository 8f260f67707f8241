"""`nodeguard train DATASET`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nodeguard.cli._options import DataDirOption, DeviceOption, JsonOption, ThreadsOption
from nodeguard.cli._output import Output
from nodeguard.storage.registry import Registry
from nodeguard.training.recipes import DEFAULT_RECIPE, resolve_training, shipped_recipe
from nodeguard.training.train import TrainConfig, TrainResult, train_model

# the defaults shown in --help are read from where they live: the default recipe, and
# TrainConfig for what no recipe sets (tests/test_cli.py checks the help against both)
RECIPE = shipped_recipe(DEFAULT_RECIPE)
CONFIG = TrainConfig()


def _default(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"[default: {value:g}]" if isinstance(value, float) else f"[default: {value}]"


def train(
    dataset: Annotated[
        str | None,
        typer.Argument(
            help="mnist5k (bundled, offline), mnist, fashion-mnist, kmnist, cifar10, svhn or folder:PATH "
            f"(an ImageFolder tree) {_default(CONFIG.dataset)}."
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe", help=f"Shipped settings to start from: default or paper (WIFS'19) {_default(DEFAULT_RECIPE)}."
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="A YAML file of training settings; options given here override it."),
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", help=f"odenet or resnet {_default(CONFIG.arch)}.")] = None,
    tol_train: Annotated[
        float | None,
        typer.Option("--tol-train", help=f"Solver tolerance while training {_default(RECIPE['tol_train'])}."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help=_default(RECIPE["epochs"]))] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help=_default(RECIPE["batch_size"]))] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help=f"Learning rate (the one-cycle peak) {_default(RECIPE['lr'])}.")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help=_default(RECIPE["weight_decay"]))] = None,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help=f"adamw, adam or sgd {_default(RECIPE['optimizer'])}.")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help=f"onecycle or constant {_default(RECIPE['schedule'])}.")
    ] = None,
    dropout: Annotated[
        float | None, typer.Option("--dropout", help=f"Dropout before the classifier {_default(RECIPE['dropout'])}.")
    ] = None,
    filters: Annotated[
        int | None, typer.Option("--filters", help="Filters (default: 64, 256 for cifar10 and svhn).")
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help=f"Random affine (digits) or crop/flip/jitter [default: {_default(RECIPE['augment'])}].",
        ),
    ] = None,
    train_limit: Annotated[
        int | None, typer.Option("--train-limit", help="Use only the first N training images (default: all).")
    ] = None,
    test_limit: Annotated[
        int | None, typer.Option("--test-limit", help="Evaluate on the first N test images (default: all).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=f"Random seed {_default(CONFIG.seed)}.")] = None,
    noise_sigma: Annotated[
        float | None,
        typer.Option(
            "--noise-sigma",
            help="Gaussian noise (pixels in [0, 1]) added to every training image, for randomized smoothing "
            "(`nodeguard certify`); the default name gets -noise{S}.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: {arch}-{dataset}).")] = None,
    data_dir: DataDirOption = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an earlier run of this name and start over.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Train an ODE-Net (or the ResNet baseline) and register it.

    Settings resolve as: the recipe, then the --config file, then the options given here.
    The resolved settings are kept in the model's config.yaml. An interrupted run
    continues from its last finished epoch when started again.
    """
    overrides = {
        "arch": arch,
        "tol_train": tol_train,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "optimizer": optimizer,
        "schedule": schedule,
        "dropout": dropout,
        "filters": filters,
        "augment": augment,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "seed": seed,
        "noise_sigma": noise_sigma,
    }
    output = Output(json_output)

    def resolve_and_train(**kwargs):
        config, provenance = resolve_training(dataset, recipe, config_file, overrides)
        return train_model(config, recipe=provenance, **kwargs)

    output.run(
        resolve_and_train,
        render,
        name=name,
        registry=Registry(),
        device=device,
        data_dir=str(data_dir) if data_dir else None,
        restart=restart,
    )


def render(console: Console, result: TrainResult) -> None:
    if result.reused:
        state = "reused"
    elif result.resumed_from_epoch:
        state = f"trained (resumed after epoch {result.resumed_from_epoch})"
    else:
        state = "trained"
    solver = f"NFE {result.nfe:.1f}  tol_train {result.tol_train:g}  " if result.arch == "odenet" else ""
    console.print(
        f"{result.model}: {result.arch} on {result.dataset}, {state}\n"
        f"  test error {result.test_error:.2%}  {solver}epochs {result.epochs}  {result.seconds:.0f} s\n"
        f"  saved in {result.path}"
    )
