import numpy as np
import pytest
import torch

from labelclean.config import AuditConfig
from labelclean.errors import ConfigError
from labelclean.models import create_model
from labelclean.training import (
    ImageBatches,
    Precision,
    lr_factor,
    predict_probs,
    resolve_device,
    train_epoch,
)


def test_step_schedule_is_the_papers():
    f = [
        lr_factor(e, epochs=350, schedule="step", milestones=(80, 150))
        for e in (0, 79, 80, 149, 150)
    ]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cosine_schedule_decays_monotonically_to_one_percent():
    f = [lr_factor(e, epochs=10, schedule="cosine") for e in range(11)]
    assert f[0] == pytest.approx(1.0) and f[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(f, f[1:]))


def test_unknown_device_names_the_flag():
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu9")
    assert resolve_device("cpu").type == "cpu"


def test_fp32_precision_is_a_noop():
    p = Precision.choose(torch.device("cpu"), amp=False)
    assert p.dtype is None and not p.channels_last
    assert "fp32" in p.describe()


def _batches(n=64, size=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8)
    return ImageBatches(
        images,
        (0.5,) * 3,
        (0.25,) * 3,
        Precision.choose(torch.device("cpu"), amp=False),
        crop_padding=1,
        hflip=True,
    )


def test_batches_load_by_index_in_the_asked_order():
    b = _batches()
    index = np.array([5, 1, 9])
    assert torch.equal(b.load(index), torch.from_numpy(b.images[index]))


def test_train_epoch_learns_and_keeps_probs_by_index():
    torch.manual_seed(0)
    b = _batches()
    labels = (b.images[:, 0].mean((1, 2)) > 127).astype(np.int64)
    model = create_model("small_cnn", 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    index = np.arange(64)
    first = None
    for _ in range(15):
        res = train_epoch(
            model,
            b,
            index,
            labels,
            optimizer=opt,
            scaler=Precision.choose(torch.device("cpu"), amp=False).grad_scaler(),
            batch_size=16,
            generator=torch.Generator().manual_seed(0),
            keep_probs=True,
        )
        first = first if first is not None else res.loss
    assert res.loss < first
    assert sorted(res.index.tolist()) == index.tolist() and res.probs.shape == (64, 2)
    probs = predict_probs(model, b, index, batch_size=10)
    assert probs.shape == (64, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        ({"epochs": 0}, "--epochs"),
        ({"warmup": 40, "epochs": 40}, "--warmup"),
        ({"components": 6}, "--components"),
        ({"record": "both"}, "--record"),
        ({"t_update": "x"}, "--t-update"),
        ({"lr": 0}, "--lr"),
    ],
)
def test_config_errors_name_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        AuditConfig(**kwargs)


def test_warmup_default_depends_on_the_model():
    assert AuditConfig(epochs=40).resolve("small_cnn").warmup == 30  # can't memorise: fit long
    assert AuditConfig(epochs=40).resolve("preact_resnet18").warmup == 10  # the paper's share
    assert AuditConfig(epochs=2).resolve("small_cnn").warmup == 1  # always one clustering epoch
    assert AuditConfig(epochs=40, warmup=5).resolve("small_cnn").warmup == 5  # the user's choice


def test_guard_default_depends_on_the_model():
    assert AuditConfig().resolve("small_cnn").guard == "confident"  # underfits: count only sure
    assert AuditConfig().resolve("preact_resnet18").guard == "budget"  # fits: its disagreement
    assert AuditConfig(guard="none").resolve("small_cnn").guard == "none"
    assert AuditConfig().resolve("small_cnn").relabel is False  # its guesses are often wrong
    assert AuditConfig().resolve("resnet18").relabel is True
    with pytest.raises(ConfigError, match="--guard"):
        AuditConfig(guard="strict")


def test_paper_preset_and_overrides():
    c = AuditConfig.from_preset("paper", epochs=None, lr=0.1)
    assert (c.epochs, c.warmup, c.lr_schedule, c.lr_milestones, c.lr) == (
        350,
        80,
        "step",
        (80, 150),
        0.1,
    )
    assert AuditConfig.from_dict(c.to_dict()) == c
