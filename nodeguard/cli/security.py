"""`nodeguard security`."""

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
from nodeguard.cli._output import Output, Picture, compact_table, rate_cell
from nodeguard.cli._parsing import parse_list, parse_tol_range
from nodeguard.defense.randomization import ToleranceRange
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import ATTACK_BATCH_SIZE
from nodeguard.experiments.indicators import indicator_mark, row_flags
from nodeguard.intervals import INTERVAL_LABEL, format_number
from nodeguard.reporting.security_plots import plot_security
from nodeguard.stages.security import SecurityReport, SecuritySettings, other_range, run_security
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
    eot_draws: Annotated[int, typer.Option("--draws", help="EOT-CW: tolerance draws per step.")] = SECURITY.eot_draws,
    autoattack_eps: Annotated[
        str, typer.Option("--aa-eps", help="L2 budgets of AutoAttack-rand (apgd-rand); '' for none.")
    ] = AA_EPS_DEFAULT,
    autoattack_steps: Annotated[
        int, typer.Option("--aa-steps", help="APGD iterations (the original's 100).")
    ] = SECURITY.autoattack_steps,
    autoattack_eot_iter: Annotated[
        int, typer.Option("--aa-eot-iter", help="Forward passes averaged per APGD gradient (20).")
    ] = SECURITY.autoattack_eot_iter,
    votes: Annotated[int, typer.Option("--votes", help="Votes V of the defense.")] = SECURITY.votes,
    vmin: Annotated[
        int | None,
        typer.Option("--vmin", help="Accept when v_agree > v_min (default: the largest accepting 90% of pristine)."),
    ] = None,
    tol_range: TolRangeOption = TOL_RANGE_DEFAULT,
    seed: DefenseSeedOption = SECURITY.seed,
    attack_seed: Annotated[
        int,
        typer.Option(
            "--attack-seed",
            help="Seed of the attackers that draw (EOT-CW, AutoAttack-rand, Square); another value makes "
            "their attack sets again (CW draws nothing).",
        ),
    ] = SECURITY.attack_seed,
    attack_batch_size: Annotated[
        int,
        typer.Option(
            "--attack-batch-size",
            help="Images each attacker solves together (100 keeps nodeguard attack's sets; larger: less overhead "
            "per image on large --count, and new attack sets).",
        ),
    ] = SECURITY.attack_batch_size,
    eps: Annotated[str, typer.Option("--eps", help="L2 budgets of the robust-accuracy curve.")] = EPS_DEFAULT,
    steps: StepsOption = None,
    binary_steps: BinaryStepsOption = None,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start/--cold-start",
            help="EOT-CW continues from the CW kappa=0 adversarials (--warm-searches searches over c), "
            "or starts from the clean images (--binary-steps searches).",
        ),
    ] = SECURITY.warm_start,
    warm_binary_steps: Annotated[
        int, typer.Option("--warm-searches", help="EOT-CW continued: its searches over c.")
    ] = SECURITY.warm_binary_steps,
    square: Annotated[
        bool, typer.Option("--square/--no-square", help="Include Square (gradient-free) at each --aa-eps.")
    ] = SECURITY.square,
    square_queries: Annotated[
        int, typer.Option("--square-queries", help="Square: queries per image.")
    ] = SECURITY.square_queries,
    square_draws: Annotated[
        int,
        typer.Option("--square-draws", help="Square on the randomized model: draws averaged per query (0: none)."),
    ] = SECURITY.square_draws,
    budget_check: Annotated[
        int,
        typer.Option(
            "--budget-check",
            help="Rerun AutoAttack-rand at its middle budget with 5x --aa-steps on this many of the first "
            "images (more fooled than its interval allows: 'not converged'), and each budgeted attack with no "
            "norm bound there (0: neither).",
        ),
    ] = SECURITY.budget_check,
    tol_ranges: Annotated[
        str,
        typer.Option(
            "--tol-ranges",
            help="Other defense ranges to judge the same adversarials with, LOW:HIGH separated by commas "
            "(e.g. 1e-6:1,1e-3:1e-2).",
        ),
    ] = "",
    certify_sigma: Annotated[
        float | None,
        typer.Option(
            "--certify", help="Draw randomized smoothing's certified accuracy at this sigma beside the curves."
        ),
    ] = None,
    certify_model: Annotated[
        str | None,
        typer.Option(
            "--certify-model", help="The model smoothed by --certify (default: --model; train one with --noise-sigma)."
        ),
    ] = None,
    certify_n: Annotated[
        int, typer.Option("--certify-n", help="--certify: CERTIFY's estimation samples per image.")
    ] = SECURITY.certify_n,
    plot: Annotated[Path | None, plot_option("the security picture")] = None,
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
    settings = SecuritySettings(
        count=count,
        kappas=parse_list(kappas, float, "--kappas", "0,0.1,0.5"),
        eot=eot,
        eot_draws=eot_draws,
        autoattack_eps=parse_list(autoattack_eps, float, "--aa-eps", "1,1.5,2"),
        autoattack_steps=autoattack_steps,
        autoattack_eot_iter=autoattack_eot_iter,
        votes=votes,
        vmin=vmin,
        tol_range=parse_tol_range(tol_range),
        seed=seed,
        attack_seed=attack_seed,
        attack_batch_size=attack_batch_size,
        batch_size=batch_size,
        eps=parse_list(eps, float, "--eps", "0.5,1,2"),
        attack_options={"steps": steps, "binary_steps": binary_steps},
        warm_start=warm_start,
        warm_binary_steps=warm_binary_steps,
        square=square,
        square_queries=square_queries,
        square_draws=square_draws,
        budget_check=budget_check,
        tol_ranges=parse_tol_ranges(tol_ranges),
        certify_sigma=certify_sigma,
        certify_model=certify_model,
        certify_n=certify_n,
    )
    Output(json_output).run(
        run_security,
        render,
        Picture(plot_security, plot),
        settings=settings,
        model=model,
        registry=Registry(),
        device=device,
    )


def parse_tol_ranges(text: str) -> tuple[ToleranceRange, ...]:
    """``"1e-6:1,1e-3:1e-2"``: the ranges, each checked here, where it enters.

    Raises:
        ConfigError: a part that is not LOW:HIGH, or not a range of tolerances.
    """
    ranges = []
    for part in parse_list(text, str, "--tol-ranges", "1e-6:1,1e-3:1e-2"):
        bounds = part.split(":")
        try:
            low, high = (float(bound) for bound in bounds)
        except ValueError:
            raise ConfigError(
                f"--tol-ranges takes LOW:HIGH pairs separated by commas, like 1e-6:1; got {part!r}"
            ) from None
        ranges.append(other_range((low, high)))
    return tuple(ranges)


def render(console: Console, report: SecurityReport) -> None:
    chosen = " (accepts >= 90% of pristine)" if report.vmin_chosen else ""
    # rates over their intervals on two lines, labels wrapped, one space between columns:
    # legible in an 80-column terminal
    table = compact_table(
        f"{report.model}: {report.count} test digits, V = {report.votes}, v_min = {report.vmin}{chosen}"
    )
    table.add_column("attacker", justify="left", min_width=11)
    for column in ("L2\nmean", "L2\nmed", "success", "rejected", "defended", "|margin|"):
        table.add_column(column, justify="right", no_wrap=True)
    # the checks that fired on a row follow its label in parentheses: the table stays in 80 columns
    flags = row_flags(report.indicators)
    for point in report.points:
        cells = [
            point.label + (f" ({flags[point.label]})" if point.label in flags else ""),
            format_number(point.mean_l2, ".3f"),
            format_number(point.median_l2, ".3f"),
            rate_cell(point.success_rate, ".0%"),
            rate_cell(point.rejected, ".0%"),
            rate_cell(point.defended_success, ".0%"),
            format_number(point.median_abs_margin_8bit, ".1e"),
        ]
        table.add_row(*cells)
    console.print(table)
    timed = [f"{point.label} {point.attack_seconds:.0f}" for point in report.points if point.attack_seconds is not None]
    if timed:
        console.print(f"attack time (s, summed over batches and ranks, when each set was made): {', '.join(timed)}")
    attackers = f"attack seed {report.attack_seed}" + (
        f", attack batch {report.attack_batch_size}" if report.attack_batch_size != ATTACK_BATCH_SIZE else ""
    )
    console.print(
        f"draws: {report.draws}; {attackers}; pristine accepted "
        f"{report.pristine_accepted.format()}, accepted with the right class "
        f"{report.pristine_accepted_correct.format()}"
    )
    curve = Table(title="robust accuracy against the L2 budget (worst case over attackers per image)")
    columns = ["eps", "defended", "undefended"] + [f"certified s={item.sigma:g}" for item in report.certified]
    for column in columns:
        curve.add_column(column, justify="right")
    certified = report.certified
    for budget in report.curve:
        cells = [
            f"{budget.eps:g}",
            budget.robust_accuracy_defended.format(".0%"),
            budget.robust_accuracy_undefended.format(".0%"),
        ]
        for item in certified:
            at_eps = item.accuracy_at(budget.eps)
            cells.append(at_eps.certified_accuracy.format(".0%"))
        curve.add_row(*cells)
    console.print(curve)
    for item in certified:
        console.print(
            f"certified: {item.model} smoothed at sigma {item.sigma:g} (Cohen et al. 2019; n0 = {item.n0}, "
            f"n = {item.n}, alpha = {item.alpha:g}) on the first {item.count} test images; largest certifiable "
            f"radius {item.max_radius:.2f}"
        )
    render_spread(console, report)
    render_checks(console, report)
    console.print(
        "success: misclassified alone at tol_train (8-bit); rejected: share of those adversarials the defense "
        "rejects; defended success: misclassified by the vote and accepted, over all attacked images; "
        f"intervals: {INTERVAL_LABEL}; {report.seconds:.0f} s computing"
        + (" (report reused from the cache)" if report.reused else "")
    )
    if report.plot:
        console.print(f"security picture: {report.plot}")


def render_checks(console: Console, report: SecurityReport) -> None:
    """The evaluation's checks of itself: fired indicators with what to do, optimality, the verdict."""
    if not report.indicators:
        return
    fired = [item for item in report.indicators if item.fired]
    quiet = sorted({item.name for item in report.indicators} - {item.name for item in fired})
    console.print("checks of the evaluation (indicators of attack failure, Pintor et al. 2022; AutoAttack's checks):")
    for item in fired:
        mark = indicator_mark(item)
        console.print(
            f"  {mark}: {item.name} on {item.about}: {item.count} of {item.total} images "
            f"{item.rate.format('.0%')}: {item.meaning}. What to do: {item.action}."
        )
    if quiet:
        console.print(f"  not fired: {', '.join(quiet)}")
    check = report.budget_check
    if check is not None:
        outcome = "within that interval" if check.converged else "ABOVE that interval: not converged"
        own = check.fooled.format(".1%")
        console.print(
            f"budget check: {check.label} rerun with {check.steps_more} steps (its own: {check.steps}) on the first "
            f"{check.count} images fools the undefended model on {check.fooled_more.count} of them, against "
            f"{check.fooled.count} ({own}): {outcome}"
        )
    table = Table(title="optimality (AttackBench): worst case over all attackers / this one, area over L2 0-E")
    for column in ("attacker", "undefended", "defended"):
        table.add_column(column, justify="right", no_wrap=True)
    for score in report.optimality:
        table.add_row(score.label, format_number(score.undefended, ".2f"), format_number(score.defended, ".2f"))
    console.print(table)
    if report.optimality:
        unscored = any(score.undefended is None or score.defended is None for score in report.optimality)
        note = "; n/a: no attacker fooled any image within E" if unscored else ""
        console.print(f"E = {report.optimality[0].max_eps:g}{note}")
    console.print(f"verdict: {report.verdict}")


def render_spread(console: Console, report: SecurityReport) -> None:
    """The margin-spread tables: per image set, the kappa check, and the other ranges."""
    table = compact_table(f"margin spread over the defense's {report.votes} draws (logits; per image set)")
    table.add_column("images", justify="left", min_width=11)
    for column in ("n", "width\nmed", "width\np90", "rise\nmed", "rise\np90", "straddle 0", "all wrong"):
        table.add_column(column, justify="right", no_wrap=True)
    for item in report.spreads:
        table.add_row(
            item.label,
            str(item.count),
            format_number(item.median_width, ".3f"),
            format_number(item.p90_width, ".3f"),
            format_number(item.median_rise, ".3f"),
            format_number(item.p90_rise, ".3f"),
            rate_cell(item.straddling, ".0%"),
            rate_cell(item.all_negative, ".0%"),
        )
    console.print(table)
    if report.minimal_label is not None:
        predicted = ", ".join(
            f"{float(share):.0%} above kappa = {format_number(value, '.3f')}"
            for share, value in report.predicted_kappa.items()
        )
        console.print(
            f"from the rises of {report.minimal_label}: an adversarial survives every vote when its confidence "
            f"exceeds its rise; predicted: {predicted}"
        )
        checks = compact_table("the prediction against the CW rows")
        for column in (
            "kappa",
            "predicted: survive\nevery vote",
            "measured: wrong\nat every draw",
            "defended\nsuccess",
        ):
            checks.add_column(column, justify="right", no_wrap=True)
        for check in report.kappa_checks:
            checks.add_row(
                f"{check.kappa:g}",
                format_number(check.predicted_survival, ".0%"),
                check.survived_every_vote.format(".0%"),
                check.defended_success.format(".0%"),
            )
        console.print(checks)
    for judged in report.ranges:
        accepted = judged.pristine_accepted.format()
        ranged = compact_table(
            f"defense range [{judged.tol_range[0]:g}, {judged.tol_range[1]:g}] (V = {report.votes}, "
            f"v_min = {report.vmin}): pristine accepted {accepted}"
        )
        for column in ("attacker", "rejected", "defended", "wrong at every draw"):
            ranged.add_column(column, justify="right", no_wrap=True)
        for row in judged.rows:
            ranged.add_row(
                row.label,
                row.rejected.format(".0%"),
                row.defended_success.format(".0%"),
                row.all_negative.format(".0%"),
            )
        console.print(ranged)
