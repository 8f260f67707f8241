"""A model card in RobustBench's field names, plus what a randomized, rejecting model needs.

RobustBench's ``model_info/*.json`` (Croce et al., "RobustBench", NeurIPS 2021 Datasets
and Benchmarks) holds ``name``, ``link``, ``authors``, ``additional_data``,
``number_forward_passes``, ``dataset``, ``venue``, ``architecture``, ``eps``,
``clean_acc``, ``reported``, ``autoattack_acc``, ``external``, ``unreliable`` and
``footnote``; accuracies there are percent strings. RobustBench takes deterministic models
only; tolerance randomization (Carrara et al., ICPR 2021 workshops) votes over V random
solver tolerances and rejects on disagreement, so the card adds a ``defense`` block
(votes, v_min, tolerance range, draws) and an ``evaluation`` block (every rate in [0, 1]
with its 95% Clopper–Pearson interval: pristine accepted, per attacker rejected and
defended success, robust accuracy per L2 budget defended and undefended, the fired
indicators, the budget check and the verdict), the ROC's AUCs, and the certified
accuracy of randomized smoothing where certificates are stored.
The schema is ``model_card.schema.json`` beside this module (:data:`SCHEMA_PATH`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeguard.intervals import Rate
from nodeguard.stages.report import ModelReport

SCHEMA_PATH = Path(__file__).with_name("model_card.schema.json")
CARD_VERSION = 3  # 2: the budget check and the certified accuracy; 3: rates with count and total


def _rate(rate: Rate | None) -> dict[str, Any] | None:
    return None if rate is None else rate.to_dict()


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def model_card(report: ModelReport) -> dict[str, Any]:
    """The JSON model card of a gathered report (see the module docstring).

    Args:
        report: from :func:`nodeguard.stages.report.gather_report`.

    Returns:
        A JSON-ready dict that validates against ``model_card.schema.json``.
    """
    model = report.config.get("model", {})
    error = report.metrics.get("test_error")
    security = report.security[0] if report.security else None
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": report.model,
        "link": None,
        "authors": None,
        "venue": None,
        "additional_data": False,
        "dataset": report.config.get("dataset"),
        "architecture": model.get("arch"),
        "threat_model": "L2",
        "clean_acc": _percent(None if error is None else 1 - error),
        "reported": None,
        "autoattack_acc": None,
        "eps": None,
        "external": None,
        "unreliable": None,
        "footnote": None,
        "number_forward_passes": None,
        "tol_train": report.metrics.get("tol_train", model.get("tol")),
        "versions": report.versions,
        "device": report.device,
        "defense": None,
        "evaluation": None,
    }
    if security is not None:
        values, settings = security.report, security.settings
        budgets = list(settings.get("autoattack_eps") or [])
        curve = {point.eps: point for point in values.curve}
        largest = max(budgets) if budgets else None
        if largest is not None and largest in curve:
            card["eps"] = f"{largest:g}"
            card["autoattack_acc"] = _percent(curve[largest].robust_accuracy_defended.value)
        fired = [item for item in values.indicators if item.fired]
        # None: a report stored before nodeguard checked its evaluations
        card["unreliable"] = any(item.unreliable for item in values.indicators) if values.indicators else None
        card["footnote"] = values.verdict or None
        card["number_forward_passes"] = values.votes
        card["defense"] = {
            "method": "tolerance randomization (Carrara et al., ICPR 2021 workshops)",
            "votes": values.votes,
            "vmin": values.vmin,
            "tol_range": values.tol_range,
            "draws": values.draws,
            "eot_draws": settings.get("eot_draws"),
        }
        card["evaluation"] = {
            "count": values.count,
            "command": security.command,
            "pristine_accepted": _rate(values.pristine_accepted),
            "pristine_accepted_correct": _rate(values.pristine_accepted_correct),
            "attackers": [
                {
                    "label": row.label,
                    "attack": row.attack,
                    "kappa": row.kappa,
                    "success": _rate(row.success_rate),
                    "rejected": _rate(row.rejected),
                    "defended_success": _rate(row.defended_success),
                    "median_l2": row.median_l2,
                }
                for row in values.points
            ],
            "robust_accuracy": [
                {
                    "eps": point.eps,
                    "defended": _rate(point.robust_accuracy_defended),
                    "undefended": _rate(point.robust_accuracy_undefended),
                }
                for point in values.curve
            ],
            "indicators_fired": [
                {"name": item.name, "about": item.about, "count": item.count, "total": item.total} for item in fired
            ],
            "optimality": [
                {"label": score.label, "undefended": score.undefended, "defended": score.defended}
                for score in values.optimality
            ],
            "budget_check": None,
            "verdict": values.verdict,
        }
        check = values.budget_check
        if check is not None:
            card["evaluation"]["budget_check"] = {
                "label": check.label,
                "eps": check.eps,
                "count": check.count,
                "steps": check.steps,
                "steps_more": check.steps_more,
                "fooled": _rate(check.fooled),
                "fooled_more": _rate(check.fooled_more),
                "converged": check.converged,
            }
    if report.certified:
        card["certified"] = [
            {
                "command": item.command,
                "sigma": item.report.sigma,
                "count": item.report.count,
                "n0": item.report.n0,
                "n": item.report.n,
                "alpha": item.report.alpha,
                "accuracy": [
                    {"radius": point.radius, "certified": _rate(point.certified_accuracy)}
                    for point in item.report.curve
                ],
            }
            for item in report.certified
        ]
    if report.roc is not None:
        card["roc"] = {
            "command": report.roc_command,
            "pristine": report.roc.pristine,
            "adversarial": report.roc.adversarial,
            "draws": report.roc.draws,
            "curves": [
                {
                    "votes": curve.votes,
                    "auc": curve.auc,
                    "rejected_at_vmin_v_minus_1": _rate(curve.rejected_at(curve.votes - 1)),
                }
                for curve in report.roc.curves
            ],
        }
    return card
