"""The Sandbox contract, written once and run on DockerSandbox (a real container) and LocalSandbox."""

from __future__ import annotations

import base64
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lllm.core.trace import CellRecord
from lllm.errors import SandboxClosed, SandboxFileError
from lllm.sandbox import DockerSandbox, LocalSandbox, Sandbox, SandboxLimits, SandboxState

BACKENDS = [pytest.param("docker", marks=pytest.mark.docker), "local",
            pytest.param("docker-remote", marks=pytest.mark.docker)]
"""docker-remote: a second engine on loopback TCP with TLS (tests/remote_engine.py), the relay transport."""


def make(kind: str, request: pytest.FixtureRequest | None = None, **kw: Any) -> Any:
    opts: dict[str, Any] = {"cell_timeout": 10, "interrupt_grace": 1.5}
    opts.update(kw)
    if kind == "docker-remote":
        assert request is not None
        engine = request.getfixturevalue("remote_engine")
        opts.update(docker_host=engine.host, tls=str(engine.client_certs))
    if kind.startswith("docker"):
        if request is not None:
            request.getfixturevalue("sandbox_image")
        return DockerSandbox(limits=SandboxLimits(memory="384m", pids=128), **opts)
    return LocalSandbox(**opts)


@pytest.fixture(scope="module", params=BACKENDS)
def sb(request: pytest.FixtureRequest) -> Iterator[Any]:
    records: list[CellRecord] = []
    sandbox = make(request.param, request, env={"LLLM_TEST_VALUE": "forty-two"}, tracer=records.append, agent="tester")
    sandbox.records = records
    with sandbox:
        yield sandbox


def test_runs_cells_and_keeps_state(sb: Any) -> None:
    assert sb.state is SandboxState.RUNNING and isinstance(sb, Sandbox)
    res = sb.run_cell("1+1")
    assert res.status == "ok" and res.result == "2" and res.text == "2"
    sb.run_cell("shared = {'n': 41}")
    res = sb.run_cell("shared['n'] += 1\nprint('n is', shared['n'])")
    assert res.stdout == "n is 42\n" and res.result is None


def test_stdout_stderr_result_and_error(sb: Any) -> None:
    res = sb.run_cell("import sys\nprint('out')\nprint('err', file=sys.stderr)\n'value'")
    assert (res.stdout, res.stderr, res.result) == ("out\n", "err\n", "'value'")
    res = sb.run_cell("def f():\n    return 1/0\nf()")
    assert res.status == "error" and res.error_name == "ZeroDivisionError"
    assert res.error_value == "division by zero"
    assert any("return 1/0" in line for line in res.traceback) and "\x1b[" not in res.text
    assert res.text.endswith("ZeroDivisionError: division by zero")
    assert sb.run_cell("2*3").result == "6"  # an error leaves the kernel usable


TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_figures_come_back_as_png(sb: Any) -> None:
    if isinstance(sb, DockerSandbox):  # matplotlib is in the image (not a host dependency)
        code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"
    else:
        code = f"import base64\nfrom IPython.display import Image, display\ndisplay(Image(base64.b64decode('{TINY_PNG}')))"
    res = sb.run_cell(code)
    assert res.status == "ok", res.text
    assert len(res.images) == 1 and res.images[0].mime == "image/png"
    import base64

    assert base64.b64decode(res.images[0].data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_rich_display_and_result_bundle(sb: Any) -> None:
    res = sb.run_cell("from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))\n7")
    assert res.display_data[0]["text/html"] == "<b>hi</b>"
    assert res.result_data["text/plain"] == "7" and res.execution_count is not None


def test_input_fails_at_once(sb: Any) -> None:
    t0 = time.monotonic()
    res = sb.run_cell("input('name? ')", timeout=20)
    assert time.monotonic() - t0 < 5
    assert res.status == "error" and res.error_name == "StdinNotImplementedError"


def test_env_and_run_dir(sb: Any) -> None:
    res = sb.run_cell("import os\nprint(os.environ['LLLM_TEST_VALUE'], os.environ['LLLM_RUN_DIR'])")
    value, run_dir = res.stdout.split()
    assert value == "forty-two"
    assert run_dir == ("/run/lllm" if isinstance(sb, DockerSandbox) else str(sb.session_dir))
    assert stat.S_IMODE(os.stat(sb.session_dir).st_mode) & 0o777 == 0o700  # (jupyter may add the sticky bit)


def test_timeout_interrupts_and_keeps_state(sb: Any) -> None:
    sb.run_cell("kept = 'yes'")
    t0 = time.monotonic()
    res = sb.run_cell("while True: pass", timeout=1.5)
    assert res.status == "timeout" and res.timeout_action == "interrupted"
    assert not res.restarted and not res.state_lost
    assert time.monotonic() - t0 < 1.5 + 1.5 + 2
    assert "timeout" in res.text
    assert sb.run_cell("kept").result == "'yes'"
    assert sb.run_cell("1+1").result == "2"


def test_interrupt_from_another_thread(sb: Any) -> None:
    timer = threading.Timer(0.7, sb.interrupt)
    timer.start()
    res = sb.run_cell("import time\nfor _ in range(100): time.sleep(0.1)", timeout=30)
    timer.join()
    assert res.status == "error" and res.error_name == "KeyboardInterrupt"
    assert res.duration_s < 5
    sb.run_cell("idle_value = 5")
    sb.interrupt()  # an interrupt while nothing runs is harmless
    time.sleep(0.3)
    assert sb.run_cell("idle_value + 1").result == "6"


def test_sigint_ignoring_loop_is_killed_and_restarted(sb: Any) -> None:
    sb.run_cell("lost = 1")
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    res = sb.run_cell(code, timeout=1.0)
    assert res.status == "timeout" and res.timeout_action == "restarted"
    assert res.restarted and res.state_lost and "restarted" in res.text
    assert sb.run_cell("1+1").result == "2"
    assert sb.run_cell("lost").error_name == "NameError"


def test_kernel_death_is_reported_and_recovered(sb: Any) -> None:
    res = sb.run_cell("import os\nos._exit(3)")
    assert res.status == "died" and res.restarted and res.state_lost
    assert "exited with code 3" in res.text
    assert sb.run_cell("40+2").result == "42"


def test_restart_loses_variables_keeps_files(sb: Any) -> None:
    sb.run_cell("v = 1\nopen('restart-proof.txt', 'w').write('still here')")
    sb.restart()
    assert sb.run_cell("v").error_name == "NameError"
    assert sb.run_cell("open('restart-proof.txt').read()").result == "'still here'"


def test_files_roundtrip(sb: Any, tmp_path: Any) -> None:
    assert sb.upload(b"a,b\n1,2\n", "data/in.csv") == "data/in.csv"
    res = sb.run_cell("import csv\nlist(csv.reader(open('data/in.csv')))")
    assert res.result == "[['a', 'b'], ['1', '2']]"
    sb.run_cell("open('data/out.txt', 'w').write('from the kernel')")
    assert sb.download("data/out.txt") == b"from the kernel"
    host_file = tmp_path / "blob.bin"
    host_file.write_bytes(bytes(range(256)) * 100)
    sb.upload(host_file, "blob.bin")
    assert sb.download("blob.bin") == host_file.read_bytes()
    assert {"data/in.csv", "data/out.txt", "blob.bin"} <= set(sb.list_files())
    assert sb.list_files("data") == ["data/in.csv", "data/out.txt"]
    with pytest.raises(SandboxFileError, match="no such file|No such file"):
        sb.download("missing.txt")


def test_files_refuse_escapes(sb: Any) -> None:
    for bad in ("../escape.txt", "a/../../escape.txt", "/etc/passwd", "/run/lllm/kernel.json"):
        with pytest.raises(SandboxFileError):
            sb.upload(b"x", bad)
        with pytest.raises(SandboxFileError):
            sb.download(bad)
    sb.run_cell("import os\nfor name in ('link-out', 'link-dir'):\n    if os.path.lexists(name): os.remove(name)\n"
                "os.symlink('/etc/passwd', 'link-out')\nos.symlink('/etc', 'link-dir')")
    with pytest.raises(SandboxFileError, match="outside the workspace"):
        sb.download("link-out")
    with pytest.raises(SandboxFileError, match="outside the workspace"):
        sb.download("link-dir/passwd")
    with pytest.raises(SandboxFileError):
        sb.upload(b"x", "link-dir/evil")
    with pytest.raises(SandboxFileError):
        sb.upload(b"x", "link-out")


def test_files_refuse_fifos_without_blocking(sb: Any) -> None:
    sb.run_cell("import os\nos.path.lexists('fifo') or os.mkfifo('fifo')")
    box: dict[str, Any] = {}

    def attempt() -> None:
        for op in (lambda: sb.upload(b"x", "fifo"), lambda: sb.download("fifo")):
            try:
                op()
            except SandboxFileError as exc:
                box.setdefault("errors", []).append(str(exc))

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "a file operation on a FIFO blocked"
    assert len(box["errors"]) == 2 and all("not a regular file" in e for e in box["errors"]), box


def test_tracer_records_cells(sb: Any) -> None:
    sb.run_cell("'traced'")
    last = sb.records[-1]
    assert last.code == "'traced'" and last.status == "ok" and last.agent == "tester"
    assert last.sandbox_id == sb.sandbox_id and last.duration_s > 0
    res = sb.run_cell("1/0")
    assert sb.records[-1].status == "error" and sb.records[-1].error == "ZeroDivisionError: division by zero"
    assert sb.records[-1].output == res.text  # the model's view of the cell, as it read it


def test_cell_records_keep_output_images_and_notices(sb: Any) -> None:
    code = (f"import base64\nfrom IPython.display import Image, SVG, display\nprint('drawn')\n"
            f"display(Image(data=base64.b64decode({TINY_PNG!r})))\ndisplay(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"/>'))\n"
            "print('x' * 300_000)")
    res = sb.run_cell(code)
    record = sb.records[-1]
    assert record.output == res.text and record.output.startswith("drawn") and record.truncated
    assert [i["mime"] for i in record.images] == ["image/png", "image/svg+xml"]
    assert record.images[0]["data"] == TINY_PNG
    assert base64.b64decode(record.images[1]["data"]).startswith(b"<svg")
    assert record.notices == res.notices


@pytest.mark.parametrize("kind", BACKENDS)
def test_closed_sandbox_refuses_work_and_cleans_up(kind: str, request: pytest.FixtureRequest) -> None:
    sandbox = make(kind, request)
    with sandbox:
        session_dir = sandbox.session_dir
        assert sandbox.run_cell("1").result == "1"
    assert sandbox.state is SandboxState.CLOSED and not session_dir.exists()
    with pytest.raises(SandboxClosed):
        sandbox.run_cell("1")
    if kind.startswith("docker"):
        names = [c.name for c in sandbox._client().containers.list(all=True)]
        assert f"lllm-{sandbox.sandbox_id}" not in names
