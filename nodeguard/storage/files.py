"""Files that survive a crash: atomic writes, tagged torch files, weights-only loading.

Every write goes to a temporary file in the same folder and then ``os.replace``, so a
reader never sees half a file and a killed writer leaves the previous version intact.
Tensor files are dicts saved with a format marker and a ``kind``, and are loaded back
with ``weights_only=True`` (no arbitrary objects), so a foreign or damaged file is one
clear error instead of a crash or a silent misread.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nodeguard.constants import FILE_FORMAT
from nodeguard.errors import RegistryError, StorageError

FILE_FORMAT_VERSION = 1


# what a failed write says when the disk, not the program, is at fault
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(path: Path, exc: BaseException) -> StorageError | None:
    """The one-line error for a write to ``path`` that failed with ``exc``, or None when
    ``exc`` is not about the disk (a full disk, a read-only folder, no permission)."""
    code = getattr(exc, "errno", None)
    message = str(exc).lower()
    if code in NO_ROOM or "no space left" in message or "disk quota" in message:
        return StorageError(
            f"no room to write {display_path(path)}: free space on its disk (or point NODEGUARD_HOME "
            "elsewhere) and run the same command again; finished work is kept"
        )
    if code in NOT_WRITABLE:
        reason = os.strerror(code) if code is not None else "not writable"
        return StorageError(f"cannot write {display_path(path)}: {reason}; choose a folder you can write to")
    return None


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Call ``write(binary_handle)`` on a temporary sibling of ``path``, then move it in place.

    Raises:
        StorageError: the disk is full or the folder is not writable (the previous
            version of ``path``, if any, is left intact).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a folder that cannot be made or written: the path's fault, one line
        reason = exc.strerror or exc.__class__.__name__
        generic = StorageError(f"cannot write {display_path(path)}: {reason}; choose a folder you can write to")
        raise (storage_error(path, exc) or generic) from None
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        converted = storage_error(path, exc) if isinstance(exc, OSError | RuntimeError) else None
        if converted is not None:
            raise converted from None
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: Path) -> None:
    """Raise a StorageError now unless a file can be written at ``path`` (its folder is made)."""
    if path.is_dir():
        raise StorageError(f"cannot write {display_path(path)}: it is a folder; name a file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".check", dir=path.parent):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        generic = StorageError(f"cannot write {display_path(path)}: {reason}; choose a folder you can write to")
        raise (storage_error(path, exc) or generic) from None


def check_folder(path: Path) -> None:
    """Make the folder ``path`` (and its parents), or raise a one-line StorageError saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        generic = StorageError(f"cannot make the folder {display_path(path)}: {reason}; choose another")
        raise (storage_error(path, exc) or generic) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling file and ``os.replace``."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8; characters that UTF-8 cannot hold (the undecodable bytes of
    a file name, kept by Python as surrogates) are written as backslash escapes."""
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj, indent=2, sort_keys=True) + "\n")


def json_ready(value: Any) -> Any:
    """``value`` as standard JSON takes it: tensors and arrays as lists, paths as text,
    NaN and infinities as null (JSON has no such numbers)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, os.PathLike):
        return display_path(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def json_text(value: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """Standard JSON text of ``value`` (see :func:`json_ready`): never NaN or Infinity tokens."""
    return json.dumps(json_ready(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as text that any output can hold: the name as the OS gives it, with bytes that
    are not UTF-8 shown as backslash escapes (``caf\\xe9.png``) instead of failing."""
    text = os.fspath(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, ``default`` when there is no such file.

    Raises:
        RegistryError: the file is damaged (not valid JSON) or cannot be read (no permission).
    """
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"cannot read {display_path(path)}: {exc.strerror or exc}") from None
    except ValueError:
        raise RegistryError(f"{path} is damaged (not valid JSON)") from None


def save_tagged(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Save a weights_only-loadable dict with nodeguard's format marker and its ``kind``,
    atomically; :func:`load_tagged` reads it back."""
    tagged = {"format": FILE_FORMAT, "version": FILE_FORMAT_VERSION, "kind": kind, **payload}
    atomic_write(path, lambda handle: torch.save(tagged, handle))


def load_tagged(path: Path, expected_kind: str | None = None) -> dict[str, Any]:
    """Load a nodeguard tensor file with ``weights_only=True``; one clear error otherwise.

    Raises:
        RegistryError: the file is missing, cannot be read (no permission), is damaged, is
            not a nodeguard file, was written by a newer nodeguard, or holds another kind.
    """
    if not path.is_file():
        raise RegistryError(f"{path} is missing")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        if exc.errno is not None:  # the operating system's (no permission, an I/O error), not the file's content
            raise RegistryError(f"cannot read {display_path(path)}: {exc.strerror or exc}") from None
        raise RegistryError(f"{path} is damaged or not a nodeguard file ({str(exc)[:200]})") from None
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
