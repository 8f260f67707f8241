"""The attack stage: make, verify, store and export an attack set for a registered model.

An attack set is saved in ``models/NAME/attacks/KEY/``, KEY naming the attack and
hashing every setting that changes its result, so the same request again finds it.
Work is saved after each batch; an interrupted attack continues from there.

An adversarial counts as successful only when the model, with its solver at
tol_attack, misclassifies it when the image is classified on its own: an adaptive
solver's step sizes depend on the batch, so that is the image's own prediction.
Each adversarial is also finished on the 8-bit grid (what a PNG can hold): plain
rounding if that keeps it adversarial, else rounding every changed pixel away from the
original, else it is marked as lost on the grid.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .attacks import CarliniWagnerL2, PinnedTolerance
from .attacks.pgd import PGD_NORMS, make_pgd, run_pgd
from .data import load_dataset
from .errors import ConfigError, unknown_name_error
from .images import save_png
from .loading import LoadedModel, load_model
from .models import is_ode_model
from .progress import Progress, SilentProgress
from .registry import Registry, atomic_write_json, atomic_write_text, load_torch_file, save_tagged

ATTACKS = ("cw", "pgd")
ATTACKS_FOLDER = "attacks"
SET_FILE = "attack_set.pt"
PARTIAL_FILE = "partial.pt"
SUMMARY_FILE = "summary.json"
DEFAULT_STEPS = {"cw": 100, "pgd": 40}
# Part of every attack set's key: bump it when an attack's algorithm changes, so sets
# made by older code are never taken for new ones.
ALGORITHM_VERSIONS = {"cw": 2, "pgd": 1}
DEFAULT_EPS = {"linf": 0.1, "l2": 2.0}


@dataclass
class AttackSettings:
    """What to attack and how. None means: the attack's (or the model's) default."""

    attack: str = "cw"
    tol_attack: float | None = None
    count: int = 100
    split: str = "test"
    only_correct: bool = True
    batch_size: int = 100
    steps: int | None = None
    binary_steps: int = 5
    initial_const: float = 1.0
    lr: float = 0.05
    kappa: float = 0.0
    norm: str = "linf"
    eps: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise unknown_name_error("attack", self.attack, ATTACKS)
        if self.norm not in PGD_NORMS:
            raise unknown_name_error("PGD norm", self.norm, PGD_NORMS)
        for name in ("count", "batch_size", "binary_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.tol_attack is not None and self.tol_attack <= 0:
            raise ConfigError(f"tol_attack must be positive, got {self.tol_attack}")
        if self.split not in ("train", "test"):
            raise unknown_name_error("split", self.split, ["train", "test"])

    @classmethod
    def with_overrides(cls, **overrides: Any) -> AttackSettings:
        """Settings from keyword overrides; those that are None keep the defaults."""
        return cls(**{name: value for name, value in overrides.items() if value is not None})

    def resolved(self, tol_train: float) -> dict[str, Any]:
        """Every setting that shapes the attack set, defaults filled in."""
        common = {
            "attack": self.attack,
            "algorithm_version": ALGORITHM_VERSIONS[self.attack],
            "tol_attack": float(self.tol_attack if self.tol_attack is not None else tol_train),
            "count": self.count,
            "split": self.split,
            "only_correct": self.only_correct,
            "batch_size": self.batch_size,
            "steps": self.steps or DEFAULT_STEPS[self.attack],
            "seed": self.seed,
        }
        if self.attack == "cw":
            return {
                **common,
                "binary_steps": self.binary_steps,
                "initial_const": self.initial_const,
                "lr": self.lr,
                "kappa": self.kappa,
            }
        return {**common, "norm": self.norm, "eps": float(self.eps if self.eps is not None else DEFAULT_EPS[self.norm])}


def settings_key(resolved: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:10]
    return f"{resolved['attack']}-tol{resolved['tol_attack']:.0e}-n{resolved['count']}-{digest}"


@dataclass
class AttackReport:
    model: str
    attack: str
    tol_attack: float
    count: int
    success_rate: float
    mean_l2: float | None
    median_l2: float | None
    mean_mse: float | None
    success_rate_8bit: float
    mean_l2_8bit: float | None
    kept_by_rounding: int
    kept_by_outward_rounding: int
    lost_on_8bit_grid: int
    seconds: float
    set: str
    path: str
    reused: bool = False
    exported_to: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def classify_each(model: torch.nn.Module, images: torch.Tensor, ode: bool, batch_size: int = 256) -> torch.Tensor:
    """Predictions with every image solved on its own (ODE) or in plain batches (no solver)."""
    if len(images) == 0:
        return torch.empty(0, dtype=torch.long)
    if ode:
        return torch.cat([model(image[None]).argmax(1).cpu() for image in images])
    return torch.cat([model(chunk).argmax(1).cpu() for chunk in images.split(batch_size)])


def finish_on_8bit_grid(
    model: torch.nn.Module,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    success: torch.Tensor,
    ode: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 adversarials, success on the grid, how: 0 lost, 1 rounded, 2 rounded outward)."""
    clean_levels = (clean * 255).round()
    rounded = (adversarial * 255).round().clamp(0, 255)
    delta = adversarial * 255 - clean_levels
    outward = (clean_levels + delta.sign() * (delta.abs() - 1e-4).clamp(min=0).ceil()).clamp(0, 255)
    method = torch.zeros(len(clean), dtype=torch.long)
    result = clean_levels.clone()
    candidates = success.nonzero().squeeze(1)
    if len(candidates):
        kept = classify_each(model, rounded[candidates] / 255, ode) != labels[candidates]
        result[candidates[kept]] = rounded[candidates[kept]]
        method[candidates[kept]] = 1
        retry = candidates[~kept]
        if len(retry):
            kept_outward = classify_each(model, outward[retry] / 255, ode) != labels[retry]
            result[retry[kept_outward]] = outward[retry[kept_outward]]
            method[retry[kept_outward]] = 2
    return result.to(torch.uint8), method > 0, method


def select_samples(
    pinned: torch.nn.Module, split, count: int, only_correct: bool, batch_size: int, ode: bool
) -> torch.Tensor:
    """Indices of the first ``count`` images of the split (correctly classified ones, if asked)."""
    if not only_correct:
        return torch.arange(min(count, len(split)))
    chosen: list[torch.Tensor] = []
    found = 0
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        predictions = classify_each(pinned, split.float_images(index), ode)
        correct = index[predictions == split.labels[index]]
        chosen.append(correct)
        found += len(correct)
        if found >= count:
            break
    return torch.cat(chosen)[:count] if chosen else torch.empty(0, dtype=torch.long)


def attack_folder(registry: Registry, model: str, key: str) -> Path:
    return registry.model_dir(model) / ATTACKS_FOLDER / key


def load_attack_set(registry: Registry, model: str, key: str) -> dict[str, Any]:
    """The saved tensors of an attack set (weights_only-safe)."""
    return load_torch_file(attack_folder(registry, model, key) / SET_FILE, expected_kind="attack_set")


def perturbation_stats(l2: torch.Tensor, mask: torch.Tensor, dims: int) -> dict[str, float | None]:
    """Mean and median L2 and mean MSE (||delta||^2 / d) over the samples in ``mask``."""
    chosen = l2[mask]
    if len(chosen) == 0:
        return {"mean_l2": None, "median_l2": None, "mean_mse": None}
    return {
        "mean_l2": float(chosen.mean()),
        "median_l2": float(chosen.median()),
        "mean_mse": float((chosen.square() / dims).mean()),
    }


def summarise(data: dict[str, Any], model: str, resolved: dict[str, Any], key: str, folder: Path, seconds: float):
    success, success_8bit = data["success"], data["success_8bit"]
    dims = data["clean"][0].numel() if len(data["clean"]) else 1
    l2_8bit = (data["adversarial_8bit"].float() / 255 - data["clean"]).flatten(1).norm(dim=1)
    count = len(success)
    method = data["grid_method"]
    return AttackReport(
        model=model,
        attack=resolved["attack"],
        tol_attack=resolved["tol_attack"],
        count=count,
        success_rate=float(success.float().mean()) if count else 0.0,
        **perturbation_stats(data["l2"], success, dims),
        success_rate_8bit=float(success_8bit.float().mean()) if count else 0.0,
        mean_l2_8bit=perturbation_stats(l2_8bit, success_8bit, dims)["mean_l2"],
        kept_by_rounding=int((method == 1).sum()),
        kept_by_outward_rounding=int((method == 2).sum()),
        lost_on_8bit_grid=int((success & ~success_8bit).sum()),
        seconds=seconds,
        set=key,
        path=str(folder),
        settings=resolved,
    )


def export_pngs(data: dict[str, Any], directory: Path) -> None:
    """``pristine/`` and ``adversarial/`` PNGs named by index and label (8-bit successes only)."""
    pristine, adversarial = directory / "pristine", directory / "adversarial"
    for folder in (pristine, adversarial):
        folder.mkdir(parents=True, exist_ok=True)
    clean_levels = (data["clean"] * 255).round().to(torch.uint8)
    for position, (index, label) in enumerate(zip(data["indices"].tolist(), data["labels"].tolist(), strict=True)):
        name = f"{index:05d}_label{label}.png"
        save_png(clean_levels[position], pristine / name)
        if bool(data["success_8bit"][position]):
            save_png(data["adversarial_8bit"][position], adversarial / name)


def make_attack(pinned: torch.nn.Module, resolved: dict[str, Any]):
    if resolved["attack"] == "cw":
        return CarliniWagnerL2(
            pinned,
            initial_const=resolved["initial_const"],
            binary_steps=resolved["binary_steps"],
            steps=resolved["steps"],
            lr=resolved["lr"],
            kappa=resolved["kappa"],
        )
    return make_pgd(pinned, norm=resolved["norm"], eps=resolved["eps"], steps=resolved["steps"])


def run_attack(
    settings: AttackSettings,
    model: str | None = None,
    registry: Registry | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    export_dir: str | Path | None = None,
    progress: Progress | None = None,
    loaded: LoadedModel | None = None,
) -> AttackReport:
    """Make (or find again, or finish) the attack set that ``settings`` describe."""
    registry = registry or Registry()
    progress = progress or SilentProgress()
    loaded = loaded or load_model(model, registry=registry, device=device)
    resolved = settings.resolved(loaded.tol_train)
    key = settings_key(resolved)
    folder = attack_folder(registry, loaded.name, key)
    ode = is_ode_model(loaded.model)
    pinned = PinnedTolerance(loaded.model, resolved["tol_attack"]).eval()

    if (folder / SET_FILE).is_file():
        data = load_attack_set(registry, loaded.name, key)
        progress.log(f"attack set {key} already exists for {loaded.name}; reusing it")
        report = summarise(data, loaded.name, resolved, key, folder, float(data["seconds"]))
        report.reused = True
    else:
        with registry.exclusive(loaded.name, "attacked"):
            data, seconds = _attack_batches(loaded, pinned, resolved, key, folder, ode, data_dir, progress)
        report = summarise(data, loaded.name, resolved, key, folder, seconds)
        atomic_write_json(folder / SUMMARY_FILE, {k: v for k, v in report.to_dict().items() if k != "reused"})

    if export_dir is not None:
        export_pngs(data, Path(export_dir))
        report.exported_to = str(export_dir)
        progress.log(f"wrote {len(data['labels'])} pristine and {int(data['success_8bit'].sum())} adversarial PNGs")
    return report


def _attack_batches(loaded, pinned, resolved, key, folder, ode, data_dir, progress):
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "settings.yaml", yaml.safe_dump({"model": loaded.name, **resolved}, sort_keys=False))
    partial_path = folder / PARTIAL_FILE
    dataset = load_dataset(loaded.dataset, data_dir)
    split = dataset.split(resolved["split"])
    if partial_path.is_file():
        saved = load_torch_file(partial_path, expected_kind="partial_attack_set")
        partial = {"indices": saved["indices"], "batches": saved["batches"]}
        progress.log(f"continuing attack {key} after {len(partial['batches'])} finished batches")
    else:
        progress.log(
            f"no {resolved['attack']} attack set of {resolved['count']} {resolved['split']} images at "
            f"tol_attack {resolved['tol_attack']:g} for {loaded.name} yet; running the attack"
        )
        indices = select_samples(
            pinned, split, resolved["count"], resolved["only_correct"], resolved["batch_size"], ode
        )
        partial = {"indices": indices, "batches": []}
    indices: torch.Tensor = partial["indices"]
    if len(indices) == 0:
        raise ConfigError(f"no {resolved['split']} image to attack (none classified correctly at this tolerance)")
    batch_starts = list(range(0, len(indices), resolved["batch_size"]))
    task = progress.task(f"{resolved['attack']} at tol {resolved['tol_attack']:g}", len(batch_starts))
    successes = sum(int(batch["success"].sum()) for batch in partial["batches"])
    attacked = sum(len(batch["success"]) for batch in partial["batches"])
    task.advance(len(partial["batches"]))
    attack = make_attack(pinned, resolved)
    for batch_number, start in enumerate(batch_starts):
        if batch_number < len(partial["batches"]):
            continue
        started = time.perf_counter()
        index = indices[start : start + resolved["batch_size"]]
        clean = split.float_images(index).to(loaded.device)
        labels = split.labels[index]
        if resolved["attack"] == "cw":
            adversarial = attack(clean, labels.to(loaded.device))
        else:
            adversarial = run_pgd(attack, clean, labels.to(loaded.device), resolved["seed"] + batch_number)
        adversarial = adversarial.detach().clamp(0, 1)
        predictions = classify_each(pinned, adversarial, ode)
        # with --only-correct, select_samples classified these very images alone already
        clean_predictions = labels.clone() if resolved["only_correct"] else classify_each(pinned, clean, ode)
        success = (predictions != labels) & (clean_predictions == labels)
        adversarial_8bit, success_8bit, grid_method = finish_on_8bit_grid(
            pinned, clean, adversarial, labels, success, ode
        )
        partial["batches"].append(
            {
                "clean": clean.cpu(),
                "adversarial": adversarial.cpu(),
                "labels": labels,
                "clean_predictions": clean_predictions,
                "predictions": predictions,
                "success": success,
                "l2": (adversarial - clean).flatten(1).norm(dim=1).cpu(),
                "adversarial_8bit": adversarial_8bit.cpu(),
                "success_8bit": success_8bit,
                "grid_method": grid_method,
                "seconds": time.perf_counter() - started,
            }
        )
        save_tagged(partial_path, "partial_attack_set", partial)
        successes += int(success.sum())
        attacked += len(success)
        task.advance(1, success=successes / attacked)
    task.close()

    batches = partial["batches"]
    data = {key_: torch.cat([batch[key_] for batch in batches]) for key_ in batches[0] if key_ != "seconds"}
    data["indices"] = indices
    seconds = float(sum(batch["seconds"] for batch in batches))
    save_tagged(folder / SET_FILE, "attack_set", {"settings": resolved, "seconds": seconds, **data})
    partial_path.unlink(missing_ok=True)
    return data, seconds
