"""The review's second hardening round (issue 38): decisions that cannot be lost, a server only
its user can read, names that round-trip. Each test reproduces one case of the issue."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pandas as pd
import pytest
from test_report_html import make_digits_report
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.errors import ConfigError
from labelclean.report.parquet import read_report
from labelclean.review.decisions import load_decisions, report_fingerprint
from labelclean.review.server import TOKEN_HEADER, ReviewServer
from labelclean.review.state import ReviewState

runner = CliRunner()


def serve(report, decisions=None, host="127.0.0.1"):
    state = ReviewState(read_report(report), decisions or report.with_suffix(".decisions.csv"),
                        fingerprint=report_fingerprint(report))
    server = ReviewServer(state, host, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(*servers):
    for s in servers:
        s.shutdown()
        s.server_close()


def call(server, method, path, *, token=True, headers=None, body=None):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    if token:
        h[TOKEN_HEADER] = server.token
    if body is not None:
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp, data


def decide(server, row, decision, label=None):
    body = json.dumps({"id": row, "decision": decision, "label": label}).encode()
    status, _, data = call(server, "POST", "/api/decision", body=body)
    assert status == 200, data
    return json.loads(data)


@pytest.fixture
def digits(tmp_path):
    return make_digits_report(tmp_path)


# -- 1: an image whose path starts with '#' --------------------------------------------------
def test_a_path_starting_with_hash_keeps_its_decision(tmp_path):
    report = make_digits_report(tmp_path, odd_path="#0.png")
    rep, fp = read_report(report), report_fingerprint(report)
    dec = report.with_suffix(".decisions.csv")
    server = serve(report)
    try:
        decide(server, 0, "drop")  # row 0 is "#0.png"
    finally:
        stop(server)
    server = serve(report)  # a restart reads it back, and its next save must not delete it
    try:
        assert decide(server, 1, "keep")["decided"] == 2
    finally:
        stop(server)
    assert {p: d.decision for p, d in load_decisions(dec, rep, fingerprint=fp).by_path.items()} == {
        "#0.png": "drop", "d001.png": "keep"}
    out = tmp_path / "final.csv"
    r = runner.invoke(app, ["apply", str(report), str(dec), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "#0.png" not in set(pd.read_csv(out, dtype=str)["path"])  # dropped, not ignored
    assert '"#0.png",drop,' in dec.read_text()  # quoted: no reader takes it for a comment
    # older files wrote the path unquoted: still a row, as its path is an image; a comment
    # after the header (no image of that name) stays a comment
    old = tmp_path / "old.csv"
    old.write_text("path,decision,label,time\n#0.png,drop,,\n# checked up to here\nd001.png,keep,,\n")
    got = load_decisions(old, rep, fingerprint=fp).by_path
    assert sorted(got) == ["#0.png", "d001.png"] and got["#0.png"].decision == "drop"


# -- 2: two servers (or tabs) on one decisions file -------------------------------------------
def test_two_servers_on_one_file_lose_no_decision(digits, capfd):
    dec = digits.with_suffix(".decisions.csv")
    a, b = serve(digits), serve(digits)
    try:
        decide(a, 1, "keep")
        assert decide(b, 2, "drop")["decided"] == 2  # b learns a's decision from the file
        decide(a, 3, "keep")
        errors = []

        def many(server, rows):
            try:
                for r in rows:
                    decide(server, r, "drop")
            except AssertionError as err:  # pragma: no cover - shown below
                errors.append(err)

        threads = [threading.Thread(target=many, args=(s, range(k, 40, 2))) for k, s in ((10, a), (11, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(json.loads(call(b, "GET", "/api/rows?part=more")[2])["decisions"]) == 33
    finally:
        stop(a, b)
    got = load_decisions(dec, read_report(digits), fingerprint=report_fingerprint(digits)).by_path
    assert len(got) == 3 + 30
    assert [got[f"d{i:03d}.png"].decision for i in (1, 2, 3)] == ["keep", "drop", "keep"]


def test_a_second_review_of_a_report_is_warned_about(digits):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "labelclean", "review", str(digits), "--no-browser"]
    procs = []
    try:
        for _ in range(2):
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            procs.append(p)
            assert p.stdout.readline().startswith("serving at http://127.0.0.1:")
    finally:
        errs = []
        for p in procs:
            p.send_signal(signal.SIGTERM)
            errs.append(p.communicate(timeout=30)[1])
    assert "another `labelclean review` is serving" not in errs[0]
    assert "another `labelclean review` is serving" in errs[1]


# -- 4: hand edits: other columns and comments are kept -------------------------------------
def test_hand_edited_columns_and_comments_survive_the_review(digits):
    rep, fp = read_report(digits), report_fingerprint(digits)
    g1 = rep.frame.loc[1, "given_label"]
    dec = digits.with_suffix(".decisions.csv")
    dec.write_text(
        f"# labelclean decisions for report.parquet sha256={fp}\n"
        "path,decision,label,time,note\n"
        "# reviewed by Ann, 2024-05-01\n"
        f"d001.png,keep,{g1},t1,blurry: ask Bob\n"
        "d004.png,drop,,t2,\n"
    )
    server = serve(digits, dec)
    try:
        decide(server, 5, "keep")
        decide(server, 1, "drop")  # re-decided: its row keeps the note
        decide(server, 4, None)  # undecided: a row without a note goes
        decide(server, 2, "keep")
        decide(server, 2, None)
    finally:
        stop(server)
    lines = dec.read_text().splitlines()
    assert lines[1:4] == ["path,decision,label,time,note", "# reviewed by Ann, 2024-05-01",
                          lines[3]] and lines[3].startswith("d001.png,drop,,") and lines[3].endswith(",blurry: ask Bob")
    assert not any(x.startswith(("d004.png", "d002.png")) for x in lines)
    got = load_decisions(dec, rep, fingerprint=fp).by_path
    assert {p: d.decision for p, d in got.items()} == {"d005.png": "keep", "d001.png": "drop"}
    # undecided with a note: the note stays, the decision goes (an empty decision decides nothing)
    server = serve(digits, dec)
    try:
        assert decide(server, 1, None)["decided"] == 1
    finally:
        stop(server)
    assert "d001.png,,,,blurry: ask Bob" in dec.read_text().splitlines()
    assert list(load_decisions(dec, rep, fingerprint=fp).by_path) == ["d005.png"]
    # a hand edit that breaks the file while a server runs: the decision is refused, the
    # file left as the user wrote it
    server = serve(digits, dec)
    try:
        dec.write_text(dec.read_text() + "nope.png,keep,,\n")
        before = dec.read_text()
        body = json.dumps({"id": 6, "decision": "keep"}).encode()
        status, _, data = call(server, "POST", "/api/decision", body=body)
        assert status == 400 and b"path 'nope.png' is not an image" in data
        assert dec.read_text() == before
    finally:
        stop(server)


# -- 5: the server binds only loopback addresses, however spelled -----------------------------
@pytest.mark.parametrize("host", ["0", "::0", "0:0:0:0:0:0:0:0", "000.000.000.000", "0.0.0.0", "[::]", "",
                                  "10.1.2.3", "8.8.8.8", "example.com", "::ffff:0.0.0.0"])
def test_wildcards_and_other_addresses_are_refused_however_spelled(digits, host):
    state = ReviewState(read_report(digits), digits.with_suffix(".csv"), fingerprint="0" * 64)
    with pytest.raises(ConfigError, match="wildcard|not a loopback|name a loopback"):
        ReviewServer(state, host, 0).server_close()
    r = runner.invoke(app, ["review", str(digits), "--no-browser", "--host", host])
    assert r.exit_code == 1 and r.output.startswith("error: --host"), r.output


def test_a_loopback_spelled_oddly_prints_an_address_that_answers(digits):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "labelclean", "review", str(digits), "--no-browser",
                             "--host", "127.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = urlsplit(proc.stdout.readline().split()[-1])
        assert url.hostname == "127.0.0.1", url
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", f"/?{url.query}")
        assert conn.getresponse().status == 303
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


# -- 6: every request needs the token or its cookie; images are not followed out -------------
def test_every_request_needs_the_session_token_or_its_cookie(digits):
    server = serve(digits)
    try:
        for path in ("/", "/api/rows?part=queue", "/image/0", "/thumb/0", "/api/trace/0", "/assets/review.js"):
            status, _, body = call(server, "GET", path, token=False)
            assert status == 403 and server.token.encode() not in body, path
            bad = {"Cookie": f"labelclean-review-{server.server_address[1]}=guess"}
            assert call(server, "GET", path, token=False, headers=bad)[0] == 403, path
        assert call(server, "GET", "/?token=guess", token=False)[0] == 403
        status, resp, _ = call(server, "GET", f"/?token={server.token}", token=False)
        assert status == 303 and resp.getheader("Location") == "/"
        cookie = resp.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        status, _, page = call(server, "GET", "/", token=False, headers=jar)
        assert status == 200 and b"labelclean review" in page
        assert call(server, "GET", "/image/0", token=False, headers=jar)[0] == 200
    finally:
        stop(server)


def test_images_swapped_for_links_or_fifos_are_not_served(digits, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me")
    images = digits.parent / "images"
    server = serve(digits)
    try:
        assert call(server, "GET", "/image/2")[0] == 200
        for name, make in (("d000.png", lambda p: p.symlink_to(secret)),
                           ("d001.png", lambda p: p.symlink_to(images / "d003.png")),
                           ("d002.png", lambda p: os.mkfifo(p))):
            (images / name).unlink()
            make(images / name)
        for row in (0, 2):  # after the server started: still refused
            for kind in ("image", "thumb"):
                status, _, body = call(server, "GET", f"/{kind}/{row}")
                assert status == 404 and b"do not serve" not in body, (kind, row)
        # a link that stays inside the image folder is followed, as the audit follows it
        assert call(server, "GET", "/image/1")[2] == (images / "d003.png").read_bytes()
        assert call(server, "GET", "/image/3")[0] == 200
    finally:
        stop(server)


def test_a_folder_swapped_for_a_link_is_not_followed_out(digits, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes((digits.parent / "images" / "d000.png").read_bytes())
    (digits.parent / "images" / "sub").symlink_to(outside)
    server = serve(digits)
    try:
        server.state.paths[0] = "sub/x.png"  # as if the report named an image in a sub-folder
        assert call(server, "GET", "/image/0")[0] == 404
        assert call(server, "GET", "/image/1")[0] == 200
    finally:
        stop(server)


@pytest.mark.parametrize("host, canonical", [
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), (" localhost ", "127.0.0.1"),
    ("LOCALHOST", "127.0.0.1"), ("[::1]", "::1"), ("0:0:0:0:0:0:0:1", "::1"), ("::ffff:127.0.0.1", "127.0.0.1"),
    ("127.0.0.02", "127.0.0.2"),
])
def test_loopback_spellings_are_canonical(host, canonical):
    from labelclean.review.server import loopback_host

    assert loopback_host(host) == canonical


# -- 11: class names with surrounding spaces round-trip ---------------------------------------
def test_a_class_with_surrounding_spaces_round_trips(tmp_path):
    names = ["cat ", *[str(c) for c in range(1, 10)]]
    report = make_digits_report(tmp_path, class_names=names)
    rep, fp = read_report(report), report_fingerprint(report)
    row = next(i for i, g in enumerate(rep.frame["given_label"]) if g != "cat "
               and rep.frame.loc[i, "pseudo_label"] != "cat ")
    dec = report.with_suffix(".decisions.csv")
    server = serve(report)
    try:
        assert decide(server, row, "relabel", "cat ")["decision"]["label"] == "cat "
    finally:
        stop(server)
    got = load_decisions(dec, rep, fingerprint=fp).by_path[rep.frame.loc[row, "path"]]
    assert (got.decision, got.label) == ("relabel", "cat ")
    serve(report).server_close()  # review reads its own file back
    out = tmp_path / "final.parquet"
    r = runner.invoke(app, ["apply", str(report), str(dec), "--out", str(out)])
    assert r.exit_code == 0, r.output
    final = pd.read_parquet(out).set_index("path")["label"]
    assert final[rep.frame.loc[row, "path"]] == "cat "


# -- 14: a deeply nested JSON body is a 400, not a traceback ----------------------------------
def test_a_deeply_nested_body_is_a_bad_request(digits):
    server = serve(digits)
    try:
        status, _, body = call(server, "POST", "/api/decision", body=b"[" * 50_000)
        assert status == 400 and b"JSON" in body
        assert call(server, "GET", "/api/trace/0")[0] == 200  # still serving
    finally:
        stop(server)
