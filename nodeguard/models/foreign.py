"""Neural ODE checkpoints written by other code: read safely, rebuilt as three parts.

Two public codes made most MNIST / CIFAR-10 ODE-Nets in the wild; both build a stem, one
ODE block and a head of the same kind, under other parameter names:

- ``torchdiffeq-example``: torchdiffeq's ``examples/odenet_mnist.py`` (Chen et al.,
  NeurIPS 2018). One ``nn.Sequential``: the stem (``--downsampling-method conv``: conv
  3x3, GroupNorm, ReLU, two stride-2 4x4 convs with GroupNorm/ReLU between; ``res``:
  conv 3x3 and two stride-2 pre-activation residual blocks), an ``ODEBlock`` holding
  ``odefunc`` integrated over [0, 1] at rtol = atol = ``args.tol``, and the head
  (GroupNorm, ReLU, average pool, flatten, Linear). Saved as
  ``{'state_dict': ..., 'args': argparse.Namespace}``; images as ``ToTensor`` gives them.
- ``neural-ode-features``: the WIFS 2019 paper's code (Carrara et al.,
  fabiocarrara/neural-ode-features): ``downsample.module.*`` (``residual``,
  ``convolution`` or ``minimal``), ``odeblock.odefunc.*``, ``classifier.module.*``
  (dropout before the flatten when used). Saved as ``{'epoch', 'params': vars(args),
  'model': state_dict, 'optim', 'metrics'}``; CIFAR-10 inputs normalised outside the
  model when ``params['augmentation']`` ends in ``+norm``.

Both are read with ``torch.load(weights_only=True)``, allowing exactly the non-tensor
types the format needs (``argparse.Namespace`` for the first, none for the second); a
pickle that needs anything more (code) is refused. The parts are rebuilt by
:func:`stem_ode_head`, a parts factory (:mod:`nodeguard.models.parts`), with widths read
from the weights, and the weights load through a view in the checkpoint's own layout, so
that a mismatch is reported under the checkpoint's own parameter names.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nodeguard.errors import CheckpointRefusedError
from nodeguard.models.layers import ODEFunc, ResBlock, group_norm
from nodeguard.models.parts import ODEParts, ode_parts_factory

FORMATS = ("torchdiffeq-example", "neural-ode-features")
ALLOWED_TYPES: dict[str, list[Any]] = {"torchdiffeq-example": [argparse.Namespace], "neural-ode-features": []}
STEMS = ("conv", "res")
# neural-ode-features' CIFAR-10 normalisation (utils.py, augmentation '...+norm'), applied outside its model
NODE_FEATURES_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
NODE_FEATURES_CIFAR_STD = (0.2023, 0.1994, 0.2010)
FACTORY = "nodeguard.models.foreign:stem_ode_head"


@ode_parts_factory
def stem_ode_head(in_channels: int, num_classes: int, stem: str, widths: list[int], dropout: bool = False) -> ODEParts:
    """The parts of both codes' ODE-Nets, named as nodeguard's layers name them.

    Args:
        in_channels: image channels C.
        num_classes: logits per image.
        stem: "conv" (conv 3x3 -> GN, ReLU, conv 4x4/2 -> GN, ReLU, conv 4x4/2) or "res"
            (conv 3x3 -> residual block /2 -> residual block /2).
        widths: [w0, w1, F], the output channels of the stem's three stages; F is the ODE
            state's channel count.
        dropout: whether the head has a Dropout slot before its flatten (inactive in eval mode).

    Returns:
        :class:`ODEParts`: features an ``nn.Sequential`` (7 layers for "conv", 3 for
        "res"), odefunc a :class:`nodeguard.models.layers.ODEFunc`, head an ``nn.Sequential``.

    Raises:
        ValueError: an unknown stem or a widths list that is not three positive integers.
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, not {stem!r}")
    if len(widths) != 3 or any(int(width) < 1 for width in widths):
        raise ValueError(f"widths must be three positive channel counts, not {widths!r}")
    w0, w1, filters = (int(width) for width in widths)
    layers: list[nn.Module]
    if stem == "conv":
        layers = [
            nn.Conv2d(in_channels, w0, 3, 1),
            group_norm(w0),
            nn.ReLU(),
            nn.Conv2d(w0, w1, 4, 2, 1),
            group_norm(w1),
            nn.ReLU(),
            nn.Conv2d(w1, filters, 4, 2, 1),
        ]
    else:
        layers = [nn.Conv2d(in_channels, w0, 3, 1), ResBlock(w0, w1, stride=2), ResBlock(w1, filters, stride=2)]
    head: list[nn.Module] = [group_norm(filters), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
    head += [nn.Dropout(0.0)] if dropout else []
    head += [nn.Flatten(), nn.Linear(filters, num_classes)]
    return ODEParts(nn.Sequential(*layers), ODEFunc(filters), nn.Sequential(*head))


class _Holder(nn.Module):
    """A container whose attribute names give a checkpoint's parameter prefixes."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


# nodeguard's layers name two things differently from both codes
_OURS = ((re.compile(r"(?<=\.)downsample(?=\.)"), "shortcut"), (re.compile(r"\._layer\."), ".conv."))
_THEIRS = (
    (re.compile(r"(?<=\.)shortcut(?=\.)"), "downsample"),
    (re.compile(r"\.conv\.(?=(weight|bias)$)"), "._layer."),
)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


@dataclass
class ForeignModel:
    """What an importer read from a checkpoint, before it is registered.

    Attributes:
        format: one of :data:`FORMATS`.
        factory_kwargs: the keyword arguments of :func:`stem_ode_head` that rebuild it.
        parts: the rebuilt parts, holding the checkpoint's weights.
        num_classes, in_channels: read from the weights.
        tol: the training tolerance stored in the checkpoint (None when it has none).
        mean, std: the input normalisation the code applied in training (None: unknown).
        settings: the checkpoint's own settings as plain values (for config.yaml).
    """

    format: str
    factory_kwargs: dict[str, Any]
    parts: ODEParts
    num_classes: int
    in_channels: int
    tol: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    settings: dict[str, Any] = field(default_factory=dict)


def safe_load(path: Path, format: str) -> Any:
    """``torch.load(path, weights_only=True)`` allowing only the format's own non-tensor types.

    Raises:
        CheckpointRefusedError: the file is missing or unreadable, or its pickle needs a
            type that is not allowed (code that would run on loading): the message names it.
    """
    allowed = ALLOWED_TYPES[format]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the refusal says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointRefusedError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointRefusedError(f"{path} is a folder, not a checkpoint file") from None
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        said = [line.strip() for line in str(exc).splitlines() if line.strip().startswith("Unsupported")]
        what = f"it needs {needed.group(1)}" if needed else "its pickle holds more than weights"
        what += f" ({said[0][:80]})" if said and not needed else ""
        allowed_names = ", ".join(f"{kind.__module__}.{kind.__qualname__}" for kind in allowed) or "none"
        hint = ""
        if needed and needed.group(1) == "argparse.Namespace":
            hint = " (torchdiffeq's example saves its args as one: try --format torchdiffeq-example)"
        raise CheckpointRefusedError(
            f"refused {path}: {what}, which a weights-only load does not allow for the {format} format "
            f"(allowed beyond tensors: {allowed_names}){hint}; nodeguard never runs code from a checkpoint"
        ) from None
    except Exception as exc:  # a truncated zip, a text file, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointRefusedError(
            f"{path} is not a PyTorch checkpoint torch.load can read ({exc.__class__.__name__}: {reason[:120]})"
        ) from None


def _plain(value: Any) -> Any:
    """A YAML-safe copy of a checkpoint setting (others become their str())."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


def _state_dict(checkpoint: Any, key: str, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict, without the ``module.`` prefix that nn.DataParallel adds."""

    def tensors(value: Any) -> bool:
        return (
            isinstance(value, dict) and bool(value) and all(isinstance(item, torch.Tensor) for item in value.values())
        )

    if tensors(checkpoint):  # torch.save(model.state_dict(), path): the weights alone
        state = checkpoint
    else:
        state = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    if not tensors(state):
        found = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        other = {"state_dict": "torchdiffeq-example", "model": "neural-ode-features"}
        hint = (
            next(
                (
                    f"; it has '{name}': try --format {fmt}"
                    for name, fmt in other.items()
                    if name != key and tensors(checkpoint.get(name))
                ),
                "",
            )
            if isinstance(checkpoint, dict)
            else ""
        )
        raise CheckpointRefusedError(
            f"{path} holds neither a state_dict of tensors nor one under '{key}' (its keys: {found}){hint}"
        )
    if state and all(str(name).startswith("module.") for name in state):
        state = {str(name)[len("module.") :]: value for name, value in state.items()}
    return state


def _shape(state: dict[str, torch.Tensor], key: str, dim: int) -> int:
    if key not in state:
        raise CheckpointRefusedError(f"the checkpoint's parameters do not fit: missing key {key!r}")
    return int(state[key].shape[dim])


def _load_into_view(view: nn.Module, state: dict[str, torch.Tensor], layout: str) -> None:
    """Load the checkpoint's weights through ``view`` (its own layout), strictly.

    Raises:
        CheckpointRefusedError: naming the first missing or unexpected key, or wrong shape.
    """
    expected = {_rename(key, _THEIRS): value for key, value in view.state_dict().items()}
    for key in state:
        if key not in expected:
            raise CheckpointRefusedError(
                f"the checkpoint's parameters do not fit the {layout} layout: unexpected key {key!r}"
            )
    for key, value in expected.items():
        if key not in state:
            raise CheckpointRefusedError(
                f"the checkpoint's parameters do not fit the {layout} layout: missing key {key!r}"
            )
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointRefusedError(
                f"the checkpoint's parameters do not fit the {layout} layout: {key!r} has shape "
                f"{list(state[key].shape)}, the layout needs {list(value.shape)}"
            )
    view.load_state_dict({_rename(key, _OURS): value.float() for key, value in state.items()}, strict=True)


def _build(format: str, kwargs: dict[str, Any]) -> tuple[ODEParts, nn.Module]:
    parts = stem_ode_head(**kwargs)
    if format == "torchdiffeq-example":
        layers = [*list(parts.features.children()), _Holder(odefunc=parts.odefunc), *list(parts.head.children())]
        view: nn.Module = nn.Sequential(*layers)
    else:
        view = _Holder(
            downsample=_Holder(module=parts.features),
            odeblock=_Holder(odefunc=parts.odefunc),
            classifier=_Holder(module=parts.head),
        )
    return parts, view


def _layout_kwargs(
    state: dict[str, torch.Tensor], prefix: str, stem: str | None, linear: str, dropout: bool
) -> dict[str, Any]:
    """The :func:`stem_ode_head` arguments of a stem under ``prefix`` (both codes lay their
    stems out alike): the stem kind (from the weights when the settings do not say), the
    widths of its three stages, the channels, and the classes of the Linear ``linear``.

    Raises:
        CheckpointRefusedError: a key the layout needs is missing.
    """
    if stem is None:
        stem = "res" if f"{prefix}1.norm1.weight" in state else "conv"
    if stem == "conv":
        widths = [_shape(state, f"{prefix}{i}.weight", 0) for i in (0, 3, 6)]
    else:
        widths = [_shape(state, f"{prefix}0.weight", 0)] + [
            _shape(state, f"{prefix}{i}.conv1.weight", 0) for i in (1, 2)
        ]
    return {
        "in_channels": _shape(state, f"{prefix}0.weight", 1),
        "num_classes": _shape(state, linear, 0),
        "stem": stem,
        "widths": widths,
        "dropout": dropout,
    }


def _foreign(
    format: str,
    kwargs: dict[str, Any],
    parts: ODEParts,
    settings: dict[str, Any],
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> ForeignModel:
    tol = settings.get("tol")
    return ForeignModel(
        format,
        kwargs,
        parts,
        int(kwargs["num_classes"]),
        int(kwargs["in_channels"]),
        float(tol) if tol is not None else None,
        mean,
        std,
        settings,
    )


def read_torchdiffeq_example(path: Path) -> ForeignModel:
    """A checkpoint of torchdiffeq's ``examples/odenet_mnist.py`` (see the module docstring).

    Raises:
        CheckpointRefusedError: unsafe, unreadable, a ResNet (``--network resnet``), or
            parameters that do not fit the example's layout.
    """
    format = "torchdiffeq-example"
    checkpoint = safe_load(path, format)
    state = _state_dict(checkpoint, "state_dict", path)
    args = checkpoint.get("args")
    settings = _plain(vars(args)) if isinstance(args, argparse.Namespace) else {}
    if settings.get("network", "odenet") != "odenet" or not any(".odefunc." in key for key in state):
        raise CheckpointRefusedError(
            f"{path} holds no ODE block (network {settings.get('network', '?')!r}); nodeguard imports ODE-Nets"
        )
    blocks = {key.split(".")[0] for key in state if ".odefunc." in key}
    if not all(block.isdigit() for block in blocks):
        raise CheckpointRefusedError(
            f"{path} is not in the layout of torchdiffeq's example (an nn.Sequential): its ODE block is "
            f"{sorted(blocks)[0]!r}, not a position; try --format neural-ode-features"
        )
    block = min(int(block) for block in blocks)
    stem = {"conv": "conv", "res": "res"}.get(settings.get("downsampling_method", ""))
    kwargs = _layout_kwargs(state, "", stem, f"{block + 5}.weight", dropout=False)
    parts, view = _build(format, kwargs)
    _load_into_view(view, state, f"torchdiffeq example ({kwargs['stem']} stem)")
    # the example feeds images as ToTensor gives them, for its one-channel MNIST
    mean, std = ((0.0,), (1.0,)) if kwargs["in_channels"] == 1 else (None, None)
    return _foreign(format, kwargs, parts, settings, mean, std)


def read_neural_ode_features(path: Path) -> ForeignModel:
    """A checkpoint of fabiocarrara/neural-ode-features' ``train.py`` (see the module docstring).

    Raises:
        CheckpointRefusedError: unsafe, unreadable, a ResNet, an ``ode``/``ode2`` stem
            (an ODE block inside the stem, not supported), or parameters that do not fit.
    """
    format = "neural-ode-features"
    checkpoint = safe_load(path, format)
    state = _state_dict(checkpoint, "model", path)
    params = checkpoint.get("params") if isinstance(checkpoint.get("params"), dict) else {}
    settings = _plain(params)
    if settings.get("model", "odenet") != "odenet" or not any(key.startswith("odeblock.odefunc.") for key in state):
        raise CheckpointRefusedError(
            f"{path} holds no ODE block (model {settings.get('model', '?')!r}); nodeguard imports ODE-Nets"
        )
    downsample = settings.get("downsample")
    if downsample in ("ode", "ode2") or any(key.startswith("downsample.odeblock.") for key in state):
        raise CheckpointRefusedError(
            f"{path} has an '{downsample or 'ode'}' stem (an ODE block inside the downsampling): not supported; "
            "import models with a residual, convolution or minimal stem"
        )
    stem = {"residual": "res", "convolution": "conv", "minimal": "conv"}.get(str(downsample))
    dropout = "classifier.module.5.weight" in state
    linear = f"classifier.module.{5 if dropout else 4}.weight"
    kwargs = _layout_kwargs(state, "downsample.module.", stem, linear, dropout)
    parts, view = _build(format, kwargs)
    _load_into_view(view, state, f"neural-ode-features ({downsample or kwargs['stem']} stem)")
    channels = int(kwargs["in_channels"])
    augmentation = settings.get("augmentation")
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    if channels == 1 or augmentation == "none":
        mean, std = (0.0,) * channels, (1.0,) * channels  # ToTensor only
    elif isinstance(augmentation, str) and augmentation.endswith("+norm"):
        mean, std = NODE_FEATURES_CIFAR_MEAN, NODE_FEATURES_CIFAR_STD
    else:
        mean, std = None, None  # not stored: the importer asks
    return _foreign(format, kwargs, parts, settings, mean, std)


READERS = {"torchdiffeq-example": read_torchdiffeq_example, "neural-ode-features": read_neural_ode_features}
