"""A hostile user's probe of the review round trips: the report page's CSV with cells escaped
for spreadsheets, class names a truth file or a hand edit spells otherwise, a decisions file
edited, linked or swapped while the review runs, a token header no ASCII compare takes."""

import http.client
import json
import os

import pandas as pd
import pytest
from test_report_html import make_digits_report
from typer.testing import CliRunner

from labelclean._csv import escape_cell, frame_to_csv
from labelclean.cli import app
from labelclean.evaluate import read_truth
from labelclean.report.parquet import read_report
from labelclean.review.decisions import load_decisions, report_fingerprint
from labelclean.review.server import TOKEN_HEADER, ReviewServer
from labelclean.review.state import ReviewState

runner = CliRunner()
#: Class names a spreadsheet would run, or that lose their spaces to a careless reader.
ODD = ["=1+1", "'quoted", "-1", "+x", "@x", "\ttab", "cat ", "-", "=HYPERLINK(\"x\")", "nine"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """The digits report with formula-like class names and an image named ``=cmd.png``."""
    return make_digits_report(tmp_path_factory.mktemp("odd"), class_names=ODD, odd_path="=cmd.png")


@pytest.fixture
def digits(tmp_path):
    return make_digits_report(tmp_path)


def serve(report, decisions=None):
    state = ReviewState(read_report(report), decisions or report.with_suffix(".decisions.csv"),
                        fingerprint=report_fingerprint(report))
    server = ReviewServer(state, "127.0.0.1", 0)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def post(server, row, decision, label=None, token=None):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"id": row, "decision": decision, "label": label})
    conn.request("POST", "/api/decision", body=body, headers={
        "Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
        TOKEN_HEADER: server.token if token is None else token})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data)


def stop(server):
    server.shutdown()
    server.server_close()


def test_apply_unescapes_the_report_pages_csv_export(odd, tmp_path):
    """report.js escapes every text cell as labelclean's CSVs do; apply must undo it."""
    rep = read_report(odd)
    f = rep.frame
    row1 = f.iloc[1]  # given "'quoted"
    export = tmp_path / "labelclean-selection.csv"
    lines = ["path,given_label,clean_label,action,new_label"]
    for path, given, new in (("=cmd.png", ODD[0], "'quoted"), (row1.path, row1.given_label, "@x")):
        cells = [path, given, given, "keep", new]
        lines.append(",".join(escape_cell(c) for c in cells))  # as report.js writes them
    export.write_text("\n".join(lines) + "\n")
    out = tmp_path / "final.csv"
    r = invoke("apply", odd, export, "--out", out)
    assert r.exit_code == 0, r.output
    assert "2 decided by a reviewer (0 accept, 0 keep, 2 relabel, 0 drop)" in r.output
    final = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert "'=cmd.png" in final["path"].tolist()  # apply's own output is escaped again
    got = load_decisions(export, rep, fingerprint=report_fingerprint(odd)).by_path
    assert {p: d.label for p, d in got.items()} == {"=cmd.png": "'quoted", row1.path: "@x"}


def test_evaluate_reads_truth_labels_as_the_report_spells_them(odd, tmp_path):
    """A tab-led class or one with a trailing space round-trips export -> evaluate."""
    rep = read_report(odd)
    truth = tmp_path / "truth.csv"
    frame_to_csv(pd.DataFrame({"path": rep.frame["path"], "label": rep.frame["given_label"]}), truth)
    r = invoke("evaluate", odd, "--truth", truth)
    assert r.exit_code == 0, r.output
    got = read_truth(truth, rep.frame, class_names=rep.class_names)
    assert list(got) == rep.frame["given_label"].tolist()
    # typed by hand: no trailing space, no tab; still the report's class, since only one fits
    hand = tmp_path / "hand.csv"
    frame_to_csv(pd.DataFrame({"path": rep.frame["path"], "label": rep.frame["given_label"].str.strip()}), hand)
    assert list(read_truth(hand, rep.frame, class_names=rep.class_names)) == rep.frame["given_label"].tolist()


def test_a_spelling_normalize_labels_merged_names_the_merged_class(tmp_path):
    """After --normalize-labels merged Cat into cat, a truth or decisions file saying Cat means cat."""
    report = make_digits_report(tmp_path, class_names=["cat", *map(str, range(1, 10))])
    rep, fp = read_report(report), report_fingerprint(report)
    f = rep.frame
    row = f.index[(f["given_label"] != "cat") & (f["cluster"] == "CS")][0]
    dec = tmp_path / "d.csv"
    dec.write_text(f"path,decision,label\n{f.loc[row, 'path']},relabel,Cat\n")
    assert load_decisions(dec, rep, fingerprint=fp).by_path[f.loc[row, "path"]].label == "cat"
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"path": f["path"], "label": f["given_label"].replace("cat", "Cat")}).to_csv(truth, index=False)
    assert set(read_truth(truth, f, class_names=rep.class_names)) == set(f["given_label"])


def test_a_token_header_no_ascii_compare_takes_is_a_403(digits, capfd):
    server = serve(digits)
    try:
        status, body = post(server, 0, "keep", token="é" + server.token)
        assert status == 403 and "token" in body["error"].lower()
        assert post(server, 0, "keep")[0] == 200  # still serving
    finally:
        stop(server)
    assert "Traceback" not in capfd.readouterr().err


def test_a_hand_edit_with_an_open_quote_is_refused_and_not_written_over(digits):
    """A row whose quote never closes would swallow the row the review appends after it."""
    dec = digits.with_suffix(".decisions.csv")
    server = serve(digits)
    try:
        assert post(server, 0, "keep")[0] == 200
        with open(dec, "a", newline="") as fh:
            fh.write('d002.png,"keep\r\n')
        before = dec.read_bytes()
        status, body = post(server, 3, "keep")
        assert status == 400 and "never closed" in body["error"] and "line 4" in body["error"], body
        assert dec.read_bytes() == before  # nothing written: the edit can still be fixed
    finally:
        stop(server)
    r = invoke("apply", digits, dec, "--out", digits.parent / "final.csv")
    assert r.exit_code == 1 and "line 4: a quoted cell is never closed" in r.output, r.output


def test_a_decisions_file_that_is_a_link_is_written_through(digits, tmp_path):
    """The link stays the user's; the file it names gets every decision."""
    real = tmp_path / "synced" / "decisions.csv"
    real.parent.mkdir()
    real.write_text("path,decision,label,time,note\nd005.png,drop,,,blurry\n")
    link = digits.parent / "link.decisions.csv"
    link.symlink_to(real)
    server = serve(digits, link)
    try:
        assert post(server, 0, "keep")[0] == 200
    finally:
        stop(server)
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    got = load_decisions(real, read_report(digits), fingerprint=report_fingerprint(digits)).by_path
    assert {p: d.decision for p, d in got.items()} == {"d005.png": "drop", "d000.png": "keep"}
    assert "blurry" in real.read_text()


def test_a_fifo_given_as_decisions_is_named_for_what_it_is(digits):
    fifo = digits.parent / "decisions.csv"
    os.mkfifo(fifo)
    r = invoke("apply", digits, fifo, "--out", digits.parent / "final.csv")
    assert r.exit_code == 1 and "not a regular file" in r.output, r.output


def test_drop_unlabeled_is_not_ignored_with_only_reviewed(digits, tmp_path):
    rep = read_report(digits)
    unlabeled = set(rep.frame.loc[rep.frame["clean_label"].isna(), "path"])
    assert unlabeled
    dec = tmp_path / "none.csv"
    dec.write_text("path,decision,label,time\n")
    out = tmp_path / "final.csv"
    r = invoke("apply", digits, dec, "--out", out, "--only-reviewed", "--drop-unlabeled")
    assert r.exit_code == 0, r.output
    final = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(final) == len(rep.frame) - len(unlabeled) and not unlabeled & set(final["path"])
    kept = rep.frame[rep.frame["clean_label"].notna()]
    assert final["label"].tolist() == kept["given_label"].tolist()  # the given ones, as asked
    assert f"{len(unlabeled)} images the audit unlabeled and nobody decided left out" in r.output


def test_apply_with_no_decisions_relies_on_no_deprecated_pandas_fill(digits):
    """An empty decisions file maps to an all-NaN float column; pandas 4 refuses "" there."""
    import warnings

    from labelclean.review.apply import apply_decisions

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        table, summary = apply_decisions(read_report(digits), {})
    assert len(table) == summary.n_written == 80 and table["label"].notna().all()


@pytest.mark.parametrize("fmt, flag", [
    ("label-studio", ["--drop-unlabeled"]), ("label-studio", ["--absolute-paths"]),
    ("manifest", ["--document-root", "."]),
])
def test_export_refuses_an_option_of_the_other_format(digits, fmt, flag):
    """Each would be silently ignored: tasks written for every image, relative URLs."""
    out = digits.parent / ("t.json" if fmt == "label-studio" else "m.csv")
    r = invoke("export", digits, "--format", fmt, *flag, "--out", out)
    assert r.exit_code == 1 and f"error: {flag[0]} is not an option of --format {fmt}" in r.output
    assert not out.exists()


@pytest.mark.parametrize("sep, name", [(";", "';'"), ("\t", "tabs")])
def test_a_decisions_file_saved_with_another_separator_says_so(digits, sep, name):
    """A spreadsheet in a ';' locale saves the page's export or a decisions file so."""
    for header in ("path,decision,label,time", "path,given_label,new_label"):
        dec = digits.parent / "semi.csv"
        dec.write_text(header.replace(",", sep) + "\n" + sep.join(["d001.png", "keep", "1"]) + "\n")
        r = invoke("apply", digits, dec, "--out", digits.parent / "final.csv")
        assert r.exit_code == 1 and f"looks separated by {name}; decisions are comma-separated" in r.output, r.output


def test_a_decompression_bomb_swapped_in_is_not_decoded_for_a_thumbnail(digits):
    """A 12,000 x 12,000 PNG of 600 KB: shrinking it took 550 MB; now refused from its header."""
    from PIL import Image

    Image.new("L", (12_000, 12_000)).save(digits.parent / "images" / "d000.png", compress_level=1)
    state = ReviewState(read_report(digits), digits.with_suffix(".decisions.csv"),
                        fingerprint=report_fingerprint(digits))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert state.thumbnail(0) is None and "144000000 pixels" in state.thumbs.missing["d000.png"]
    assert not caught  # a refusal, not a warning on the terminal
    assert state.thumbnail(1) is not None


@pytest.mark.parametrize("tail, needle", [
    ('d001.png,1,"7\nd002.png,2,8\n', "line 2: a quoted cell is never closed"),
    ("d001.png,1," + "x" * 200_000 + "\n", "field larger than field limit"),
])
def test_a_broken_page_export_is_one_error_line(digits, tail, needle):
    """An open quote would take the later rows (and their decisions); a huge cell raised."""
    export = digits.parent / "selection.csv"
    export.write_text("path,given_label,new_label\n" + tail)
    for command in (["apply", digits, export, "--out", digits.parent / "f.csv"],
                    ["review", digits, "--decisions", export, "--no-browser"]):
        r = invoke(*command)
        assert r.exit_code == 1 and r.output.startswith(f"error: {export}: not a readable CSV"), r.output
        assert needle in r.output and isinstance(r.exception, SystemExit)  # no traceback


def test_a_link_swapped_in_for_the_decisions_file_is_not_followed(digits, tmp_path):
    """Resolved when the review starts; a link put there later must not redirect the write."""
    dec = digits.with_suffix(".decisions.csv")
    server = serve(digits)
    try:
        assert post(server, 0, "keep")[0] == 200
        victim = tmp_path / "victim.csv"
        victim.write_bytes(dec.read_bytes())  # a file that reads as this report's decisions
        dec.unlink()
        dec.symlink_to(victim)
        assert post(server, 3, "keep")[0] == 200
    finally:
        stop(server)
    assert "d003.png" not in victim.read_text() and not dec.is_symlink()


def test_the_report_given_as_its_own_decisions_is_named_so(digits):
    r = invoke("apply", digits, digits, "--out", digits.parent / "final.csv")
    assert r.exit_code == 1 and "a Parquet file (a report?), not decisions" in r.output, r.output


def test_a_fifo_given_as_the_report_is_not_called_a_directory(tmp_path):
    from labelclean.errors import ReportError

    os.mkfifo(tmp_path / "report.parquet")
    with pytest.raises(ReportError, match="is not a regular file"):
        read_report(tmp_path / "report.parquet")


def test_a_fifo_or_folder_given_as_truth_or_labels_is_named_for_what_it_is(digits, tmp_path):
    os.mkfifo(tmp_path / "fifo.csv")
    for given, needle in ((tmp_path / "fifo.csv", "not a regular file (a FIFO or a device)"), (tmp_path, "a folder")):
        r = invoke("evaluate", digits, "--truth", given)
        assert r.exit_code == 1 and f"{needle}; expected a truth file" in r.output, r.output
        r = invoke("check", digits.parent / "images", given)
        assert r.exit_code == 1 and f"{needle}; expected a labels file" in r.output, r.output


def test_a_relabel_into_a_file_without_a_label_column_names_the_file(digits):
    dec = digits.with_suffix(".decisions.csv")
    dec.write_text("path,decision\nd001.png,keep\n")
    before = dec.read_bytes()
    server = serve(digits)
    try:
        status, body = post(server, 0, "relabel", "7" if read_report(digits).frame.loc[0, "given_label"] != "7" else "8")
        assert status == 400 and body["error"].startswith(f"{dec}: no label column"), body
    finally:
        stop(server)
    assert dec.read_bytes() == before
