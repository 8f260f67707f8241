"""`nodeguard models` (list), `models show NAME`, `models rm NAME`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nodeguard.cli._options import JsonOption
from nodeguard.cli._output import Output
from nodeguard.constants import CONFIG_FILE, HISTORY_FILE, METRICS_FILE
from nodeguard.storage.registry import Registry

app = typer.Typer(help="List, show and remove registered models.", no_args_is_help=False)


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
            table.add_row(
                entry["name"],
                entry["arch"],
                entry["dataset"],
                entry["status"],
                f"{entry['epochs_done']}/{entry['epochs']}",
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
        console.print(f"[bold]{name}[/bold]  ({entry.status}, {entry.epochs_done}/{entry.epochs} epochs)  {folder}")
        console.print(f"{CONFIG_FILE}:", data["config"])
        if data["metrics"]:
            metrics = data["metrics"]
            console.print(
                f"test error {metrics['test_error']:.2%}  NFE {metrics['nfe']:.1f}  "
                f"training time {metrics['seconds']:.0f} s"
            )
        console.print("files:", ", ".join(data["files"]))

    Output(json_output).result(data, render)


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Model name.")], json_output: JsonOption = False) -> None:
    """Remove a model and everything saved under it."""
    Registry().remove(name)
    Output(json_output).result({"removed": name}, lambda console: console.print(f"removed {name}"))
