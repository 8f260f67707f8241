"""Randomized smoothing (Cohen et al. 2019) on models whose answer is known by construction,
the certify stage and command, and training with Gaussian noise."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import check_rate
from scipy.stats import binom, norm
from torch import nn
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.data.datasets import load_dataset
from nodeguard.defense.smoothing import ABSTAIN, SmoothingSettings, certify, predict, radius
from nodeguard.errors import ConfigError
from nodeguard.intervals import Rate, lower_confidence_bound
from nodeguard.models.networks import ImageClassifier
from nodeguard.progress import RecordingProgress
from nodeguard.stages import certify as certify_stage
from nodeguard.stages.certify import CertifySettings, run_certify

# a linear two-class classifier on 2x2 single-channel images: logit_1 - logit_0 = w.x + b
WEIGHT = torch.tensor([0.6, -0.8, 0.0, 0.0])  # unit norm
BIAS = -0.1


class LinearClassifier(ImageClassifier):
    """logits (0, w.x + b): class 1 exactly when w.x + b > 0; no solver."""

    def __init__(self) -> None:
        super().__init__(2, nn.Identity(), nn.Flatten(), nn.Identity())  # type: ignore[arg-type]
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the code that asks for one

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        score = h @ WEIGHT + BIAS
        return torch.stack([torch.zeros_like(score), score], 1)


def image_at_distance(distance: float) -> torch.Tensor:
    """A (1, 2, 2) image whose signed L2 distance to the boundary w.x + b = 0 is ``distance``."""
    base = torch.full((4,), 0.5)
    offset = distance - (float(base @ WEIGHT) + BIAS)  # |w| = 1: moving along w moves the score 1:1
    return (base + offset * WEIGHT).view(1, 2, 2)


@pytest.mark.parametrize("distance", [0.3, -0.2, 0.05])
def test_certify_on_a_linear_classifier_matches_the_closed_form(distance):
    """For a linear classifier p_A = Phi(|d| / sigma) exactly, so the smoothed class is the
    base class at the image and the exact radius is |d|, its distance to the boundary. The
    certificate is sigma * Phi^-1(lower bound of its own count) and the count is binomial
    with that p_A: asserted within the 1e-6 and 1 - 1e-6 quantiles. With n0 = 2000 the
    selection picks the base class unless Bin(2000, p_A >= 0.579) falls to half (below
    1e-12). Every assertion fails with probability about 2e-6 at most, whatever the seed or CPU."""
    model = LinearClassifier().eval()
    sigma = 0.25
    settings = SmoothingSettings(sigma=sigma, n0=2000, n=2000, alpha=0.001, batch_size=1000)
    answer = certify(model, image_at_distance(distance), settings)
    base_class = 1 if distance > 0 else 0
    p_a = norm.cdf(abs(distance) / sigma)
    low, high = binom.ppf(1e-6, settings.n, p_a), binom.ppf(1 - 1e-6, settings.n, p_a)
    assert answer.top == base_class
    assert low <= answer.count <= high
    bound = lower_confidence_bound(answer.count, settings.n, settings.alpha)
    assert answer.p_lower == pytest.approx(bound)
    if bound < 0.5:
        assert answer.prediction == ABSTAIN and answer.radius == 0.0
    else:
        assert answer.prediction == base_class
        assert answer.radius == pytest.approx(sigma * norm.ppf(bound))
        # the certificate never exceeds the exact radius by more than the count's spread allows
        assert answer.radius <= radius(sigma, lower_confidence_bound(int(high), settings.n, settings.alpha)) + 1e-9
    if abs(distance) >= 0.3:  # p_A >= 0.88: the bound is far above 1/2, a certificate exists
        assert answer.prediction == base_class and answer.radius > 0


def test_predict_on_a_linear_classifier():
    """Far from the boundary PREDICT returns the base class; on it (p_A = p_B = 1/2) it
    abstains unless a test at level alpha = 1e-6 rejects a true null (probability <= 1e-6)."""
    model = LinearClassifier().eval()
    settings = SmoothingSettings(sigma=0.25, n=1000, alpha=1e-6, batch_size=1000)
    assert predict(model, image_at_distance(0.5), settings) == 1
    assert predict(model, image_at_distance(-0.5), settings) == 0
    assert predict(model, image_at_distance(0.0), settings) == ABSTAIN


def test_certificates_are_reproducible_and_independent_of_the_batch_size():
    """The noise is drawn batch by batch from one generator, so the copies are the same
    whatever the batch size; the linear model classifies each alone."""
    model = LinearClassifier().eval()
    image = image_at_distance(0.1)
    first = certify(model, image, SmoothingSettings(sigma=0.25, n0=20, n=300, batch_size=300))
    again = certify(model, image, SmoothingSettings(sigma=0.25, n0=20, n=300, batch_size=300))
    assert first == again
    assert certify(model, image, SmoothingSettings(sigma=0.25, n0=20, n=300, batch_size=7)) == first


def test_max_radius_and_bad_settings():
    settings = SmoothingSettings(sigma=0.5, n=1000, alpha=0.001)
    assert settings.max_radius == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / 1000)))
    assert settings.max_radius == pytest.approx(radius(0.5, lower_confidence_bound(1000, 1000, 0.001)))
    for bad in ({"sigma": 0.0}, {"sigma": 0.2, "alpha": 1.0}, {"sigma": 0.2, "n": 0}, {"sigma": math.nan}):
        with pytest.raises(ConfigError):
            SmoothingSettings(**bad)


def test_certify_stage_curve_cache_and_resume(tiny_model, monkeypatch):
    """The curve is recomputed from the per-image certificates with intervals; a second
    request reuses the store; a run interrupted after one image continues after it."""
    settings = CertifySettings(sigma=0.25, count=3, n0=5, n=20, radii=(0.0, 0.1, 0.25))
    calls = []
    real = certify_stage.certify

    def interrupted(model, image, smoothing):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, image, smoothing)

    monkeypatch.setattr(certify_stage, "certify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_certify(settings, model=tiny_model, device="cpu")
    monkeypatch.setattr(certify_stage, "certify", real)
    progress = RecordingProgress()
    report = run_certify(settings, model=tiny_model, device="cpu", progress=progress)
    assert any("continuing after 1 certified images" in message for message in progress.messages)
    assert report.count == 3 and len(report.predictions) == 3 and not report.reused
    labels = load_dataset("mnist5k").test.labels[:3].tolist()
    assert report.labels == labels
    for point in report.curve:
        right = sum(
            1
            for label, prediction, r in zip(report.labels, report.predictions, report.radii, strict=True)
            if prediction == label and r >= point.radius
        )
        assert point.certified_accuracy == Rate.of(right, 3)
    for prediction, r in zip(report.predictions, report.radii, strict=True):
        assert (prediction == ABSTAIN and r == 0.0) or 0.0 <= r <= report.max_radius + 1e-9
    again = run_certify(settings, model=tiny_model, device="cpu")
    assert again.reused and again.predictions == report.predictions
    # the count is not part of the key: fewer images read the stored ones, more continue them
    fewer = run_certify(CertifySettings(**{**settings.__dict__, "count": 2}), model=tiny_model, device="cpu")
    assert fewer.reused and fewer.predictions == report.predictions[:2]
    progress = RecordingProgress()
    more = run_certify(CertifySettings(**{**settings.__dict__, "count": 4}), model=tiny_model, progress=progress)
    assert not more.reused and more.predictions[:3] == report.predictions and more.count == 4
    assert any("continuing after 3 certified images" in message for message in progress.messages)
    chosen = more.subset([3, 1], settings.radii)
    assert chosen.labels == [more.labels[3], more.labels[1]] and chosen.count == 2
    with pytest.raises(ValueError):
        more.subset([4], settings.radii)


def test_certify_command(tiny_model, tmp_path):
    args = ["certify", "--model", tiny_model, "--sigma", "0.25", "--count", "2", "--n0", "5", "--n", "20"]
    result = CliRunner().invoke(app, [*args, "--predict", "--json", "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sigma"] == 0.25 and data["count"] == 2 and data["predict_accuracy"] is not None
    for point in data["curve"]:
        check_rate(point["certified_accuracy"], 2)
    check_rate(data["predict_accuracy"], 2)
    check_rate(data["abstained"], 2)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    human = CliRunner().invoke(app, args)
    assert human.exit_code == 0 and "Clopper-Pearson" in human.stdout
    bad = CliRunner().invoke(app, ["certify", "--model", tiny_model, "--sigma", "-1"])
    assert bad.exit_code != 0 and "sigma" in bad.output and "Traceback" not in bad.output


def test_training_with_noise_changes_the_model_and_names_it(registry):
    from conftest import tiny_config

    from nodeguard.training.train import train_model

    clean = train_model(tiny_config(epochs=1, train_limit=64, test_limit=16), registry=registry, device="cpu")
    noisy_config = tiny_config(epochs=1, train_limit=64, test_limit=16, noise_sigma=0.5)
    assert noisy_config.default_name() == "odenet-mnist5k-noise0.5"
    noisy = train_model(noisy_config, registry=registry, device="cpu")
    assert (clean.model, noisy.model) == ("odenet-mnist5k", "odenet-mnist5k-noise0.5")
    assert registry.read_config(noisy.model)["training"]["noise_sigma"] == 0.5
    assert registry.read_config(clean.model)["training"]["noise_sigma"] == 0.0
    # the same seed, batches and augmentation: only the noise differs, and it changes the weights
    clean_weights = registry.read_checkpoint(clean.model)
    noisy_weights = registry.read_checkpoint(noisy.model)
    assert any(not torch.equal(value, noisy_weights["model"][name]) for name, value in clean_weights["model"].items())
    with pytest.raises(ConfigError, match="noise_sigma"):
        tiny_config(noise_sigma=-0.1)
