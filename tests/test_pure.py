"""Model-free unit tests of the pure functions the stages are built from: no training, no solver."""

from __future__ import annotations

import csv

import pytest
import torch

from nodeguard.attacks.blend import BLEND_CLEARANCE, blend_targets
from nodeguard.attacks.boundary import smallest_scale
from nodeguard.defense.randomization import Votes
from nodeguard.experiments.attack_sets import (
    BATCH_FIELDS,
    AttackSet,
    AttackSettings,
    margin_stats,
    perturbation_stats,
)
from nodeguard.experiments.security import Attacker, JudgedAttack, judge, robust_accuracy_curve
from nodeguard.intervals import Rate, rate_interval
from nodeguard.reporting.tables import grid_table, grid_to_csv, table_cells, to_csv, to_markdown
from nodeguard.runtime.distributed import Ranks
from nodeguard.stages.attack import join_units, shard_units
from nodeguard.stages.grid import GridCell, GridModel, GridReport
from nodeguard.stages.sweep import ErrorCell, SweepReport, SweepRow


def resolved(attack: str, batch_size: int):
    return AttackSettings.with_overrides(attack=attack, count=10, batch_size=batch_size).resolve(1e-3)


@pytest.mark.parametrize("attack", ["cw", "pgd"])
@pytest.mark.parametrize(("count", "world", "batch_size"), [(0, 1, 3), (7, 1, 3), (7, 2, 3), (10, 3, 2), (5, 8, 2)])
def test_shard_units_cover_every_row_once(attack, count, world, batch_size):
    settings = resolved(attack, batch_size)
    units = [unit for rank in range(world) for unit in shard_units(count, settings, Ranks(rank, world))]
    rows = [row for _, unit_rows in units for row in unit_rows]
    assert sorted(rows) == list(range(count))
    assert all(1 <= len(unit_rows) <= batch_size for _, unit_rows in units)
    if attack == "pgd":  # draws per batch: one process's batches, kept whole, whatever the world
        alone = shard_units(count, settings, Ranks(0, 1))
        assert sorted(units) == sorted(alone)
    elif count:  # per image: rank r attacks rows r, r + W, ...
        assert [row for _, unit_rows in shard_units(count, settings, Ranks(0, world)) for row in unit_rows] == list(
            range(0, count, world)
        )


def test_join_units_puts_rows_back_in_order():
    def batch(rows):
        values = torch.tensor(rows, dtype=torch.float32)
        fields = {name: values.clone() for name in BATCH_FIELDS}
        return {**fields, "seconds": 1.5}

    units = {(0, (1, 3)): batch([1, 3]), (0, (0, 2)): batch([0, 2]), (1, (4,)): batch([4])}
    joined = join_units(units)
    for name in BATCH_FIELDS:
        assert joined[name].tolist() == [0, 1, 2, 3, 4]
    assert joined["seconds"] == 4.5


def test_perturbation_and_margin_stats():
    l2 = torch.tensor([1.0, 2.0, 3.0, 10.0])
    mask = torch.tensor([True, True, True, False])
    stats = perturbation_stats(l2, mask, dims=4)
    assert stats == {"mean_l2": 2.0, "median_l2": 2.0, "mean_mse": pytest.approx((1 + 4 + 9) / 3 / 4)}
    assert perturbation_stats(l2, torch.zeros(4, dtype=torch.bool), 4) == {
        "mean_l2": None,
        "median_l2": None,
        "mean_mse": None,
    }
    margins = torch.tensor([-0.1, -0.2, 0.3, -0.4, -1.0] + [-0.5] * 5)
    stats = margin_stats(margins, margins < 0, "_8bit")
    assert stats["median_abs_margin_8bit"] == pytest.approx(0.5)
    assert stats["p90_abs_margin_8bit"] == pytest.approx(float(torch.quantile(margins[margins < 0].abs(), 0.9)))
    assert margin_stats(margins, torch.zeros(10, dtype=torch.bool), "") == {
        "median_abs_margin": None,
        "p90_abs_margin": None,
    }


def test_smallest_scale_finds_each_rows_threshold():
    thresholds = torch.tensor([0.0001, 0.25, 0.5, 0.999, 1.0], dtype=torch.float64)
    scales = smallest_scale(lambda s: s >= thresholds, len(thresholds), steps=30)
    assert (scales >= thresholds).all()  # always a scale where it held
    assert (scales - thresholds).max() <= 2**-30
    assert smallest_scale(lambda s: s >= thresholds, 5, steps=0).tolist() == [1.0] * 5


def test_robust_accuracy_takes_the_best_attacker_per_image():
    inf = float("inf")

    def judged(l2, undefended, defended):
        return JudgedAttack(
            row=None,  # type: ignore[arg-type]  (not read by the curve)
            l2=torch.tensor(l2),
            fooled_undefended=torch.tensor(undefended),
            fooled_defended=torch.tensor(defended),
        )

    first = judged([0.5, 2.0, inf, 1.0], [True, True, False, True], [False, True, False, True])
    second = judged([1.5, 0.5, inf, 3.0], [True, True, False, True], [True, False, False, True])
    pristine_ok = torch.tensor([True, True, True, False])
    curve = robust_accuracy_curve([first, second], pristine_ok, (0.0, 1.0, 2.0, 5.0))
    assert [point.robust_accuracy_undefended.value for point in curve] == [1.0, 0.25, 0.25, 0.25]
    # defended: image 3 is rejected or wrong already (pristine_ok False); image 0 falls at
    # 1.5 (second attacker), image 1 at 2.0 (first), image 2 never
    assert [point.robust_accuracy_defended.value for point in curve] == [0.75, 0.75, 0.25, 0.25]
    assert all(point.robust_accuracy_defended.total == 4 for point in curve)
    assert curve[0].eps == 0.0 and len(curve) == 4


def test_judge_reads_the_8bit_or_the_float_adversarials():
    # three images of 1 x 1 x 2 pixels; the float attack fooled images 0 and 1, the 8-bit
    # grid images 0 and 2 (rounding lost image 1's; image 2's is a hand-made case)
    clean = torch.zeros(3, 1, 1, 2)
    adversarial = torch.tensor([[0.3, 0.4], [0.0, 0.7], [0.1, 0.1]]).view(3, 1, 1, 2)
    levels = torch.tensor([[0, 255], [0, 0], [51, 0]], dtype=torch.uint8).view(3, 1, 1, 2)
    attack_set = AttackSet(
        settings=None,  # type: ignore[arg-type]  (not read by judge)
        indices=torch.arange(3),
        clean=clean,
        adversarial=adversarial,
        labels=torch.tensor([1, 2, 3]),
        clean_predictions=torch.tensor([1, 2, 3]),
        predictions=torch.tensor([0, 0, 3]),
        success=torch.tensor([True, True, False]),
        margin=torch.tensor([-1e-4, -3e-4, 0.3]),
        l2=(adversarial - clean).flatten(1).norm(dim=1),
        adversarial_8bit=levels,
        success_8bit=torch.tensor([True, False, True]),
        margin_8bit=torch.tensor([-0.05, 0.1, -0.02]),
        grid_method=torch.zeros(3, dtype=torch.long),
        seconds=2.0,
    )
    attacker = Attacker("cw k=0", "cw", 3, {"kappa": 0.0})
    # V = 3 at v_min 1: accepted when at least 2 votes agree
    grid_votes = Votes(torch.tensor([[5, 5, 5], [3, 4, 5]]), torch.full((2, 3), 1e-3, dtype=torch.float64), 10, vmin=1)
    float_votes = Votes(torch.tensor([[1, 1, 5], [7, 7, 7]]), torch.full((2, 3), 1e-3, dtype=torch.float64), 10, vmin=1)
    on_grid = judge(attacker, attack_set, "key", grid_votes)
    floats = judge(attacker, attack_set, "key", float_votes, on_8bit_grid=False)
    # 8-bit: image 0 wrong and accepted, image 2 rejected (no two votes agree)
    assert (on_grid.row.success_rate.count, on_grid.row.rejected.count, on_grid.row.defended_success.count) == (2, 1, 1)
    assert on_grid.fooled_defended.tolist() == [True, False, False]
    assert on_grid.fooled_undefended.tolist() == [True, False, True]
    assert on_grid.l2[0] == pytest.approx(1.0) and on_grid.l2[2] == pytest.approx(0.2) and on_grid.l2[1] == float("inf")
    assert on_grid.row.median_abs_margin_8bit == pytest.approx(0.02)
    # float: image 0 voted its true class (not fooled), image 1 wrong and accepted
    assert (floats.row.success_rate.count, floats.row.rejected.count, floats.row.defended_success.count) == (2, 0, 1)
    assert floats.fooled_defended.tolist() == [False, True, False]
    assert floats.l2[:2].tolist() == pytest.approx([0.5, 0.7]) and floats.l2[2] == float("inf")
    assert floats.row.median_l2 == pytest.approx(0.5) and floats.row.median_abs_margin_8bit == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="3 votes for 2"):
        judge(attacker, attack_set, "key", Votes(torch.zeros(3, 3, dtype=torch.long), torch.ones(3, 3), 10, vmin=1))


def percent_interval(count: int, total: int, digits: int) -> str:
    low, high = rate_interval(count, total)
    return f"[{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


def test_sweep_table_cells_and_markdown():
    report = SweepReport(
        model="odenet",
        dataset="mnist5k",
        rows=[SweepRow(1e-3, ErrorCell(Rate.of(1, 40), 20.0)), SweepRow(1.0, ErrorCell(Rate.of(3, 100), 14.0))],
        baseline=SweepRow(None, ErrorCell(Rate.of(1, 50), 1.0), model="resnet"),
        attack=None,
        tol_attack=None,
        count=None,
    )
    header, body = table_cells(report)
    assert header == ["metric", "resnet", "tau=0.001", "tau=1"]
    errors = [f"2.0 {percent_interval(1, 50, 1)}", f"2.5 {percent_interval(1, 40, 1)}"]
    errors.append(f"3.0 {percent_interval(3, 100, 1)}")
    assert body == [["error %", *errors], ["mean NFE", "-", "20.0", "14.0"]]
    assert to_markdown(report).splitlines()[2] == f"| error % | {' | '.join(errors)} |"
    lines = list(csv.DictReader(to_csv(report).splitlines()))
    assert [(line["model"], line["tol"], line["errors"], line["images"]) for line in lines] == [
        ("resnet", "", "1", "50"),
        ("odenet", "0.001", "1", "40"),
        ("odenet", "1.0", "3", "100"),
    ]
    assert float(lines[1]["error_ci_high"]) == rate_interval(1, 40)[1] and lines[1]["success_rate"] == ""


def test_grid_table_one_row_per_tau_attack():
    cells = [
        GridCell("m", 1e-3, a, t, Rate.of(k, 4), l2, "set")
        for a, t, k, l2 in [
            (1e-3, 1e-3, 4, 1.5),
            (1e-3, 1e-1, 2, 1.25),
            (1e-1, 1e-3, 0, None),
            (1e-1, 1e-1, 4, 2),
        ]
    ]
    report = GridReport([GridModel("m", 1e-3, "mnist5k")], [1e-3, 1e-1], [1e-3, 1e-1], "cw", 4, cells)
    header, body = grid_table(report, "m")
    assert header == ["tau_attack \\ tau_test", "0.001", "0.1"]
    full, half, none = (Rate.of(k, 4).format(".0%") for k in (4, 2, 0))
    assert body == [["0.001", f"{full} / 1.50", f"{half} / 1.25"], ["0.1", f"{none} / -", f"{full} / 2.00"]]
    lines = list(csv.DictReader(grid_to_csv(report).splitlines()))
    assert [(line["successes"], line["attacked"]) for line in lines] == [("4", "4"), ("2", "4"), ("0", "4"), ("4", "4")]


def test_blend_targets_the_nearest_image_of_another_class():
    images = torch.zeros(4, 1, 2, 2)
    images[1] += 0.1  # near image 0
    images[2] += 0.9
    images[3] += 0.2
    labels = torch.tensor([0, 0, 1, 1])
    # logits: images 0, 1 confidently class 0; image 2 class 1; image 3 class 1 by less than the clearance
    logits = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, BLEND_CLEARANCE / 2]])
    targets, found = blend_targets(logits, images, labels, kappa=0.0)
    assert found.tolist() == [True, True, True, True]
    assert targets.tolist() == [2, 2, 1, 1]  # image 3 is too close to the boundary to be a target
    targets, found = blend_targets(logits, images, labels, kappa=5.0)
    assert found.tolist() == [False] * 4 and targets.tolist() == [0, 1, 2, 3]
