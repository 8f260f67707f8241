"""Where nodeguard keeps its cache and looks for data sets."""

from __future__ import annotations

import os
from pathlib import Path

from nodeguard.constants import DATA_VARIABLE, HOME_VARIABLE, XDG_CACHE_VARIABLE


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
