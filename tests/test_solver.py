"""The per-sample dopri5 against problems with a closed-form solution, and against torchdiffeq."""

from __future__ import annotations

import math

import torch
from torchdiffeq import odeint

from nodeguard.models.solver import solve_per_sample

# tolerances where dopri5's global error over [0, 1] is of the order of the tolerance; at
# 1e-1 the first step is rejected on -y, so the step count is not monotone up there
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
# a damped rotation: y(1) = expm(A) y(0)
ROTATION = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
# global error / tolerance stays below 2.1 on both problems at every tolerance above
# (written on one machine: 2.01 for -y at 1e-2, 1.18 for the rotation at 1e-3); the bound
# leaves room for other float rounding
ERROR_PER_TOLERANCE = 3.0


def decay(t, y):
    return -y


def rotation(t, y):
    return y @ ROTATION.T


class CountingRotation:
    def __init__(self):
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return rotation(t, y)


def solve_each_tolerance(func, y0: torch.Tensor):
    """One batch: the same y0 once per tolerance, each row at its own tolerance."""
    batch = y0.expand(len(TOLERANCES), -1).clone()
    return solve_per_sample(func, batch, torch.tensor(TOLERANCES, dtype=torch.float64))


def test_decay_error_is_within_the_tolerance_and_nfe_falls_as_tau_grows():
    solution = solve_each_tolerance(decay, torch.ones(1, 1, dtype=torch.float64))
    errors = (solution.y1[:, 0] - math.exp(-1)).abs()
    for tol, error in zip(TOLERANCES, errors.tolist(), strict=True):
        assert error <= ERROR_PER_TOLERANCE * tol, (tol, error)
    nfe = solution.nfe.tolist()
    assert nfe == sorted(nfe), nfe  # tolerances go down the list, NFE never does
    assert nfe[-1] > nfe[0]


def test_linear_system_error_is_within_the_tolerance_and_nfe_falls_as_tau_grows():
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    exact = torch.linalg.matrix_exp(ROTATION) @ y0[0]
    solution = solve_each_tolerance(rotation, y0)
    errors = (solution.y1 - exact).abs().amax(1)
    for tol, error in zip(TOLERANCES, errors.tolist(), strict=True):
        assert error <= ERROR_PER_TOLERANCE * tol, (tol, error)
    nfe = solution.nfe.tolist()
    assert nfe == sorted(nfe), nfe
    assert nfe[-1] > nfe[0]


def test_each_row_takes_the_steps_torchdiffeq_takes_on_it_alone():
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    solution = solve_each_tolerance(rotation, y0)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for row, tol in enumerate(TOLERANCES):
        counted = CountingRotation()
        alone = odeint(counted, y0, times, rtol=tol, atol=tol)[1]
        assert int(solution.nfe[row]) == counted.calls, tol
        # same steps: the results differ only by rounding (sums taken in another order)
        assert torch.allclose(solution.y1[row], alone[0], rtol=1e-12, atol=1e-12), tol


def test_an_empty_batch_solves_nothing():
    solution = solve_per_sample(decay, torch.empty(0, 3), torch.empty(0, dtype=torch.float64))
    assert solution.y1.shape == (0, 3) and solution.nfe.tolist() == []


def test_the_solution_is_differentiable_in_its_initial_value():
    # y(1) = exp(-1) y(0) for -y: the discrete solver's derivative is that, to its error
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64, requires_grad=True)
    solution = solve_per_sample(decay, y0, torch.tensor([1e-4, 1e-6], dtype=torch.float64))
    (gradient,) = torch.autograd.grad(solution.y1.sum(), y0)
    assert torch.allclose(gradient[:, 0], torch.full((2,), math.exp(-1), dtype=torch.float64), atol=3e-4)


def test_input_gradient_matches_torchdiffeq_on_the_image_alone(tiny_model):
    """Gradients flow as in torchdiffeq's dopri5: through the initial step and the times it
    sets, not through the later step-size control (torchdiffeq computes it under no_grad).

    On the machine this was written on the two agree to 2e-7 (float32 rounding of sums
    taken in another order); letting the gradient through the step-size control instead
    moves it by 0.5% to 10% on this model, and dropping torchdiffeq's nextafter stitch by
    3e-5 to 1e-3. The bound 1e-4 is 500 times the rounding and far below the first.
    """
    from nodeguard.data.datasets import load_dataset
    from nodeguard.models.loading import load_model

    model = load_model(tiny_model, device="cpu").model
    test = load_dataset("mnist5k").test
    for index in range(4):
        label = int(test.labels[index])
        for tol in (1e-1, 1e-3, 1e-5):
            image = test.float_images(slice(index, index + 1)).requires_grad_(True)
            (theirs,) = torch.autograd.grad(model(image, tol=tol)[0, label], image)
            image = image.detach().clone().requires_grad_(True)
            solution = solve_per_sample(model.odeblock.func, model.features(image), torch.tensor([tol]))
            (ours,) = torch.autograd.grad(model.head(solution.y1)[0, label], image)
            assert float((ours - theirs).norm() / theirs.norm()) < 1e-4, (index, tol)
