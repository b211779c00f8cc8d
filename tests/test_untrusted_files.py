"""Hand-edited or hostile files labelclean reads: one `error:` line each, never a traceback.

Issue 38: non-finite numbers in a report, JSON nested 100,000 deep, report metadata of the
wrong shape, and labels a spreadsheet would run as formulas. Every report here is the
realistic digits report (no training) with one thing edited in its Parquet file.
"""

import html
import json
import logging
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_report_html import make_digits_report
from typer.testing import CliRunner

from labelclean.cli import app

runner = CliRunner()
DEEP = "[" * 100_000


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits_report(tmp_path_factory.mktemp("digits"))


@pytest.fixture(autouse=True)
def _quiet_version_warning(caplog):
    caplog.set_level(logging.ERROR, logger="labelclean.report.parquet")  # a test report's version


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(r, *needles):
    """Exit 1 with one `error:` line holding every needle, and no traceback."""
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 1 and len(lines) == 1, (r.output, r.exception)
    assert "Traceback" not in r.output, r.output
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


def edited(report, out, *, metadata=None, raw_metadata=None, column=None, row=0, value=None):
    """A copy of ``report`` with its metadata replaced or edited, or one float cell set."""
    table = pq.read_table(report)
    if column is not None:
        i = table.schema.get_field_index(column)
        values = table[column].to_pylist()
        if pa.types.is_list(table.schema.field(i).type):
            values[row] = [value, *values[row][1:]]
        else:
            values[row] = value
        table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    if metadata is not None:
        md = json.loads(table.schema.metadata[b"labelclean"])
        md.update(metadata)
        raw_metadata = json.dumps({k: v for k, v in md.items() if v is not ...})
    if raw_metadata is not None:
        table = table.replace_schema_metadata({b"labelclean": raw_metadata})
    pq.write_table(table, out)
    return out


# 14. JSON nested 100,000 deep ----------------------------------------------------------------


def test_deeply_nested_json_is_one_error_naming_the_file(digits, tmp_path):
    """`apply` with a Label Studio export, `predict` with a config.json, `report` metadata."""
    export = tmp_path / "export.json"
    export.write_text(DEEP)
    refused(run("apply", digits, export, "--out", tmp_path / "a.csv"), "export.json", "nested deeper")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(DEEP)
    (model / "model.safetensors").write_bytes(b"")
    images = digits.parent / "images"
    refused(run("predict", model, images, "--out", tmp_path / "p.csv"), "config.json", "nested deeper")
    deep = edited(digits, tmp_path / "deep.parquet", raw_metadata=DEEP)
    for command in (["report", deep], ["report", deep, "--html", tmp_path / "r.html"],
                    ["export", deep, "--out", tmp_path / "e.csv"]):
        refused(run(*command), "deep.parquet", "metadata", "nested deeper")
    nested = edited(digits, tmp_path / "nested.parquet", metadata={"config": json.loads("[" * 900 + "]" * 900)})
    refused(run("report", nested), "nested.parquet", "nested deeper")  # parses, but too deep to walk
    assert not any((tmp_path / name).exists() for name in ("a.csv", "p.csv", "r.html", "e.csv"))


def test_json_inputs_are_size_capped_and_only_regular_files_are_read(digits, tmp_path, monkeypatch):
    import os

    import labelclean._io as io_mod

    export = tmp_path / "export.json"
    export.write_text("[" + ",".join(["{}"] * 100) + "]")
    monkeypatch.setattr(io_mod, "MAX_JSON_BYTES", 100)
    refused(run("apply", digits, export, "--out", tmp_path / "a.csv"), "export.json", "more than the 100")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    refused(run("apply", digits, fifo, "--out", tmp_path / "a.csv"), "fifo.json", "not a regular file")


# 12. NaN or infinity in a report -------------------------------------------------------------


@pytest.mark.parametrize("column,row,value", [
    ("conf_given", 5, float("nan")),
    ("cluster_prob", 7, float("inf")),
    ("trace_pseudo", 9, float("-inf")),  # a list column: the row, not the value's position
])
def test_non_finite_numbers_in_a_report_are_refused_by_every_command(digits, tmp_path, monkeypatch, column, row, value):
    import labelclean.review.server as server

    bad = edited(digits, tmp_path / "bad.parquet", column=column, row=row, value=value)
    needles = ("bad.parquet", f"column {column} holds {value} at row {row}")
    refused(run("report", bad, "--html", tmp_path / "r.html"), *needles)
    refused(run("export", bad, "--format", "label-studio", "--out", tmp_path / "tasks.json"), *needles)
    refused(run("export", bad, "--out", tmp_path / "e.csv"), *needles)
    monkeypatch.setattr(server.ReviewServer, "serve_forever", lambda self: pytest.fail("served"))
    refused(run("review", bad, "--no-browser", "--port", 0), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_the_review_state_and_the_api_refuse_a_non_finite_report(digits, tmp_path):
    from labelclean.errors import ReportError
    from labelclean.report.parquet import read_report
    from labelclean.review.decisions import report_fingerprint
    from labelclean.review.state import ReviewState

    bad = edited(digits, tmp_path / "bad.parquet", column="conf_pseudo", row=3, value=float("nan"))
    with pytest.raises(ReportError, match="column conf_pseudo holds nan at row 3"):
        ReviewState(read_report(bad), tmp_path / "d.csv", fingerprint=report_fingerprint(bad))
    rows = ReviewState(read_report(digits), tmp_path / "d.csv", fingerprint=report_fingerprint(digits)).rows("flagged")
    json.dumps(rows, allow_nan=False)  # what /api/rows sends: strict JSON


def test_nested_floats_are_looked_into_and_the_writer_refuses_too(digits, tmp_path):
    from labelclean.errors import ReportError
    from labelclean.report.parquet import _first_non_finite, read_report, write_report

    vote = pa.struct([("annotator", pa.string()), ("p_right", pa.float32())])
    votes = pa.array([[{"annotator": "a", "p_right": 0.5}], [], [{"annotator": "b", "p_right": 0.1},
                      {"annotator": "c", "p_right": float("nan")}]], pa.list_(vote))
    assert _first_non_finite(pa.table({"votes": votes})) == ("votes", 2, pytest.approx(float("nan"), nan_ok=True))
    assert _first_non_finite(pa.table({"votes": votes.slice(0, 2)})) is None
    rep = read_report(digits)
    table = pq.read_table(edited(digits, tmp_path / "bad.parquet", column="conf_given", row=1, value=float("inf")))
    with pytest.raises(ReportError, match="cannot write .*out.parquet: column conf_given holds inf at row 1"):
        write_report(tmp_path / "out.parquet", table.replace_schema_metadata(), rep.metadata, overwrite=False)
    assert not (tmp_path / "out.parquet").exists()


# 15. report metadata of the wrong shape --------------------------------------------------------


@pytest.mark.parametrize("change,needle", [
    ({"class_names": None}, "class_names is null, expected a list of strings"),
    ({"class_names": "0123456789"}, 'class_names is the string "0123456789", expected a list of strings'),
    ({"class_names": list(range(10))}, "class_names is a list holding 0, expected a list of strings"),
    ({"class_names": ["0"] * 10}, "class_names must be distinct names"),
    ({"image_root": None}, "image_root is null, expected a string"),
    ({"epochs": "10"}, 'epochs is the string "10", expected an integer'),
    ({"config": ["x"]}, "config is a list, expected a JSON object"),
    ({"cluster_names": 5}, "cluster_names is an integer (5), expected a list of strings or null"),
    ({"gmm": "x"}, 'gmm is the string "x", expected a JSON object or null'),
    ({"warnings": "careful"}, 'warnings is the string "careful", expected a list or null'),
    ({"normalization": {"mean": [0.5]}}, "normalization needs lists of numbers under mean and std"),
    ({"network": [1]}, "network is a list, expected a JSON object or null"),
    ({"seed": ...}, "metadata lacks seed"),
])
def test_report_metadata_of_the_wrong_shape_is_refused_naming_the_key(digits, tmp_path, change, needle):
    bad = edited(digits, tmp_path / "md.parquet", metadata=change)
    for command in (["report", bad], ["report", bad, "--html", tmp_path / "r.html"],
                    ["export", bad, "--out", tmp_path / "e.csv"],
                    ["export", bad, "--format", "label-studio", "--out", tmp_path / "t.json"],
                    ["apply", bad, tmp_path / "none.csv", "--out", tmp_path / "a.csv"],
                    ["finetune", bad, "--out", tmp_path / "m"]):
        refused(run(*command), "md.parquet", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["md.parquet"]


def test_the_writer_checks_the_metadata_as_the_reader_will_see_it(digits, tmp_path):
    import numpy as np

    from labelclean.errors import ReportError
    from labelclean.report.parquet import read_report, write_report

    rep = read_report(digits)
    table = pq.read_table(digits).replace_schema_metadata()
    md = {**rep.metadata, "seed": np.int64(3), "epochs": np.int32(10), "wall_time_s": np.float32(1.5)}
    write_report(tmp_path / "ok.parquet", table, md, overwrite=False)  # numpy scalars are numbers
    assert read_report(tmp_path / "ok.parquet").metadata["seed"] == 3
    with pytest.raises(ReportError, match="cannot write .*bad.parquet: report metadata class_names is null"):
        write_report(tmp_path / "bad.parquet", table, {**rep.metadata, "class_names": None}, overwrite=False)
    assert not (tmp_path / "bad.parquet").exists()


# 28. labels a spreadsheet would run as formulas -----------------------------------------------

EVIL = ['=HYPERLINK("http://evil.example","click")', "+SUM(1)", "-2+3", "@cmd", "'quoted",
        "-1", "plain", "=1", "''twice", "=A1"]
RISKY = ("=", "+", "-", "@", "\t", "\r")


def raw_cells(path, sep=","):
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh, delimiter=sep) for cell in row]


def assert_no_formula(cells):
    """No cell a spreadsheet would run: each starts with none of RISKY, or is a plain number."""
    import re

    number = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
    risky = [c for c in cells if c.startswith(RISKY) and not number.fullmatch(c)]
    assert not risky, risky


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """The digits report with class names (and one image name) a spreadsheet would run."""
    return make_digits_report(tmp_path_factory.mktemp("evil"), class_names=EVIL, odd_path="=cmd|x.png")


def test_escaping_is_undone_exactly(tmp_path):
    import pandas as pd

    from labelclean._csv import escape_cell, frame_to_csv, unescape_cell
    from labelclean.data.manifest import read_table

    texts = ["", "'", "''", "=", "=x", "'=x", "''=x", "-", "-1", "+1.5", "-2e3", "-x", "@", "\tt", "\rr",
             "'90s", "a'b", "plain", "=cmd|' /C calc'!A0", "x\ry", "\r\n=x"]
    for text in texts:
        assert unescape_cell(escape_cell(text)) == text
    assert [escape_cell(t) for t in ("-1", "+1.5", "'90s", "=x")] == ["-1", "+1.5", "''90s", "'=x"]
    frame = pd.DataFrame({"path": texts, "n": range(len(texts)), "=col": pd.Categorical(texts)})
    for name, sep in (("t.csv", ","), ("t.tsv", "\t")):
        frame_to_csv(frame, tmp_path / name, sep=sep)
        assert_no_formula(raw_cells(tmp_path / name, sep))
        back = read_table(tmp_path / name)
        assert list(back.columns) == ["path", "n", "=col"]
        assert back["path"].tolist() == texts and back["=col"].tolist() == texts


def test_export_and_apply_csvs_are_escaped_and_read_back_whole(evil, tmp_path):
    from labelclean.data.manifest import read_manifest, read_table
    from labelclean.report.parquet import read_report
    from labelclean.review.decisions import (
        Decision,
        load_decisions,
        report_fingerprint,
        write_decisions,
    )

    rep = read_report(evil)
    kept = rep.frame[rep.frame["action"] != "unlabel"]
    out = tmp_path / "clean.csv"
    r = run("export", evil, "--out", out, "--drop-unlabeled")
    assert r.exit_code == 0, r.output
    assert_no_formula(raw_cells(out))
    assert "'=HYPERLINK(" in out.read_text() and "'=cmd|x.png" in out.read_text()
    assert "-1" in raw_cells(out) and "'''twice" in raw_cells(out)  # numbers stay, quotes double
    back = read_table(out)
    assert back["path"].tolist() == kept["path"].tolist()
    assert back["label"].tolist() == kept["clean_label"].tolist()
    manifest = read_manifest(evil.parent / "images", out)  # the export is a manifest again
    assert set(manifest.class_names) <= set(EVIL) and "=cmd|x.png" in manifest.paths
    # the decisions file and apply
    row = kept.iloc[0]
    decisions = tmp_path / "d.csv"
    write_decisions(decisions, [Decision(row["path"], "relabel", EVIL[0])],
                    fingerprint=report_fingerprint(evil), report_name=evil.name)
    assert_no_formula(raw_cells(decisions))
    found = load_decisions(decisions, rep, fingerprint=report_fingerprint(evil))
    assert found.by_path[row["path"]].label == EVIL[0]
    final = tmp_path / "final.csv"
    r = run("apply", evil, decisions, "--out", final)
    assert r.exit_code == 0, r.output
    assert_no_formula(raw_cells(final))
    labels = read_table(final).set_index("path")["label"]
    assert labels[row["path"]] == EVIL[0]


def test_corrupt_and_rejected_csvs_are_escaped(evil, tmp_path):
    import pandas as pd

    from labelclean.data.manifest import read_manifest, read_table

    images = evil.parent / "images"
    labels = tmp_path / "labels.csv"
    assert run("export", evil, "--out", labels, "--drop-unlabeled").exit_code == 0
    noisy, truth = tmp_path / "noisy.csv", tmp_path / "truth.tsv"
    r = run("corrupt", labels, "--noise", "symmetric", "--rate", 0.3, "--out", noisy, "--truth-out", truth)
    assert r.exit_code == 0, r.output
    assert_no_formula(raw_cells(noisy))
    assert_no_formula(raw_cells(truth, "\t"))
    assert read_table(truth)["label"].tolist() == read_table(labels)["label"].tolist()
    assert set(read_manifest(images, noisy).class_names) <= set(EVIL)
    (images / "@bad.png").write_bytes(b"not an image")
    frame = pq.read_table(evil).to_pandas()
    pd.DataFrame({"path": [*frame["path"], "@bad.png"], "label": [*frame["given_label"], "plain"]}).to_csv(
        labels, index=False)
    rejected = tmp_path / "rejected.csv"
    r = run("check", images, labels, "--on-bad-image", "skip", "--max-bad-fraction", 0.5,
            "--rejected-out", rejected, "-q", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert_no_formula(raw_cells(rejected))
    assert read_table(rejected)["path"].tolist() == ["@bad.png"]


def test_predictions_csv_is_escaped(tmp_path):
    import pandas as pd

    from labelclean._predict import Predictions
    from labelclean.data.manifest import read_table

    frame = pd.DataFrame({"path": ["=a.png", "b.png"], "prediction": [EVIL[0], "-1"], "confidence": [0.9, 0.8]})
    Predictions(frame).write(tmp_path / "p.csv")
    assert_no_formula(raw_cells(tmp_path / "p.csv"))
    assert read_table(tmp_path / "p.csv")["prediction"].tolist() == [EVIL[0], "-1"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless chromium")
def test_the_report_pages_csv_button_escapes_the_same_way(evil, tmp_path):
    from test_report_html import PROBE, _chromium_dom

    from labelclean.data.manifest import read_table
    from labelclean.report.html import write_html_report
    from labelclean.report.parquet import read_report

    rep = read_report(evil)
    page = write_html_report(rep, tmp_path / "r.html")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    dom = _chromium_dom(probe, tmp_path / "profile")
    text = html.unescape(re.search(r'<pre id="probe-csv">(.*?)</pre>', dom, re.S).group(1))
    (tmp_path / "selection.csv").write_text(text, encoding="utf-8")
    cells = raw_cells(tmp_path / "selection.csv")
    assert_no_formula(cells)
    assert any(c.startswith("'=HYPERLINK(") for c in cells)
    got = read_table(tmp_path / "selection.csv")  # labelclean reads back what the page wrote
    assert len(got) == 12  # the probe's selection: the NS rows
    frame = rep.frame.set_index("index")
    idx = got["index"].astype(int)
    for column in ("given_label", "clean_label", "pseudo_label"):
        assert got[column].tolist() == frame.loc[idx, column].tolist()
