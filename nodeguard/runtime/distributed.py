"""One command, several processes: the rank and world size come from the environment.

Under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``) every process runs the same command; the stages split their images
across the ranks deterministically and exchange results through ``torch.distributed``
(gloo, which carries Python objects between CPU processes; nccl is added for CUDA
tensors when a GPU is used). Alone, the same code runs with rank 0 of 1 and never
touches ``torch.distributed``.

Rules the stages follow:
- every rank computes its share and saves it under the result store (a shard file), so
  a killed rank loses at most the batch it was working on;
- the shares are gathered to every rank, so all ranks continue with the same whole
  result; only rank 0 writes results, the registry and the command's output.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

from nodeguard.errors import ConfigError, setting_error

T = TypeVar("T")
# a barrier waits for the slowest rank's share of an attack: hours, not the default 30 min
COLLECTIVE_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank of world, and the same on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world}"


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None


def current_ranks() -> Ranks:
    """The ranks the launcher gave this process (rank 0 of 1 without a launcher)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} and WORLD_SIZE {world} do not describe a process of a job")
    return Ranks(rank, world, local_rank, local_world)


def ensure_process_group() -> None:
    """Join the job's process group once (no-op alone)."""
    import torch.distributed as dist

    ranks = current_ranks()
    if not ranks.sharded or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` alone)."""
    ranks = current_ranks()
    if not ranks.sharded:
        return [value]
    import torch.distributed as dist

    ensure_process_group()
    gathered: list[Any] = [None] * ranks.world
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    if not current_ranks().sharded:
        return value
    import torch.distributed as dist

    ensure_process_group()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current_ranks().sharded:
        import torch.distributed as dist

        ensure_process_group()
        dist.barrier()


SHARED_MARKER = ".shared-by-ranks-"  # + a random token: the file rank 0 writes, every rank looks for


def require_shared_folder(folder: Path, what: str, fix: str) -> None:
    """In a sharded job, check that every rank sees the same ``folder`` (alone: nothing).

    Rank 0 writes a file of a random name into the folder; every rank looks for it in its
    own ``folder`` (the path may differ from node to node: a mount point). A collective:
    every rank of the job must call it, and every rank raises alike. Where rank 0 cannot
    write the folder the check is skipped (the commands' own errors then say why).

    Args:
        folder: the folder the ranks must share (created by rank 0 if missing).
        what: what the folder is, for the message ("the cache root").
        fix: what to do, for the message.

    Raises:
        ConfigError: some ranks do not see rank 0's file (each named with its host and path).
    """
    ranks = current_ranks()
    if not ranks.sharded:
        return
    token, marker = "", None
    if ranks.is_main:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            token = secrets.token_hex(8)
            marker = folder / f"{SHARED_MARKER}{token}"
            marker.write_text(socket.gethostname(), encoding="utf-8")
        except OSError:
            token = ""  # a folder rank 0 cannot write: skipped
    try:
        token = broadcast(token)
        try:
            sees = bool(token) and (folder / f"{SHARED_MARKER}{token}").is_file()
        except OSError:  # a folder this rank may not search: it does not see the file
            sees = False
        seen = all_gather((sees, socket.gethostname(), str(folder)))
    finally:
        if marker is not None:
            try:
                marker.unlink(missing_ok=True)
            except OSError:
                pass  # a stale handle on a network filesystem: a stray file, not a failure
    blind = [f"rank {rank} on {host} ({path})" for rank, (sees, host, path) in enumerate(seen) if not sees]
    if token and blind:
        _, host, path = seen[0]
        raise ConfigError(
            f"{what} of rank 0 on {host} ({path}) is not shared with {', '.join(blind)}: "
            f"results, locks and the secret draws' key must be one for the whole job; {fix}"
        )


def share(count: int, ranks: Ranks | None = None) -> range:
    """This rank's contiguous share of ``count`` items: near-equal, in rank order."""
    ranks = ranks or current_ranks()
    return range(count * ranks.rank // ranks.world, count * (ranks.rank + 1) // ranks.world)


def map_shares(count: int, compute: Callable[[range], Sequence[torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Split, compute, gather: ``compute(rows)`` over the rows ``0 .. count - 1``.

    Alone, ``compute(range(count))``. In a sharded job each rank computes its contiguous
    share (:func:`share`) and every rank gets every share's tensors, concatenated along
    the first dimension in row order; ``compute`` must return the same number of
    tensors on every rank, each with one leading entry per row.

    Returns:
        The tensors ``compute`` returns, for all ``count`` rows.
    """
    ranks = current_ranks()
    if not ranks.sharded:
        return tuple(compute(range(count)))
    parts = all_gather(tuple(compute(share(count, ranks))))
    return tuple(torch.cat([part[index] for part in parts]) for index in range(len(parts[0])))


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in this process (None: what torch picks)."""
    if threads is None:
        return
    if threads < 1:
        raise setting_error("threads", f"must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def oversubscription_warning(cpu_count: int | None = None) -> str | None:
    """A warning when this machine's processes of the job would use more threads than it has cores."""
    ranks = current_ranks()
    cores = cpu_count or os.cpu_count() or 1
    total = torch.get_num_threads() * ranks.local_world
    if ranks.local_world > 1 and total > cores:
        return (
            f"{ranks.local_world} processes x {torch.get_num_threads()} threads = {total} threads on {cores} cores: "
            f"they will slow each other down; set `threads` to {max(1, cores // ranks.local_world)}"
        )
    return None
