"""The defend stage: tolerance randomization over image files and folders."""

from __future__ import annotations

import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeguard.defense.randomization import DefenseSettings, ToleranceRandomization, vote_in_shares
from nodeguard.defense.votes import defense_key
from nodeguard.intervals import Rate
from nodeguard.models.loading import load_model
from nodeguard.plain import to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.storage.files import display_path
from nodeguard.storage.images import SkippedFile, find_images, load_image_files
from nodeguard.storage.registry import Registry


@dataclass
class ImageVerdict:
    """The defense's verdict on one image file (tolerance randomization, Carrara et al.,
    ICPR 2021 workshops).

    Attributes:
        path: the file, as shown to the user.
        prediction: the most voted class.
        votes: the class of each of the V votes.
        v_agree: the votes of the most voted class, in 1..V.
        accepted: v_agree > v_min.
        tols: the V tolerances drawn for it (rtol = atol).
    """

    path: str
    prediction: int
    votes: list[int]
    v_agree: int
    accepted: bool
    tols: list[float]


@dataclass
class UnreadableFile:
    """A file the defense could not read as an image of the model's shape, and why."""

    path: str
    error: str


@dataclass
class DefendReport:
    """The verdicts of ``defend_paths``.

    ``accepted`` and ``rejected`` count the images voted on (``len(images)``);
    ``accepted_rate`` and ``rejected_rate`` are the same as shares of them, each a
    :class:`~nodeguard.intervals.Rate` with its 95% Clopper-Pearson interval (of no image
    when none was voted on: value and interval None).
    """

    model: str
    votes: int
    vmin: int
    tol_range: list[float]
    seed: int | None
    draws: str
    images: list[ImageVerdict] = field(default_factory=list)
    errors: list[UnreadableFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    unreadable: int = 0
    seconds: float = 0.0
    accepted_rate: Rate = field(default_factory=lambda: Rate.of(0, 0))
    rejected_rate: Rate = field(default_factory=lambda: Rate.of(0, 0))

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))


def defend_paths(
    paths: Sequence[str | Path],
    settings: DefenseSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    resize: bool = False,
    progress: Progress = SILENT,
) -> DefendReport:
    """Vote on every image under ``paths``; unreadable files are reported, not fatal.

    Tolerance randomization (Carrara et al., ICPR 2021 workshops) on image files.

    Args:
        paths: image files and folders (walked recursively, following symbolic links,
            hidden names skipped; every file Pillow identifies is read: see
            :mod:`nodeguard.storage.images` for how each mode and frame is read).
        settings: the defense's V, v_min, tolerance range and seed.
        model: a registered ODE model; None means the most recently trained one.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        resize: resize images of another size to the model's (bilinear, antialiased);
            without it they are reported as errors.
        progress: receives log lines and voting progress.

    Returns:
        A ``DefendReport``: per image (per page or animation frame of a file with
        several) its name, prediction, votes, v_agree, verdict and tolerances; the files
        refused or unreadable (errors: a damaged file, a broken link, no permission, too
        many pixels, another size) and the entries of a folder left out (skipped: files
        that are not images, hidden names, links that would loop), each with the reason;
        counts of accepted, rejected and unreadable; the accepted and rejected shares of
        the images voted on, with their 95% intervals; seconds. Nothing is written.

    Raises:
        ImageReadError: a path does not exist (or is a broken link), or nothing was found.
        ModelNotFoundError: ``model`` is not registered (or None and none is ready).
        RegistryError: the model is unfinished or its files are damaged; or secret draws
            were asked for and the registry's defense key cannot be read or made (a
            registry shared read-only: public draws, ``seed``, need no key).
        ConfigError: the model has no solver or is not dopri5, a bad ``device``, or
            malformed ``RANK``/``WORLD_SIZE``.
    """
    started = time.perf_counter()
    found = find_images([Path(p) for p in paths])
    loaded = load_model(model, registry=registry, device=device)
    key = defense_key(loaded, settings)
    defense = ToleranceRandomization(loaded.model, settings, key)
    channels, height, width = loaded.input_shape
    good, images, errors = load_image_files(found.files, channels, height, width, resize)
    errors = [(display_path(path), reason) for path, reason in found.unreadable] + errors
    report = DefendReport(
        model=loaded.name,
        votes=settings.votes,
        vmin=settings.vmin,
        tol_range=settings.tol_range.as_list(),
        seed=settings.seed,
        draws=settings.draws_label(key),
        errors=[UnreadableFile(name, reason) for name, reason in errors],
        skipped=[SkippedFile(display_path(path), reason) for path, reason in found.skipped],
        unreadable=len(errors),
    )
    if len(good):
        progress.log(f"voting on {len(good)} images with {settings.votes} tolerances each")
        votes = vote_in_shares(defense, images, progress=progress)
        predictions, v_agree = votes.prediction(), votes.v_agree()
        accepted = votes.accepted()
        for position, path in enumerate(good):
            report.images.append(
                ImageVerdict(
                    path=path,
                    prediction=int(predictions[position]),
                    votes=votes.predictions[position].tolist(),
                    v_agree=int(v_agree[position]),
                    accepted=bool(accepted[position]),
                    tols=votes.tolerances[position].tolist(),
                )
            )
        report.accepted = int(accepted.sum())
        report.rejected = len(good) - report.accepted
        report.accepted_rate = Rate.of(report.accepted, len(good))
        report.rejected_rate = Rate.of(report.rejected, len(good))
    report.seconds = time.perf_counter() - started
    return report
