"""Certified accuracy of a model under randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019).

The first ``count`` test images (all of them, correctly classified or not, as in the
paper) are certified one by one with CERTIFY (:mod:`nodeguard.defense.smoothing`); the
certified accuracy at radius r is the share of them whose smoothed class is the true
class with a certified radius of at least r (an abstention counts as wrong), reported
with its 95% Clopper–Pearson interval over the images. With ``predict`` the images are
also classified by PREDICT (the smoothed classifier's accuracy and abstention rate).

Results are kept in the model's result store under all of their settings; an
interrupted run continues after its last certified image; under torchrun the ranks
certify the images round-robin.
"""

from __future__ import annotations

import time
import typing
from dataclasses import asdict, dataclass, replace
from typing import Any

from nodeguard.checks import require_non_negative
from nodeguard.constants import CERTIFY_KIND, CERTIFY_SHARD_KIND
from nodeguard.defense.smoothing import ABSTAIN, CertifiedPoint, SmoothingSettings, certified_point, certify, predict
from nodeguard.errors import ConfigError, setting_error
from nodeguard.intervals import Rate
from nodeguard.models.loading import LoadedModel, load_model
from nodeguard.pipeline.remember import remember_json
from nodeguard.pipeline.units import WorkUnits, round_robin
from nodeguard.plain import from_plain, to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import current_ranks
from nodeguard.storage.files import read_json
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import StoredResult

CERTIFY_VERSION = 1  # bump when the algorithm's results change
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


@dataclass
class CertifySettings:
    """What ``nodeguard certify`` computes (see the module docstring).

    Attributes:
        sigma: noise standard deviation (pixels in [0, 1], > 0).
        count: the first this many test images are certified (>= 1).
        n0: CERTIFY's selection samples.
        n: CERTIFY's (and PREDICT's) estimation samples.
        alpha: probability of a wrong certificate, in (0, 1).
        seed: seeds the noise (with each image's pixels).
        batch_size: noisy samples classified together (does not change the results).
        radii: L2 radii (>= 0) of the certified-accuracy table.
        predict: also run PREDICT on every image.

    Raises:
        ConfigError: a value out of range.
    """

    sigma: float
    count: int = 100
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    seed: int = 0
    batch_size: int = 500
    radii: tuple[float, ...] = DEFAULT_RADII
    predict: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise setting_error("count", f"must be at least 1, got {self.count}")
        self.radii = tuple(sorted(require_non_negative("radii", radius) for radius in self.radii))
        if not self.radii:
            raise setting_error("radii", "takes non-negative L2 radii, like 0.25,0.5,1")
        self.smoothing  # noqa: B018  (checks sigma, n0, n, alpha, seed, batch size)

    @property
    def smoothing(self) -> SmoothingSettings:
        return SmoothingSettings(self.sigma, self.n0, self.n, self.alpha, self.seed, self.batch_size)

    def identity(self) -> dict[str, Any]:
        """What the stored certificates are keyed by. Not the count: an image's certificate
        depends only on its pixels and these settings, so a larger request continues the
        stored one and a smaller one reads its first images. Not the radii, nor the batch size."""
        values = asdict(self)
        del values["radii"], values["batch_size"], values["count"]
        return {**values, "version": CERTIFY_VERSION}


def stored_certify_report(model: str, tol: float | None, saved: dict[str, Any]) -> CertifyReport:
    """The report of certificates read from the store (``{"settings": identity, "values":
    {"records", "seconds"}}``), its curve at the default radii.

    Raises:
        KeyError, TypeError: not a certificates file of this version.
    """
    if saved["settings"].get("version") != CERTIFY_VERSION:
        raise KeyError("version")
    identity = {key: value for key, value in saved["settings"].items() if key != "version"}
    records = read_certificates(saved["values"]["records"])
    settings = CertifySettings(**identity, count=max(len(records), 1))
    report = CertifyReport(**{**certify_values(model, tol, settings, records, saved["values"]["seconds"])})
    report.curve = [report.accuracy_at(radius) for radius in DEFAULT_RADII]
    return report


@dataclass
class CertifiedImage:
    """One test image's certificate, as the result store keeps it (Cohen et al. 2019).

    Attributes:
        label: its true class.
        prediction: CERTIFY's class, or -1 (``ABSTAIN``).
        radius: the certified L2 radius (pixels in [0, 1]; 0 on abstention).
        p_lower: the lower confidence bound on p_A.
        smoothed: PREDICT's class (-1: abstained), where it was asked for; else None.
    """

    label: int
    prediction: int
    radius: float
    p_lower: float
    smoothed: int | None = None


def read_certificates(records: list[dict[str, Any]]) -> list[CertifiedImage]:
    """The stored records as values."""
    return [from_plain(CertifiedImage, record) for record in records]


@dataclass
class CertifyReport:
    """``nodeguard certify``'s answer.

    Attributes:
        model: the model's name.
        sigma, n0, n, alpha, seed: the smoothing settings.
        tol: the solver tolerance each noisy sample was classified at (None: no solver).
        count: images certified.
        labels, predictions, radii, p_lower: per image (prediction -1: abstained; radius
            0 on abstention; L2 over pixels in [0, 1]).
        abstained: images CERTIFY abstained on, of the images (a :class:`~nodeguard.intervals.Rate`).
        curve: certified accuracy at each radius of the settings.
        max_radius: the largest radius n samples at alpha can certify.
        predict_accuracy, predict_abstained: PREDICT's, when asked for (else None).
        seconds: time spent certifying (and predicting), summed over runs.
    """

    model: str
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    tol: float | None
    count: int
    labels: list[int]
    predictions: list[int]
    radii: list[float]
    p_lower: list[float]
    abstained: Rate
    curve: list[CertifiedPoint]
    max_radius: float
    predict_accuracy: Rate | None = None
    predict_abstained: Rate | None = None
    seconds: float = 0.0
    reused: bool = False
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CertifyReport:
        """The report from its :meth:`to_dict`."""
        return from_plain(cls, values)

    def accuracy_at(self, radius: float) -> CertifiedPoint:
        """The certified accuracy at any radius (>= 0), from the per-image certificates."""
        return certified_point(self.labels, self.predictions, self.radii, radius)

    def subset(self, indices: list[int], radii: tuple[float, ...]) -> CertifyReport:
        """The report over the test images at ``indices`` only (each < ``count``), its curve at ``radii``.

        Raises:
            ValueError: an index outside the certified images.
        """
        if any(not 0 <= index < self.count for index in indices):
            raise ValueError(f"indices must lie in [0, {self.count}), the certified images")

        def pick(values: list[Any]) -> list[Any]:
            return [values[index] for index in indices]

        predictions = pick(self.predictions)
        abstained = sum(1 for prediction in predictions if prediction == ABSTAIN)
        chosen = replace(
            self,
            count=len(indices),
            labels=pick(self.labels),
            predictions=predictions,
            radii=pick(self.radii),
            p_lower=pick(self.p_lower),
            abstained=Rate.of(abstained, len(indices)),
            curve=[],
            predict_accuracy=None,
            predict_abstained=None,
        )
        chosen.curve = [chosen.accuracy_at(radius) for radius in radii]
        return chosen


def _report(
    loaded: LoadedModel, settings: CertifySettings, records: list[CertifiedImage], seconds: float
) -> dict[str, Any]:
    tol = float(getattr(loaded.model, "tol", 0.0)) if loaded.model.has_solver else None
    return certify_values(loaded.name, tol, settings, records, seconds)


def certify_values(
    model: str, tol: float | None, settings: CertifySettings, records: list[CertifiedImage], seconds: float
) -> dict[str, Any]:
    """A ``CertifyReport``'s fields (its curve left empty) from stored per-image certificates.

    Args:
        model: the model's name.
        tol: the solver tolerance the noisy samples were classified at (None: no solver).
        settings: the smoothing settings that made the certificates.
        records: per image its certificate, in test-split order.
        seconds: time spent certifying.
    """
    labels = [record.label for record in records]
    predictions = [record.prediction for record in records]
    radii = [record.radius for record in records]
    count = len(records)
    abstained = sum(1 for prediction in predictions if prediction == ABSTAIN)
    values: dict[str, Any] = {
        "model": model,
        "sigma": settings.sigma,
        "n0": settings.n0,
        "n": settings.n,
        "alpha": settings.alpha,
        "seed": settings.seed,
        "tol": tol,
        "count": count,
        "labels": labels,
        "predictions": predictions,
        "radii": radii,
        "p_lower": [record.p_lower for record in records],
        "abstained": Rate.of(abstained, count),
        "curve": [],
        "max_radius": settings.smoothing.max_radius,
        "seconds": seconds,
    }
    if settings.predict:
        right = sum(1 for record in records if record.smoothed == record.label)
        held = sum(1 for record in records if record.smoothed == ABSTAIN)
        values.update(
            predict_accuracy=Rate.of(right, count),
            predict_abstained=Rate.of(held, count),
        )
    return values


def compute_certificates(
    settings: CertifySettings,
    loaded: LoadedModel,
    stored: StoredResult,
    data_dir: str | None,
    progress: Progress,
    done: tuple[list[CertifiedImage], float] = ([], 0.0),
) -> dict[str, Any]:
    """Certify the first ``count`` test images after the ``done`` records (and their
    seconds), each image a resumable work unit (:class:`nodeguard.pipeline.units.WorkUnits`):
    saved as soon as it is certified, so that a rerun continues; in a sharded job the
    ranks certify the images round-robin.

    Returns:
        What the store keeps: ``records``, one plain ``CertifiedImage`` per image, and
        ``seconds`` spent certifying in all.

    Raises:
        SolverError: the per-sample solver cannot classify a noisy copy.
        RegistryError: a shard file of an earlier run is damaged.
    """
    split = loaded.split("test", data_dir)
    count = min(settings.count, len(split))
    smoothing = settings.smoothing
    records, seconds = list(done[0]), done[1]
    legacy = _legacy_partial(stored, settings)  # the progress file of nodeguard 0.8.0
    if legacy is not None and len(legacy[0]) > len(records):
        records, seconds = legacy
    work = WorkUnits(stored, CERTIFY_SHARD_KIND, settings.identity())
    units = [index for index in round_robin(count, current_ranks()) if index >= len(records)]
    saved = work.finished()
    if records or saved:
        progress.log(f"continuing after {len(records) + sum(1 for unit in units if unit in saved)} certified images")
    task = progress.task(f"certify sigma={settings.sigma:g}", len(units))
    tally = {"right": sum(1 for r in records if r.prediction == r.label), "certified": len(records)}

    def certify_image(index: int) -> dict[str, Any]:
        started = time.perf_counter()
        image = split.float_images(slice(index, index + 1))[0]
        certificate = certify(loaded.model, image, smoothing)
        smoothed = predict(loaded.model, image, smoothing) if settings.predict else None
        record = CertifiedImage(
            int(split.labels[index]), certificate.prediction, certificate.radius, certificate.p_lower, smoothed
        )
        return {**to_plain(record), "seconds": time.perf_counter() - started}  # a unit's file: plain

    def certified_so_far(record: dict[str, Any]) -> dict[str, Any]:
        tally["right"] += int(record["prediction"] == record["label"])
        tally["certified"] += 1
        return {"certified": tally["right"] / tally["certified"]}

    mine = work.run(units, certify_image, task, certified_so_far, finished=saved)
    task.close()
    every_image = work.gather(mine)
    missing = [index for index in range(len(records), count) if index not in every_image]
    if missing:
        raise ConfigError(f"the shards of certificates {stored.key} lack {len(missing)} of the images asked for")
    for index in range(len(records), count):
        record = dict(every_image[index])
        seconds += float(record.pop("seconds"))
        records.append(from_plain(CertifiedImage, record))
    return {"records": to_plain(records), "seconds": seconds}


LEGACY_PARTIAL_FILE = "partial.json"  # nodeguard 0.8.0 kept an interrupted run's certificates here


def _legacy_partial(stored: StoredResult, settings: CertifySettings) -> tuple[list[CertifiedImage], float] | None:
    """The records and seconds an interrupted run of nodeguard 0.8.0 left, when made with these settings."""
    path = stored.path(LEGACY_PARTIAL_FILE)
    saved = read_json(path, default=None) if path is not None else None
    if not isinstance(saved, dict) or saved.get("identity") != settings.identity():
        return None
    return read_certificates(saved["records"]), float(saved["seconds"])


def run_certify(
    settings: CertifySettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    progress: Progress = SILENT,
) -> CertifyReport:
    """Certified accuracy against the L2 radius of a model smoothed with Gaussian noise.

    Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): each of the first
    ``count`` test images is certified by CERTIFY, with the model as base classifier
    (each noisy copy classified alone by the per-sample solver at the model's own
    tolerance, tau_train). Kept in the model's result store; a rerun reuses it.

    Args:
        settings: sigma, n0, n, alpha, seed, images, radii, PREDICT.
        model: a registered model (ODE-Net or ResNet); None means the latest trained one.
        registry: None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        data_dir: where a data set that is not bundled lives.
        progress: receives log lines and progress.

    Returns:
        A ``CertifyReport`` with per-image certificates and the certified accuracy (with
        its interval) at each radius.

    Raises:
        ConfigError: a bad ``device``.
        ModelNotFoundError: ``model`` is not registered.
        RegistryError: the same certificates are being computed by another process, or
            the model is unfinished or damaged.
        DataUnavailableError: the data set is not on disk and cannot be downloaded.
    """
    loaded = load_model(model, registry=registry, device=device)
    stored = loaded.results().result(CERTIFY_KIND, settings.identity(), f"certify-s{settings.sigma:g}")
    count = min(settings.count, len(loaded.split("test", data_dir)))

    def certify_the_rest() -> dict[str, Any]:
        saved = stored.load_json()  # a smaller request's certificates: continued, not redone
        done = (read_certificates(saved["records"]), float(saved["seconds"])) if saved is not None else ([], 0.0)
        return compute_certificates(settings, loaded, stored, data_dir, progress, done)

    values, reused = remember_json(stored, certify_the_rest, complete=lambda saved: len(saved["records"]) >= count)
    if reused:
        progress.log("certificates found in the cache; nothing to compute")
    else:
        WorkUnits(stored, CERTIFY_SHARD_KIND, None).remove()
        legacy = stored.path(LEGACY_PARTIAL_FILE)
        if legacy is not None and current_ranks().is_main:
            legacy.unlink(missing_ok=True)
    report_values = _report(loaded, settings, read_certificates(values["records"][:count]), values["seconds"])
    report = CertifyReport(**report_values, reused=reused)
    report.curve = [report.accuracy_at(radius) for radius in settings.radii]
    return report
