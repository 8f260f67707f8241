"""`nodeguard report`: one page and one card of what is stored, each figure beside a command that reproduces it."""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import replace

import jsonschema
import torch
import typer
from conftest import check_rate
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.experiments.attack_sets import AttackReport
from nodeguard.experiments.indicators import _indicator
from nodeguard.intervals import Rate
from nodeguard.reporting.model_card import SCHEMA_PATH
from nodeguard.stages.certify import CertifyReport
from nodeguard.stages.report import (
    _roc_candidate,
    attack_command,
    certify_command,
    gather_report,
    security_command,
    train_command,
)
from nodeguard.stages.security import SECURITY_REPORT_VERSION, SecuritySettings
from nodeguard.storage.registry import Registry

SECURITY = ["--count", "4", "--kappas", "0", "--draws", "2", "--votes", "5", "--steps", "20", "--binary-steps", "2"]
SECURITY += ["--eps", "0,1,2", "--aa-eps", "1.5", "--aa-steps", "3", "--aa-eot-iter", "2"]
SECURITY += ["--square-queries", "5", "--square-draws", "0", "--seed", "0", "--device", "cpu"]


def test_the_report_gathers_what_is_stored_and_its_commands_reproduce_it(tiny_model, tmp_path):
    runner = CliRunner()
    empty = runner.invoke(app, ["report", "--model", tiny_model, "--out", str(tmp_path / "empty"), "--json"])
    assert empty.exit_code == 0, empty.output
    written = json.loads(empty.stdout)
    assert not written["roc"] and written["security_reports"] == 0 and len(written["missing"]) == 2
    assert "nodeguard security --model" in written["missing"][1]

    made = runner.invoke(app, ["security", "--model", tiny_model, *SECURITY, "--json"])
    assert made.exit_code == 0, made.output
    security = json.loads(made.stdout)
    # a set the ROC can always be drawn over: blend fools every attacked digit (conftest)
    blend = ["roc", "--model", tiny_model, "--attack", "blend", "--count", "4", "--votes", "5", "--seed", "0"]
    assert runner.invoke(app, [*blend, "--device", "cpu", "--json"]).exit_code == 0
    certify = ["certify", "--model", tiny_model, "--sigma", "0.25", "--count", "3", "--n0", "10", "--n", "20"]
    certified = runner.invoke(app, [*certify, "--device", "cpu", "--json"])
    assert certified.exit_code == 0, certified.output

    # by default the report solves nothing: the ROC's missing votes are listed with their command
    stored_only = runner.invoke(app, ["report", "--model", tiny_model, "--out", str(tmp_path / "r0"), "--json"])
    assert stored_only.exit_code == 0, stored_only.output
    (roc_missing,) = [line for line in json.loads(stored_only.stdout)["missing"] if line.startswith("ROC:")]
    assert "not stored" in roc_missing and "nodeguard roc --model" in roc_missing
    result = runner.invoke(
        app, ["report", "--model", tiny_model, "--out", str(tmp_path / "report"), "--seed", "0", "--roc", "--json"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["roc"] and written["security_reports"] == 1 and written["missing"] == []
    assert written["verdict"] == security["verdict"]

    card = json.loads((tmp_path / "report" / "model-card.json").read_text())
    jsonschema.validate(card, json.loads(SCHEMA_PATH.read_text()))
    assert card["name"] == tiny_model and card["number_forward_passes"] == 5
    assert card["defense"]["votes"] == 5 and card["defense"]["draws"] == security["draws"]
    rows = card["evaluation"]["attackers"]
    assert [row["label"] for row in rows] == [point["label"] for point in security["points"]]
    for row, point in zip(rows, security["points"], strict=True):
        assert row["defended_success"] == point["defended_success"]
    assert card["unreliable"] == any(item["unreliable"] for item in security["indicators"])
    budget = card["evaluation"]["budget_check"]
    assert budget["steps_more"] == 15 and budget["fooled_more"] == security["budget_check"]["fooled_more"]
    check_rate(budget["fooled_more"], 4)
    (smoothed,) = card["certified"]
    by_radius = {point["radius"]: point for point in json.loads(certified.stdout)["curve"]}
    shared = [point for point in smoothed["accuracy"] if point["radius"] in by_radius]
    assert len(shared) == len(by_radius) > 0  # certify's default radii are the card's
    for point in shared:
        assert point["certified"] == by_radius[point["radius"]]["certified_accuracy"]

    page = (tmp_path / "report" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2  # ROC and security
    assert security["verdict"].split(":")[0] in page and card["evaluation"]["command"] in page

    # the printed commands are exact: rerun, each finds its own result in the store
    command = shlex.split(card["evaluation"]["command"])[1:]
    again = runner.invoke(app, [*command, "--device", "cpu", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["reused"]
    roc = runner.invoke(app, [*shlex.split(card["roc"]["command"])[1:], "--device", "cpu", "--json"])
    assert roc.exit_code == 0, roc.output
    assert json.loads(roc.stdout)["votes_reused"]
    smoothing = runner.invoke(app, [*shlex.split(smoothed["command"])[1:], "--device", "cpu", "--json"])
    assert smoothing.exit_code == 0, smoothing.output
    assert json.loads(smoothing.stdout)["reused"]

    # one stored security report asked for by key; an unknown key is one line naming the stored ones
    (stored_key,) = [path.name for path in (Registry().results_dir(tiny_model) / "security").iterdir()]
    page = ["report", "--model", tiny_model, "--no-roc"]
    chosen = runner.invoke(app, [*page, "--out", str(tmp_path / "r2"), "--security", stored_key, "--json"])
    assert chosen.exit_code == 0, chosen.output
    wrong = runner.invoke(app, [*page, "--out", str(tmp_path / "r3"), "--security", "nope"])
    assert wrong.exit_code == 1 and "no security report 'nope'" in wrong.output and stored_key in wrong.output

    # a report of another nodeguard version is not read: listed once with the command that
    # makes it again, and no more once this version's report of the same command exists
    folder = Registry().results_dir(tiny_model) / "security"
    for name, count in (("security-old-same", 4), ("security-old-other", 3)):
        shutil.copytree(folder / stored_key, folder / name)
        saved = json.loads((folder / name / "result.json").read_text())
        saved["settings"].update(report_version=SECURITY_REPORT_VERSION - 1, count=count)
        saved["values"] = {"points": "a shape of another version"}
        (folder / name / "result.json").write_text(json.dumps(saved))
    outdated = [line for line in gather_report(tiny_model, Registry(), roc=False).missing if "version" in line]
    other = json.loads((folder / "security-old-other" / "result.json").read_text())["settings"]
    assert outdated == [
        "security report security-old-other: made by another nodeguard version; make it again (its attack sets "
        f"are reused): {security_command(tiny_model, other)}"
    ]
    asked = runner.invoke(app, [*page, "--out", str(tmp_path / "r4"), "--security", "security-old-other"])
    assert asked.exit_code == 1 and "made by another nodeguard version" in asked.output
    assert security_command(tiny_model, other) in " ".join(asked.output.split())
    shutil.rmtree(folder / stored_key)  # only reports of another version left: each listed, nothing else
    missing = gather_report(tiny_model, Registry(), roc=False).missing
    assert sum("another nodeguard version" in line for line in missing) == 2
    assert not any(line.startswith("security: none stored yet") for line in missing)


def test_the_tau_tables_are_gathered_with_commands_that_find_them_again(tiny_model, tmp_path):
    runner = CliRunner()
    errors = ["sweep", "--model", tiny_model, "--tols", "1e-3,1e-1", "--test-limit", "12", "--device", "cpu"]
    assert runner.invoke(app, [*errors, "--json"]).exit_code == 0
    judged = [*errors, "--attack", "blend", "--count", "3", "--tol-attack", "1e-3"]
    made = runner.invoke(app, [*judged, "--json"])
    assert made.exit_code == 0, made.output
    rows = json.loads(made.stdout)["rows"]

    tables = gather_report(tiny_model, Registry(), roc=False).tau_tables
    error_table = next(table for table in tables if table.title.startswith("test error"))
    assert [(row.tol, row.rate.to_dict()) for row in error_table.rows] == [
        (row["tol"], row["error"]["rate"]) for row in rows
    ]
    adversarial_table = next(table for table in tables if table.title.startswith("adversarials"))
    assert [(row.tol, row.rate.to_dict()) for row in adversarial_table.rows] == [
        (row["tol"], row["attack"]["success_rate"]) for row in rows
    ]
    # the coupled sweep: the attack made and judged at each tau, one attack set per tau
    coupled = runner.invoke(app, [*errors, "--attack", "blend", "--count", "3", "--json"])
    assert coupled.exit_code == 0, coupled.output
    coupled_rows = json.loads(coupled.stdout)["rows"]
    tables = gather_report(tiny_model, Registry(), roc=False).tau_tables
    (attack_table,) = [table for table in tables if "tol_attack = tau" in table.title]
    assert attack_table.title.startswith("blend on 3 images")
    assert [(row.tol, row.rate.to_dict(), row.mean_l2) for row in attack_table.rows] == [
        (row["tol"], row["attack"]["success_rate"], row["attack"]["mean_l2"]) for row in coupled_rows
    ]
    assert "--tol-attack" not in attack_table.command and attack_table.kind == "attack"
    for tol in ("1e-3", "1e-2"):  # a group whose taus no stored error cells cover: no sweep command
        made = runner.invoke(app, ["attack", "blend", "--model", tiny_model, "--count", "2", "--tol-attack", tol])
        assert made.exit_code == 0, made.output
    tables = gather_report(tiny_model, Registry(), roc=False).tau_tables
    (uncovered,) = [table for table in tables if table.title.startswith("blend on 2 images")]
    assert [row.tol for row in uncovered.rows] == [1e-3, 1e-2] and not uncovered.command.startswith("nodeguard")
    for table in (error_table, adversarial_table, attack_table):  # each command prints its table from the store alone
        again = runner.invoke(app, [*shlex.split(table.command)[1:], "--device", "cpu", "--json"])
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["cells_computed"] == 0
    page = (tmp_path / "page").as_posix()
    assert runner.invoke(app, ["report", "--model", tiny_model, "--out", page, "--no-roc"]).exit_code == 0
    html = (tmp_path / "page" / "report.html").read_text()
    assert "tol_attack = tau" in html and "mean L2" in html


def test_an_empty_out_is_one_line(tiny_model):
    result = CliRunner().invoke(app, ["report", "--model", tiny_model, "--out", "", "--no-roc"])
    assert result.exit_code == 1 and "error: --out needs a folder" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_model_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", "--model", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "nope" in result.output and "Traceback" not in result.output


def _options(command: str) -> set[str]:
    """Every option name the CLI's ``command`` (e.g. "security") accepts."""
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {name for param in click_command.params for name in (*param.opts, *param.secondary_opts)}


def _flags(command: str) -> set[str]:
    words = shlex.split(command.split("  #")[0])
    return {word for word in words if word.startswith("--")}


def test_every_printed_command_uses_only_options_its_command_takes():
    settings = SecuritySettings(
        kappas=(0.0,), square=False, tol_ranges=((1e-6, 1.0),), batch_size=64, attack_seed=2, attack_batch_size=50
    )
    secret = {**settings.identity(), "seed": "key:abcd1234"}
    command = security_command("m", secret)
    assert "--seed" not in command and "secret draws: key:abcd1234" in command
    flags = {"--no-square", "--tol-ranges", "--batch-size", "--attack-seed", "--attack-batch-size"}
    assert flags <= _flags(command) <= _options("security")
    public = security_command("m", {**settings.identity(), "seed": 3})
    assert "--seed 3" in public and "secret" not in public

    attack = {"attack": "apgd-rand", "count": 5, "tol_attack": 1e-3, "seed": 0, "split": "test", "only_correct": False}
    attack |= {"batch_size": 10, "options": {"eps": 1.0, "steps": 7, "tol_low": 1e-5, "tol_high": 0.1}}
    assert _flags(attack_command("m", attack)) <= _options("attack")
    assert "--all" in attack_command("m", attack) and "--batch-size 10" in attack_command("m", attack)
    assert attack_command("m", {**attack, "start": "cw-x"}).startswith("made with a start")

    training = {"dataset": "mnist5k", "arch": "odenet", "epochs": 2, "seed": 1, "augment": False, "train_limit": None}
    assert _flags(train_command("m", {"training": training})) <= _options("train")
    assert train_command("m", {"model": {}}) is None  # imported: not trained by nodeguard


def attack_summary(attack: str, successes_8bit: int, settings: dict) -> AttackReport:
    """An attack set's summary of 3 images, as summary.json holds it."""
    return AttackReport(
        model="m", attack=attack, tol_attack=1e-3, count=3, success_rate=Rate.of(3, 3), mean_l2=None,
        median_l2=None, mean_mse=None, success_rate_8bit=Rate.of(successes_8bit, 3), mean_l2_8bit=None,
        kept_by_rounding=0, kept_by_outward_rounding=0, lost_on_8bit_grid=0, median_abs_margin=None,
        p90_abs_margin=None, median_abs_margin_8bit=None, p90_abs_margin_8bit=None, seconds=1.0, set="s",
        path="", settings=settings,
    )  # fmt: skip


def test_the_roc_reads_only_sets_it_can_draw():
    settings = {"options": {"kappa": 0.0, "steps": 100}}
    assert _roc_candidate(attack_summary("cw", 3, settings))
    assert not _roc_candidate(attack_summary("cw", 0, settings))  # no negatives
    assert not _roc_candidate(attack_summary("apgd-rand", 3, settings))
    assert not _roc_candidate(attack_summary("cw", 3, {"options": {"lr": 0.5}}))


def test_a_summary_written_before_rates_were_values_still_loads():
    summary = attack_summary("cw", 2, {"options": {}})
    summary.indicators = [_indicator("silent-success", "cw", torch.tensor([True, False, False]), "m", "a")]
    new = summary.to_dict()
    old = {key: value for key, value in new.items() if key not in ("success_rate", "success_rate_8bit", "indicators")}
    old.update(success_rate=1.0, successes=3, success_rate_ci=[0.29, 1.0], success_rate_8bit=2 / 3, successes_8bit=2)
    indicator = {key: value for key, value in new["indicators"][0].items() if key != "rate"}
    old["indicators"] = [{**indicator, "count": 1, "total": 3, "rate": 1 / 3, "rate_ci": [0.0, 0.9]}]
    assert AttackReport.from_dict(old) == AttackReport.from_dict(new) == summary
    del old["successes_8bit"]  # older still: the count recovered from the share
    assert AttackReport.from_dict(old).success_rate_8bit == Rate.of(2, 3)
    for margin in ("median_abs_margin", "p90_abs_margin", "median_abs_margin_8bit", "p90_abs_margin_8bit"):
        del old[margin]  # older still (0.3): no margins recorded
    assert AttackReport.from_dict(old).median_abs_margin is None


def test_the_certify_command_keeps_what_keys_the_certificates():
    report = CertifyReport(
        model="m", sigma=0.25, n0=10, n=20, alpha=0.001, seed=3, tol=1e-3, count=2, labels=[1, 2],
        predictions=[1, -1], radii=[0.1, 0.0], p_lower=[0.9, 0.4], abstained=Rate.of(1, 2),
        curve=[], max_radius=0.5,
    )  # fmt: skip
    assert certify_command("m", report) == (
        "nodeguard certify --model m --sigma 0.25 --count 2 --n0 10 --n 20 --alpha 0.001 --seed 3"
    )
    assert certify_command("m", replace(report, predict_accuracy=Rate.of(1, 2))).endswith(" --seed 3 --predict")
