"""The review app's HTTP server: the standard library's ThreadingHTTPServer, locked down.

It serves the page, its own assets, the report's data and the images the report names
(by row number: no path from the request ever reaches the filesystem, so there is no
traversal and no listing), and accepts one kind of write, decisions (one, or a bulk recorded
whole or not at all), which go to the decisions file and nowhere else. It binds only a
loopback address, however spelled (:func:`loopback_host`). Every request must carry the
per-run token: the printed address has it once (``/?token=...``), which sets an HttpOnly,
SameSite=Strict cookie and redirects to ``/``; later requests carry the cookie or the token
in a header, so another local user or process that can reach the port reads nothing.
Against DNS rebinding and cross-site requests every request must carry a ``Host`` that is
the address it serves on, and an ``Origin``, when present, of that address; a decision must
also be JSON and carry the token in a header (which no cross-site form can send). Every
other method is refused with 405.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import socket
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from labelclean._version import __version__
from labelclean.errors import ConfigError, LabelcleanError, OutputError
from labelclean.report.heat import heat_table
from labelclean.report.templating import ASSET_TYPES, asset, asset_names, render
from labelclean.review.state import ReviewState, class_keys, parse_decision, parse_decisions

logger = logging.getLogger(__name__)

TOKEN_HEADER = "X-Labelclean-Token"
ALLOW = "GET, HEAD, POST"
MAX_BODY = 64 * 1024
#: A bulk names each image in about 50 bytes: room for 100,000 images in one request.
MAX_BULK_BODY = 8 * 1024 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def loopback_host(host: str) -> str:
    """The canonical loopback address ``host`` names (``127.1`` -> ``127.0.0.1``).

    The server binds only this machine's loopback, however it is spelled; anything else is a
    ConfigError naming ``--host``.

    ``localhost`` is taken as ``127.0.0.1`` without asking a resolver (a hosts file may say
    otherwise); numbers are read the way the socket layer reads them (``inet_aton``: ``0``,
    ``127.1``, ``0x7f.1``, leading zeros), so no spelling binds what its text hides. The
    unspecified addresses (``0``, ``::``, ``0.0.0.0`` in any form) bind every interface and
    are refused, and so is any other non-loopback address.
    """
    text = host.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    if bare.lower() == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        try:
            if not re.fullmatch(r"[0-9a-fA-FxX.]+", bare):
                raise OSError
            addr = ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            raise ConfigError(
                f"--host {host!r}: name a loopback address (127.0.0.1, ::1 or localhost)"
            ) from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified:
        raise ConfigError(
            f"--host {host!r} is a wildcard ({addr}): it would serve every network interface; "
            "the review server serves only this machine (127.0.0.1)"
        )
    if not addr.is_loopback:
        raise ConfigError(
            f"--host {host!r} ({addr}) is not a loopback address: the review server serves "
            "only this machine; to review from elsewhere forward the port "
            "(ssh -L PORT:127.0.0.1:PORT this-machine)"
        )
    return str(addr)


class ReviewServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its state, its allowed hosts and its token."""

    daemon_threads = True

    def __init__(self, state: ReviewState, host: str, port: int) -> None:
        host = loopback_host(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self.state = state
        self.token = secrets.token_urlsafe(24)
        bound = self.server_address[1]
        self.host = host
        names = {f"[{host}]" if ":" in host else host}
        if host in ("127.0.0.1", "::1"):
            names.add("localhost")
        self.allowed_hosts = {f"{n}:{bound}" for n in names}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}
        #: Cookies are per host, not per port: one name per server, so two don't clash.
        self.cookie = f"labelclean-review-{bound}"
        queue = state.report.frame.iloc[state.queue]
        heat, heat_note = heat_table(
            queue["given_label"], state.suggested[state.queue], state.classes, col_title="suggested"
        )
        keys = dict(zip(state.classes, class_keys(state.classes)))
        number = {c: str(i + 1) for i, c in enumerate(state.classes)}
        self.page = render(
            "review.html.j2",
            token=self.token,
            meta=state.meta(),
            heat=heat if len(queue) else None,
            heat_keys=[keys[c] or number[c] for c in heat["cols"]],
            heat_note=(f"Heatmap: {heat_note}." if heat_note else "")
            if len(queue)
            else "The queue is empty.",
            report_name=state.report.path.name if state.report.path else "report",
            version=__version__,
        ).encode("utf-8")

    @property
    def base_url(self) -> str:
        """Where the app is served (without the token: it answers 403)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server_address[1]}/"

    @property
    def url(self) -> str:
        """The address to open: it carries the token once, which becomes a cookie."""
        return f"{self.base_url}?token={self.token}"


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "labelclean-review"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        logger.debug("%s %s", self.address_string(), format % args)

    # -- replies -------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        mime: str,
        *,
        cache: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ALLOW)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    # -- checks ----------------------------------------------------------------------------
    def _trusted(self) -> bool:
        """Host is our address and Origin, if any, too (DNS rebinding, cross-site requests)."""
        host = self.headers.get("Host", "")
        if host not in self.server.allowed_hosts:
            self._error(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this server's address")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.allowed_origins:
            self._error(HTTPStatus.FORBIDDEN, f"Origin {origin!r} is not this server's address")
            return False
        return True

    def _header_token(self) -> bool:
        """The token header is this session's token.

        Compared as bytes: ``compare_digest`` raises on a ``str`` with non-ASCII characters,
        which any client can send (headers are read as Latin-1).
        """
        given = self.headers.get(TOKEN_HEADER, "").encode("utf-8", "surrogateescape")
        return secrets.compare_digest(given, self.server.token.encode())

    def _has_token(self) -> bool:
        """The request carries the session token: in the header, or in the session cookie."""
        token = self.server.token
        if self._header_token():
            return True
        jar = SimpleCookie()
        for raw in self.headers.get_all("Cookie") or []:
            try:
                jar.load(raw)
            except CookieError:
                continue
        morsel = jar.get(self.server.cookie)
        return morsel is not None and secrets.compare_digest(morsel.value.encode(), token.encode())

    def _signed_in(self, url: Any) -> bool:
        """Whether the request may be answered; the first visit turns ``?token=`` into a cookie.

        ``/?token=...`` (the printed address) sets the cookie and redirects to ``/``, so the
        token leaves the address bar and the history; anything else without the token is 403.
        """
        if self._has_token():
            return True
        given = parse_qs(url.query).get("token", [""])[0]
        if url.path == "/" and secrets.compare_digest(given.encode(), self.server.token.encode()):
            cookie = f"{self.server.cookie}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(
                HTTPStatus.SEE_OTHER,
                b"",
                "text/plain",
                headers={"Location": "/", "Set-Cookie": cookie},
            )
            return False
        self._error(
            HTTPStatus.FORBIDDEN,
            "open the address `labelclean review` printed: it carries this session's token",
        )
        return False

    def _row(self, text: str) -> int | None:
        n = len(self.server.state.paths)
        return int(text) if text.isascii() and text.isdigit() and int(text) < n else None

    # -- methods ---------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the base class's naming
        if not self._trusted():
            return
        url = urlsplit(self.path)
        if not self._signed_in(url):
            return
        path, state = url.path, self.server.state
        parts = path.strip("/").split("/")
        if path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif len(parts) == 2 and parts[0] == "assets" and parts[1] in asset_names():
            mime = ASSET_TYPES["." + parts[1].rsplit(".", 1)[-1]]
            self._send(200, asset(parts[1]).encode("utf-8"), mime)
        elif path == "/api/rows":
            part = parse_qs(url.query).get("part", ["queue"])[0]
            if part not in ("queue", "more"):
                self._error(HTTPStatus.BAD_REQUEST, "part is queue or more")
                return
            self._json(state.rows(part))
        elif len(parts) == 3 and parts[:2] == ["api", "trace"] and self._row(parts[2]) is not None:
            self._json(state.traces(int(parts[2])))
        elif len(parts) == 2 and parts[0] in ("thumb", "image") and self._row(parts[1]) is not None:
            row = int(parts[1])
            got = state.thumbnail(row) if parts[0] == "thumb" else state.original(row)
            if got is None:
                self._error(HTTPStatus.NOT_FOUND, f"the image of row {row} cannot be read")
            else:
                self._send(200, got[0], got[1], cache=True)
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        """``/api/decision`` records one decision, ``/api/decisions`` a bulk, all or none."""
        if not self._trusted():
            return
        where = urlsplit(self.path).path
        if where not in ("/api/decision", "/api/decisions"):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        if not self._header_token():
            self._error(HTTPStatus.FORBIDDEN, f"missing or wrong {TOKEN_HEADER}")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return
        bulk = where == "/api/decisions"
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= (MAX_BULK_BODY if bulk else MAX_BODY):
            self.close_connection = True  # the body is not read: the connection cannot go on
            self._error(
                HTTPStatus.BAD_REQUEST,
                f"a bulk is a JSON body of at most {MAX_BULK_BODY // 2**20} MiB"
                if bulk
                else "a decision is a small JSON body",
            )
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past the stack
            self._error(HTTPStatus.BAD_REQUEST, "the body is not a JSON decision")
            return
        state = self.server.state
        try:
            if bulk:
                result = state.decide_many(parse_decisions(payload, len(state.paths)))
            else:
                result = state.decide(*parse_decision(payload, len(state.paths)))
        except (OutputError, OSError) as err:  # full disk, ...: the decisions were not taken
            logger.error("cannot write %s: %s", state.path, err)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot write the decisions file: {err}")
        except LabelcleanError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        else:
            self._json(result)

    def _refuse(self) -> None:
        self.close_connection = True
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not served here")

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Every method but GET, HEAD and POST (PUT, PROPFIND, FOO...) is a 405 with Allow.

        The base class looks up ``do_<METHOD>`` and answers 501 where there is none.
        """
        if name.startswith("do_"):
            return self._refuse
        raise AttributeError(name)
