"""Attack sets in the store: where they are saved, their summary, and PNG export.

The values (settings, contents, report) are :mod:`nodeguard.experiments.attack_sets`.

An attack set is the result of one attack on the first ``count`` images of a split of a
model's data set, at one solver tolerance. It lives in the model's result store
(:mod:`nodeguard.storage.results`) as ``results/attack_set/LABEL-DIGEST/``::

    result.pt      the AttackSet's tensors (one row per attacked image, in this order):
                   indices (int64, positions in the split), labels (int64),
                   clean and adversarial (float32 N x C x H x W in [0, 1]),
                   clean_predictions and predictions (int64, each image classified alone
                   at tol_attack), success (bool: clean correct and adversarial wrong),
                   margin (float32: true logit minus the best other of the adversarial
                   alone at tol_attack), l2 (float32, ||adversarial - clean||),
                   adversarial_8bit (uint8), success_8bit (bool), margin_8bit (float32),
                   grid_method (int64: 0 lost or not attempted, 1 rounded at the smallest
                   scale that stays adversarial, 2 outward rounding), seconds, settings
    shard-R-of-W.pt  rank R's finished batches while the attack runs (one process: rank
                   0 of 1); removed once the set is saved
    summary.json   the AttackReport, for people and scripts reading the folder
"""

from __future__ import annotations

from pathlib import Path

import torch

from nodeguard.attacks.boundary import GridMethod
from nodeguard.constants import ATTACK_SET_KIND
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import (
    AttackReport,
    AttackSet,
    ResolvedAttack,
    margin_stats,
    perturbation_stats,
)
from nodeguard.intervals import Rate
from nodeguard.storage.files import check_folder
from nodeguard.storage.images import save_png
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore, StoredResult

KIND = ATTACK_SET_KIND


def attack_set_result(results: ResultStore, settings: ResolvedAttack) -> StoredResult:
    """Where the attack set that ``settings`` describe lives in a model's result store."""
    return results.result(KIND, settings.as_dict(), settings.label())


def read_attack_set(stored: StoredResult) -> AttackSet | None:
    """The attack set saved at ``stored``, or None when there is none (yet)."""
    payload = stored.load_tensors()
    if payload is None:
        return None
    return AttackSet.from_payload(ResolvedAttack.from_dict(stored.settings), payload)


def load_attack_set(registry: Registry, model: str, key: str) -> AttackSet:
    """A saved attack set of ``model`` by its key (the ``set`` of an attack report).

    Args:
        registry: the registry holding the model.
        model: the model's name.
        key: the attack set's key, ``<label>-<digest>`` (``AttackReport.set``).

    Returns:
        The ``AttackSet``.

    Raises:
        RegistryError: invalid model name, no attack set with that key is saved (an
            unfinished one included), or its file is damaged.
        ConfigError: the saved file does not hold the settings it was found by
            (reported as "not complete yet").
    """
    stored = ResultStore(registry, model).find(KIND, key)
    attack_set = read_attack_set(stored)
    if attack_set is None:
        raise ConfigError(f"attack set {key!r} of {model!r} is not complete yet; run the attack again to finish it")
    return attack_set


def summarise(attack_set: AttackSet, model: str, stored: StoredResult, reused: bool) -> AttackReport:
    """The report of an attack set: success and perturbation, as floats and on the 8-bit grid;
    each success rate with its 95% interval over the attacked images."""
    count = len(attack_set)
    success, success_8bit = attack_set.success, attack_set.success_8bit
    l2_8bit = attack_set.l2_8bit()
    method = attack_set.grid_method
    stats = perturbation_stats(attack_set.l2, success, attack_set.dims)
    margins = margin_stats(attack_set.margin, success, "")
    margins_8bit = margin_stats(attack_set.margin_8bit, success_8bit, "_8bit")
    return AttackReport(
        model=model,
        attack=attack_set.settings.attack,
        tol_attack=attack_set.settings.tol_attack,
        count=count,
        success_rate=Rate.of(int(success.sum()), count),
        mean_l2=stats["mean_l2"],
        median_l2=stats["median_l2"],
        mean_mse=stats["mean_mse"],
        success_rate_8bit=Rate.of(int(success_8bit.sum()), count),
        mean_l2_8bit=perturbation_stats(l2_8bit, success_8bit, attack_set.dims)["mean_l2"],
        kept_by_rounding=int((method == GridMethod.ROUNDED).sum()),
        kept_by_outward_rounding=int((method == GridMethod.OUTWARD).sum()),
        lost_on_8bit_grid=int((success & ~success_8bit).sum()),
        median_abs_margin=margins["median_abs_margin"],
        p90_abs_margin=margins["p90_abs_margin"],
        median_abs_margin_8bit=margins_8bit["median_abs_margin_8bit"],
        p90_abs_margin_8bit=margins_8bit["p90_abs_margin_8bit"],
        seconds=attack_set.seconds,
        set=stored.key,
        path=str(stored.folder) if stored.folder is not None else "",  # "": a model in memory
        reused=reused,
        settings=attack_set.settings.as_dict(),
    )


def export_pngs(attack_set: AttackSet, directory: Path) -> None:
    """``pristine/`` and ``adversarial/`` PNGs named by index and label (8-bit successes only)."""
    pristine, adversarial = directory / "pristine", directory / "adversarial"
    for folder in (pristine, adversarial):
        check_folder(folder)
    clean_levels = (attack_set.clean * 255).round().to(torch.uint8)
    rows = zip(attack_set.indices.tolist(), attack_set.labels.tolist(), strict=True)
    for position, (index, label) in enumerate(rows):
        name = f"{index:05d}_label{label}.png"
        save_png(clean_levels[position], pristine / name)
        if bool(attack_set.success_8bit[position]):
            save_png(attack_set.adversarial_8bit[position], adversarial / name)
