"""The sandbox's syscall filter (issue 9, item 8): lllm's own seccomp profile, Docker's default minus io_uring,
ptrace and the other calls a Python kernel does not need, is applied by default. Checked from inside a real
container with raw syscalls (ctypes), so no library can paper over the answer."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from lllm.sandbox import DockerSandbox, SandboxLimits

pytestmark = pytest.mark.docker

RUNTIME = os.environ.get("LLLM_SANDBOX_RUNTIME", "runc")
LIMITS = SandboxLimits(memory="256m", pids=64 if RUNTIME == "runc" else 256)

PROBE = r"""
import ctypes, errno, os, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def outcome(ret):
    return 'allowed' if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

params = ctypes.create_string_buffer(120)            # struct io_uring_params
got = {'io_uring_setup': outcome(libc.syscall(425, 8, params))}
got['io_uring_enter'] = outcome(libc.syscall(426, 0, 0, 0, 0, 0, 0))
got['io_uring_register'] = outcome(libc.syscall(427, 0, 0, 0, 0))
child = subprocess.Popen(['sleep', '30'])
time.sleep(0.2)
got['ptrace_attach'] = outcome(libc.ptrace(16, child.pid, 0, 0))  # PTRACE_ATTACH to our own child
child.kill(); child.wait()
got['process_vm_readv'] = outcome(libc.syscall(310, os.getpid(), 0, 0, 0, 0, 0))
got['userfaultfd'] = outcome(libc.syscall(323, 0))
got['keyctl'] = outcome(libc.syscall(250, 0, 0, 0, 0, 0))
got
"""


@pytest.fixture(scope="module")
def sb(sandbox_image: str) -> Iterator[DockerSandbox]:
    with DockerSandbox(image=sandbox_image, limits=LIMITS, cell_timeout=30) as sandbox:
        yield sandbox


def test_io_uring_and_ptrace_are_refused_inside_the_sandbox(sb: DockerSandbox) -> None:
    res = sb.run_cell(PROBE)
    assert res.status == "ok", res.text
    got = eval(res.result)  # noqa: S307 - our own literal
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace_attach", "process_vm_readv",
                 "userfaultfd", "keyctl"):
        assert got[name] in ("EPERM", "ENOSYS"), f"{name}: {got[name]} (all: {got})"


def test_the_container_carries_lllms_profile(sb: DockerSandbox) -> None:
    from lllm.sandbox.seccomp import profile_text

    sb.container.reload()
    opts = sb.container.attrs["HostConfig"]["SecurityOpt"]
    assert "no-new-privileges" in opts
    applied = [o for o in opts if o.startswith("seccomp=")]
    assert len(applied) == 1 and json.loads(applied[0][len("seccomp="):]) == json.loads(profile_text())


def test_an_ordinary_python_workload_still_runs_under_the_profile(sb: DockerSandbox) -> None:
    code = r"""
import asyncio, concurrent.futures, multiprocessing, os, subprocess, threading, mmap, select, socket, tempfile
import numpy as np
def square(x): return x * x
with multiprocessing.get_context('fork').Pool(2) as pool:
    squares = pool.map(square, range(5))
a, b = socket.socketpair(); a.send(b'hi'); got = b.recv(2)
ep = select.epoll(); ep.close()
with tempfile.TemporaryFile() as fh:
    fh.write(b'x' * 4096); fh.flush(); m = mmap.mmap(fh.fileno(), 4096); m.close()
out = subprocess.run(['python3', '-c', 'print(6*7)'], capture_output=True, text=True).stdout.strip()
async def main(): await asyncio.sleep(0.01); return 'async'
ran = concurrent.futures.ThreadPoolExecutor(1).submit(asyncio.run, main()).result()  # the kernel's loop runs here
(squares, got, out, ran, float(np.linalg.inv(np.eye(3)).sum()))
"""
    res = sb.run_cell(code)
    assert res.status == "ok", res.text
    assert res.result == "([0, 1, 4, 9, 16], b'hi', '42', 'async', 3.0)"
