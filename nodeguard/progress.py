"""How the library reports progress without knowing about terminals.

Long functions take a ``progress`` argument: an object with ``task(description, total)``
returning a task with ``advance(steps=1, **fields)`` and ``close()``, and ``log(message)``.
The CLI passes one that draws rich progress bars on stderr; the default does nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol


class ProgressTask(Protocol):
    def advance(self, steps: int = 1, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> ProgressTask: ...

    def log(self, message: str) -> None: ...


class _SilentTask:
    def advance(self, steps: int = 1, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class SilentProgress:
    """Reports nothing (the library's default)."""

    def task(self, description: str, total: int | None) -> ProgressTask:
        return _SilentTask()

    def log(self, message: str) -> None:
        pass


class StderrLogProgress(SilentProgress):
    """Prints each log line on stderr and draws no bars: for scripts that print their own results on stdout."""

    def log(self, message: str) -> None:
        print(message, file=sys.stderr)


class RecordingProgress:
    """Keeps every log line and task description: handy in tests and notebooks."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tasks: list[str] = []

    def task(self, description: str, total: int | None) -> ProgressTask:
        self.tasks.append(description)
        return _SilentTask()

    def log(self, message: str) -> None:
        self.messages.append(message)


SILENT: Progress = SilentProgress()  # the default of every ``progress`` argument
