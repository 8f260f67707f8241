"""ROC of tolerance randomization: pristine images positive, CW adversarials negative.

For each number of votes V the score of an image is v_agree, and an image is accepted
when v_agree > v_min; sweeping v_min from 0 to V traces the ROC curve (TPR: pristine
accepted, FPR: adversarials accepted). The votes are drawn once for the largest V; the
first V of an image's draws are a valid draw of V (see :mod:`nodeguard.defense`), so
every curve comes from the same pass. Votes are cached per (model, attack set,
tolerance range, seed, largest V).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import auc, roc_curve

from .adversarial import AttackSettings, load_attack_set, run_attack
from .defense import DEFAULT_TOL_RANGE, DefenseSettings, ToleranceRandomization, Votes
from .errors import ConfigError
from .loading import load_model
from .progress import Progress, SilentProgress
from .registry import Registry, load_torch_file

VOTES_FOLDER = "votes"
ACCEPT_LEVELS = (0.90, 0.95)


@dataclass
class RocSettings:
    votes: tuple[int, ...] = (5, 10, 15, 20)
    count: int = 200
    tol_low: float = DEFAULT_TOL_RANGE[0]
    tol_high: float = DEFAULT_TOL_RANGE[1]
    seed: int = 0
    batch_size: int = 512
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.votes or min(self.votes) < 1:
            raise ConfigError("--votes takes positive integers, like 5,10,15,20")
        self.votes = tuple(sorted(set(int(v) for v in self.votes)))
        DefenseSettings(votes=max(self.votes), vmin=0, tol_low=self.tol_low, tol_high=self.tol_high)


@dataclass
class RocCurve:
    votes: int
    auc: float
    points: list[dict[str, float]]
    rejected_at_90_accept: float | None
    vmin_at_90_accept: int | None
    rejected_at_95_accept: float | None
    vmin_at_95_accept: int | None


def roc_from_scores(pristine: np.ndarray, adversarial: np.ndarray, votes: int) -> RocCurve:
    """ROC and AUC (scikit-learn) of v_agree scores; one point per v_min in 0..V."""
    if len(pristine) == 0 or len(adversarial) == 0:
        raise ConfigError("the ROC needs pristine images and at least one successful adversarial")
    labels = np.concatenate([np.ones(len(pristine)), np.zeros(len(adversarial))])
    scores = np.concatenate([pristine, adversarial]).astype(float)
    fpr, tpr, _ = roc_curve(labels, scores)
    points = []
    for vmin in range(votes + 1):
        points.append(
            {
                "vmin": vmin,
                "tpr": float(np.mean(pristine > vmin)),
                "fpr": float(np.mean(adversarial > vmin)),
            }
        )
    found: dict[float, tuple[float | None, int | None]] = {}
    for level in ACCEPT_LEVELS:
        usable = [p for p in points if p["tpr"] >= level]
        best = max(usable, key=lambda p: (1 - p["fpr"], p["tpr"])) if usable else None
        found[level] = (1 - best["fpr"], best["vmin"]) if best else (None, None)
    return RocCurve(
        votes=votes,
        auc=float(auc(fpr, tpr)),
        points=points,
        rejected_at_90_accept=found[0.90][0],
        vmin_at_90_accept=found[0.90][1],
        rejected_at_95_accept=found[0.95][0],
        vmin_at_95_accept=found[0.95][1],
    )


@dataclass
class RocReport:
    model: str
    set: str
    pristine: int
    adversarial: int
    tol_range: list[float]
    seed: int
    curves: list[dict[str, Any]]
    votes_reused: bool
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cached_votes(
    registry: Registry,
    loaded,
    set_key: str,
    settings: RocSettings,
    images: dict[str, torch.Tensor],
    progress: Progress,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Votes (N, V_max) of each image group, from the cache or computed and saved."""
    identity = {
        "set": set_key,
        "tol_low": settings.tol_low,
        "tol_high": settings.tol_high,
        "seed": settings.seed,
        "votes": max(settings.votes),
    }
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    path = registry.model_dir(loaded.name) / VOTES_FOLDER / f"votes-{digest}.pt"
    if path.is_file():
        payload = load_torch_file(path, expected_kind="votes")
        if payload.get("identity") == json.dumps(identity, sort_keys=True):
            progress.log("votes found in the cache; nothing to solve")
            return {name: payload[name] for name in images}, True
    defense = ToleranceRandomization(
        loaded.model,
        DefenseSettings(
            votes=max(settings.votes),
            vmin=0,
            tol_low=settings.tol_low,
            tol_high=settings.tol_high,
            seed=settings.seed,
            batch_size=settings.batch_size,
        ),
    )
    predictions = {}
    for name, group in images.items():
        progress.log(f"voting on {len(group)} {name} images with {max(settings.votes)} tolerances each")
        predictions[name] = defense.vote(group, progress=progress).predictions
    registry.write_tensors(
        loaded.name,
        f"{VOTES_FOLDER}/{path.name}",
        "votes",
        {"identity": json.dumps(identity, sort_keys=True), **predictions},
    )
    return predictions, False


def run_roc(
    settings: RocSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    plot: str | Path | None = None,
    progress: Progress | None = None,
) -> RocReport:
    """ROC curves of the defense for each V on the model's CW attack set (made if missing)."""
    registry = registry or Registry()
    progress = progress or SilentProgress()
    loaded = load_model(model, registry=registry, device=device)
    attack_settings = AttackSettings.with_overrides(attack="cw", count=settings.count, **settings.attack_options)
    report = run_attack(attack_settings, registry=registry, loaded=loaded, progress=progress)
    data = load_attack_set(registry, loaded.name, report.set)
    pristine = data["clean"]
    adversarial = data["adversarial_8bit"][data["success_8bit"]].float() / 255
    predictions, reused = cached_votes(
        registry, loaded, report.set, settings, {"pristine": pristine, "adversarial": adversarial}, progress
    )
    num_classes = loaded.config["model"]["num_classes"]
    curves = []
    for votes in settings.votes:
        pristine_scores = Votes(predictions["pristine"], torch.empty(0), num_classes).v_agree(votes).numpy()
        adversarial_scores = Votes(predictions["adversarial"], torch.empty(0), num_classes).v_agree(votes).numpy()
        curves.append(asdict(roc_from_scores(pristine_scores, adversarial_scores, votes)))
    result = RocReport(
        model=loaded.name,
        set=report.set,
        pristine=len(pristine),
        adversarial=len(adversarial),
        tol_range=[settings.tol_low, settings.tol_high],
        seed=settings.seed,
        curves=curves,
        votes_reused=reused,
    )
    if plot is not None:
        from .roc_plot import plot_roc

        plot_roc(result, Path(plot))
        result.plot = str(plot)
    return result
