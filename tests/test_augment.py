"""Augmentations depend only on the generator they are given."""

from __future__ import annotations

import pytest
import torch

from nodeguard.data.augment import AUGMENTATIONS, augment
from nodeguard.data.datasets import load_dataset
from nodeguard.errors import ConfigError


@pytest.mark.parametrize("kind", ["digits", "natural"])
def test_same_generator_seed_gives_the_same_batch(kind):
    channels = 1 if kind == "digits" else 3
    images = torch.rand(6, channels, 28, 28, generator=torch.Generator().manual_seed(1))
    global_state = torch.random.get_rng_state()
    first = augment(kind, images, torch.Generator().manual_seed(7))
    again = augment(kind, images, torch.Generator().manual_seed(7))
    other = augment(kind, images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # the global RNG is not used
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1


def test_digits_stay_digits_sized_and_move():
    digits = load_dataset("mnist5k").test.float_images(slice(0, 4))
    moved = augment("digits", digits, torch.Generator().manual_seed(0))
    assert moved.shape == digits.shape and not torch.equal(moved, digits)


def test_unknown_augmentation_lists_the_valid_ones():
    assert set(AUGMENTATIONS.names()) == {"digits", "natural"}
    with pytest.raises(ConfigError, match="digits, natural"):
        augment("mixup", torch.zeros(1, 1, 4, 4), torch.Generator())
