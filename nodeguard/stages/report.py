"""One report of a model: what the result store holds for it, gathered with the commands that made it.

:func:`gather_report` reads a registered model's training record, its stored attack sets
(their summaries) and security reports, and draws the defense's ROC over its largest
stored FMN, CW or blend attack set (votes are reused from the store, or drawn when missing: the
cheap part, about a minute per 1000 digits on 2 CPU cores; no attack is run). Each figure
carries the ``nodeguard`` command that reproduces it. :mod:`nodeguard.reporting.report_page`
writes it as one HTML page, :mod:`nodeguard.reporting.model_card` as a JSON model card.
"""

from __future__ import annotations

import json
import platform
import sys
import typing
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from nodeguard.attacks import ATTACKS
from nodeguard.constants import (
    ATTACK_SET_KIND,
    CERTIFY_KIND,
    RESULT_JSON,
    SECURITY_KIND,
    SUMMARY_FILE,
    SWEEP_CELL_KIND,
    __version__,
)
from nodeguard.defense.votes import VotesNotStored
from nodeguard.errors import ConfigError
from nodeguard.experiments.attack_sets import ATTACK_BATCH_SIZE, AttackReport
from nodeguard.intervals import Rate
from nodeguard.plain import to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.stages.certify import CertifyReport, stored_certify_report
from nodeguard.stages.roc import RocReport, RocSettings, run_roc
from nodeguard.stages.security import SECURITY_REPORT_VERSION, SecurityReport
from nodeguard.storage.files import read_json
from nodeguard.storage.registry import Registry

ROC_ATTACKS = ("fmn", "cw", "blend")  # the attacks whose sets the ROC is drawn over, preferred first
DEFAULT_ROC_VOTES = (5, 10, 15, 20)


@dataclass
class StoredAttack:
    """One stored attack set: its summary (the ``AttackReport`` its summary.json holds) and
    the command that makes it."""

    key: str
    summary: AttackReport
    command: str


@dataclass
class StoredSecurity:
    """One stored security report, the settings that made it, and the command that makes it again."""

    key: str
    report: SecurityReport
    settings: dict[str, Any]
    command: str


@dataclass
class TauRow:
    """One tolerance of a stored tau table (Carrara et al., WIFS 2019).

    Attributes:
        tol: the tolerance tau each image was classified at (alone, per-sample dopri5).
        rate: misclassified images, of the test images (error table), adversarials
            misclassified at ``tol``, of the attacked images (adversarials table), or
            images whose float adversarial, made at ``tol``, is misclassified there, of
            the attacked images (attack table).
        nfe: mean function evaluations per image (error table only).
        mean_l2: mean L2 (pixels in [0, 1]) of the successful float adversarials (attack
            table only).
    """

    tol: float
    rate: Rate
    nfe: float | None = None
    mean_l2: float | None = None


@dataclass
class TauTable:
    """Stored sweep cells: the test error against tau (``kind`` "error"), one attack set's
    adversarials judged at each tau (the decoupled sweep, "judged"), or an attack made and
    judged at each tau (the coupled sweep, "attack": attack sets that differ only in
    tol_attack), and the command that prints the table again."""

    title: str
    rows: list[TauRow]
    command: str
    kind: Literal["error", "judged", "attack"] = "error"


@dataclass
class StoredCertificates:
    """Stored randomized-smoothing certificates, and the command that makes them again."""

    key: str
    report: CertifyReport
    command: str


@dataclass
class ModelReport:
    """Everything stored for one model, with the commands that reproduce each figure.

    Attributes:
        model: the model's name.
        config: its config.yaml (architecture, training settings, data set).
        metrics: its metrics.json (test error in [0, 1], tol_train, NFE, training seconds).
        attacks: the stored attack sets, largest first.
        roc: the defense's ROC over the largest FMN, CW or blend attack set (None: no such set).
        roc_command: the command that draws it.
        train_command: the command that trains the model again (None: not trained by nodeguard).
        security: the stored security reports, the largest (then latest) first.
        certified: the stored certificates of randomized smoothing (Cohen et al. 2019), the
            most images first.
        tau_tables: the stored sweep cells as tau tables (``nodeguard sweep``): the error
            against tau per test-image count, each attack set judged against tau (the
            decoupled sweep), and each attack made and judged at every tau (the coupled
            sweep, from the attack sets that differ only in tol_attack).
        versions: nodeguard, torch, Python and the platform that wrote this report.
        device: the processor this report was written on.
        missing: what is not stored yet, each with the command that makes it.
    """

    model: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    attacks: list[StoredAttack]
    roc: RocReport | None
    roc_command: str | None
    train_command: str | None
    security: list[StoredSecurity]
    versions: dict[str, str]
    device: str
    missing: list[str] = field(default_factory=list)
    certified: list[StoredCertificates] = field(default_factory=list)
    tau_tables: list[TauTable] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "not installed"


def versions() -> dict[str, str]:
    """The versions that shape the figures: nodeguard, torch, torchdiffeq, Python, the OS."""
    return {
        "nodeguard": __version__,
        "torch": _package_version("torch"),
        "torchdiffeq": _package_version("torchdiffeq"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def processor() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else the platform's word."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# the attack options `nodeguard attack` takes as flags (the rest are set from Python)
ATTACK_FLAGS: tuple[str, ...] = (
    "steps",
    "binary_steps",
    "initial_const",
    "lr",
    "kappa",
    "eps",
    "norm",
    "alpha_init",
    "gamma_init",
) + (
    "queries",
    "draws",
    "eot_iter",
)
ROC_FLAGS = ("kappa", "draws", "steps", "binary_steps")  # the attack options `nodeguard roc` takes
ATTACK_BATCH = ATTACK_BATCH_SIZE  # AttackSettings' default batch size


def _changed_options(attack: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that differ from the attack's defaults (what a command must spell out)."""
    defaults = ATTACKS.get(attack).resolve_options({})
    return {name: value for name, value in options.items() if value != defaults.get(name)}


def _from_python(extra: dict[str, Any]) -> str:
    """A note after a command for settings it has no flag for (empty where there are none)."""
    if not extra:
        return ""
    return "  # and, from Python: " + ", ".join(f"{name}={_value(value)}" for name, value in extra.items())


def attack_command(model: str, settings: dict[str, Any]) -> str:
    """The ``nodeguard attack`` command that makes an attack set with these resolved settings
    (a set that starts from another is made from Python or by ``nodeguard security``)."""
    if settings.get("start"):
        return f"made with a start (security's EOT-CW, or from Python): attack set {settings['start']}"
    parts = ["nodeguard attack", settings["attack"], "--model", model, "--count", str(settings["count"])]
    parts += ["--tol-attack", f"{settings['tol_attack']:g}", "--seed", str(settings["seed"])]
    if settings.get("split", "test") != "test":
        parts += ["--split", settings["split"]]
    if not settings.get("only_correct", True):
        parts += ["--all"]
    if settings.get("batch_size", ATTACK_BATCH) != ATTACK_BATCH:
        parts += ["--batch-size", str(settings["batch_size"])]
    options = settings.get("options", {})
    extra = {}
    for name, value in _changed_options(settings["attack"], options).items():
        if name in ("tol_low", "tol_high"):
            continue
        if name in ATTACK_FLAGS:
            parts += [_flag(name), _value(value)]
        else:
            extra[name] = value
    if "tol_low" in options:
        parts += ["--tol-range", f"{options['tol_low']:g},{options['tol_high']:g}"]
    return " ".join(parts) + _from_python(extra)


def _listed(values: list[float]) -> str:
    return ",".join(f"{value:g}" for value in values) if values else "''"


def security_command(model: str, settings: dict[str, Any]) -> str:
    """The ``nodeguard security`` command of a stored security report's settings (its key).

    The draws: a public seed is printed; secret draws (``key:ID``) are this installation's
    key, which the same command reuses without a ``--seed``.
    """
    from nodeguard.stages.security import SecuritySettings

    defaults = SecuritySettings()
    parts = ["nodeguard security --model", model, "--count", str(settings["count"])]
    if isinstance(settings.get("seed"), int):
        parts += ["--seed", str(settings["seed"])]
    if settings.get("attack_seed", 0):
        parts += ["--attack-seed", str(settings["attack_seed"])]
    if settings.get("attack_batch_size", ATTACK_BATCH) != ATTACK_BATCH:
        parts += ["--attack-batch-size", str(settings["attack_batch_size"])]
    parts += ["--votes", str(settings["votes"])]
    if settings.get("vmin") is not None:
        parts += ["--vmin", str(settings["vmin"])]
    parts += ["--kappas", _listed(settings["kappas"]), "--aa-eps", _listed(settings["autoattack_eps"])]
    parts += ["--aa-steps", str(settings["autoattack_steps"]), "--aa-eot-iter", str(settings["autoattack_eot_iter"])]
    parts += ([] if settings["eot"] else ["--no-eot"]) + ["--draws", str(settings["eot_draws"])]
    parts += [] if settings["square"] else ["--no-square"]
    parts += ["--square-queries", str(settings["square_queries"]), "--square-draws", str(settings["square_draws"])]
    if "budget_check" in settings and settings["budget_check"] != defaults.budget_check:
        parts += ["--budget-check", str(settings["budget_check"])]
    if settings.get("warm_start", True):
        parts += ["--warm-searches", str(settings.get("warm_binary_steps", defaults.warm_binary_steps))]
    else:
        parts += ["--cold-start"]
    options = settings.get("attack_options", {})
    for name in ("steps", "binary_steps"):
        if name in options:
            parts += [_flag(name), str(options[name])]
    parts += ["--tol-range", f"{settings['tol_low']:g},{settings['tol_high']:g}", "--eps", _listed(settings["eps"])]
    if settings.get("tol_ranges"):
        parts += ["--tol-ranges", ",".join(f"{low:g}:{high:g}" for low, high in settings["tol_ranges"])]
    if settings.get("batch_size", defaults.batch_size) != defaults.batch_size:
        parts += ["--batch-size", str(settings["batch_size"])]
    extra: dict[str, Any] = {
        name: settings[name]
        for name in ("accept_level", "eot_kappa")
        if name in settings and settings[name] != getattr(defaults, name)
    }
    draws = "" if isinstance(settings.get("seed"), int) else f"  # secret draws: {settings.get('seed')}"
    return " ".join(parts) + _from_python(extra) + draws


def certify_command(model: str, report: CertifyReport) -> str:
    """The ``nodeguard certify`` command of stored certificates."""
    parts = ["nodeguard certify --model", model, "--sigma", f"{report.sigma:g}", "--count", str(report.count)]
    parts += ["--n0", str(report.n0), "--n", str(report.n), "--alpha", f"{report.alpha:g}", "--seed", str(report.seed)]
    if report.predict_accuracy is not None:  # PREDICT is part of the certificates' key
        parts += ["--predict"]
    return " ".join(parts)


def roc_command(model: str, settings: RocSettings) -> str:
    """The ``nodeguard roc`` command of these ROC settings."""
    parts = ["nodeguard roc --model", model, "--count", str(settings.count), "--attack", settings.attack]
    parts += ["--votes", ",".join(str(votes) for votes in settings.votes)]
    parts += [] if settings.seed is None else ["--seed", str(settings.seed)]
    parts += ["--tol-range", f"{settings.tol_range.low:g},{settings.tol_range.high:g}"]
    for name, value in _changed_options(settings.attack, settings.attack_options).items():
        parts += [_flag(name), _value(value)]
    return " ".join(parts)


TRAIN_FLAGS: tuple[str, ...] = ("arch", "tol_train", "epochs", "batch_size", "lr", "weight_decay", "optimizer")
TRAIN_FLAGS += ("schedule", "dropout", "filters", "seed", "train_limit", "test_limit", "noise_sigma")


def train_command(model: str, config: dict[str, Any]) -> str | None:
    """The ``nodeguard train`` command of a model's training settings (None: not trained by nodeguard)."""
    training = config.get("training")
    if not isinstance(training, dict) or "dataset" not in training:
        return None
    parts = ["nodeguard train", str(training["dataset"]), "--name", model]
    for name in TRAIN_FLAGS:
        if training.get(name) is not None:
            parts += [_flag(name), _value(training[name])]
    if "augment" in training:
        parts += ["--augment" if training["augment"] else "--no-augment"]
    return " ".join(parts)


def _roc_candidate(summary: AttackReport) -> bool:
    """An FMN, CW or blend set that ``nodeguard roc`` can read: some 8-bit adversarial, options it takes."""
    settings = summary.settings
    if summary.attack not in ROC_ATTACKS or not summary.success_rate_8bit.count or settings.get("start"):
        return False
    return set(_changed_options(summary.attack, settings.get("options", {}))) <= set(ROC_FLAGS)


def _stored(registry: Registry, model: str, kind: str) -> list[tuple[str, dict[str, Any], float]]:
    """(key, saved JSON or summary, modification time) of each finished result of a kind."""
    folder = registry.results_dir(model) / kind
    found = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        name = RESULT_JSON if kind in (SECURITY_KIND, CERTIFY_KIND, SWEEP_CELL_KIND) else SUMMARY_FILE
        saved = path / name
        if saved.is_file():
            found.append((path.name, read_json(saved), saved.stat().st_mtime))
    return found


def _tau_tables(model: str, registry: Registry, attacks: list[StoredAttack]) -> list[TauTable]:
    """The stored sweep cells of a model as tau tables, each with the command that prints it."""
    errors: dict[Any, list[TauRow]] = {}
    judged: dict[str, list[TauRow]] = {}
    for _key, saved, _ in _stored(registry, model, SWEEP_CELL_KIND):
        settings, values = saved.get("settings", {}), saved.get("values", {})
        if settings.get("cell") == "error" and settings.get("tol") is not None and "errors" in values:
            row = TauRow(settings["tol"], Rate.of(int(values["errors"]), int(values["images"])), values["nfe"])
            errors.setdefault(settings.get("test_limit"), []).append(row)
        elif settings.get("cell") == "decoupled" and "successes" in values:
            row = TauRow(settings["tol_test"], Rate.of(int(values["successes"]), int(values["attacked"])))
            judged.setdefault(settings["set"], []).append(row)
    tables = []
    for limit, rows in sorted(errors.items(), key=lambda item: -(item[0] or 10**9)):
        rows.sort(key=lambda row: row.tol)
        command = f"nodeguard sweep --model {model} --tols {','.join(_tol_text(row.tol) for row in rows)}"
        command += "" if limit is None else f" --test-limit {limit}"
        title = "test error against tau" + ("" if limit is None else f" (first {limit} test images)")
        tables.append(TauTable(title, rows, command))
    by_key = {item.key: item.summary.settings for item in attacks}
    for set_key, rows in sorted(judged.items()):
        rows.sort(key=lambda row: row.tol)
        attack = by_key.get(set_key, {})
        options = _changed_options(attack["attack"], attack.get("options", {})) if attack else {}
        if attack and set(options) <= {"steps", "binary_steps"}:
            command = (
                f"nodeguard sweep --model {model} --attack {attack['attack']} --count {attack['count']} "
                f"--tol-attack {_tol_text(attack['tol_attack'])} --tols {','.join(_tol_text(row.tol) for row in rows)}"
            )
            command += "".join(f" {_flag(name)} {_value(value)}" for name, value in options.items())
            # the sweep prints the error beside: the stored error cells that cover these taus
            command += _test_limit_flag(rows, errors) or ""
        else:
            command = f"made from Python, or its attack set {set_key} is no longer stored"
        title = f"adversarials of attack set {set_key}, misclassified at each tau"
        tables.append(TauTable(title, rows, command, kind="judged"))
    return tables + _coupled_tau_tables(model, attacks, errors)


def _coupled_tau_tables(model: str, attacks: list[StoredAttack], errors: dict[Any, list[TauRow]]) -> list[TauTable]:
    """The coupled sweep's tau tables (``nodeguard sweep --attack A``: tol_attack = tau in each
    row): the stored attack sets that differ only in tol_attack, two taus or more, each row a
    set's float success at its tau and mean L2.

    Args:
        model: the model's name.
        attacks: its stored attack sets.
        errors: the stored error cells by test-image limit (None: all), as the error tables'
            rows: the sweep command is printed only where they cover every tau, so that it
            prints the table from the store alone.

    Returns:
        One ``TauTable`` (kind "attack") per group, the taus ascending.
    """
    groups: dict[str, list[StoredAttack]] = {}
    for item in attacks:
        others = {name: value for name, value in item.summary.settings.items() if name != "tol_attack"}
        groups.setdefault(json.dumps(others, sort_keys=True, default=str), []).append(item)
    tables = []
    for members in groups.values():
        members = sorted(members, key=lambda item: item.summary.tol_attack)
        if len({item.summary.tol_attack for item in members}) < 2:
            continue
        settings = members[0].summary.settings
        attack = settings["attack"]
        rows = [
            TauRow(item.summary.tol_attack, item.summary.success_rate, mean_l2=item.summary.mean_l2) for item in members
        ]
        options = _changed_options(attack, settings.get("options", {}))
        limit_flag = _test_limit_flag(rows, errors)
        sweep_makes = (
            settings.get("seed", 0) == 0
            and settings.get("start") is None
            and settings.get("only_correct", True)
            and settings.get("split", "test") == "test"
            and settings.get("batch_size") == ATTACK_BATCH
            and settings.get("algorithm_version") == ATTACKS.get(attack).version
            and set(options) <= {"steps", "binary_steps"}  # what `nodeguard sweep` can spell
        )
        if sweep_makes and limit_flag is not None:
            command = (
                f"nodeguard sweep --model {model} --attack {attack} --count {settings['count']} "
                f"--tols {','.join(_tol_text(row.tol) for row in rows)}"
            )
            command += "".join(f" {_flag(name)} {_value(value)}" for name, value in options.items()) + limit_flag
        elif sweep_makes:
            command = (
                "each attack set's own command (below, with the stored attack sets); `nodeguard sweep --attack "
                f"{attack}` would also compute the test error at each tau"
            )
        else:
            command = "each attack set's own command (below, with the stored attack sets)"
        described = [f"{name} {_value(value)}" for name, value in options.items()]
        described += [f"seed {settings['seed']}"] if settings.get("seed", 0) else []
        described += [f"batch {settings['batch_size']}"] if settings.get("batch_size") != ATTACK_BATCH else []
        described += [f"from {settings['start']}"] if settings.get("start") else []
        described += ["every image"] if not settings.get("only_correct", True) else []
        which = f" ({', '.join(described)})" if described else ""
        title = f"{attack}{which} on {settings['count']} images, made and judged at each tau (tol_attack = tau)"
        tables.append(TauTable(title, rows, command, kind="attack"))
    return tables


def _test_limit_flag(rows: list[TauRow], errors: dict[Any, list[TauRow]]) -> str | None:
    """The ``--test-limit`` a sweep over these rows' taus needs to find its error cells stored:
    "" (cells over every test image cover them), " --test-limit N" (the largest limit whose
    cells cover them), or None (no stored error cells cover them: a sweep would compute them).
    ``errors``: the stored error cells' rows by test-image limit (None: every test image)."""
    tols = {row.tol for row in rows}
    covering = [limit for limit, found in errors.items() if tols <= {row.tol for row in found}]
    if not covering:
        return None
    return "" if None in covering else f" --test-limit {max(covering)}"


def _tol_text(tol: float) -> str:
    """A tolerance as a command spells it: ``:g`` where that reads back as the same float."""
    short = f"{tol:g}"
    return short if float(short) == tol else repr(tol)


def _roc_settings(attack: dict[str, Any], seed: int | None) -> RocSettings:
    """The ROC settings whose attack set is the stored one with these resolved settings."""
    options = {key: value for key, value in attack["options"].items() if key in ROC_FLAGS}
    return RocSettings(
        votes=DEFAULT_ROC_VOTES, count=attack["count"], seed=seed, attack=attack["attack"], attack_options=options
    )


def _same(first: dict[str, Any], second: dict[str, Any]) -> bool:
    return json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def gather_report(
    model: str | None = None,
    registry: Registry | None = None,
    roc_seed: int | None = None,
    roc: bool | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
    security_key: str | None = None,
) -> ModelReport:
    """Everything stored for a model, and the ROC over its largest FMN, CW or blend attack set.

    Args:
        model: a registered model; None means the most recently trained one.
        registry: None means ``Registry()`` at the default cache root.
        roc_seed: the defense's public seed for the ROC's draws (None: the installation's
            secret draws); the same seed as ``nodeguard roc --seed`` reuses its votes.
        roc: None: draw the ROC from stored votes only (where they are missing, list the
            command that draws them); True: draw the votes that are missing; False: leave
            the ROC out.
        device: "auto", "cpu" or "cuda", for the ROC's votes.
        progress: receives log lines and progress.
        security_key: the stored security report to show in full (its folder name, as the
            page lists the others); None: the largest, then the latest.

    Returns:
        The ``ModelReport``.

    Raises:
        ModelNotFoundError: ``model`` is not registered (or None and none is ready).
        RegistryError: the model's files are damaged.
        ConfigError: no security report ``security_key`` is stored.
    """
    registry = registry or Registry()
    name = registry.resolve(model)
    config = registry.read_config(name)
    metrics = registry.read_json(name, "metrics.json", default={}) or {}
    attacks = []
    for key, summary, _ in _stored(registry, name, ATTACK_SET_KIND):
        settings = summary.get("settings", {})
        if settings:
            attacks.append(StoredAttack(key, AttackReport.from_dict(summary), attack_command(name, settings)))
    attacks.sort(key=lambda item: (-item.summary.count, item.key))
    security, outdated = [], {}
    for key, saved, _modified in sorted(_stored(registry, name, SECURITY_KIND), key=lambda item: -item[2]):
        if not (isinstance(saved, dict) and "values" in saved and "settings" in saved):
            continue
        command = security_command(name, saved["settings"])
        if saved["settings"].get("report_version") != SECURITY_REPORT_VERSION:
            outdated[key] = command
        else:
            report = SecurityReport.from_dict(saved["values"])
            security.append(StoredSecurity(key, report, saved["settings"], command))
    # a report of another version is listed once, unless its command made one of this version since
    current = {item.command for item in security}
    missing = [
        f"security report {key}: made by another nodeguard version; make it again (its attack sets are "
        f"reused): {command}"
        for key, command in outdated.items()
        if command not in current
    ]
    security.sort(key=lambda item: -item.report.count)  # stable: the latest first among equal counts
    if security_key is not None:  # the one asked for first
        chosen = [item for item in security if item.key == security_key]
        if not chosen and security_key in outdated:
            raise ConfigError(
                f"security report {security_key!r} of {name} was made by another nodeguard version; make it again "
                f"(its attack sets are reused): {outdated[security_key]}"
            )
        if not chosen:
            stored_keys = ", ".join(item.key for item in security) or "none"
            raise ConfigError(f"no security report {security_key!r} stored for {name}; stored: {stored_keys}")
        security = chosen + [item for item in security if item.key != security_key]
    tau_tables = _tau_tables(name, registry, attacks)
    tol = metrics.get("tol_train") or config.get("model", {}).get("tol")
    certified = []
    for key, saved, _ in _stored(registry, name, CERTIFY_KIND):
        try:
            report_of = stored_certify_report(name, tol, saved)
        except (KeyError, TypeError, ConfigError):  # certificates of another version
            continue
        certified.append(StoredCertificates(key, report_of, certify_command(name, report_of)))
    certified.sort(key=lambda item: (-item.report.count, item.key))
    roc_report, roc_text = None, None
    tol_train = float(metrics.get("tol_train") or config.get("model", {}).get("tol", 0.0) or 0.0)
    candidates = [
        (item, settings)
        for item in attacks
        if _roc_candidate(item.summary)
        for settings in [_roc_settings(item.summary.settings, roc_seed)]
        if tol_train > 0 and _same(settings.attack_settings().resolve(tol_train).as_dict(), item.summary.settings)
    ]
    # the most digits, then FMN, CW, blend, then the attack's defaults (minimal adversarials, as
    # in the paper's ROC) before a changed option such as kappa
    candidates.sort(
        key=lambda pair: (
            -pair[0].summary.count,
            ROC_ATTACKS.index(pair[0].summary.attack),
            len(_changed_options(pair[0].summary.attack, pair[0].summary.settings.get("options", {}))),
        )
    )
    if roc is not False and candidates:
        settings = candidates[0][1]
        try:
            roc_report = run_roc(
                settings, model=name, registry=registry, device=device, progress=progress, compute_votes=bool(roc)
            )
            roc_text = roc_command(name, settings)
        except ConfigError as error:  # e.g. a model without a solver: no ROC to draw
            missing.append(f"ROC: {error}")
        except VotesNotStored as error:  # computed only when asked
            missing.append(f"ROC: {error}; draw them: {roc_command(name, settings)} (or report --roc)")
    elif roc is not False:
        missing.append(
            f"ROC: no FMN, CW or blend attack set that `nodeguard roc` reads; make one: nodeguard roc --model {name} "
            "--count 1000 --attack fmn" + ("" if roc_seed is None else f" --seed {roc_seed}")
        )
    if not security and not outdated:
        missing.append(
            f"security: none stored yet; the README's table: nodeguard security --model {name} --count 100 "
            "--aa-steps 20 --aa-eot-iter 5"
        )
    return ModelReport(
        model=name,
        config=json.loads(json.dumps(config, default=str)),
        metrics={key: value for key, value in metrics.items() if key != "history"},
        attacks=attacks,
        roc=roc_report,
        roc_command=roc_text,
        train_command=train_command(name, config),
        security=security,
        versions=versions(),
        device=processor(),
        missing=missing,
        certified=certified,
        tau_tables=tau_tables,
    )
