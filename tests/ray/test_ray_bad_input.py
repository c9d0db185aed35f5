"""Bad input to a Ray batch: each a clear error before any task runs, and nothing left running or on disk.

A cluster address that does not answer, and a package with a file that cannot be read, are tried in a fresh
process (this one is already connected to the test cluster; the second runs without the capabilities that let
root read any file, so a mode-000 file is unreadable to it as to any user)."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).parent / "pkg"


def python(code: str, *, env: dict[str, str] | None = None, drop_file_override: bool = False,
           timeout: float = 120) -> tuple[int, str, float]:
    """Run `code` in a fresh interpreter; (exit status, stdout + stderr, seconds)."""
    def drop() -> None:  # root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (bounding set: also after exec)
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})},
                         preexec_fn=drop if drop_file_override else None)
    return out.returncode, out.stdout + out.stderr, time.monotonic() - started


def _temp_dirs(prefix: str) -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(prefix + "*")}


BATCH = """
    import sys
    from lllm.core.runtime import build_tactic, get_runtime
    from lllm.errors import LLLMError
    from lllm.executors import RayExecutor
    from lllm.invokers import override
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.logging import sqlite_store
    import ray

    runtime = get_runtime("raytest")
    runtime.load_package({package!r})
    store = sqlite_store(":memory:")
    with override(ScriptedInvoker(scripts={{"a": ["done a"]}})):
        tactic = build_tactic(runtime.get_config("plain"), log_store=store, runtime=runtime)
    try:
        tactic.bcall(["a"], executor=RayExecutor(address={address!r}))
    except LLLMError as exc:
        print("ERROR", type(exc).__name__, exc)
    print("SESSIONS", store.count("sessions"), "CONNECTED", ray.is_initialized())
"""


def test_an_address_that_does_not_answer(require_ray: None) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, out, seconds = python(BATCH.format(package=str(PACKAGE), address=f"127.0.0.1:{port}"))
    assert status == 0, out
    assert f"ERROR ClusterUnavailable no Ray cluster answers at '127.0.0.1:{port}'" in out
    assert "ray start --head" in out  # what to do about it
    assert "SESSIONS 0 CONNECTED False" in out  # no task ran, no Ray process was started
    assert seconds < 60


def test_a_file_of_the_package_that_cannot_be_read(ray_cluster: Any, tmp_path_factory: Any) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lllm-test-pkg-"))
    try:
        shutil.copytree(PACKAGE, folder / "pkg")
        secret = folder / "pkg" / "configs" / "notes.txt"
        secret.write_text("only root's")
        secret.chmod(0o000)
        before = _temp_dirs("lllm-ship-") | _temp_dirs("lllm-handoff-")
        status, out, _ = python(BATCH.format(package=str(folder / "pkg"), address=ray_cluster.address),
                                drop_file_override=True)
        assert status == 0, out
        assert "ERROR PackageShipError package 'raytest' cannot be shipped to the Ray cluster" in out
        assert f"{str(secret)!r} cannot be read (Permission denied)" in out and ".rayignore" in out
        assert "SESSIONS 0" in out
        assert _temp_dirs("lllm-ship-") | _temp_dirs("lllm-handoff-") <= before  # nothing left on disk
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_package_too_large_to_ship(ray_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.core.runtime import Runtime, build_tactic
    from lllm.errors import PackageShipError
    from lllm.executors import RayExecutor
    from lllm.executors import ray_executor as rx
    from lllm.invokers import override
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.logging import sqlite_store

    batches: list[Any] = []
    open_batch = rx._RayBatch.open
    monkeypatch.setattr(rx._RayBatch, "open", lambda self: (batches.append(self), open_batch(self))[1])
    folder = Path(tempfile.mkdtemp(prefix="lllm-test-pkg-"))
    try:
        shutil.copytree(PACKAGE, folder / "pkg")
        (folder / "pkg" / "data").mkdir()
        (folder / "pkg" / "data" / "big.bin").write_bytes(os.urandom(3 * 2**20))
        runtime = Runtime("raytest-big")
        runtime.load_package(folder / "pkg")
        store = sqlite_store(":memory:")
        with override(ScriptedInvoker(scripts={"a": ["done a"]})):
            tactic = build_tactic(runtime.get_config("plain"), log_store=store, runtime=runtime)
        before = _temp_dirs("lllm-ship-") | _temp_dirs("lllm-handoff-")
        with pytest.raises(PackageShipError) as caught:
            tactic.bcall(["a"], executor=RayExecutor(max_package_mb=2))
        message = str(caught.value)
        assert "are 3.0 MiB in" in message and "over the 2.0 MiB Ray ships" in message and ".rayignore" in message
        assert caught.value.size >= 3 * 2**20 and caught.value.limit == 2 * 2**20
        assert store.count("sessions") == 0  # no task ran
        assert batches and batches[0].hub is None  # no hub was started
        assert _temp_dirs("lllm-ship-") | _temp_dirs("lllm-handoff-") <= before
        # left out with a .rayignore, the same package ships
        (folder / "pkg" / ".rayignore").write_text("data/\n")
        with override(ScriptedInvoker(scripts={"a": ["done a"]})):
            tactic = build_tactic(runtime.get_config("plain"), log_store=store, runtime=runtime)
        assert [r.answer for r in tactic.bcall(["a"], executor=RayExecutor(max_package_mb=2))] == ["done a"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_another_cluster_address_in_a_connected_process(ray_cluster: Any) -> None:
    from lllm.errors import UsageError
    from lllm.executors import RayExecutor

    with pytest.raises(UsageError, match="already connected to the Ray cluster at"):
        RayExecutor(address="127.0.0.1:1").connect()
    assert RayExecutor(address=ray_cluster.address).connect().is_initialized()
