"""The review's queue in the order of value, and its bulk endpoint (one write, all or nothing).

Through the server, as the page sees it: ``/api/rows`` gives the order, ``/api/decisions``
records a bulk. The reports are the digits report with kept labels the network disputes
(``disputed_report``) and a crowd report whose crowd split on kept images.
"""

import errno
import json
import os
import threading

import numpy as np
import pandas as pd
import pytest
from test_review_server import decide, request
from test_review_suggestion import disputed_report

from labelclean.report.parquet import read_report
from labelclean.review.decisions import load_decisions, report_fingerprint
from labelclean.review.server import TOKEN_HEADER, ReviewServer
from labelclean.review.state import ReviewState


def serve(report, decisions):
    state = ReviewState(read_report(report), decisions, fingerprint=report_fingerprint(report))
    server = ReviewServer(state, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def served(tmp_path):
    report = disputed_report(tmp_path)
    server = serve(report, tmp_path / "report.decisions.csv")
    yield server, report
    server.shutdown()
    server.server_close()


def bulk(server, items, **headers):
    port = server.server_address[1]
    h = {"Content-Type": "application/json", TOKEN_HEADER: server.token, "Origin": f"http://127.0.0.1:{port}"}
    h.update(headers)
    body = json.dumps({"decisions": items}).encode()
    status, _, data = request(server, "POST", "/api/decisions", headers=h, body=body)
    return status, json.loads(data)


def rows(server, part="queue"):
    return json.loads(request(server, "GET", f"/api/rows?part={part}")[2])


def disputed(f: pd.DataFrame) -> pd.Series:
    """Kept, and the network's guess is another class or the crowd split (the queue's rule)."""
    out = f["pseudo_label"] != f["given_label"]
    if "agreement" in f.columns:
        out |= (f["n_votes"] > 0) & (f["agreement"] < 1)
    return (f["action"] == "keep") & out


def test_the_queue_is_flagged_then_disputed_kept_then_the_rest_most_doubtful_first(served):
    server, report = served
    f = read_report(report).frame
    queue, more = rows(server), rows(server, "more")
    q = f.iloc[queue["id"]]
    flagged = q["action"].isin(["relabel", "unlabel"]).to_numpy()
    contested = disputed(q).to_numpy()
    n_flagged = int(flagged.sum())
    assert n_flagged == int(f["action"].isin(["relabel", "unlabel"]).sum()) == 26
    assert flagged[:n_flagged].all()  # every flagged image first
    n_disputed = int(disputed(f).sum())
    assert n_disputed == 9  # 6 CH and 3 CS rows the network disputes: all in the queue, next
    assert contested[n_flagged : n_flagged + n_disputed].all()
    assert not (flagged | contested)[n_flagged + n_disputed :].any()  # then the rest
    assert queue["part"] == [0] * n_flagged + [1] * n_disputed + [2] * (len(q) - n_flagged - n_disputed)
    # within each part the given label most likely wrong first: the lowest confidence in it
    for lo, hi in ((0, n_flagged), (n_flagged, n_flagged + n_disputed), (n_flagged + n_disputed, len(q))):
        conf = q["conf_given"].to_numpy()[lo:hi]
        assert (np.diff(conf) >= 0).all(), (lo, hi)
    # on demand: the kept, undisputed CS images only; together every image once
    m = f.iloc[more["id"]]
    assert (m["cluster"] == "CS").all() and not disputed(m).any() and len(m) == 37
    assert sorted(queue["id"] + more["id"]) == list(range(len(f)))


def test_a_crowd_split_puts_a_kept_image_before_the_undisputed_ones(tmp_path):
    """A clean, confident image (CS, network agrees) the crowd split on leaves the on-demand part."""
    import pyarrow as pa
    from test_crowd_html import _crowd_report

    from labelclean.report.parquet import CROWD_SCHEMA, write_report

    path = _crowd_report(tmp_path)
    rep = read_report(path)
    f = rep.frame.copy()
    assert f.loc[0, ["action", "cluster", "pseudo_label"]].tolist() == ["keep", "CS", f.loc[0, "given_label"]]
    f.loc[0, "agreement"] = 2 / 3
    f["admitted_epoch"] = f["admitted_epoch"].astype(object).where(f["admitted_epoch"].notna(), None)
    table = pa.Table.from_pandas(f[[x.name for x in CROWD_SCHEMA]], schema=CROWD_SCHEMA, preserve_index=False)
    report = write_report(path, table, rep.metadata, overwrite=True)
    server = serve(report, tmp_path / "d.csv")
    try:
        got, more = rows(server), rows(server, "more")
    finally:
        server.shutdown()
        server.server_close()
    q = f.iloc[got["id"]]
    assert q["action"].tolist()[:2] == ["relabel", "relabel"] and got["part"] == [0, 0, 1, 1, 2]
    # the split CS image, right after the flagged; then the one the network disputes (the
    # crowd agreed on it: less doubt), then the rest
    assert got["id"][2:] == [0, 2, 3] and more["id"] == []


def test_a_bulk_is_one_write_of_every_decision(served, monkeypatch):
    import labelclean.review.decisions as decisions_module

    server, report = served
    dec = server.state.path
    ids = rows(server)["id"][:25]
    writes = []
    real = decisions_module.atomic_write_text
    monkeypatch.setattr(decisions_module, "atomic_write_text", lambda *a, **k: writes.append(1) or real(*a, **k))
    items = [{"id": i, "decision": "accept"} for i in ids[:20]]
    items += [{"id": ids[20], "decision": "relabel", "label": "7"}, {"id": ids[21], "decision": "drop"}]
    items += [{"id": ids[0], "decision": "keep"}]  # named twice: the last word wins
    status, body = bulk(server, items)
    assert status == 200, body
    assert len(writes) == 1  # one locked read-merge-write for the whole bulk
    assert body["decided"] == 22 and body["decisions"][str(ids[0])]["decision"] == "keep"
    got = load_decisions(dec, read_report(report), fingerprint=report_fingerprint(report)).by_path
    paths = server.state.paths
    assert len(got) == 22 and got[paths[ids[0]]].decision == "keep"
    assert got[paths[ids[20]]].label == "7" and got[paths[ids[21]]].decision == "drop"
    text = dec.read_text()
    assert all(text.count(f"{paths[i]},") == 1 for i in ids[:22])  # one row per image
    # forgetting in bulk (an undo): the rows go, and the others stay as written
    status, body = bulk(server, [{"id": i, "decision": None} for i in ids[:10]])
    assert status == 200 and body["decided"] == 12
    assert all(f"{paths[i]}," not in dec.read_text() for i in ids[:10])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": 10**6, "decision": "accept"}, "decision 3 of 4: id must be a row of the report"),
        ({"id": 1, "decision": "maybe"}, "decision 3 of 4: decision must be one of"),
        ({"id": 1, "decision": "relabel", "label": "no such class"}, "decision 3 of 4: label 'no such class'"),
        ({"id": 1, "decision": "relabel"}, "decision 3 of 4: relabel needs a label"),
    ],
)
def test_a_bad_row_refuses_the_whole_bulk(served, bad, message):
    server, _ = served
    assert decide(server, {"id": 0, "decision": "keep"})[0] == 200
    before = server.state.path.read_bytes()
    items = [{"id": 2, "decision": "accept"}, {"id": 3, "decision": "drop"}, bad, {"id": 4, "decision": "keep"}]
    status, body = bulk(server, items)
    assert status == 400 and message in body["error"], body
    assert server.state.path.read_bytes() == before  # nothing of it was written
    assert len(server.state.decisions) == 1


def test_a_full_disk_refuses_the_whole_bulk(served, monkeypatch):
    server, _ = served
    assert decide(server, {"id": 0, "decision": "keep"})[0] == 200
    before = server.state.path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    status, body = bulk(server, [{"id": i, "decision": "accept"} for i in range(1, 30)])
    monkeypatch.undo()
    assert status == 500 and "no space left on the device" in body["error"], body
    assert server.state.path.read_bytes() == before
    assert len(server.state.decisions) == 1
    assert not [p for p in server.state.path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "body", [{"decisions": []}, {"decisions": {"id": 1}}, [{"id": 1, "decision": "keep"}], {"id": 1}]
)
def test_a_bulk_that_is_not_a_list_of_decisions_is_a_bad_request(served, body):
    server, _ = served
    port = server.server_address[1]
    h = {"Content-Type": "application/json", TOKEN_HEADER: server.token, "Origin": f"http://127.0.0.1:{port}"}
    status, _, data = request(server, "POST", "/api/decisions", headers=h, body=json.dumps(body).encode())
    assert status == 400 and 'must be {"decisions": [' in json.loads(data)["error"]
    assert not server.state.path.exists()


def test_a_bulk_needs_the_token_and_json_like_a_decision(served):
    server, _ = served
    assert bulk(server, [{"id": 1, "decision": "keep"}], **{TOKEN_HEADER: "wrong"})[0] == 403
    assert bulk(server, [{"id": 1, "decision": "keep"}], Origin="http://evil.example")[0] == 403
    port = server.server_address[1]
    h = {"Content-Type": "text/plain", TOKEN_HEADER: server.token}
    assert request(server, "POST", "/api/decisions", headers=h, body=b"{}")[0] == 415
    assert not server.state.path.exists()
    # a large bulk fits (every image of a big queue in one request)
    items = [{"id": i % 80, "decision": "keep"} for i in range(5000)]
    assert bulk(server, items)[0] == 200 and port


def test_a_bulk_keeps_hand_edits_and_notes_while_it_removes_and_adds_rows(served):
    """Forgetting removes rows mid-file while the same bulk rewrites rows after them."""
    server, report = served
    dec = server.state.path
    fp = report_fingerprint(report)
    dec.write_text(
        f"# labelclean decisions for report.parquet sha256={fp}\r\n"
        "path,decision,label,time,note\r\n"
        "d001.png,keep,,t,\r\n"
        "d002.png,drop,,t,blurry\r\n"
        "# a comment\r\n"
        "d003.png,keep,,t,\r\n"
        "d004.png,keep,,t,ask Ann"
    )
    row = server.state.row_of
    changes = [(row["d001.png"], None, None), (row["d002.png"], None, None),
               (row["d003.png"], "relabel", "7"), (row["d005.png"], "drop", None),
               (row["d001.png"], "drop", None), (row["d004.png"], "relabel", "8")]
    server.state.decide_many(changes)
    lines = dec.read_text().splitlines()
    assert lines[1:] == [
        "path,decision,label,time,note",
        "d002.png,,,,blurry",  # its decision forgotten, the note kept
        "# a comment",
        f"d003.png,relabel,7,{lines[4].split(',')[3]}",  # trailing empty cells cut
        f"d004.png,relabel,8,{lines[5].split(',')[3]},ask Ann",
        f"d005.png,drop,,{lines[6].split(',')[3]}",
        f"d001.png,drop,,{lines[7].split(',')[3]}",
    ]
    got = load_decisions(dec, read_report(report), fingerprint=fp).by_path
    assert {p: d.decision for p, d in got.items()} == {
        "d003.png": "relabel", "d004.png": "relabel", "d005.png": "drop", "d001.png": "drop"}
