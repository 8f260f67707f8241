"""Per-sample adaptive Dormand–Prince (dopri5), stepping as torchdiffeq does on one sample.

torchdiffeq's dopri5 takes one step size for a whole batch: its error norm runs over the
whole tensor, so an image's trajectory depends on the other images in its batch (and on
their tolerances). Here every sample of the batch has its own time, step size, error
ratio, accept/reject decision and tolerance; samples leave the batch when they reach
t=1. Each sample follows the steps torchdiffeq 0.2.x would take solving it alone with
rtol = atol = its tolerance: the same initial step selection (Hairer, Norsett & Wanner,
II.4), Butcher tableau, float32 stage times, RMS error norm, step-size controller
(safety 0.9, growth at most 10x, shrink at most 5x, order 5), and 4th-order interpolation
at t=1 of the step that passes it. Results agree with torchdiffeq to floating-point
rounding (reductions may sum in another order), not always bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nodeguard.checks import require_time
from nodeguard.errors import SolverError

ALPHA = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
BETA = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
C_ERROR = (
    35 / 384 - 1951 / 21600,
    0,
    500 / 1113 - 22642 / 50085,
    125 / 192 - 451 / 720,
    -2187 / 6784 - -12231 / 42400,
    11 / 84 - 649 / 6300,
    -1.0 / 60.0,
)
C_MID = (
    6025192743 / 30085553152 / 2,
    0,
    51252292925 / 65400821598 / 2,
    -2691868925 / 45128329728 / 2,
    187940372067 / 1594534317056 / 2,
    -1776094331 / 19743644256 / 2,
    11237099 / 235043384 / 2,
)
SAFETY, IFACTOR, DFACTOR, ORDER = 0.9, 10.0, 0.2, 5
# the step budget of one call: attempted steps (accepted or rejected) of its slowest
# sample; dopri5 takes a few dozen on an image at the tolerances nodeguard allows
MAX_STEPS = 10_000

ODEFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PerSampleSolution:
    y1: torch.Tensor  # the state at t=T, one row per sample
    nfe: torch.Tensor  # function evaluations each sample took (int64)


def _as_float64(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device).to(dtype)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.abs().pow(2).flatten(1).mean(1).sqrt()


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _time_for(func_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Times (one per sample) shaped to broadcast over the state, in the state's dtype."""
    return _expand(func_t.to(y.dtype), y)


def _initial_step(func, t0, y0, f0, tol) -> torch.Tensor:
    """torchdiffeq's _select_initial_step, per sample (order 4 for dopri5's embedded pair)."""
    scale = _expand(tol.to(y0.dtype), y0) + y0.abs() * _expand(tol.to(y0.dtype), y0)
    d0 = _rms(y0 / scale)
    d1 = _rms(f0 / scale)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / torch.where(small, torch.ones_like(d1), d1)).abs()
    y1 = y0 + _expand(h0, y0) * f0
    f1 = func(_time_for(t0 + h0.to(torch.float64), y0), y1)
    d2 = (_rms((f1 - f0) / scale) / h0).abs()
    largest = torch.maximum(d1, d2)
    tiny = largest <= 1e-15
    h1 = torch.where(
        tiny,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / torch.where(tiny, torch.ones_like(largest), largest)) ** (1.0 / float(ORDER)),
    ).abs()
    return torch.minimum(100 * h0, h1).to(torch.float64)


@torch.no_grad()
def _next_step(dt: torch.Tensor, error_ratio: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's _optimal_step_size, per sample, in float64 (no gradient, as there)."""
    ratio = error_ratio.to(torch.float64)
    shrink_limit = torch.where(ratio < 1, torch.ones_like(ratio), torch.full_like(ratio, DFACTOR))
    safe_ratio = torch.where(ratio == 0, torch.ones_like(ratio), ratio)
    factor = torch.clamp(torch.maximum(SAFETY / safe_ratio ** (1.0 / ORDER), shrink_limit), max=IFACTOR)
    return torch.where(ratio == 0, dt * IFACTOR, dt * factor)


def _just_before(t: torch.Tensor) -> torch.Tensor:
    """The float just below ``t``, with the gradient of ``t`` (torchdiffeq's stitched nextafter)."""
    return t + (torch.nextafter(t, t - 1) - t).detach()


def solve_per_sample(
    func: ODEFunction, y0: torch.Tensor, tol: torch.Tensor, max_steps: int = MAX_STEPS, t_end: float = 1.0
) -> PerSampleSolution:
    """Integrate dy/dt = func(t, y) from t=0 to t=T for each sample at its own tolerance.

    ``func`` receives times shaped (B, 1, ..., 1) (one per sample of the batch it is given)
    and the states of those samples. ``tol`` holds one tolerance per sample (rtol = atol).

    Differentiable: called with gradients enabled, the solution carries the gradient of
    the discrete solver, as torchdiffeq's dopri5 does (not the adjoint). Gradients flow
    through the initial step selection and the time points it sets (stage times and the
    final interpolation), but not through the later step-size control, which torchdiffeq
    computes under ``no_grad``; the step that passes t=T is stitched through nextafter as
    torchdiffeq does. All writes to tensors that carry a gradient are out of place.

    The method is dopri5 (Dormand & Prince 1980), the adaptive solver of Neural ODEs
    (Chen et al., NeurIPS 2018) as torchdiffeq 0.2.x implements it. Where the time goes
    (see ``benches/solver.py``): the function evaluations; the solver's own work per step
    is one weighted sum of the stages per stage and one for the error estimate, the error
    norm without gradient, and the interpolation only for the samples that pass T.

    Args:
        func: the ODE function f(t, y), called with (B, 1, ..., 1) times in ``y0``'s dtype
            and (B, ...) states, B the samples still integrating.
        y0: (N, ...) initial states h(0), e.g. (N, filters, H', W') float32 features.
        tol: (N,) tolerances (rtol = atol = tol), or one scalar for all; cast to float64.
        max_steps: the step budget (attempted steps of the slowest sample).
        t_end: the end time T > 0 of the integration (1 for the paper's ODE-Net).

    Returns:
        ``PerSampleSolution``: ``y1`` (N, ...) the states at t=T in ``y0``'s dtype and
        order, ``nfe`` (N,) int64 function evaluations per sample.

    Raises:
        SolverError: the step size underflowed, or a sample did not reach t=T within
            ``max_steps`` steps (a tolerance the float32 solve cannot meet, or dynamics
            too stiff for it); the message names the tolerances of those samples.
        ConfigError: ``t_end`` is not a positive finite time.
    """
    require_time("t_end", t_end)
    batch = y0.shape[0]
    dtype, device = y0.dtype, y0.device
    tol = torch.as_tensor(tol, dtype=torch.float64, device=device).reshape(-1).expand(batch).clone()
    nfe = torch.zeros(batch, dtype=torch.long, device=device)
    if batch == 0:
        return PerSampleSolution(torch.empty_like(y0), nfe)
    # the stage times' fractions, in the state's dtype as torchdiffeq holds them
    alpha = _as_float64(ALPHA[:-2], dtype, device)
    # T as the state's dtype holds it, as torchdiffeq gets it from ``t.type_as(y0)``
    end = torch.tensor(float(t_end), dtype=dtype, device=device).to(torch.float64)

    t_start = torch.zeros(batch, dtype=torch.float64, device=device)
    f0 = func(_time_for(t_start, y0), y0)
    dt = _initial_step(func, t_start, y0, f0, tol)

    # per active sample: state y, derivative f, time t1 of the latest accepted step; every
    # active sample attempts one step per pass, so one that passes T on the a-th pass took
    # 2 + 6 a function evaluations (f(0), the initial step's probe, six stages a step)
    index, y, f, t1, tol_active = torch.arange(batch, device=device), y0, f0, t_start, tol
    finished_index: list[torch.Tensor] = []
    finished_y: list[torch.Tensor] = []
    for attempt in range(max_steps):
        step_t1 = t1 + dt
        if not bool((step_t1 > t1).all()):
            raise _unmet(tol_active, "its step size underflowed")
        t1_low, dt_low = t1.to(dtype), dt.to(dtype)
        # the first four stage times, then (twice) the step's end stitched just below it
        stage_times = [t1_low + stage_alpha * dt_low for stage_alpha in alpha]
        stage_times.append(_just_before(step_t1.to(dtype)))
        stage_times.append(stage_times[-1])
        dt_state = _expand(dt_low, y)
        stages = [f]
        for stage_t, beta in zip(stage_times, BETA, strict=True):
            stage_y = torch.addcmul(y, _weighted_sum(stages, beta), dt_state)
            stages.append(func(_expand(stage_t, y), stage_y))
        y_new, f_new = stage_y, stages[-1]
        error_ratio = _error_ratio(stages, dt_state, y, y_new, tol_active)
        accept = error_ratio <= 1
        dt = _next_step(dt, error_ratio)
        done = accept & (step_t1 >= end)
        finishing = bool(done.any())
        if finishing:
            # a sample that passes T does so on an accepted step: interpolate inside it
            rows = done.nonzero().squeeze(1)
            x = ((end - t1[rows]) / (step_t1[rows] - t1[rows])).to(dtype)
            mid = torch.addcmul(y[rows], _weighted_sum([k[rows] for k in stages], C_MID), dt_state[rows])
            coefficients = _interp_fit(y[rows], y_new[rows], mid, f[rows], f_new[rows], dt_state[rows])
            finished_index.append(index[rows])
            finished_y.append(_interp_evaluate(coefficients, _expand(x, y)))
            nfe[index[rows]] = 2 + len(ALPHA) * (attempt + 1)
        if bool(accept.all()):
            y, f = y_new, f_new
        else:
            accept_state = _expand(accept, y)
            y = torch.where(accept_state, y_new, y)
            f = torch.where(accept_state, f_new, f)
        t1 = torch.where(accept, step_t1, t1)
        if finishing:
            keep = (~done).nonzero().squeeze(1)
            index, y, f, t1, dt, tol_active = index[keep], y[keep], f[keep], t1[keep], dt[keep], tol_active[keep]
            if len(index) == 0:
                break
    if len(index) > 0:  # torchdiffeq allows max_steps steps: a sample may finish on the last one
        raise _unmet(tol_active, f"it did not reach t={float(t_end):g} within {max_steps} steps")
    order = torch.cat(finished_index)
    return PerSampleSolution(torch.cat(finished_y)[torch.argsort(order)], nfe)


@torch.no_grad()
def _error_ratio(stages, dt_state, y, y_new, tol) -> torch.Tensor:
    """(B,) RMS of the embedded error estimate over rtol * max(|y|, |y_new|) + atol, as torchdiffeq.

    Without gradient: only the accept decision and the next step size depend on it.
    """
    error = _weighted_sum(stages, C_ERROR).mul_(dt_state)
    tol_state = _expand(tol.to(y.dtype), y)
    scale = torch.maximum(y.abs(), y_new.abs()).mul_(tol_state).add_(tol_state)
    return _rms(error.div_(scale)).abs()


def _weighted_sum(stages: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    """sum_j weights[j] * stages[j] (zero weights skipped), one pass per stage."""
    total: torch.Tensor | None = None
    for stage, weight in zip(stages, weights, strict=True):
        if weight == 0:
            continue
        total = stage * weight if total is None else torch.add(total, stage, alpha=weight)
    assert total is not None
    return total


def _unmet(tolerances: torch.Tensor, what: str) -> SolverError:
    low = float(tolerances.min())
    return SolverError(
        f"the per-sample dopri5 solver cannot meet tolerance {low:g} on {len(tolerances)} sample(s): {what}; "
        "use a looser tolerance"
    )


def _interp_fit(y0, y1, y_mid, f0, f1, dt):
    a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
    b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
    c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
    d = dt * f0
    e = y0
    return [e, d, c, b, a]


def _interp_evaluate(coefficients, x):
    total = coefficients[0] + x * coefficients[1]
    x_power = x
    for coefficient in coefficients[2:]:
        x_power = x_power * x
        total = total + x_power * coefficient
    return total
