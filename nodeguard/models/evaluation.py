"""Classification error and solver cost of a model on a split, at a chosen tolerance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nodeguard.data.datasets import ImageSplit
from nodeguard.models.networks import ImageClassifier
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import map_shares


@dataclass
class Evaluation:
    error: float
    mean_nfe: float
    count: int
    predictions: torch.Tensor


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, tol: float | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, int]:
    """Class predictions of one batch (float images in [0, 1]) and the NFE it took."""
    model.eval()
    logits = model(images.to(device), tol=tol)
    return logits.argmax(1).cpu(), int(getattr(model, "last_nfe", 0))


def evaluate(
    model: nn.Module,
    split: ImageSplit,
    tol: float | None = None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress = SILENT,
    description: str = "evaluating",
) -> Evaluation:
    """Error rate (0..1) over ``split`` with the solver at ``tol`` (the model's own if None).

    ``mean_nfe`` is the mean number of function evaluations per batch forward.
    """
    task = progress.task(description, (len(split) + batch_size - 1) // batch_size)
    predictions, nfes = [], []
    for images, _labels in split.batches(batch_size):
        batch_predictions, nfe = predict(model, images, tol=tol, device=device)
        predictions.append(batch_predictions)
        nfes.append(nfe)
        task.advance(1)
    task.close()
    all_predictions = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    wrong = int((all_predictions != split.labels).sum())
    return Evaluation(
        error=wrong / max(len(split), 1),
        mean_nfe=sum(nfes) / max(len(nfes), 1),
        count=len(split),
        predictions=all_predictions,
    )


def classification_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Z_y - max_{j != y} Z_j per sample: negative exactly when the sample is misclassified.

    The other logits are masked with -inf, not multiplied by zero, so the margin is right
    when they are negative (torchattacks' CW takes ``max((1 - onehot) * logits)``, which
    returns 0 instead of the largest other logit when all the others are negative).
    This is the f_6 margin of Carlini & Wagner (IEEE S&P 2017) with the sign of Z_y - max Z_j.

    Args:
        logits: (N, classes) float logits.
        labels: (N,) int64 true classes, on the logits' device.

    Returns:
        (N,) margins in the logits' dtype (logit units); differentiable.
    """
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels[:, None], True)
    other_best = logits.masked_fill(mask, float("-inf")).amax(1)
    return true_logit - other_best


def logits_alone(
    model: ImageClassifier, images: torch.Tensor, tol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, NFE per image) of one batch, each image solved on its own steps at ``tol``.

    Differentiable (see :func:`nodeguard.models.solver.solve_per_sample`); ``tol`` None means the
    model's own tolerance. Models without a solver run a plain forward pass (NFE 0).

    Args:
        model: the classifier (in the mode the caller chose; not switched to eval here).
        images: (N, C, H, W) float32 in [0, 1], on the model's device.
        tol: solver tolerance (rtol = atol) for every image, or None for the model's own.

    Returns:
        (logits, nfe): (N, num_classes) float32 and (N,) int64, on the images' device.

    Raises:
        ConfigError: an ODE-Net whose solver method is not dopri5.
        SolverError: the per-sample solver cannot meet ``tol`` (step-size underflow or step budget).
    """
    tolerance = float(getattr(model, "tol", 0.0) if tol is None else tol)
    tols = torch.full((len(images),), tolerance, dtype=torch.float64, device=images.device)
    return model.classify_features_per_sample(model.features(images), tols)


@torch.no_grad()
def predict_per_sample(
    model: ImageClassifier, images: torch.Tensor, tol: float | None = None, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, NFE per image) with each image solved on its own steps at ``tol``.

    nodeguard's one way to classify an image "alone": for an ODE-Net each image follows
    the steps torchdiffeq would take on it alone (:mod:`nodeguard.models.solver`), so results do
    not depend on the batch; models without a solver are classified in plain batches
    (NFE 0). ``tol`` None means the model's own tolerance.

    Args:
        model: the classifier; put in eval mode. Runs without gradients.
        images: (N, C, H, W) float32 in [0, 1], on any device (moved to the model's).
        tol: solver tolerance (rtol = atol), or None for the model's own.
        batch_size: images solved together (does not change the results).

    Returns:
        (predictions, nfe): two (N,) int64 CPU tensors.

    Raises:
        ConfigError: an ODE-Net whose solver method is not dopri5.
        SolverError: the per-sample solver cannot meet ``tol`` (step-size underflow or step budget).
    """
    model.eval()
    device = next(model.parameters()).device
    predictions, nfes = [], []
    for chunk in images.split(batch_size):
        logits, nfe = logits_alone(model, chunk.to(device), tol)
        predictions.append(logits.argmax(1).cpu())
        nfes.append(nfe.cpu())
    if not predictions:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(predictions), torch.cat(nfes)


def predict_sharded(
    model: ImageClassifier, images: torch.Tensor, tol: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`predict_per_sample` of ``images`` (N, C, H, W); in a sharded job each rank
    classifies its own contiguous share and every rank gets the whole result, in order.

    Returns:
        (predictions, NFE per image): two (N,) int64 tensors.
    """
    predictions, nfe = map_shares(
        len(images), lambda rows: predict_per_sample(model, images[rows.start : rows.stop], tol=tol)
    )
    return predictions, nfe


@torch.no_grad()
def margins_alone(
    model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor, tol: float | None, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(margins, predictions) of each image classified alone at ``tol``; the margin is the
    true logit minus the best other logit, negative exactly when the image is misclassified.

    Args:
        model: the classifier; put in eval mode. Runs without gradients.
        images: (N, C, H, W) float32 in [0, 1], on any device.
        labels: (N,) int64 true classes.
        tol: solver tolerance (rtol = atol), or None for the model's own.
        batch_size: images solved together (does not change the results).

    Returns:
        (margins, predictions): (N,) float32 (logit units) and (N,) int64, on the CPU.

    Raises:
        ConfigError: an ODE-Net whose solver method is not dopri5.
        SolverError: the per-sample solver cannot meet ``tol`` (step-size underflow or step budget).
    """
    model.eval()
    device = next(model.parameters()).device
    margins, predictions = [], []
    for chunk, chunk_labels in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        logits = logits_alone(model, chunk.to(device), tol)[0]
        margins.append(classification_margin(logits, chunk_labels.to(device)).cpu())
        predictions.append(logits.argmax(1).cpu())
    if not margins:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(margins), torch.cat(predictions)
