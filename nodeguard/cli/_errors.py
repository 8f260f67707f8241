"""Library errors become one printed line and an exit status, in one place."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ..errors import NodeguardError
from ._output import Output

EXIT_ERROR = 1
EXIT_NOT_IMPLEMENTED = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Wrap a command: NodeguardError -> 'error: ...' and exit 1; Ctrl-C -> exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NodeguardError as exc:
            Output().error(str(exc))
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            Output().error("interrupted; finished work is saved, run the same command again to continue")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
