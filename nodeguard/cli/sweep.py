"""`nodeguard sweep`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from nodeguard.cli._options import (
    BinaryStepsOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    StepsOption,
    ThreadsOption,
    plot_option,
)
from nodeguard.cli._output import Output
from nodeguard.cli._parsing import parse_list
from nodeguard.errors import ConfigError
from nodeguard.intervals import INTERVAL_LABEL, Rate
from nodeguard.reporting.plots import plot_grid, plot_sweep
from nodeguard.reporting.tables import grid_table, table_cells, write_grid, write_table
from nodeguard.runtime.distributed import current_ranks
from nodeguard.stages.grid import GridReport, GridSettings, run_grid
from nodeguard.stages.sweep import SweepReport, SweepSettings, run_sweep
from nodeguard.storage.registry import Registry

SWEEP = SweepSettings()
Report = SweepReport | GridReport
TOLS_DEFAULT = ",".join(f"{tol:g}" for tol in SWEEP.tols)


def sweep(
    model: ModelOption = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="The decoupling grid: models (trained at different tau_train), comma separated; "
            "each is attacked at every --tol-attack and judged at every --tols.",
        ),
    ] = None,
    tols: Annotated[str, typer.Option("--tols", help="Tolerances tau, comma separated.")] = TOLS_DEFAULT,
    baseline: Annotated[str | None, typer.Option("--baseline", help="A ResNet model for the reference column.")] = None,
    attack: Annotated[str | None, typer.Option("--attack", help="Also attack at each tau: cw, fmn, pgd, ...")] = None,
    count: Annotated[int, typer.Option("--count", help="Images attacked per cell.")] = SWEEP.count,
    tol_attacks: Annotated[
        str | None,
        typer.Option(
            "--tol-attack",
            help="Decoupled: attack once at this tau, classify at each tau_test; several (comma separated) "
            "or --models make the grid.",
        ),
    ] = None,
    steps: StepsOption = None,
    binary_steps: BinaryStepsOption = None,
    test_limit: Annotated[
        int | None, typer.Option("--test-limit", help="Error on the first N test images (default: all).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the table to FILE.csv, .md or .json.")] = None,
    plot: Annotated[Path | None, plot_option("the table as the papers' figure")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the tau tables: error, NFE and (with --attack) attack results against tau;
    --plot draws them as the papers' figure.

    Every cell is cached in the model's folder: an identical sweep recomputes nothing.
    """
    attack_tols = parse_list(tol_attacks, float, "--tol-attack", "1e-3,1e-1") if tol_attacks else ()
    if models is not None or len(attack_tols) > 1:
        if model is not None or baseline is not None:
            raise ConfigError("the grid takes --models (not --model or --baseline)")
        grid_settings = GridSettings(
            tol_attacks=attack_tols or (1e-3,),
            tols=parse_list(tols, float, "--tols", "1e-4,1e-3,1e-2"),
            attack=attack or "cw",
            count=count,
            attack_options={"steps": steps, "binary_steps": binary_steps},
        )
        names = list(parse_list(models, str, "--models", "odenet-a,odenet-b")) if models else [Registry().latest()]
        grid(grid_settings, [name.strip() for name in names], device, out, plot, json_output)
        return
    settings = SweepSettings(
        tols=parse_list(tols, float, "--tols", "1e-4,1e-3,1e-2"),
        attack=attack,
        count=count,
        tol_attack=attack_tols[0] if attack_tols else None,
        test_limit=test_limit,
        attack_options={"steps": steps, "binary_steps": binary_steps},
    )
    output = Output(json_output)
    with output.reporter() as reporter:
        report = run_sweep(
            settings, model=model, baseline=baseline, registry=Registry(), device=device, progress=reporter
        )
    publish(output, report, out, plot, write_table, plot_sweep, render)


def grid(
    settings: GridSettings, models: list[str], device: str, out: Path | None, plot: Path | None, json_output: bool
) -> None:
    output = Output(json_output)
    with output.reporter() as reporter:
        report = run_grid(settings, models, registry=Registry(), device=device, progress=reporter)
    publish(output, report, out, plot, write_grid, plot_grid, render_grid)


def publish(
    output: Output, report: Report, out: Path | None, plot: Path | None, write: Any, draw: Any, render_human: Any
) -> None:
    """Write --out and --plot (rank 0 only, in a sharded job), then print the result."""
    if current_ranks().is_main:
        if plot is not None:  # first: the --out file names the picture
            draw(report, plot)
            report.plot = str(plot)
        if out is not None:
            write(report, out)
    output.result(report.to_dict(), lambda console: render_human(console, report))


def interval_caption(parts: list[tuple[list[Rate], str]]) -> str | None:
    """The table's caption, "intervals: 95% Clopper-Pearson over N images ...": for each
    (rates, what), the numbers of images behind the rates shown (a range where they differ)."""
    over = []
    for rates, what in parts:
        totals = sorted({rate.total for rate in rates})
        if totals:
            over.append(f"{totals[0] if len(totals) == 1 else f'{totals[0]}-{totals[-1]}'} {what}")
    return f"intervals: {INTERVAL_LABEL} over {' and '.join(over)}" if over else None


def render_grid(console: Console, report: GridReport) -> None:
    for described in report.models:
        header, body = grid_table(report, described.model, interval_below=True)
        title = (
            f"{described.model} (tau_train {described.tol_train:g}): {report.attack} on "
            f"{report.count} images, success / mean L2 (still fooled)"
        )
        rates = [cell.success_rate for cell in report.cells_of(described.model).values()]
        caption = interval_caption([(rates, "attacked images")])
        console.print(table_of(title, header, body, caption))
    print_footer(console, report, "grid picture")


def table_of(title: str, header: list[str], body: list[list[str]], caption: str | None = None) -> Table:
    """A rich table: the first column left-aligned, the values right-aligned."""
    table = Table(title=title, caption=caption)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right", no_wrap=True)
    for row in body:
        table.add_row(*row)
    return table


def print_footer(console: Console, report: Report, picture: str) -> None:
    console.print(f"cells computed {report.cells_computed}, reused from cache {report.cells_reused}")
    if report.plot:
        console.print(f"{picture}: {report.plot}")


def render(console: Console, report: SweepReport) -> None:
    mode = ""
    if report.attack:
        mode = f", {report.attack} on {report.count} images " + (
            f"made at tau_attack={report.tol_attack:g}" if report.tol_attack else "at tau_attack = tau"
        )
    header, body = table_cells(report, interval_below=True)
    columns = ([report.baseline] if report.baseline is not None else []) + report.rows
    caption = interval_caption(
        [
            ([column.error.rate for column in columns], "test images (error)"),
            ([column.attack.success_rate for column in columns if column.attack], "attacked images (success)"),
        ]
    )
    console.print(table_of(f"{report.model}: tau_test across{mode}", header, body, caption))
    if report.tol_attack is not None:
        console.print(
            "mean L2 and MSE (still fooled): over the adversarials still misclassified at each tau, "
            "fewer digits where the success falls"
        )
    print_footer(console, report, "tau figure")
