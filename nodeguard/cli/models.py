"""`nodeguard models` (list), `models show NAME`, `models rm NAME`, `models import FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nodeguard.cli._options import DataDirOption, DeviceOption, JsonOption
from nodeguard.cli._output import Output, skipped_lines
from nodeguard.cli._parsing import parse_list
from nodeguard.constants import CONFIG_FILE, HISTORY_FILE, METRICS_FILE
from nodeguard.storage.registry import Registry

app = typer.Typer(help="List, show, import and remove registered models.", no_args_is_help=False)


@app.callback(invoke_without_command=True)
def list_models(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the registered models, most recently trained first."""
    if ctx.invoked_subcommand is not None:
        return
    registry = Registry()
    entries = [entry.to_dict() for entry in registry.entries()]
    output = Output(json_output)

    def render(console: Console) -> None:
        if not entries:
            console.print(f"no models in {registry.root}; run `nodeguard train mnist5k`")
            return
        table = Table(title=f"models in {registry.root}")
        table.add_column("name", no_wrap=True, overflow="fold", min_width=12)
        for column in ("arch", "dataset", "status", "epochs", "test error", "updated"):
            table.add_column(column)
        for entry in entries:
            error = "" if entry["test_error"] is None else f"{entry['test_error']:.2%}"
            epochs = "imported" if entry["arch"] == "composed" and not entry["epochs"] else None
            table.add_row(
                entry["name"],
                entry["arch"],
                entry["dataset"],
                entry["status"],
                epochs or f"{entry['epochs_done']}/{entry['epochs']}",
                error,
                entry["updated"][:16].replace("T", " "),
            )
        console.print(table)

    output.result({"root": str(registry.root), "models": entries}, render)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Model name.")], json_output: JsonOption = False) -> None:
    """Show one model: its config, metrics and files."""
    registry = Registry()
    entry = registry.get(name)
    folder = registry.model_dir(name)
    data = {
        **entry.to_dict(),
        "path": str(folder),
        "config": registry.read_config(name),
        "metrics": registry.read_json(name, METRICS_FILE),
        "history": registry.read_json(name, HISTORY_FILE, []),
        "files": sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else [],
    }

    def render(console: Console) -> None:
        epochs = (
            "imported"
            if entry.arch == "composed" and not entry.epochs
            else f"{entry.epochs_done}/{entry.epochs} epochs"
        )
        console.print(f"[bold]{name}[/bold]  ({entry.status}, {epochs})  {folder}")
        console.print(f"{CONFIG_FILE}:", data["config"])
        if data["metrics"]:
            metrics = data["metrics"]
            imported = bool(data["config"].get("training", {}).get("imported"))
            console.print(
                f"test error {metrics['test_error']:.2%}  NFE {metrics['nfe']:.1f}  "
                + (
                    f"evaluated in {metrics['seconds']:.0f} s"
                    if imported
                    else f"training time {metrics['seconds']:.0f} s"
                )
            )
        console.print("files:", ", ".join(data["files"]))

    Output(json_output).result(data, render)


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Model name.")], json_output: JsonOption = False) -> None:
    """Remove a model and everything saved under it."""
    Registry().remove(name)
    Output(json_output).result({"removed": name}, lambda console: console.print(f"removed {name}"))


@app.command("import")
def import_model(
    file: Annotated[Path, typer.Argument(help="The checkpoint file (.pth / .pt).", metavar="FILE")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="torchdiffeq-example (rtqichen/torchdiffeq examples/odenet_mnist.py) or "
            "neural-ode-features (fabiocarrara/neural-ode-features train.py).",
        ),
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", help="The data set it classifies (its test split is evaluated).")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: {format}-{dataset}).")] = None,
    tol_train: Annotated[
        float | None,
        typer.Option("--tol-train", help="Its training tolerance, when the checkpoint does not store it."),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            "--mean", help="Per-channel mean its training code normalised with, when the checkpoint does not say."
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option(
            "--std", help="Per-channel std its training code normalised with, when the checkpoint does not say."
        ),
    ] = None,
    t_end: Annotated[float, typer.Option("--t-end", help="End time T of the integration it was trained with.")] = 1.0,
    test_limit: Annotated[
        int | None, typer.Option("--test-limit", help="Classify only the first N test images.")
    ] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Import a Neural ODE checkpoint trained by other code into the registry.

    The file is read weights-only: a checkpoint that needs code to load is refused. The
    network is rebuilt from its weights, tol_train and the input normalisation are taken
    from the checkpoint where it stores them, and the test split is classified, each image
    alone at tol_train, so that the error shows at once whether the import is right.
    """
    from nodeguard.models.importing import import_checkpoint

    means = parse_list(mean, float, "--mean", "0.4914,0.4822,0.4465") if mean is not None else None
    stds = parse_list(std, float, "--std", "0.2023,0.1994,0.2010") if std is not None else None
    Output(json_output).run(
        import_checkpoint,
        _render_import,
        path=file,
        format=format,
        dataset=dataset,
        name=name,
        tol_train=tol_train,
        mean=means,
        std=stds,
        t_end=t_end,
        registry=Registry(),
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        test_limit=test_limit,
    )


def _render_import(console: Console, result) -> None:
    source = result.source
    console.print(
        Text(
            f"{result.name}: imported from {source.get('file', '?')} ({source.get('format', '?')})\n"
            f"  test error {result.test_error:.2%} on {result.count} {result.dataset} test images, each alone at "
            f"tol_train {result.tol_train:g} (NFE {result.mean_nfe:.1f})"
        )
    )
    if result.empty_test_classes:
        console.print(Text(f"  the test split has no images of: {', '.join(result.empty_test_classes)}"))
    for line in skipped_lines(result.skipped, shown=3, prefix="  skipped", suffix=" in the data set"):
        console.print(Text(line))
    console.print(Text(f"  saved in {result.path}\n  next: nodeguard attack cw --model {result.name} --count 100"))
