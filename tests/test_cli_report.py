"""`labelclean report` and `labelclean export` through the CLI: outputs, exit codes, messages."""

from pathlib import Path

import pandas as pd
import pytest
from test_report_html import N, make_digits_report  # the realistic digits report fixture
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.report.parquet import read_report

runner = CliRunner()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return make_digits_report(tmp_path_factory.mktemp("digits"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_commands_are_registered():
    r = invoke("--help")
    assert r.exit_code == 0 and "report" in r.output and "export" in r.output


def table_rows(output, first_cells):
    """{first cell: the other cells} of the rich table rows that start with one of ``first_cells``."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if "│" in line and cells[0] in first_cells:
            rows[cells[0]] = cells[1:]
    return rows


def test_report_prints_the_summary(digits):
    r = runner.invoke(app, ["report", str(digits)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert r.output.startswith("80 samples, 10 classes;") and "estimated noise 32.5% " in r.output
    assert "classes with the most relabels" in r.output and "top given -> clean flips" in r.output
    clusters = table_rows(r.output, {"CS", "CH", "NS", "NHR", "NHI"})
    assert {c: cells[:2] for c, cells in clusters.items()} == {
        "CS": ["40", "50.0%"], "CH": ["14", "17.5%"], "NS": ["12", "15.0%"], "NHR": ["7", "8.8%"], "NHI": ["7", "8.8%"],
    }
    actions = table_rows(r.output, {"keep", "relabel", "unlabel"})
    assert actions == {"keep": ["54", "67.5%"], "relabel": ["12", "15.0%"], "unlabel": ["14", "17.5%"]}


def test_report_html_quiet_and_overwrite(digits, tmp_path):
    out = tmp_path / "page.html"
    r = invoke("report", digits, "--html", out, "--quiet", "--max-grid", 4, "--table-rows", 20)
    assert r.exit_code == 0, r.output
    assert "estimated noise" not in r.output and f"wrote {out}" in r.output
    text = out.read_text()
    assert "first 4 of 12" in text and "the 20 most suspicious of 54 kept ones" in text
    again = invoke("report", digits, "--html", out, "-q")
    assert (
        again.exit_code == 1 and "already exists" in again.output and "--overwrite" in again.output
    )
    assert out.read_text() == text
    assert invoke("report", digits, "--html", out, "-q", "--overwrite").exit_code == 0


def test_report_errors_name_the_file(tmp_path):
    r = invoke("report", tmp_path / "none.parquet")
    assert r.exit_code == 1 and "none.parquet" in r.output and "no such report" in r.output
    (tmp_path / "junk.parquet").write_text("not parquet")
    r = invoke("report", tmp_path / "junk.parquet")
    assert r.exit_code == 1 and "junk.parquet: not a Parquet file" in r.output
    assert invoke("report", tmp_path / "none.parquet", "--max-grid", 0).exit_code == 2  # usage


def test_export_keeps_unlabeled_rows_with_an_empty_label_by_default(digits, tmp_path):
    r = invoke("export", digits, "--out", tmp_path / "all.csv")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"wrote {tmp_path / 'all.csv'}: 80 rows (12 relabeled, 14 unlabeled with an empty label);")
    rows = pd.read_csv(tmp_path / "all.csv", keep_default_na=False, dtype=str)
    frame = read_report(digits).frame
    assert list(rows.columns) == ["path", "label", "given_label", "action", "suggested_label"]
    assert len(rows) == N
    assert rows["path"].tolist() == frame["path"].tolist()  # manifest order
    keep, relabel, unlabel = (rows["action"] == a for a in ("keep", "relabel", "unlabel"))
    assert (rows.loc[keep, "label"] == rows.loc[keep, "given_label"]).all()
    assert (rows.loc[relabel, "label"] != rows.loc[relabel, "given_label"]).all()
    assert (
        rows.loc[relabel, "label"].tolist()
        == frame.loc[frame.action == "relabel", "clean_label"].tolist()
    )
    assert (rows.loc[unlabel, "label"] == "").all() and unlabel.sum() == 14


def test_export_drop_unlabeled_parquet_and_absolute_paths(digits, tmp_path):
    out = tmp_path / "clean.parquet"
    r = invoke("export", digits, "-o", out, "--drop-unlabeled", "--absolute-paths")
    assert r.exit_code == 0, r.output
    clean = pd.read_parquet(out)
    frame = read_report(digits).frame
    kept = frame[frame.action != "unlabel"]
    assert list(clean.columns) == ["path", "label"] and len(clean) == N - 14
    assert clean["label"].tolist() == kept["clean_label"].tolist()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in clean["path"])


def test_export_refuses_to_overwrite_or_guess(digits, tmp_path):
    out = tmp_path / "m.csv"
    out.write_text("mine\n")
    r = invoke("export", digits, "--out", out)
    assert r.exit_code == 1 and "already exists" in r.output and out.read_text() == "mine\n"
    assert invoke("export", digits, "--out", out, "--overwrite").exit_code == 0
    r = invoke("export", digits, "--out", tmp_path / "m.txt")
    assert r.exit_code == 1 and "--out" in r.output and "*.csv or *.parquet" in r.output
    r = invoke("export", digits, "--out", digits, "--overwrite")
    assert r.exit_code == 1 and "is the same file as REPORT" in r.output
    assert read_report(digits).frame.shape[0] == N
    r = invoke("export", tmp_path / "none.parquet", "--out", tmp_path / "x.csv")
    assert r.exit_code == 1 and "none.parquet" in r.output


@pytest.mark.parametrize(
    "command,shown",
    [
        ("audit", "[default: 40]"),
        ("finetune", "[default: the audit's]"),
        ("evaluate", "[default: true_label if present, else label]"),
        ("corrupt", "[default: the manifest's folder]"),
    ],
)
def test_help_shows_defaults_written_in_brackets(command, shown):
    # rich reads "[default: 40]" as a markup tag and drops it unless the bracket is escaped
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and shown in r.output and "\\[" not in r.output
