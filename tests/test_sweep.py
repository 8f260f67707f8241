from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
from conftest import check_rate
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import AttackSettings
from nodeguard.intervals import Rate, rate_interval
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.loading import load_model
from nodeguard.plain import from_plain
from nodeguard.progress import RecordingProgress
from nodeguard.reporting.tables import table_cells, to_csv, to_markdown
from nodeguard.stages.attack import run_attack
from nodeguard.stages.attack_sets import load_attack_set
from nodeguard.stages.sweep import AttackCell, ErrorCell, SweepReport, SweepRow, SweepSettings, run_sweep

runner = CliRunner()
FAST_ATTACK = {"steps": 8, "binary_steps": 1}


def check_intervals(row: dict) -> None:
    """Each rate of a sweep row (as JSON holds it) is its counts' share with their interval."""
    check_rate(row["error"]["rate"])
    if row["attack"] is not None:
        check_rate(row["attack"]["success_rate"])


def strip_counts(registry, model: str) -> int:
    """Make the model's saved sweep cells look like a nodeguard's before 0.8.0: rates, no counts."""
    stripped = 0
    for path in (registry.results_dir(model) / "sweep_cell").glob("*/result.json"):
        saved = json.loads(path.read_text())
        saved["values"] = {k: v for k, v in saved["values"].items() if k not in ("errors", "successes", "attacked")}
        path.write_text(json.dumps(saved))
        stripped += 1
    return stripped


def test_error_rows_match_the_model_at_each_tolerance(tiny_model, registry):
    report = run_sweep(SweepSettings(tols=(1e-3, 1e-1), test_limit=40), model=tiny_model, device="cpu")
    assert [row.tol for row in report.rows] == [1e-3, 1e-1]
    loaded = load_model(tiny_model, device="cpu")
    from nodeguard.data.datasets import load_dataset

    test = load_dataset("mnist5k").test.subset(40)
    for row in report.rows:
        classified = classify_alone(loaded.model, test.float_images(), tol=row.tol)
        predictions, nfe = classified.predictions, classified.nfe
        assert row.error.rate == Rate.of(int((predictions != test.labels).sum()), 40)
        assert row.error.nfe == pytest.approx(float(nfe.float().mean()))
        assert row.attack is None
    assert report.rows[0].error.nfe >= report.rows[1].error.nfe  # tighter tolerance, at least as many steps


def test_attack_columns_use_tau_attack_equal_to_tau_test(tiny_model, registry):
    settings = SweepSettings(tols=(1e-3, 1e-1), attack="cw", count=4, test_limit=20, attack_options=FAST_ATTACK)
    report = run_sweep(settings, model=tiny_model, device="cpu")
    for row in report.rows:
        direct = run_attack(
            AttackSettings.with_overrides(tol_attack=row.tol, count=4, **FAST_ATTACK), model=tiny_model, device="cpu"
        )
        assert direct.reused and direct.set == row.attack.set  # the sweep made exactly this attack set
        assert row.attack.success_rate == direct.success_rate and row.attack.mean_l2 == direct.mean_l2
        assert row.attack.success_rate.total == direct.count == 4


def test_decoupled_mode_classifies_one_attack_set_at_each_tau(tiny_model, registry):
    settings = SweepSettings(
        tols=(1e-4, 1e-1), attack="cw", count=6, tol_attack=1e-3, test_limit=20, attack_options=FAST_ATTACK
    )
    report = run_sweep(settings, model=tiny_model, device="cpu")
    made = run_attack(
        AttackSettings.with_overrides(tol_attack=1e-3, count=6, **FAST_ATTACK), model=tiny_model, device="cpu"
    )
    assert made.reused
    data = load_attack_set(registry, tiny_model, made.set)
    loaded = load_model(tiny_model, device="cpu")
    for row in report.rows:
        predictions = classify_alone(loaded.model, data.adversarial, tol=row.tol).predictions
        still = data.success & (predictions != data.labels)
        assert row.attack.success_rate == Rate.of(int(still.sum()), len(data))
        assert row.attack.set == made.set
    assert report.tol_attack == 1e-3
    # cells saved before the counts were (0.7.0): computed again, the rows are the same
    assert strip_counts(registry, tiny_model) == 4
    again = run_sweep(settings, model=tiny_model, device="cpu")
    assert again.cells_computed == 4 and again.rows == report.rows
    assert run_sweep(settings, model=tiny_model, device="cpu").cells_computed == 0


def test_identical_sweep_recomputes_nothing(tiny_model, registry):
    settings = SweepSettings(tols=(1e-2,), attack="cw", count=3, test_limit=10, attack_options=FAST_ATTACK)
    first = run_sweep(settings, model=tiny_model, device="cpu")
    assert first.cells_computed == 2 and first.cells_reused == 0
    progress = RecordingProgress()
    second = run_sweep(settings, model=tiny_model, device="cpu", progress=progress)
    assert second.cells_computed == 0 and second.cells_reused == 2
    assert second.rows == first.rows
    assert any("nothing was recomputed" in message for message in progress.messages)
    cells = sorted((registry.results_dir(tiny_model) / "sweep_cell").iterdir())
    assert len(cells) == 1  # the attack cell is an attack set, stored as one
    saved = json.loads((cells[0] / "result.json").read_text())
    assert saved["settings"]["cell"] == "error" and saved["settings"]["tol"] == 1e-2


def test_tables_show_each_rate_with_its_interval():
    attack = AttackCell(Rate.of(3, 4), 1.5, None, "set")
    row = SweepRow(1e-3, ErrorCell(Rate.of(1, 40), 20.0), attack)
    report = SweepReport("m", "mnist5k", [row], None, "cw", None, 4)
    header, body = table_cells(report)
    assert body[0] == ["error %", "2.5 [0.1, 13.2]"] and body[2] == ["attack success %", "75.0 [19, 99]"]
    below = table_cells(report, interval_below=True)[1]
    assert below[0] == ["error %", "2.5\n[0.1, 13.2]"]
    assert to_markdown(report).splitlines()[2] == "| error % | 2.5 [0.1, 13.2] |"
    written = next(csv.DictReader(to_csv(report).splitlines()))
    assert float(written["error_ci_low"]) == pytest.approx(rate_interval(1, 40)[0])
    assert float(written["success_rate_ci_high"]) == pytest.approx(rate_interval(3, 4)[1])
    assert (written["successes"], written["attacked"], written["errors"], written["images"]) == ("3", "4", "1", "40")
    # made once at tol_attack and judged at each tau: the mean L2 is over those still fooled there
    assert [line[0] for line in table_cells(report)[1]][3] == "mean L2"
    decoupled = table_cells(replace(report, tol_attack=1e-3))[1]
    assert [line[0] for line in decoupled][3:] == ["mean L2 (still fooled)", "mean MSE (x1e-2) (still fooled)"]


def test_baseline_column_and_table_layout(tiny_model, registry):
    from conftest import tiny_config

    from nodeguard.training.train import train_model

    train_model(tiny_config(arch="resnet", epochs=1), name="base", registry=registry)
    report = run_sweep(SweepSettings(tols=(1e-3, 1.0), test_limit=10), model=tiny_model, baseline="base", device="cpu")
    assert report.baseline.model == "base" and report.baseline.tol is None
    markdown = to_markdown(report).splitlines()
    assert markdown[0] == "| metric | base | tau=0.001 | tau=1 |"
    assert markdown[2].startswith("| error % |") and markdown[3].startswith("| mean NFE | - |")
    with pytest.raises(ConfigError, match="no solver tolerance"):
        run_sweep(SweepSettings(tols=(1e-3,)), model="base", device="cpu")


def test_sweep_cli_json_and_out_files(tiny_model, tmp_path):
    result = runner.invoke(
        app, ["sweep", "--tols", "1e-3,1e-1", "--test-limit", "10", "--json", "--out", str(tmp_path / "table.csv")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [row["tol"] for row in data["rows"]] == [1e-3, 1e-1] and data["baseline"] is None
    assert set(data["rows"][0]) == {"tol", "error", "attack", "model"}
    for row in data["rows"]:
        check_intervals(row)
    assert from_plain(SweepReport, data).to_dict() == data  # the JSON is the typed report, whole
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [float(row["tol"]) for row in rows] == [1e-3, 1e-1]
    human = runner.invoke(app, ["sweep", "--tols", "1e-3", "--test-limit", "10", "--out", str(tmp_path / "t.md")])
    assert human.exit_code == 0 and "reused from cache 1" in human.stdout
    assert "intervals: 95% Clopper-Pearson over 10 test images (error)" in human.stdout
    assert (tmp_path / "t.md").read_text().startswith("| metric |")
    bad = runner.invoke(app, ["sweep", "--tols", "1e-3,abc"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error:")
    bad_out = runner.invoke(app, ["sweep", "--tols", "1e-3", "--test-limit", "10", "--out", str(tmp_path / "t.xlsx")])
    assert bad_out.exit_code == 1 and ".csv, .md or .json" in bad_out.stderr


def test_sweep_plot_draws_the_tau_figure(tiny_model, tmp_path):
    args = ["sweep", "--tols", "1e-3,1e-1", "--test-limit", "10", "--attack", "cw", "--count", "3"]
    args += ["--steps", "10", "--binary-steps", "1", "--json", "--plot", str(tmp_path / "tau.png")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "tau.json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "tau.png")
    assert json.loads((tmp_path / "tau.json").read_text()) == json.loads(result.stdout)  # --out names it too
    picture = (tmp_path / "tau.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 10_000
    error_only = runner.invoke(
        app, ["sweep", "--tols", "1e-3", "--test-limit", "10", "--plot", str(tmp_path / "e.png")]
    )
    assert error_only.exit_code == 0 and (tmp_path / "e.png").stat().st_size > 10_000
    bad = runner.invoke(app, ["sweep", "--tols", "1e-3", "--plot", str(tmp_path / "tau.svg")])
    assert bad.exit_code == 1 and "PNG" in bad.stderr


def test_unknown_attack_is_refused_before_any_cell_is_computed(tiny_model, registry):
    with pytest.raises(ConfigError, match="unknown attack 'fgsm'"):
        run_sweep(SweepSettings(tols=(1e-3,), attack="fgsm", test_limit=10), model=tiny_model, device="cpu")
    assert not registry.results_dir(tiny_model).exists()


def test_the_grid_has_one_cell_per_model_tau_attack_and_tau_test_and_recomputes_nothing(tiny_model, registry, tmp_path):
    from conftest import tiny_config

    from nodeguard.stages.grid import GridSettings, run_grid
    from nodeguard.training.train import train_model

    train_model(tiny_config(tol_train=1e-1, epochs=1), name="loose", registry=registry)
    args = ["sweep", "--models", f"{tiny_model},loose", "--tol-attack", "1e-3,1e-1", "--tols", "1e-4,1e-2,1"]
    args += ["--count", "3", "--steps", "8", "--binary-steps", "1", "--json"]
    args += ["--plot", str(tmp_path / "grid.png"), "--out", str(tmp_path / "grid.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    keys = [(cell["model"], cell["tol_attack"], cell["tol_test"]) for cell in data["grid"]]
    expected = [(m, a, t) for m in (tiny_model, "loose") for a in (1e-3, 1e-1) for t in (1e-4, 1e-2, 1.0)]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    assert {c["model"]: c["tol_train"] for c in data["grid"]} == {tiny_model: 1e-3, "loose": 1e-1}
    assert {"model", "tol_train", "tol_attack", "tol_test", "success_rate", "mean_l2"} <= set(data["grid"][0])
    # 2 models x 2 tau_attack attack sets, each judged at 3 tau_test
    assert data["cells_computed"] == 4 + 12 and data["cells_reused"] == 0
    # each cell is the share of the attack set's images still misclassified at tau_test
    for cell in data["grid"]:
        attack_set = load_attack_set(registry, cell["model"], cell["set"])
        loaded = load_model(cell["model"], registry=registry, device="cpu")
        predictions = classify_alone(loaded.model, attack_set.adversarial, tol=cell["tol_test"]).predictions
        fooled = attack_set.success & (predictions != attack_set.labels)
        assert cell["success_rate"] == Rate.of(int(fooled.sum()), len(attack_set)).to_dict()
        check_rate(cell["success_rate"], len(attack_set))
    picture = (tmp_path / "grid.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 10_000
    written = list(csv.DictReader((tmp_path / "grid.csv").open()))
    assert len(written) == 12 and {"success_rate_ci_low", "success_rate_ci_high"} <= set(written[0])
    settings = GridSettings(
        tol_attacks=(1e-3, 1e-1), tols=(1e-4, 1e-2, 1.0), count=3, attack_options={"steps": 8, "binary_steps": 1}
    )
    again = run_grid(settings, [tiny_model, "loose"], registry=registry, device="cpu")
    assert again.cells_computed == 0 and again.cells_reused == 16
    assert again.to_dict()["grid"] == data["grid"]
    human = runner.invoke(app, [arg for arg in args if arg != "--json"])
    assert human.exit_code == 0 and "tau_attack" in human.stdout and "reused from cache 16" in human.stdout
    assert "intervals: 95% Clopper-Pearson over" in human.stdout
    both = runner.invoke(app, ["sweep", "--models", "loose", "--model", "loose"])
    assert both.exit_code == 1 and "--models" in both.stderr
