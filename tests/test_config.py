"""Settings are checked once, with messages naming the CLI flag (issue 14.5: no nan or inf)."""

import pytest

from labelclean.config import AuditConfig, FinetuneConfig
from labelclean.errors import ConfigError


@pytest.mark.parametrize(
    "field,value,flag",
    [("lr", float("nan"), "--lr"), ("lr", float("inf"), "--lr"), ("lr", 0.0, "--lr"),
     ("momentum", 1.0, "--momentum"), ("momentum", float("nan"), "--momentum"), ("momentum", -0.1, "--momentum"),
     ("weight_decay", -1e-4, "--weight-decay"), ("weight_decay", float("inf"), "--weight-decay")],
)
def test_both_configs_refuse_non_finite_or_unworkable_sgd_settings(field, value, flag):
    for config in (AuditConfig, FinetuneConfig):
        with pytest.raises(ConfigError, match=f"^{flag} .*: expected a finite number >"):
            config(**{field: value})


@pytest.mark.parametrize(
    "field,value", [("tau", float("nan")), ("tau", 1.5), ("lambda_m", float("nan")), ("lambda_m", float("inf")),
                    ("lambda_m", -1.0)],
)
def test_finetune_refuses_non_finite_tau_and_lambda(field, value):
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')}"):
        FinetuneConfig(**{field: value})


def test_large_but_finite_learning_rates_are_left_to_the_divergence_check():
    assert AuditConfig(lr=1e6).lr == 1e6 and FinetuneConfig(lr=5.0).lr == 5.0
    assert FinetuneConfig(tau=0.0, lambda_m=0.0).lambda_m == 0.0


def test_the_message_says_the_range():
    with pytest.raises(ConfigError, match=r"^--momentum 1.0: expected a finite number >= 0 and < 1$"):
        AuditConfig(momentum=1.0)
    with pytest.raises(ConfigError, match=r"^--lr nan: expected a finite number > 0$"):
        FinetuneConfig(lr=float("nan"))


def test_recordings_memorise_unless_held_out_mixed_up_or_the_small_network():
    assert AuditConfig(mixup=0.0).recordings_memorise("resnet18")
    assert not AuditConfig(mixup=1.0).recordings_memorise("resnet18")
    assert not AuditConfig(mixup=0.0).recordings_memorise("small_cnn")
    frozen = AuditConfig(mixup=0.0, extra={"mode": "frozen", "folds": 5})
    assert not frozen.recordings_memorise("tf_efficientnet_lite0")  # one head per fold
    one_head = AuditConfig(mixup=0.0, extra={"mode": "frozen", "folds": 1})
    assert one_head.recordings_memorise("small_cnn")  # it trains on what it records
    assert AuditConfig(mixup=1.0, extra={"mode": "frozen", "folds": 1}).recordings_memorise("x")


def test_frozen_heads_blend_embeddings_by_default_and_keep_the_loop_settings_of_unblended_heads():
    frozen = {"mode": "frozen", "folds": 5}
    blended = AuditConfig(extra=frozen).resolve("tf_efficientnet_lite0")
    plain = AuditConfig(mixup=0.0, extra=frozen).resolve("tf_efficientnet_lite0")
    assert blended.mixup == 1.0 and plain.mixup == 0.0
    for field in ("schedule", "warmup", "guard", "relabel"):  # mixup does not make heads underfit
        assert getattr(blended, field) == getattr(plain, field), field
    assert (blended.schedule, blended.warmup, blended.guard, blended.relabel) == ("paper", 10, "budget", True)
    assert AuditConfig(warmup=10).resolve("resnet18").mixup == 0.0  # the image loop: unchanged
