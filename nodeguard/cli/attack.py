"""`nodeguard attack cw|fmn|eot-cw|apgd-rand|square|pgd|blend`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nodeguard.attacks import ATTACKS, CWOptions, EOTCWOptions, FMNOptions, PGDOptions, SquareOptions
from nodeguard.attacks.pgd import DEFAULT_EPS
from nodeguard.cli._options import (
    BinaryStepsOption,
    DataDirOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    SeedOption,
    StepsOption,
    ThreadsOption,
)
from nodeguard.cli._output import Output
from nodeguard.cli._parsing import parse_tol_range
from nodeguard.experiments.attack_sets import AttackReport, AttackSettings
from nodeguard.intervals import INTERVAL_LABEL, format_number
from nodeguard.stages.attack import run_attack
from nodeguard.storage.registry import Registry

defaults = AttackSettings()
CW, EOT, PGD, FMN, SQUARE = CWOptions(), EOTCWOptions(), PGDOptions(), FMNOptions(), SquareOptions()


def attack(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(ATTACKS.names())}.")],
    model: ModelOption = None,
    tol_attack: Annotated[
        float | None, typer.Option("--tol-attack", help="Solver tolerance the attacker uses (default: tol_train).")
    ] = None,
    count: Annotated[int, typer.Option("--count", help="Number of images to attack.")] = defaults.count,
    split: Annotated[str, typer.Option("--split", help="test or train.")] = defaults.split,
    only_correct: Annotated[
        bool, typer.Option("--only-correct/--all", help="Attack only images the model classifies correctly.")
    ] = defaults.only_correct,
    batch_size: Annotated[int, typer.Option("--batch-size")] = defaults.batch_size,
    steps: StepsOption = None,
    binary_steps: BinaryStepsOption = None,
    initial_const: Annotated[
        float | None, typer.Option("--initial-const", help=f"cw: first c ({CW.initial_const:g}).")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help=f"cw: Adam learning rate ({CW.lr:g}).")] = None,
    kappa: Annotated[
        float | None, typer.Option("--kappa", help=f"cw, fmn, eot-cw, blend: confidence ({CW.kappa:g}).")
    ] = None,
    alpha_init: Annotated[
        float | None, typer.Option("--alpha-init", help=f"fmn: first L2 step length ({FMN.alpha_init:g}).")
    ] = None,
    gamma_init: Annotated[
        float | None, typer.Option("--gamma-init", help=f"fmn: first relative radius change ({FMN.gamma_init:g}).")
    ] = None,
    draws: Annotated[
        int | None,
        typer.Option(
            "--draws",
            help=f"eot-cw: tolerance draws per step ({EOT.draws}); square: draws averaged per query (0: tol_attack).",
        ),
    ] = None,
    queries: Annotated[
        int | None, typer.Option("--queries", help=f"square: queries per image ({SQUARE.queries}).")
    ] = None,
    tol_range: Annotated[
        str | None,
        typer.Option("--tol-range", help=f"eot-cw: range of the drawn tolerances ({EOT.tol_low:g},{EOT.tol_high:g})."),
    ] = None,
    eot_iter: Annotated[
        int | None, typer.Option("--eot-iter", help="apgd-rand: forward passes per gradient (20).")
    ] = None,
    norm: Annotated[str | None, typer.Option("--norm", help=f"pgd: linf or l2 ({PGD.norm}).")] = None,
    eps: Annotated[
        float | None,
        typer.Option(
            "--eps",
            help=f"pgd: budget ({DEFAULT_EPS['linf']:g} linf, {DEFAULT_EPS['l2']:g} l2); apgd-rand, square: L2 "
            "budget (1.5).",
        ),
    ] = None,
    seed: SeedOption = defaults.seed,
    export: Annotated[
        Path | None, typer.Option("--export", help="Also write pristine/ and adversarial/ PNG files here.")
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Attack a registered model at a chosen solver tolerance and save the attack set.

    The same request again reuses the saved set; an interrupted attack continues from its
    last finished batch. Options an attack does not take are refused.
    """
    drawn = parse_tol_range(tol_range) if tol_range is not None else None
    tol_low, tol_high = (drawn.low, drawn.high) if drawn is not None else (None, None)
    settings = AttackSettings.with_overrides(
        attack=name,
        tol_attack=tol_attack,
        count=count,
        split=split,
        only_correct=only_correct,
        batch_size=batch_size,
        seed=seed,
        steps=steps,
        binary_steps=binary_steps,
        initial_const=initial_const,
        lr=lr,
        kappa=kappa,
        alpha_init=alpha_init,
        gamma_init=gamma_init,
        draws=draws,
        tol_low=tol_low,
        tol_high=tol_high,
        eot_iter=eot_iter,
        queries=queries,
        norm=norm,
        eps=eps,
    )
    Output(json_output).run(
        run_attack,
        render,
        settings=settings,
        model=model,
        registry=Registry(),
        device=device,
        data_dir=str(data_dir) if data_dir else None,
        export_dir=export,
    )


def render(console: Console, report: AttackReport) -> None:
    state = "reused" if report.reused else f"{report.seconds:.0f} s"
    success = report.success_rate.format()
    success_8bit = report.success_rate_8bit.format()
    console.print(
        f"{report.attack} on {report.model} at tol_attack {report.tol_attack:g}: {report.count} images ({state})\n"
        f"  success rate {success}  mean L2 {format_number(report.mean_l2, '.3f')}  "
        f"median L2 {format_number(report.median_l2, '.3f')}  mean MSE {format_number(report.mean_mse, '.2e')}\n"
        f"  on the 8-bit grid: success {success_8bit} (kept by rounding {report.kept_by_rounding}, "
        f"by outward rounding {report.kept_by_outward_rounding}, lost {report.lost_on_8bit_grid})\n"
        f"  |margin| at tol_attack, median / 90th percentile: {format_number(report.median_abs_margin, '.2e')} / "
        f"{format_number(report.p90_abs_margin, '.2e')}, on the 8-bit grid "
        f"{format_number(report.median_abs_margin_8bit, '.2e')} / "
        f"{format_number(report.p90_abs_margin_8bit, '.2e')}\n"
        + "".join(
            f"  {'UNRELIABLE' if item.unreliable else 'expected'}: {item.name} on {item.about}: {item.count} of "
            f"{item.total} images: {item.meaning}. What to do: {item.action}.\n"
            for item in report.indicators
            if item.fired
        )
        + f"  checks not fired: {', '.join(item.name for item in report.indicators if not item.fired) or 'none'}\n"
        f"  intervals: {INTERVAL_LABEL} over {report.count} images\n"
        f"  set {report.set} in {report.path}"
        + (f"\n  PNG files in {report.exported_to}" if report.exported_to else "")
    )
