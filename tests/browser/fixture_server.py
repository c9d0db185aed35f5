"""A tiny threaded HTTP server for the browser tests: serves tests/browser/pages/ on loopback and records what
the browser sent (form posts, uploads, every path hit), so tests assert the page's side effects server-side.

Dynamic routes: `/submit/<name>` (records a POST; checkout steps redirect on), `/redirect-away` (302 to the
blocked origin), `/never` (starts a page and never finishes it), `/big` (5 MB of text),
`/download/report.csv` (an attachment). `{{BLOCKED}}` in a page is replaced by the blocked origin's URL.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

PAGES = Path(__file__).parent / "pages"
REPORT_CSV = b"quarter,revenue\nQ1,100\nQ2,140\n"
_NEXT = {"checkout-1": "/checkout2.html", "checkout-2": "/checkout3.html"}


class FixtureServer:
    """One threaded HTTP server on 127.0.0.1 and a free port; `.posts` and `.hits` record the traffic."""

    def __init__(self, *, blocked_origin: str = "http://127.0.0.1:9") -> None:
        self.posts: list[tuple[str, dict[str, list[str]]]] = []
        self.uploads: list[tuple[str, str, bytes]] = []
        self.hits: list[str] = []
        self.blocked_origin = blocked_origin
        self._stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                server.hits.append(self.path)
                path = self.path.split("?")[0]
                if path == "/redirect-away":
                    self._send(302, b"", Location=f"{server.blocked_origin}/landing.html")
                elif path == "/never":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    self.wfile.write(b"<!doctype html><title>Slow</title><h1>Loading forever</h1><p>still")
                    self.wfile.flush()
                    server._stop.wait(60)
                    self.close_connection = True
                elif path == "/big":
                    body = b"<!doctype html><title>Big</title><h1>A very long page</h1><p>" + b"lorem ipsum " * 437_000
                    body += b"</p><p id='end'>THE END</p>"
                    self._send(200, body)
                elif path == "/download/report.csv":
                    self._send(200, REPORT_CSV, "text/csv", Content_Disposition='attachment; filename="report.csv"')
                else:
                    file = PAGES / (path.lstrip("/") or "form.html")
                    if file.is_file() and file.resolve().is_relative_to(PAGES.resolve()):
                        body = file.read_bytes().replace(b"{{BLOCKED}}", server.blocked_origin.encode())
                        ctype = "image/png" if file.suffix == ".png" else "text/html; charset=utf-8"
                        self._send(200, body, ctype)
                    else:
                        self._send(404, b"<title>Not found</title><h1>Not found</h1>")

            def do_POST(self) -> None:  # noqa: N802
                server.hits.append(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                name = self.path.split("/submit/", 1)[-1].split("?")[0]
                ctype = self.headers.get("Content-Type", "")
                fields: dict[str, list[str]] = {}
                if ctype.startswith("multipart/form-data"):
                    msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw,
                                                   policy=email.policy.HTTP)
                    for part in msg.iter_parts():
                        field = part.get_param("name", header="content-disposition")
                        filename = part.get_filename()
                        payload = part.get_payload(decode=True) or b""
                        if filename:
                            server.uploads.append((str(field), filename, payload))
                            fields.setdefault(str(field), []).append(filename)
                        else:
                            fields.setdefault(str(field), []).append(payload.decode())
                else:
                    fields = parse_qs(raw.decode(), keep_blank_values=True)
                server.posts.append((name, fields))
                if name in _NEXT:
                    self._send(303, b"", Location=_NEXT[name])
                else:
                    shown = ", ".join(f"{k}={v[0]}" for k, v in fields.items() if k != "password")
                    self._send(200, f"<title>Thanks</title><h1>Thanks, received</h1><p>{shown}</p>".encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"fixture-{self.port}", daemon=True)

    def start(self) -> FixtureServer:
        self._thread.start()
        return self

    def url(self, path: str) -> str:
        return self.origin + "/" + path.lstrip("/")

    def posts_to(self, name: str) -> list[dict[str, list[str]]]:
        return [fields for n, fields in self.posts if n == name]

    def reset(self) -> None:
        self.posts.clear()
        self.uploads.clear()
        self.hits.clear()

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        time.sleep(0)
