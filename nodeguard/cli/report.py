"""`nodeguard report`: one HTML page and one JSON model card of what is stored for a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from nodeguard.cli._options import DeviceOption, JsonOption, ModelOption, ThreadsOption
from nodeguard.cli._output import Output
from nodeguard.errors import ConfigError
from nodeguard.progress import Progress
from nodeguard.reporting.model_card import model_card
from nodeguard.reporting.report_page import report_page
from nodeguard.runtime.distributed import current_ranks
from nodeguard.stages.report import gather_report
from nodeguard.storage.files import atomic_write_json, atomic_write_text, check_writable
from nodeguard.storage.registry import Registry

PAGE_FILE = "report.html"
CARD_FILE = "model-card.json"


@dataclass
class WrittenReport:
    """Where the report went, and what it says in one glance."""

    model: str
    page: str
    card: str
    security_reports: int
    attack_sets: int
    roc: bool
    unreliable: bool | None
    verdict: str | None
    missing: list[str] = field(default_factory=list)
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "plot"}


def write_report(
    progress: Progress,
    model: str | None,
    out: Path | str,
    seed: int | None,
    roc: bool | None,
    device: str,
    security_key: str | None = None,
) -> WrittenReport:
    """Gather the model's stored results, then write ``out/report.html`` and ``out/model-card.json``.

    Raises:
        ConfigError: ``out`` is empty (it would write into the working folder unasked).
    """
    if not str(out).strip():
        raise ConfigError("--out needs a folder, like report (use . for the working folder); got an empty name")
    folder = Path(out)
    page_path, card_path = folder / PAGE_FILE, folder / CARD_FILE
    check_writable(page_path)  # before any work (makes the folder; one line where it cannot)
    gathered = gather_report(
        model, Registry(), roc_seed=seed, roc=roc, device=device, progress=progress, security_key=security_key
    )
    card = model_card(gathered)
    if current_ranks().is_main:  # under torchrun the ranks share the ROC's votes; rank 0 writes
        atomic_write_text(page_path, report_page(gathered))
        atomic_write_json(card_path, card)
    return WrittenReport(
        model=gathered.model,
        page=str(page_path),
        card=str(card_path),
        security_reports=len(gathered.security),
        attack_sets=len(gathered.attacks),
        roc=gathered.roc is not None,
        unreliable=card["unreliable"],
        verdict=card["footnote"],
        missing=gathered.missing,
    )


def report(
    model: ModelOption = None,
    out: Annotated[str, typer.Option("--out", help="Folder for report.html and model-card.json.")] = "report",
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Public seed of the ROC's draws (as given to `nodeguard roc`; default: secret)."),
    ] = None,
    roc: Annotated[
        bool | None,
        typer.Option(
            "--roc/--no-roc",
            help="The ROC over the largest FMN, CW or blend set: by default from stored votes only (missing "
            "ones are listed with their command); --roc draws them; --no-roc leaves the ROC out.",
        ),
    ] = None,
    security_key: Annotated[
        str | None,
        typer.Option("--security", help="The stored security report to show (its key, as the page lists them)."),
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
) -> None:
    """One page to attach: what is stored for a model (training, attack sets, ROC, security
    with its checks and verdict), each figure beside the command that reproduces it, as a
    self-contained HTML page and a JSON model card (RobustBench's fields plus the defense's).

    Runs no attack and, unless --roc, solves nothing: the ROC reuses stored votes (--roc
    draws the missing ones, about a minute per 1000 digits on 2 cores); what is missing is
    listed with the command that makes it.
    """
    Output(json_output).run(
        write_report, render, model=model, out=out, seed=seed, roc=roc, device=device, security_key=security_key
    )


def render(console: Console, written: WrittenReport) -> None:
    console.print(f"{written.model}: wrote {written.page} and {written.card}")
    console.print(
        f"{written.attack_sets} attack sets, {written.security_reports} security reports, "
        f"ROC {'drawn' if written.roc else 'not drawn'}"
    )
    if written.verdict:
        console.print(f"verdict: {written.verdict}")
    for line in written.missing:
        console.print(f"missing: {line}")
