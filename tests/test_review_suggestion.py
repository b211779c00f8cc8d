"""One suggestion, the audit's, everywhere a label is proposed; round trips that close.

On the realistic digits report (real PNGs, every cluster) with what a real audit has and the
plain fixture lacks: kept images whose network guess is another class (a guard kept them, or
the crowd outvoted the network). Accepting every proposal, in the review or as Label Studio's
pre-annotation, must give exactly the audit's final labels (the clean label, the audit's
guess where it unlabeled), and ``apply`` never writes an empty label.
"""

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_report_html import make_digits_report
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.interop.label_studio import export_tasks, label_config
from labelclean.report.html import write_html_report
from labelclean.report.parquet import CROWD_SCHEMA, REPORT_SCHEMA, read_report, write_report
from labelclean.review.decisions import load_decisions, report_fingerprint
from labelclean.review.state import ReviewState

runner = CliRunner()
#: Kept rows whose network guess is another class: CH rows (in the queue) and CS rows.
DISPUTED = {"CH": 6, "CS": 3}


def disputed_report(folder: Path) -> Path:
    """The digits report, with some kept rows whose ``pseudo_label`` is not their label.

    A real audit has many (a guard keeps a disputed label; on CIFAR-10N 629 of 1,437 kept
    images showed a network guess other than the final label); the plain fixture has none,
    so there the network's guess and the audit's decision cannot be told apart.
    """
    path = make_digits_report(folder)
    rep = read_report(path)
    f = rep.frame.copy()
    for cluster, k in DISPUTED.items():
        rows = np.flatnonzero((f["cluster"] == cluster).to_numpy())[:k]
        given = f.loc[rows, "given_label"].astype(int)
        f.loc[rows, "pseudo_label"] = ((given + 5) % 10).astype(str).to_numpy()
    schema = CROWD_SCHEMA if "votes" in f.columns else REPORT_SCHEMA
    f["admitted_epoch"] = f["admitted_epoch"].astype(object).where(f["admitted_epoch"].notna(), None)
    table = pa.Table.from_pandas(f[[x.name for x in schema]], schema=schema, preserve_index=False)
    return write_report(path, table, rep.metadata, overwrite=True)


def audits_labels(frame: pd.DataFrame) -> dict[str, str]:
    """The audit's final label of every image: clean, or its guess where it unlabeled."""
    final = np.where(frame["clean_label"].notna(), frame["clean_label"], frame["pseudo_label"])
    return dict(zip(frame["path"], final))


@pytest.fixture(scope="module")
def disputed(tmp_path_factory) -> Path:
    return disputed_report(tmp_path_factory.mktemp("disputed"))


@pytest.fixture(scope="module")
def rep(disputed):
    return read_report(disputed)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def final_csv(path: Path) -> dict[str, str]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(table["path"], table["label"]))


def test_the_fixture_has_kept_labels_the_network_disputes(rep):
    f = rep.frame
    kept = f["action"] == "keep"
    assert (kept & (f["pseudo_label"] != f["given_label"])).sum() == sum(DISPUTED.values())


def test_the_review_cards_suggest_the_audits_decision(disputed, rep, tmp_path):
    state = ReviewState(rep, tmp_path / "d.csv", fingerprint=report_fingerprint(disputed))
    want = audits_labels(rep.frame)
    network = dict(zip(rep.frame["path"], rep.frame["pseudo_label"]))
    for part in ("queue", "more"):
        rows = state.rows(part)
        suggested = [state.classes[k] for k in rows["suggested"]]
        assert suggested == [want[p] for p in rows["path"]]
        # the network's guess stays visible, as evidence
        assert [state.classes[k] for k in rows["network"]] == [network[p] for p in rows["path"]]
    # the review's heatmap pairs each given label with that suggestion
    from labelclean.review.server import ReviewServer

    server = ReviewServer(state, "127.0.0.1", 0)
    try:
        page = server.page.decode()
    finally:
        server.server_close()
    counts = {(g, o): int(n) for g, o, n in re.findall(
        r'data-given="(\w+)" data-other="(\w+)" title="[^"]*: (\d+)"', page)}
    queue = rep.frame.iloc[state.queue]
    pairs = pd.Series(list(zip(queue["given_label"], [want[p] for p in queue["path"]])))
    assert counts == {(g, o): int((pairs == (g, o)).sum()) for g, o in counts}
    ch = rep.frame[rep.frame["cluster"] == "CH"].head(DISPUTED["CH"])
    assert all(counts[(g, p)] == 0 for g, p in zip(ch["given_label"], ch["pseudo_label"]))


def test_accepting_every_card_gives_the_audits_final_labels(disputed, rep, tmp_path):
    """Every row of the report accepted in the review (server state, as the `a` key posts)."""
    decisions = tmp_path / "d.csv"
    state = ReviewState(rep, decisions, fingerprint=report_fingerprint(disputed))
    for row in [*state.queue, *state.more]:
        state.decide(int(row), "accept", None)
    out = tmp_path / "final.csv"
    r = invoke("apply", disputed, decisions, "--out", out)
    assert r.exit_code == 0, r.output
    assert "80 decided by a reviewer (80 accept" in r.output
    assert final_csv(out) == audits_labels(rep.frame)
    # a file of bare accept rows (no label) means the same
    bare = tmp_path / "bare.csv"
    bare.write_text("path,decision\n" + "".join(f"{p},accept\n" for p in rep.frame["path"]))
    assert invoke("apply", disputed, bare, "--out", tmp_path / "b.csv").exit_code == 0
    assert final_csv(tmp_path / "b.csv") == audits_labels(rep.frame)


def test_submitting_every_label_studio_pre_annotation_gives_the_audits_final_labels(
    disputed, rep, tmp_path
):
    tasks = export_tasks(rep, document_root=rep.image_root.parent,
                         fingerprint=report_fingerprint(disputed))
    want = audits_labels(rep.frame)
    prefilled = {t["data"]["path"]: t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks}
    assert prefilled == {p: [x] for p, x in want.items()}
    network = dict(zip(rep.frame["path"], rep.frame["pseudo_label"]))
    for t in tasks:
        [pred] = t["predictions"]
        assert t["data"]["suggested_label"] == want[t["data"]["path"]]
        assert t["data"]["network_guess"] == network[t["data"]["path"]]  # evidence, named
        # the annotator submits the pre-annotation unchanged
        t["annotations"] = [{"result": pred["result"], "was_cancelled": False,
                             "updated_at": "2024-01-01T00:00:00Z"}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    r = invoke("apply", disputed, export, "--out", tmp_path / "final.csv")
    assert r.exit_code == 0, r.output
    assert "(80 accept, 0 keep, 0 relabel, 0 drop)" in r.output
    assert final_csv(tmp_path / "final.csv") == want


def test_the_report_page_proposes_the_audits_decision(rep, tmp_path):
    text = write_html_report(rep, tmp_path / "r.html").read_text()
    records = json.loads(re.search(r'<script type="application/json" id="rows">(.*?)</script>',
                                   text, re.S).group(1))
    want = audits_labels(rep.frame)
    assert records and all(r["suggested_label"] == want[r["path"]] for r in records)
    # the network's guess is named as such and never styled as the suggestion
    assert re.search(r'<th data-col="pseudo_label" class="text"[^>]*>network(&#39;|\')s guess</th>', text)
    body = text.split('id="tbody">')[1].split("</tbody>")[0]
    cells = re.findall(r'<tr><td>.*?</tr>', body, re.S)
    col = json.loads(re.search(r'id="columns">(.*?)</script>', text, re.S).group(1))
    k = col.index("pseudo_label")
    for row in cells:
        tds = re.findall(r'<td class="([^"]*)">', row)
        assert "suggested" not in tds[k]  # the first <td> is the thumbnail's, without a class
    unlabeled = text.split('<section id="unlabeled">')[1].split("</section>")[0]
    shown = re.findall(r'<span class="tag">suggested</span><span class="suggested">([^<]*)<', unlabeled)
    flagged = rep.frame[rep.frame["action"] == "unlabel"]
    assert sorted(shown) == sorted(want[p] for p in flagged["path"])


def test_the_manifest_export_names_the_audits_proposal_beside_its_labels(disputed, rep, tmp_path):
    r = invoke("export", disputed, "--out", tmp_path / "all.csv")
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(tmp_path / "all.csv", dtype=str, keep_default_na=False)
    assert dict(zip(rows["path"], rows["suggested_label"])) == audits_labels(rep.frame)
    assert (rows.loc[rows["action"] == "unlabel", "label"] == "").all()  # its label: unchanged


def export_csv(page: str, fill: dict[str, str]) -> str:
    """The page's "Export CSV" as report.js writes it, with ``new_label`` filled for ``fill``."""
    rows = json.loads(re.search(r'id="rows">(.*?)</script>', page, re.S).group(1))
    cols = json.loads(re.search(r'id="columns">(.*?)</script>', page, re.S).group(1))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*cols, "new_label"])
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in cols] + [fill.get(r["path"], "")])
    return buf.getvalue()


def test_apply_reads_the_report_pages_csv_export(disputed, rep, tmp_path):
    page = write_html_report(rep, tmp_path / "r.html").read_text()
    f = rep.frame
    ns, nhr, ch = (f[f["cluster"] == c].iloc[0] for c in ("NS", "NHR", "CH"))
    other = next(c for c in rep.class_names if c not in (ch.given_label, ch.pseudo_label))
    fill = {ns.path: ns.given_label, nhr.path: nhr.pseudo_label, ch.path: other}
    export = tmp_path / "labelclean-selection.csv"
    export.write_text(export_csv(page, fill))
    out = tmp_path / "final.csv"
    r = invoke("apply", disputed, export, "--out", out)
    assert r.exit_code == 0, r.output
    assert "3 decided by a reviewer (1 accept, 1 keep, 1 relabel, 0 drop)" in r.output
    final = final_csv(out)
    assert (final[ns.path], final[nhr.path], final[ch.path]) == (ns.given_label, nhr.pseudo_label, other)
    # the review rewrites its decisions file: it never takes an export for one
    r = invoke("review", disputed, "--decisions", export, "--no-browser")
    assert r.exit_code == 1 and "not a decisions file of the review" in r.output
    assert export.read_text() == export_csv(page, fill)
    bad = tmp_path / "bad.csv"
    bad.write_text(export_csv(page, {ns.path: "dog"}))
    r = invoke("apply", disputed, bad, "--out", tmp_path / "f2.csv")
    assert r.exit_code == 1 and re.search(rf"error: {re.escape(str(bad))} line \d+: label 'dog'", r.output)


def test_apply_reads_label_studio_csv_and_json_min_exports(disputed, rep, tmp_path):
    fp = report_fingerprint(disputed)
    tasks = export_tasks(rep, document_root=rep.image_root.parent, fingerprint=fp)
    a, k, d, none = (t["data"] for t in tasks[:4])
    # Label Studio's CSV export: the data fields, the choices by name, its own columns
    fields = list(a)
    head = [*fields, "label", "review", "annotation_id", "annotator", "created_at", "id",
            "lead_time", "updated_at"]
    chosen = {a["path"]: (a["suggested_label"], ""), k["path"]: (k["given_label"], ""),
              d["path"]: ("", "drop"), none["path"]: ("", "")}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    for n, t in enumerate((a, k, d, none), start=1):
        label, review = chosen[t["path"]]
        writer.writerow([t[x] for x in fields] + [label, review, n, 1, "2024-01-01", n, 3.2, "2024-01-02"])
    export = tmp_path / "project-1-at-2024.csv"
    export.write_text(buf.getvalue())
    got = load_decisions(export, rep, fingerprint=fp).by_path
    assert {p: x.decision for p, x in got.items()} == {a["path"]: "accept", k["path"]: "keep", d["path"]: "drop"}
    r = invoke("apply", disputed, export, "--out", tmp_path / "final.csv")
    assert r.exit_code == 0, r.output
    assert "3 decided by a reviewer (1 accept, 1 keep, 0 relabel, 1 drop)" in r.output
    # made for another report: refused, as for JSON
    export.write_text(buf.getvalue().replace(fp, "f" * 64))
    r = invoke("apply", disputed, export, "--out", tmp_path / "f2.csv")
    assert r.exit_code == 1 and "made for another report" in r.output
    # JSON-MIN with several choices as {"choices": [...]}
    flat = [{"image": a["image"], "label": {"choices": [a["suggested_label"]]}, "review": {"choices": []}}]
    export = tmp_path / "min.json"
    export.write_text(json.dumps(flat))
    assert load_decisions(export, rep, fingerprint=fp).by_path[a["path"]].decision == "accept"


MALFORMED = {
    "result is a number": {"annotations": [{"result": 5}]},
    "value is a list": {"annotations": [{"result": [{"from_name": "label", "type": "choices", "value": ["3"]}]}]},
    "choices is a number": {"annotations": [{"result": [{"from_name": "label", "type": "choices", "value": {"choices": 7}}]}]},
    "drop choices a number": {"annotations": [{"result": [{"from_name": "review", "value": {"choices": 7}}]}]},
    "annotations is a number": {"annotations": 5},
    "an annotation is a number": {"annotations": [5]},
    "JSON-MIN label a number": {"label": 5},
    "JSON-MIN label a list": {"label": ["3"]},
    "JSON-MIN choices a string": {"label": {"choices": "3"}},
    "JSON-MIN review a list": {"review": ["drop"]},
}


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_malformed_label_studio_exports_give_one_error_line(disputed, rep, tmp_path, shape):
    path = rep.frame["path"].iloc[0]
    good = {"data": {"path": path}, "annotations": [
        {"result": [{"from_name": "label", "type": "choices", "value": {"choices": ["3"]}}]}]}
    bad = {"data": {"path": path}, **MALFORMED[shape]}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([good, bad]))
    r = invoke("apply", disputed, export, "--out", tmp_path / "final.csv")
    assert r.exit_code == 1 and not isinstance(r.exception, (TypeError, AttributeError)), r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith(f"error: {export} task 2: ") and len([x for x in lines if x.startswith("error")]) == 1
    assert not (tmp_path / "final.csv").exists()


def test_apply_with_default_options_never_writes_an_empty_label(disputed, rep, tmp_path):
    f = rep.frame
    unlabeled = f[f["action"] == "unlabel"]
    assert len(unlabeled) == 14
    ns = f[f["cluster"] == "NS"].iloc[0]
    decisions = tmp_path / "d.csv"
    decisions.write_text(f"path,decision,label,time\n{ns.path},keep,,\n")  # nobody decided the rest
    out = tmp_path / "final.csv"
    r = invoke("apply", disputed, decisions, "--out", out)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(table) == 80 and (table["label"] != "").all()
    final = dict(zip(table["path"], table["label"]))
    assert all(final[p] == g for p, g in zip(unlabeled["path"], unlabeled["given_label"]))
    assert "14 images the audit unlabeled and nobody decided keep their given label" in r.output
    # --drop-unlabeled leaves them out; --only-reviewed keeps every given label
    r = invoke("apply", disputed, decisions, "--out", tmp_path / "dropped.csv", "--drop-unlabeled")
    assert r.exit_code == 0 and len(final_csv(tmp_path / "dropped.csv")) == 80 - 14
    assert "14 images the audit unlabeled and nobody decided left out" in r.output
    r = invoke("apply", disputed, decisions, "--out", tmp_path / "given.parquet", "--only-reviewed")
    assert r.exit_code == 0 and pd.read_parquet(tmp_path / "given.parquet")["label"].notna().all()
    help_text = " ".join(invoke("apply", "--help").output.replace("│", " ").split())
    assert "keeps its given label by default" in help_text and "--drop-unlabeled leaves" in help_text


def test_an_older_accept_row_keeps_the_label_it_took(disputed, rep, tmp_path, caplog):
    """Up to 0.1.0 `accept` took the network's guess; the row names it, so it stays that."""
    ch = rep.frame[(rep.frame["cluster"] == "CH") & (rep.frame["pseudo_label"] != rep.frame["given_label"])].iloc[0]
    old = tmp_path / "old.csv"
    old.write_text(f"path,decision,label,time\n{ch.path},accept,{ch.pseudo_label},t\n")
    got = load_decisions(old, rep, fingerprint=report_fingerprint(disputed)).by_path[ch.path]
    assert (got.decision, got.label) == ("relabel", ch.pseudo_label)
    assert "1 accept row(s) name a label that is not the audit's suggestion" in caplog.text
    r = invoke("apply", disputed, old, "--out", tmp_path / "final.csv")
    assert r.exit_code == 0 and final_csv(tmp_path / "final.csv")[ch.path] == ch.pseudo_label


def test_label_studio_export_only_flagged_with_votes_and_images_that_fit(disputed, rep, tmp_path):
    out = tmp_path / "tasks.json"
    r = invoke("export", disputed, "--format", "label-studio", "--out", out, "--only-flagged")
    assert r.exit_code == 0, r.output
    tasks = json.loads(out.read_text())
    flagged = rep.frame[rep.frame["action"] != "keep"]
    assert sorted(t["data"]["path"] for t in tasks) == sorted(flagged["path"])
    assert "(the flagged images)" in r.output
    image = ET.fromstring((tmp_path / "tasks.label-config.xml").read_text()).find("Image")
    assert image.get("maxHeight") == "60vh" and image.get("maxWidth") == "100%"
    assert ET.fromstring(label_config(["a"])).find("Image").get("value") == "$image"
    r = invoke("export", disputed, "--out", tmp_path / "m.csv", "--only-flagged")
    assert r.exit_code == 1 and "--only-flagged is for --format label-studio" in r.output
    # a crowd report's tasks carry its votes
    from test_crowd_html import _crowd_report

    crowd = read_report(_crowd_report(tmp_path / "crowd"))
    tasks = export_tasks(crowd, document_root=crowd.image_root.parent, fingerprint="0" * 64)
    by_path = {t["data"]["path"]: t["data"] for t in tasks}
    assert by_path["img/4.png"]["votes"] == "ann:dog bob:dog cy:fox"
    assert by_path["img/4.png"]["tally"] == "dog 2, fox 1" and "crowd: dog 2, fox 1" in by_path["img/4.png"]["info"]
    assert 0 < by_path["img/4.png"]["agreement"] < 1
