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

Both are read with ``torch.load(weights_only=True)``, allowing beyond tensors exactly
the non-tensor types the format needs (``argparse.Namespace`` for the first, none for the
second) and the plain values that checkpoints of every kind carry beside their weights,
each of which builds a value from data and runs no code (:data:`PLAIN_TYPES`, the types
PyTorch's serialization notes show how to allow): numpy scalars (a ``best_acc`` of type
``numpy.float64``), dtypes and numeric arrays, and ``pathlib`` paths. A pickle that needs
anything more (code) is refused, naming what it needs. A file that is not a checkpoint at
all (text, an HTML page, a Git LFS pointer, an empty or truncated download) is refused
as what it is, before ``torch.load`` sees it. Parameter names are read through the
wrappers training code adds: ``module.`` (``nn.DataParallel``, DDP) and ``_orig_mod.``
(``torch.compile``), alone or nested. The parts are rebuilt by
:func:`stem_ode_head`, a parts factory (:mod:`nodeguard.models.parts`), with widths read
from the weights, and the weights load through a view in the checkpoint's own layout, so
that a mismatch is reported under the checkpoint's own parameter names.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nodeguard.errors import CheckpointRefusedError
from nodeguard.models.layers import ODEFunc, ResBlock, group_norm
from nodeguard.models.parts import ODEParts, ode_parts_factory

FORMATS = ("torchdiffeq-example", "neural-ode-features")
ALLOWED_TYPES: dict[str, list[Any]] = {"torchdiffeq-example": [argparse.Namespace], "neural-ode-features": []}
WEIGHTS_KEY = {"torchdiffeq-example": "state_dict", "neural-ode-features": "model"}


def _plain_types() -> list[Any]:
    """The plain, non-tensor types a checkpoint may hold beside its weights, for ``safe_globals``.

    Each one builds a value from data and runs no code:

    - ``numpy`` ``multiarray.scalar`` (``numpy._core`` in numpy 2, ``numpy.core`` before):
      a scalar (``numpy.float64(0.93)``) made from a dtype and its raw bytes;
    - ``numpy.dtype`` and the classes of the numeric, boolean, text and date dtypes
      (``numpy.dtypes.Float64DType``, ...): a type descriptor made from a type code, and
      its byte order set from a tuple (not the object dtype, whose values are Python objects);
    - ``numpy`` ``multiarray._reconstruct`` with ``numpy.ndarray``: an empty array, then its
      raw bytes copied in (an object array is refused: its dtype is not allowed);
    - ``pathlib.PurePosixPath``, ``PureWindowsPath``, ``PosixPath``, ``WindowsPath``: a path
      made from its parts, as text, without touching the file system (a path saved on
      another system is read as the pure path of that system).
    """
    scalar = np.float64(0).__reduce__()[0]
    rebuild = np.ndarray.__reduce__(np.zeros(1))[0]
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGSUV"} | {
        type(np.dtype("M8[ns]")),
        type(np.dtype("m8[ns]")),
    }
    entries: list[Any] = [np.ndarray, np.dtype, *sorted(dtype_classes, key=lambda kind: kind.__name__)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(scalar, f"{module}.scalar"), (rebuild, f"{module}._reconstruct")]
    native = {"PosixPath": pathlib.PosixPath, "WindowsPath": pathlib.WindowsPath}
    for name, pure in (("PosixPath", pathlib.PurePosixPath), ("WindowsPath", pathlib.PureWindowsPath)):
        usable = native[name] if isinstance(pathlib.Path(), native[name]) else pure  # the other system's: pure
        for module in ("pathlib", "pathlib._local"):  # Python 3.13 pickles name pathlib._local
            entries += [(usable, f"{module}.{name}"), (pure, f"{module}.Pure{name}")]
    return entries


PLAIN_TYPES = _plain_types()
PLAIN_TYPE_NAMES = "numpy scalars, dtypes and numeric arrays, pathlib paths"
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


GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SNIFFED_BYTES = 4096
TORCH_LEGACY_MAGIC = b"\x8a\x0a"  # torch.save's legacy format: a pickled magic number, a 10-byte integer
# how a pickle of protocol 0 (text) of a checkpoint begins: torch's magic number, a dict, a list, an OrderedDict
PICKLE_TEXT_STARTS = ("L119547037146038801333356", "(dp", "(lp", "ccollections\nOrderedDict")
TRUNCATED = "is truncated (it ends before its contents do): the download or copy stopped early; get the file again"


def _not_a_checkpoint(path: Path) -> str | None:
    """What the file is when it is plainly not a checkpoint (read from its first bytes), else None.

    Raises:
        CheckpointRefusedError: the file is missing, a folder, or cannot be read.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(SNIFFED_BYTES)
    except FileNotFoundError:
        raise CheckpointRefusedError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointRefusedError(f"{path} is a folder, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointRefusedError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        return "is empty (0 bytes): the download or copy did not finish; get the file again"
    if head.startswith(GIT_LFS_POINTER):
        declared = re.search(rb"\bsize (\d+)", head)
        real = f" of {int(declared.group(1)):,} bytes" if declared else ""
        return (
            f"is a Git LFS pointer ({size} bytes of text that stand for the real file{real}, which was never "
            "downloaded): run `git lfs pull` in its repository, or download the file itself"
        )
    if head.lstrip().lower().startswith(HTML_STARTS):
        return (
            "is a web page (HTML), not a checkpoint: the download saved the page of a link (a sign-in, a warning "
            "or an error page) in place of the file; download the file itself"
        )
    if head.startswith(HDF5_SIGNATURE):
        return "is an HDF5 file (as Keras saves models), not a PyTorch checkpoint"
    if head.startswith(b"\x93NUMPY"):
        return "is a NumPy array file (.npy), not a PyTorch checkpoint"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return (
            "is a safetensors file; nodeguard imports files saved by torch.save: save its tensors with "
            "torch.save(safetensors.torch.load_file(FILE), 'weights.pth') and import that"
        )
    if head[:1] == b"\x80" and head[2:4] != TORCH_LEGACY_MAGIC:  # a pickle, but not torch.save's legacy format
        return (
            "is a plain pickle (pickle.dump), not a file torch.save wrote: it can be read only by running the code "
            "its pickle names, and nodeguard never runs code from a checkpoint. If you trust the file, load it with "
            "pickle, save its weights with torch.save and import that"
        )
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip archive
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return (
                f"is truncated or damaged: a zip archive (as torch.save writes) of {size:,} bytes whose end is "
                "missing; the download or copy stopped early: get the file again"
            )
        if not any(name.endswith("data.pkl") for name in names):
            return "is a zip archive, but not one torch.save wrote (it holds no data.pkl)"
        return None
    if b"\0" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if text.startswith(PICKLE_TEXT_STARTS):
            return None  # a pickle of protocol 0, which is text
        first = " ".join(text.split())[:60]
        return f"is a text file, not a checkpoint (it begins {first!r})"
    return None


def safe_load(path: Path, format: str) -> Any:
    """``torch.load(path, weights_only=True)`` allowing only the format's own non-tensor
    types and the plain values of :data:`PLAIN_TYPES`.

    Raises:
        CheckpointRefusedError: the file is missing or unreadable; not a checkpoint at all
            (text, an HTML page, a Git LFS pointer, empty or truncated: said as such); or
            its pickle needs a type that is not allowed (code that would run on loading):
            the message names it.
    """
    allowed = ALLOWED_TYPES[format]
    plainly = _not_a_checkpoint(path)
    if plainly is not None:
        could_hold_code = "never runs code" in plainly  # refused as such
        raise CheckpointRefusedError(f"refused {path}: it {plainly}" if could_hold_code else f"{path} {plainly}")
    try:
        with torch.serialization.safe_globals([*PLAIN_TYPES, *allowed]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the refusal says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointRefusedError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointRefusedError(f"{path} is a folder, not a checkpoint file") from None
    except EOFError:
        raise CheckpointRefusedError(f"{path} {TRUNCATED}") from None
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if needed is None:
            if "truncated" in str(exc):
                raise CheckpointRefusedError(f"{path} {TRUNCATED}") from None
            built = re.search(r"but got <class '([\w.]+)'>", str(exc))
            if built is None:
                said = [line.strip() for line in str(exc).splitlines() if line.strip().startswith("Unsupported")]
                detail = f" ({said[0][:80]})" if said else ""
                raise CheckpointRefusedError(
                    f"{path} is not a PyTorch checkpoint: its contents are not a pickle that torch.save writes{detail}"
                ) from None
            needed_name = built.group(1)
        else:
            needed_name = needed.group(1)
        allowed_names = ", ".join([PLAIN_TYPE_NAMES, *(f"{kind.__module__}.{kind.__qualname__}" for kind in allowed)])
        refused = (
            f"refused {path}: it needs {needed_name}, which a weights-only load does not allow for the {format} "
            f"format (allowed beyond tensors: {allowed_names})"
        )
        if needed_name == "argparse.Namespace" and format != "torchdiffeq-example" and _fits_the_example(path):
            raise CheckpointRefusedError(
                f"{refused}; torchdiffeq's example saves its args as one, and the weights are in its layout: "
                "try {format} torchdiffeq-example",
                settings="format",
            ) from None
        raise CheckpointRefusedError(
            f"{refused}; nodeguard never runs code from a checkpoint. If you trust the file, save its weights alone "
            f"(torch.save(torch.load(FILE, weights_only=False)[{WEIGHTS_KEY[format]!r}], 'weights.pth')) and import "
            "that"
        ) from None
    except Exception as exc:  # a damaged archive, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
            reason = exc.strerror
        raise CheckpointRefusedError(
            f"{path} is damaged or truncated: torch.load cannot read it ({exc.__class__.__name__}: {reason[:120]}); "
            "get the file again"
        ) from None


def _fits_the_example(path: Path) -> bool:
    """Whether the file loads as torchdiffeq's example saves (with its argparse.Namespace)
    and holds weights in that layout: only then is that format worth naming."""
    try:
        with torch.serialization.safe_globals([*PLAIN_TYPES, *ALLOWED_TYPES["torchdiffeq-example"]]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    state = _find_weights(checkpoint, "state_dict")
    return state is not None and _layout(state) == "torchdiffeq-example"


def _plain(value: Any) -> Any:
    """A YAML-safe copy of a checkpoint setting: numpy scalars and arrays as Python numbers
    and lists, paths as text, other objects as their str()."""
    if isinstance(value, np.generic | np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


_COMPILED = re.compile(r"(^|\.)_orig_mod\.")  # torch.compile keeps the module it wraps as _orig_mod
_WRAPPED = "module."  # nn.DataParallel and DistributedDataParallel keep theirs as module


def _unwrapped(state: dict[str, Any]) -> dict[str, Any]:
    """Parameter names without the wrappers' prefixes: ``_orig_mod.`` at any depth (a
    compiled model or a compiled part of one), and ``module.`` when every name starts with
    it (a data-parallel model), in any nesting. Names that would collide are left as they are."""
    renamed = {_COMPILED.sub(r"\1", str(name)): value for name, value in state.items()}
    while renamed and all(name.startswith(_WRAPPED) for name in renamed):
        renamed = {name[len(_WRAPPED) :]: value for name, value in renamed.items()}
    return renamed if len(renamed) == len(state) else dict(state)


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(item, torch.Tensor) for item in value.values())


def _find_weights(checkpoint: Any, key: str) -> dict[str, torch.Tensor] | None:
    """The weights of a checkpoint, unwrapped: the checkpoint itself when it is a dict of
    tensors (``torch.save(model.state_dict(), path)``), else the dict under ``key``."""
    if _tensors(checkpoint):
        return _unwrapped(checkpoint)
    state = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    return _unwrapped(state) if state is not None and _tensors(state) else None


def _layout(state: dict[str, torch.Tensor]) -> str | None:
    """The format whose layout the parameter names follow (by where the ODE function lies), or None."""
    if any(re.match(r"\d+\.odefunc\.", name) for name in state):
        return "torchdiffeq-example"
    if any(name.startswith("odeblock.odefunc.") for name in state):
        return "neural-ode-features"
    return None


def _other_format_hint(state: dict[str, torch.Tensor] | None, format: str) -> str:
    """'; try {format} OTHER' when the weights follow the other format's layout, else ''.
    Hints point only where the weights fit, so two formats never send a user to each other."""
    layout = _layout(state) if state is not None else None
    return f"; its weights are in the {layout} layout: try {{format}} {layout}" if layout not in (None, format) else ""


def _state_dict(checkpoint: Any, key: str, path: Path, format: str) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, without the prefixes of ``torch.compile`` (``_orig_mod.``)
    and of ``nn.DataParallel`` (``module.``).

    Raises:
        CheckpointRefusedError: no dict of tensors, neither the checkpoint nor under ``key``.
    """
    state = _find_weights(checkpoint, key)
    if state is not None:
        return state
    found = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    hint = ""
    if isinstance(checkpoint, dict):
        for other, other_key in WEIGHTS_KEY.items():
            weights = _find_weights(checkpoint, other_key) if other != format else None
            if weights is not None and _layout(weights) == other:
                hint = f"; it has '{other_key}' in the {other} layout: try {{format}} {other}"
    raise CheckpointRefusedError(
        f"{path} holds neither a state_dict of tensors nor one under '{key}' (its keys: {found}){hint}",
        settings="format",
    )


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
    state = _state_dict(checkpoint, "state_dict", path, format)
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    settings = _plain(vars(args)) if isinstance(args, argparse.Namespace) else {}
    if settings.get("network", "odenet") != "odenet" or not any(".odefunc." in key for key in state):
        raise CheckpointRefusedError(
            f"{path} holds no ODE block (network {settings.get('network', '?')!r}); nodeguard imports ODE-Nets"
            + _other_format_hint(state, format),
            settings="format",
        )
    blocks = {key.split(".odefunc.")[0] for key in state if ".odefunc." in key}
    if not all(block.isdigit() for block in blocks):
        hint = _other_format_hint(state, format) or (
            "; neither format reads that layout (the ODE block of torchdiffeq's example is a position of its "
            "nn.Sequential, that of neural-ode-features is 'odeblock')"
        )
        raise CheckpointRefusedError(
            f"{path} is not in the layout of torchdiffeq's example (an nn.Sequential): its ODE block is "
            f"{sorted(blocks)[0]!r}, not a position{hint}",
            settings="format",
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
    state = _state_dict(checkpoint, "model", path, format)
    params = checkpoint.get("params") if isinstance(checkpoint, dict) else None
    settings = _plain(params) if isinstance(params, dict) else {}
    if settings.get("model", "odenet") != "odenet" or not any(key.startswith("odeblock.odefunc.") for key in state):
        raise CheckpointRefusedError(
            f"{path} holds no ODE block (model {settings.get('model', '?')!r}); nodeguard imports ODE-Nets"
            + _other_format_hint(state, format),
            settings="format",
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
