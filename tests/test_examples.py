"""Smoke tests of examples/: each script runs as a user would run it, on tiny digits data."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = ["bash"] if script.endswith(".sh") else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*command, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path, Path]:
    """20 digits per class (200 PNGs), labels.csv with 30% flipped (truth.csv beside it)."""
    from labelclean.data.digits import write_digits
    from labelclean.data.manifest import read_manifest
    from labelclean.evaluate import corrupt_labels

    folder = tmp_path_factory.mktemp("examples")
    images, clean = write_digits(folder / "images", layout="csv", n_per_class=20)
    m = read_manifest(images, clean)
    noisy = corrupt_labels(m.given_labels, m.class_names, noise="symmetric", rate=0.3, seed=0)
    labels = folder / "labels.csv"
    pd.DataFrame({"path": m.paths, "label": np.asarray(m.class_names)[noisy]}).to_csv(labels, index=False)
    (folder / "truth.csv").write_bytes(clean.read_bytes())
    return images, labels, folder


@pytest.fixture(scope="module")
def audited(small) -> tuple[Path, str]:
    """examples/audit_api.py run once: (its report, its output)."""
    images, labels, folder = small
    out = ok(run("audit_api.py", str(images), str(labels), "--epochs", "3", "--out", "r.parquet",
                 cwd=folder, env={"LABELCLEAN_CACHE_DIR": str(folder / "cache")}))
    return folder / "r.parquet", out


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")))
def test_every_example_says_what_it_shows_and_how_to_run_it(script):
    text = (EXAMPLES / script).read_text()
    doc = ast.get_docstring(ast.parse(text)) if script.endswith(".py") else text
    assert doc and "Shows" in doc and f"examples/{script}" in doc, script


def test_audit_api(audited):
    report, out = audited
    frame = pd.read_parquet(report)
    assert len(frame) == 200 and "actions:" in out and "next: labelclean report" in out
    assert set(frame["cluster"]) <= {"CS", "CH", "NS", "NHR", "NHI"}


def test_audit_api_bad_input_is_one_error_line(small):
    images, labels, folder = small
    proc = run("audit_api.py", str(images), str(folder / "missing.csv"), cwd=folder)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "missing.csv" in proc.stderr
    assert "Traceback" not in proc.stderr
    again = run("audit_api.py", str(images), str(labels), "--out", str(folder / "r.parquet"), cwd=folder)
    assert again.returncode == 1 and "Traceback" not in again.stderr  # refuses to replace it


def test_read_report(audited):
    report, _ = audited
    out = ok(run("read_report.py", str(report), cwd=report.parent))
    assert "labels corrected" in out and "classes ['0', '1'," in out and "trace of row 0" in out
    assert "images under " + str(report.parent / "images") in out


def test_finetune_predict(audited):
    report, _ = audited
    out = ok(run("finetune_predict.py", str(report), "--epochs", "1", "--out", "model",
                 cwd=report.parent))
    assert (report.parent / "model" / "config.json").is_file()
    assert out.count("predicted ") == 8


def test_frozen_audit_with_a_tiny_backbone_and_its_weights_file(small, backbone_weights):
    images, labels, folder = small
    weights = str(backbone_weights("test_efficientnet"))  # --frozen refuses a random backbone
    out = ok(run("frozen_audit.py", str(images), str(labels), "--model", "test_efficientnet",
                 "--weights", weights, "--epochs", "3", "--out", "frozen.parquet", cwd=folder))
    assert "backbone test_efficientnet (frozen)" in out
    assert len(pd.read_parquet(folder / "frozen.parquet")) == 200


def test_frozen_audit_needs_weights_for_another_backbone(small):
    images, labels, folder = small
    proc = run("frozen_audit.py", str(images), str(labels), "--model", "resnet50", cwd=folder)
    assert proc.returncode == 2 and "--pretrained or --weights" in proc.stderr


def test_crowd_votes(small):
    from labelclean.crowd.simulate import simulate_crowd_votes
    from labelclean.data.manifest import read_manifest

    images, _, folder = small
    truth = read_manifest(images, folder / "truth.csv")
    votes, _ = simulate_crowd_votes(truth.paths, truth.given_labels, truth.class_names,
                                    votes_per_image=3, workers=12, spammers=0.2)
    votes.drop(columns="true_label").to_csv(folder / "votes.csv", index=False)
    out = ok(run("crowd_votes.py", str(images), str(folder / "votes.csv"), "--epochs", "3",
                 "--out", "crowd.parquet", cwd=folder))
    assert "estimated_accuracy" in out
    assert (folder / "crowd.parquet").is_file() and (folder / "crowd.annotators.parquet").is_file()


def test_torchrun_script_help_and_usage(tmp_path):
    assert "torchrun" in ok(run("torchrun_audit.sh", "--help", cwd=tmp_path))
    proc = run("torchrun_audit.sh", cwd=tmp_path)
    assert proc.returncode == 2 and "IMAGES LABELS" in proc.stderr


@pytest.mark.slow
def test_torchrun_script_runs_two_cpu_ranks(small):
    images, labels, folder = small
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    ok(run("torchrun_audit.sh", str(images), str(labels), "ddp.parquet", "--epochs", "2",
           "--warmup", "1", "--device", "cpu", "--quiet", cwd=folder, env={"NPROC": "2", "PATH": path}))
    assert len(pd.read_parquet(folder / "ddp.parquet")) == 200


@pytest.mark.slow
def test_audit_api_on_the_builtin_demo(tmp_path):
    out = ok(run("audit_api.py", "--epochs", "4", cwd=tmp_path))
    assert "1797 images" in out and (tmp_path / "report.parquet").is_file()
