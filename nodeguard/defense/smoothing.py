"""Randomized smoothing: a classifier with a certified L2 radius (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), where f is
the base classifier (here an image classified alone by the per-sample solver at the
model's own tolerance, tau_train). If the top class has probability p_A >= 1/2, g gives
that class to every input within L2 distance sigma * Phi^-1(p_A) of x (Theorem 1, with
p_B = 1 - p_A). p_A is estimated by Monte Carlo:

- CERTIFY: n0 noisy copies choose the top class c_A; n further copies count how often f
  returns c_A; the one-sided Clopper–Pearson lower bound p_A_low at level alpha gives
  the radius sigma * Phi^-1(p_A_low), or an abstention when p_A_low < 1/2. With
  probability at least 1 - alpha, a returned class and radius are right about g.
- PREDICT: n copies; the top two counts n_A, n_B; g's class is returned only when a
  two-sided binomial test of n_A against n_A + n_B at p = 1/2 rejects at alpha
  (otherwise abstain), so a returned class differs from g's with probability <= alpha.

Noise is drawn in pixel units (images in [0, 1]) and not clipped, as in the paper. The
draws of an image come from a generator seeded by the seed and the image's pixels, so an
image's result does not depend on its position or on the other images. With n samples
at level alpha the largest certifiable radius is sigma * Phi^-1(alpha^(1/n)) (all n
samples agree): 2.46 sigma at n = 1000, alpha = 0.001 (Cohen et al. used n = 100,000:
3.8 sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodeguard.checks import require_range, require_seed
from nodeguard.defense.randomization import image_seed
from nodeguard.errors import setting_error
from nodeguard.intervals import Rate, lower_confidence_bound
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.networks import ImageClassifier

ABSTAIN = -1
NOISE_CHUNK = 1000  # noisy copies drawn at a time (the draws do not depend on the batch size)


@dataclass(frozen=True)
class SmoothingSettings:
    """Randomized smoothing's parameters (Cohen et al. 2019, Algorithms CERTIFY and PREDICT).

    Attributes:
        sigma: standard deviation of the Gaussian noise, pixels in [0, 1] (> 0).
        n0: noisy samples that select the top class in CERTIFY (>= 1).
        n: noisy samples that estimate its probability (>= 1).
        alpha: probability that a certificate (or PREDICT's class) is wrong, in (0, 1).
        seed: seeds the noise together with each image's pixels (>= 0).
        batch_size: noisy samples classified together (does not change the results).

    Raises:
        ConfigError: a value out of range.
    """

    sigma: float
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    seed: int = 0
    batch_size: int = 500

    def __post_init__(self) -> None:
        require_range("sigma", self.sigma, 0.0, float("inf"), low_open=True, high_open=True)
        require_range("alpha", self.alpha, 0.0, 1.0, low_open=True, high_open=True)
        for name in ("n0", "n", "batch_size"):
            if getattr(self, name) < 1:
                raise setting_error(name, f"must be at least 1, got {getattr(self, name)}")
        require_seed("seed", self.seed)

    @property
    def max_radius(self) -> float:
        """The largest radius CERTIFY can give: every one of the n samples agrees."""
        return radius(self.sigma, self.alpha ** (1.0 / self.n))


def radius(sigma: float, p_lower: float) -> float:
    """Certified L2 radius sigma * Phi^-1(p_lower) (Cohen et al. 2019, Theorem 1 with p_B = 1 - p_A)."""
    from scipy.stats import norm  # here: SciPy loads on first use

    return float(sigma * norm.ppf(p_lower))


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one image.

    Attributes:
        prediction: the smoothed classifier's class, or ``ABSTAIN`` (-1).
        radius: certified L2 radius (pixels in [0, 1]); 0.0 on abstention.
        p_lower: the lower confidence bound on p_A.
        count: how many of the n estimation samples the base classifier gave ``top``.
        top: the class chosen by the n0 selection samples.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    top: int


def noise_counts(
    model: ImageClassifier,
    image: torch.Tensor,
    sigma: float,
    samples: int,
    generator: torch.Generator,
    batch_size: int,
    num_classes: int,
) -> torch.Tensor:
    """How often the base classifier gives each class on ``samples`` noisy copies of ``image``.

    Args:
        model: the base classifier; each copy is classified alone at its own tolerance.
        image: (C, H, W) float32 in [0, 1].
        sigma: noise standard deviation (pixels).
        samples: noisy copies.
        generator: the CPU generator the noise is drawn from (advanced by the draws).
        batch_size: copies classified together.
        num_classes: length of the result.

    Returns:
        (num_classes,) int64 counts summing to ``samples``.

    Raises:
        SolverError: the per-sample solver cannot classify a copy at its tolerance.
    """
    counts = torch.zeros(num_classes, dtype=torch.long)
    remaining = samples
    while remaining > 0:
        # the noise is drawn in chunks of a fixed size, whatever the batch size: torch
        # draws normals differently for short and long requests
        size = min(NOISE_CHUNK, remaining)
        noise = torch.randn((size, *image.shape), generator=generator) * sigma
        predictions = classify_alone(model, image.unsqueeze(0) + noise, batch_size=batch_size).predictions
        counts += torch.bincount(predictions, minlength=num_classes)
        remaining -= size
    return counts


def _generator(settings: SmoothingSettings, image: torch.Tensor, salt: int) -> torch.Generator:
    """CERTIFY's (salt 0) and PREDICT's (salt 1) noise: disjoint streams for every seed."""
    return torch.Generator().manual_seed(image_seed(2 * settings.seed + salt, image.cpu()))


def certify(model: ImageClassifier, image: torch.Tensor, settings: SmoothingSettings) -> Certificate:
    """CERTIFY (Cohen et al. 2019, Algorithm "certify") for one image.

    Args:
        model: the base classifier.
        image: (C, H, W) float32 in [0, 1].
        settings: sigma, n0, n, alpha, seed, batch size.

    Returns:
        A ``Certificate``: class and radius, or ``ABSTAIN`` with radius 0 when p_A's lower
        bound is below 1/2.

    Raises:
        SolverError: the per-sample solver cannot classify a noisy copy at its tolerance.
    """
    generator = _generator(settings, image, 0)
    num_classes = model.num_classes
    selection = noise_counts(model, image, settings.sigma, settings.n0, generator, settings.batch_size, num_classes)
    top = int(selection.argmax())
    estimation = noise_counts(model, image, settings.sigma, settings.n, generator, settings.batch_size, num_classes)
    count = int(estimation[top])
    p_lower = lower_confidence_bound(count, settings.n, settings.alpha)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, p_lower, count, top)
    return Certificate(top, radius(settings.sigma, p_lower), p_lower, count, top)


def predict(model: ImageClassifier, image: torch.Tensor, settings: SmoothingSettings) -> int:
    """PREDICT (Cohen et al. 2019, Algorithm "predict") for one image.

    Args:
        model: the base classifier.
        image: (C, H, W) float32 in [0, 1].
        settings: sigma, n (the samples), alpha, seed, batch size (n0 is not used).

    Returns:
        The smoothed classifier's class, or ``ABSTAIN`` (-1) when the top two counts are
        not told apart by a two-sided binomial test at level alpha.

    Raises:
        SolverError: the per-sample solver cannot classify a noisy copy at its tolerance.
    """
    from scipy.stats import binomtest  # here: SciPy loads on first use

    generator = _generator(settings, image, 1)
    counts = noise_counts(model, image, settings.sigma, settings.n, generator, settings.batch_size, model.num_classes)
    top_two = counts.topk(2)
    n_a, n_b = int(top_two.values[0]), int(top_two.values[1])
    if binomtest(n_a, n_a + n_b, 0.5).pvalue <= settings.alpha:
        return int(top_two.indices[0])
    return ABSTAIN


@dataclass
class CertifiedPoint:
    """Certified accuracy at one L2 radius (pixels in [0, 1]): the images certified with
    their true class at that radius or more, of the images (a :class:`~nodeguard.intervals.Rate`)."""

    radius: float
    certified_accuracy: Rate


def certified_point(labels: list[int], predictions: list[int], radii: list[float], radius: float) -> CertifiedPoint:
    """The share of images certified with their true class at ``radius`` or more, and its interval."""
    certified = sum(
        1
        for label, prediction, r in zip(labels, predictions, radii, strict=True)
        if prediction == label and r >= radius
    )
    return CertifiedPoint(radius, Rate.of(certified, len(labels)))
