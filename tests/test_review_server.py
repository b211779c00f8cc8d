"""The review server: what it serves, what it refuses, and the `labelclean review` command."""

import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest
from test_report_html import make_digits_report

from labelclean.report.parquet import read_report
from labelclean.review.decisions import report_fingerprint
from labelclean.review.server import TOKEN_HEADER, ReviewServer
from labelclean.review.state import ReviewState


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    report = make_digits_report(folder)
    (folder / "secret.txt").write_text("do not serve me")
    state = ReviewState(read_report(report), folder / "report.decisions.csv", fingerprint=report_fingerprint(report))
    server = ReviewServer(state, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, folder
    server.shutdown()
    server.server_close()


def request(server, method, path, *, host=None, headers=None, body=None, token=True):
    """One request to ``server``; it carries the session token in its header unless ``token=False``."""
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    headers = dict(headers or {})
    if token:
        headers.setdefault(TOKEN_HEADER, server.token)
    for k, v in headers.items():
        if v is not None:
            conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def decide(server, body, **headers):
    port = server.server_address[1]
    h = {"Content-Type": "application/json", TOKEN_HEADER: server.token, "Origin": f"http://127.0.0.1:{port}"}
    h.update(headers)
    return request(server, "POST", "/api/decision", headers=h, body=json.dumps(body).encode())


def test_serves_the_page_assets_data_and_images(served):
    server, _ = served
    status, headers, page = request(server, "GET", "/")
    assert status == 200 and b"labelclean review" in page and server.token.encode() in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name in ("common.css", "review.css", "review.js"):
        status, headers, _ = request(server, "GET", f"/assets/{name}")
        assert status == 200
    status, _, rows = request(server, "GET", "/api/rows?part=queue")
    rows = json.loads(rows)
    assert status == 200 and len(rows["id"]) == 40  # NS, NHR, NHI, CH; CS on demand
    assert len(json.loads(request(server, "GET", "/api/rows?part=more")[2])["id"]) == 40
    status, headers, png = request(server, "GET", f"/image/{rows['id'][0]}")
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG")
    assert request(server, "GET", f"/thumb/{rows['id'][0]}")[0] == 200
    assert len(json.loads(request(server, "GET", "/api/trace/0")[2])["given"]) == 10
    assert request(server, "HEAD", "/")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/%2e%2e/%2e%2e/pyproject.toml",
        "/image/../secret.txt",
        "/image/-1",
        "/image/80",
        "/image/1e1",
        "/thumb/%30",
        "//etc/passwd",
        "/report.parquet",
        "/report.decisions.csv",
        "/images/d000.png",
        "/assets/",
        "/images/",
        "/api/rows?part=../../secret",
        "/api/trace/99999",
    ],
)
def test_no_traversal_and_no_listing(served, path):
    server, _ = served
    status, _, body = request(server, "GET", path)
    assert status in (400, 404), path
    assert b"do not serve me" not in body and b"PAR1" not in body


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}", "127.0.0.1", ""],
)
def test_foreign_host_is_refused(served, host):
    server, _ = served
    port = server.server_address[1]
    status, _, body = request(server, "GET", "/api/rows", host=host.format(port=port))
    assert status == 403 and b"Host" in body
    assert request(server, "GET", "/", host=f"localhost:{port}")[0] == 200  # the loopback names


def test_foreign_origin_is_refused_for_reads_and_writes(served):
    server, folder = served
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        assert request(server, "GET", "/api/rows", headers={"Origin": origin})[0] == 403
        assert decide(server, {"id": 0, "decision": "keep"}, Origin=origin)[0] == 403
    assert not (folder / "report.decisions.csv").exists()


def test_writes_need_the_token_json_and_a_valid_decision(served):
    server, folder = served
    dec = folder / "report.decisions.csv"
    assert decide(server, {"id": 0, "decision": "keep"}, **{TOKEN_HEADER: None})[0] == 403
    assert decide(server, {"id": 0, "decision": "keep"}, **{TOKEN_HEADER: "guess"})[0] == 403
    assert decide(server, {"id": 0, "decision": "keep"}, **{"Content-Type": "text/plain"})[0] == 415
    for bad in ({"id": 80, "decision": "keep"}, {"id": 0, "decision": "burn"}, {"id": "0", "decision": "keep"},
                {"id": 0, "decision": "relabel", "label": "cat"}, {"id": 0, "decision": "relabel"}, [1]):
        status, _, body = decide(server, bad)
        assert status == 400, bad
    assert not dec.exists()
    status, _, body = decide(server, {"id": 0, "decision": "keep"})
    assert status == 200 and json.loads(body)["decided"] == 1
    assert dec.read_text().splitlines()[2].startswith("d000.png,keep,")
    assert decide(server, {"id": 0, "decision": None})[0] == 200  # undo to undecided
    assert len(dec.read_text().splitlines()) == 2


def test_methods_it_does_not_serve_are_refused(served):
    server, _ = served
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        status, headers, _ = request(server, method, "/")
        assert status == 405 and headers["Allow"] == "GET, HEAD, POST", method
    for method in ("FOO", "PROPFIND", "MKCOL"):  # unknown ones too: 405, not the base's 501
        status, headers, _ = request(server, method, "/")
        assert status == 405 and headers["Allow"] == "GET, HEAD, POST", method
    assert request(server, "POST", "/", headers={TOKEN_HEADER: server.token})[0] == 404


def test_writes_nothing_but_the_decisions_file(served):
    server, folder = served
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.name != "report.decisions.csv"}
    for i in range(3):
        assert decide(server, {"id": i, "decision": "drop"})[0] == 200
        request(server, "GET", f"/thumb/{i}")
    after = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.name != "report.decisions.csv"}
    assert before == after  # no temp file left, nothing else touched


def _start_cli(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "labelclean", "review", *map(str, args), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    return proc


def test_cli_prints_the_address_serves_and_stops_on_sigterm(tmp_path):
    report = make_digits_report(tmp_path)
    proc = _start_cli(report, "--port", 0, cwd=tmp_path)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("serving at http://127.0.0.1:") and "/?token=" in line
        url = urlsplit(line.split()[-1])
        port = url.port
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/?{url.query}")  # the printed address signs in
        assert conn.getresponse().status == 303
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "decisions are in" in err


def test_cli_refuses_bad_decisions_files_and_wildcard_hosts(tmp_path):
    from typer.testing import CliRunner

    from labelclean.cli import app

    report = make_digits_report(tmp_path)
    other = tmp_path / "other.csv"
    other.write_text("# labelclean decisions for x.parquet sha256=" + "a" * 64 + "\npath,decision,label,time\n")
    runner = CliRunner()
    for args, message in (
        (["--decisions", tmp_path], "is a folder"),
        (["--decisions", report], "is the same file as REPORT"),
        (["--decisions", tmp_path / "images" / "d000.png"], "is an image in the report's image folder"),
        (["--decisions", tmp_path / "d.json"], "name the file *.csv"),
        (["--decisions", other], "made for another report"),
        (["--host", "0.0.0.0"], "wildcard"),
    ):
        r = runner.invoke(app, ["review", str(report), "--no-browser", *map(str, args)])
        assert r.exit_code == 1 and message in r.output, (args, r.output)
    assert other.read_text().count("\n") == 2  # left as it was


def test_a_guard_column_reaches_the_cards_when_the_report_has_one(tmp_path):
    """Reports that record the guard (issue 14.15) show it on the cards; older ones do not."""
    report = make_digits_report(tmp_path / "old")
    old = ReviewState(read_report(report), tmp_path / "d.csv", fingerprint=report_fingerprint(report))
    assert "guard" not in old.rows("queue") and old.meta()["has_guard"] is False
    report = make_digits_report(tmp_path / "new", guard=True)
    new = ReviewState(read_report(report), tmp_path / "e.csv", fingerprint=report_fingerprint(report))
    rows = new.rows("queue")
    moved = {p for p, g in zip(rows["path"], rows["guard"]) if g == "budget"}
    assert new.meta()["has_guard"] and moved == {f"d{i:03d}.png" for i in range(40, 44)}  # CH rows
    assert all(g in (None, "budget") for g in rows["guard"])


def test_a_decision_that_cannot_be_saved_is_not_taken(served, monkeypatch):
    """A full disk while the decisions file is rewritten: 500, the file and the state as before."""
    server, folder = served
    dec = folder / "report.decisions.csv"
    assert decide(server, {"id": 5, "decision": "keep"})[0] == 200
    before = dec.read_text()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the _io layer's fsync of the temp file fails
    status, _, body = decide(server, {"id": 6, "decision": "drop"})
    monkeypatch.undo()
    assert status == 500 and b"no space left on the device" in body, body
    assert dec.read_text() == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    assert server.state.paths[6] not in server.state.decisions  # the page is not told it was saved
