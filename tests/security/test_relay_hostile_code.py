"""With packages="index", hostile kernel code gets the package index and nothing else (real containers).

The sandbox still has no network; its only way out is the host's relay on `packages.sock`, which forwards GETs
of the index's pages and of files those pages linked to. Kernel code that speaks to the relay directly (other
methods, other paths, absolute URLs, other hosts, a flood of connections) is refused without anything reaching
the servers behind it; the index's credentials never enter the container; the records that let another process
attach are the owner's alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lllm.sandbox import DockerSandbox, SandboxLimits
from package_index import LocalIndex, make_wheel

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("relay-index")
    wheels = [make_wheel(root, "lllm-test-safe", "1.0", {"lllm_test_safe/__init__.py": "OK = True\n"})]
    served = LocalIndex(root / "served", wheels)
    (root / "served" / "pages" / "private.txt").write_text("host-only data\n")  # on the index's host, off the index
    yield served
    served.close()


PROBE = r"""
import json, socket
results = {}

def raw(request):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect("/run/lllm/packages.sock")
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b"\r\n", 1)[0].decode(errors="replace")

pages_port = PAGES_PORT
files_port = FILES_PORT
results["index_page"] = raw(b"GET /0/simple/lllm-test-safe/ HTTP/1.1\r\nHost: x\r\n\r\n")
results["off_index_path"] = raw(b"GET /0/private.txt HTTP/1.1\r\nHost: x\r\n\r\n")
results["dotdot"] = raw(b"GET /0/simple/../private.txt HTTP/1.1\r\nHost: x\r\n\r\n")
results["absolute_url"] = raw(("GET http://127.0.0.1:%d/private.txt HTTP/1.1\r\nHost: x\r\n\r\n" % pages_port).encode())
results["connect"] = raw(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % pages_port).encode())
results["post"] = raw(b"POST /0/simple/lllm-test-safe/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nleak")
results["unlinked_file"] = raw(b"GET /1/private.txt HTTP/1.1\r\nHost: x\r\n\r\n")
results["unknown_host"] = raw(b"GET /5/simple/ HTTP/1.1\r\nHost: x\r\n\r\n")
try:
    socket.create_connection(("127.0.0.1", pages_port), timeout=5)
    results["direct"] = "connected"
except OSError as exc:
    results["direct"] = type(exc).__name__
import urllib.request
try:
    urllib.request.urlopen("http://127.0.0.1:3141/0/private.txt", timeout=20)
    results["forwarder_off_index"] = 200
except urllib.error.HTTPError as exc:
    results["forwarder_off_index"] = exc.code
# a flood: many connections held open at once
held = []
for _ in range(60):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/lllm/packages.sock")
    held.append(s)
results["held"] = len(held)
print(json.dumps(results))
"""


def test_hostile_code_reaches_the_index_and_nothing_else(sandbox_image: str, index: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pages_port = int(index.url.rsplit(":", 1)[1])
    files_port = int(index.files_url.rsplit(":", 1)[1])
    secret_url = f"http://relay-user:s3cret-token@127.0.0.1:{pages_port}/simple/"
    monkeypatch.setenv("LLLM_PACKAGE_INDEX", secret_url)
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="512m"), packages="index") as sb:
        before = list(index.pages.requests) + list(index.files.requests)
        code = PROBE.replace("PAGES_PORT", str(pages_port)).replace("FILES_PORT", str(files_port))
        result = sb.run_cell(code, timeout=120)
        assert result.status == "ok", result.text
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["index_page"].startswith("HTTP/1.1 200")
        for probe in ("off_index_path", "dotdot", "absolute_url", "unlinked_file", "unknown_host"):
            assert seen[probe].startswith("HTTP/1.1 403"), (probe, seen[probe])
        assert seen["connect"].startswith("HTTP/1.1 405") and seen["post"].startswith("HTTP/1.1 405")
        assert seen["forwarder_off_index"] == 403
        assert seen["direct"] == "ConnectionRefusedError"  # the host's loopback is not the container's
        assert seen["held"] == 60
        assert len(sb._relay._conns) <= 16  # the relay serves a bounded number of connections
        after = list(index.pages.requests) + list(index.files.requests)
        assert after[len(before):] == ["/simple/lllm-test-safe/"]  # only the index page reached a server
        assert "private" not in " ".join(after)

        leaks = sb.run_cell(textwrap.dedent("""
            import os, subprocess
            env = open('/proc/1/environ', 'rb').read().decode(errors='replace') + repr(dict(os.environ))
            conf = subprocess.run(['python3', '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout
            print('s3cret' in env, 's3cret' in conf, 'relay-user' in env + conf, os.environ['PIP_INDEX_URL'])
            """))
        assert leaks.stdout.split()[:3] == ["False", "False", "False"], leaks.stdout
        assert leaks.stdout.split()[3] == "http://127.0.0.1:3141/0/simple/"


def test_attach_records_are_readable_by_their_owner_only(sandbox_image: str, require_root: None) -> None:
    """Needs root to try another uid: `require_root` fails under CI instead of skipping."""
    from lllm.sandbox.lifetime import records_dir

    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="256m")) as sb:
        record = records_dir() / f"{sb.sandbox_id}.json"
        data = json.loads(record.read_text())
        assert data["kernel"]["key"] and oct(record.stat().st_mode & 0o777) == "0o600"
        # another local account (here `nobody`) can read neither the record nor the run root's listing
        probe = subprocess.run(
            ["/usr/bin/python3", "-c", textwrap.dedent(f"""
                import os
                out = []
                for action in (lambda: open({str(record)!r}).read(), lambda: os.listdir({str(records_dir())!r}),
                               lambda: os.listdir({str(records_dir().parent)!r})):
                    try:
                        action()
                        out.append("read")
                    except PermissionError:
                        out.append("denied")
                print(" ".join(out))
                """)],
            capture_output=True, text=True, timeout=30, user=65534, group=65534)
        assert probe.stdout.split() == ["denied", "denied", "denied"], probe.stderr
        # and nothing of it is inside the container
        inside = sb.run_cell(f"import os; print(os.path.exists({str(record)!r}), os.path.exists('/run/lllm/sandboxes'))")
        assert inside.stdout.split() == ["False", "False"]
    assert not Path(record).exists()  # removed with the sandbox
