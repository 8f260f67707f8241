"""Option aliases shared by the commands, defined once; defaults come from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nodeguard.attacks import CWOptions, FMNOptions, PGDOptions
from nodeguard.cli._output import Output
from nodeguard.defense.randomization import DefenseSettings
from nodeguard.errors import ConfigError
from nodeguard.runtime.distributed import current_ranks, oversubscription_warning, set_threads

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (the result) on stdout; progress goes to stderr.")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Registered model name (default: the most recently trained).")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="NODEGUARD_DATA", help="Data sets root (default: the cache root's data folder)."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed.")]
DefenseSeedOption = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Public seed of the defense's draws: reproducible by anyone (research runs). "
        "Default: secret draws keyed by this installation's key.",
    ),
]


def _use_threads(threads: int | None) -> int | None:
    """Set the thread count as the option is parsed, and warn (once per machine) when the
    job's processes on this machine would use more threads than it has cores."""
    set_threads(threads)
    warning = oversubscription_warning()
    if warning and current_ranks().local_rank == 0:
        Output().warn(warning)
    return threads


ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        callback=_use_threads,
        help="CPU threads per process (default: what torch picks, the machine's cores).",
    ),
]

DEFENSE = DefenseSettings()
TolRangeOption = Annotated[str, typer.Option("--tol-range", help="Log-uniform range of the drawn tolerances.")]
TOL_RANGE_DEFAULT = f"{DEFENSE.tol_range.low:g},{DEFENSE.tol_range.high:g}"
PairBatchOption = Annotated[int, typer.Option("--batch-size", help="(image, tolerance) pairs solved together.")]


def _png_path(path: Path | None) -> Path | None:
    """``--plot`` names a PNG file: checked as the option is parsed, before any work."""
    if path is not None and path.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG file, got {path.name}")
    return path


def plot_option(what: str) -> Any:
    """The ``--plot FILE.png`` option of a command whose report has a picture: ``what`` says
    what is drawn."""
    return typer.Option("--plot", callback=_png_path, help=f"Write {what} to this PNG file.")


# the attack options several commands pass on; "(default)" is the attack's own default
_CW, _FMN, _PGD = CWOptions(), FMNOptions(), PGDOptions()
StepsOption = Annotated[
    int | None,
    typer.Option(
        "--steps",
        help=f"cw, eot-cw: steps per search ({_CW.steps}); fmn: steps ({_FMN.steps}); pgd: steps ({_PGD.steps}).",
    ),
]
BinaryStepsOption = Annotated[
    int | None, typer.Option("--binary-steps", help=f"cw, eot-cw: searches over c ({_CW.binary_steps}).")
]
