"""Tolerance randomization: vote over V solver tolerances drawn at random for each image.

For each image, V tolerances are drawn log-uniformly in [low, high]; the image is
classified once at each; v_agree is the number of votes of the most voted class; the
class is accepted iff v_agree > v_min, otherwise the image is rejected as possibly
adversarial (Carrara et al., ICPR 2021 workshops).

- The draws of an image depend only on the installation's secret key (a keyed hash,
  HMAC-SHA256, of its float32 values: :mod:`nodeguard.defense.keys`), or on a public seed
  when one is given, and on the image's pixels; never on its position or on the other
  images. The first k draws of V are the draws of k, so one pass with the largest V
  serves every smaller V.
- The downsampling runs once per image; the V·N (image, tolerance) pairs are solved
  together by the per-sample dopri5 of :mod:`nodeguard.models.solver`, so each pair steps as
  torchdiffeq would solve that image alone at that tolerance: votes do not depend on
  the batch or the batch size.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import torch

from nodeguard.checks import require_seed, require_tol_range
from nodeguard.defense.keys import installation_key, key_id, keyed_digest
from nodeguard.errors import setting_error
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.networks import ImageClassifier, require_solver
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import map_shares


@dataclass(frozen=True)
class ToleranceRange:
    """A range [low, high] of solver tolerances (rtol = atol of dopri5), drawn log-uniformly:
    the defense's (Carrara et al., ICPR 2021 workshops, [1e-5, 1e-1]) or an attacker's
    guess of it. Checked once, where it is made; trusted after.

    Attributes:
        low: the lower end, a tolerance (> 0, within the solver's floor and ceiling).
        high: the upper end (>= low).

    Raises:
        ConfigError: an end that is not a tolerance, or low > high (about ``tol_range``).
    """

    low: float = 1e-5
    high: float = 1e-1

    def __post_init__(self) -> None:
        low, high = require_tol_range("tol_range", self.low, self.high)
        object.__setattr__(self, "low", float(low))
        object.__setattr__(self, "high", float(high))

    def draw(self, uniform: torch.Tensor) -> torch.Tensor:
        """Uniform draws in [0, 1) mapped log-uniformly onto [low, high]."""
        return log_uniform(uniform, self.low, self.high)

    def as_list(self) -> list[float]:
        """``[low, high]``, as reports and JSON give it."""
        return [self.low, self.high]

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


DEFAULT_TOL_RANGE = ToleranceRange()


def as_tolerance_range(value: ToleranceRange | tuple[float, float] | list[float]) -> ToleranceRange:
    """A ``ToleranceRange`` as it is, or a (low, high) pair checked once, here.

    Raises:
        ConfigError: a pair that is not a range of tolerances (about ``tol_range``).
        TypeError: neither a range nor a pair.
    """
    if isinstance(value, ToleranceRange):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return ToleranceRange(value[0], value[1])
    raise TypeError(f"tol_range must be a ToleranceRange or a (low, high) pair, got {value!r}")


def check_vmin(vmin: int, votes: int) -> None:
    """Raise a ConfigError unless ``vmin`` is an operating point of V = ``votes``: [0, V - 1]."""
    if not 0 <= vmin < votes:
        raise setting_error("vmin", f"must be in [0, votes - 1] = [0, {votes - 1}], got {vmin}")


def log_uniform(uniform: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Uniform draws in [0, 1) mapped log-uniformly onto [low, high] (both tolerances)."""
    return 10 ** (math.log10(low) + uniform * (math.log10(high) - math.log10(low)))


@dataclass(frozen=True)
class DefenseSettings:
    """The defense's operating point (Carrara et al., ICPR 2021 workshops).

    Attributes:
        votes: V, tolerances drawn per image (>= 1).
        vmin: v_min; an image is accepted iff v_agree > v_min, so in [0, V - 1].
        tol_range: the log-uniform range of the drawn tolerances (rtol = atol of dopri5).
        seed: None (the default): secret draws, keyed by the installation's key; an
            integer: public, reproducible draws that anyone can recompute (research runs).
        batch_size: (image, tolerance) pairs solved together (does not change the votes).

    Raises:
        ConfigError: a value out of range.
    """

    votes: int = 15
    vmin: int = 12
    tol_range: ToleranceRange = DEFAULT_TOL_RANGE
    seed: int | None = None
    batch_size: int = 512  # (image, tolerance) pairs solved together

    def __post_init__(self) -> None:
        if self.votes < 1:
            raise setting_error("votes", f"must be at least 1, got {self.votes}")
        check_vmin(self.vmin, self.votes)
        object.__setattr__(self, "tol_range", as_tolerance_range(self.tol_range))
        if self.batch_size < 1:
            raise setting_error("batch_size", f"must be at least 1, got {self.batch_size}")
        require_seed("seed", self.seed)

    def draws_label(self, key: bytes | None = None) -> str:
        """Which draws these settings make, for reports: a public seed, or a secret key (by its id)."""
        if self.seed is not None:
            return f"public seed {self.seed}"
        return "secret key" if key is None else f"secret key {key_id(key)}"

    def draws_identity(self, key: bytes | None) -> int | str:
        """What the draws depend on besides the image, for result keys: the seed, or the key's id."""
        if self.seed is not None:
            return self.seed
        if key is None:
            raise ValueError("secret draws need the installation key")
        return f"key:{key_id(key)}"


@dataclass
class Votes:
    """The votes of N images: predictions (N, V), tolerances (N, V), and the verdicts.

    Attributes:
        predictions: (N, V) int64, the class of image n solved alone at tolerances[n, v].
        tolerances: (N, V) float64, the drawn tolerances (rtol = atol).
        num_classes: number of classes.
        logits: (N, V, classes) float32 logits of each vote, or None where they were not
            kept (votes stored by nodeguard before 0.8.0); the margin-spread diagnostic
            (:mod:`nodeguard.defense.spread`) reads them.
        vmin: the operating point v_min of the defense that drew them (an image is
            accepted iff v_agree > vmin); None where the votes were built without one. The
            ROC, which sweeps every v_min, and ``security``, which chooses v_min from the
            pristine votes, draw with a placeholder v_min of 0 and read the votes at their
            own point (:meth:`at`).

    Every method takes ``votes``: use only the first that many draws (None or 0: all V);
    the first k of V draws are the draws of k.
    """

    predictions: torch.Tensor
    tolerances: torch.Tensor
    num_classes: int
    logits: torch.Tensor | None = None
    vmin: int | None = None

    def counts(self, votes: int | None = None) -> torch.Tensor:
        """(N, classes) int64 vote counts over the first ``votes`` draws (all by default)."""
        if votes is not None and not 1 <= votes <= self.predictions.shape[1]:
            raise setting_error("votes", f"must be in 1..{self.predictions.shape[1]}, got {votes}")
        used = self.predictions[:, : self.predictions.shape[1] if votes is None else votes]
        return torch.nn.functional.one_hot(used, self.num_classes).sum(1)

    def prediction(self, votes: int | None = None) -> torch.Tensor:
        """(N,) int64 most voted class (ties go to the smaller class index)."""
        return self.counts(votes).argmax(1)

    def v_agree(self, votes: int | None = None) -> torch.Tensor:
        """(N,) int64 votes of the most voted class: the defense's score of each image."""
        return self.counts(votes).max(1).values

    def at(self, vmin: int) -> Votes:
        """The same votes at operating point ``vmin``.

        Raises:
            ConfigError: ``vmin`` not in [0, V - 1].
        """
        check_vmin(vmin, self.predictions.shape[1])
        return replace(self, vmin=vmin)

    def accepted(self, vmin: int | None = None, votes: int | None = None) -> torch.Tensor:
        """(N,) bool: v_agree > v_min (accepted with :meth:`prediction`), else rejected as
        possibly adversarial; v_min is ``vmin`` where given, else the votes' own.

        Raises:
            ValueError: no ``vmin`` given and the votes carry none.
        """
        threshold = self.vmin if vmin is None else vmin
        if threshold is None:
            raise ValueError("these votes have no operating point: give vmin, or take them .at(vmin)")
        return self.v_agree(votes) > threshold


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A 63-bit seed from the defense seed and the image's 8-bit pixels."""
    levels = (image.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
    digest = hashlib.sha256(f"{seed}:{tuple(levels.shape)}:".encode() + levels.numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def keyed_image_seed(key: bytes, image: torch.Tensor) -> int:
    """A 63-bit seed from the installation's secret key and the image's exact float32 values
    (HMAC-SHA256): every image the model can tell apart gets draws of its own, so knowing
    one image's tolerances tells nothing about those of any other (a float image one step
    away included)."""
    values = image.detach().to(torch.float32).contiguous().cpu()
    digest = keyed_digest(key, f"{tuple(values.shape)}:".encode() + values.numpy().tobytes())
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def draw_tolerances(
    images: torch.Tensor, votes: int, tol_range: ToleranceRange, seed: int | None, key: bytes | None = None
) -> torch.Tensor:
    """(N, votes) tolerances, log-uniform in ``tol_range``, reproducible per image.

    The tolerance randomization of Carrara et al. (ICPR 2021 workshops). Image n's draws
    come from a generator seeded by an HMAC-SHA256 of its exact float32 values under the
    secret ``key`` (``seed`` None), or by a SHA-256 of the public ``seed`` and its 8-bit
    levels (the draws of nodeguard before 0.5.0),
    so they do not depend on its position or on the other images, and the first k of V
    draws are the draws of k.

    Args:
        images: (N, C, H, W) float in [0, 1] (rounded to 8-bit levels for the seed only).
        votes: draws per image, V.
        tol_range: the range [low, high] of the draws.
        seed: a public seed, or None for secret draws under ``key``.
        key: the installation's key (:func:`nodeguard.defense.keys.installation_key`);
            None with ``seed`` None means the key of the cache root.

    Returns:
        (N, votes) float64 tolerances (rtol = atol) on the CPU.
    """
    if seed is None and key is None:
        key = installation_key()
    rows = []
    for image in images:
        per_image = image_seed(seed, image) if seed is not None else keyed_image_seed(key or b"", image)
        generator = torch.Generator().manual_seed(per_image)
        uniform = torch.rand(votes, generator=generator, dtype=torch.float64)
        rows.append(tol_range.draw(uniform))
    return torch.stack(rows) if rows else torch.empty(0, votes, dtype=torch.float64)


class ToleranceRandomization:
    """The defense around an ODE-Net: ``vote(images)`` gives the votes and verdicts.

    Tolerance randomization (Carrara, Caldelli, Falchi, Amato, ICPR 2021 workshops): each
    image is classified alone at V tolerances drawn log-uniformly in [tol_low, tol_high]
    and accepted only when more than v_min of the votes agree.

    Args:
        model: an ODE model (``has_solver``), solved per sample with dopri5.
        settings: V, v_min, range, seed and batch size; None means ``DefenseSettings()``.
        key: the secret key of the draws when ``settings.seed`` is None; None means the
            key of the cache root (:func:`nodeguard.defense.keys.installation_key`).

    Raises:
        ConfigError: the model has no solver tolerance.
    """

    def __init__(self, model: ImageClassifier, settings: DefenseSettings | None = None, key: bytes | None = None):
        require_solver(model, "tolerance randomization")
        self.model = model
        self.settings = settings or DefenseSettings()
        # secret draws: the key given, else the cache root's (made on first use)
        self.key = None if self.settings.seed is not None else (key or installation_key())

    @property
    def num_classes(self) -> int:
        """Number of classes of the model."""
        return self.model.num_classes

    def vote(self, images: torch.Tensor, votes: int | None = None, progress: Progress = SILENT) -> Votes:
        """Votes of float images (N, C, H, W) in [0, 1].

        Args:
            images: (N, C, H, W) float32 in [0, 1].
            votes: draws per image; None (or 0) means ``settings.votes``.
            progress: receives one task advanced per batch of pairs.

        Returns:
            ``Votes`` with (N, V) predictions and tolerances at the settings' operating
            point: ``Votes.accepted()`` gives the verdicts.

        Raises:
            ConfigError: the model's solver method is not dopri5.
        """
        s = self.settings
        votes = s.votes if votes is None else votes
        if votes < 1:
            raise setting_error("votes", f"must be at least 1, got {votes}")
        tolerances = draw_tolerances(images, votes, s.tol_range, s.seed, self.key)
        logits = classify_alone(self.model, images, tolerances, batch_size=s.batch_size, progress=progress).logits
        return Votes(logits.argmax(2), tolerances, self.num_classes, logits, s.vmin)


def vote_in_shares(defense: ToleranceRandomization, images: torch.Tensor, progress: Progress = SILENT) -> Votes:
    """``defense.vote(images)``; in a sharded job each rank votes on its own contiguous
    share and every rank gets all the votes, in order.

    An image's tolerances are drawn from its own pixels and each (image, tolerance) pair
    is solved on its own steps, so the votes do not depend on how the images are split.
    """

    def vote(rows: range) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        votes = defense.vote(images[rows.start : rows.stop], progress=progress)
        assert votes.logits is not None
        return votes.predictions, votes.tolerances, votes.logits

    predictions, tolerances, logits = map_shares(len(images), vote)
    return Votes(predictions, tolerances, defense.num_classes, logits, defense.settings.vmin)
