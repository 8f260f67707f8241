"""The pipeline's bookkeeping (results remembered, resumable work units) and how errors travel."""

from __future__ import annotations

import pickle

import pytest
import torch

from nodeguard.constants import ATTACK_SHARD_KIND
from nodeguard.errors import ConfigError, NoModelYetError, setting_error
from nodeguard.pipeline.remember import remember_tensors
from nodeguard.pipeline.units import WorkUnits
from nodeguard.storage.files import load_tagged, save_tagged
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore


@pytest.fixture
def stored(tmp_path):
    return ResultStore(Registry(tmp_path / "home"), "m").result("attack_set", {"count": 4}, "work")


def test_units_finished_before_an_interruption_are_not_computed_again(stored):
    plan = torch.arange(4)
    calls: list[int] = []

    def compute(unit: int) -> dict[str, torch.Tensor]:
        if unit == 2 and not calls.count(-1):
            calls.append(-1)
            raise KeyboardInterrupt  # the run stops on its third unit
        calls.append(unit)
        return {"value": torch.tensor([unit * 10])}

    with pytest.raises(KeyboardInterrupt):
        WorkUnits(stored, ATTACK_SHARD_KIND, plan).run([0, 1, 2, 3], compute)
    assert calls == [0, 1, -1]
    work = WorkUnits(stored, ATTACK_SHARD_KIND, plan)
    assert sorted(work.finished()) == [0, 1]
    seen: list[dict] = []
    done = work.run([0, 1, 2, 3], compute, status=lambda value: seen.append(value) or {})
    assert calls == [0, 1, -1, 2, 3]  # 0 and 1 came from the shard file
    assert [int(done[unit]["value"]) for unit in (0, 1, 2, 3)] == [0, 10, 20, 30]
    assert len(seen) == 4  # the status hears of every unit, the finished ones too
    work.remove()
    assert not list(stored.folder.glob("shard-*"))


def test_units_of_another_plan_are_never_mixed_in(stored):
    WorkUnits(stored, ATTACK_SHARD_KIND, torch.arange(4)).run([0, 1], lambda unit: unit)
    assert WorkUnits(stored, ATTACK_SHARD_KIND, torch.arange(5)).finished() == {}
    assert WorkUnits(stored, ATTACK_SHARD_KIND, torch.arange(4)).finished() == {0: 0, 1: 1}


def test_shard_files_of_nodeguard_0_8_continue(stored):
    """0.8.0 saved an attack's shard as {"indices", "units"}: its units are continued."""
    plan = torch.arange(3)
    stored.folder.mkdir(parents=True)
    save_tagged(stored.path("shard-0-of-1.pt"), ATTACK_SHARD_KIND, {"indices": plan, "units": {(0, (0, 1)): 7}})
    work = WorkUnits(stored, ATTACK_SHARD_KIND, plan)
    assert work.finished() == {(0, (0, 1)): 7}
    work.run([(0, (0, 1)), (1, (2,))], lambda unit: 8)
    assert load_tagged(stored.path("shard-0-of-1.pt"), ATTACK_SHARD_KIND)["units"] == {(0, (0, 1)): 7, (1, (2,)): 8}


def test_units_of_a_model_in_memory_leave_no_file(tmp_path):
    in_memory = ResultStore(None, "m", {}).result("attack_set", {"count": 2})
    work = WorkUnits(in_memory, ATTACK_SHARD_KIND, torch.arange(2))
    assert work.run([0, 1], lambda unit: unit + 1) == {0: 1, 1: 2}
    assert work.path() is None and work.finished() == {}
    work.remove()


def test_an_incomplete_stored_payload_is_computed_again_and_replaced(stored):
    stored.save_tensors({"predictions": torch.zeros(2)})  # an older version kept less
    payload, reused = remember_tensors(stored, lambda: {"predictions": torch.ones(2)})
    assert reused and torch.equal(payload["predictions"], torch.zeros(2))  # any payload will do
    payload, reused = remember_tensors(
        stored,
        lambda: {"predictions": torch.ones(2), "logits": torch.ones(2, 3)},
        complete=lambda saved: "logits" in saved,
    )
    assert not reused and torch.equal(payload["predictions"], torch.ones(2))
    assert "logits" in stored.load_tensors()


def test_errors_carry_their_settings_in_any_process():
    error = ConfigError("no attacker: give {kappas} or {eot}; {other} stays", settings=("kappas", "eot"))
    assert error.settings == ("kappas", "eot")
    assert str(error) == "no attacker: give `kappas` or `eot`; {other} stays"  # only declared settings
    assert error.render(lambda name: f"--{name}") == "no attacker: give --kappas or --eot; {other} stays"
    again = pickle.loads(pickle.dumps(error))  # as a rank sends it
    assert type(again) is ConfigError and again.settings == error.settings and str(again) == str(error)
    assert setting_error("tol", "must be positive").render(lambda name: name.upper()) == "TOL must be positive"
    # the same check, about the setting that gave the value (an attack's kappa is security's kappas)
    renamed = setting_error("kappa", "must be in [0, inf], got -1").renamed({"kappa": "kappas", "x": "y"})
    assert type(renamed) is ConfigError and renamed.settings == ("kappas",)
    assert renamed.render(lambda name: f"--{name}") == "--kappas must be in [0, inf], got -1"


def test_the_command_line_names_settings_by_its_own_options():
    from nodeguard.cli import app
    from nodeguard.cli._errors import option_names, rendered

    security = typer_command(app, "security")
    options = option_names(security)
    # the parameter's name (autoattack_eps) and the option's own (--draws) both lead to the option
    assert options["autoattack_eps"] == "--aa-eps" and options["eot_draws"] == options["draws"] == "--draws"
    error = ConfigError("{autoattack_eps} and {accept_level}", settings=("autoattack_eps", "accept_level"))
    assert rendered(error, options) == "--aa-eps and `accept_level`"  # no option: the library's name stays
    assert rendered(NoModelYetError("no trained model yet"), {}).endswith("; run `nodeguard train mnist5k` first")


def typer_command(app, name):
    import typer

    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
