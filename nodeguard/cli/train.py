"""`nodeguard train DATASET`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from ..registry import Registry
from ..train import TrainConfig, TrainResult, train_model
from ._options import DataDirOption, DeviceOption, JsonOption, SeedOption
from ._output import Output

defaults = TrainConfig()


def train(
    dataset: Annotated[str, typer.Argument(help="mnist5k (bundled, offline), mnist or cifar10.")] = "mnist5k",
    arch: Annotated[str, typer.Option("--arch", help="odenet or resnet.")] = defaults.arch,
    tol_train: Annotated[
        float, typer.Option("--tol-train", help="Solver tolerance while training.")
    ] = defaults.tol_train,
    epochs: Annotated[int, typer.Option("--epochs")] = defaults.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size")] = defaults.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the one-cycle schedule.")] = defaults.lr,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = defaults.weight_decay,
    filters: Annotated[int | None, typer.Option("--filters", help="Filters (default: 64, 256 for cifar10).")] = None,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Random affine (digits) or crop/flip/jitter.")
    ] = defaults.augment,
    train_limit: Annotated[
        int | None, typer.Option("--train-limit", help="Use only the first N training images.")
    ] = None,
    test_limit: Annotated[int | None, typer.Option("--test-limit", help="Evaluate on the first N test images.")] = None,
    seed: SeedOption = defaults.seed,
    device: DeviceOption = "auto",
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: {arch}-{dataset}).")] = None,
    data_dir: DataDirOption = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an earlier run of this name and start over.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Train an ODE-Net (or the ResNet baseline) and register it.

    An interrupted run continues from its last finished epoch when started again.
    """
    config = TrainConfig(
        dataset=dataset,
        arch=arch,
        tol_train=tol_train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        filters=filters,
        seed=seed,
        augment=augment,
        train_limit=train_limit,
        test_limit=test_limit,
    )
    Output(json_output).run(
        train_model,
        render,
        config=config,
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
