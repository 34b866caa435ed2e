"""Batched transforms: shapes, ranges, exactness against per-sample references, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlkit.data.image import channel_stats
from dlkit.data.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ToFloat,
    build_transforms,
)


def _images(B: int = 16, C: int = 1, H: int = 28, W: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, C, H, W), generator=g, dtype=torch.uint8)


def test_to_float_maps_uint8_to_unit_range():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    y = ToFloat()(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 128 / 255, 1.0]))


def test_normalize_matches_the_formula_per_channel():
    x = torch.rand(4, 3, 5, 5)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(mean, std)(x), expected)
    # One value applies to every channel.
    torch.testing.assert_close(Normalize(0.5, 0.5)(x), (x - 0.5) / 0.5)


def test_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="channel"):
        Normalize([0.1, 0.2], [1.0, 1.0])(torch.rand(2, 3, 4, 4))
    with pytest.raises(TypeError, match="ToFloat"):
        Normalize(0.5, 0.5)(_images())
    with pytest.raises(ValueError, match="positive"):
        Normalize(0.5, 0.0)


def test_resize_shapes_identity_and_integer_batches():
    x = torch.rand(3, 2, 28, 28)
    assert Resize(32)(x).shape == (3, 2, 32, 32)
    assert Resize((20, 24))(x).shape == (3, 2, 20, 24)
    assert Resize(28)(x) is x
    expected = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(Resize(32)(x), expected)
    u = _images(C=1)
    out = Resize(32)(u)
    assert out.dtype == torch.uint8 and out.shape == (16, 1, 32, 32)
    # A constant image stays constant through bilinear resizing and rounding.
    flat = torch.full((1, 1, 28, 28), 77, dtype=torch.uint8)
    assert Resize(14)(flat).unique().tolist() == [77]


def test_random_crop_without_padding_at_full_size_is_identity():
    x = _images(C=3)
    assert torch.equal(RandomCrop(28, padding=0)(x), x)
    assert torch.equal(RandomCrop(None, padding=0)(x.float()), x.float())


def test_random_crop_equals_per_sample_slices_of_the_padded_image():
    x = _images(B=32, C=2, H=12, W=10)
    crop = RandomCrop((8, 6), padding=3, fill=0, generator=torch.Generator().manual_seed(5))
    out = crop(x)
    assert out.shape == (32, 2, 8, 6) and out.dtype == torch.uint8
    # Replay the generator: RandomCrop draws all tops, then all lefts.
    g = torch.Generator().manual_seed(5)
    tops = torch.randint(0, 12 + 6 - 8 + 1, (32,), generator=g)
    lefts = torch.randint(0, 10 + 6 - 6 + 1, (32,), generator=g)
    padded = F.pad(x, (3, 3, 3, 3))
    for b in range(32):
        top, left = int(tops[b]), int(lefts[b])
        assert torch.equal(out[b], padded[b, :, top : top + 8, left : left + 6])


def test_random_crop_offsets_differ_across_samples():
    # Identical images with distinct pixel values: the top-left pixel reveals each offset.
    img = torch.arange(1, 28 * 28 + 1, dtype=torch.float32).view(1, 1, 28, 28)
    out = RandomCrop(padding=4, generator=torch.Generator().manual_seed(0))(img.expand(64, 1, 28, 28))
    assert out.shape == (64, 1, 28, 28)
    corners = {tuple(o[0, :2, :2].flatten().tolist()) for o in out}
    assert len(corners) > 20
    # Padding is zeros; every other value comes from the image.
    assert set(out.unique().tolist()) <= set(img.unique().tolist()) | {0.0}


def test_random_crop_rejects_a_crop_larger_than_the_padded_image():
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(40, padding=2)(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        RandomCrop(padding=2)(torch.rand(1, 28, 28))


def test_flip_with_p1_is_torch_flip_and_p0_is_identity():
    x = torch.rand(8, 3, 6, 7)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), torch.flip(x, dims=[3]))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)


def test_flip_is_per_sample():
    x = torch.rand(400, 1, 4, 4)
    out = RandomHorizontalFlip(p=0.5, generator=torch.Generator().manual_seed(1))(x)
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert bool((flipped ^ kept).all())  # each sample is either flipped or untouched
    assert 150 < int(flipped.sum()) < 250


def _train_pipeline(seed: int) -> Compose:
    return build_transforms(
        train=True, augment=True, random_crop_padding=4, hflip=True, resize=32,
        mean=0.3, std=0.35, generator=torch.Generator().manual_seed(seed),
    )


def test_pipelines_are_deterministic_given_a_seeded_generator():
    x = _images(B=64)
    a, b, c = _train_pipeline(0), _train_pipeline(0), _train_pipeline(1)
    for _ in range(2):  # successive batches too
        out_a, out_b, out_c = a(x), b(x), c(x)
        assert torch.equal(out_a, out_b)
        assert not torch.equal(out_a, out_c)


def test_build_transforms_train_and_eval():
    train = _train_pipeline(0)
    assert [type(t).__name__ for t in train.transforms] == [
        "RandomCrop", "RandomHorizontalFlip", "ToFloat", "Resize", "Normalize"
    ]
    evaluation = build_transforms(train=False, augment=True, random_crop_padding=4, hflip=True, resize=32)
    assert [type(t).__name__ for t in evaluation.transforms] == ["ToFloat", "Resize", "Normalize"]
    x = _images(B=8)
    out = build_transforms(train=True, augment=True, random_crop_padding=2, normalize=False)(x)
    assert out.shape == (8, 1, 28, 28) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert "RandomCrop" in repr(train)


def test_compose_applies_in_order_and_accepts_functions():
    t = Compose([ToFloat(scale=1.0), lambda x: x + 1, Normalize(1.0, 2.0)])
    out = t(torch.full((1, 1, 2, 2), 3, dtype=torch.uint8))
    assert out.unique().tolist() == [1.5]
    assert len(t) == 3


def test_channel_stats_match_torch():
    x = _images(B=10, C=3, H=5, W=5)
    mean, std = channel_stats(x, chunk=3)
    f = x.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), f.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), f.std(dim=(0, 2, 3), unbiased=False))
