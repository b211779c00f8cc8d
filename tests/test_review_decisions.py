"""Decisions files, `apply`, and the Label Studio round trip, on the realistic digits report."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_html import make_digits_report
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.fgcm.finetune import split_report
from labelclean.interop.label_studio import export_tasks, label_config, read_label_studio_export
from labelclean.report.parquet import read_report
from labelclean.review.apply import apply_decisions, reviewed_frame
from labelclean.review.decisions import (
    Decision,
    DecisionError,
    default_decisions_path,
    load_decisions,
    report_fingerprint,
    write_decisions,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return make_digits_report(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def rep(digits):
    return read_report(digits)


def rows_of(rep, cluster):
    f = rep.frame
    return f[f["cluster"] == cluster]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_default_path_and_round_trip_with_the_fingerprint(digits, rep, tmp_path):
    assert default_decisions_path(digits) == digits.with_name("report.decisions.csv")
    fp = report_fingerprint(digits)
    ns = rows_of(rep, "NS").iloc[0]
    decisions = [Decision(ns.path, "accept", ns.pseudo_label, "2024-01-01T00:00:00Z")]
    out = write_decisions(tmp_path / "d.csv", decisions, fingerprint=fp, report_name="my report,x.parquet")
    lines = out.read_text().splitlines()
    assert lines[0] == f"# labelclean decisions for my_report_x.parquet sha256={fp}"
    assert lines[1] == "path,decision,label,time" and "," not in lines[0]
    got = load_decisions(out, rep, fingerprint=fp)
    assert got.fingerprint == fp and got.by_path[ns.path].decision == "accept"
    # what a spreadsheet writes back: the comment padded with empty cells, a BOM, CRLF
    padded = "\ufeff" + lines[0] + ",,,\r\n" + "\r\n".join(lines[1:]) + "\r\n"
    assert load_decisions(write(tmp_path / "x.csv", padded), rep, fingerprint=fp).fingerprint == fp


def test_last_decision_per_image_wins(digits, rep, tmp_path):
    p = rows_of(rep, "NHR").iloc[0]
    text = f"path,decision,label,time\n{p.path},drop,,t1\n{p.path},relabel,7,t2\n{p.path},KEEP,,t3\n"
    got = load_decisions(write(tmp_path / "d.csv", text), rep, fingerprint=report_fingerprint(digits))
    assert got.fingerprint is None  # written by hand: accepted, with a warning
    assert got.by_path[p.path] == Decision(p.path, "keep", p.given_label, "t3", 4)


@pytest.mark.parametrize(
    "row, message",
    [
        ("nope.png,accept,,", "line 3: path 'nope.png' is not an image of the report"),
        ("{ns},relabel,cat,", "line 3: label 'cat' is not a class of the report"),
        ("{ns},maybe,,", "line 3: decision 'maybe' is not one of accept, keep, relabel, drop"),
        ("{ns},relabel,,", "line 3: relabel needs a label"),
        ("{ns},keep,{pseudo},", "keep means the label"),
    ],
)
def test_bad_rows_are_named_by_file_and_line(digits, rep, tmp_path, row, message):
    ns = rows_of(rep, "NS").iloc[0]
    good = f"{ns.path},keep,,"
    text = "path,decision,label,time\n" + good + "\n" + row.format(ns=ns.path, pseudo=ns.pseudo_label) + "\n"
    with pytest.raises(DecisionError, match=message) as err:
        load_decisions(write(tmp_path / "d.csv", text), rep, fingerprint=report_fingerprint(digits))
    assert str(tmp_path / "d.csv") in str(err.value)


def test_files_that_are_not_decisions_are_refused(digits, rep, tmp_path):
    fp = report_fingerprint(digits)
    other = "# labelclean decisions for other.parquet sha256=" + "0" * 64 + "\npath,decision\n"
    with pytest.raises(DecisionError, match="made for another report"):
        load_decisions(write(tmp_path / "o.csv", other), rep, fingerprint=fp)
    with pytest.raises(DecisionError, match="the header needs the columns"):
        load_decisions(write(tmp_path / "h.csv", "path,label\na.png,3\n"), rep, fingerprint=fp)
    with pytest.raises(DecisionError, match="not a UTF-8 text file|binary|a Parquet file"):
        load_decisions(digits, rep, fingerprint=fp)  # the report itself
    with pytest.raises(DecisionError, match="a folder; expected a decisions file"):
        load_decisions(tmp_path, rep, fingerprint=fp)
    with pytest.raises(DecisionError, match="no such decisions file"):
        load_decisions(tmp_path / "nope.csv", rep, fingerprint=fp)


def test_apply_takes_reviewer_decisions_first_then_the_audit(rep):
    ns, nhr, nhi, cs = (rows_of(rep, c).iloc[0] for c in ("NS", "NHR", "NHI", "CS"))
    decisions = {
        ns.path: Decision(ns.path, "keep", ns.given_label),  # the reviewer overrules a relabel
        nhr.path: Decision(nhr.path, "accept", nhr.pseudo_label),  # takes the model's guess
        nhi.path: Decision(nhi.path, "drop"),
        cs.path: Decision(cs.path, "relabel", "9" if cs.given_label != "9" else "8"),
    }
    table, summary = apply_decisions(rep, decisions)
    final = {p: (None if pd.isna(x) else x) for p, x in zip(table["path"], table["label"])}
    assert list(table.columns) == ["path", "label"] and len(table) == len(rep.frame) - 1
    assert nhi.path not in final
    assert final[ns.path] == ns.given_label and final[nhr.path] == nhr.pseudo_label
    assert final[cs.path] == decisions[cs.path].label
    undecided = rep.frame[~rep.frame["path"].isin(list(decisions))]
    for r in undecided.itertuples():  # the audit's outcome; the given label where it unlabeled
        assert final[r.path] == (r.clean_label if isinstance(r.clean_label, str) else r.given_label)
    assert summary.decided == {"accept": 1, "keep": 1, "relabel": 1, "drop": 1}
    assert summary.changed_from_audit == 4 and summary.unlabeled == 14 - 2
    text = "\n".join(summary.lines())
    assert "79 of 80 images written" in text and "1 accept, 1 keep, 1 relabel, 1 drop" in text

    only, s2 = apply_decisions(rep, decisions, only_reviewed=True, drop_unlabeled=True)
    got = dict(zip(only["path"], only["label"]))
    for r in undecided.itertuples():  # nobody decided: the given label, or left out if unlabeled
        assert got.get(r.path) == (r.given_label if isinstance(r.clean_label, str) else None)
    assert s2.unlabeled == 0 and s2.left_out_unlabeled == 12 and len(only) == 79 - 12
    dropped, s3 = apply_decisions(rep, decisions, drop_unlabeled=True)
    assert len(dropped) == 79 - 12 and dropped["label"].notna().all() and s3.left_out_unlabeled == 12


def test_reviewed_frame_feeds_finetunes_split(rep):
    nhr, nhi = rows_of(rep, "NHR").iloc[0], rows_of(rep, "NHI").iloc[0]
    decisions = {nhr.path: Decision(nhr.path, "accept", nhr.pseudo_label), nhi.path: Decision(nhi.path, "drop")}
    frame = reviewed_frame(rep, decisions)
    labeled, labels, unlabeled = split_report(frame, rep.class_names)
    assert len(frame) == 79 and nhi.path not in set(frame["path"])
    assert len(labeled) == 66 + 1 and len(unlabeled) == 14 - 2
    row = int(np.flatnonzero(frame["path"].to_numpy() == nhr.path)[0])
    assert labels[list(labeled).index(row)] == rep.class_names.index(nhr.pseudo_label)


def test_a_decision_clears_the_guard_that_keeps_a_label_out_of_finetune(rep):
    import dataclasses

    kept = np.flatnonzero((rep.frame["action"] == "keep").to_numpy())[:2]
    frame = rep.frame.copy()
    frame.loc[kept, "guard"] = "partly_disputed"  # kept only because little of the data is wrong
    path = frame.loc[kept[0], "path"]
    decisions = {path: Decision(path, "keep", None)}
    out = reviewed_frame(dataclasses.replace(rep, frame=frame), decisions)
    assert out.loc[kept[0], "guard"] is None and out.loc[kept[1], "guard"] == "partly_disputed"
    labeled, _, unlabeled = split_report(out, rep.class_names)
    assert kept[0] in labeled and kept[1] in unlabeled  # the reviewer's keep is trained on


def test_label_studio_tasks_follow_the_import_format(digits, rep):
    fp = report_fingerprint(digits)
    tasks = export_tasks(rep, document_root=rep.image_root.parent, fingerprint=fp)
    assert len(tasks) == 80 and [t["data"]["cluster"] for t in tasks[:12]] == ["NS"] * 12
    t = tasks[0]
    assert t["data"]["image"] == "/data/local-files/?d=images/" + t["data"]["path"]
    assert t["data"]["labelclean_report"] == fp
    [pred] = t["predictions"]
    [res] = pred["result"]
    assert res == {"id": res["id"], "from_name": "label", "to_name": "image", "type": "choices",
                   "value": {"choices": [t["data"]["suggested_label"]]}}
    assert 0 <= pred["score"] <= 1 and pred["model_version"].startswith("labelclean")
    xml = ET.fromstring(label_config(['a"<b', *rep.class_names]))
    choices = {c.get("name"): [x.get("value") for x in c] for c in xml.iter("Choices")}
    assert choices["label"] == ['a"<b', *rep.class_names] and choices["review"] == ["drop"]
    assert xml.find("Image").get("value") == "$image"


def _annotated(task, choice=None, drop=False, cancelled=False, when="2024-01-02T00:00:00Z"):
    result = []
    if choice is not None:
        result.append({"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}})
    if drop:
        result.append({"from_name": "review", "to_name": "image", "type": "choices", "value": {"choices": ["drop"]}})
    return {"result": result, "was_cancelled": cancelled, "updated_at": when}


def test_label_studio_export_becomes_decisions(digits, rep, tmp_path):
    fp = report_fingerprint(digits)
    tasks = export_tasks(rep, document_root=rep.image_root.parent, fingerprint=fp)
    a, k, r, d, c, none = tasks[:6]
    a["annotations"] = [_annotated(a, a["data"]["suggested_label"])]
    k["annotations"] = [_annotated(k, "9", when="2024-01-01"), _annotated(k, k["data"]["given_label"], when="2024-01-03")]
    other = next(x for x in rep.class_names if x not in (r["data"]["given_label"], r["data"]["suggested_label"]))
    r["annotations"] = [_annotated(r, other)]
    d["annotations"] = [_annotated(d, drop=True)]
    c["annotations"] = [_annotated(c, "1", cancelled=True)]
    none["annotations"] = []
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    got = load_decisions(export, rep, fingerprint=fp).by_path
    assert {p: x.decision for p, x in got.items()} == {
        a["data"]["path"]: "accept", k["data"]["path"]: "keep",
        r["data"]["path"]: "relabel", d["data"]["path"]: "drop"}
    assert got[r["data"]["path"]].label == other
    # JSON-MIN: the data fields and the choices are flat; the image URL alone finds the path
    flat = [{"image": a["data"]["image"], "label": a["data"]["given_label"], "id": 1}]
    got = load_decisions(write(tmp_path / "min.json", json.dumps(flat)), rep, fingerprint=fp).by_path
    assert got[a["data"]["path"]].decision == "keep"
    # tasks made for another report are refused; unknown images and classes are named
    a["data"]["labelclean_report"] = "f" * 64
    with pytest.raises(DecisionError, match="different reports"):
        read_label_studio_export(write(tmp_path / "x.json", json.dumps(tasks)), rep)
    for t in tasks:
        t["data"]["labelclean_report"] = "f" * 64
    with pytest.raises(DecisionError, match="made for another report"):
        load_decisions(write(tmp_path / "y.json", json.dumps(tasks)), rep, fingerprint=fp)
    bad = [{"data": {"path": "zzz.png"}, "annotations": [_annotated(None, "1")]}]
    with pytest.raises(DecisionError, match=r"task 1: path 'zzz.png' is not an image"):
        load_decisions(write(tmp_path / "z.json", json.dumps(bad)), rep, fingerprint=fp)
    bad = [{"data": {"path": a["data"]["path"]}, "annotations": [_annotated(None, "dog")]}]
    with pytest.raises(DecisionError, match=r"task 1: label 'dog' is not a class"):
        load_decisions(write(tmp_path / "w.json", json.dumps(bad)), rep, fingerprint=fp)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_apply_and_export_label_studio(digits, rep, tmp_path):
    nhr = rows_of(rep, "NHR").iloc[0]
    dec = write(tmp_path / "d.csv", f"path,decision,label,time\n{nhr.path},relabel,{nhr.pseudo_label},\n")
    out = tmp_path / "final.csv"
    r = invoke("apply", digits, dec, "--out", out)
    assert r.exit_code == 0, r.output
    assert "80 of 80 images written" in r.output and "1 relabel" in r.output
    final = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert final.set_index("path").loc[nhr.path, "label"] == nhr.pseudo_label
    again = invoke("apply", digits, dec, "--out", out)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert invoke("apply", digits, dec, "--out", dec).exit_code == 1  # not onto its input
    bad = write(tmp_path / "bad.csv", "path,decision,label,time\nx.png,keep,,\n")
    r = invoke("apply", digits, bad, "--out", tmp_path / "f2.csv")
    assert r.exit_code == 1 and f"error: {bad} line 2: path 'x.png'" in r.output
    assert not (tmp_path / "f2.csv").exists()
    tasks = tmp_path / "tasks.json"
    r = invoke("export", digits, "--format", "label-studio", "--out", tasks)
    assert r.exit_code == 0, r.output
    assert len(json.loads(tasks.read_text())) == 80 and (tmp_path / "tasks.label-config.xml").is_file()
    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" in r.output
    r = invoke("export", digits, "--format", "label-studio", "--out", tmp_path / "t.csv")
    assert r.exit_code == 1 and "name the file *.json" in r.output


def test_finetune_trains_on_the_reviewed_labels(tmp_path):
    report = make_digits_report(tmp_path)
    rep = read_report(report)
    nhr, nhi = rows_of(rep, "NHR"), rows_of(rep, "NHI").iloc[0]
    lines = [f"{p},accept,," for p in nhr["path"]] + [f"{nhi.path},drop,,"]
    dec = write(tmp_path / "d.csv", "path,decision,label,time\n" + "\n".join(lines) + "\n")
    r = invoke("finetune", report, "--decisions", dec, "--out", tmp_path / "m", "--epochs", 1,
               "--mu", 1, "--batch-size", 16, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    # 66 kept or relabeled + the 7 accepted NHR; the other 6 NHI unlabeled; one dropped
    assert (metrics["n_labeled"], metrics["n_unlabeled"]) == (66 + 7, 6)
    bad = write(tmp_path / "bad.csv", "path,decision,label,time\nzz.png,drop,,\n")
    r = invoke("finetune", report, "--decisions", bad, "--out", tmp_path / "m2", "--epochs", 1, "--quiet")
    assert r.exit_code == 1 and "line 2: path 'zz.png'" in r.output
