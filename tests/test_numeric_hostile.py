"""Hostile but realistic numbers and data for the training commands (issue 14, items 5, 12).

Options that cannot work are refused before any work; a run that diverges stops naming the
epoch and keeps the last good checkpoint; a collapsed network is reported, not passed off
as label noise; a class emptied by ``--on-bad-image skip`` never takes a pseudo label.
"""

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from labelclean.cli import app

runner = CliRunner()


def _run_cli(*args, cache):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELCLEAN_CACHE_DIR": str(cache)}
    env.pop("LABELCLEAN_FAULT", None)
    cmd = [sys.executable, "-m", "labelclean", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _one_error_line(output, *needles):
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "extra,flag",
    [(["--lr", "nan"], "--lr nan"), (["--lr", "inf"], "--lr inf"), (["--lr", "-1"], "--lr -1"),
     (["--lr", "0"], "--lr 0")],
)
def test_audit_refuses_non_finite_or_impossible_numbers_before_any_work(small_digits_csv, tmp_path, extra, flag):
    images, labels = small_digits_csv
    out = tmp_path / "r.parquet"
    result = runner.invoke(app, ["audit", str(images), str(labels), "--out", str(out), "--quiet", *extra])
    assert result.exit_code == 1
    _one_error_line(result.output, flag, "finite")
    assert not out.exists() and not (tmp_path / "r.parquet.work").exists()


@pytest.mark.parametrize(
    "extra,flag",
    [(["--lr", "nan"], "--lr nan"), (["--lr", "1e999"], "--lr inf"), (["--tau", "nan"], "--tau nan"),
     (["--lambda-m", "inf"], "--lambda-m inf"), (["--mixup", "nan"], "--mixup nan"),
     (["--mixup", "-1"], "--mixup -1")],
)
def test_finetune_refuses_non_finite_numbers_before_any_work(tmp_path, extra, flag):
    result = runner.invoke(app, ["finetune", str(tmp_path / "report.parquet"), "--out", str(tmp_path / "m"), *extra])
    assert result.exit_code == 1
    _one_error_line(result.output, flag)
    assert not (tmp_path / "m").exists()


def test_a_diverging_audit_names_the_epoch_and_keeps_the_last_checkpoint(small_digits_csv, tmp_path):
    images, labels = small_digits_csv
    out = tmp_path / "r.parquet"
    proc = _run_cli("audit", images, labels, "--out", out, "--epochs", "4", "--warmup", "2", "--lr", "1e6",
                    "--lr-schedule", "constant", "--quiet", cache=tmp_path / "c")
    assert proc.returncode == 1, proc.stderr
    line = _one_error_line(proc.stderr, "diverged", "lower --lr (it is 1e+06")
    assert "KMeans" not in proc.stderr and not out.exists()
    epoch = int(re.search(r"audit epoch (\d+)/4", line).group(1))
    kept = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "r.parquet.work").glob("checkpoint-*.pt"))
    assert kept[-1] == epoch - 1  # the epoch before survives; nothing of the diverged one
    assert (f"from epoch {epoch - 1}" if epoch > 1 else "from the start") in line
    again = _run_cli("audit", images, labels, "--out", out, "--epochs", "4", "--warmup", "2", "--lr", "0.02",
                     "--lr-schedule", "constant", "--quiet", "--resume", "--force", cache=tmp_path / "c")
    assert again.returncode == 0, again.stderr  # the kept checkpoint resumes with a lower --lr


def test_a_collapsed_network_is_reported_not_passed_off_as_noise(small_digits_csv, tmp_path):
    """--lr 2 on clean labels: the network predicts one class and 90% of the labels look wrong."""
    images, labels = small_digits_csv
    out = tmp_path / "r.parquet"
    proc = _run_cli("audit", images, labels, "--out", out, "--epochs", "8", "--warmup", "4", "--lr", "2",
                    "--no-hflip", "--quiet", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    assert "predictions collapsed" in proc.stderr and "lower --lr" in proc.stderr
    from labelclean.report.parquet import read_report

    report = read_report(out)
    assert any("collapsed" in w for w in report.metadata["warnings"])
    assert (report.frame["action"] != "keep").mean() > 0.5  # what the warning is about
    summary = runner.invoke(app, ["report", str(out)])
    assert summary.exit_code == 0 and "predictions collapsed" in summary.output


def test_a_finetune_that_diverges_names_the_epoch_and_exports_nothing(small_digits_csv, tmp_path):
    import labelclean

    images, labels = small_digits_csv
    report = tmp_path / "r.parquet"
    labelclean.audit(images, labels, epochs=2, warmup=1, hflip=False).write(report)
    proc = _run_cli("finetune", report, "--out", tmp_path / "m", "--epochs", "2", "--mu", "1", "--lr", "1e6",
                    "--quiet", cache=tmp_path / "c")
    assert proc.returncode == 1, proc.stderr
    _one_error_line(proc.stderr, "finetune epoch 1/2", "diverged", "lower --lr")
    assert not (tmp_path / "m").exists()


def test_a_class_emptied_by_skipped_images_never_takes_a_pseudo_label(small_digits_csv, tmp_path):
    """Every image of class 9 is broken and skipped: the class stays, empty, and gets no sample."""
    images, labels = small_digits_csv
    frame = pd.read_csv(labels)
    for path in frame.loc[frame["label"].astype(str) == "9", "path"]:
        (images / path).write_bytes(b"not an image")
    out = tmp_path / "r.parquet"
    proc = _run_cli("audit", images, labels, "--out", out, "--epochs", "4", "--warmup", "2", "--relabel",
                    "--on-bad-image", "skip", "--max-bad-fraction", "0.2", "--no-hflip", "--quiet",
                    cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    from labelclean.report.parquet import read_report

    report = read_report(out)
    assert report.class_names == [str(i) for i in range(10)] and len(report.frame) == 270
    assert not (report.frame["clean_label"] == "9").any()
    assert not (report.frame["given_label"] == "9").any()
