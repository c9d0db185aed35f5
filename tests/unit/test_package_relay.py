"""The package relay (host side, no Docker), the pip hint of the guest, and the derived-image helpers.

The relay is driven over its unix socket with httpx, in front of a local index on loopback whose pages link
to files on a second server (the way pypi.org links to files.pythonhosted.org)."""

from __future__ import annotations

import importlib.util
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lllm.errors import UsageError
from lllm.records import PackageRecord
from lllm.sandbox.derived import _constraints, derived_name, read_requirements
from lllm.sandbox.package_relay import PackageIndex, PackageRelay, host_index, split_filename
from package_index import LocalIndex, make_wheel

GUEST = Path(__file__).resolve().parents[2] / "sandbox"


@pytest.fixture
def index(tmp_path: Path) -> Any:
    wheels = [make_wheel(tmp_path, "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 42\n"}, requires=["tinydep"]),
              make_wheel(tmp_path, "tinydep", "2.0", {"tinydep/__init__.py": "X = 2\n"})]
    idx = LocalIndex(tmp_path / "index", wheels)
    yield idx
    idx.close()


@pytest.fixture
def relay(index: Any) -> Any:
    records: list[PackageRecord] = []
    session_dir = Path(tempfile.mkdtemp(prefix="relay-", dir="/tmp"))  # short: unix socket paths are limited
    relay = PackageRelay(session_dir, PackageIndex(url=index.simple, source="test"), report=records.append,
                         sandbox_id="sb1").start()
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(relay.socket_path)), base_url="http://relay")
    relay.records = records  # type: ignore[attr-defined]
    relay.http = client  # type: ignore[attr-defined]
    yield relay
    client.close()
    relay.close()
    import shutil

    shutil.rmtree(session_dir, ignore_errors=True)


def records_once_settled(records: list[PackageRecord], count: int, timeout: float = 10.0) -> list[PackageRecord]:
    """The relay records a file after writing its last byte, so the client can hold the whole file a moment before
    the record exists (seen at load average 14)."""
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(records)


def test_pages_lead_back_through_the_relay_and_files_come_whole(relay: Any, index: Any) -> None:
    assert relay.guest_index_url() == "http://127.0.0.1:3141/0/simple/"
    page = relay.http.get("/0/simple/tinypkg/")
    assert page.status_code == 200
    (link,) = re.findall(r'href="([^"]+)"', page.text)
    assert link.startswith("/1/tinypkg-1.0-py3-none-any.whl#sha256=")  # host 1: the files server
    assert index.files_url not in page.text
    wheel = relay.http.get(link.split("#")[0])
    assert wheel.status_code == 200
    assert wheel.content == (index.files_dir / "tinypkg-1.0-py3-none-any.whl").read_bytes()
    (record,) = records_once_settled(relay.records, 1)
    assert (record.package, record.version, record.status, record.bytes) == ("tinypkg", "1.0", "ok", len(wheel.content))
    assert record.sandbox_id == "sb1" and record.index_url == index.simple


def test_json_pages_are_rewritten_too(relay: Any) -> None:
    page = relay.http.get("/0/simple/tinypkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    # the local index serves HTML whatever is asked: the relay says what it sends
    assert page.headers["content-type"].startswith("text/html")
    body = relay.rewrite_page(b'{"files": [{"url": "../../files/a-1.0-py3-none-any.whl", "filename": "a"}]}',
                              "application/vnd.pypi.simple.v1+json", "https://idx.example/simple/a/")
    assert b'"/2/files/a-1.0-py3-none-any.whl"' in body  # 1 is the files server the page above linked to


def test_only_index_pages_and_linked_files_are_forwarded(relay: Any, index: Any) -> None:
    relay.http.get("/0/simple/tinypkg/")  # learns the files host and the two files of that page
    before = len(index.files.requests) + len(index.pages.requests)
    for path in ("/1/etc/passwd", "/1/tinydep-2.0-py3-none-any.whl", "/0/other/", "/0/simple/a/b/",
                 "/0/simple/tinypkg/?x=1", "/7/simple/", "/0/simple/%2e%2e/", "/x/simple/"):
        response = relay.http.get(path)
        assert response.status_code == 403, path
    assert relay.http.post("/0/simple/tinypkg/", content=b"data").status_code == 405
    assert relay.http.request("DELETE", "/0/simple/").status_code == 405
    assert len(index.files.requests) + len(index.pages.requests) == before  # nothing refused went out
    refused = [r for r in relay.records if r.status == "refused"]
    assert len(refused) == 10 and all(r.error for r in refused)


def test_a_project_the_index_lacks_is_a_404_and_a_record(relay: Any) -> None:
    response = relay.http.get("/0/simple/no-such-project/")
    assert response.status_code == 404
    (record,) = relay.records
    assert (record.status, record.package) == ("not_found", "no-such-project")


def test_index_credentials_stay_on_the_host(index: Any, tmp_path: Path) -> None:
    seen: list[str] = []
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Auth(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization") or "")
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Auth, directory=str(tmp_path / "index" / "pages")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://alice:s3cret@127.0.0.1:{server.server_address[1]}/simple/"
    session_dir = Path(tempfile.mkdtemp(prefix="relay-", dir="/tmp"))
    records: list[PackageRecord] = []
    relay = PackageRelay(session_dir, PackageIndex(url=url, source="test"), report=records.append).start()
    try:
        assert "s3cret" not in relay.guest_index_url() and "alice" not in relay.index.display
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(relay.socket_path)), base_url="http://r") as c:
            page = c.get("/0/simple/tinypkg/")
            c.get("/0/simple/nothing/")
        assert page.status_code == 200 and "s3cret" not in page.text
        assert seen and all(h.startswith("Basic ") for h in seen)  # the index got them, from the host
        assert all("s3cret" not in (r.index_url + (r.url or "") + (r.error or "")) for r in records)
    finally:
        relay.close()
        server.shutdown()
        server.server_close()


def test_host_index_follows_lllm_then_pip_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip.example/simple")
    monkeypatch.setenv("LLLM_PACKAGE_INDEX", "https://u:p@lllm.example/pypi/simple/")
    found = host_index()
    assert (found.source, found.display, found.auth) == ("LLLM_PACKAGE_INDEX", "https://lllm.example/pypi/simple/",
                                                         ("u", "p"))
    monkeypatch.delenv("LLLM_PACKAGE_INDEX")
    assert (host_index().source, host_index().path) == ("PIP_INDEX_URL", "/simple/")
    monkeypatch.setenv("LLLM_PACKAGE_INDEX", "ftp://nope/")
    with pytest.raises(UsageError, match="not an http"):
        host_index()


def test_file_names_give_project_and_version() -> None:
    assert split_filename("Scikit_Learn-1.5.0-cp311-cp311-manylinux_2_17_x86_64.whl") == ("scikit-learn", "1.5.0")
    assert split_filename("rich-13.7.1.tar.gz") == ("rich", "13.7.1")
    assert split_filename("README") == (None, None)


def _guest_hint() -> Any:
    spec = importlib.util.spec_from_file_location("lllm_pip_hint_under_test", GUEST / "lllm_pip_hint.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_pip_hint_knows_pip_when_it_sees_it() -> None:
    hint = _guest_hint()
    assert hint.pip_arguments(["python3", "-m", "pip", "install", "x"]) == ["install", "x"]
    assert hint.pip_arguments(["/usr/bin/python3", "/usr/bin/pip3", "install", "x"]) == ["install", "x"]
    assert hint.pip_arguments(["python3", "-s", "-P", "-m", "ipykernel_launcher", "-f", "k.json"]) is None
    assert hint.pip_arguments(["python3", "-I", "-c", "import pip"]) is None
    assert hint.needs_index(["install", "numpy"]) is True
    assert hint.needs_index(["install", "--no-index", "numpy"]) is False
    assert hint.needs_index(["install", "./tinypkg-1.0-py3-none-any.whl"]) is False
    assert hint.needs_index(["install", "-r", "requirements.txt"]) is True
    assert hint.needs_index(["install", "--prefix", "/tmp/x", "w.whl"]) is False


def test_requirements_and_constraints_of_a_derived_image(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# tools\nrich>=13  # pretty\n\nscipy==1.13.1\n")
    assert read_requirements(["tinypkg"], req) == ["tinypkg", "rich>=13", "scipy==1.13.1"]
    with pytest.raises(UsageError, match="no packages"):
        read_requirements([])
    with pytest.raises(UsageError, match="editable"):
        read_requirements(["-e ./src"])
    with pytest.raises(UsageError, match="cannot read"):
        read_requirements([], tmp_path / "missing.txt")
    info = {"dists": {"numpy": "1.24.2", "pandas": "1.5.3", "odd": "1:2.0+dfsg"}}
    # what the image has is pinned, except what the user names (they may ask for a newer pandas)
    assert _constraints(info, ["pandas>=2", "rich"]) == ["numpy==1.24.2"]
    assert derived_name("sha256:b", ["b", "a"]) == derived_name("sha256:b", ["a", "b"]) != derived_name("sha256:c", ["a"])
