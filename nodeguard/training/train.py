"""Training an ODE-Net or ResNet on a registered data set, resumable epoch by epoch.

Each epoch's shuffling and augmentation come from a generator seeded by (seed, epoch),
and the optimizer and schedule state are checkpointed after each epoch, so a run that
is killed and started again continues from its last finished epoch and ends with the
same weights as an uninterrupted run (on the CPU).
"""

from __future__ import annotations

import time
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from nodeguard.checks import (
    require_count,
    require_non_negative,
    require_positive,
    require_range,
    require_seed,
    require_tol,
)
from nodeguard.constants import HISTORY_FILE, METRICS_FILE
from nodeguard.data.augment import augment
from nodeguard.data.datasets import Dataset, check_fingerprint, dataset_fingerprint, dataset_info, load_dataset
from nodeguard.errors import ConfigError, setting_error
from nodeguard.models.evaluation import evaluate
from nodeguard.models.networks import MODELS, ImageClassifier, build_model, model_config
from nodeguard.plain import from_plain, to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.device import resolve_device
from nodeguard.runtime.distributed import all_gather, barrier, current_ranks, ensure_process_group, share
from nodeguard.storage.registry import ModelEntry, Registry, model_record, now_iso

EPOCH_SEED_STRIDE = 1_000_003
Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["onecycle", "constant"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass
class TrainConfig:
    """Everything that determines a trained model (the name and device do not).

    Attributes:
        dataset: registered data set ("mnist5k", "mnist", "cifar10").
        arch: "odenet" or "resnet".
        tol_train: the ODE solver's tolerance during training and by default afterwards
            (rtol = atol; ignored by a ResNet).
        epochs: training epochs (>= 1).
        batch_size: images per optimizer step (>= 1; split across ranks when sharded).
        lr: (peak) learning rate (> 0).
        weight_decay: weight decay (>= 0).
        optimizer: "adamw", "adam" or "sgd" (momentum 0.9).
        schedule: "onecycle" (peak after 20% of the steps) or "constant".
        dropout: dropout probability before the final Linear layer, in [0, 1).
        filters: feature channels; None means the data set's default (64 digits, 256
            CIFAR-10); at most 32 or a multiple of 32.
        seed: seeds the initial weights and each epoch's shuffle and augmentation.
        augment: apply the data set's training augmentation.
        train_limit: use only the first this many training images (None: all).
        test_limit: evaluate on only the first this many test images (None: all).
        noise_sigma: standard deviation of the Gaussian noise added to every training
            image after augmentation (pixels in [0, 1], not clipped; 0: none), as Cohen,
            Rosenfeld & Kolter (ICML 2019) train the base classifier of randomized
            smoothing (see ``nodeguard.defense.smoothing``).

    Raises:
        ConfigError: an unknown data set, architecture, optimizer or schedule, or a value
            out of range.
    """

    dataset: str = "mnist5k"
    arch: str = "odenet"
    tol_train: float = 1e-3
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: Optimizer = "adamw"
    schedule: Schedule = "onecycle"
    dropout: float = 0.0
    filters: int | None = None
    seed: int = 0
    augment: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        self.dataset = dataset_info(self.dataset).name  # folder:PATH with PATH made absolute
        MODELS.get(self.arch)
        if self.filters is None:
            self.filters = dataset_info(self.dataset).default_filters
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "filters": self.filters >= 1}
        for setting, ok in checks.items():
            if not ok:
                raise setting_error(setting, f"must be positive, got {getattr(self, setting)!r}")
        require_count("train_limit", self.train_limit)
        require_count("test_limit", self.test_limit)
        require_seed("seed", self.seed)
        self.lr = require_positive("lr", self.lr)
        self.tol_train = require_tol("tol_train", self.tol_train)
        self.weight_decay = require_non_negative("weight_decay", self.weight_decay)
        self.noise_sigma = require_non_negative("noise_sigma", self.noise_sigma)
        self.dropout = require_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        for setting, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, setting) not in valid:
                raise ConfigError(f"unknown {setting} {getattr(self, setting)!r}; valid: {', '.join(valid)}")
        if self.filters > 32 and self.filters % 32:
            raise ConfigError(
                "{filters} must be at most 32 or a multiple of 32 (GroupNorm uses 32 groups), got " + str(self.filters),
                settings="filters",
            )

    def default_name(self) -> str:
        """The model name used when none is given: ``{arch}-{dataset}`` (a folder set by its folder's name),
        with ``-noise{sigma}`` appended for a model trained with Gaussian noise."""
        noise = f"-noise{self.noise_sigma:g}" if self.noise_sigma > 0 else ""
        return f"{self.arch}-{dataset_info(self.dataset).slug}{noise}"

    def as_dict(self) -> dict[str, Any]:
        """Every setting as a plain dict (the ``training`` section of config.yaml)."""
        return asdict(self)

    @property
    def filter_count(self) -> int:
        """``filters``, which ``__post_init__`` filled in with the data set's default if None."""
        assert self.filters is not None
        return self.filters

    @staticmethod
    def stored_settings(training: dict[str, Any]) -> dict[str, Any]:
        """A stored ``training`` section with the settings it predates filled in.

        Models trained before ``optimizer``, ``schedule``, ``dropout`` and ``noise_sigma``
        existed were trained with AdamW, the one-cycle schedule, no dropout and no noise:
        today's defaults.
        """
        added = {"optimizer": "adamw", "schedule": "onecycle", "dropout": 0.0, "noise_sigma": 0.0}
        return {**added, **training}


@dataclass
class EpochRecord:
    """One epoch of training, as metrics.json, history.json and the checkpoint keep it.

    Attributes:
        epoch: its number, from 1.
        train_loss: mean cross-entropy over the training images.
        train_accuracy: share of training images classified correctly, in [0, 1] (in
            training mode, batched).
        train_nfe: mean function evaluations per training batch (0: ResNet).
        test_error: error on the test split after the epoch, in [0, 1] (batched at tol_train).
        test_nfe: mean function evaluations per test batch.
        lr: the learning rate at its end.
        seconds: its time (s).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    train_nfe: float
    test_error: float
    test_nfe: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """What :func:`train_model` reports (also saved, less the transient fields, as metrics.json).

    Attributes:
        model: the registered model name.
        dataset: its data set.
        arch: "odenet" or "resnet".
        tol_train: the training tolerance.
        epochs: epochs trained in all.
        test_error: error rate in [0, 1] on the (limited) test split after the last epoch,
            batched forward at tol_train.
        nfe: mean function evaluations per batched forward of that evaluation (0: ResNet).
        seconds: training time summed over all epochs, across runs (s).
        seconds_this_run: time spent by this call (s; 0 when reused).
        resumed_from_epoch: epochs already done when this run started.
        reused: True when a finished model with the same settings was found.
        path: the model's folder.
        history: one ``EpochRecord`` per epoch.
    """

    model: str
    dataset: str
    arch: str
    tol_train: float
    epochs: int
    test_error: float
    nfe: float
    seconds: float
    seconds_this_run: float
    resumed_from_epoch: int
    reused: bool
    path: str
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))


def seeded_model(config: TrainConfig) -> ImageClassifier:
    """A freshly initialised model whose weights depend only on ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(
            model_config(config.arch, config.dataset, config.filter_count, config.tol_train, config.dropout)
        )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, steps_per_epoch: int):
    """The optimizer and learning-rate schedule that ``config`` names.

    adamw: decoupled weight decay; adam: weight decay as an L2 term in the gradient (the
    papers' code); sgd: momentum 0.9. onecycle peaks at ``lr`` after 20% of the steps;
    constant keeps ``lr`` throughout (the papers' "fixed").
    """
    parameters, lr, decay = model.parameters(), config.lr, config.weight_decay
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    else:
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=decay)
    if config.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
        )
    else:
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, schedule


def train_one_epoch(
    model: ImageClassifier,
    dataset: Dataset,
    config: TrainConfig,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    progress: Progress,
    network: torch.nn.Module | None = None,
) -> dict[str, float]:
    """One epoch of the seeded shuffle; ``network`` is ``model`` wrapped for DDP, if sharded.

    Sharded, every rank draws the same shuffled (and augmented) batch and trains on its
    contiguous share of it; each rank's loss is its share's summed cross-entropy over
    the whole batch's size, times the world size, so DDP's gradient average is the
    gradient of the whole batch's mean loss, as one process computes it.
    """
    ranks = current_ranks()
    network = network or model
    network.train()
    generator = epoch_generator(config.seed, epoch)
    steps = (len(dataset.train) + config.batch_size - 1) // config.batch_size
    task = progress.task(f"epoch {epoch + 1}/{config.epochs}", steps)
    loss_sum, correct, seen, nfe_sum = 0.0, 0, 0, 0
    for images, labels in dataset.train.batches(config.batch_size, generator):
        if config.augment:
            images = augment(dataset.info.augmentation, images, generator)
        if config.noise_sigma > 0:
            images = images + config.noise_sigma * torch.randn(images.shape, generator=generator)
        batch_size = len(labels)
        mine = share(batch_size, ranks)
        images, labels = images[mine.start : mine.stop].to(device), labels[mine.start : mine.stop].to(device)
        logits = network(images)
        if ranks.sharded:
            summed = F.cross_entropy(logits, labels, reduction="sum")
            loss, batch_loss = summed * (ranks.world / batch_size), summed.item()
        else:  # one process: the batch's mean, computed as it always was
            loss = F.cross_entropy(logits, labels)
            batch_loss = loss.item() * len(labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += batch_loss
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        nfe_sum += model.last_nfe
        task.advance(1, loss=loss_sum / seen, acc=correct / seen, nfe=model.last_nfe)
    task.close()
    if ranks.sharded:  # the epoch's statistics over every rank's share
        totals = [
            sum(values) for values in zip(*all_gather((loss_sum, correct, seen, nfe_sum / ranks.world)), strict=True)
        ]
        loss_sum, correct, seen, nfe_sum = totals
    return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen, "train_nfe": nfe_sum / steps}


def train_model(
    config: TrainConfig,
    name: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    restart: bool = False,
    progress: Progress = SILENT,
    recipe: dict[str, Any] | None = None,
) -> TrainResult:
    """Train (or resume, or reuse) model ``name`` and register it.

    ``recipe`` (where the settings came from: recipe name, file, overrides) is kept in
    the model's config.yaml beside the resolved settings; it does not change the model.

    - A finished model with the same settings is reused as is (``reused=True``).
    - An unfinished one continues from its last checkpointed epoch.
    - Other settings under an existing name are refused unless ``restart``.
    - A run that fails before finishing its first epoch (missing data, Ctrl-C) leaves
      nothing behind: the model is not registered and the next run starts afresh.

    Under torchrun each rank trains on its share of every batch (DDP); rank 0 holds the
    model's lock and writes the registry.

    Args:
        config: the training settings.
        name: the model name; None means ``config.default_name()`` (``{arch}-{dataset}``).
        registry: where to register it; None means ``Registry()`` at the default cache root.
        device: "auto", "cpu" or "cuda".
        data_dir: where mnist/cifar10 are looked for (see :func:`nodeguard.data.datasets.load_dataset`).
        restart: delete an existing model of that name and train from scratch.
        progress: receives per-epoch progress and log lines (silent by default).
        recipe: provenance of the settings, stored in config.yaml as is.

    Returns:
        The ``TrainResult`` (test error in [0, 1], mean NFE, seconds, history).

    Raises:
        ConfigError: the name holds a model trained with other settings (and not
            ``restart``), ``batch_size`` is smaller than the number of ranks, an unknown
            ``device`` or "cuda" without a GPU, or malformed ``RANK``/``WORLD_SIZE``.
        RegistryError: the model is being trained by another process, the name is
            invalid, the index stayed locked, or its files are damaged
            (ModelNotFoundError when a checkpoint exists without its config.yaml).
        DataUnavailableError: the data set is not on disk and cannot be downloaded.
    """
    registry = registry or Registry()
    name = name or config.default_name()
    torch_device = resolve_device(device)
    ranks = current_ranks()
    if ranks.sharded:  # DDP under torchrun: rank 0 holds the model's lock and writes everything
        ensure_process_group()
        if config.batch_size < ranks.world:
            raise ConfigError(f"batch_size {config.batch_size} is smaller than the {ranks.world} ranks sharing it")
        if not ranks.is_main:
            return _train_locked(config, name, registry, torch_device, data_dir, restart, progress, recipe)
    with registry.exclusive(name, "trained"):
        try:
            return _train_locked(config, name, registry, torch_device, data_dir, restart, progress, recipe)
        except BaseException:
            registry.discard_unfinished(name)
            raise


def _train_locked(
    config: TrainConfig,
    name: str,
    registry: Registry,
    torch_device: torch.device,
    data_dir: str | None,
    restart: bool,
    progress: Progress,
    recipe: dict[str, Any] | None = None,
) -> TrainResult:
    folder = registry.model_dir(name)
    ranks = current_ranks()
    main = ranks.is_main
    if restart and main:
        registry.clear(name)
    barrier()  # every rank reads the model's folder as rank 0 left it
    # settings of a run that never finished an epoch are not a model yet: they bind nothing
    stored = registry.read_config(name) if registry.has_checkpoint(name) else None
    stored_training = TrainConfig.stored_settings(stored.get("training", {})) if stored is not None else None
    if stored_training is not None and stored_training != config.as_dict():
        changed = sorted(key for key in config.as_dict() if stored_training.get(key) != config.as_dict()[key])
        raise ConfigError(
            f"model {name!r} exists with other settings ({', '.join(changed)}); "
            "set {restart} to train it again from scratch, or give a new {name}",
            settings=("restart", "name"),
        )
    if stored is not None:  # a folder: set whose files changed is another data set
        check_fingerprint(config.dataset, stored.get("dataset_fingerprint"), name)
    metrics = registry.read_json(name, METRICS_FILE)
    barrier()  # read before rank 0 writes anything
    if stored is not None and metrics is not None:
        progress.log(f"model {name!r} is already trained with these settings; reusing it")
        found = {**metrics, "seconds_this_run": 0.0, "reused": True, "path": str(folder)}
        return from_plain(TrainResult, found)

    progress.log(f"loading {config.dataset}")
    dataset = load_dataset(config.dataset, data_dir)
    dataset.train = dataset.train.subset(config.train_limit)
    dataset.test = dataset.test.subset(config.test_limit)

    created = stored.get("created", now_iso()) if stored else now_iso()
    fingerprint = dataset_fingerprint(config.dataset)
    if stored is None and main:
        registry.write_config(
            name,
            model_record(
                config.dataset,
                model_config(config.arch, config.dataset, config.filter_count, config.tol_train, config.dropout),
                config.as_dict(),
                name=name,
                created=created,
                fingerprint=fingerprint,
                **({"recipe": recipe} if recipe else {}),
            ),
        )
    model = seeded_model(config).to(torch_device)
    network: torch.nn.Module = model
    if ranks.sharded:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch_device.index] if torch_device.type == "cuda" else None
        network = DistributedDataParallel(model, device_ids=device_ids)
    steps_per_epoch = (len(dataset.train) + config.batch_size - 1) // config.batch_size
    optimizer, schedule = make_optimizer(model, config, steps_per_epoch)
    start_epoch, history = 0, list[EpochRecord]()
    if registry.has_checkpoint(name):
        checkpoint = registry.read_checkpoint(name)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        start_epoch = int(checkpoint["epoch"])
        history = [from_plain(EpochRecord, record) for record in checkpoint["history"]]
        progress.log(f"resuming {name!r} after epoch {start_epoch}/{config.epochs}")

    entry = ModelEntry(name, config.arch, config.dataset, "training", start_epoch, config.epochs, created=created)
    if main:
        registry.put(entry)
    run_started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        train_stats = train_one_epoch(
            model, dataset, config, epoch, optimizer, schedule, torch_device, progress, network
        )
        # every rank evaluates the whole test split: the same figure as one process
        evaluation = evaluate(model, dataset.test, device=torch_device, batch_size=500)
        history.append(
            EpochRecord(
                epoch=epoch + 1,
                **train_stats,
                test_error=evaluation.error,
                test_nfe=evaluation.mean_nfe,
                lr=schedule.get_last_lr()[0],
                seconds=time.perf_counter() - epoch_started,
            )
        )
        progress.log(
            f"epoch {epoch + 1}/{config.epochs}: loss {train_stats['train_loss']:.4f}, "
            f"test error {evaluation.error:.2%}, NFE {evaluation.mean_nfe:.1f}"
        )
        entry.epochs_done, entry.test_error = epoch + 1, evaluation.error
        if main:
            registry.write_checkpoint(
                name,
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "history": to_plain(history),
                },
            )
            registry.write_json(name, HISTORY_FILE, to_plain(history))
            registry.put(entry)

    final = history[-1]
    result = TrainResult(
        model=name,
        dataset=config.dataset,
        arch=config.arch,
        tol_train=config.tol_train,
        epochs=config.epochs,
        test_error=final.test_error,
        nfe=final.test_nfe,
        seconds=sum(record.seconds for record in history),
        seconds_this_run=time.perf_counter() - run_started,
        resumed_from_epoch=start_epoch,
        reused=False,
        path=str(folder),
        history=history,
    )
    stored_metrics = result.to_dict()
    for transient in ("seconds_this_run", "reused", "path"):
        stored_metrics.pop(transient)
    entry.status = "ready"
    if main:
        registry.write_json(name, METRICS_FILE, stored_metrics)
        registry.put(entry)
    barrier()  # the model is registered before any rank moves on
    return result
