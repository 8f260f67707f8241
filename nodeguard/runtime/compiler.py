"""Optional ``torch.compile`` of the ODE function, falling back to the eager function where it fails.

Off by default: measured on a 2-core CPU (benches/solver.py), the per-sample solver spends
most of its time in the convolutions already, and a compiled ODE function gave the same
forward time and an 8-11% slower forward + gradient, after 12 s and 34 s of compiling. Where the
elementwise work weighs more (a GPU, where each small operation is a kernel launch), set
``NODEGUARD_COMPILE=1``. Where no compiler works (no C++ toolchain, an operation the
compiler does not take), the first call warns once and every call runs the eager function.
The backward pass is compiled lazily, at the first gradient: a failure there is not caught
(it surfaces from ``torch.autograd.grad``; unset ``NODEGUARD_COMPILE`` to avoid it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from nodeguard.constants import COMPILE_VARIABLE


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the compiler failed" (dynamo's and inductor's), not "func failed"."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:  # pragma: no cover  (torch without dynamo)
        pass
    try:
        from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

        errors.extend([InvalidCxxCompiler, CppCompileError])
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


COMPILE_ERRORS = _compile_errors()


def compile_requested() -> bool:
    """Whether ``NODEGUARD_COMPILE`` asks for a compiled ODE function (1, true, yes or on)."""
    return os.environ.get(COMPILE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


class CompiledFunction:
    """``func`` through ``torch.compile(func, dynamic=True)``, or ``func`` itself once compiling failed.

    Called as ``func`` is: ``(t, h) -> dh/dt``. The first compiler error of a forward call
    (compiling happens there: dynamo's and inductor's exceptions, :data:`COMPILE_ERRORS`)
    is reported once as a ``RuntimeWarning`` and kept in :attr:`failure`; that call and
    every later one run ``func`` eagerly. Any other exception is ``func``'s own and is raised.

    Args:
        func: the ODE function, an ``nn.Module`` or a callable ``(t, h) -> tensor``.
    """

    def __init__(self, func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.func = func
        self.failure: str | None = None
        self._compiled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __call__(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.failure is None:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.func, dynamic=True)
                return self._compiled(t, h)
            except COMPILE_ERRORS as exc:
                first_line = (str(exc).strip().splitlines() or [""])[0][:200]
                self.failure = f"{type(exc).__name__}: {first_line}"
                warnings.warn(
                    f"torch.compile failed on the ODE function ({self.failure}); solving with the eager function",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.func(t, h)
