"""Commands whose issues are not done yet: they say so in one line and exit 2."""

from __future__ import annotations

import typer

from ._errors import EXIT_NOT_IMPLEMENTED
from ._output import Output

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def not_implemented(command: str, issue: int):
    def handler(ctx: typer.Context) -> None:
        Output().error(f"`nodeguard {command}` is not implemented yet (issue #{issue})")
        raise typer.Exit(EXIT_NOT_IMPLEMENTED)

    handler.__doc__ = f"Not implemented yet (issue #{issue}); exits with status 2."
    return handler
