"""The audit saves its network beside the report; finetune starts from it (--init)."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import labelclean
from labelclean.cli import app
from labelclean.errors import ConfigError, OutputError
from labelclean.report.parquet import read_report

runner = CliRunner()
TINY = dict(epochs=1, mu=0, lambda_m=0.0, batch_size=32)  # cross-entropy only: a fast step


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A 2-epoch audit of 200 digits written by the Python API, its network beside it."""
    from labelclean.data.digits import write_digits

    tmp = tmp_path_factory.mktemp("net")
    images, labels = write_digits(tmp / "d", layout="csv", n_per_class=20)
    result = labelclean.audit(images, labels, epochs=2, model="small_cnn", hflip=False)
    return images, labels, result, result.write(tmp / "r.parquet")


def copy_report(audited, folder, *, network=True):
    """The report (and its network) in another folder; the images stay where they are."""
    _, _, _, report = audited
    folder.mkdir(exist_ok=True)
    shutil.copy(report, folder / "r.parquet")
    if network:
        shutil.copy(report.parent / "r.network.safetensors", folder / "r.network.safetensors")
    return folder / "r.parquet"


def first_conv(model):
    return next(p for name, p in model.named_parameters() if p.dim() == 4).detach()


def test_the_report_names_the_network_file_it_was_written_with(audited):
    _, _, result, report = audited
    side = report.parent / "r.network.safetensors"
    entry = read_report(report).metadata["network"]
    assert entry == {"file": side.name, "sha256": hashlib.sha256(side.read_bytes()).hexdigest(),
                     "architecture": "small_cnn"}
    saved = load_file(side)
    assert saved.keys() == result.network.keys()
    assert all(torch.equal(saved[k], result.network[k]) for k in saved)
    from labelclean.models import create_model, load_weights

    assert load_weights(create_model("small_cnn", 10), side) == "exact keys"


def test_finetune_starts_from_the_audits_network_unless_told_otherwise(audited, tmp_path):
    _, _, result, _ = audited
    report = copy_report(audited, tmp_path / "a")
    audit_conv = first_conv_of_state(result.network)
    notes = []
    # A learning rate too small to move a weight: the exported conv is where training started.
    start = labelclean.finetune(report, tmp_path / "m", lr=1e-12, log=notes.append, **TINY)
    assert "starting from the audit's network (r.network.safetensors)" in notes
    assert torch.allclose(first_conv(start.model), audit_conv, atol=1e-6)
    config = json.loads((tmp_path / "m" / "config.json").read_text())["finetune"]
    assert config["init"] == "audit" and config["weights"].endswith("r.network.safetensors")
    fresh = labelclean.finetune(report, tmp_path / "s", lr=1e-12, init="scratch", log=notes.append, **TINY)
    assert notes[-2] == "starting from a fresh network (--init scratch)"
    assert not torch.allclose(first_conv(fresh.model), audit_conv, atol=1e-3)
    from labelclean.audit_network import finetune_start

    metadata = read_report(report).metadata  # another --model cannot start from a small_cnn
    assert finetune_start(report, metadata, init=None, architecture="resnet10t") == (
        None, "starting from a fresh resnet10t (the audit trained another network)")


def first_conv_of_state(state):
    return next(v for v in state.values() if v.dim() == 4)


def test_a_missing_or_replaced_network_is_named(audited, tmp_path):
    bare = copy_report(audited, tmp_path / "bare", network=False)
    notes = []
    labelclean.finetune(bare, tmp_path / "m", log=notes.append, **TINY)  # the report alone still trains
    assert any("r.network.safetensors is missing" in n for n in notes)
    with pytest.raises(ConfigError, match="--init audit: the audit's network .* is missing"):
        labelclean.finetune(bare, tmp_path / "m2", init="audit", **TINY)
    swapped = copy_report(audited, tmp_path / "swap")
    side = swapped.parent / "r.network.safetensors"
    state = load_file(side)
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, side,
              metadata={"labelclean": "audit network"})
    with pytest.raises(ConfigError, match="r.network.safetensors: not the network the audit"):
        labelclean.finetune(swapped, tmp_path / "m3", **TINY)
    assert not (tmp_path / "m3").exists()


def test_init_conflicts_and_bad_values_are_refused(audited, tmp_path):
    report = copy_report(audited, tmp_path / "a")
    side = report.parent / "r.network.safetensors"
    with pytest.raises(ConfigError, match="--init 'best'"):
        labelclean.FinetuneConfig(init="best")
    with pytest.raises(ConfigError, match="--init audit starts from the audit's network; --weights"):
        labelclean.finetune(report, tmp_path / "m", init="audit", weights=str(side), **TINY)
    with pytest.raises(ConfigError, match="the audit trained small_cnn, not --model resnet10t"):
        labelclean.finetune(report, tmp_path / "m", init="audit", model="resnet10t", **TINY)
    r = runner.invoke(app, ["finetune", str(report), "--out", str(tmp_path / "m"), "--init", "best"])
    assert r.exit_code == 1 and "--init 'best'" in r.output, r.output
    assert not (tmp_path / "m").exists()


def test_a_report_without_a_network_trains_a_fresh_one_and_refuses_init_audit(audited, tmp_path):
    import pyarrow.parquet as pq

    report = copy_report(audited, tmp_path / "old", network=False)
    table = pq.read_table(report)
    md = json.loads(table.schema.metadata[b"labelclean"])
    del md["network"]  # as written before the audit saved its network
    pq.write_table(table.replace_schema_metadata({b"labelclean": json.dumps(md)}), report)
    notes = []
    labelclean.finetune(report, tmp_path / "m", log=notes.append, **TINY)
    assert "starting from a fresh network (the report has no audit network)" in notes
    with pytest.raises(ConfigError, match="names no network of its audit"):
        labelclean.finetune(report, tmp_path / "m2", init="audit", **TINY)


def test_audit_never_replaces_a_network_file_it_did_not_write(tmp_path, small_digits_csv):
    images, labels = small_digits_csv
    out = tmp_path / "r.parquet"
    mine = tmp_path / "r.network.safetensors"
    mine.write_text("my notes")
    args = ["audit", str(images), str(labels), "--out", str(out), "--epochs", "1", "--quiet"]
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 1 and "r.network.safetensors" in r.output and "did not write" in r.output
    assert mine.read_text() == "my notes" and not out.exists()
    mine.unlink()
    mine.mkdir()
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 1 and "is a folder" in r.output, r.output
    mine.rmdir()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    first = mine.read_bytes()
    r = runner.invoke(app, args)  # an earlier audit's files: only with --overwrite
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(app, [*args, "--overwrite", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert mine.read_bytes() != first
    assert read_report(out).metadata["network"]["sha256"] == hashlib.sha256(mine.read_bytes()).hexdigest()


def test_the_library_write_refuses_before_writing_either_file(audited, tmp_path):
    _, _, result, _ = audited
    (tmp_path / "r.parquet").write_text("mine")
    with pytest.raises(OutputError):
        result.write(tmp_path / "r.parquet")
    assert not (tmp_path / "r.network.safetensors").exists()


def test_an_audit_from_the_last_audits_network_may_not_write_over_it(tmp_path, small_digits_csv):
    """--weights r.network.safetensors --out r.parquet --overwrite: the input is refused, kept."""
    images, labels = small_digits_csv
    out = tmp_path / "r.parquet"
    args = ["audit", str(images), str(labels), "--out", str(out), "--epochs", "1", "--quiet",
            "--model", "small_cnn"]
    assert runner.invoke(app, args).exit_code == 0
    network = tmp_path / "r.network.safetensors"
    before = network.read_bytes()
    r = runner.invoke(app, [*args, "--weights", str(network), "--overwrite"])
    assert r.exit_code == 1 and "same file as --weights" in r.output, r.output
    assert network.read_bytes() == before
    again = tmp_path / "again.parquet"  # another --out: it starts from the network, as asked
    r = runner.invoke(app, [*args[:4], str(again), *args[5:], "--weights", str(network)])
    assert r.exit_code == 0 and (tmp_path / "again.network.safetensors").is_file(), r.output
