"""The supervisor's side of branch kernels (`sb.fork()`): which processes are branches, their ends, their kills.

A branch kernel is forked by a kernel (see `lllm_fork`) with a double fork, so its parent is the supervisor,
which is a child subreaper (`PR_SET_CHILD_SUBREAPER`). The host tells the supervisor about it and asks it for
things through request files in the run directory and SIGUSR1 (tini forwards it):
`branch-req-<nonce>.json` holds `{"op": "adopt" | "kill" | "spawn", "branch": id, ...}`; the answer is written
to `branch-rep-<nonce>.json` (`{"ok": true, ...}` or `{"ok": false, "error": ...}`).
- `adopt` (`pid`): track that child as the branch `id` (refused unless it is this supervisor's child);
- `kill` (`pid`): SIGKILL the branch's process group (it is a session leader);
- `spawn` (`connection_file`, `gateway`): start a fresh, empty kernel for the branch (after its kernel was
  killed on a timeout or died), as a child of the supervisor;
- `kill_all`: kill every branch (a host process that re-attaches to the sandbox has no handle on the branches
  of the process before it).
When a branch ends, `<id>.state` says so (`pid`, `state`: exited, `rc`, `oom_kills`). A kernel restart or the
supervisor's exit kills every branch first (`kill_all`). Kernel code can write request files too; it can kill
and start processes of its own uid anyway, so this gives it nothing new. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any, Callable

_PR_SET_CHILD_SUBREAPER = 36
_MAX_REQUESTS = 64


def become_subreaper() -> None:
    """Orphans of the kernel (branches: double-forked) become this process's children, not tini's."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Branches:
    """The live branch kernels of this container, by pid."""

    def __init__(self, run_dir: str, write_file: Callable[[str, bytes], None], oom_count: Callable[[], int],
                 kernel_cmd: Callable[[str], list[str]], env: Callable[[], dict[str, str]],
                 child_setup: Callable[[], None]) -> None:
        self.run_dir = run_dir
        self.write_file = write_file
        self.oom_count = oom_count
        self.kernel_cmd = kernel_cmd
        self.env = env
        self.child_setup = child_setup
        self.alive: dict[int, str] = {}

    # -- requests from the host -----------------------------------------------------------------------------------
    def handle_requests(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.run_dir) if n.startswith("branch-req-") and n.endswith(".json"))
        except OSError:
            return
        for name in names[:_MAX_REQUESTS]:
            path = os.path.join(self.run_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as fh:
                    request = json.loads(fh.read(65536) or b"null")
                os.unlink(path)
            except (OSError, ValueError):
                try:
                    os.unlink(path)
                except OSError:
                    pass
                continue
            try:
                answer = self._handle(request)
            except Exception as exc:  # noqa: BLE001 - the host reads the error
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            reply = name.replace("branch-req-", "branch-rep-", 1)
            try:
                self.write_file(os.path.join(self.run_dir, reply), json.dumps(answer).encode())
            except OSError:
                pass

    def _handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("branch"), str):
            return {"ok": False, "error": "a request needs op and branch"}
        op, branch = request.get("op"), request["branch"]
        if "/" in branch or not branch:
            return {"ok": False, "error": f"bad branch name {branch!r}"}
        if op == "adopt":
            pid = int(request.get("pid", 0))
            if _ppid(pid) != os.getpid():
                return {"ok": False, "error": f"process {pid} is not a child of the supervisor"}
            self.alive[pid] = branch
            return {"ok": True, "pid": pid, "oom_kills": self.oom_count()}
        if op == "kill":
            pid = int(request.get("pid", 0))
            if self.alive.get(pid) != branch:
                return {"ok": True, "pid": pid, "note": "not running"}
            self._kill(pid)
            return {"ok": True, "pid": pid}
        if op == "kill_all":
            return {"ok": True, "killed": self.kill_all()}
        if op == "spawn":
            conn = str(request.get("connection_file", ""))
            gateway = str(request.get("gateway", ""))
            if os.path.dirname(conn) != self.run_dir or "/" in gateway or not gateway:
                return {"ok": False, "error": "spawn needs a connection file in the run directory and a gateway name"}
            env = {**self.env(), "LLLM_GATEWAY_NAME": gateway, "LLLM_BRANCH": branch}
            proc = subprocess.Popen(self.kernel_cmd(conn), env=env, start_new_session=True,
                                    preexec_fn=self.child_setup, stdin=subprocess.DEVNULL)
            self.alive[proc.pid] = branch
            return {"ok": True, "pid": proc.pid, "oom_kills": self.oom_count()}
        return {"ok": False, "error": f"unknown op {op!r}"}

    # -- ends -------------------------------------------------------------------------------------------------------
    def _kill(self, pid: int) -> None:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                return
            except (ProcessLookupError, PermissionError):
                continue

    def ended(self, pid: int, rc: int) -> None:
        """A child was reaped: if it was a branch, say so in its state file."""
        branch = self.alive.pop(pid, None)
        if branch is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)  # what the branch left running in its session goes with it
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.write_file(os.path.join(self.run_dir, f"{branch}.state"),
                            json.dumps({"pid": pid, "state": "exited", "rc": rc,
                                        "oom_kills": self.oom_count()}).encode())
        except OSError:
            pass

    def kill_all(self) -> int:
        """Kill every branch (the kernel they came from is going); return how many there were."""
        count = len(self.alive)
        for pid in list(self.alive):
            self._kill(pid)
            self.ended(pid, -signal.SIGKILL)  # reaped later with the kernel's other leftovers
        return count
