"""The Python API gives the CLI's protections (issue 38: 3, 18, 19, 20, 24-27).

Arguments are checked at the edge, results never write over their inputs, the CLI's
defaults never shadow a preset, outputs get the user's usual modes, and --resume refuses
a run whose images or results-changing settings changed. Tiny data: 30 digits, 1-2 epochs.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import labelclean
from labelclean.cli import app
from labelclean.errors import CheckpointError, ConfigError, OutputError

runner = CliRunner()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from labelclean.data.digits import write_digits

    return write_digits(tmp_path_factory.mktemp("edges") / "d", layout="csv", n_per_class=3)


@pytest.fixture(scope="module")
def audited(digits, tmp_path_factory):
    """A 1-epoch audit of the 30 digits, its report and network written beside them."""
    images, labels = digits
    result = labelclean.audit(images, labels, epochs=1, model="small_cnn", hflip=False)
    out = tmp_path_factory.mktemp("audited") / "a.parquet"
    result.write(out)
    return result, out


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding any image fails the test: the argument had to be refused before."""
    import functools

    import labelclean.data.images as images

    for name in ("load_images", "load_dataset"):

        @functools.wraps(getattr(images, name))  # the signature stays: the API checks against it
        def boom(*args, **kwargs):
            raise AssertionError("images were decoded before the arguments were checked")

        monkeypatch.setattr(images, name, boom)


def _model(folder):
    """A small_cnn exported for 8-pixel digits, without training it."""
    from labelclean.export import export_model
    from labelclean.models import create_model

    config = {"architecture": "small_cnn", "num_classes": 10, "class_names": [str(i) for i in range(10)],
              "image_size": 8, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    return export_model(create_model("small_cnn", 10), folder, config=config, check_inputs=torch.randn(2, 3, 8, 8))


def _bytes(*paths):
    return [Path(p).read_bytes() for p in paths]


# 3. result.write never writes over an input -----------------------------------------------------


def test_an_audit_result_never_writes_over_the_manifest_an_image_or_the_weights(digits, audited, tmp_path):
    images, labels = digits
    result, written = audited
    image = images / "digit_0000.png"
    before = _bytes(labels, image)
    with pytest.raises(OutputError, match="LABELS"):
        result.write(labels, overwrite=True)
    with pytest.raises(OutputError, match="an image in IMAGES"):
        result.write(image, overwrite=True)
    assert _bytes(labels, image) == before
    # an audit that started from the first one's network: writing its report beside that
    # network would replace the weights it started from
    weights = written.with_name("a.network.safetensors")
    again = labelclean.audit(images, labels, epochs=1, model="small_cnn", hflip=False, weights=str(weights))
    kept = weights.read_bytes()
    with pytest.raises(OutputError, match="--weights"):
        again.write(written, overwrite=True)
    assert weights.read_bytes() == kept
    assert again.write(tmp_path / "b.parquet").is_file()  # anywhere else: written


def test_predictions_never_write_over_the_model_or_the_manifest(digits, tmp_path):
    images, labels = digits
    model = _model(tmp_path / "m")
    found = labelclean.predict(model, images, labels)
    before = _bytes(labels, model / "model.safetensors")
    with pytest.raises(OutputError, match="the model's model.safetensors"):
        found.write(model / "model.safetensors", overwrite=True)
    with pytest.raises(OutputError, match="LABELS"):
        found.write(labels, overwrite=True)
    assert _bytes(labels, model / "model.safetensors") == before
    assert found.write(tmp_path / "p.csv").is_file()


# 18. every argument of the verbs is checked at the edge -----------------------------------------


@pytest.mark.parametrize(
    "options,message",
    [({"epochs": "3"}, "--epochs '3': expected an integer, found str"),
     ({"epochs": 2.5}, "--epochs 2.5: expected an integer, found float"),
     ({"epochs": True}, "--epochs True: expected an integer, found bool"),
     ({"seed": "abc"}, "--seed 'abc': expected an integer, found str"),
     ({"lr": "fast"}, "--lr 'fast': expected a number"),
     ({"hflip": "no"}, "--hflip 'no': expected True or False"),
     ({"epoch": 3}, "unknown option 'epoch'"),
     ({"config": {"epochs": 3}}, "config={'epochs': 3}: expected an AuditConfig or None, found dict"),
     ({"resume": "yes"}, "resume='yes': expected True or False, found str"),
     ({"data_options": {"image_size": "32"}}, "--image-size '32': expected an integer or None"),
     ({"data_options": {"imagesize": 32}}, "data_options: unknown option 'imagesize'"),
     ({"frozen": True, "pretrained": True, "head": "big"}, "--head 'big'"),
     ({"frozen_folds": 3}, "--frozen-folds needs --frozen")],
)
def test_audit_refuses_bad_arguments_before_any_image_is_decoded(digits, no_decoding, options, message):
    images, labels = digits
    with pytest.raises(ConfigError) as refused:
        labelclean.audit(images, labels, **options)
    assert message in str(refused.value)


def test_finetune_and_predict_refuse_bad_arguments_before_reading(digits, no_decoding, tmp_path):
    images, labels = digits
    cases = [
        (lambda: labelclean.finetune(tmp_path / "r.parquet", tmp_path / "m", epochs="3"), "--epochs '3'"),
        (lambda: labelclean.finetune(tmp_path / "r.parquet", tmp_path / "m", mu=2.5), "--mu 2.5"),
        (lambda: labelclean.finetune(tmp_path / "r.parquet", tmp_path / "m", epoch=3), "unknown option 'epoch'"),
        (lambda: labelclean.finetune(tmp_path / "r.parquet", tmp_path / "m", overwrite="yes"), "overwrite='yes'"),
        (lambda: labelclean.finetune(tmp_path / "r.parquet", 7), "out=7: expected a path, found int"),
        (lambda: labelclean.predict(tmp_path / "m", images, labels, progress=3), "progress=3: expected a function"),
        (lambda: labelclean.predict(tmp_path / "m", images, path_column=1), "path_column=1: expected a string"),
        (lambda: labelclean.read_report(3), "path=3: expected a path, found int"),
        (lambda: labelclean.load_model(None), "path=None: expected a path, found NoneType"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError) as refused:
            call()
        assert message in str(refused.value)


def test_configs_check_their_fields_types_from_the_annotations():
    from labelclean.config import AuditConfig, FinetuneConfig

    with pytest.raises(ConfigError, match=r"^--lr-milestones \(1, 'x'\): expected a list of integers"):
        AuditConfig(lr_milestones=(1, "x"))
    with pytest.raises(ConfigError, match="^--tau '0.9': expected a number, found str$"):
        FinetuneConfig(tau="0.9")
    assert AuditConfig(epochs=np.int64(3), lr=1, lr_milestones=[1, 2]).lr_milestones == (1, 2)  # numbers are numbers
    restored = AuditConfig.from_dict(AuditConfig(epochs=5).to_dict())  # what a checkpoint holds
    assert restored.epochs == 5
    assert FinetuneConfig(weights=Path("w.safetensors")).weights == "w.safetensors"  # a path is a path


# 19. a CLI default never shadows a preset value --------------------------------------------------


def test_every_audit_option_that_is_a_setting_defaults_to_not_given():
    import dataclasses

    import typer.main

    from labelclean.config import AuditConfig

    fields = {f.name for f in dataclasses.fields(AuditConfig)}
    command = next(c for c in typer.main.get_command(app).commands.values() if c.name == "audit")
    passed_or_none = {"pretrained", "deterministic"}  # flags the CLI passes as `flag or None`
    shadowing = [p.name for p in command.params
                 if p.name in fields and p.default is not None and p.name not in passed_or_none]
    assert shadowing == []


def test_preset_paper_from_the_cli_is_the_preset(digits, monkeypatch, tmp_path):
    import labelclean.cli.audit as cli_audit
    from labelclean.config import PAPER_PRESET

    images, labels = digits
    built = []
    monkeypatch.setattr(cli_audit, "_run_audit", lambda images, labels, config, *a, **k: built.append(config))
    base = ["audit", str(images), str(labels), "--out", str(tmp_path / "r.parquet"), "--preset", "paper"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--t-update", "latest", "--seed", "3"]).exit_code == 0
    paper, given = built
    assert {k: getattr(paper, k) for k in PAPER_PRESET} == PAPER_PRESET
    assert (given.t_update, given.seed, given.epochs) == ("latest", 3, 350)  # only what was given


# 20. the default budget follows the data ---------------------------------------------------------


def test_a_small_set_gets_enough_optimizer_steps_to_learn(tmp_path):
    """120 images of 3 classes that brightness separates: at 128 a batch, 3 epochs were 3
    steps and the network put every image in one class (2/3 of the labels flagged)."""
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(120):
        level = (40, 128, 215)[i % 3]
        pixels = np.clip(rng.normal(level, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,c{i % 3}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = labelclean.audit(tmp_path, tmp_path / "labels.csv", epochs=3)
    frame = result.to_pandas()
    assert result.metadata["config"]["batch_size"] == 8 and not result.metadata["warnings"]
    assert (frame["pseudo_label"] == frame["given_label"]).mean() > 0.95
    assert (frame["action"] == "keep").mean() > 0.95


def test_the_default_batch_shrinks_only_for_small_sets_and_a_given_one_is_kept():
    from labelclean.config import AuditConfig, default_batch_size

    assert default_batch_size(120, 3) == 8 and default_batch_size(120, 40) == 40
    assert default_batch_size(50_000, 3) == 128 and default_batch_size(1797, 30) == 128
    assert AuditConfig(epochs=3).resolve("air_cnn", n_samples=120).batch_size == 8
    assert AuditConfig(epochs=3, batch_size=64).resolve("air_cnn", n_samples=120).batch_size == 64
    assert AuditConfig.from_preset("paper", epochs=3).resolve("air_cnn", n_samples=120).batch_size == 128


# 24. finetune suggests --resume only when there is a checkpoint ----------------------------------


@pytest.fixture(scope="module")
def report(audited):
    return audited[1]


def _stop_once_training(monkeypatch):
    """Stop requested as soon as the training starts: before its first checkpoint."""
    import labelclean.fgcm.finetune as ft

    started, real = [], ft.run_finetune

    def run_finetune(*args, **kwargs):
        started.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(ft, "run_finetune", run_finetune)
    return lambda: bool(started)


def test_finetune_stopped_before_a_checkpoint_offers_no_resume(report, monkeypatch, tmp_path):
    from labelclean.api import FinetuneInterrupted
    from labelclean.cli._signals import StopRequest

    stop = _stop_once_training(monkeypatch)
    with pytest.raises(FinetuneInterrupted) as stopped:
        labelclean.finetune(report, tmp_path / "m", epochs=2, mu=1, should_stop=stop)
    assert stopped.value.work_dir is None
    monkeypatch.setattr(StopRequest, "__call__", lambda self: stop())
    cli = runner.invoke(app, ["finetune", str(report), "--out", str(tmp_path / "m2"), "--epochs", "2",
                              "--mu", "1", "--quiet"])
    assert cli.exit_code == 130, cli.output
    assert "--resume" not in cli.output and "nothing to resume" in cli.output
    assert not (tmp_path / "m2").exists()


# 25. outputs that differ anywhere in their names get their own work folders -----------------------


def test_the_default_work_folder_is_named_after_the_whole_output_name(tmp_path):
    from labelclean.checkpoint import default_work_dir

    one, two = default_work_dir(tmp_path / "r.v1.parquet"), default_work_dir(tmp_path / "r.v2.parquet")
    assert one != two and one == tmp_path / "r.v1.parquet.work"
    assert default_work_dir(tmp_path / "model") == tmp_path / "model.work"


# 26. outputs get the user's usual modes ---------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_an_exported_model_and_a_report_get_the_usual_modes(umask_022, audited, tmp_path):
    from labelclean._io import atomic_write_text

    model = _model(tmp_path / "m")
    assert oct(model.stat().st_mode & 0o777) == oct(0o755)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in model.iterdir()} == {
        p.name: oct(0o644) for p in model.iterdir()}
    result, _ = audited
    written = result.write(tmp_path / "r.parquet")
    for path in (written, written.with_name("r.network.safetensors"),
                 atomic_write_text(tmp_path / "x.csv", "a\n")):
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


# 27. --resume refuses changed images and a changed --deterministic --------------------------------


def test_resume_refuses_changed_images_and_a_changed_deterministic(tmp_path):
    from labelclean.data.digits import write_digits
    from labelclean.fgcm.audit import AuditInterrupted

    images, labels = write_digits(tmp_path / "d", layout="csv", n_per_class=3)
    work, done = tmp_path / "w", []
    options = {"epochs": 2, "model": "small_cnn", "hflip": False, "work_dir": work}
    with pytest.raises(AuditInterrupted):
        labelclean.audit(images, labels, **options, on_epoch=lambda s, line: done.append(line),
                         should_stop=lambda: bool(done))
    with pytest.raises(CheckpointError, match="deterministic: False -> True"):
        labelclean.audit(images, labels, **options, resume=True, deterministic=True)
    image = images / "digit_0000.png"
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(image)  # the same name, other pixels
    with pytest.raises(CheckpointError, match="the images changed"):
        labelclean.audit(images, labels, **options, resume=True)
    assert labelclean.audit(images, labels, **options, resume=True, force=True).metadata["epochs"] == 2
