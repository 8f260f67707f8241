"""Resumable work units: the one way a long stage keeps its finished work and continues after it.

A stage splits its work into units (an attack set: batches of images; certificates: one
image each), says which units are this rank's, and computes them one by one. After each
unit the rank saves every unit it has finished to a file of its own in the result's
folder (``shard-R-of-W.pt``, a tagged torch file read back ``weights_only``); a rerun of
the same plan (the same images, the same settings: the result's key) loads them and
computes only the rest, so an interrupted run (Ctrl-C, a killed rank, a full disk) loses
at most the unit it was on. Then every rank's units are gathered, in the plan's order,
on every rank. Once the stage has saved its result, :meth:`WorkUnits.remove` deletes the
shard files (rank 0 also those of earlier runs with another number of ranks).

One process is rank 0 of 1: the same code runs alone and under torchrun.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from nodeguard.progress import ProgressTask
from nodeguard.runtime.distributed import Ranks, all_gather, barrier, current_ranks
from nodeguard.storage.files import load_tagged, save_tagged
from nodeguard.storage.results import StoredResult

UnitT = TypeVar("UnitT", bound=Hashable)  # a unit's name, the same on every run of one plan (a tuple of ints)
ValueT = TypeVar("ValueT")  # what computing a unit gives (tensors and plain values)


def shard_file(ranks: Ranks) -> str:
    """The file in which a rank keeps its finished units (one process: rank 0 of 1)."""
    return f"shard-{ranks.rank}-of-{ranks.world}.pt"


def round_robin(count: int, ranks: Ranks) -> range:
    """This rank's rows of ``count``: r, r + W, r + 2W, ... (an order of the rows by class or
    difficulty then loads no rank more than another)."""
    return range(ranks.rank, count, ranks.world)


def _same_plan(saved: Any, plan: Any) -> bool:
    if isinstance(plan, torch.Tensor):
        return isinstance(saved, torch.Tensor) and torch.equal(saved, plan)
    return bool(saved == plan)


@dataclass(frozen=True)
class WorkUnits:
    """The finished units of one result, kept per rank in the result's folder.

    Attributes:
        stored: the result the units make (its folder holds the shard files).
        kind: the tag of the shard files (:mod:`nodeguard.constants`).
        plan: what the units are units of (the attacked indices, the settings): saved
            units are continued only under the same plan, never mixed into another.
    """

    stored: StoredResult
    kind: str
    plan: Any

    def path(self, ranks: Ranks | None = None) -> Path | None:
        """This rank's shard file (None for a model in memory: nothing is kept)."""
        return self.stored.path(shard_file(ranks or current_ranks()))

    def finished(self) -> dict[Any, Any]:
        """This rank's units saved by an earlier run of the same plan (empty when none).

        Raises:
            RegistryError: the shard file is damaged or of another kind.
        """
        path = self.path()
        if path is None or not path.is_file():
            return {}
        saved = load_tagged(path, expected_kind=self.kind)
        return dict(saved["units"]) if _same_plan(saved.get("plan", saved.get("indices")), self.plan) else {}

    def run(
        self,
        units: Sequence[UnitT],
        compute: Callable[[UnitT], ValueT],
        task: ProgressTask | None = None,
        status: Callable[[ValueT], dict[str, Any]] | None = None,
        finished: dict[Any, Any] | None = None,
    ) -> dict[UnitT, ValueT]:
        """Compute this rank's ``units`` that are not finished yet, saving after each one.

        Args:
            units: this rank's units, in the order they are computed.
            compute: a unit's value (tensors and plain values, saved as they are).
            task: a progress bar that counts the units (finished ones at once).
            status: told of each unit's value, finished earlier or now, in order; returns
                the fields the bar shows after it (a running success rate, say).
            finished: what :meth:`finished` gave, when the caller read it already.

        Returns:
            This rank's units and their values, in the order of ``units``.

        Raises:
            RegistryError: the shard file is damaged or of another kind.
            StorageError, OSError: the shard file cannot be written.
        """
        done = dict(finished) if finished is not None else self.finished()
        fields: dict[str, Any] = {}
        earlier = [unit for unit in units if unit in done]
        for unit in earlier:
            fields = status(done[unit]) if status is not None else {}
        if task is not None and earlier:
            task.advance(len(earlier), **fields)
        path = self.path()
        for unit in units:
            if unit in done:
                continue
            done[unit] = compute(unit)
            if path is not None:
                save_tagged(path, self.kind, {"plan": self.plan, "units": done})
            fields = status(done[unit]) if status is not None else {}
            if task is not None:
                task.advance(1, **fields)
        return {unit: done[unit] for unit in units}

    def gather(self, mine: dict[UnitT, ValueT]) -> dict[UnitT, ValueT]:
        """Every rank's units (``mine`` from each), on every rank; alone, ``mine``."""
        if not current_ranks().sharded:
            return dict(mine)
        return {unit: value for part in all_gather(mine) for unit, value in part.items()}

    def remove(self) -> None:
        """Once the result is saved: each rank removes its shard file, rank 0 those of
        earlier runs (with another number of ranks) too."""
        ranks = current_ranks()
        barrier()  # rank 0 has saved the result and every rank holds its copy
        path = self.path(ranks)
        if path is None or self.stored.folder is None:
            return
        path.unlink(missing_ok=True)
        if ranks.is_main and self.stored.folder.is_dir():
            for leftover in self.stored.folder.glob("shard-*-of-*.pt"):
                leftover.unlink(missing_ok=True)
