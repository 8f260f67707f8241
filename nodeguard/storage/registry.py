"""The model registry and checkpoint cache that every command shares.

Layout under the cache root (see :func:`nodeguard.paths.cache_root`)::

    index.json            one entry per model, read by ``nodeguard models``
    index.json.lock       serialises writers of the index across processes
    models/NAME/
        config.yaml       what the model is and how it was trained
        checkpoint.pt     weights (and, while training, optimizer state), weights_only-safe
        metrics.json      final metrics
        history.json      one entry per finished epoch
        .busy.lock        held while the model is being trained
        results/          attack sets, sweep cells and votes (see :mod:`nodeguard.storage.results`)

:class:`Registry` owns every file and lock name of a model folder; other modules ask it
for paths. Writes are atomic (:mod:`nodeguard.storage.files`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from nodeguard.constants import (
    BUSY_LOCK_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HOME_VARIABLE,
    INDEX_FILE,
    METRICS_FILE,
    MODELS_FOLDER,
    RESULTS_FOLDER,
    __version__,
)
from nodeguard.errors import ModelNotFoundError, NoModelYetError, RegistryError, StorageError
from nodeguard.paths import cache_root, usable_cache_root
from nodeguard.runtime.distributed import current_ranks, require_shared_folder
from nodeguard.storage.files import (
    NOT_WRITABLE,
    atomic_write_json,
    atomic_write_text,
    display_path,
    load_tagged,
    read_json,
    save_tagged,
)

INDEX_LOCK_TIMEOUT_S = 60.0
VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_record(
    dataset: str,
    model: dict[str, Any],
    training: dict[str, Any],
    name: str | None = None,
    created: str | None = None,
    fingerprint: str | None = None,
    **provenance: Any,
) -> dict[str, Any]:
    """A model's config.yaml, built in one place for every way a model enters nodeguard
    (trained, imported, or held in memory).

    Args:
        dataset: the registered data set ("mnist5k", "folder:PATH", ...).
        model: the ``model`` section (what :func:`nodeguard.models.networks.build_model` reads).
        training: the ``training`` section (``tol_train`` at least).
        name: the model's name (None: not written).
        created: when it was made (ISO 8601; None: now).
        fingerprint: the digest of a ``folder:`` set's files (None: not written).
        provenance: further sections as they are (``recipe``, ``source``).

    Returns:
        The config, its keys in the order config.yaml shows them.
    """
    config: dict[str, Any] = {"name": name} if name is not None else {}
    config.update(dataset=dataset, model=model, training=training, **provenance)
    if fingerprint:
        config["dataset_fingerprint"] = fingerprint
    config.update(created=created or now_iso(), nodeguard_version=__version__)
    return config


@dataclass
class ModelEntry:
    """One line of the index."""

    name: str
    arch: str
    dataset: str
    status: str  # "training" or "ready"
    epochs_done: int = 0
    epochs: int = 0
    test_error: float | None = None
    created: str = ""
    updated: str = ""
    updated_ts: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "dataset": self.dataset,
            "status": self.status,
            "epochs_done": self.epochs_done,
            "epochs": self.epochs,
            "test_error": self.test_error,
            "created": self.created,
            "updated": self.updated,
            "updated_ts": self.updated_ts,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data and key != "extra"}
        extra = {key: value for key, value in data.items() if key not in cls.__dataclass_fields__}
        return cls(**known, extra=extra)


class Registry:
    """Models under one cache root: their folders, files and the shared index.

    Args:
        root: the cache root; None means :func:`nodeguard.paths.cache_root`
            (``NODEGUARD_HOME``, else ``$XDG_CACHE_HOME/nodeguard``, else ``~/.cache/nodeguard``).
            Nothing is created or read until a method needs it.

    Methods that read the index rebuild it from the model folders when it is missing or
    damaged; in a sharded job only rank 0 writes it back, so they may raise
    :class:`~nodeguard.errors.ConfigError` for malformed ``RANK``/``WORLD_SIZE`` variables.

    A registry the user can read but not write (shared read-only by another user, on a
    read-only file system) is read without the index lock, and a rebuilt index is kept in
    memory; every method that would change it raises :class:`~nodeguard.errors.StorageError`
    saying that it is read-only (:meth:`read_only_error`). A cache root that is a file, lies
    under a file or cannot be created is one :class:`~nodeguard.errors.RegistryError` or
    ``StorageError`` (:func:`nodeguard.paths.usable_cache_root`).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else cache_root()

    def require_shared(self) -> None:
        """In a sharded job, check that every rank sees this cache root (alone: nothing).

        A collective: every rank calls it (the command line does, before any command
        under torchrun). A library script run under torchrun calls it on every rank
        before its first stage.

        Raises:
            ConfigError: some ranks see another folder (each named with its host).
        """
        require_shared_folder(
            self.root, "the cache root", f"set {HOME_VARIABLE} on every node to a folder they all mount"
        )

    # -- paths -------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        """``<root>/index.json``, the index of every model."""
        return self.root / INDEX_FILE

    @property
    def models_path(self) -> Path:
        """``<root>/models``, the folder holding one folder per model."""
        return self.root / MODELS_FOLDER

    def model_dir(self, name: str) -> Path:
        """The folder of model ``name`` (the name is checked, never used as a path as is).

        Args:
            name: a model name: 1 to 100 letters, digits, '.', '_', '+' or '-', starting
                with a letter or digit.

        Returns:
            ``<root>/models/<name>`` (not created, and not required to exist).

        Raises:
            RegistryError: ``name`` is not a valid model name.
        """
        if not VALID_NAME.match(name or ""):
            raise RegistryError(f"invalid model name {name!r}: use letters, digits, '.', '_', '+' or '-' (at most 100)")
        return self.models_path / name

    # -- index -------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the index lock (across processes) for a read-modify-write.

        A context manager; creates the cache root if needed and waits up to 60 s for the lock.

        Raises:
            RegistryError: the index stayed locked by another process for 60 s, or the
                cache root is a file or lies under one.
            StorageError: the cache root cannot be created, or the registry is read-only
                for this user (it can be read, not changed).
        """
        usable_cache_root(self.root, create=True)
        lock = FileLock(str(self.index_path) + ".lock", timeout=INDEX_LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise RegistryError(
                f"the registry index {self.index_path} stayed locked for {INDEX_LOCK_TIMEOUT_S:.0f} s"
            ) from None
        except OSError as exc:
            raise self.read_only_error(exc) from None
        try:
            yield
        finally:
            lock.release()

    def read_only_error(self, exc: OSError, what: str = "") -> StorageError:
        """The one-line error for a write this registry refused (``exc`` said why).

        Args:
            exc: the error of the write that failed.
            what: what could not be saved ("the attack_set ..."); empty for a change of
                the index (registering or removing a model).

        Returns:
            A StorageError that says the registry is read-only for this user (when
            ``exc`` is a permission or read-only file system error) and what can still be
            done, or one naming the file and the reason otherwise.
        """
        reason = exc.strerror or exc.__class__.__name__
        if exc.errno not in NOT_WRITABLE:
            where = display_path(exc.filename) if exc.filename else display_path(self.root)
            return StorageError(f"cannot write {where} in the registry {display_path(self.root)}: {reason}")
        head = f"{what} cannot be saved in" if what else "cannot change"
        return StorageError(
            f"{head} the registry {display_path(self.root)} ({reason}): it is read-only for you, so its models and "
            "saved results can be listed, shown and used, but nothing new can be stored there; to compute and keep "
            f"new results, copy it to a folder you can write (cp -r {display_path(self.root)} DEST) and point "
            "NODEGUARD_HOME at the copy"
        )

    @contextmanager
    def _reading(self) -> Iterator[bool]:
        """Hold the index lock to read it where the lock can be taken.

        A registry the user can read but not write (shared read-only) is read without
        the lock: the index is replaced atomically (``os.replace``), so a reader sees a
        whole index, old or new. A registry that does not exist yet reads as empty and is
        not created.

        Yields:
            Whether the lock is held (a rebuilt index may then be written back).

        Raises:
            RegistryError: the index stayed locked for 60 s; the root is a file or under one.
            StorageError: the root cannot be reached.
        """
        if not usable_cache_root(self.root, create=False):
            yield False
            return
        lock = FileLock(str(self.index_path) + ".lock", timeout=INDEX_LOCK_TIMEOUT_S)
        try:
            lock.acquire()
            held = True
        except Timeout:
            raise RegistryError(
                f"the registry index {self.index_path} stayed locked for {INDEX_LOCK_TIMEOUT_S:.0f} s"
            ) from None
        except OSError as exc:
            if exc.errno not in NOT_WRITABLE:  # not a permission: a lock that is a folder, an I/O error
                raise self.read_only_error(exc) from None
            held = False  # read-only for this user: read it as it is
        try:
            yield held
        finally:
            if held:
                lock.release()

    def _read_index_unlocked(self, may_write: bool = True) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            models = data["models"]
            if not isinstance(models, dict):
                raise TypeError("models is not a mapping")
            return models
        except FileNotFoundError:
            return self._rebuild_index_unlocked(may_write) if self.models_path.is_dir() else {}
        except OSError as exc:
            raise RegistryError(f"cannot read {display_path(self.index_path)}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError):
            return self._rebuild_index_unlocked(may_write)

    def _rebuild_index_unlocked(self, may_write: bool = True) -> dict[str, dict[str, Any]]:
        """Recreate the index from the model folders (a damaged or missing index); it is
        written back when ``may_write`` and the registry is writable, else kept in memory."""
        models: dict[str, dict[str, Any]] = {}
        for folder in sorted(self.models_path.glob("*")) if self.models_path.is_dir() else []:
            config_path = folder / CONFIG_FILE
            if not config_path.is_file():
                continue
            try:
                config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
                metrics = json.loads((folder / METRICS_FILE).read_text()) if (folder / METRICS_FILE).is_file() else {}
            except (OSError, ValueError, yaml.YAMLError):
                continue
            model = config.get("model", {})
            models[folder.name] = ModelEntry(
                name=folder.name,
                arch=str(model.get("arch", "?")),
                dataset=str(config.get("dataset", "?")),
                status="ready" if metrics else "training",
                epochs_done=int(metrics.get("epochs", 0)),
                epochs=int(config.get("training", {}).get("epochs", 0)),
                test_error=metrics.get("test_error"),
                created=str(config.get("created", "")),
                updated=now_iso(),
                updated_ts=folder.stat().st_mtime,
            ).to_dict()
        if may_write and current_ranks().is_main:  # in a sharded job only rank 0 writes the index
            try:
                self._write_index_unlocked(models)
            except StorageError:
                pass  # a registry read-only for this user: the rebuilt index serves this process
        return models

    def _write_index_unlocked(self, models: dict[str, dict[str, Any]]) -> None:
        atomic_write_json(self.index_path, {"version": 1, "models": models})

    def entries(self) -> list[ModelEntry]:
        """All models, most recently updated first.

        Returns:
            One ``ModelEntry`` (name, arch, dataset, status "training" or "ready",
            epochs, test error in [0, 1], timestamps) per registered model.

        Raises:
            RegistryError: the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        with self._reading() as held:
            models = self._read_index_unlocked(may_write=held)
        entries = [ModelEntry.from_dict(data) for data in models.values()]
        return sorted(entries, key=lambda entry: entry.updated_ts, reverse=True)

    def get(self, name: str) -> ModelEntry:
        """The index entry of model ``name``.

        Args:
            name: a registered model name.

        Returns:
            Its ``ModelEntry`` (status "training" or "ready", epochs done, test error).

        Raises:
            ModelNotFoundError: no model of that name is registered.
            RegistryError: the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        with self._reading() as held:
            models = self._read_index_unlocked(may_write=held)
        if name not in models:
            if not models:
                raise NoModelYetError(f"no model named {name!r}: no model is registered yet")
            raise ModelNotFoundError(f"no model named {name!r} (registered: {', '.join(sorted(models))})")
        return ModelEntry.from_dict(models[name])

    def exists(self, name: str) -> bool:
        """Whether the index has an entry named ``name`` (finished or not).

        Raises:
            RegistryError: the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        with self._reading() as held:
            return name in self._read_index_unlocked(may_write=held)

    def put(self, entry: ModelEntry) -> None:
        """Insert or replace one entry (read-modify-write under the lock).

        Args:
            entry: the entry to store; its ``updated`` and ``updated_ts`` are set to now.

        Raises:
            RegistryError: invalid model name, or the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        self.model_dir(entry.name)
        entry.updated = now_iso()
        entry.updated_ts = time.time()
        with self.locked():
            models = self._read_index_unlocked()
            models[entry.name] = entry.to_dict()
            self._write_index_unlocked(models)

    def latest(self, ready_only: bool = True) -> str:
        """Name of the most recently trained model (``--model``'s default).

        Args:
            ready_only: skip models whose training has not finished.

        Returns:
            The name of the most recently updated (ready) model.

        Raises:
            ModelNotFoundError: no (ready) model is registered.
            RegistryError: the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        for entry in self.entries():
            if entry.status == "ready" or not ready_only:
                return entry.name
        raise NoModelYetError("no trained model yet")

    def resolve(self, name: str | None) -> str:
        """``name`` if given (and registered), else the most recently trained model.

        Args:
            name: a model name, or None for the most recently trained ready model.

        Returns:
            The model name.

        Raises:
            ModelNotFoundError: ``name`` is not registered, or None was given and no model is ready.
            RegistryError: the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        if name is None:
            return self.latest()
        self.get(name)
        return name

    def remove(self, name: str) -> None:
        """Delete a model's folder and its index entry.

        Holds the index lock only, not the model's busy lock (see :meth:`exclusive`).

        Args:
            name: the model to remove.

        Raises:
            ModelNotFoundError: neither an index entry nor a folder of that name exists.
            RegistryError: invalid model name, or the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        folder = self.model_dir(name)
        with self.locked():
            models = self._read_index_unlocked()
            if name not in models and not folder.exists():
                raise ModelNotFoundError(f"no model named {name!r}")
            models.pop(name, None)
            shutil.rmtree(folder, ignore_errors=True)
            self._write_index_unlocked(models)

    # -- files in a model folder -------------------------------------------------------
    def results_dir(self, name: str) -> Path:
        """Where the stages keep the results they computed for model ``name``.

        Returns:
            ``<root>/models/<name>/results`` (not created).

        Raises:
            RegistryError: invalid model name.
        """
        return self.model_dir(name) / RESULTS_FOLDER

    def write_config(self, name: str, config: dict[str, Any]) -> None:
        """Write ``config`` as the model's config.yaml (YAML, atomically).

        Raises:
            RegistryError: invalid model name.
        """
        atomic_write_text(self.model_dir(name) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def read_config(self, name: str) -> dict[str, Any]:
        """The model's config.yaml as a dict (sections ``model``, ``training``, ``dataset``, ...).

        Raises:
            ModelNotFoundError: the model has no config.yaml.
            RegistryError: invalid model name, or the file is damaged or has no ``model`` section.
        """
        path = self.model_dir(name) / CONFIG_FILE
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelNotFoundError(f"model {name!r} has no {CONFIG_FILE} in {path.parent}") from None
        except OSError as exc:
            raise RegistryError(f"cannot read {display_path(path)}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path} is damaged ({exc.__class__.__name__})") from None
        if not isinstance(config, dict) or "model" not in config:
            raise RegistryError(f"{path} is not a nodeguard model config")
        return config

    def write_json(self, name: str, filename: str, obj: Any) -> None:
        """Write ``obj`` as JSON to ``filename`` in the model's folder, atomically.

        Raises:
            RegistryError: invalid model name.
        """
        atomic_write_json(self.model_dir(name) / filename, obj)

    def read_json(self, name: str, filename: str, default: Any = None) -> Any:
        """The JSON in ``filename`` of the model's folder, ``default`` when the file is absent.

        Raises:
            RegistryError: invalid model name, or the file is not valid JSON.
        """
        return read_json(self.model_dir(name) / filename, default)

    def write_checkpoint(self, name: str, payload: dict[str, Any]) -> None:
        """Save ``payload`` (weights, optimizer state, ...) as the model's checkpoint.pt, atomically.

        Raises:
            RegistryError: invalid model name.
        """
        save_tagged(self.model_dir(name) / CHECKPOINT_FILE, "checkpoint", payload)

    def read_checkpoint(self, name: str) -> dict[str, Any]:
        """The model's checkpoint.pt, loaded on the CPU with ``weights_only=True``.

        Raises:
            RegistryError: invalid model name, or the checkpoint is missing, damaged, not a
                nodeguard checkpoint, or written by a newer nodeguard.
        """
        return load_tagged(self.model_dir(name) / CHECKPOINT_FILE, expected_kind="checkpoint")

    def has_checkpoint(self, name: str) -> bool:
        """Whether the model has a checkpoint.pt (at least one finished epoch).

        Raises:
            RegistryError: invalid model name.
        """
        return (self.model_dir(name) / CHECKPOINT_FILE).is_file()

    def clear(self, name: str) -> None:
        """Delete everything in a model's folder but its busy lock (``--restart``).

        The index entry is kept. Nothing happens when the folder does not exist.

        Raises:
            RegistryError: invalid model name.
        """
        folder = self.model_dir(name)
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.name != BUSY_LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def discard_unfinished(self, name: str) -> None:
        """Forget a model that never finished an epoch: its folder and its index entry.

        Used when a training run fails before its first checkpoint, so that nothing it
        wrote blocks the next run of the same name. A model with a checkpoint is left alone.

        Raises:
            RegistryError: invalid model name, or the index stayed locked for 60 s.
            ConfigError: malformed ``RANK``/``WORLD_SIZE`` while rebuilding the index.
        """
        if self.has_checkpoint(name):
            return
        with self.locked():
            models = self._read_index_unlocked()
            if models.pop(name, None) is not None:
                self._write_index_unlocked(models)
        shutil.rmtree(self.model_dir(name), ignore_errors=True)

    @contextmanager
    def exclusive(self, name: str, purpose: str = "trained") -> Iterator[None]:
        """Hold a per-model lock so that two processes do not write one model at once.

        A context manager; creates the model's folder. It does not wait for the lock.

        Args:
            name: the model.
            purpose: what the holder does, for the error message ("trained").

        Raises:
            RegistryError: invalid model name, or another process holds the lock
                ("is being trained by another process").
        """
        folder = self.model_dir(name)
        usable_cache_root(self.root, create=True)
        lock = FileLock(str(folder / BUSY_LOCK_FILE), timeout=0)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise RegistryError(f"model {name!r} is being {purpose} by another process") from None
        except OSError as exc:
            raise self.read_only_error(exc, f"model {name!r}") from None
        try:
            yield
        finally:
            lock.release()
