"""The `nodeguard` command line: a thin layer over the library."""

from __future__ import annotations

from typing import Annotated

import typer

from nodeguard.cli import models as models_cli
from nodeguard.cli._errors import ErrorReportingGroup
from nodeguard.cli.attack import attack
from nodeguard.cli.certify import certify
from nodeguard.cli.defend import defend
from nodeguard.cli.report import report
from nodeguard.cli.roc import roc
from nodeguard.cli.security import security
from nodeguard.cli.sweep import sweep
from nodeguard.cli.train import train
from nodeguard.constants import __version__
from nodeguard.runtime.distributed import current_ranks
from nodeguard.storage.registry import Registry

app = typer.Typer(
    name="nodeguard",
    cls=ErrorReportingGroup,
    help="Adversarial robustness of Neural ODE image classifiers, with tolerance randomization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nodeguard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """nodeguard: train, attack and defend Neural ODE image classifiers."""
    if current_ranks().sharded:  # under torchrun: one cache root for the whole job, checked before any work
        Registry().require_shared()


app.command("train")(train)
app.command("attack")(attack)
app.command("defend")(defend)
app.command("sweep")(sweep)
app.command("roc")(roc)
app.command("security")(security)
app.command("certify")(certify)
app.command("report")(report)
app.add_typer(models_cli.app, name="models")


def main() -> None:
    app()
