from __future__ import annotations

import json
import multiprocessing
import os

import pytest
import torch

from nodeguard.errors import ModelNotFoundError, RegistryError
from nodeguard.paths import cache_root
from nodeguard.storage.files import atomic_write, atomic_write_text
from nodeguard.storage.registry import ModelEntry, Registry


def test_cache_root_env_chain(monkeypatch, tmp_path):
    monkeypatch.setenv("NODEGUARD_HOME", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("NODEGUARD_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "nodeguard"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_root() == tmp_path / "user" / ".cache" / "nodeguard"


def test_atomic_write_keeps_old_content_when_the_writer_dies(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def failing_writer(handle):
        handle.write(b"half of the new conte")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing_writer)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temporary left behind


def entry(name: str, **kwargs) -> ModelEntry:
    return ModelEntry(name=name, arch="odenet", dataset="mnist5k", status=kwargs.pop("status", "ready"), **kwargs)


def test_index_put_get_latest_remove(registry):
    registry.put(entry("first"))
    registry.put(entry("second"))
    registry.put(entry("unfinished", status="training"))
    assert registry.latest() == "second"
    assert registry.latest(ready_only=False) == "unfinished"
    assert [e.name for e in registry.entries()] == ["unfinished", "second", "first"]
    registry.model_dir("second").mkdir(parents=True)
    registry.remove("second")
    assert not registry.model_dir("second").exists()
    assert registry.latest() == "first"
    with pytest.raises(ModelNotFoundError, match="registered: first, unfinished"):
        registry.get("second")


def test_empty_registry_says_what_to_do(registry, monkeypatch):
    from typer.testing import CliRunner

    from nodeguard.cli import app
    from nodeguard.errors import NoModelYetError

    with pytest.raises(NoModelYetError, match="no trained model yet"):
        registry.resolve(None)
    monkeypatch.setenv("NODEGUARD_HOME", str(registry.root))
    result = CliRunner().invoke(app, ["roc"])  # the command line says what to do next
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == "error: no trained model yet; run `nodeguard train mnist5k` first"


def test_bad_model_names_are_refused(registry):
    for bad in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(RegistryError, match="invalid model name"):
            registry.model_dir(bad)


def add_entries(root: str, prefix: str, count: int) -> None:
    registry = Registry(root)
    for index in range(count):
        registry.put(ModelEntry(name=f"{prefix}{index}", arch="odenet", dataset="mnist5k", status="ready"))


def test_lock_keeps_concurrent_writers_from_losing_entries(registry):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=add_entries, args=(str(registry.root), f"w{n}-", 15)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    names = {e.name for e in registry.entries()}
    assert names == {f"w{n}-{i}" for n in range(3) for i in range(15)}
    json.loads(registry.index_path.read_text())  # still valid JSON


def hold_model_lock(root: str, name: str, ready, release) -> None:
    with Registry(root).exclusive(name):
        ready.set()
        release.wait(30)


def test_a_model_being_trained_elsewhere_is_refused(registry):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=hold_model_lock, args=(str(registry.root), "busy", ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RegistryError, match="being trained by another process"):
            with registry.exclusive("busy"):
                pass
    finally:
        release.set()
        holder.join(30)
    with registry.exclusive("busy"):
        pass  # free again once the other process let go


def test_damaged_index_is_rebuilt_from_model_folders(registry):
    registry.put(entry("kept"))
    registry.write_config("kept", {"model": {"arch": "odenet"}, "dataset": "mnist5k", "training": {"epochs": 1}})
    registry.write_json("kept", "metrics.json", {"test_error": 0.1, "epochs": 1})
    registry.index_path.write_text("{ not json")
    entries = registry.entries()
    assert [e.name for e in entries] == ["kept"]
    assert entries[0].status == "ready" and entries[0].test_error == 0.1


def test_checkpoint_round_trip_and_damaged_or_foreign_files(registry):
    registry.write_checkpoint("m", {"epoch": 1, "model": {"w": torch.ones(2)}})
    payload = registry.read_checkpoint("m")
    assert payload["epoch"] == 1 and torch.equal(payload["model"]["w"], torch.ones(2))

    path = registry.model_dir("m") / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(RegistryError, match="damaged or not a nodeguard file"):
        registry.read_checkpoint("m")

    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(RegistryError, match="not a nodeguard file"):
        registry.read_checkpoint("m")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    torch.save({"format": "nodeguard-checkpoint", "payload": Evil()}, path)
    with pytest.raises(RegistryError, match="damaged or not a nodeguard file"):
        registry.read_checkpoint("m")  # weights_only=True refuses arbitrary objects
