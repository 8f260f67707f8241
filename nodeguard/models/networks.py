"""The paper's ODE-Net and its ResNet baseline, their registry, and building them from a config.

Both share a downsampling stem (a 3x3 conv and two stride-2 pre-activation residual
blocks) and a head (GroupNorm, ReLU, global average pool, Linear). The ODE-Net puts one
ODE block between them, integrated over t in [0, 1] by an adaptive solver whose
tolerance (rtol = atol = tol) is an explicit attribute of the block, overridable for one
call through ``forward(x, tol=...)`` without touching any global state.

A model's config (the ``model`` section of its config.yaml) is what
:func:`model_config` returns; :func:`build_model` rebuilds the model from it. Inference
stages need only this module, never the training code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nodeguard.catalog import Catalog
from nodeguard.checks import require_time
from nodeguard.data.datasets import dataset_info
from nodeguard.errors import ConfigError, SolverError
from nodeguard.models.layers import Normalize, ODEFunc, ResBlock, classifier_head, downsampling
from nodeguard.models.solver import MAX_STEPS, solve_per_sample
from nodeguard.runtime.compiler import CompiledFunction, compile_requested

DEFAULT_SOLVER = "dopri5"
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")  # torchdiffeq's, with a step budget
PER_SAMPLE_SOLVER = "dopri5"  # the only method nodeguard.models.solver implements


class ODEBlock(nn.Module):
    """Integrates ``func`` from t=0 to t=T with an adaptive solver at tolerance ``tol``.

    ``tol`` is the default tolerance (rtol = atol = tol); ``forward(h, tol=...)`` uses
    another one for that call only. ``t_end`` is T (1 in the paper). ``last_nfe`` holds
    the number of function evaluations of the latest forward pass (counted here, so
    ``func`` need not count them).
    """

    def __init__(self, func: nn.Module, tol: float = 1e-3, method: str = DEFAULT_SOLVER, t_end: float = 1.0):
        super().__init__()
        self.func = func
        self.tol = float(tol)
        self.method = method
        self.t_end = float(t_end)
        self.last_nfe = 0
        self._calls = 0

    def per_sample_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """What the per-sample solver calls: ``func``, or (``NODEGUARD_COMPILE=1``) its
        :class:`~nodeguard.runtime.compiler.CompiledFunction`, made once per block and
        left out of copies and pickles of the block."""
        if not compile_requested():
            return self.func
        wrapper = self.__dict__.get("_compiled_function")
        if wrapper is None or wrapper.func is not self.func:
            wrapper = self.__dict__["_compiled_function"] = CompiledFunction(self.func)
        return wrapper

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_compiled_function", None)  # compiled code is neither copied nor pickled
        return state

    def _counted(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        return self.func(t, h)

    def forward(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        tol = self.tol if tol is None else float(tol)
        if h.shape[0] == 0:
            self.last_nfe = 0
            return h
        from torchdiffeq import odeint  # here: torchdiffeq imports SciPy's integrators (half a second)

        start = self._calls
        t = torch.tensor([0.0, self.t_end], dtype=h.dtype, device=h.device)
        try:
            options = {"max_num_steps": MAX_STEPS} if self.method in ADAPTIVE_METHODS else None
            out = odeint(self._counted, h, t, rtol=tol, atol=tol, method=self.method, options=options)[1]
        except AssertionError as exc:  # torchdiffeq's step budget and step-size underflow
            if "max_num_steps" not in str(exc) and "underflow" not in str(exc):
                raise
            raise SolverError(
                f"dopri5 cannot meet tolerance {tol:g} on this batch ({exc}); use a looser tolerance"
            ) from None
        self.last_nfe = self._calls - start
        return out


class ImageClassifier(nn.Module):
    """normalise -> downsampling -> feature block -> head; inputs are images in [0, 1].

    ``has_solver`` says whether the feature block has a solver tolerance that matters.
    The base class of :class:`ComposedODENet` (and so :class:`ODENet`) and :class:`ResNet`;
    subclasses define :meth:`classify_features`.

    Args:
        num_classes: number of classes (logits per image).
        normalize: the per-channel normalisation applied to the [0, 1] images.
        downsampling: the stem, normalised images -> features h(0).
        head: features at the end of the feature block -> (N, num_classes) logits.
    """

    arch = "base"
    has_solver = False

    @property
    def last_nfe(self) -> int:
        """Function evaluations (NFE) of the latest batched forward pass (0: no solver)."""
        return 0

    def __init__(self, num_classes: int, normalize: Normalize, downsampling: nn.Module, head: nn.Module):
        super().__init__()
        self.num_classes = int(num_classes)
        self.normalize = normalize
        self.downsampling = downsampling
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The downsampled features h(0) that the feature block starts from.

        Args:
            x: (N, C, H, W) float32 images in [0, 1] (normalised inside the model).

        Returns:
            (N, filters, H', W') float32; for nodeguard's own networks a 3x3 conv then two
            stride-2 residual blocks (28x28 -> 7x7, 32x32 -> 8x8).
        """
        return self.downsampling(self.normalize(x))

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        """Logits (N, num_classes) of features h(0) from :meth:`features`; defined by subclasses.

        Raises:
            NotImplementedError: on the base class.
        """
        raise NotImplementedError

    def classify_features_per_sample(self, h: torch.Tensor, tols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, NFE per sample) with sample i classified on its own at ``tols[i]``.

        Without a solver a sample's logits never depend on its batch: a plain forward
        pass, NFE 0.

        Args:
            h: (N, filters, H', W') features from :meth:`features`.
            tols: (N,) tolerances (float64; ignored without a solver).

        Returns:
            (logits, nfe): (N, num_classes) float32 and (N,) int64 (zeros here).
        """
        logits = self.classify_features(h)
        return logits, torch.zeros(len(h), dtype=torch.long, device=h.device)

    def forward(self, x: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        """Logits of a batch, solved as one batch (the solver's steps depend on the batch).

        Args:
            x: (N, C, H, W) float32 images in [0, 1].
            tol: solver tolerance (rtol = atol) for this call only; None means the model's
                own. Ignored by models without a solver.

        Returns:
            (N, num_classes) float32 logits. For batch-independent predictions use
            :func:`nodeguard.models.evaluation.logits_alone`.
        """
        return self.classify_features(self.features(x), tol=tol)


def _normalize(in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> Normalize:
    return Normalize(
        [0.0] * in_channels if mean is None else list(mean), [1.0] * in_channels if std is None else list(std)
    )


def require_solver(model: ImageClassifier, needs: str, name: str = "this model") -> None:
    """The one check that work which draws or sets solver tolerances has an ODE model.

    Args:
        model: the classifier (a ResNet has no solver tolerance).
        needs: the work, as the message says it ("tolerance randomization").
        name: the model's name, for the message.

    Raises:
        ConfigError: ``model`` has no solver tolerance.
    """
    if not model.has_solver:
        raise ConfigError(f"{name} has no solver tolerance: {needs} needs an ODE model")


class ComposedODENet(ImageClassifier):
    """Any ODE classifier of the paper's shape: features, one ODE block, head.

    logits = head(h(T)), where h(0) = features(normalize(x)) and dh/dt = odefunc(t, h) is
    integrated over [0, T] by an adaptive solver (dopri5 by default) at rtol = atol = tol
    (Neural ODEs: Chen et al., NeurIPS 2018; the ODE-Net of Carrara et al., WIFS 2019).
    Every nodeguard stage works on it: the per-sample solver calls ``odefunc`` with times
    shaped (B, 1, ..., 1), one per sample, which it must broadcast against h (as a
    time-concatenated convolution's ``torch.ones_like(h[:, :1]) * t`` does).

    Args:
        features: image -> h(0), an nn.Module taking (N, C, H, W) normalised images.
        odefunc: f(t, h), an nn.Module returning dh/dt shaped like h.
        head: h(T) -> (N, num_classes) logits.
        num_classes: number of classes.
        in_channels: image channels C (for the default normalisation).
        mean: per-channel mean subtracted inside the model (default 0).
        std: per-channel std divided inside the model (default 1).
        tol: default solver tolerance, rtol = atol = tol (default 1e-3).
        t_end: the end time T of the integration (default 1).
        method: torchdiffeq solver for batched forwards (default "dopri5"); per-sample
            solving implements dopri5 only.
    """

    arch = "composed"
    has_solver = True

    def __init__(
        self,
        features: nn.Module,
        odefunc: nn.Module,
        head: nn.Module,
        num_classes: int,
        in_channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        tol: float = 1e-3,
        t_end: float = 1.0,
        method: str = DEFAULT_SOLVER,
    ):
        super().__init__(num_classes, _normalize(in_channels, mean, std), features, head)
        self.odeblock = ODEBlock(odefunc, tol=tol, method=method, t_end=t_end)

    @property
    def tol(self) -> float:
        """The default solver tolerance (rtol = atol), settable."""
        return self.odeblock.tol

    @tol.setter
    def tol(self, value: float) -> None:
        self.odeblock.tol = float(value)

    @property
    def t_end(self) -> float:
        """The end time T of the integration."""
        return self.odeblock.t_end

    @property
    def last_nfe(self) -> int:
        """Function evaluations of the latest batched forward pass (torchdiffeq)."""
        return self.odeblock.last_nfe

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        """Logits (N, num_classes) of features h(0), the batch solved together by torchdiffeq at ``tol``."""
        return self.head(self.odeblock(h, tol=tol))

    def classify_features_per_sample(self, h: torch.Tensor, tols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, NFE per sample): sample i solved at ``tols[i]`` on its own steps.

        Each sample steps as torchdiffeq would solve it alone (:mod:`nodeguard.models.solver`),
        whatever else is in the batch. Only dopri5 is implemented per sample; a model
        built with another method is refused here rather than silently solved with dopri5.

        Args:
            h: (N, ...) features from :meth:`features`.
            tols: (N,) tolerances, rtol = atol (float64).

        Returns:
            (logits, nfe): (N, num_classes) float32 and (N,) int64. Differentiable.

        Raises:
            ConfigError: the model's solver method is not dopri5.
        """
        if self.odeblock.method != PER_SAMPLE_SOLVER:
            raise ConfigError(
                f"per-sample solving implements {PER_SAMPLE_SOLVER} only; this model uses {self.odeblock.method!r}"
            )
        solution = solve_per_sample(self.odeblock.per_sample_function(), h, tols, t_end=self.odeblock.t_end)
        return self.head(solution.y1), solution.nfe


class ODENet(ComposedODENet):
    """The paper's ODE-Net: downsampling, one ODE block solved at tolerance ``tol``, head.

    The ODE block integrates f(t, h) over t in [0, 1] with an adaptive solver (Neural ODEs:
    Chen et al., NeurIPS 2018; torchdiffeq, dopri5 by default), as in the WIFS 2019 paper.

    Args:
        in_channels: image channels C.
        num_classes: number of classes.
        filters: feature channels (default 64; at most 32 or a multiple of 32, for
            GroupNorm's min(32, C) groups).
        tol: default solver tolerance, rtol = atol = tol (default 1e-3); :attr:`tol`
            changes it, ``forward(x, tol=...)`` overrides it for one call.
        method: torchdiffeq solver for batched forwards (default "dopri5"); per-sample
            solving implements dopri5 only.
        mean: per-channel mean for the normalisation inside the model (default 0).
        std: per-channel std (default 1).
        dropout: dropout probability before the final Linear layer (0: none).
    """

    arch = "odenet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int = 64,
        tol: float = 1e-3,
        method: str = DEFAULT_SOLVER,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dropout: float = 0.0,
    ):
        # built in the order of nodeguard 0.5 (stem, head, then the ODE function): torch's
        # generator draws the initial weights in this order, so a seed trains the same model
        stem, head = downsampling(in_channels, filters), classifier_head(filters, num_classes, dropout)
        super().__init__(
            features=stem,
            odefunc=ODEFunc(filters),
            head=head,
            num_classes=num_classes,
            in_channels=in_channels,
            mean=mean,
            std=std,
            tol=tol,
            method=method,
        )


class ResNet(ImageClassifier):
    """The ResNet baseline: the same stem and head, six residual blocks in between.

    It has no solver: ``forward``'s ``tol`` is accepted and ignored so callers can treat
    both alike.

    Args:
        in_channels: image channels C.
        num_classes: number of classes.
        filters: feature channels (default 64).
        blocks: residual blocks between stem and head (default 6).
        mean: per-channel mean for the normalisation inside the model (default 0).
        std: per-channel std (default 1).
        dropout: dropout probability before the final Linear layer (0: none).
    """

    arch = "resnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int = 64,
        blocks: int = 6,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dropout: float = 0.0,
    ):
        stem, head = downsampling(in_channels, filters), classifier_head(filters, num_classes, dropout)
        super().__init__(num_classes, _normalize(in_channels, mean, std), stem, head)
        self.blocks = nn.Sequential(*[ResBlock(filters, filters) for _ in range(blocks)])

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        """Logits (N, num_classes) of features h(0); ``tol`` is ignored."""
        return self.head(self.blocks(h))


MODELS: Catalog[type[ImageClassifier]] = Catalog("architecture")
MODELS.register("odenet", ODENet)
MODELS.register("resnet", ResNet)


def create_model(arch: str, **kwargs: Any) -> ImageClassifier:
    """Build a registered model; keyword arguments that are None keep the model's defaults.

    Args:
        arch: "odenet" (:class:`ODENet`) or "resnet" (:class:`ResNet`).
        **kwargs: the class's constructor arguments (``in_channels``, ``num_classes``,
            ``filters``, ``tol``, ...).

    Returns:
        A freshly initialised model (torch's global generator draws its weights), in train mode.

    Raises:
        ConfigError: ``arch`` is not a registered architecture.
        TypeError: an argument the class does not take (``tol`` for a ResNet, say), or a
            required one missing.
    """
    return MODELS.get(arch)(**{key: value for key, value in kwargs.items() if value is not None})


def model_config(arch: str, dataset: str, filters: int, tol: float, dropout: float = 0.0) -> dict[str, Any]:
    """The model section of a config.yaml: constructor arguments plus the input shape.

    ``dropout`` is written only when it is used, so configs of models without it read the
    same as before it existed (and older configs, which lack it, build without it).
    """
    info = dataset_info(dataset)
    extra = {"dropout": float(dropout)} if dropout > 0 else {}
    return {
        "arch": arch,
        "in_channels": info.channels,
        "num_classes": info.num_classes,
        "filters": filters,
        "tol": tol,
        "mean": list(info.mean),
        "std": list(info.std),
        "input_shape": list(info.input_shape),
        **extra,
    }


def composed_config(
    factory: str,
    factory_kwargs: dict[str, Any],
    num_classes: int,
    input_shape: Sequence[int],
    tol: float,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    t_end: float = 1.0,
) -> dict[str, Any]:
    """The model section of a config.yaml for a :class:`ComposedODENet` made by a parts factory.

    Args:
        factory: ``"module:function"`` of a function marked with
            :func:`nodeguard.models.parts.ode_parts_factory`.
        factory_kwargs: its keyword arguments (plain YAML values).
        num_classes: logits per image.
        input_shape: (C, H, W) of the images the model takes.
        tol: the default solver tolerance (tol_train).
        mean, std: the per-channel normalisation inside the model (default 0 and 1).
        t_end: the end time T > 0 of the integration.

    Raises:
        ConfigError: ``t_end`` is not a positive finite time.
    """
    require_time("t_end", t_end)
    channels = int(input_shape[0])
    return {
        "arch": ComposedODENet.arch,
        "factory": factory,
        "factory_kwargs": dict(factory_kwargs),
        "num_classes": int(num_classes),
        "tol": float(tol),
        "t_end": float(t_end),
        "mean": [float(v) for v in (mean if mean is not None else [0.0] * channels)],
        "std": [float(v) for v in (std if std is not None else [1.0] * channels)],
        "input_shape": [int(v) for v in input_shape],
    }


def build_model(config: dict[str, Any]) -> ImageClassifier:
    """Rebuild a model from the model section of a config.yaml.

    See :func:`model_config` (nodeguard's own networks) and :func:`composed_config`
    (a model made by a parts factory: the factory's module is imported and the factory called).

    Raises:
        ConfigError: an unknown architecture, or a parts factory that cannot be imported,
            is not marked, or returns something else than three modules.
    """
    if config.get("arch") == ComposedODENet.arch:
        from nodeguard.models.parts import build_parts

        parts = build_parts(config["factory"], config.get("factory_kwargs") or {})
        return ComposedODENet(
            parts.features,
            parts.odefunc,
            parts.head,
            num_classes=int(config["num_classes"]),
            in_channels=int(config["input_shape"][0]),
            mean=config.get("mean"),
            std=config.get("std"),
            tol=float(config["tol"]),
            t_end=float(config.get("t_end", 1.0)),
        )
    factory = MODELS.get(config["arch"])
    arguments = {key: value for key, value in config.items() if key not in ("arch", "input_shape")}
    if not factory.has_solver:
        arguments.pop("tol", None)
    return create_model(config["arch"], **arguments)
