"""Library errors become one printed line and an exit status, in one place for the whole app.

The root command group runs every command (sub-commands included) inside
:func:`reported_errors`. ``NODEGUARD_DEBUG=1`` lets errors through with their traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from nodeguard.cli._output import Output
from nodeguard.constants import DEBUG_VARIABLE
from nodeguard.errors import NodeguardError, NoModelYetError, UnfinishedModelError
from nodeguard.runtime.distributed import current_ranks
from nodeguard.storage.files import NO_ROOM, display_path, storage_error

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


# what a user of the command line does next, after the library's own message
NEXT_STEPS: dict[type[NodeguardError], str] = {
    NoModelYetError: "run `nodeguard train mnist5k` first",
    UnfinishedModelError: "run the same `nodeguard train` again to continue it",
}
OPTIONS_KEY = "nodeguard.options"  # ctx.meta: the running command's options by setting name


def option_names(command: Any) -> dict[str, str]:
    """A command's options by the names a library error may give a setting: the Typer
    parameter's own name (``autoattack_eps`` -> ``--aa-eps``) and its option's name read
    as a setting (``--draws`` -> ``draws``). A group (``models``) gives its commands'."""
    names: dict[str, str] = {}
    for sub_command in getattr(command, "commands", {}).values():
        names.update(option_names(sub_command))
    for param in command.params:
        flags = [opt for opt in getattr(param, "opts", []) if opt.startswith("--")]
        if not flags:
            continue
        names.setdefault(flags[0][2:].replace("-", "_"), flags[0])
        if param.name:
            names[param.name] = flags[0]
    return names


def rendered(error: NodeguardError, options: dict[str, str]) -> str:
    """A library error as the command line says it: each setting it names becomes the option
    that sets it (when the command has one; otherwise its library name stays), and the
    command to run next follows the errors that have one (:data:`NEXT_STEPS`)."""
    message = error.render(lambda setting: options.get(setting, f"`{setting}`"))
    step = next((text for kind, text in NEXT_STEPS.items() if isinstance(error, kind)), None)
    return f"{message}; {step}" if step else message


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


@contextmanager
def reported_errors(options: dict[str, str] | None = None) -> Iterator[None]:
    """NodeguardError -> 'error: ...' and exit 1; Ctrl-C -> exit 130 (finished work is kept).

    Args:
        options: the running command's options by setting name (filled in while it runs).
    """
    if debugging():
        yield
        return
    try:
        yield
    except NodeguardError as exc:
        Output().error(rendered(exc, options if options is not None else {}))
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        # what the disk refused (full, read-only, no permission) and the library did not
        # put in its own words: one line, never a traceback
        path = Path(exc.filename or "?")
        converted = storage_error(path, exc)
        if converted is None:
            raise
        room = getattr(exc, "errno", None) in NO_ROOM
        Output().error(
            str(converted)
            if room
            else f"cannot use {display_path(path)}: {exc.strerror or exc}; choose a path you can read and write"
        )
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        Output().error("interrupted; finished work is saved, run the same command again to continue")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # an exit status a command chose (defend's 3), or a usage error: not a failure to report
    except Exception as exc:
        if not current_ranks().sharded:
            raise
        # one line per failed rank (torchrun then stops the others and exits non-zero)
        Output().error(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise typer.Exit(EXIT_ERROR) from None


class ErrorReportingGroup(TyperGroup):
    """The root group: every command it invokes reports errors through :func:`reported_errors`,
    naming each setting by the option of the command that ran."""

    def invoke(self, ctx: Any) -> Any:
        with reported_errors(ctx.meta.setdefault(OPTIONS_KEY, {})):
            return super().invoke(ctx)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            ctx.meta.setdefault(OPTIONS_KEY, {}).update(option_names(command))
        return name, command, rest
