"""Device selection."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from nodeguard.errors import ConfigError, unknown_name_error
from nodeguard.runtime.distributed import current_ranks

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[str, ...] = get_args(DeviceName)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is an error.

    In a sharded job (torchrun) each process of a machine takes its own GPU: the one
    numbered by its local rank (modulo the GPUs there are).
    """
    if name not in DEVICE_CHOICES:
        raise unknown_name_error("device", name, DEVICE_CHOICES)
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "{device} cuda was asked for but no CUDA GPU is available; use {device} cpu", settings="device"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", current_ranks().local_rank % torch.cuda.device_count())
    return torch.device(name)
