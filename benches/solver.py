"""Bench: the per-sample dopri5 against torchode, batched torchdiffeq and its convolution floor.

Two workloads, both on a registered model's ODE function (the quickstart's odenet-mnist5k
by default) and the first test images of its data set:

- forward (what the defense's votes, the sweep cells and every check pay): ``--pairs``
  (image, tolerance) pairs at one tolerance, without gradient;
- forward + input gradient (what every attack step pays): ``--grad-images`` images, the
  gradient of each image's true logit with respect to its pixels.

Solvers, each in this process on the same function, states and tolerance:

- ``per_sample``: nodeguard's ``solve_per_sample``, each sample on its own steps;
- ``torchode``: torchode 1.0.1 (Lienen & Günnemann 2022), ``Dopri5`` with an
  ``IntegralController`` (torchdiffeq's step-size rule), per-sample step sizes, the whole
  batch evaluated until its slowest sample ends; installed here from
  ``benches/requirements.txt`` when missing (never a dependency of nodeguard);
- ``batched_torchdiffeq``: one torchdiffeq dopri5 call on the whole batch (one step size
  for all: the batch's NFE is that of its hardest sample, so it is also reported per
  sample-evaluation);
- ``convolution_floor``: the ODE function's 3x3 convolutions alone (state channels only),
  on exactly the batch sizes the per-sample solve called the function with (for the
  gradient workload, forward plus the input gradient's backward). ``share_of_floor`` =
  floor time / solver time.

The gradient workload times the ODE block and head (the gradient with respect to h(0));
``per_sample_with_stem`` adds the downsampling stem, as an attack step pays it. Every
candidate runs once per round, ``--repeats`` rounds after a warm-up (A B A B); times are
medians, ratios the median of the ratios within a round. The JSON printed holds every
figure and the settings.

    python benches/solver.py --model odenet-mnist5k --pairs 256 --grad-images 100 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from nodeguard.data.datasets import load_dataset
from nodeguard.models.loading import load_model
from nodeguard.models.solver import solve_per_sample

REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def require(module: str):
    """Import ``module``, installing the pinned anchors of benches/requirements.txt first if needed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"installing the benches' anchors from {REQUIREMENTS}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
        return importlib.import_module(module)


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Run every candidate once per round, ``repeats`` rounds after one warm-up round (A B A B):
    the seconds of each, round by round, and each candidate's last result."""
    results = {name: function() for name, function in candidates.items()}
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, function in candidates.items():
            started = time.perf_counter()
            results[name] = function()
            seconds[name].append(time.perf_counter() - started)
    return seconds, results


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of numerator / denominator, each pair timed in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


class RecordingFunction(torch.nn.Module):
    """The ODE function, recording the batch size of every call."""

    def __init__(self, func: torch.nn.Module):
        super().__init__()
        self.func = func
        self.batch_sizes: list[int] = []

    def forward(self, t, h):
        self.batch_sizes.append(int(h.shape[0]))
        return self.func(t, h)


def convolutions_of(func: torch.nn.Module) -> list[torch.nn.Conv2d]:
    convs = [module for module in func.modules() if isinstance(module, torch.nn.Conv2d)]
    if not convs:
        raise SystemExit("the model's ODE function has no Conv2d: no convolution floor to measure")
    return convs


def floor_run(convs, batch_sizes, state_shape, gradient: bool) -> Callable[[], None]:
    """The function's convolutions alone on the recorded batch sizes (state channels only:
    a time-concatenated convolution's extra channel is not counted, so the floor is strict)."""
    channels = state_shape[0]
    weights = [(conv.weight[:, -channels:].detach().contiguous(), conv.bias) for conv in convs]
    inputs = {size: torch.randn(size, *state_shape) for size in set(batch_sizes)}

    def run() -> None:
        for size in batch_sizes:
            x = inputs[size].requires_grad_(gradient)
            for weight, bias in weights:
                out = F.conv2d(x, weight, None if bias is None else bias.detach(), 1, 1)
                if gradient:
                    torch.autograd.grad(out.sum(), x)

    return run


def conv_flops(convs, batch_sizes, state_shape) -> float:
    channels, height, width = state_shape
    per_sample = sum(2 * conv.out_channels * channels * 9 * height * width for conv in convs)
    return per_sample * sum(batch_sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="odenet-mnist5k")
    parser.add_argument("--pairs", type=int, default=256, help="(image, tolerance) pairs of the forward workload")
    parser.add_argument("--grad-images", type=int, default=100, help="images of the forward + gradient workload")
    parser.add_argument("--tol", type=float, default=None, help="default: the model's tol_train")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip", default="", help="comma-separated solvers not to run (torchode, batched_torchdiffeq)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    loaded = load_model(args.model, device="cpu")
    model = loaded.model  # as load_model gives it (nodeguard 0.7 freezes its weights: image gradients only)
    tol = args.tol if args.tol is not None else loaded.tol_train
    test = load_dataset(loaded.dataset).test
    count = max(args.pairs, args.grad_images)
    images, labels = test.float_images(slice(0, count)), test.labels[:count]
    func = model.odeblock.func
    with torch.no_grad():
        states = model.features(images[: args.pairs])
    state_shape = tuple(states.shape[1:])
    convs = convolutions_of(func)
    tols = torch.full((args.pairs,), tol, dtype=torch.float64)
    report: dict = {
        "model": loaded.name,
        "tol": tol,
        "pairs": args.pairs,
        "grad_images": args.grad_images,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }

    # forward -------------------------------------------------------------------------
    recording = RecordingFunction(func)
    with torch.no_grad():
        reference = solve_per_sample(recording, states, tols)
    forward_calls = list(recording.batch_sizes)
    forward_flops = conv_flops(convs, forward_calls, state_shape)

    def per_sample_forward():
        with torch.no_grad():
            return solve_per_sample(func, states, tols)

    candidates: dict[str, Callable[[], object]] = {
        "per_sample": per_sample_forward,
        "convolution_floor": floor_run(convs, forward_calls, state_shape, gradient=False),
    }
    if "torchode" not in skip:
        torchode = require("torchode")
        flat_shape = (-1, *state_shape)

        def flat_func(t, y):
            return func(t.view(-1, 1, 1, 1).to(y.dtype), y.view(flat_shape)).flatten(1)

        term = torchode.ODETerm(flat_func)
        solver = torchode.AutoDiffAdjoint(
            torchode.Dopri5(term=term), torchode.IntegralController(atol=tol, rtol=tol, term=term)
        )
        problem = torchode.InitialValueProblem(
            y0=states.flatten(1),
            t_start=torch.zeros(args.pairs, dtype=torch.float64),
            t_end=torch.full((args.pairs,), model.odeblock.t_end, dtype=torch.float64),
        )

        def torchode_forward():
            with torch.no_grad():
                return solver.solve(problem)

        candidates["torchode"] = torchode_forward
    if "batched_torchdiffeq" not in skip:

        def batched_forward():
            with torch.no_grad():
                out = model.odeblock(states, tol=tol)
            return out, model.odeblock.last_nfe

        candidates["batched_torchdiffeq"] = batched_forward

    seconds, results = interleaved(candidates, args.repeats)
    ours = seconds["per_sample"]
    with torch.no_grad():
        logits = model.head(results["per_sample"].y1)
    forward: dict = {name: {"seconds": statistics.median(times)} for name, times in seconds.items()}
    forward["per_sample"].update(
        mean_nfe=float(reference.nfe.double().mean()),
        gflops_per_s=forward_flops / statistics.median(ours) / 1e9,
        share_of_floor=median_ratio(seconds["convolution_floor"], ours),
    )
    forward["convolution_floor"]["gflops_per_s"] = forward_flops / forward["convolution_floor"]["seconds"] / 1e9
    if "torchode" in results:
        theirs = results["torchode"]
        with torch.no_grad():
            their_logits = model.head(theirs.ys[:, -1].view(flat_shape))
        forward["torchode"].update(
            version=getattr(torchode, "__version__", "1.0.1"),
            mean_nfe=float(theirs.stats["n_f_evals"].double().mean()),
            max_logit_difference=float((their_logits - logits).abs().max()),
            same_class=int((their_logits.argmax(1) == logits.argmax(1)).sum()),
        )
        forward["per_sample"]["speedup_over_torchode"] = median_ratio(seconds["torchode"], ours)
        # per function evaluation: torchode takes other steps (another initial step size)
        forward["per_sample"]["speedup_over_torchode_per_evaluation"] = forward["per_sample"][
            "speedup_over_torchode"
        ] * (forward["per_sample"]["mean_nfe"] / forward["torchode"]["mean_nfe"])
    if "batched_torchdiffeq" in results:
        nfe = results["batched_torchdiffeq"][1]
        evaluations = float(reference.nfe.sum())
        forward["batched_torchdiffeq"].update(nfe=nfe)
        forward["per_sample"]["speedup_over_batched"] = median_ratio(seconds["batched_torchdiffeq"], ours)
        # the batched call evaluates every sample as often as its hardest one needs
        forward["per_sample"]["speedup_over_batched_per_evaluation"] = forward["per_sample"]["speedup_over_batched"] * (
            evaluations / (nfe * args.pairs)
        )
    report["forward"] = forward

    # forward + input gradient -----------------------------------------------------------
    grad_images, grad_labels = images[: args.grad_images], labels[: args.grad_images]
    grad_tols = torch.full((args.grad_images,), tol, dtype=torch.float64)

    def input_gradient(logits_of):
        x = grad_images.clone().requires_grad_(True)
        out = logits_of(x)
        (gradient,) = torch.autograd.grad(out.gather(1, grad_labels[:, None]).sum(), x)
        return gradient

    recording.batch_sizes.clear()
    input_gradient(lambda x: model.head(solve_per_sample(recording, model.features(x), grad_tols).y1))
    gradient_calls = list(recording.batch_sizes)
    with torch.no_grad():
        grad_states = model.features(grad_images)

    def ode_gradient(solve):
        """The input gradient through the ODE block alone (the stem is not the solver's work)."""
        h = grad_states.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(model.head(solve(h)).gather(1, grad_labels[:, None]).sum(), h)
        return gradient

    candidates = {
        "per_sample": lambda: ode_gradient(lambda h: solve_per_sample(func, h, grad_tols).y1),
        "convolution_floor": floor_run(convs, gradient_calls, state_shape, gradient=True),
        "per_sample_with_stem": lambda: input_gradient(
            lambda x: model.head(solve_per_sample(func, model.features(x), grad_tols).y1)
        ),
    }
    if "batched_torchdiffeq" not in skip:
        candidates["batched_torchdiffeq"] = lambda: ode_gradient(lambda h: model.odeblock(h, tol=tol))
    seconds, _ = interleaved(candidates, args.repeats)
    ours = seconds["per_sample"]
    gradient: dict = {name: {"seconds": statistics.median(times)} for name, times in seconds.items()}
    gradient["per_sample"]["share_of_floor"] = median_ratio(seconds["convolution_floor"], ours)
    if "batched_torchdiffeq" in seconds:
        gradient["batched_torchdiffeq"]["nfe"] = model.odeblock.last_nfe
        gradient["per_sample"]["speedup_over_batched"] = median_ratio(seconds["batched_torchdiffeq"], ours)
    report["forward_and_input_gradient"] = gradient
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
