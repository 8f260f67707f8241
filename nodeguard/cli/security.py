"""`nodeguard security`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nodeguard.cli._options import (
    TOL_RANGE_DEFAULT,
    DefenseSeedOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    PairBatchOption,
    ThreadsOption,
    TolRangeOption,
)
from nodeguard.cli._output import Output
from nodeguard.cli._parsing import parse_list, parse_tol_range
from nodeguard.errors import ConfigError
from nodeguard.stages.security import SecurityReport, SecuritySettings, run_security
from nodeguard.storage.registry import Registry

SECURITY = SecuritySettings()
KAPPAS_DEFAULT = ",".join(f"{kappa:g}" for kappa in SECURITY.kappas)
AA_EPS_DEFAULT = ",".join(f"{eps:g}" for eps in SECURITY.autoattack_eps)
EPS_DEFAULT = ",".join(f"{eps:g}" for eps in SECURITY.eps)


def security(
    model: ModelOption = None,
    count: Annotated[int, typer.Option("--count", help="Test images attacked by every attacker.")] = SECURITY.count,
    kappas: Annotated[str, typer.Option("--kappas", help="Confidences of the CW attackers.")] = KAPPAS_DEFAULT,
    eot: Annotated[bool, typer.Option("--eot/--no-eot", help="Include EOT-CW (knows the range).")] = SECURITY.eot,
    draws: Annotated[int, typer.Option("--draws", help="EOT-CW: tolerance draws per step.")] = SECURITY.eot_draws,
    aa_eps: Annotated[
        str, typer.Option("--aa-eps", help="L2 budgets of AutoAttack-rand (apgd-rand); '' for none.")
    ] = AA_EPS_DEFAULT,
    aa_steps: Annotated[
        int, typer.Option("--aa-steps", help="APGD iterations (the original's 100).")
    ] = SECURITY.autoattack_steps,
    aa_eot_iter: Annotated[
        int, typer.Option("--aa-eot-iter", help="Forward passes averaged per APGD gradient (20).")
    ] = SECURITY.autoattack_eot_iter,
    votes: Annotated[int, typer.Option("--votes", help="Votes V of the defense.")] = SECURITY.votes,
    vmin: Annotated[
        int | None,
        typer.Option("--vmin", help="Accept when v_agree > v_min (default: the largest accepting 90% of pristine)."),
    ] = None,
    tol_range: TolRangeOption = TOL_RANGE_DEFAULT,
    seed: DefenseSeedOption = SECURITY.seed,
    eps: Annotated[str, typer.Option("--eps", help="L2 budgets of the robust-accuracy curve.")] = EPS_DEFAULT,
    steps: Annotated[int | None, typer.Option("--steps", help="Steps per search of every attacker.")] = None,
    binary_steps: Annotated[int | None, typer.Option("--binary-steps", help="Searches over c.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the security picture to this PNG.")] = None,
    batch_size: PairBatchOption = SECURITY.batch_size,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Tolerance randomization against attackers who know more: CW at each confidence
    kappa; EOT-CW and AutoAttack-rand, which average over tolerances drawn from the
    defense's range.

    One row per attacker (L2, success against the undefended model, share rejected,
    end-to-end success against the defended model) and the robust accuracy against the L2
    budget, defended and undefended. Attack sets, votes and the report are cached.
    """
    low, high = parse_tol_range(tol_range)
    if plot is not None and plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG file, got {plot.name}")
    settings = SecuritySettings(
        count=count,
        kappas=parse_list(kappas, float, "--kappas", "0,0.1,0.5"),
        eot=eot,
        eot_draws=draws,
        autoattack_eps=parse_list(aa_eps, float, "--aa-eps", "1,1.5,2"),
        autoattack_steps=aa_steps,
        autoattack_eot_iter=aa_eot_iter,
        votes=votes,
        vmin=vmin,
        tol_low=low,
        tol_high=high,
        seed=seed,
        batch_size=batch_size,
        eps=parse_list(eps, float, "--eps", "0.5,1,2"),
        attack_options={"steps": steps, "binary_steps": binary_steps},
    )
    Output(json_output).run(
        run_security, render, settings=settings, model=model, registry=Registry(), device=device, plot=plot
    )


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render(console: Console, report: SecurityReport) -> None:
    chosen = " (accepts >= 90% of pristine)" if report.vmin_chosen else ""
    table = Table(
        title=f"{report.model}: {report.count} test digits, V = {report.votes}, v_min = {report.vmin}{chosen}"
    )
    for column in ("attacker", "L2 mean", "L2 med", "success", "rejected", "defended", "|margin|"):
        table.add_column(column, justify="right", no_wrap=True)
    for point in report.points:
        table.add_row(
            point.label,
            _fmt(point.mean_l2, ".3f"),
            _fmt(point.median_l2, ".3f"),
            f"{point.success_rate:.1%}",
            _fmt(point.rejected, ".1%"),
            f"{point.defended_success:.1%}",
            _fmt(point.median_abs_margin_8bit, ".1e"),
        )
    console.print(table)
    console.print(
        f"draws: {report.draws}; pristine accepted {report.pristine_accepted:.1%}, accepted with the right class "
        f"{report.pristine_accepted_correct:.1%}"
    )
    curve = Table(title="robust accuracy against the L2 budget (best attacker per image)")
    for column in ("eps", "defended", "undefended"):
        curve.add_column(column, justify="right")
    for budget in report.curve:
        curve.add_row(
            f"{budget.eps:g}",
            f"{budget.robust_accuracy_defended:.1%}",
            f"{budget.robust_accuracy_undefended:.1%}",
        )
    console.print(curve)
    console.print(
        "success: misclassified alone at tol_train (8-bit); rejected: share of those adversarials the defense "
        "rejects; defended success: misclassified by the vote and accepted, over all attacked images"
        + (" (report reused from the cache)" if report.reused else "")
    )
    if report.plot:
        console.print(f"security picture: {report.plot}")
