"""End-to-end runs too slow for CI, selected by README's `pytest -m slow`.

The README's whole flow on the built-in demo data (1,797 digits, 30% wrong labels): audit,
report, export, finetune, predict, with quality figures that a broken method would miss.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labelclean.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_the_readme_flow_on_the_demo_data(tmp_path):
    folder = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(folder), "--quiet"])
    assert r.exit_code == 0, r.output
    figures = {
        line.split()[0]: line for line in r.output.splitlines() if line.startswith(("wrong", "labeled"))
    }
    precision = float(figures["wrong"].split("precision ")[1].split(",")[0])
    recall = float(figures["wrong"].split("recall ")[1].split()[0])
    assert precision > 0.8 and recall > 0.8, r.output  # measured .96 / .94 on 2 CPU cores
    report = folder / "report.parquet"
    steps = [
        ["report", report, "--html", folder / "report.html", "--quiet"],
        ["export", report, "--out", tmp_path / "clean.csv"],
        ["finetune", report, "--out", tmp_path / "model", "--epochs", 3, "--mu", 2, "--quiet"],
        ["predict", tmp_path / "model", folder / "images", folder / "truth.csv", "--out", tmp_path / "p.csv"],
    ]
    for step in steps:
        r = runner.invoke(app, [str(a) for a in step])
        assert r.exit_code == 0, (step, r.output)
    accuracy = pd.read_csv(tmp_path / "p.csv")["correct"].mean()
    assert accuracy > 0.8  # trained on labels that were 30% wrong
    again = runner.invoke(app, ["demo", "--out", str(folder), "--quiet", "--epochs", "2"])
    assert again.exit_code == 0, again.output  # the demo replaces its own folder


def test_the_documented_slow_command_selects_slow_tests():
    """README says `pytest -m slow` runs the slow tests: it must select some (and only those)."""
    # pyproject's addopts say -m 'not slow'; a -m on the command line must win over it
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "slow", "--collect-only", "-q", "-p", "no:cacheprovider", __file__],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300,
    )
    selected = [line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line]
    assert selected == ["test_the_readme_flow_on_the_demo_data"], done.stdout  # this test stays out
