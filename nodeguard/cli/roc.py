"""`nodeguard roc`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nodeguard.cli._options import (
    TOL_RANGE_DEFAULT,
    BinaryStepsOption,
    DefenseSeedOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    PairBatchOption,
    StepsOption,
    ThreadsOption,
    TolRangeOption,
    plot_option,
)
from nodeguard.cli._output import Output, Picture, rate_cell
from nodeguard.cli._parsing import parse_list, parse_tol_range
from nodeguard.experiments.roc import RocCurve
from nodeguard.intervals import INTERVAL_LABEL
from nodeguard.reporting.plots import plot_roc
from nodeguard.stages.roc import RocReport, RocSettings, run_roc
from nodeguard.storage.registry import Registry

ROC = RocSettings()
VOTES_DEFAULT = ",".join(str(votes) for votes in ROC.votes)


def roc(
    model: ModelOption = None,
    votes: Annotated[str, typer.Option("--votes", help="Numbers of votes V, one curve each.")] = VOTES_DEFAULT,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            help="Pristine test images classified correctly, attacked at tol_train (1000: mnist5k's whole test split).",
        ),
    ] = ROC.count,
    tol_range: TolRangeOption = TOL_RANGE_DEFAULT,
    seed: DefenseSeedOption = ROC.seed,
    plot: Annotated[Path | None, plot_option("the ROC picture")] = None,
    attack: Annotated[
        str,
        typer.Option(
            "--attack",
            help=(
                "Attack whose adversarials are the negatives: cw (the paper's; half an hour on 1000 digits "
                "on 2 cores), fmn (minutes), eot-cw, blend or any other of `nodeguard attack`."
            ),
        ),
    ] = ROC.attack,
    kappa: Annotated[float | None, typer.Option("--kappa", help="Confidence of the attack (default 0).")] = None,
    draws: Annotated[int | None, typer.Option("--draws", help="eot-cw: tolerance draws per step (4).")] = None,
    steps: StepsOption = None,
    binary_steps: BinaryStepsOption = None,
    batch_size: PairBatchOption = ROC.batch_size,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
) -> None:
    """ROC curves of tolerance randomization: pristine images against their adversarials.

    Uses the model's attack set (cw by default; fmn, the faster minimal-norm attack;
    eot-cw, the attacker who knows the defense's range) made at tol_attack = tol_train,
    running the attack if there is none;
    votes are cached, so re-plotting is instant.
    """
    settings = RocSettings(
        votes=parse_list(votes, int, "--votes", "5,10,15,20"),
        count=count,
        tol_range=parse_tol_range(tol_range),
        seed=seed,
        batch_size=batch_size,
        attack=attack,
        attack_options={"steps": steps, "binary_steps": binary_steps, "kappa": kappa, "draws": draws},
    )
    Output(json_output).run(
        run_roc,
        render,
        Picture(plot_roc, plot),
        settings=settings,
        model=model,
        registry=Registry(),
        device=device,
    )


def _rejected(curve: RocCurve, level: int) -> str:
    """The share of adversarials rejected at an operating point, its interval below it."""
    return rate_cell(curve.rejected_at_accept(level))


def render(console: Console, report: RocReport) -> None:
    table = Table(
        title=f"{report.model}: {report.pristine} pristine vs {report.adversarial} adversarials",
        caption=f"intervals: {INTERVAL_LABEL} over {report.adversarial} adversarial images",
    )
    columns = ("V", "AUC", "rejected\nat 90%", "v_min", "rejected\nat 95%", "v_min ", "rejected\nat 100%", "v_min  ")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for curve in report.curves:
        table.add_row(
            str(curve.votes),
            f"{curve.auc:.3f}",
            _rejected(curve, 90),
            str(curve.vmin_at_90_accept),
            _rejected(curve, 95),
            str(curve.vmin_at_95_accept),
            _rejected(curve, 100),
            str(curve.vmin_at_100_accept),
        )
    console.print(table)
    margins = "n/a" if report.median_abs_margin_8bit is None else f"{report.median_abs_margin_8bit:.2e}"
    console.print(f"negatives: {report.adversarials_used}; median |margin| {margins}")
    console.print(f"draws: {report.draws}")
    console.print(
        "rejected at 90% (95%, 100%): the largest share of adversarials rejected by a v_min that still accepts "
        "at least 90% (95%, all) of pristine images"
    )
    if report.plot:
        console.print(f"ROC picture: {report.plot}")
