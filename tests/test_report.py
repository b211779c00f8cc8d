"""report (terminal + HTML), export, and report.parquet reading/writing."""

import errno
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.errors import OutputError, OutputExistsError, ReportError
from labelclean.report import parquet as parquet_mod
from labelclean.report.html import write_html_report
from labelclean.report.parquet import build_report_table, read_report, write_report
from labelclean.report.summary import summarize

runner = CliRunner()
ROLES = {"CS": (0.95, 0.95), "CH": (0.7, 0.7), "NS": (0.1, 0.8), "NHR": (0.35, 0.45), "NHI": (0.1, 0.2)}


def make_report(tmp_path, class_names=("0", "1", "2"), n=60, epochs=6, write_images=True):
    """A realistic report over real digit images: clusters placed as in the paper's Figure 2."""
    from labelclean.data.digits import write_digits

    root, labels = write_digits(tmp_path / "img", n_per_class=n // 10 + 1)
    paths = pd.read_csv(labels)["path"].tolist()[:n]
    rng = np.random.default_rng(0)
    clusters = np.array(list(ROLES))[np.arange(n) % 5]
    centers = np.array([ROLES[c] for c in clusters])
    joint = (centers + rng.normal(0, 0.03, (n, 2))).clip(0, 1)
    c = len(class_names)
    given = rng.integers(0, c, n)
    pseudo = np.where(clusters == "NS", (given + 1) % c, given)
    action = np.where(np.isin(clusters, ("CS", "CH")), "keep", np.where(clusters == "NS", "relabel", "unlabel"))
    clean = np.where(action == "keep", given, np.where(action == "relabel", pseudo, -1))
    table = build_report_table({
        "index": np.arange(n), "path": paths, "given_label": given, "cluster": clusters, "action": action,
        "clean_label": clean, "pseudo_label": pseudo, "conf_given": joint[:, 0], "conf_pseudo": joint[:, 1],
        "cluster_prob": np.full(n, 0.9), "admitted_epoch": np.where(action == "unlabel", -1, 3),
        "trace_given": np.tile(joint[:, :1], (1, epochs)), "trace_pseudo": np.tile(joint[:, 1:], (1, epochs)),
    }, class_names=list(class_names))
    metadata = {"tool_version": "0.1.0", "image_root": str(root.resolve()), "class_names": list(class_names),
                "config": {"components": 5}, "seed": 0, "epochs": epochs, "device": "cpu", "mode": "train",
                "wall_time_s": 1.0, "model": "small_cnn",
                "gmm": {"weights": [0.2] * 5, "means": [list(v) for v in ROLES.values()], "covariances": [[[1e-3, 0], [0, 1e-3]]] * 5},
                "cluster_names": list(ROLES)}
    return write_report(tmp_path / "report.parquet", table, metadata, overwrite=True)


def test_round_trip_schema_nulls_and_traces(tmp_path):
    rep = read_report(make_report(tmp_path))
    f = rep.frame
    assert f["clean_label"].isna().sum() == (f["action"] == "unlabel").sum() > 0
    assert f["admitted_epoch"].isna().sum() == (f["action"] == "unlabel").sum()
    assert len(f["trace_given"][0]) == 6 and rep.metadata["epochs"] == 6
    assert rep.class_names == ["0", "1", "2"]


def test_write_refuses_overwrite_and_survives_a_full_disk(tmp_path, monkeypatch):
    path = make_report(tmp_path)
    before = path.read_bytes()
    rep = read_report(path)
    table = pd.DataFrame(rep.frame)
    with pytest.raises(OutputExistsError):
        write_report(path, build_report_table_from(rep), rep.metadata, overwrite=False)

    def full_disk(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parquet_mod.pq, "write_table", full_disk)
    with pytest.raises(OutputError, match=f"--out {path}: cannot write: no space left"):
        write_report(path, build_report_table_from(rep), rep.metadata, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    del table


def build_report_table_from(rep):
    import pyarrow as pa

    from labelclean.report.parquet import REPORT_SCHEMA

    return pa.Table.from_pandas(rep.frame, schema=REPORT_SCHEMA, preserve_index=False)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(ReportError, match="nope.parquet: no such report"):
        read_report(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ReportError, match="junk.parquet: not a Parquet file"):
        read_report(tmp_path / "junk.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ReportError, match="not a labelclean report"):
        read_report(tmp_path / "other.parquet")


def test_summary_numbers(tmp_path):
    s = summarize(read_report(make_report(tmp_path)))
    assert s.n == 60 and s.clusters == {"CS": 12, "CH": 12, "NS": 12, "NHR": 12, "NHI": 12}
    assert s.actions == {"keep": 24, "relabel": 12, "unlabel": 24}
    assert s.estimated_noise == pytest.approx(36 / 60)
    assert s.per_class["relabeled_out"].sum() == 12 == s.top_flips["count"].sum()


class _Balance(HTMLParser):
    VOID = {"img", "br", "meta", "input", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.imgs = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()


def test_html_is_self_contained_with_every_section(tmp_path):
    out = write_html_report(read_report(make_report(tmp_path)), tmp_path / "r.html")
    text = out.read_text()
    parser = _Balance()
    parser.feed(text)
    assert parser.stack == []
    assert {"summary", "scatter", "traces", "relabeled", "unlabeled", "classes", "samples", "export"} <= parser.ids
    assert len(parser.imgs) >= 4 + 12 + 12 and all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "http://" not in text and "https://" not in text


def test_html_escapes_class_names_and_marks_missing_images(tmp_path):
    path = make_report(tmp_path, class_names=("<script>alert(1)</script>", "b&c", "d"))
    (read_report(path).image_root / read_report(path).frame["path"][2]).unlink()  # an NS sample's image
    text = write_html_report(read_report(path), tmp_path / "r.html").read_text()
    assert "<script>alert(1)</script>" not in text.replace("<\\/script>", "")
    assert "&lt;script&gt;" in text and "missing" in text


def test_html_says_what_it_sampled(tmp_path):
    rep = read_report(make_report(tmp_path))
    text = write_html_report(rep, tmp_path / "r.html", max_grid=5, table_rows=10, max_scatter=20).read_text()
    kept = int((rep.frame["action"] == "keep").sum())
    assert "first 5 of 12" in text and "20 of 60 samples drawn" in text
    assert f"every flagged sample and the 10 most suspicious of {kept} kept ones" in text


def test_cli_report_and_export(tmp_path):
    path = make_report(tmp_path)
    r = runner.invoke(app, ["report", str(path), "--html", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "estimated noise" in r.output and (tmp_path / "r.html").exists()
    again = runner.invoke(app, ["report", str(path), "--html", str(tmp_path / "r.html")])
    assert again.exit_code == 1 and "already exists" in again.output
    r = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "all.csv")])
    assert r.exit_code == 0
    all_rows = pd.read_csv(tmp_path / "all.csv", keep_default_na=False)
    assert len(all_rows) == 60 and set(all_rows.columns) == {"path", "label", "given_label", "action", "suggested_label"}
    labeled = all_rows[all_rows.action != "unlabel"]
    assert (labeled["suggested_label"].astype(int) == labeled["label"].astype(int)).all()  # one rule
    assert (all_rows.loc[all_rows.action == "unlabel", "label"] == "").all()
    r = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "clean.parquet"), "--drop-unlabeled"])
    clean = pd.read_parquet(tmp_path / "clean.parquet")
    rep = read_report(path).frame
    assert list(clean.columns) == ["path", "label"] and len(clean) == 36
    assert clean["label"].tolist() == rep.loc[rep.action != "unlabel", "clean_label"].tolist()
    missing = runner.invoke(app, ["report", str(tmp_path / "none.parquet")])
    assert missing.exit_code == 1 and "none.parquet" in missing.output


def test_summary_counts_the_guard_column_and_says_when_a_report_predates_it(tmp_path):
    from rich.console import Console

    from labelclean.report.parquet import Report

    rep = read_report(make_report(tmp_path))
    assert summarize(rep).guard is None  # written without guard_note: an earlier version
    frame = rep.frame.copy()
    frame.loc[[0, 5], "guard"] = "budget"
    frame.loc[3, "guard"] = "class_floor"
    frame.loc[4, "guard"] = "partly_disputed"
    frame.loc[6, "guard"] = "semi_agrees"
    moved = Report(frame, {**rep.metadata, "guard_note": "guard: ...", "warnings": ["predictions collapsed"]})
    summary = summarize(moved)
    assert summary.guard == {
        "unsure_relabel": 0, "budget": 2, "class_floor": 1, "partly_disputed": 1, "semi_agrees": 1
    }
    from labelclean.report.summary import render_terminal

    console = Console(record=True, width=120)
    render_terminal(summary, console=console)
    text = console.export_text()
    assert "moved by a guard" in text and "class_floor" in text and "warning: predictions collapsed" in text
    assert "finetune trains on it as unlabeled" in " ".join(text.split())  # the row's meaning
    console = Console(record=True, width=120)
    render_terminal(summarize(rep), console=console)
    assert "guard: not recorded" in console.export_text()
