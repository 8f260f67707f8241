"""One keyed result store for every stage: settings -> one stable key -> verified load, atomic save, reuse.

Attack sets, sweep cells and votes (and whatever later stages compute) are saved per
model, each in a folder of its own::

    models/NAME/results/KIND/LABEL-DIGEST/
        result.pt | result.json   the result, with the settings that made it inside
        .lock                     held while a process computes this result
        ...                       the stage's own extra files (partial work, a summary)

KIND names the stage ("attack_set", "sweep_cell", "votes"); DIGEST is the first 16 hex
digits of SHA-256 over the kind and the settings as canonical JSON, so the same settings
always find the same folder; LABEL is only there for people reading the folder. A result
is read back only when the settings stored inside it equal the ones asked for, so a
result is never taken for another one; tensor results are loaded ``weights_only``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from nodeguard.constants import LOCK_FILE, RESULT_JSON, RESULT_TENSORS
from nodeguard.errors import RegistryError, StorageError
from nodeguard.storage.files import atomic_write_json, load_tagged, read_json, save_tagged
from nodeguard.storage.registry import Registry

DIGEST_LENGTH = 16
VALID_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # a kind or a key: one folder name, never ".."


def canonical_json(value: Any) -> str:
    """The one text of a settings mapping that its key is computed from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def settings_digest(kind: str, settings: Mapping[str, Any]) -> str:
    text = canonical_json({"kind": kind, "settings": settings})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]


def _normalised(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as they read back from JSON (tuples become lists), so comparisons hold."""
    return json.loads(canonical_json(dict(settings)))


@dataclass(frozen=True)
class StoredResult:
    """One result's place in the store: where it lives and the settings it must carry.

    A result of a model held in memory (a ``ResultStore`` without a registry) has the
    same key but no folder: it is kept in ``memory`` (a dict that lives as long as the
    model) and nothing is read, written or locked on disk for it.
    """

    kind: str
    settings: dict[str, Any]
    key: str
    folder: Path | None
    memory: dict[tuple[str, str, str], Any] | None = field(default=None, compare=False, repr=False)

    def path(self, name: str) -> Path | None:
        """A file of this result's folder (the stage's own extras, e.g. partial work); None in memory."""
        return None if self.folder is None else self.folder / name

    # -- tensors ----------------------------------------------------------------------
    def load_tensors(self) -> dict[str, Any] | None:
        """The saved tensors, or None when absent or saved for other settings."""
        if self.folder is None:
            return None if self.memory is None else self.memory.get((self.kind, self.key, "tensors"))
        path = self.folder / RESULT_TENSORS
        if not path.is_file():
            return None
        payload = load_tagged(path, expected_kind=self.kind)
        if payload.get("settings") != canonical_json(self.settings):
            return None
        return payload

    def save_tensors(self, payload: dict[str, Any]) -> None:
        """Save ``payload`` (a dict of tensors) with the settings inside."""
        if self.folder is None:
            if self.memory is not None:
                self.memory[(self.kind, self.key, "tensors")] = payload
            return
        save_tagged(self.folder / RESULT_TENSORS, self.kind, {**payload, "settings": canonical_json(self.settings)})

    # -- JSON -------------------------------------------------------------------------
    def load_json(self) -> Any | None:
        """The saved values, or None when absent or saved for other settings."""
        if self.folder is None:
            return None if self.memory is None else self.memory.get((self.kind, self.key, "json"))
        saved = read_json(self.folder / RESULT_JSON)
        if not isinstance(saved, dict) or saved.get("kind") != self.kind or saved.get("settings") != self.settings:
            return None
        return saved["values"]

    def save_json(self, values: Any) -> None:
        """Save ``values`` (JSON) with the kind and settings around them."""
        if self.folder is None:
            if self.memory is not None:
                self.memory[(self.kind, self.key, "json")] = values
            return
        atomic_write_json(self.folder / RESULT_JSON, {"kind": self.kind, "settings": self.settings, "values": values})

    @contextmanager
    def computing(self, rank: int = 0) -> Iterator[None]:
        """Hold this result's lock (across processes) while computing it.

        Other results of the same model, and other models, stay free. In a sharded job
        rank 0 holds the result's lock and every other rank the lock of its own shard,
        so the ranks of one job work side by side while a second job (or a lone
        process) asking for the same result is refused.

        In a registry the user cannot write (shared read-only) nothing is computed: the
        stages save partial work as they go (so that an interrupted run continues) and
        find their results again by key, so a result that cannot be stored is refused
        before any work, with the reason; the results already stored are read as usual.

        Raises:
            RegistryError: another process is computing this result.
            StorageError: the result's folder cannot be written (a read-only registry).
        """
        if self.folder is None:  # in memory: nothing to lock
            yield
            return
        name = LOCK_FILE if rank == 0 else f"{LOCK_FILE}-rank{rank}"
        lock = FileLock(str(self.folder / name), timeout=0)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise RegistryError(f"{self.kind} {self.key} is being computed by another process") from None
        except OSError as exc:
            raise _not_stored(self, exc) from None
        try:
            yield
        finally:
            lock.release()


def _not_stored(stored: StoredResult, exc: OSError) -> StorageError:
    """The refusal of a result that cannot be saved: its registry is read-only for this user."""
    assert stored.folder is not None  # a result in memory takes no lock
    model_folder = stored.folder.parents[2]  # <root>/models/NAME/results/KIND/KEY
    registry = Registry(model_folder.parents[1])
    return registry.read_only_error(exc, f"the {stored.kind} {stored.key} of model {model_folder.name!r}")


class ResultStore:
    """The results saved for one registered model.

    Args:
        registry: the registry holding the model; None for a model held in memory (its
            results are kept in ``memory``, nothing on disk).
        model: the model's name (not required to be registered; nothing is created yet).

    Raises:
        RegistryError: ``model`` is not a valid model name.
    """

    def __init__(self, registry: Registry | None, model: str, memory: dict[tuple[str, str, str], Any] | None = None):
        self.registry, self.model, self.memory = registry, model, memory
        self.root = registry.results_dir(model) if registry is not None else None

    def result(self, kind: str, settings: Mapping[str, Any], label: str = "") -> StoredResult:
        """Where the result of ``kind`` made with ``settings`` lives (whether or not it exists yet).

        Args:
            kind: the stage's kind of result ("attack_set", "sweep_cell", "votes", ...).
            settings: every setting that shapes the result, JSON-serialisable; tuples are
                stored as lists.
            label: a readable prefix of the folder name (not part of the identity).

        Returns:
            A ``StoredResult`` at ``results/<kind>/<label>-<digest>``, where digest is the
            first 16 hex digits of SHA-256 over kind and settings as canonical JSON (no
            folder for a store without a registry).
        """
        normalised = _normalised(settings)
        digest = settings_digest(kind, normalised)
        key = f"{label}-{digest}" if label else digest
        folder = self.root / kind / key if self.root is not None else None
        return StoredResult(kind=kind, settings=normalised, key=key, folder=folder, memory=self.memory)

    def find(self, kind: str, key: str) -> StoredResult:
        """A saved result by its key, with the settings stored in it.

        Args:
            kind: the stage's kind of result ("attack_set", ...).
            key: the folder name, ``<label>-<digest>`` (as reported by the stage).

        Returns:
            The ``StoredResult``, its settings read back from the saved file.

        Raises:
            RegistryError: no result of that kind and key is saved (an unfinished one
                included), or its file is damaged or of another kind.
        """
        if self.root is None:
            raise RegistryError(f"model {self.model!r} is held in memory: it keeps no files to find {kind} {key!r} in")
        if not VALID_KEY.fullmatch(kind) or not VALID_KEY.fullmatch(key):
            raise RegistryError(f"no {kind} {key!r} saved for model {self.model!r} (not a result key)")
        folder = self.root / kind / key
        payload_path = folder / RESULT_TENSORS
        if payload_path.is_file():
            settings = json.loads(load_tagged(payload_path, expected_kind=kind)["settings"])
        elif (folder / RESULT_JSON).is_file():
            saved = read_json(folder / RESULT_JSON)
            if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
                raise RegistryError(f"{kind} {key!r} of model {self.model!r} is damaged (no settings)")
            settings = saved["settings"]
        else:
            raise RegistryError(f"no {kind} {key!r} saved for model {self.model!r}")
        return StoredResult(kind=kind, settings=settings, key=key, folder=folder)
