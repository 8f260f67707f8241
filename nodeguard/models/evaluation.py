"""Classification error and solver cost of a model on a split, at a chosen tolerance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nodeguard.data.datasets import ImageSplit
from nodeguard.models.networks import ImageClassifier
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.distributed import current_ranks, map_shares


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


@dataclass
class AloneClassification:
    """Images classified alone: each image (or each (image, tolerance) pair) on its own
    solver steps, so nothing depends on the batch (:func:`classify_alone`).

    Attributes:
        logits: (N, classes), or (N, V, classes) at V tolerances per image; float32, CPU.
        nfe: function evaluations of each solve, (N,) or (N, V) int64 (0 without a solver).
        margins: the true logit minus the best other logit (logit units), (N,) or (N, V)
            float32, negative exactly where the image is misclassified; empty without labels.
    """

    logits: torch.Tensor
    nfe: torch.Tensor
    margins: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        """The classes, (N,) or (N, V) int64."""
        return self.logits.argmax(-1)


@torch.no_grad()
def classify_alone(
    model: ImageClassifier,
    images: torch.Tensor,
    tol: float | torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    batch_size: int = 500,
    sharded: bool = False,
    progress: Progress = SILENT,
) -> AloneClassification:
    """nodeguard's one way to classify images alone at given solver tolerances.

    For an ODE-Net each image follows the steps torchdiffeq's dopri5 would take on it
    alone (:mod:`nodeguard.models.solver`), at one tolerance (``tol`` a number: the
    attack's tol_attack, the sweep's tol) or at V tolerances of its own (``tol`` an
    (N, V) tensor: the defense's votes, Carrara et al., ICPR 2021 workshops); each
    (image, tolerance) pair is solved on its own steps. Models without a solver are
    classified in plain batches (NFE 0). Runs without gradients, in eval mode; for
    gradients use :func:`logits_alone`.

    Args:
        model: the classifier (put in eval mode).
        images: (N, C, H, W) float32 in [0, 1], on any device (moved to the model's).
        tol: solver tolerance (rtol = atol) of every image; None means the model's own;
            an (N, V) float64 tensor gives each image V tolerances.
        labels: (N,) int64 true classes: the margins are computed when given.
        batch_size: solves done together (does not change the results).
        sharded: in a sharded job (torchrun), each rank classifies its contiguous share
            of the images and every rank gets all of them, in order.
        progress: receives one task (advanced per batch of solves) when V tolerances are given.

    Returns:
        The :class:`AloneClassification` (logits, NFE, margins), on the CPU.

    Raises:
        ConfigError: an ODE-Net whose solver method is not dopri5.
        SolverError: the per-sample solver cannot meet a tolerance (step-size underflow or step budget).
    """
    if sharded and current_ranks().sharded:
        parts = map_shares(
            len(images),
            lambda rows: _classified_tensors(
                model, images[rows.start : rows.stop], _rows(tol, rows), _rows(labels, rows), batch_size, progress
            ),
        )
        return AloneClassification(*parts)
    return AloneClassification(*_classified_tensors(model, images, tol, labels, batch_size, progress))


def _rows(values: Any, rows: range) -> Any:
    return values[rows.start : rows.stop] if isinstance(values, torch.Tensor) else values


def _classified_tensors(
    model: ImageClassifier,
    images: torch.Tensor,
    tol: float | torch.Tensor | None,
    labels: torch.Tensor | None,
    batch_size: int,
    progress: Progress,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, nfe, margins) of :func:`classify_alone` in one process (margins empty without labels)."""
    per_pair = isinstance(tol, torch.Tensor) and tol.dim() == 2
    if isinstance(tol, torch.Tensor) and tol.dim() == 2:
        tolerances = tol.to(torch.float64)
    else:
        value = float(getattr(model, "tol", 0.0) if tol is None else tol)
        tolerances = torch.full((len(images), 1), value, dtype=torch.float64)
    logits, nfe = _solve_pairs(model, images, tolerances, batch_size, progress if per_pair else SILENT)
    margins = torch.empty(0)
    if labels is not None:
        votes = tolerances.shape[1]
        pair_labels = labels.reshape(-1).long().cpu().repeat_interleave(votes)
        margins = classification_margin(logits.reshape(-1, logits.shape[-1]), pair_labels).view(len(images), votes)
    if not per_pair:
        logits, nfe = logits[:, 0], nfe[:, 0]
        margins = margins[:, 0] if labels is not None else margins
    return logits, nfe, margins


def _solve_pairs(
    model: ImageClassifier, images: torch.Tensor, tolerances: torch.Tensor, batch_size: int, progress: Progress
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image n solved alone at tolerances[n, v]: ((N, V, classes) float32 logits, (N, V) NFE)."""
    model.eval()
    device = next(model.parameters()).device
    count, votes = tolerances.shape
    pair_image = torch.arange(count).repeat_interleave(votes)
    pair_tol = tolerances.reshape(-1)
    gathered = torch.empty(count * votes, model.num_classes, dtype=torch.float32)
    gathered_nfe = torch.zeros(count * votes, dtype=torch.long)
    features_cache: dict[int, torch.Tensor] = {}
    task = progress.task("voting", math.ceil(count * votes / batch_size))
    for start in range(0, count * votes, batch_size):
        chunk_images = pair_image[start : start + batch_size]
        needed = [int(i) for i in chunk_images.unique() if int(i) not in features_cache]
        if needed:
            computed = model.features(images[needed].to(device))
            features_cache.update(zip(needed, computed, strict=True))
        h0 = torch.stack([features_cache[int(i)] for i in chunk_images])
        logits, nfe = model.classify_features_per_sample(h0, pair_tol[start : start + batch_size].to(device))
        gathered[start : start + batch_size] = logits.float().cpu()
        gathered_nfe[start : start + batch_size] = torch.as_tensor(nfe).long().cpu()
        for finished in [i for i in features_cache if i < int(chunk_images[-1])]:
            del features_cache[finished]
        task.advance(1)
    task.close()
    return gathered.view(count, votes, model.num_classes), gathered_nfe.view(count, votes)
