"""Option aliases shared by the commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (the result) on stdout; progress goes to stderr.")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Registered model name (default: the most recently trained).")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="NODEGUARD_DATA", help="Data sets root (default: <cache root>/data)."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed.")]
