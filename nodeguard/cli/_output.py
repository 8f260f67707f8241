"""One output object per command: human text on stdout, or one JSON object with --json.

Progress bars and log lines always go to stderr, so stdout stays clean for JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from nodeguard.intervals import Rate, format_interval, format_optional_rate
from nodeguard.runtime.distributed import current_ranks
from nodeguard.storage.files import check_writable, display_path, json_text
from nodeguard.storage.images import SkippedFile


class _RichTask:
    def __init__(self, progress: RichProgress, task_id: Any):
        self.progress, self.task_id = progress, task_id

    def advance(self, steps: int = 1, **fields: Any) -> None:
        status = "  ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in fields.items()
        )
        self.progress.update(self.task_id, advance=steps, status=status)

    def close(self) -> None:
        self.progress.stop_task(self.task_id)
        self.progress.update(self.task_id, visible=False)


class RichReporter:
    """Implements nodeguard.progress.Progress with rich bars on stderr."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.progress = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
            disable=quiet or not console.is_terminal,
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def task(self, description: str, total: int | None) -> _RichTask:
        return _RichTask(self.progress, self.progress.add_task(description, total=total, status=""))

    def log(self, message: str) -> None:
        ranks = current_ranks()
        if ranks.sharded and not ranks.is_main:  # the other ranks' logs, named; no bars
            self.console.print(f"[dim]\\[{ranks.describe()}] {plain(message)}[/dim]", highlight=False)
        elif not self.quiet:
            self.console.print(f"[dim]{plain(message)}[/dim]", highlight=False)


def plain(message: str) -> str:
    """A message printed as it is: no rich markup read into it (a file named ``[red].png``),
    and bytes of a file name that are not UTF-8 shown as backslash escapes."""
    return escape(display_path(message))


def rate_cell(rate: Rate | None, spec: str = ".1%", interval_spec: str = ".0%") -> str:
    """A table cell of a rate over its 95% interval, on two lines (``"93.0%\\n[86%, 97%]"``),
    so that a table of several rates still fits a terminal; ``"n/a"`` for None or no image."""
    if rate is None or rate.interval is None:
        return format_optional_rate(rate, spec, interval_spec)
    return f"{format(rate.value, spec)}\n{format_interval(rate.interval_list(), interval_spec)}"


def compact_table(title: str) -> Table:
    """A table for many columns in an 80-column terminal: a rule under the header, no
    vertical lines, one space between columns (wrap long labels; rates via :func:`rate_cell`)."""
    return Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)


@dataclass(frozen=True)
class Picture:
    """A report's picture as a command asks for it: the reporting function that draws a
    report into a PNG, and the ``--plot`` path (None: no picture)."""

    draw: Callable[[Any, Path], None]
    path: Path | None


def skipped_lines(skipped: list[SkippedFile], shown: int, prefix: str = "skipped", suffix: str = "") -> list[str]:
    """What was skipped, one line per reason: the count, the reason and the first ``shown``
    paths ("skipped 3, hidden (...): a, b, c")."""
    by_reason: dict[str, list[str]] = {}
    for item in skipped:
        by_reason.setdefault(item.reason, []).append(item.path)
    lines = []
    for reason, names in by_reason.items():
        more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
        lines.append(f"{prefix} {len(names)}{suffix}, {reason}: {', '.join(names[:shown])}{more}")
    return lines


class Output:
    """Where a command writes: ``result`` prints JSON or calls the human renderer."""

    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        # in a sharded job (torchrun) the other ranks compute, rank 0 reports
        self.main_rank = current_ranks().is_main
        self.stdout = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.stderr = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def reporter(self) -> RichReporter:
        return RichReporter(self.stderr, quiet=not self.main_rank)

    def run(self, stage, render, picture: Picture | None = None, **kwargs: Any) -> Any:
        """Run a library stage with progress bars, draw its picture (rank 0) when one is asked
        for, then print its result (JSON or human). Stages never draw; reporting does, here.
        A picture path that cannot be written fails in one line before the stage runs."""
        if picture is not None and picture.path is not None and self.main_rank:
            check_writable(picture.path)
        with self.reporter() as reporter:
            report = stage(progress=reporter, **kwargs)
        if picture is not None and picture.path is not None and self.main_rank:
            picture.draw(report, picture.path)
            report.plot = str(picture.path)
        self.result(report.to_dict(), lambda console: render(console, report))
        return report

    def result(self, data: dict[str, Any], render=None) -> None:
        if not self.main_rank:
            return
        if self.json_mode:
            sys.stdout.write(json_text(data) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.stdout)

    def error(self, message: str) -> None:
        ranks = current_ranks()
        where = f"{ranks.describe()}: " if ranks.sharded else ""
        self.stderr.print(f"[bold red]error:[/bold red] {where}{plain(message)}", highlight=False)

    def warn(self, message: str) -> None:
        self.stderr.print(f"[bold yellow]warning:[/bold yellow] {plain(message)}", highlight=False)
