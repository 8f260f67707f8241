from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from nodeguard.errors import ConfigError, DataUnavailableError, RegistryError
from nodeguard.models.loading import load_model
from nodeguard.progress import RecordingProgress
from nodeguard.training.train import train_model


class InterruptingProgress(RecordingProgress):
    """Raises KeyboardInterrupt at the given batch of the given epoch, like a Ctrl-C."""

    def __init__(self, epoch_description: str, batch: int):
        super().__init__()
        self.epoch_description, self.batch = epoch_description, batch

    def task(self, description, total):
        progress = self

        class Task:
            done = 0

            def advance(self, steps=1, **fields):
                self.done += steps
                if description == progress.epoch_description and self.done >= progress.batch:
                    raise KeyboardInterrupt

            def close(self):
                pass

        return Task()


def test_training_registers_a_model_with_its_settings(registry):
    result = train_model(tiny_config(), registry=registry)
    assert result.model == "odenet-mnist5k" and result.epochs == 2 and not result.reused
    assert 0.0 <= result.test_error <= 1.0 and result.nfe > 0
    assert len(result.history) == 2
    files = {p.name for p in registry.model_dir(result.model).iterdir()}
    assert {"config.yaml", "checkpoint.pt", "metrics.json", "history.json"} <= files
    config = registry.read_config(result.model)
    assert config["training"]["tol_train"] == 1e-3 and config["model"]["filters"] == 8
    loaded = load_model(registry=registry, device="cpu")
    assert loaded.name == result.model and loaded.tol_train == 1e-3
    assert loaded.input_shape == (1, 28, 28) and loaded.num_classes == 10
    assert registry.get(result.model).status == "ready"


def test_same_settings_again_reuse_the_model(registry):
    first = train_model(tiny_config(epochs=1), registry=registry)
    progress = RecordingProgress()
    again = train_model(tiny_config(epochs=1), registry=registry, progress=progress)
    assert again.reused and again.test_error == first.test_error
    assert again.history == first.history and again.history[0].epoch == 1  # typed, as trained
    assert any("reusing" in message for message in progress.messages)


def test_other_settings_under_the_same_name_need_restart(registry):
    train_model(tiny_config(epochs=1), registry=registry)
    with pytest.raises(ConfigError, match="lr.*`restart`"):
        train_model(tiny_config(epochs=1, lr=1e-2), registry=registry)
    result = train_model(tiny_config(epochs=1, lr=1e-2), registry=registry, restart=True)
    assert not result.reused


def test_interrupted_training_resumes_to_the_same_weights(registry, tmp_path):
    straight = train_model(tiny_config(), name="straight", registry=registry)

    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_config(), name="interrupted", registry=registry, progress=InterruptingProgress("epoch 2/2", 2))
    assert registry.get("interrupted").status == "training"
    with pytest.raises(RegistryError, match="has not finished training"):
        load_model("interrupted", registry=registry)
    resumed = train_model(tiny_config(), name="interrupted", registry=registry)
    assert resumed.resumed_from_epoch == 1

    weights_straight = registry.read_checkpoint("straight")["model"]
    weights_resumed = registry.read_checkpoint("interrupted")["model"]
    for key, value in weights_straight.items():
        assert torch.equal(value, weights_resumed[key]), key
    assert resumed.test_error == straight.test_error
    # the epoch the first run finished comes back from the checkpoint as it was recorded
    assert [record.epoch for record in resumed.history] == [1, 2]
    assert resumed.history[0].train_loss == pytest.approx(straight.history[0].train_loss)


def test_resnet_baseline_trains_the_same_way(registry):
    result = train_model(tiny_config(arch="resnet", epochs=1), registry=registry)
    assert result.model == "resnet-mnist5k" and result.arch == "resnet"
    assert load_model("resnet-mnist5k", registry=registry).model.arch == "resnet"


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="`epochs` must be positive"):
        tiny_config(epochs=0)
    with pytest.raises(ConfigError, match="multiple of 32"):
        tiny_config(filters=48)
    with pytest.raises(ConfigError, match="unknown dataset"):
        tiny_config(dataset="imagenet")


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing_behind(registry, tmp_path):
    # MNIST files that exist but cannot be read: the data set fails to load, offline
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(b"not an IDX file")
    with pytest.raises(DataUnavailableError):
        train_model(tiny_config(dataset="mnist"), registry=registry)
    assert registry.entries() == [] and not registry.model_dir("odenet-mnist").exists()
    with pytest.raises(DataUnavailableError):  # the data error again, not "exists with other settings"
        train_model(tiny_config(dataset="mnist", epochs=3), registry=registry)

    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_config(), registry=registry, progress=InterruptingProgress("epoch 1/2", 1))
    assert registry.entries() == [] and not registry.model_dir("odenet-mnist5k").exists()
    result = train_model(tiny_config(epochs=1, lr=1e-2), registry=registry)
    assert result.resumed_from_epoch == 0 and registry.get("odenet-mnist5k").status == "ready"


def test_training_on_an_image_folder_records_its_absolute_path(registry, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("ants", "bees", "wasps"):
            (tmp_path / "bugs" / split / label).mkdir(parents=True)
            for index in range(3):
                picture = rng.integers(0, 256, (14, 16, 3), dtype=np.uint8)
                Image.fromarray(picture).save(tmp_path / "bugs" / split / label / f"{index}.jpg")
    monkeypatch.chdir(tmp_path)
    config = tiny_config(dataset="folder:bugs", epochs=1, train_limit=None, test_limit=None)
    result = train_model(config, registry=registry)
    assert result.model == "odenet-bugs" and 0.0 <= result.test_error <= 1.0
    monkeypatch.chdir("/")
    loaded = load_model("odenet-bugs", registry=registry)
    assert loaded.dataset == f"folder:{(tmp_path / 'bugs').resolve()}" and loaded.input_shape == (3, 14, 16)
    assert loaded.num_classes == 3 and len(loaded.split("test")) == 9
