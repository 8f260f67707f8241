"""`nodeguard defend PATH...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nodeguard.cli._options import (
    DEFENSE,
    TOL_RANGE_DEFAULT,
    DefenseSeedOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    PairBatchOption,
    ThreadsOption,
    TolRangeOption,
)
from nodeguard.cli._output import Output, skipped_lines
from nodeguard.cli._parsing import parse_tol_range
from nodeguard.defense.files import DefendReport, defend_paths
from nodeguard.defense.randomization import DefenseSettings
from nodeguard.errors import ConfigError
from nodeguard.intervals import INTERVAL_LABEL
from nodeguard.reporting.tables import defend_to_csv
from nodeguard.runtime.distributed import current_ranks
from nodeguard.storage.files import atomic_write_text, check_writable, display_path, json_text
from nodeguard.storage.registry import Registry


def defend(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    model: ModelOption = None,
    votes: Annotated[int, typer.Option("--votes", "-V", help="Tolerances drawn per image.")] = DEFENSE.votes,
    vmin: Annotated[int, typer.Option("--vmin", help="Accept when more than vmin votes agree.")] = DEFENSE.vmin,
    tol_range: TolRangeOption = TOL_RANGE_DEFAULT,
    seed: DefenseSeedOption = DEFENSE.seed,
    batch_size: PairBatchOption = DEFENSE.batch_size,
    resize: Annotated[bool, typer.Option("--resize", help="Resize images to the model's input size.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the results to FILE.csv or FILE.json.")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Classify images with tolerance randomization and flag possible adversarials.

    Each image is classified VOTES times, each time with the solver tolerance drawn
    log-uniformly in the range; its class is accepted when more than VMIN votes agree,
    else the image is rejected as possibly adversarial. Folders are searched recursively,
    following symbolic links; hidden entries (names starting with a dot) and files that
    are not images are listed as skipped; unreadable files are reported with the reason.

    Exit status: 0 when every image was voted on (accepted or rejected); 3 when some
    files could not be read or had the wrong size; 1 on an error (a missing path, no
    image at all, bad settings); 2 on bad usage.
    """
    settings = DefenseSettings(
        votes=votes, vmin=vmin, tol_range=parse_tol_range(tol_range), seed=seed, batch_size=batch_size
    )
    if out is not None:
        if out.suffix.lower() not in (".csv", ".json"):
            raise ConfigError(f"--out must end in .csv or .json, got {display_path(out)}")
        check_writable(out)  # before any vote: a file that cannot be written fails now, not after
    output = Output(json_output)
    with output.reporter() as reporter:
        report = defend_paths(
            paths, settings, model=model, registry=Registry(), device=device, resize=resize, progress=reporter
        )
    # the verdicts are printed first, so a failure to write the file loses none of them
    output.result(report.to_dict(), lambda console: render(console, report))
    if out is not None and current_ranks().is_main:
        write_report(report, out)
    if report.unreadable:
        raise typer.Exit(3)


def write_report(report: DefendReport, path: Path) -> None:
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json_text(report.to_dict(), indent=2) + "\n")
        return
    atomic_write_text(path, defend_to_csv(report))


def render(console: Console, report: DefendReport) -> None:
    table = Table(title=f"{report.model}: V={report.votes}, accept when v_agree > {report.vmin} ({report.draws} draws)")
    table.add_column("file", overflow="fold")
    table.add_column("class", justify="right")
    table.add_column("v_agree/V", justify="right")
    table.add_column("verdict")
    for image in report.images:
        verdict = Text("accepted", style="green") if image.accepted else Text("rejected", style="red")
        table.add_row(Text(image.path), str(image.prediction), f"{image.v_agree}/{report.votes}", verdict)
    for error in report.errors:
        reason = Text("unreadable", style="yellow") + Text(f": {error.error}")
        table.add_row(Text(error.path), "", "", reason)
    console.print(table)
    for line in skipped_lines(report.skipped, shown=5):  # each kind of skip: not images, hidden names, loops
        console.print(Text(line))
    voted = len(report.images)
    accepted, rejected = str(report.accepted), str(report.rejected)
    if voted:  # each count with its share of the images voted on and the share's interval
        accepted += f" ({report.accepted_rate.format()})"
        rejected += f" ({report.rejected_rate.format()})"
    console.print(f"accepted {accepted}, rejected {rejected}, unreadable {report.unreadable} ({report.seconds:.1f} s)")
    if voted:
        console.print(f"intervals: {INTERVAL_LABEL} over {voted} image{'' if voted == 1 else 's'}")
