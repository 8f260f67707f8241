"""Models made by other code: checkpoints of torchdiffeq's example and of
neural-ode-features, a user's own parts factory, and a model evaluated in memory."""

from __future__ import annotations

import argparse
import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import FIRST_CORRECT, TEST_SEED
from foreign_nets import (
    NodeFeaturesNet,
    alone,
    save_node_features,
    save_torchdiffeq,
    small_parts,
    torchdiffeq_layout,
)
from PIL import Image
from typer.testing import CliRunner

from nodeguard.cli import app
from nodeguard.data.datasets import load_dataset
from nodeguard.errors import CheckpointRefusedError, ConfigError, RegistryError
from nodeguard.models.evaluation import logits_alone
from nodeguard.models.importing import import_checkpoint, register_ode_classifier
from nodeguard.models.loading import load_model
from nodeguard.models.networks import ComposedODENet, build_model
from nodeguard.stages.in_memory import evaluate_in_memory
from nodeguard.stages.roc import RocSettings, run_roc

TOL = 1e-3
# The imported model and the other code's own forward take the same dopri5 steps on each
# image alone (nodeguard's per-sample solver steps as torchdiffeq does), so their logits
# differ only by float32 rounding, summed in another order (seen: 1.2e-7). 1e-4 (times
# the logits' scale) leaves a hundredfold margin for other CPUs and stays far below what a
# wrong import gives: a missing normalisation, a swapped layer or a dropped shortcut moves
# logits by tenths.
AGREE = 1e-4


def _digits(count: int = 6) -> torch.Tensor:
    return load_dataset("mnist5k").test.float_images(slice(0, count))


def _agree(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    ours, theirs = ours.detach(), theirs.detach()
    scale = max(1.0, float(theirs.abs().max()))
    assert float((ours - theirs).abs().max()) <= AGREE * scale


@pytest.mark.parametrize("stem", ["conv", "res"])
def test_torchdiffeq_example_checkpoint_agrees_with_odeint_image_by_image(stem, tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = torchdiffeq_layout().build(stem, TOL, filters=16).eval()
    path = save_torchdiffeq(net, tmp_path / "model.pth", TOL, stem, nepochs=160, data_aug=True, save="./x")

    result = import_checkpoint(path, "torchdiffeq-example", "mnist5k", registry=registry)
    assert result.name == "torchdiffeq-example-mnist5k" and result.tol_train == TOL and result.count == 1000
    assert 0.0 <= result.test_error <= 1.0 and result.mean_nfe > 0

    loaded = load_model(result.name, registry=registry, device="cpu")
    assert loaded.tol_train == TOL and loaded.config["source"]["settings"]["downsampling_method"] == stem
    images = _digits()
    ours, nfe = logits_alone(loaded.model, images)
    _agree(ours, alone(net, images))
    assert bool((nfe > 0).all())


@pytest.mark.parametrize(("downsample", "dropout"), [("minimal", 0.5), ("residual", 0.0), ("convolution", 0.0)])
def test_neural_ode_features_checkpoint_agrees_with_odeint_image_by_image(downsample, dropout, tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = NodeFeaturesNet(1, 16, downsample, dropout, TOL).eval()
    params = {"model": "odenet", "downsample": downsample, "filters": 16, "dropout": dropout, "tol": TOL}
    path = save_node_features(net, tmp_path / "ckpt_last.pth", {**params, "dataset": "mnist", "augmentation": "none"})

    result = import_checkpoint(path, "neural-ode-features", "mnist5k", name="nof", registry=registry)
    loaded = load_model("nof", registry=registry, device="cpu")
    assert result.tol_train == TOL and loaded.config["model"]["factory_kwargs"]["dropout"] == bool(dropout)
    images = _digits()
    _agree(logits_alone(loaded.model, images)[0], alone(net.eval(), images))


def _colour_tree(root, classes: int = 10, size: int = 32):
    rng = np.random.default_rng(TEST_SEED)
    for split in ("train", "test"):
        for label in range(classes):
            folder = root / split / f"class{label:02d}"
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "a.png")
    return f"folder:{root}"


def test_cifar_shaped_checkpoint_normalised_as_its_code_fed_it(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    dataset = _colour_tree(tmp_path / "tree")
    net = NodeFeaturesNet(3, 16, "residual", 0.0, TOL).eval()
    params = {"model": "odenet", "downsample": "residual", "tol": TOL, "dataset": "cifar10"}
    normalised = save_node_features(net, tmp_path / "norm.pth", {**params, "augmentation": "crop+flip+norm"})
    import_checkpoint(normalised, "neural-ode-features", dataset, name="cifar-shaped", registry=registry)
    loaded = load_model("cifar-shaped", registry=registry, device="cpu")
    images = load_dataset(dataset).test.float_images()
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
    _agree(logits_alone(loaded.model, images)[0], alone(net, (images - mean) / std))

    # a run that does not say how it normalised: the importer asks, and uses the answer
    silent = save_node_features(net, tmp_path / "silent.pth", params)
    with pytest.raises(ConfigError, match="give `mean` and `std`"):
        import_checkpoint(silent, "neural-ode-features", dataset, name="asked", registry=registry)
    import_checkpoint(
        silent, "neural-ode-features", dataset, name="asked", mean=[0.5] * 3, std=[0.25] * 3, registry=registry
    )
    asked = load_model("asked", registry=registry, device="cpu")
    _agree(logits_alone(asked.model, images)[0], alone(net, (images - 0.5) / 0.25))
    with pytest.raises(ConfigError, match="contradicts"):
        import_checkpoint(normalised, "neural-ode-features", dataset, name="other", mean=[0.5] * 3, registry=registry)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_checkpoint_that_would_run_code_is_refused(writer, tmp_path, registry):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"0.weight": torch.zeros(1)}, "args": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    with pytest.raises(CheckpointRefusedError, match="refused .*nodeguard never runs code"):
        import_checkpoint(path, "torchdiffeq-example", "mnist5k", registry=registry)
    assert not marker.exists() and registry.entries() == []

    result = CliRunner().invoke(
        app, ["models", "import", str(path), "--format", "torchdiffeq-example", "--dataset", "mnist5k"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output and not marker.exists()
    assert result.output.count("\n") == 1 and result.output.startswith("error: refused")


def test_each_format_allows_only_its_own_types(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = NodeFeaturesNet(1, 16, "minimal", 0.0, TOL)
    path = tmp_path / "with-namespace.pth"
    torch.save({"model": net.state_dict(), "params": {"tol": TOL}, "args": argparse.Namespace()}, path)
    with pytest.raises(CheckpointRefusedError, match="argparse.Namespace"):
        import_checkpoint(path, "neural-ode-features", "mnist5k", registry=registry)


def test_parameters_that_do_not_fit_are_refused_naming_the_first_mismatch(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = torchdiffeq_layout().build("conv", TOL, filters=16)
    state = net.state_dict()
    cases = {
        "unexpected key '13.weight'": {**state, "13.weight": torch.zeros(3)},
        "'7.odefunc.norm2.weight' has shape \\[8\\], the layout needs \\[16\\]": {
            **state,
            "7.odefunc.norm2.weight": torch.zeros(8),
        },
        "missing key '7.odefunc.norm3.bias'": {k: v for k, v in state.items() if k != "7.odefunc.norm3.bias"},
    }
    for expected, broken in cases.items():
        path = tmp_path / "broken.pth"
        torch.save({"state_dict": broken, "args": None}, path)
        with pytest.raises(CheckpointRefusedError, match=expected):
            import_checkpoint(path, "torchdiffeq-example", "mnist5k", tol_train=TOL, registry=registry)


def test_settings_the_checkpoint_lacks_or_contradicts(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = torchdiffeq_layout().build("res", TOL, filters=16)
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": net.state_dict()}, bare)
    with pytest.raises(ConfigError, match="give `tol_train`"):
        import_checkpoint(bare, "torchdiffeq-example", "mnist5k", registry=registry)
    stored = save_torchdiffeq(net, tmp_path / "stored.pth", TOL, "res")
    with pytest.raises(ConfigError, match="trained at tol 0.001; `tol_train` 0.0001 contradicts"):
        import_checkpoint(stored, "torchdiffeq-example", "mnist5k", tol_train=1e-4, registry=registry)
    with pytest.raises(ConfigError, match="1-channel images into 10 classes; .* 3-channel"):
        import_checkpoint(stored, "torchdiffeq-example", _colour_tree(tmp_path / "tree"), registry=registry)
    import_checkpoint(bare, "torchdiffeq-example", "mnist5k", tol_train=TOL, name="bare", registry=registry)
    with pytest.raises(RegistryError, match="already registered"):
        import_checkpoint(stored, "torchdiffeq-example", "mnist5k", name="bare", registry=registry)
    resnet = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"0.weight": torch.zeros(4, 1, 3, 3)}, "args": None}, resnet)
    with pytest.raises(CheckpointRefusedError, match="holds no ODE block"):
        import_checkpoint(resnet, "torchdiffeq-example", "mnist5k", tol_train=TOL, registry=registry)


def test_an_ode_stem_is_refused_with_the_reason(tmp_path, registry):
    state = {
        "downsample.conv1.weight": torch.zeros(4, 1, 4, 4),
        "downsample.odeblock.odefunc.norm1.weight": torch.zeros(4),
    }
    state["odeblock.odefunc.norm1.weight"] = torch.zeros(4)
    path = tmp_path / "ode-stem.pth"
    torch.save({"model": state, "params": {"downsample": "ode", "tol": TOL}}, path)
    with pytest.raises(CheckpointRefusedError, match="'ode' stem .* not supported"):
        import_checkpoint(path, "neural-ode-features", "mnist5k", registry=registry)


def test_models_import_command_registers_and_prints_the_error(tmp_path):
    torch.manual_seed(TEST_SEED)
    path = save_torchdiffeq(torchdiffeq_layout().build("conv", TOL, filters=8), tmp_path / "m.pth", TOL, "conv")
    args = ["models", "import", str(path), "--format", "torchdiffeq-example", "--dataset", "mnist5k", "--name", "byo"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["name"] == "byo" and report["count"] == 1000 and report["source"]["format"] == "torchdiffeq-example"
    listed = json.loads(CliRunner().invoke(app, ["models", "--json"]).output)["models"]
    assert [(entry["name"], entry["arch"], entry["status"]) for entry in listed] == [("byo", "composed", "ready")]
    shown = CliRunner().invoke(app, ["models", "show", "byo"])
    assert shown.exit_code == 0 and "evaluated in" in shown.output


def _fold_into_torchdiffeq_layout(model) -> dict[str, torch.Tensor]:
    """nodeguard's ODE-Net as torchdiffeq's example would hold it (res stem): its
    normalisation folded into the first convolution, which has no padding, so that every
    output sees only pixels and the fold is exact up to rounding."""
    state = model.state_dict()
    mean, std = state["normalize.mean"].flatten(), state["normalize.std"].flatten()
    weight, bias = state["downsampling.0.weight"], state["downsampling.0.bias"]
    folded = {
        "0.weight": weight / std.view(1, -1, 1, 1),
        "0.bias": bias - (weight * (mean / std).view(1, -1, 1, 1)).sum((1, 2, 3)),
    }
    for key, value in state.items():
        if key.startswith("downsampling.") and not key.startswith("downsampling.0."):
            folded[key[len("downsampling.") :].replace(".shortcut.", ".downsample.")] = value
        elif key.startswith("odeblock.func."):
            folded["3.odefunc." + key[len("odeblock.func.") :].replace(".conv.", "._layer.")] = value
    folded["4.weight"], folded["4.bias"] = state["head.0.weight"], state["head.0.bias"]
    folded["8.weight"], folded["8.bias"] = state["head.4.weight"], state["head.4.bias"]
    return folded


def test_a_trained_model_imported_from_another_layout_runs_every_stage(tiny_model, tmp_path, registry):
    tiny = load_model(tiny_model, device="cpu")
    path = tmp_path / "tiny-as-torchdiffeq.pth"
    torch.save({"state_dict": _fold_into_torchdiffeq_layout(tiny.model), "args": None}, path)
    result = import_checkpoint(
        path, "torchdiffeq-example", "mnist5k", tol_train=TOL, name="refolded", registry=registry
    )
    imported = load_model("refolded", registry=registry, device="cpu")
    images = _digits(20)
    _agree(logits_alone(imported.model, images)[0], logits_alone(tiny.model, images)[0])
    assert result.count == 1000

    # blend succeeds on each attacked digit by construction (conftest): the imported
    # model's margins are the tiny model's, to rounding
    report = run_roc(RocSettings(votes=(3, 5), count=FIRST_CORRECT, seed=TEST_SEED, attack="blend"), model="refolded")
    assert report.pristine == FIRST_CORRECT and report.adversarial == FIRST_CORRECT
    assert [curve.votes for curve in report.curves] == [3, 5]


def test_in_memory_evaluation_equals_the_registered_run_and_writes_nothing(tiny_model, registry):
    settings = RocSettings(votes=(3, 5), count=FIRST_CORRECT, seed=TEST_SEED, attack="blend")
    registered = run_roc(settings, model=tiny_model, device="cpu")
    before = sorted(path.relative_to(registry.root) for path in registry.root.rglob("*"))

    model = load_model(tiny_model, device="cpu").model
    test = load_dataset("mnist5k").test
    in_memory = evaluate_in_memory(model, test.images[:40], test.labels[:40], roc_settings=settings, device="cpu")
    assert in_memory.roc.curves == registered.curves
    assert len(in_memory.pristine_votes.predictions) == registered.pristine
    assert in_memory.adversarial_votes.predictions.shape == (registered.adversarial, 5)
    assert sorted(path.relative_to(registry.root) for path in registry.root.rglob("*")) == before
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\]"):
        evaluate_in_memory(model, test.float_images(slice(0, 4)) * 2, test.labels[:4], roc_settings=settings)


def test_a_users_own_parts_factory_round_trips_through_the_registry(registry):
    torch.manual_seed(TEST_SEED)
    parts = small_parts(1, 8, 10)
    result = register_ode_classifier(
        parts,
        small_parts,
        "mnist5k",
        TOL,
        "mine",
        factory_kwargs={"channels": 1, "filters": 8, "classes": 10},
        t_end=0.5,
        registry=registry,
    )
    loaded = load_model("mine", registry=registry, device="cpu")
    assert result.count == 1000 and loaded.config["model"]["factory"] == "foreign_nets:small_parts"
    assert isinstance(loaded.model, ComposedODENet) and loaded.model.t_end == 0.5

    # the per-sample solver over [0, T] against torchdiffeq's odeint on each image alone
    from torchdiffeq import odeint

    images = _digits()
    with torch.no_grad():
        theirs = torch.cat(
            [
                parts.head(
                    odeint(parts.odefunc, parts.features(x[None]), torch.tensor([0.0, 0.5]), rtol=TOL, atol=TOL)[1]
                )
                for x in images
            ]
        )
    _agree(logits_alone(loaded.model, images)[0], theirs)


def test_a_config_can_name_only_a_marked_factory(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    parts = small_parts(1, 8, 10)
    with pytest.raises(ConfigError, match="not a function marked"):
        register_ode_classifier(parts, lambda **kw: parts, "mnist5k", TOL, "x", registry=registry)
    marker = tmp_path / "ran"
    base = {"arch": "composed", "num_classes": 10, "tol": TOL, "input_shape": [1, 28, 28]}
    for factory, kwargs in (
        ("os:system", {"command": f"touch {marker}"}),
        ("foreign_nets:unmarked_parts", {"channels": 1, "filters": 8, "classes": 10}),
    ):
        with pytest.raises(ConfigError, match="not a function marked"):
            build_model({**base, "factory": factory, "factory_kwargs": kwargs})
    assert not marker.exists()
    with pytest.raises(ConfigError, match="cannot be imported"):
        build_model({**base, "factory": "no_such_module_here:parts", "factory_kwargs": {}})


def _odefunc_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for norm in ("norm1", "norm2", "norm3"):
        shapes[f"{prefix}{norm}.weight"] = shapes[f"{prefix}{norm}.bias"] = (width,)
    for conv in ("conv1", "conv2"):
        shapes[f"{prefix}{conv}._layer.weight"] = (width, width + 1, 3, 3)
        shapes[f"{prefix}{conv}._layer.bias"] = (width,)
    return shapes


# the parameters of the two codes' networks as their own source defines them (torchdiffeq
# examples/odenet_mnist.py, --downsampling-method conv; neural-ode-features model.py,
# ODENet(1, downsample='minimal', dropout=0.5)), written out by hand so that the importer
# is checked against the upstream layout, not only against this repository's rebuild of it
UPSTREAM = {
    "torchdiffeq-example": {
        "0.weight": (64, 1, 3, 3),
        "0.bias": (64,),
        "1.weight": (64,),
        "1.bias": (64,),
        "3.weight": (64, 64, 4, 4),
        "3.bias": (64,),
        "4.weight": (64,),
        "4.bias": (64,),
        "6.weight": (64, 64, 4, 4),
        "6.bias": (64,),
        **_odefunc_shapes("7.odefunc.", 64),
        "8.weight": (64,),
        "8.bias": (64,),
        "12.weight": (10, 64),
        "12.bias": (10,),
    },
    "neural-ode-features": {
        "downsample.module.0.weight": (24, 1, 3, 3),
        "downsample.module.0.bias": (24,),
        "downsample.module.1.weight": (24,),
        "downsample.module.1.bias": (24,),
        "downsample.module.3.weight": (24, 24, 4, 4),
        "downsample.module.3.bias": (24,),
        "downsample.module.4.weight": (24,),
        "downsample.module.4.bias": (24,),
        "downsample.module.6.weight": (64, 24, 4, 4),
        "downsample.module.6.bias": (64,),
        **_odefunc_shapes("odeblock.odefunc.", 64),
        "classifier.module.0.weight": (64,),
        "classifier.module.0.bias": (64,),
        "classifier.module.5.weight": (10, 64),
        "classifier.module.5.bias": (10,),
    },
}


@pytest.mark.parametrize("format", sorted(UPSTREAM))
def test_the_upstream_parameter_layouts_import(format, tmp_path, registry):
    generator = torch.Generator().manual_seed(TEST_SEED)
    state = {key: 0.1 * torch.randn(shape, generator=generator) for key, shape in UPSTREAM[format].items()}
    if format == "torchdiffeq-example":
        assert {
            key: tuple(value.shape) for key, value in torchdiffeq_layout().build("conv", TOL).state_dict().items()
        } == UPSTREAM[format]
        checkpoint = {
            "state_dict": state,
            "args": argparse.Namespace(network="odenet", tol=TOL, downsampling_method="conv"),
        }
    else:
        checkpoint = {
            "model": state,
            "params": {"model": "odenet", "downsample": "minimal", "tol": TOL, "dropout": 0.5},
        }
    torch.save(checkpoint, tmp_path / "upstream.pth")
    result = import_checkpoint(tmp_path / "upstream.pth", format, "mnist5k", test_limit=20, registry=registry)
    loaded = load_model(result.name, registry=registry, device="cpu")
    assert result.count == 20 and loaded.config["model"]["factory_kwargs"]["widths"][-1] == 64


def test_a_bare_state_dict_imports_and_a_bad_tol_is_refused_first(tmp_path, registry):
    torch.manual_seed(TEST_SEED)
    net = torchdiffeq_layout().build("conv", TOL, filters=8).eval()
    torch.save(net.state_dict(), tmp_path / "bare.pth")  # the weights alone, as many save them
    with pytest.raises(ConfigError, match=r"`tol_train` must be in \[1e-06, 10\]"):
        import_checkpoint(tmp_path / "bare.pth", "torchdiffeq-example", "mnist5k", tol_train=100.0, registry=registry)
    result = import_checkpoint(
        tmp_path / "bare.pth", "torchdiffeq-example", "mnist5k", tol_train=TOL, test_limit=10, registry=registry
    )
    loaded = load_model(result.name, registry=registry, device="cpu")
    _agree(logits_alone(loaded.model, _digits(3))[0], alone(net, _digits(3)))
    with pytest.raises(
        CheckpointRefusedError,
        match="it has 'state_dict' in the torchdiffeq-example layout: try `format` torchdiffeq-example",
    ):
        torch.save({"state_dict": net.state_dict(), "epoch": 1}, tmp_path / "wrapped.pth")
        import_checkpoint(tmp_path / "wrapped.pth", "neural-ode-features", "mnist5k", tol_train=TOL, registry=registry)
