"""A package index on loopback for tests: wheels built here, a PEP 503 simple index over them, served by
http.server. Pages live on one server and link to the files on another (like pypi.org and
files.pythonhosted.org), so the relay's second host is exercised too."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def make_wheel(folder: Path, name: str, version: str, modules: dict[str, str],
               requires: list[str] | None = None) -> Path:
    """A pure-Python wheel `name-version-py3-none-any.whl` holding `modules` ({"pkg/__init__.py": source})."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires or [])
    files = dict(modules)
    files[f"{dist}/METADATA"] = meta
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: lllm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(lines + [f"{dist}/RECORD,,"]) + "\n"
    out = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LocalIndex:
    """`LocalIndex(root, wheels)`: `root/simple/<project>/index.html` pages on one server (`.url`, the index
    URL is `.simple`), the wheels under `root/files/` on another (`.files_url`)."""

    def __init__(self, root: Path, wheels: list[Path]) -> None:
        (root / "pages").mkdir(parents=True, exist_ok=True)
        (root / "files").mkdir(parents=True, exist_ok=True)
        self.files_dir = root / "files"
        self.files = _Server(root / "files")
        self.files_url = self.files.url
        by_project: dict[str, list[Path]] = {}
        for wheel in wheels:
            target = root / "files" / wheel.name
            target.write_bytes(wheel.read_bytes())
            project = wheel.name.split("-")[0].replace("_", "-").lower()
            by_project.setdefault(project, []).append(target)
        simple = root / "pages" / "simple"
        simple.mkdir(exist_ok=True)
        links = []
        for project, paths in sorted(by_project.items()):
            (simple / project).mkdir(exist_ok=True)
            anchors = []
            for path in paths:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                href = f"{self.files_url}/{path.name}#sha256={digest}"
                anchors.append(f'<a href="{html.escape(href)}">{path.name}</a><br/>')
            (simple / project / "index.html").write_text(
                "<!DOCTYPE html><html><body>\n" + "\n".join(anchors) + "\n</body></html>\n")
            links.append(f'<a href="{project}/">{project}</a>')
        (simple / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
        self.pages = _Server(root / "pages")
        self.url = self.pages.url
        self.simple = f"{self.url}/simple/"

    def close(self) -> None:
        self.pages.close()
        self.files.close()
