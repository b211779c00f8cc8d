import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelclean.config import AuditConfig
from labelclean.errors import ConfigError
from labelclean.models import create_model
from labelclean.training import (
    ImageBatches,
    Precision,
    lr_factor,
    mixup_batch,
    mixup_pairs,
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
    assert p.for_model("air_cnn").channels_last  # its recipe: 1.5x in fp32 on CPUs
    assert not p.for_model("small_cnn").channels_last
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


def _epoch(model, b, opt, *, keep_probs=False, mixup=0.0):
    labels = (b.images[:, 0].mean((1, 2)) > 127).astype(np.int64)
    return train_epoch(
        model,
        b,
        np.arange(len(labels)),
        labels,
        optimizer=opt,
        scaler=Precision.choose(torch.device("cpu"), amp=False).grad_scaler(),
        batch_size=16,
        generator=torch.Generator().manual_seed(0),
        keep_probs=keep_probs,
        mixup=mixup,
    )


def test_train_epoch_learns_and_keeps_probs_by_index():
    torch.manual_seed(0)
    b = _batches()
    model = create_model("small_cnn", 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    index = np.arange(64)
    first = None
    for _ in range(15):
        res = _epoch(model, b, opt, keep_probs=True)
        first = first if first is not None else res.loss
    assert res.loss < first
    assert sorted(res.index.tolist()) == index.tolist() and res.probs.shape == (64, 2)
    probs = predict_probs(model, b, index, batch_size=10)
    assert probs.shape == (64, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # flip: the mean of the image's softmax and its mirror's (small_cnn is not mirror-invariant)
    mirrored = dataclasses.replace(b, images=np.ascontiguousarray(np.asarray(b.images)[..., ::-1]))
    both = predict_probs(model, b, index, batch_size=10, flip=True)
    want = (probs + predict_probs(model, mirrored, index, batch_size=10)) / 2
    assert np.allclose(both, want, atol=1e-5) and not np.allclose(both, probs, atol=1e-3)


def test_mixup_pairs_are_seeded_and_lean_on_the_first_sample():
    draws = [mixup_pairs(8, 1.0, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert draws[0][0] == draws[1][0] and torch.equal(draws[0][1], draws[1][1])
    lams = [mixup_pairs(8, 1.0, g)[0] for g in [torch.Generator().manual_seed(0)] * 50]
    assert min(lams) >= 0.5 and max(lams) <= 1 and len(set(lams)) > 40
    assert sorted(draws[0][1].tolist()) == list(range(8))


def test_mixup_batch_blends_a_batch_and_weighs_both_labels():
    x, y = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    logits = torch.randn(6, 3)
    same, plain = mixup_batch(x, y, 0.0, torch.Generator().manual_seed(0))
    assert same is x and plain(logits) == pytest.approx(F.cross_entropy(logits, y).item())
    blended, loss_of = mixup_batch(x, y, 1.0, torch.Generator().manual_seed(5))
    lam, partner = mixup_pairs(6, 1.0, torch.Generator().manual_seed(5))  # the same draws
    assert torch.allclose(blended, lam * x + (1 - lam) * x[partner])
    want = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[partner])
    assert lam < 1 and loss_of(logits).item() == pytest.approx(want.item())


def _one_epoch(mixup, keep_probs=False):
    torch.manual_seed(0)
    model = create_model("small_cnn", 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return _epoch(model, _batches(), opt, keep_probs=keep_probs, mixup=mixup), model


def test_mixup_blends_inputs_and_labels():
    plain, m0 = _one_epoch(0.0)
    mixed, m1 = _one_epoch(1.0)
    again, m2 = _one_epoch(1.0)
    assert mixed.loss != pytest.approx(plain.loss)  # the blend changes what is learned
    assert mixed.loss == again.loss and torch.equal(m1.fc.weight, m2.fc.weight)  # seeded
    assert not torch.equal(m0.fc.weight, m1.fc.weight)
    with pytest.raises(ConfigError, match="--mixup"):
        _one_epoch(1.0, keep_probs=True)


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        ({"epochs": 0}, "--epochs"),
        ({"warmup": 40, "epochs": 40}, "--warmup"),
        ({"components": 6}, "--components"),
        ({"record": "both"}, "--record"),
        ({"t_update": "x"}, "--t-update"),
        ({"lr": 0}, "--lr"),
        ({"schedule": "twice"}, "--schedule"),
        ({"schedule": "once", "warmup": 5}, "--warmup"),
        ({"mixup": -1}, "--mixup"),
        ({"mixup": 1.0, "record": "train"}, "--mixup"),
    ],
)
def test_config_errors_name_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        AuditConfig(**kwargs)


def test_default_is_one_clustering_after_a_mixup_run():
    c = AuditConfig(epochs=40).resolve("air_cnn")
    assert (c.schedule, c.mixup, c.guard, c.relabel, c.lr) == ("once", 1.0, "budget", False, 0.1)
    assert c.warmup is None and c.clusters_from == 40  # no clustering before the end
    assert AuditConfig(epochs=40).resolve("small_cnn").lr == 0.02  # no recipe: the old LR
    assert AuditConfig(epochs=40, lr=0.3).resolve("air_cnn").lr == 0.3
    paper = AuditConfig.from_preset("paper").resolve("preact_resnet18")
    assert (paper.schedule, paper.mixup) == ("paper", 0.0)
    assert AuditConfig(warmup=5).resolve("air_cnn").schedule == "paper"  # a warmup asks for it
    frozen = AuditConfig(extra={"mode": "frozen"}).resolve("resnet18 (frozen) + linear head")
    assert (frozen.schedule, frozen.mixup) == ("paper", 1.0)  # the loop; heads blend embeddings
    assert AuditConfig.from_dict(c.to_dict()) == c


def test_warmup_default_depends_on_memorising():
    def paper(**kw):
        return AuditConfig(schedule="paper", **kw)

    assert paper(epochs=40).resolve("small_cnn").warmup == 30  # can't memorise: fit long
    assert paper(epochs=40).resolve("preact_resnet18").warmup == 10  # the paper's share
    assert paper(epochs=40, mixup=1.0).resolve("preact_resnet18").warmup == 30  # mixup: no fit
    assert paper(epochs=2).resolve("small_cnn").warmup == 1  # always one clustering epoch
    assert paper(epochs=40, warmup=5).resolve("small_cnn").warmup == 5  # the user's choice
    assert paper(epochs=40, warmup=5).clusters_from == 5


def test_guard_default_depends_on_the_schedule_and_the_model():
    def paper(**kw):
        return AuditConfig(schedule="paper", **kw)

    assert paper().resolve("small_cnn").guard == "confident"  # underfits: count only sure
    assert paper().resolve("preact_resnet18").guard == "budget"  # fits: its disagreement
    assert paper(guard="none").resolve("small_cnn").guard == "none"
    assert paper().resolve("small_cnn").relabel is False  # its guesses are often wrong
    assert paper().resolve("resnet18").relabel is True
    assert AuditConfig().resolve("small_cnn").guard == "budget"  # once: the report's budget
    assert AuditConfig(guard="none").resolve("air_cnn").guard == "none"
    with pytest.raises(ConfigError, match="--guard"):
        AuditConfig(guard="strict")


def test_paper_preset_scales_its_schedule_to_the_epochs_asked_for():
    c = AuditConfig.from_preset("paper", epochs=40)
    assert (c.warmup, c.lr_milestones) == (9, (9, 17))  # 80 and 150 of 350
    assert AuditConfig.from_preset("paper", epochs=40, warmup=5).warmup == 5
    assert AuditConfig.from_preset("paper", epochs=2).warmup == 1  # one clustering epoch left
    with pytest.raises(ConfigError, match="final_clustering"):
        AuditConfig(schedule="once", final_clustering=False)


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
