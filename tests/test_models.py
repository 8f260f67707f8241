from __future__ import annotations

import pytest
import torch

from nodeguard.errors import ConfigError
from nodeguard.models.networks import ODENet, ResNet, create_model


def make_odenet(**kwargs) -> ODENet:
    torch.manual_seed(0)
    return create_model("odenet", in_channels=1, num_classes=10, filters=8, **kwargs)


def test_odenet_and_resnet_shapes():
    images = torch.rand(3, 1, 28, 28)
    assert make_odenet()(images).shape == (3, 10)
    resnet = create_model("resnet", in_channels=3, num_classes=10, filters=8)
    assert isinstance(resnet, ResNet) and len(resnet.blocks) == 6
    assert resnet(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_tolerance_changes_nfe_and_can_be_pinned_for_one_call():
    model = make_odenet(tol=1e-3).eval()
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        model(images, tol=1e-1)
        loose = model.last_nfe
        model(images, tol=1e-6)
        tight = model.last_nfe
        model(images)
        default = model.last_nfe
    assert tight > default >= loose > 0
    assert model.tol == 1e-3  # the per-call tolerance left the model's setting alone


def test_model_tolerance_is_an_explicit_setting():
    model = make_odenet(tol=1e-2)
    model.tol = 1e-5
    assert model.odeblock.tol == 1e-5


def test_create_model_drops_none_and_rejects_unknown_arch():
    model = create_model("odenet", in_channels=1, num_classes=10, filters=None)
    assert model.odeblock.func.conv1.conv.out_channels == 64
    with pytest.raises(ConfigError, match="odenet, resnet"):
        create_model("transformer", in_channels=1, num_classes=10)


def test_normalisation_lives_in_the_model():
    model = create_model("odenet", in_channels=3, num_classes=10, filters=8, mean=[0.5] * 3, std=[0.25] * 3)
    out = model.normalize(torch.full((1, 3, 2, 2), 0.75))
    assert torch.allclose(out, torch.ones_like(out))


def test_per_sample_solving_refuses_a_method_it_does_not_implement():
    from nodeguard.models.evaluation import classify_alone

    model = make_odenet(method="rk4").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # torchdiffeq runs rk4 as asked
    with pytest.raises(ConfigError, match="dopri5 only"):
        classify_alone(model, torch.rand(2, 1, 28, 28), tol=1e-3)
