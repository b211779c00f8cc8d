import torch

from labelclean.data.augment import normalize, random_crop_flip


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(1, 1 + 2 * 3 * 6 * 6, dtype=torch.int32).view(2, 3, 6, 6)
    g = torch.Generator().manual_seed(1)
    y = random_crop_flip(x, padding=2, flip=False, generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(y[b], w) for w in windows)


def test_flip_happens_about_half_the_time_and_is_a_mirror():
    x = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).repeat(400, 3, 4, 1)
    y = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = (y[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.4 < flipped < 0.6
    assert all(torch.equal(row, x[0]) or torch.equal(row, x[0].flip(-1)) for row in y)


def test_same_seed_same_augmentation():
    x = torch.randint(0, 255, (8, 3, 10, 10), dtype=torch.uint8)
    a = random_crop_flip(x, padding=3, flip=True, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(x, padding=3, flip=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_normalize_scales_and_standardises():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
