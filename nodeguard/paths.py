"""Where nodeguard keeps its cache and looks for data sets."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from nodeguard.constants import DATA_VARIABLE, HOME_VARIABLE, XDG_CACHE_VARIABLE
from nodeguard.errors import RegistryError, StorageError


def cache_root() -> Path:
    """``NODEGUARD_HOME``, else ``$XDG_CACHE_HOME/nodeguard``, else ``~/.cache/nodeguard``."""
    explicit = os.environ.get(HOME_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get(XDG_CACHE_VARIABLE)
    if xdg:
        return Path(xdg).expanduser() / "nodeguard"
    return Path.home() / ".cache" / "nodeguard"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``data_dir`` if given, else ``NODEGUARD_DATA``, else ``<cache root>/data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    explicit = os.environ.get(DATA_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    return cache_root() / "data"


def _origin(root: Path) -> str:
    """Which setting made ``root`` the cache root, as a parenthesis ('' for a root given otherwise)."""
    if root != cache_root():
        return ""
    if os.environ.get(HOME_VARIABLE):
        return f" (set by {HOME_VARIABLE})"
    if os.environ.get(XDG_CACHE_VARIABLE):
        return f" (under {XDG_CACHE_VARIABLE})"
    return ""


def _file_above(root: Path) -> Path | None:
    """The nearest folder on the way to ``root`` that is in fact a file, if any."""
    for ancestor in reversed(root.parents):
        try:
            if not stat.S_ISDIR(os.stat(ancestor).st_mode):
                return ancestor
        except OSError:
            return None
    return None


def cache_root_error(root: Path, exc: OSError) -> RegistryError | StorageError:
    """The one-line error for a cache root that cannot be used, from the OSError that said so.

    Returns:
        A RegistryError for a root that is a file, lies under a file or is a broken link; a
        StorageError for one that cannot be created or reached (no permission, a
        read-only file system, ...).
    """
    fix = f"point {HOME_VARIABLE} at a folder you can write"
    where = f"the cache root {root}{_origin(root)}"
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and not root.is_symlink()):
        above = _file_above(root)
        if above is not None and above != root:
            return RegistryError(f"{where} lies under {above}, which is a file, not a folder; {fix}")
        return RegistryError(f"{where} is a file, not a folder; {fix} (or move the file away)")
    if exc.errno == errno.EEXIST:
        return RegistryError(f"{where} is a broken symbolic link (to {os.readlink(root)}); {fix}")
    reason = exc.strerror or exc.__class__.__name__
    return StorageError(f"{where} cannot be created or reached ({reason}); {fix}")


def usable_cache_root(root: Path, create: bool) -> bool:
    """Whether ``root`` is a folder nodeguard can use as a cache root, made when ``create``.

    Args:
        root: the cache root.
        create: make it (and its parents) when it does not exist.

    Returns:
        True when it is a folder (now); False when it does not exist and ``create`` is False.

    Raises:
        RegistryError: it is a file, lies under a file, or is a broken link.
        StorageError: it cannot be created or reached (no permission, a read-only file system).
    """
    try:
        status = os.stat(root)
    except FileNotFoundError:
        if root.is_symlink() or create:
            try:
                root.mkdir(parents=True, exist_ok=True)
                return True
            except OSError as exc:
                raise cache_root_error(root, exc) from None
        return False
    except OSError as exc:  # ENOTDIR: a file on the way; EACCES: a folder on the way cannot be searched
        raise cache_root_error(root, exc) from None
    if not stat.S_ISDIR(status.st_mode):
        raise cache_root_error(root, FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(root)))
    return True
