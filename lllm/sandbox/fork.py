"""Branch kernels: `sb.fork()` makes a second kernel in the same container with the parent's whole Python state.

The parent kernel forks itself between two cells (guest side: `sandbox/lllm_fork.py`; the measured recipe is in
the project's ENVIRONMENT.md): the branch shares the parent's memory copy-on-write, has its own connection file
and signing key (`<id>.json`, sockets `<id>-1..5` in the run directory), its own gateway file names
(`gateway-<id>.sock`/`.token`: whoever serves CALL_API for the parent opens a session there through a fork hook,
see `Forkable.add_fork_hook`) and its own `KernelChannels`, with the parent's caps and the parent's record budget
(a branch does not multiply what the host stores). From then on parent and branch evolve independently.

Supervision (`sandbox/lllm_branches.py`): the branch's parent process is the container's supervisor (a child
subreaper), which reaps it, writes `<id>.state` when it ends and kills every branch before a kernel restart.
On the host, `DockerSandbox` ends its branches (and theirs) when it closes or its kernel restarts, and says so:
the branch's next cell comes back `died` with the reason, and the restart notice names them.
`max_branches` (default: what the container's PID limit leaves room for) bounds the live branches of a
container; one more is a `SandboxForkError`.

Shared by every kernel of a container, and documented as such: the workspace files, OS file offsets of files
open at the fork (sockets and pipes stay the parent's: the branch's copies point at /dev/null), and the memory,
CPU and PID limits. Threads do not survive a fork. Kernels of one container
are ONE TRUST DOMAIN: a branch can read its parent's and siblings' memory and files. `sb.fork(isolated=True)`
gives a branch in a container of its own instead (save + resume, `lllm.sandbox.snapshot`).

A fork asked for while a cell runs waits for the cell to end (the sandbox's lock, then the kernel's own queue).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lllm.errors import SandboxClosed, SandboxError, SandboxForkError, SandboxStartError
from lllm.sandbox._cell_loop import ExitStatus, KernelSandbox
from lllm.sandbox._kernel import KernelChannels, connection_info, iopub_message_limit
from lllm.sandbox._requests import kernel_request
from lllm.sandbox._rundir import read_guest_json

if TYPE_CHECKING:
    from lllm.sandbox.base import BaseSandbox

PIDS_PER_KERNEL = 12
"""Processes and threads one idle branch kernel holds (measured: 7: main, IOPub, control, two output watchers,
ZMQ's two threads), with room for what its cells start; `max_branches` defaults from it."""
PIDS_RESERVED = 48
"""Left for the parent kernel, the supervisor, file helpers and what cells start."""
FORK_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0

ForkHook = Callable[["BaseSandbox", "BranchSandbox"], None]
"""`hook(parent, branch)`, called once a branch answers (e.g. to open its CALL_API gateway session)."""


def default_max_branches(pids: int) -> int:
    """How many idle branches fit in a container with this PID limit next to its own kernel."""
    return max(1, (pids - PIDS_RESERVED) // PIDS_PER_KERNEL)


class Forkable:
    """What a kernel sandbox needs to be forked: its branches, hooks, and the container's bookkeeping.

    Mixed into `DockerSandbox` (the root of a container's kernels) and `BranchSandbox`. The root holds the
    container-wide count of live branches (`_root`).
    """

    _branches: list[BranchSandbox]
    _fork_hooks: list[ForkHook]

    def _fork_init(self) -> None:
        self._branches = []
        self._fork_hooks = []

    @property
    def branches(self) -> list[BranchSandbox]:
        """The live branches forked from this kernel (not their own branches; each has `.branches`)."""
        return [b for b in self._branches if b.state.value == "running"]

    def add_fork_hook(self, hook: ForkHook) -> None:
        """Call `hook(parent, branch)` for every branch forked from this sandbox or, later, from its branches."""
        self._fork_hooks.append(hook)

    def fork(self, *, isolated: bool = False) -> Any:
        """A branch kernel with this kernel's complete Python state at this moment (between two cells).

        Args:
            isolated: False: a kernel in the same container (fast; one trust domain, shared workspace and
                limits). True: a new container restored from a snapshot of this one (`save` + `resume`):
                slower, nothing shared, and what cannot be pickled is not carried over (the result's
                `resume_notice` says what).

        Raises:
            SandboxForkError: more live branches than `max_branches`, or the kernel could not fork.
            SandboxClosed: this sandbox is closed.
        """
        if isolated:
            from lllm.sandbox.snapshot import fork_isolated

            return fork_isolated(self)
        return _fork(self)

    def save(self, path: str | os.PathLike[str], *, timeout: float = 600.0) -> Any:
        """Write a snapshot of this kernel's variables and the workspace to `path` (see `lllm.sandbox.snapshot`);
        return its `SnapshotInfo` (what was saved, what was not and why).

        Raises:
            SnapshotError: the kernel could not save (over the size limit, it ended), or `path` cannot be written.
        """
        from lllm.sandbox.snapshot import save

        return save(self, path, timeout=timeout)

    def _end_branches(self, why: str, *, kill: bool = False) -> list[str]:
        """Mark every branch below this one ended (`why`) and close it; return their ids, deepest last.

        `kill`: also kill their processes (a branch of a branch runs in a session of its own, so killing the
        branch does not take it along); not needed when the supervisor kills every branch (a root restart) or
        the container goes."""
        ended: list[str] = []
        for branch in list(self._branches):
            if branch.state.value == "running":
                ended.append(branch.sandbox_id)
                ended.extend(branch._end_branches(why, kill=kill))
                if kill:
                    branch._kill_process()
                branch._ended(why)
        self._branches = []
        return ended


def _fork(parent: Any) -> BranchSandbox:
    parent._require_running("fork")
    root = parent._root_sandbox()
    with parent._lock:  # a running cell finishes first (this is the queue)
        if parent.channels is None:
            parent.restart_kernel()
        with root._fork_lock:
            live = root._count_live_branches()
            if live >= root.max_branches:
                raise SandboxForkError(
                    f"sandbox {root.sandbox_id!r} already has {live} live branch kernels, its max_branches "
                    f"({root.max_branches}, sized to its PID limit of {root.limits.pids}); close a branch "
                    "(branch.close()) or start the sandbox with a larger limits.pids and max_branches",
                    sandbox_id=root.sandbox_id, max_branches=root.max_branches)
            branch = BranchSandbox(parent)
            branch._prepare()
        try:
            pid = _ask_parent_to_fork(parent, branch)
            branch._attach(pid)
        except BaseException:
            branch._discard()
            raise
    parent._branches.append(branch)
    try:
        for hook in list(parent._fork_hooks):
            hook(parent, branch)
    except BaseException:
        branch.close()
        raise
    return branch


def _ask_parent_to_fork(parent: Any, branch: BranchSandbox) -> int:
    content = {"connection_file": f"{branch.run_dir}/{branch.sandbox_id}.json", "gateway": branch.gateway_name,
               "branch": branch.sandbox_id}
    reply = kernel_request(parent, "lllm_fork_request", content, "lllm_fork_reply", timeout=FORK_TIMEOUT,
                           error=SandboxForkError, what="fork its kernel")
    if not isinstance(reply.get("pid"), int):
        raise SandboxForkError(f"sandbox {parent.sandbox_id!r} sent a fork reply without a pid",
                               sandbox_id=parent.sandbox_id)
    phases = reply.get("phases")
    branch.fork_timing = {str(k): float(v) for k, v in (phases.items() if isinstance(phases, dict) else ())
                          if isinstance(v, (int, float))}
    if isinstance(reply.get("fork_s"), (int, float)):
        branch.fork_timing["guest_total"] = float(reply["fork_s"])
    return int(reply["pid"])


class BranchSandbox(Forkable, KernelSandbox):
    """A branch kernel in its root sandbox's container (made by `sb.fork()`; see the module docstring).

    Runs cells like its root (same caps, timeout escalation, records). Files are the root's workspace.
    `close()` ends it and its own branches; a restart (after a timeout kill or a death) gives it a fresh, empty
    kernel, started by the supervisor on the branch's own sockets.
    """

    kind = "docker-branch"

    def __init__(self, parent: Any) -> None:
        super().__init__(cell_timeout=parent.cell_timeout, max_output_chars=parent.max_output_chars,
                         tracer=parent.tracer, agent=parent.agent)
        self._fork_init()
        self.parent = parent
        self.root = parent._root_sandbox()
        self.sandbox_id = "b" + secrets.token_hex(5)
        self.interrupt_grace = parent.interrupt_grace
        self.max_stored_chars = parent.max_stored_chars
        self.max_display_bytes = parent.max_display_bytes
        self.record_limits = parent.record_limits
        self._record_budget = parent.record_budget  # charged to the parent: a fork does not multiply it
        self._fork_hooks = list(parent._fork_hooks)
        self._session_dir = self.root.session_dir
        self.run_dir = self.root.RUN_DIR
        self.gateway_name = f"gateway-{self.sandbox_id}"
        self.channels: KernelChannels | None = None
        self._lock = threading.RLock()
        self.pid: int | None = None
        self._conn: dict[str, Any] = {}
        self._oom_at_start = -1
        self._end_reason = ""
        self._restart_note = ""
        self.forked_at = 0.0
        self.fork_timing: dict[str, float] = {}
        """Seconds the guest took to fork this branch (`guest_total`) and to set it up, by phase (`loop`,
        `sockets`, `io`, `kernel`, `hooks`), as the parent kernel measured them (for bench/bench_fork.py)."""
        self.image = getattr(self.root, "image", None)
        self._on_close: list[Callable[[], Any]] = []

    # -- state shared with the root --------------------------------------------------------------------------------
    @property
    def guest_uid(self) -> int | None:  # type: ignore[override]
        return self.root.guest_uid

    @property
    def limits(self) -> Any:
        return self.root.limits

    def _root_sandbox(self) -> Any:
        return self.root

    # -- start ---------------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Write the branch's connection file (its own key and socket names) where the kernel can read it."""
        key = secrets.token_hex(32)
        info = connection_info(f"{self.run_dir}/{self.sandbox_id}", key)
        path = self.session_dir / f"{self.sandbox_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(info))
        if self.guest_uid is not None and os.geteuid() == 0:
            os.chown(path, self.guest_uid, self.guest_uid)
        self._conn = connection_info(str(self.session_dir / self.sandbox_id), key)
        self.forked_at = time.time()
        self._state_ready()

    def _state_ready(self) -> None:
        from lllm.sandbox.base import SandboxState

        self._state = SandboxState.RUNNING
        self.root._live_branches.add(self)

    def _attach(self, pid: int) -> None:
        self.pid = pid
        adoption = self.root._branch_send("adopt", self.sandbox_id, pid=pid)  # answered while we connect
        try:
            self._connect()
        finally:
            reply = self.root._branch_wait(adoption, "adopt", self.sandbox_id)
        self._oom_at_start = _int(reply.get("oom_kills"))

    def _connect(self) -> None:
        if self.channels is not None:
            self.channels.close()
        self.channels = KernelChannels(self._conn, max_message_bytes=iopub_message_limit(self.max_display_bytes))
        self.channels.wait_ready(self.root.start_timeout, check_alive=self._check_alive_for_start, resend_every=0.02,
                                 warm_up=False)

    def _check_alive_for_start(self) -> None:
        ended = self.exit_status()
        if ended is not None:
            raise SandboxForkError(f"the branch kernel {self.sandbox_id!r} did not come up: {ended.describe()}",
                                   sandbox_id=self.sandbox_id)

    def _start(self) -> None:  # a branch is started by fork(), never by start()
        raise SandboxClosed("a branch kernel starts with sb.fork(); this one has ended", sandbox_id=self.sandbox_id)

    # -- the kernel handle used by the cell loop -------------------------------------------------------------------
    def exit_status(self, *, force_container: bool = False) -> ExitStatus | None:
        if self._end_reason:
            return ExitStatus(None, detail=self._end_reason)
        root_end = self.root.exit_status(force_container=force_container)
        if root_end is not None:
            return ExitStatus(None, detail=f"its parent sandbox's kernel ended ({root_end.describe()})",
                              container=root_end.container)
        state = read_guest_json(self.session_dir / f"{self.sandbox_id}.state")
        if state and state.get("pid") == self.pid and state.get("state") == "exited":
            rc = state.get("rc")
            oom_now = state.get("oom_kills", -1)
            oom = isinstance(oom_now, int) and oom_now > self._oom_at_start >= 0
            return ExitStatus(rc if isinstance(rc, int) else None, oom=oom, detail="branch kernel")
        return None

    def send_interrupt(self) -> None:
        if self.channels is not None:
            self.channels.send_control("interrupt_request")

    def restart_kernel(self) -> None:
        """Kill the branch's kernel (and its branches) and start a fresh, empty one on the same sockets."""
        if self.channels is not None:
            self.channels.close()
            self.channels = None
        if self._end_reason:
            raise SandboxClosed(f"branch {self.sandbox_id!r} has ended: {self._end_reason}; fork its parent again",
                                sandbox_id=self.sandbox_id)
        ended = self._end_branches("the branch kernel they were forked from was restarted", kill=True)
        old = self.pid
        if old is not None:
            self.root._branch_request("kill", self.sandbox_id, pid=old)
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while self.exit_status() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        reply = self.root._branch_request("spawn", self.sandbox_id,
                                          connection_file=f"{self.run_dir}/{self.sandbox_id}.json",
                                          gateway=self.gateway_name)
        self.pid = int(reply["pid"])
        self._oom_at_start = _int(reply.get("oom_kills"))
        self._restart_note = (f"its {len(ended)} branch kernel{'s' if len(ended) != 1 else ''} "
                              f"({', '.join(ended)}) ended with it" if ended else "")
        self._connect()

    def restart_note(self) -> str:
        return self._restart_note

    def cell_steps(self, code: str, *, timeout: float | None, listen: Any = None) -> Any:
        # A branch's cell is use of the one container: counted on the root, whose idle_timeout (its watchdog,
        # the supervisor, the reaper) would otherwise end the sandbox under a branch that is busy.
        in_use = getattr(self.root, "in_use", None)
        if in_use is None:
            return (yield from super().cell_steps(code, timeout=timeout, listen=listen))
        with in_use():
            return (yield from super().cell_steps(code, timeout=timeout, listen=listen))

    # -- files and commands: the root's workspace and container ----------------------------------------------------
    def upload(self, src: str | Path | bytes, dest: str | None = None) -> str:
        self._require_running("upload")
        return str(self.root.upload(src, dest))

    def download_dir(self, path: str, dest: str | Path) -> Path:
        self._require_running("download_dir")
        return Path(self.root.download_dir(path, dest))

    def _run_command(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                     stdin: bytes | None, listen: Any = None) -> Any:
        # a command runs beside the kernels, in the one container: the root runs it (a branch has its caps)
        return self.root._run_command(argv, cwd=cwd, env=env, timeout=timeout, stdin=stdin, listen=listen)

    def download(self, path: str) -> bytes:
        self._require_running("download")
        return bytes(self.root.download(path))

    def list_files(self, path: str = ".") -> list[str]:
        self._require_running("list_files")
        return list(self.root.list_files(path))

    # -- end -----------------------------------------------------------------------------------------------------
    def _ended(self, why: str) -> None:
        """The branch's kernel is gone with its parent's (a restart, a close): keep the reason for its next cell."""
        self._end_reason = why
        self._close_quietly()
        from lllm.sandbox.base import SandboxState

        self._state = SandboxState.CLOSED

    def _check_not_closed(self, what: str) -> None:
        if self._end_reason:
            raise SandboxClosed(f"{what}() on branch kernel {self.sandbox_id!r}, which has ended: {self._end_reason}; "
                                "fork its parent again for a new branch", sandbox_id=self.sandbox_id)
        super()._check_not_closed(what)

    def _close(self) -> None:
        self._end_branches("the branch kernel they were forked from was closed", kill=True)
        if not self._end_reason:
            self._kill_process()
        self._close_quietly()

    def _kill_process(self) -> None:
        if self.pid is None:
            return
        try:
            self.root._branch_request("kill", self.sandbox_id, pid=self.pid)
        except SandboxError:
            pass  # the container is gone: so is the branch

    def _close_quietly(self) -> None:
        if self.channels is not None:
            self.channels.close()
            self.channels = None
        self.root._live_branches.discard(self)
        for name in (f"{self.sandbox_id}.json", f"{self.sandbox_id}.state"):
            _remove(self.session_dir / name)
        for n in range(1, 6):
            _remove(self.session_dir / f"{self.sandbox_id}-{n}")
        for close in reversed(self._on_close):
            try:
                close()
            except Exception:  # noqa: BLE001 - a hook's failure must not keep the branch open
                pass
        self._on_close = []

    def add_close_hook(self, fn: Callable[[], Any]) -> None:
        """Call `fn()` when this branch closes or ends (e.g. to close its gateway session)."""
        self._on_close = [*self._on_close, fn]

    def _discard(self) -> None:
        """A fork that failed half-way: nothing of it stays."""
        if self.pid is not None:
            try:
                self.root._branch_request("kill", self.sandbox_id, pid=self.pid)
            except SandboxError:
                pass
        self._close_quietly()
        from lllm.sandbox.base import SandboxState

        self._state = SandboxState.CLOSED


class RootBranches:
    """The root sandbox's side: the container-wide branch count and the supervisor's request channel.

    Mixed into `DockerSandbox` with `Forkable`. Needs `container`, `session_dir`, `sandbox_id`, `limits`,
    `start_timeout`, `_lock` from it.
    """

    RUN_DIR = "/run/lllm"
    max_branches: int
    _live_branches: weakref.WeakSet[BranchSandbox]
    _fork_lock: threading.Lock

    def _root_init(self, max_branches: int | None, pids: int) -> None:
        self.max_branches = max_branches if max_branches is not None else default_max_branches(pids)
        self._live_branches = weakref.WeakSet()
        self._fork_lock = threading.Lock()
        self._init_pidfd: int | None = None
        self._init_pidfd_tried = False
        self._pidfd_lock = threading.Lock()

    def _root_sandbox(self) -> Any:
        return self

    @classmethod
    def resume(cls, path: str | os.PathLike[str], **options: Any) -> Any:
        """Start a new sandbox from the snapshot at `path` (`sb.save(path)`): its image and limits unless
        `options` say otherwise, its workspace files, and every variable that unpickles (inside the sandbox,
        never here). `sb.resume_notice` says which names were not restored; the first cell's notices repeat it.
        See `lllm.sandbox.snapshot.resume` for the options and errors."""
        from lllm.sandbox.snapshot import resume

        return resume(cls, path, **options)

    def end_leftover_branches(self) -> int:
        """Kill the branch kernels this process has no handle on (those of a process that attached before);
        return how many there were."""
        reply = self._branch_request("kill_all", "all")
        for branch in list(self._live_branches):
            branch._ended("the sandbox's branches were ended by end_leftover_branches()")
        killed = reply.get("killed")
        return killed if isinstance(killed, int) else 0

    def _count_live_branches(self) -> int:
        return sum(1 for b in list(self._live_branches) if b.state.value == "running")

    def _branch_request(self, op: str, branch: str, **fields: Any) -> dict[str, Any]:
        """Ask the container's supervisor (a request file, then SIGUSR1) and wait for its answer.

        Raises:
            SandboxForkError: it refused, or did not answer within `REQUEST_TIMEOUT`.
        """
        return self._branch_wait(self._branch_send(op, branch, **fields), op, branch)

    def _branch_send(self, op: str, branch: str, **fields: Any) -> str:
        """Write a request for the supervisor and signal it; return the nonce its answer will carry."""
        container = getattr(self, "container", None)
        if container is None:
            raise SandboxClosed(f"sandbox {getattr(self, 'sandbox_id', '?')!r} has no container", op=op)
        session_dir: Path = self.session_dir  # type: ignore[attr-defined]
        nonce = secrets.token_hex(8)
        request = session_dir / f"branch-req-{nonce}.json"
        fd = os.open(request, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"op": op, "branch": branch, **fields}))
        try:
            self._signal_supervisor(container)
        except BaseException:
            _remove(request)
            raise
        return nonce

    def _signal_supervisor(self, container: Any) -> None:
        """SIGUSR1 to the container's init, which hands it to the supervisor. Sent from this host through a pidfd
        of that process when it can be (runc, same PID namespace as the engine): the engine's API costs a round
        trip of 10-30 ms, and a fork or a close waits for it. Else, or once that process is gone (the container
        restarted), through the engine, which does the same."""
        import signal as signals

        pidfd = self._supervisor_pidfd(container)
        if pidfd is not None:
            try:
                signals.pidfd_send_signal(pidfd, signals.SIGUSR1)
                return
            except OSError:
                self._drop_supervisor_pidfd()
        from lllm.sandbox import _docker

        with _docker.translate_errors(f"signal the supervisor of sandbox {self.sandbox_id!r}"):  # type: ignore[attr-defined]
            container.kill(signal="SIGUSR1")

    def _supervisor_pidfd(self, container: Any) -> int | None:
        with self._pidfd_lock:  # kernels of one container fork at once (a root and its branches)
            if self._init_pidfd is None and not self._init_pidfd_tried:
                self._init_pidfd_tried = True
                self._init_pidfd = self._open_supervisor_pidfd(container)
            return self._init_pidfd

    def _open_supervisor_pidfd(self, container: Any) -> int | None:
        if getattr(self, "runtime", "runc") != "runc" or not hasattr(os, "pidfd_open"):
            return None  # under gVisor the engine's pid is the sandbox kernel's, not the container's init
        if getattr(self, "relayed", False):
            return None  # the request file must reach the container first: the engine's way waits for the relay
        try:
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
            if pid <= 0:
                return None
            pidfd = os.pidfd_open(pid)
        except Exception:  # noqa: BLE001 - the engine's way stays
            return None
        try:
            # the pidfd holds that process from here on; it must be this container's (its cgroup names the
            # container), not a process of ours that took a pid freed by a container that died, nor one of
            # another PID namespace (this process in a container of its own, talking to the host's engine)
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
                mine = str(container.id) in fh.read()
            import signal as signals

            signals.pidfd_send_signal(pidfd, 0)
        except OSError:
            mine = False
        if not mine:
            os.close(pidfd)
            return None
        return pidfd

    def _drop_supervisor_pidfd(self) -> None:
        """Close the pidfd (the sandbox is closing or detaching, or its init is gone)."""
        with self._pidfd_lock:
            pidfd, self._init_pidfd = self._init_pidfd, None
        if pidfd is not None:
            try:
                os.close(pidfd)
            except OSError:
                pass

    def _branch_wait(self, nonce: str, op: str, branch: str) -> dict[str, Any]:
        session_dir: Path = self.session_dir  # type: ignore[attr-defined]
        request = session_dir / f"branch-req-{nonce}.json"
        reply_path = session_dir / f"branch-rep-{nonce}.json"
        deadline = time.monotonic() + REQUEST_TIMEOUT
        try:
            while time.monotonic() < deadline:
                reply = read_guest_json(reply_path)
                if reply is not None:
                    if not reply.get("ok"):
                        raise SandboxForkError(f"the supervisor of sandbox {self.sandbox_id!r} refused to {op} "  # type: ignore[attr-defined]
                                               f"branch {branch!r}: {str(reply.get('error'))[:300]}")
                    return reply
                time.sleep(0.002)
        finally:
            _remove(reply_path)
            _remove(request)
        raise SandboxForkError(f"the supervisor of sandbox {self.sandbox_id!r} did not answer a {op} request for "  # type: ignore[attr-defined]
                               f"branch {branch!r} within {REQUEST_TIMEOUT:g}s (its image may predate branch "
                               "kernels: rebuild it with `lllm sandbox build`)")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1




def _remove(path: Path) -> None:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


__all__ = ["BranchSandbox", "Forkable", "ForkHook", "RootBranches", "default_max_branches"]
