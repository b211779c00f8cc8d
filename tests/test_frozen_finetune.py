"""finetune from a --frozen report (issue 19, issue 14 item 10): head, one exported model, predict.

The backbone is the built-in small CNN, seeded and untrained: tiny, local, no downloads.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.config import AuditConfig, FinetuneConfig
from labelclean.data.augment import normalize
from labelclean.data.images import load_dataset
from labelclean.errors import ConfigError
from labelclean.export import export_model, load_model
from labelclean.fgcm.finetune import split_report
from labelclean.fgcm.frozen import embed_images, frozen_config
from labelclean.fgcm.frozen_finetune import (
    FrozenClassifier,
    finetune_frozen,
    run_frozen_finetune,
)
from labelclean.report.parquet import read_report

runner = CliRunner()


@pytest.fixture
def frozen_report(small_digits_csv, tmp_path, backbone_weights):
    """A --frozen audit of 300 digits (small CNN backbone, flipped views), written by the CLI."""
    images, labels = small_digits_csv
    out = tmp_path / "r.parquet"
    r = runner.invoke(app, ["audit", str(images), str(labels), "--frozen", "--frozen-flip",
                            "--model", "small_cnn", "--weights", str(backbone_weights("small_cnn")),
                            "--epochs", "4", "--warmup", "1",
                            "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return images, labels, out


def test_frozen_report_stores_the_trainable_architecture(frozen_report):
    md = read_report(frozen_report[2]).metadata
    assert md["model"] == "small_cnn (frozen) + mlp head"  # the display name
    assert md["architecture"] == "small_cnn"
    assert md["config"]["extra"]["folds"] >= 1


def test_export_round_trip_gives_the_same_outputs(frozen_report, tmp_path):
    images, labels, report = frozen_report
    rep = read_report(report)
    ds = load_dataset(images, labels)
    rows, codes, unlabeled = split_report(rep.frame, rep.class_names)
    audit_config = AuditConfig.from_dict(rep.metadata["config"])
    result, model, section = finetune_frozen(ds, rows, codes, unlabeled, FinetuneConfig(epochs=2),
                                             audit_config=audit_config)
    assert isinstance(model, FrozenClassifier) and section["flip"] is True
    x = normalize(torch.from_numpy(np.array(ds.cache.images[:16])), [0.5] * 3, [0.5] * 3)
    config = {"architecture": "small_cnn", "frozen": section, "num_classes": 10,
              "class_names": rep.class_names, "image_size": ds.cache.image_size,
              "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    export_model(model, tmp_path / "m", config=config, check_inputs=x)
    loaded, cfg = load_model(tmp_path / "m")
    assert cfg["frozen"] == section
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-5)
    # the head of the exported model sees the features the head was trained on
    features, _ = embed_images(ds, audit_config, flip=True)
    with torch.no_grad():
        want = result.model(torch.from_numpy(((features[:16].astype(np.float32).mean(1))
                                              - model.feature_mean.numpy()) / model.feature_std.numpy()))
        # The cache keeps float16 features; standardised by a small spread, their rounding moves
        # the logits by up to ~2% of their scale (a wrong normalisation or view moves them ~100%)
        assert (loaded(x) - want).abs().max() <= 0.05 * want.abs().max()


def test_cli_frozen_audit_finetune_predict(frozen_report, tmp_path):
    images, labels, report = frozen_report
    cache = Path(os.environ["LABELCLEAN_CACHE_DIR"])
    embedded = sorted(cache.glob("embed-*.npy"))
    r = runner.invoke(app, ["finetune", str(report), "--out", str(tmp_path / "m"), "--epochs", "3",
                            "--test", str(images), "--test-labels", str(labels), "--quiet"])
    assert r.exit_code == 0, r.output
    assert sorted(cache.glob("embed-*.npy")) == embedded  # the audit's embeddings, reused
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architecture"] == "small_cnn" and cfg["frozen"]["head"] == "mlp"  # the report's
    assert cfg["finetune"]["mixup"] == 1.0  # what the head trained with: a head's default
    trained = json.loads((tmp_path / "m" / "metrics.json").read_text())["test_accuracy"]
    p = runner.invoke(app, ["predict", str(tmp_path / "m"), str(images), str(labels),
                            "--out", str(tmp_path / "p.csv"), "--quiet"])
    assert p.exit_code == 0, p.output
    predicted = pd.read_csv(tmp_path / "p.csv")["correct"].mean()
    assert abs(predicted - trained) < 0.02  # predict runs the one exported model on the images


def test_cli_frozen_report_trains_a_network_on_the_images_when_asked(frozen_report, tmp_path):
    """Issue 14 item 10: the architecture, not the display name, reaches the factory."""
    images, labels, report = frozen_report
    r = runner.invoke(app, ["finetune", str(report), "--out", str(tmp_path / "m"), "--epochs", "1",
                            "--lambda-m", "0", "--model", "small_cnn", "--quiet"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architecture"] == "small_cnn" and "frozen" not in cfg
    assert cfg["finetune"]["mixup"] == 0.0  # a network's default


def test_cli_frozen_finetune_bad_input(frozen_report, tmp_path):
    images, labels, report = frozen_report
    r = runner.invoke(app, ["finetune", str(report), "--out", str(tmp_path / "m"), "--resume"])
    assert r.exit_code == 1 and "--resume" in r.output and "Traceback" not in r.output
    import pyarrow.parquet as pq

    from labelclean.report.parquet import write_report

    rep = read_report(report)
    md = dict(rep.metadata)
    md["config"] = {**md["config"], "weights": str(tmp_path / "gone.safetensors")}
    moved = tmp_path / "moved.parquet"
    write_report(moved, pq.read_table(report), md, overwrite=False)
    r = runner.invoke(app, ["finetune", str(moved), "--out", str(tmp_path / "m2")])
    assert r.exit_code == 1 and "gone.safetensors" in r.output and "are gone" in r.output


def test_head_training_uses_the_unlabeled_rows_and_scores_the_test_set():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 4
    y = np.repeat(np.arange(3), 40)
    features = (centers[y][:, None, :] + rng.normal(size=(120, 2, 16))).astype(np.float16)
    labeled, unlabeled = np.arange(0, 120, 4), np.setdiff1d(np.arange(120), np.arange(0, 120, 4))
    result, feats = run_frozen_finetune(features, labeled, y[labeled], unlabeled,
                                        FinetuneConfig(epochs=3, batch_size=8, mu=2, tau=0.5),
                                        n_classes=3, head="linear", test=(features, y))
    assert result.test_accuracy > 0.9
    assert result.history[-1]["mask_rate"] > 0  # confident pseudo labels counted
    assert result.n_unlabeled == len(unlabeled)


def test_a_head_draws_few_unlabeled_rows_no_more_often_than_labeled_ones(monkeypatch):
    import labelclean.fgcm.frozen_finetune as frozen_finetune

    sizes, draw = [], frozen_finetune.draw_mixed_batch

    def spy(*args, **kwargs):
        rows, targets = draw(*args, **kwargs)
        sizes.append(len(rows))
        return rows, targets

    monkeypatch.setattr(frozen_finetune, "draw_mixed_batch", spy)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    features = (rng.normal(size=(3, 16))[y][:, None, :] + rng.normal(size=(90, 2, 16))).astype(np.float16)
    run_frozen_finetune(features, np.arange(80), y[:80], np.arange(80, 90),
                        FinetuneConfig(epochs=1, batch_size=8, mu=7), n_classes=3, head="linear")
    assert sizes and set(sizes) == {8 + 1}  # 8 * 10 / 80 unlabeled per step, not 7 * 8


def test_the_labeled_loss_trains_on_mixup_blends_unless_turned_off():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    features = (rng.normal(size=(3, 16))[y][:, None, :] + rng.normal(size=(60, 2, 16))).astype(np.float16)

    def loss_x(mixup):
        result, _ = run_frozen_finetune(features, np.arange(60), y, np.array([], np.int64),
                                        FinetuneConfig(epochs=1, batch_size=8, lambda_m=0, mixup=mixup),
                                        n_classes=3, head="linear")
        return result.history[-1]["loss_x"]

    assert loss_x(1.0) == loss_x(1.0) != loss_x(0.0)  # seeded, and the blend reaches the loss
    assert loss_x(None) == loss_x(1.0)  # a head's default: mixup (measured: +.4 points at asym-40)


def test_a_bad_frozen_section_is_a_config_error(tmp_path):
    from labelclean.fgcm.frozen_finetune import build_frozen_classifier

    with pytest.raises(ConfigError, match="frozen"):
        build_frozen_classifier({"frozen": {"backbone": "small_cnn"}, "num_classes": 2})
    spec = {"backbone": "no_such_net", "head": "linear", "embedding_dim": 8, "input_size": 32,
            "flip": False}
    with pytest.raises(ConfigError, match="no_such_net"):
        build_frozen_classifier({"frozen": spec, "num_classes": 2})


def test_reports_without_the_architecture_field_name_the_backbone_not_the_display_name():
    from labelclean.fgcm.finetune import report_architecture

    old = {"mode": "frozen", "model": "tf_efficientnet_lite0 (frozen) + linear head",
           "config": {"model": "tf_efficientnet_lite0"}}
    assert report_architecture(old) == "tf_efficientnet_lite0"
    assert report_architecture({**old, "config": {"model": None}}) == "resnet18"
    assert report_architecture({"model": "small_cnn"}) == "small_cnn"
    assert report_architecture({**old, "architecture": "x"}) == "x"


def test_frozen_options_bad_input(small_digits_csv, tmp_path, backbone_weights):
    images, labels = small_digits_csv
    weights = ["--weights", str(backbone_weights("small_cnn"))]
    for flag, value in (("--frozen-folds", "0"), ("--neighbours", "-1")):
        r = runner.invoke(app, ["audit", str(images), str(labels), "--frozen", "--model", "small_cnn",
                                flag, value, "--out", str(tmp_path / "x.parquet"), "--quiet"])
        assert r.exit_code == 1 and flag in r.output and "Traceback" not in r.output
    for flag in ("--frozen-folds", "--neighbours"):  # frozen-only options without --frozen
        r = runner.invoke(app, ["audit", str(images), str(labels), flag, "3",
                                "--out", str(tmp_path / "x.parquet"), "--quiet"])
        assert r.exit_code == 1 and f"{flag} needs --frozen" in r.output
    r = runner.invoke(app, ["audit", str(images), str(labels), "--frozen", "--model", "small_cnn", *weights,
                            "--frozen-folds", "301", "--out", str(tmp_path / "x.parquet"), "--quiet"])
    assert r.exit_code == 1 and "--frozen-folds 301" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(TypeError, match="unknown frozen options"):
        frozen_config(AuditConfig(), colour="red")
