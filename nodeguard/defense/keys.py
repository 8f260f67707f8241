"""The secret key that makes the defense's draws unpredictable.

Tolerance randomization is a defense only while an attacker cannot know the tolerances
an image will be judged at. nodeguard draws an image's tolerances from a keyed hash of
its exact float32 values: HMAC-SHA256 with a 32-byte key made with :mod:`secrets` on first use
and kept in the cache root (``defense.key``, readable by its owner only). The same
installation draws the same tolerances for the same image every time (results can be
stored and reused); another installation, or anyone without the key, cannot compute
them. A public integer seed (``seed``, the CLI's ``--seed``) gives instead the
reproducible draws anyone can recompute, for research runs that others must repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path

from nodeguard.constants import DEFENSE_KEY_FILE
from nodeguard.errors import RegistryError
from nodeguard.paths import cache_root
from nodeguard.storage.files import display_path, storage_error

KEY_BYTES = 32


def installation_key(root: Path | None = None) -> bytes:
    """The draw key of the installation at ``root`` (the cache root by default), made on first use.

    Raises:
        RegistryError: the key file exists but is not a key (damaged).
        StorageError: the key cannot be written (a read-only or full cache root).
    """
    path = Path(root if root is not None else cache_root()) / DEFENSE_KEY_FILE
    for _attempt in range(50):
        if path.is_file():
            key = path.read_bytes()
            if len(key) == KEY_BYTES:
                return key
            if len(key) > KEY_BYTES:
                raise RegistryError(f"{display_path(path)} is not a defense key; remove it to make a new one")
            time.sleep(0.02)  # another process is still writing it: read it again
            continue
        _create(path)
    raise RegistryError(f"{display_path(path)} stayed empty; remove it to make a new key")


def _create(path: Path) -> None:
    """Write a new key next to ``path`` and link it in place: the first process to link wins."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".defense-key.", dir=path.parent)
    except OSError as exc:
        raise (storage_error(path, exc) or exc) from None
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made the key first: use theirs
        except OSError:  # a filesystem without hard links: create it exclusively instead
            _create_exclusively(path)
    except OSError as exc:
        raise (storage_error(path, exc) or exc) from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def _create_exclusively(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first (readers wait until it is whole)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(KEY_BYTES))
        handle.flush()
        os.fsync(handle.fileno())


def key_id(key: bytes) -> str:
    """A public name of a key (16 hex digits of a hash): tells installations apart, reveals nothing."""
    return hashlib.sha256(b"nodeguard defense key id:" + key).hexdigest()[:16]


def keyed_digest(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key``."""
    return hmac.new(key, message, hashlib.sha256).digest()
