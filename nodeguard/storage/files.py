"""Files that survive a crash: atomic writes, tagged torch files, weights-only loading.

Every write goes to a temporary file in the same folder and then ``os.replace``, so a
reader never sees half a file and a killed writer leaves the previous version intact.
Tensor files are dicts saved with a format marker and a ``kind``, and are loaded back
with ``weights_only=True`` (no arbitrary objects), so a foreign or damaged file is one
clear error instead of a crash or a silent misread.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nodeguard.constants import FILE_FORMAT
from nodeguard.errors import RegistryError

FILE_FORMAT_VERSION = 1


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Call ``write(binary_handle)`` on a temporary sibling of ``path``, then move it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling file and ``os.replace``."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, ``default`` when there is no such file; damaged JSON is an error."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise RegistryError(f"{path} is damaged (not valid JSON)") from None


def save_tagged(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Save a weights_only-loadable dict with nodeguard's format marker and its ``kind``,
    atomically; :func:`load_tagged` reads it back."""
    tagged = {"format": FILE_FORMAT, "version": FILE_FORMAT_VERSION, "kind": kind, **payload}
    atomic_write(path, lambda handle: torch.save(tagged, handle))


def load_tagged(path: Path, expected_kind: str | None = None) -> dict[str, Any]:
    """Load a nodeguard tensor file with ``weights_only=True``; one clear error otherwise."""
    if not path.is_file():
        raise RegistryError(f"{path} is missing")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise RegistryError(f"{path} is damaged or not a nodeguard file ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise RegistryError(f"{path} is not a nodeguard file (no '{FILE_FORMAT}' marker)")
    if payload.get("version", 0) > FILE_FORMAT_VERSION:
        raise RegistryError(f"{path} was written by a newer nodeguard (format {payload.get('version')})")
    if expected_kind is not None and payload.get("kind") != expected_kind:
        raise RegistryError(f"{path} holds a {payload.get('kind')!r}, not a {expected_kind!r}")
    return payload
