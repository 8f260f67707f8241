"""Bench: one process with several threads against several one-thread processes at once.

What an attack step costs (the forward and the input gradient of ``--images`` test digits
through a registered model, each solved alone at tol_train, as CW pays per step), in
three arrangements, each a fresh Python process timing ``--steps`` steps after a warm-up:

- ``threads``: one process, torch's ``--threads`` threads (default: the machine's cores);
- ``one_thread``: one process, one thread, alone;
- ``together``: ``--threads`` processes of one thread each, running at the same time (what
  ``torchrun --nproc-per-node N ... --threads 1`` does).

Throughput is steps per second over all processes; ``ranks_speedup`` is the together
throughput over the one-process one, the gain of running ranks instead of threads. The
arrangements run in turn, ``--repeats`` rounds (A B A B); figures are medians.

    python benches/threads.py --model odenet-mnist5k --images 100 --steps 6 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(model_name: str, images: int, steps: int, threads: int) -> float:
    """Median seconds of one attack step, in this process with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    from nodeguard.attacks.pinned import PinnedTolerance, classification_margin
    from nodeguard.data.datasets import load_dataset
    from nodeguard.models.loading import load_model

    loaded = load_model(model_name)
    split = load_dataset(loaded.config["dataset"]).test
    x0, labels = split.float_images(slice(0, images)), split.labels[:images]
    model = PinnedTolerance(loaded.model, None).eval()

    def step() -> None:
        x = x0.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(classification_margin(model(x), labels).sum(), x)

    step()
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def run_workers(args: argparse.Namespace, processes: int, threads: int) -> list[float]:
    """Start ``processes`` workers at once with ``threads`` threads each; their median step seconds."""
    command = [sys.executable, __file__, "--worker", "--model", args.model, "--images", str(args.images)]
    command += ["--steps", str(args.steps), "--threads", str(threads)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment) for _ in range(processes)]
    return [float(process.communicate()[0].strip().splitlines()[-1]) for process in running]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="odenet-mnist5k")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(args.model, args.images, args.steps, args.threads))
        return
    rounds: dict[str, list[float]] = {"threads": [], "one_thread": [], "together": [], "ranks_speedup": []}
    for _ in range(args.repeats):
        threaded = run_workers(args, 1, args.threads)[0]
        alone = run_workers(args, 1, 1)[0]
        together = run_workers(args, args.threads, 1)
        rounds["threads"].append(threaded)
        rounds["one_thread"].append(alone)
        rounds["together"].append(statistics.median(together))
        rounds["ranks_speedup"].append(sum(1 / seconds for seconds in together) * threaded)
    result = {
        "settings": {name: value for name, value in vars(args).items() if name != "worker"},
        "step_seconds": {name: statistics.median(values) for name, values in rounds.items() if name != "ranks_speedup"},
        "ranks_speedup": statistics.median(rounds["ranks_speedup"]),
        "rounds": rounds,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
