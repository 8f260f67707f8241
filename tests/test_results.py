"""The keyed result store that attack sets, sweep cells and votes share."""

from __future__ import annotations

import json

import pytest
import torch

from nodeguard.catalog import Catalog
from nodeguard.errors import ConfigError, RegistryError
from nodeguard.pipeline.remember import remember_json
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore


def test_same_settings_same_key_in_any_order(registry):
    store = ResultStore(registry, "m")
    first = store.result("cell", {"tol": 1e-3, "split": "test", "limits": (1, 2)}, "error")
    again = store.result("cell", {"split": "test", "limits": [1, 2], "tol": 0.001}, "error")
    assert first.key == again.key and first.folder == again.folder
    assert first.key.startswith("error-") and len(first.key) == len("error-") + 16
    assert store.result("cell", {"tol": 1e-2, "split": "test", "limits": (1, 2)}).key != first.key
    assert store.result("other", {"tol": 1e-3, "split": "test", "limits": (1, 2)}).folder != first.folder
    assert first.folder.parent == registry.results_dir("m") / "cell"


def test_json_results_are_computed_once_and_reused(registry):
    stored = ResultStore(registry, "m").result("cell", {"tol": 0.1})
    calls = []
    values, reused = remember_json(stored, lambda: calls.append(1) or {"error": 0.25})
    assert values == {"error": 0.25} and not reused
    values, reused = remember_json(stored, lambda: calls.append(1) or {"error": 0.5})
    assert values == {"error": 0.25} and reused and len(calls) == 1


def test_a_store_without_registry_keeps_results_in_memory_only(tmp_path):
    """A model held in memory: the same keys, results kept in its memory, nothing on disk."""
    memory: dict = {}
    on_disk = ResultStore(Registry(tmp_path / "home"), "m").result("cell", {"tol": 0.1}, "error")
    stored = ResultStore(None, "m", memory).result("cell", {"tol": 0.1}, "error")
    assert stored.key == on_disk.key and stored.folder is None and stored.path("x") is None
    calls = []
    values, reused = remember_json(stored, lambda: calls.append(1) or {"error": 0.25})
    assert values == {"error": 0.25} and not reused
    again = ResultStore(None, "m", memory).result("cell", {"tol": 0.1}, "error")
    assert remember_json(again, lambda: calls.append(1) or {"error": 0.5}) == ({"error": 0.25}, True)
    assert len(calls) == 1 and len(memory) == 1 and not list(tmp_path.rglob("result.json"))
    forgetful = ResultStore(None, "m").result("cell", {"tol": 0.1}, "error")  # no memory: computed each time
    assert remember_json(forgetful, lambda: {"error": 0.5}) == ({"error": 0.5}, False)


def test_a_result_saved_for_other_settings_is_never_read(registry):
    store = ResultStore(registry, "m")
    stored = store.result("cell", {"tol": 0.1})
    stored.save_json({"error": 0.25})
    # someone put another result in this folder: its settings give it away
    path = stored.folder / "result.json"
    saved = json.loads(path.read_text())
    saved["settings"] = {"tol": 0.2}
    path.write_text(json.dumps(saved))
    assert stored.load_json() is None

    tensors = store.result("votes", {"seed": 0})
    tensors.save_tensors({"pristine": torch.arange(3)})
    assert torch.equal(tensors.load_tensors()["pristine"], torch.arange(3))
    other_folder = store.result("votes", {"seed": 1}).folder
    other_folder.mkdir(parents=True)
    (other_folder / "result.pt").write_bytes((tensors.folder / "result.pt").read_bytes())
    assert store.result("votes", {"seed": 1}).load_tensors() is None


def test_a_damaged_result_is_one_clear_error(registry):
    stored = ResultStore(registry, "m").result("votes", {"seed": 0})
    stored.save_tensors({"pristine": torch.arange(3)})
    (stored.folder / "result.pt").write_bytes(b"not a torch file")
    with pytest.raises(RegistryError, match="damaged or not a nodeguard file"):
        stored.load_tensors()


def test_one_result_is_computed_by_one_process_at_a_time(registry):
    store = ResultStore(registry, "m")
    stored, other = store.result("cell", {"tol": 0.1}), store.result("cell", {"tol": 0.2})
    with stored.computing():
        with other.computing():  # other results of the model stay free
            pass
        with pytest.raises(RegistryError, match="being computed by another process"):
            with store.result("cell", {"tol": 0.1}).computing():
                pass


def test_catalog_lookup_lists_the_valid_names():
    catalog: Catalog[int] = Catalog("widget")
    catalog.register("one", 1)

    @catalog.register("two")
    def two() -> int:
        return 2

    assert catalog.get("one") == 1 and catalog.get("two") is two and "two" in catalog
    with pytest.raises(ConfigError, match="unknown widget 'three'; choose one of: one, two"):
        catalog.get("three")
    with pytest.raises(ValueError, match="registered twice"):
        catalog.register("one", 3)
