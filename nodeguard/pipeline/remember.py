"""A result found again, or computed once and kept: the skeleton every stage shares.

A stage names its result (a kind and the settings that shape it: the result store's key,
:mod:`nodeguard.storage.results`) and gives the function that computes it. Reuse, the
lock that keeps two processes from computing the same result, and the save on rank 0 of
a sharded job are done here, once, for every kind of result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from nodeguard.runtime.distributed import barrier, broadcast, current_ranks
from nodeguard.storage.results import StoredResult

T = TypeVar("T")


def remember_json(
    stored: StoredResult, compute: Callable[[], Any], complete: Callable[[Any], bool] | None = None
) -> tuple[Any, bool]:
    """The stored JSON values of ``stored``, else ``compute()``'s, saved (rank 0).

    Args:
        stored: where the result lives (no folder: a model in memory, kept in its memory).
        compute: makes the values (JSON-serialisable). In a sharded job every rank calls
            it (it may split its work with :func:`nodeguard.runtime.distributed.map_shares`).
        complete: whether stored values answer this request (None: any do); values that
            do not (fewer certified images than asked for, say) are computed again, and
            ``compute`` may continue from them.

    Returns:
        (values, reused): the saved values and True, else ``compute()``'s and False.

    Raises:
        RegistryError: another process is computing this result.
        StorageError: the result cannot be stored (a registry that is read-only for this user).
    """

    def load() -> Any | None:
        values = stored.load_json()
        return values if values is not None and (complete is None or complete(values)) else None

    return _remember(stored, load, stored.save_json, compute)


def remember_tensors(
    stored: StoredResult,
    compute: Callable[[], dict[str, Any]],
    complete: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[dict[str, Any], bool]:
    """:func:`remember_json` for a dict of tensors (saved with ``torch.save``, loaded weights only).

    Args:
        stored: where the result lives.
        compute: makes the tensors.
        complete: whether a stored payload holds everything this nodeguard keeps (None:
            any payload does); an older, incomplete one is computed again and replaced.

    Returns:
        (payload, reused).

    Raises:
        RegistryError: another process is computing this result, or its file is damaged.
        StorageError: the result cannot be stored.
    """

    def load() -> dict[str, Any] | None:
        payload = stored.load_tensors()
        return payload if payload is not None and (complete is None or complete(payload)) else None

    return _remember(stored, load, stored.save_tensors, compute)


def _remember(
    stored: StoredResult, load: Callable[[], T | None], save: Callable[[T], None], compute: Callable[[], T]
) -> tuple[T, bool]:
    ranks = current_ranks()
    if ranks.sharded:
        # rank 0 decides for every rank whether the result exists, so that all ranks
        # reuse it or all compute it (``compute`` may hold collectives)
        found = broadcast(load() is not None if ranks.is_main else None)
        if found:
            saved = load()
            assert saved is not None
            return saved, True
        with stored.computing(ranks.rank):
            values = compute()
            if ranks.is_main or stored.folder is None:  # in memory, each rank keeps its own copy
                save(values)
        barrier()  # no rank asks for it again before rank 0 has saved it
        return values, False
    saved = load()
    if saved is not None:
        return saved, True
    with stored.computing(ranks.rank):
        saved = load()  # another process may have saved it before we took the lock
        if saved is not None:
            return saved, True
        values = compute()
        save(values)
    return values, False
