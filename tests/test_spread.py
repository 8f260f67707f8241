"""The margin-spread diagnostic on images whose margin path over the tolerance is known,
and the Square attack's budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nodeguard.defense.spread import MarginSpread, predicted_kappa, predicted_survival, summarize
from nodeguard.intervals import Rate
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.networks import ImageClassifier


class TolerancePath(ImageClassifier):
    """A stand-in ODE model whose margin at tolerance tau is known: logits (0, a + b * log10(tau)),
    with a the image's first pixel and b its second, so the margin of class 1 is
    a + b * log10(tau) and that of class 0 its negative."""

    has_solver = True

    def __init__(self) -> None:
        super().__init__(2, nn.Identity(), nn.Flatten(), nn.Identity())  # type: ignore[arg-type]
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the code that asks for one

    def classify_features_per_sample(self, h: torch.Tensor, tols: torch.Tensor):
        score = h[:, 0] + h[:, 1] * torch.log10(tols.to(h.dtype))
        return torch.stack([torch.zeros_like(score), score], 1), torch.zeros(len(h), dtype=torch.long)


def test_spread_of_a_known_margin_path():
    """Image 0: margin 0.25 + 0.1 log10(tau) for class 1, which crosses zero between the
    draws 1e-3 and 1e-2; image 1: margin -(0.06 + 0.01 log10 tau) for class 0, below zero
    at every draw. No margin lands on zero, so rounding cannot flip a side. Each margin is
    compared with its formula at the drawn tolerances, every summary with its definition."""
    model = TolerancePath().eval()
    images = torch.tensor([[0.25, 0.1, 0.0, 0.0], [0.06, 0.01, 0.0, 0.0]]).view(2, 1, 2, 2)
    labels = torch.tensor([1, 0])
    tolerances = torch.tensor([[1e-5, 1e-4, 1e-3, 1e-2, 1e-1], [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]], dtype=torch.float64)
    logits = classify_alone(model, images, tolerances, batch_size=3).logits
    reference = torch.tensor([0.25 + 0.1 * -3, -(0.06 + 0.01 * -3)])  # the margins at tol_train = 1e-3
    spread = MarginSpread.from_logits(logits, labels, reference)
    exponents = torch.tensor([-5.0, -4, -3, -2, -1])
    expected = torch.stack([0.25 + 0.1 * exponents, -(0.06 + 0.01 * exponents)])
    assert torch.allclose(spread.margins, expected, atol=1e-6)
    assert torch.allclose(spread.low, torch.tensor([-0.25, -0.05]), atol=1e-6)
    assert torch.allclose(spread.high, torch.tensor([0.15, -0.01]), atol=1e-6)
    assert torch.allclose(spread.width, torch.tensor([0.4, 0.04]), atol=1e-6)
    assert torch.allclose(spread.rise, torch.tensor([0.2, 0.02]), atol=1e-6)
    # image 0: margins -0.25, -0.15, -0.05, 0.05, 0.15 -> 2 of 5 above zero
    assert torch.allclose(spread.share_positive, torch.tensor([0.4, 0.0]))
    assert spread.straddles.tolist() == [True, False]
    summary = summarize("paths", spread)
    assert summary.count == 2
    assert summary.straddling == Rate.of(1, 2)
    assert summary.all_negative == Rate.of(1, 2) and summary.all_positive == Rate.of(0, 2)
    assert summary.median_width == pytest.approx(0.22, abs=1e-6)
    assert summary.mean_share_negative == pytest.approx(0.8)


def test_predicted_kappa_and_survival():
    rises = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.10])
    assert predicted_survival(rises, 0.0) == 0.0
    assert predicted_survival(rises, 0.035) == pytest.approx(0.6)
    assert predicted_survival(rises, 1.0) == 1.0
    assert predicted_kappa(rises, 0.5) == pytest.approx(0.03)
    assert predicted_kappa(rises, 1.0) == pytest.approx(0.10)
    assert predicted_survival(torch.empty(0), 0.1) is None and predicted_kappa(torch.empty(0), 0.5) is None


@pytest.mark.parametrize("draws", [0, 2])
def test_square_stays_within_its_budget_and_the_box(tiny_model, draws):
    """Every image Square returns lies within eps (L2) of its clean image and in [0, 1],
    whatever the model's floats; the run is reproducible and leaves torch's generator alone."""
    from nodeguard.attacks import PinnedTolerance, SquareOptions
    from nodeguard.attacks.square import run_square
    from nodeguard.data.datasets import load_dataset
    from nodeguard.models.loading import load_model

    loaded = load_model(tiny_model, device="cpu")
    test = load_dataset("mnist5k").test
    images, labels = test.float_images(slice(0, 4)), test.labels[:4]
    eps = 0.7
    options = SquareOptions(eps=eps, queries=15, draws=draws)
    pinned = PinnedTolerance(loaded.model, 1e-3)
    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    adversarial = run_square(pinned, options, images, labels, seed=3)
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(adversarial, run_square(pinned, options, images, labels, seed=3))
    l2 = (adversarial - images).flatten(1).norm(dim=1)
    assert (l2 <= eps * (1 + 1e-5)).all(), l2
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert math.isfinite(float(l2.sum()))
