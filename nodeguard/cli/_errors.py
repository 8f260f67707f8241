"""Library errors become one printed line and an exit status, in one place for the whole app.

The root command group runs every command (sub-commands included) inside
:func:`reported_errors`. ``NODEGUARD_DEBUG=1`` lets errors through with their traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from nodeguard.cli._output import Output
from nodeguard.constants import DEBUG_VARIABLE
from nodeguard.errors import NodeguardError
from nodeguard.runtime.distributed import current_ranks
from nodeguard.storage.files import storage_error

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


# a setting whose option is not its name with dashes ("tol_attack" -> "--tol-attack")
SETTING_FLAGS = {
    "tol_attacks": "--tol-attack",
    "autoattack_eps": "--aa-eps",
    "autoattack_steps": "--aa-steps",
    "autoattack_eot_iter": "--aa-eot-iter",
    "eot_draws": "--draws",
    "tol_low": "--tol-range",
    "tol_high": "--tol-range",
    "eot": "--eot",
    "certify_sigma": "--certify",
    "tol_ranges": "--tol-ranges",
}
SETTING = re.compile(r"`([a-z][a-z0-9_]*)`")


def with_flags(message: str) -> str:
    """A library message as the command line says it: each `setting` becomes its option."""
    return SETTING.sub(lambda match: SETTING_FLAGS.get(match[1], "--" + match[1].replace("_", "-")), message)


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


@contextmanager
def reported_errors() -> Iterator[None]:
    """NodeguardError -> 'error: ...' and exit 1; Ctrl-C -> exit 130 (finished work is kept)."""
    if debugging():
        yield
        return
    try:
        yield
    except NodeguardError as exc:
        Output().error(with_flags(str(exc)))
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        # a write the disk refused (full, read-only, no permission): one line, never a traceback
        converted = storage_error(Path(exc.filename or "?"), exc)
        if converted is None:
            raise
        Output().error(str(converted))
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
    """The root group: every command it invokes reports errors through :func:`reported_errors`."""

    def invoke(self, ctx: Any) -> Any:
        with reported_errors():
            return super().invoke(ctx)
