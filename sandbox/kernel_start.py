"""Kernel supervisor: the sandbox container's main process under tini; starts and restarts the ipykernel.

Runs as `tini -- python3 /opt/lllm/guest/kernel_start.py` in the container (uid 1000, no network). It reads the
connection file the host wrote to `$LLLM_RUN_DIR/kernel.json` (ipc transport: the five ZMQ channels are unix
sockets in that host-mounted directory) and starts the ipykernel on it (`python3 -m lllm_kernel_boot`: the
launcher without the imports a sandbox never uses), in its own process
group, with `oom_score_adj` 1000 so that the kernel (not this supervisor) is what the OOM killer picks.

It talks to the host through the same directory and through signals (tini forwards them):
- `$LLLM_RUN_DIR/kernel.state` (JSON, replaced atomically): `gen` (restart count), `pid`, `state`
  (`starting`, `running`, `exited`), `rc` (the kernel's exit status: negative = killed by that signal),
  `oom_kills_at_start`/`oom_kills` (the container cgroup's OOM-kill counter when the kernel started and when it
  exited: a difference means the kernel was killed for memory) and `killed_by` (`supervisor` when a restart
  killed it).
- SIGHUP: kill the kernel and every other process in the container that is not tini, this supervisor, a
  host-started `docker exec` helper or a process such a helper started (a `run_command`), since a process
  the kernel put in its own session or double-forked would otherwise survive; reset the home directory
  (everything in it but the workspace mount is deleted, so no file planted there reaches the next kernel),
  write the connection file again from the copy read at start-up (kernel code can rewrite it), then start a
  new kernel on the same sockets. `kernel.state` then says what was cleaned up (`cleanup`: `killed`, the other processes killed; `home_removed`, the
  entries deleted from home).
- SIGINT: forwarded to the kernel's process group (the host normally interrupts with a control message).
- SIGTERM: kill the kernel and exit.
- Lifetime (`LLLM_MAX_LIFETIME`, seconds from `LLLM_CREATED`) and idleness (`LLLM_IDLE_TIMEOUT`, seconds since
  the host last touched `$LLLM_RUN_DIR/last_used`): past either, the kernel is killed, `kernel.state` says
  `expired` and why, and the supervisor exits, which stops the container. So a sandbox whose host process is
  gone stops by itself; `lllm sandbox gc` then removes it. (Kernel code can touch `last_used` too: that can
  only keep it alive up to its lifetime.)
- Packages (`LLLM_PACKAGES=index`): the package forwarder (`lllm_pkgforward.py`) runs beside the kernel, is
  started again after a restart and whenever it dies.
- SIGUSR1: handle the host's requests about branch kernels (`sb.fork()`; see `lllm_branches`). The supervisor is
  a child subreaper, so double-forked branches are its children: it reaps them, records their ends, and kills
  them all before a restart (`cleanup`'s `branches`) or its exit.

An exited kernel is not restarted until the host asks (SIGHUP): the host reads the exit status first, so that
it can report a death or an OOM kill as such. Only the standard library is used; the kernel's own start-up
(`lllm_kernel_init`) is loaded as an IPython extension.

The kernel runs with `python3 -s -P` and `PYTHONNOUSERSITE=1`: no user site-packages (a `usercustomize.py` or
`.pth` in `~/.local`) and not the workspace ahead of the standard library at start-up. With packages through the
host (`LLLM_PACKAGES=index`) the user site is on, but it is `$PYTHONUSERBASE` (the packages directory, where
pip installs), never the home directory. The supervisor makes
itself non-dumpable, so kernel code (same uid) cannot ptrace it or read its memory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import lllm_branches  # type: ignore[import-not-found]  # beside this file in the image

RUN_DIR = os.environ.get("LLLM_RUN_DIR", "/run/lllm")
CONNECTION_FILE = os.path.join(RUN_DIR, "kernel.json")
STATE_FILE = os.path.join(RUN_DIR, "kernel.state")
GUEST_DIR = os.path.dirname(os.path.abspath(__file__))
HOME = os.environ.get("HOME", "/home/sandbox")
_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1}
_PR_SET_DUMPABLE = 4
LAST_USED_FILE = os.path.join(RUN_DIR, "last_used")


def _seconds(name: str) -> float:
    try:
        value = float(os.environ.get(name) or 0)
    except ValueError:
        return 0.0
    return value if value > 0 else 0.0


class Deadlines:
    """When the container must stop: `LLLM_MAX_LIFETIME` after `LLLM_CREATED`, `LLLM_IDLE_TIMEOUT` after the
    last use the host wrote (the mtime of `last_used`). Idleness counts only once the host has written that
    file (it does when the kernel first answers), so a slow start is not idleness; until then, every few
    seconds is a look."""

    def __init__(self) -> None:
        self.lifetime = _seconds("LLLM_MAX_LIFETIME")
        self.idle = _seconds("LLLM_IDLE_TIMEOUT")
        self.started = _seconds("LLLM_CREATED") or time.time()

    def last_used(self) -> float | None:
        try:
            return os.stat(LAST_USED_FILE, follow_symlinks=False).st_mtime
        except OSError:
            return None

    def expired(self, now: float) -> str | None:
        if self.lifetime and now >= self.started + self.lifetime:
            return f"its lifetime of {self.lifetime:g}s ended"
        used = self.last_used() if self.idle else None
        if used is not None and now >= used + self.idle:
            return f"it was idle for {self.idle:g}s"
        return None

    def wait(self, now: float) -> float | None:
        """Seconds until the next check (None: nothing to watch)."""
        due = []
        if self.lifetime:
            due.append(self.started + self.lifetime)
        if self.idle:
            used = self.last_used()
            due.append(now + 5.0 if used is None else used + self.idle)
        return max(0.05, min(due) - now) if due else None


class Forwarder:
    """The package forwarder process (`lllm_pkgforward.py`), when packages come through the host."""

    def __init__(self) -> None:
        self.enabled = os.environ.get("LLLM_PACKAGES") == "index"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def ensure(self) -> None:
        if not self.enabled or (self.proc is not None and self.proc.poll() is None):
            return
        if time.monotonic() - self.started_at < 1.0:
            return  # it keeps dying (its port taken by kernel code?): try again on a later signal
        self.started_at = time.monotonic()
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", os.path.join(GUEST_DIR, "lllm_pkgforward.py")],
                                         stdin=subprocess.DEVNULL, preexec_fn=_unblock_signals)
        except OSError:
            self.proc = None

    def down(self) -> bool:
        return self.enabled and (self.proc is None or self.proc.poll() is not None)

    def forget(self) -> None:
        """After a restart killed every process: the old forwarder is gone (reaped by kill_leftovers)."""
        self.proc = None
        self.started_at = 0.0


def oom_kill_count() -> int:
    """The container cgroup's OOM-kill counter (cgroup v1 memory.oom_control or v2 memory.events), -1 if unknown."""
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return -1


def _write_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` atomically. Kernel code can write this directory: whatever it left at the temporary name
    (a FIFO that would block us, a symlink) is removed, and the file is created anew, never followed."""
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except IsADirectoryError:
        shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)  # a file cannot replace a directory
    os.replace(tmp, path)


def write_state(**state: object) -> None:
    try:
        _write_file(STATE_FILE, json.dumps(state).encode())
    except OSError:
        pass  # the host then times out waiting and says so; never let kernel code's junk stop the supervisor


def prepare_home() -> dict[str, str]:
    """Copy the image's prebuilt matplotlib font cache into the (tmpfs) home; return the kernel's env."""
    env = dict(os.environ)
    home = env.get("HOME", "/home/sandbox")
    mpl_dir = os.path.join(home, ".config", "matplotlib")
    cache = env.get("LLLM_MPL_CACHE")
    try:
        os.makedirs(mpl_dir, exist_ok=True)
        if cache and os.path.isdir(cache):
            for name in os.listdir(cache):
                src = os.path.join(cache, name)
                if name.startswith("fontlist") and os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(mpl_dir, name))
        env["MPLCONFIGDIR"] = mpl_dir
    except OSError:
        pass
    # The kernel draws with Agg and sends PNGs (matplotlib-inline); plain scripts keep MPLBACKEND=Agg.
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    paths = [GUEST_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != GUEST_DIR]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if os.environ.get("LLLM_PACKAGES") == "index":
        # pip installs into the user site of PYTHONUSERBASE (the packages tmpfs, see the host's DockerSandbox):
        # it must exist before the kernel starts, or the kernel would not put it on sys.path.
        try:
            import site

            os.makedirs(site.getusersitepackages(), exist_ok=True)
        except OSError:
            pass
        env.pop("PYTHONNOUSERSITE", None)
    else:
        env["PYTHONNOUSERSITE"] = "1"
    return env


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def kill_leftovers(timeout: float = 5.0) -> int:
    """SIGKILL every process but PID 1 (tini), this one, `docker exec` helpers (parent 0: started by the host,
    never by the kernel) and what those helpers started (a `run_command` runs beside the kernel and is not the
    kernel's to lose), until none is left; return how many were killed. A process can only become a helper's
    descendant by being forked by it, so kernel code cannot hide there. Kernel processes can fork while we look:
    each pass kills what it saw and the next pass catches what they made before dying."""
    me = os.getpid()
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        parents: dict[int, tuple[int, str]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                info = _ppid_and_state(int(name))
                if info is not None:
                    parents[int(name)] = info
        for pid, (ppid, state) in parents.items():
            if pid in (1, me) or ppid == 0 or state in ("Z", "X"):
                continue  # a host helper, or dead already (tini or we reap it)
            if _helper_descendant(pid, parents):
                continue
            found.append(pid)
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        _reap_children()
        time.sleep(0.005)
    return len(killed)


def _helper_descendant(pid: int, parents: dict[int, tuple[int, str]]) -> bool:
    """Whether `pid` descends from a `docker exec` helper (a process other than PID 1 whose parent is 0)."""
    seen = 0
    while pid in parents and seen < 4096:
        ppid = parents[pid][0]
        if ppid == 0:
            return pid != 1
        if ppid == 1:
            return False
        pid, seen = ppid, seen + 1
    return False


def _reap_children() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def reset_home() -> int:
    """Delete everything in HOME except mount points (the workspace is a tmpfs of its own); return how many
    entries went. Never follows a symlink; a directory made unreadable is made readable again first."""
    removed = 0
    try:
        os.chmod(HOME, 0o700)  # kernel code may have taken its own rights away
        home_dev = os.lstat(HOME).st_dev
        entries = list(os.scandir(HOME))
    except OSError:
        return 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_dev != home_dev:
                continue  # a mount point: the workspace
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=_make_writable_and_retry)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def _make_writable_and_retry(func: object, path: str, _exc: object) -> None:
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def clear_socket_names(connection: bytes) -> None:
    """Remove whatever is at the kernel's ipc socket names (the old kernel's sockets, or a directory or link
    kernel code put there, which would stop the new kernel from binding)."""
    try:
        info = json.loads(connection)
        names = [f"{info['ip']}-{info[key]}" for key in ("shell_port", "iopub_port", "stdin_port", "control_port",
                                                          "hb_port")]
    except (ValueError, KeyError, TypeError):
        return
    for name in names:
        if os.path.dirname(name) != RUN_DIR:
            continue
        try:
            if os.path.isdir(name) and not os.path.islink(name):
                shutil.rmtree(name, ignore_errors=True)
            else:
                os.unlink(name)
        except OSError:
            pass


def _not_dumpable() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _child_setup() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass


class Supervisor:
    """Owns one kernel process at a time; see the module docstring for the protocol."""

    def __init__(self) -> None:
        with open(CONNECTION_FILE, "rb") as fh:
            # Kept from start-up: kernel code can rewrite the file (another key, another transport), so each
            # kernel is started from this copy, written back once the old kernel's processes are all gone.
            self.connection = fh.read()
        self.env = prepare_home()
        self.gen = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.oom_at_start = -1
        self.killed_by: str | None = None
        self.cleanup: dict[str, int] = {}
        self.kernel_args: list[str] = []
        self.branches = _branches(self)

    def spawn(self) -> None:
        self.gen += 1
        self.killed_by = None
        self.oom_at_start = oom_kill_count()
        write_state(gen=self.gen, pid=None, state="starting", rc=None, oom_kills_at_start=self.oom_at_start,
                    oom_kills=self.oom_at_start, killed_by=None, cleanup=self.cleanup)
        isolate = ["-P"] if sys.version_info >= (3, 11) else []
        if "PYTHONNOUSERSITE" in self.env:
            isolate.insert(0, "-s")
        # lllm_kernel_boot: ipykernel_launcher without the debugger and completer imports (see its docstring)
        cmd = [sys.executable, *isolate, "-m", "lllm_kernel_boot", "-f", CONNECTION_FILE,
               "--IPKernelApp.extra_extensions=['lllm_kernel_init']", "--HistoryManager.enabled=False",
               "--IPKernelApp.log_level=WARN"]
        for attempt in range(50):  # a fork bomb's leftovers may hold every pid for a moment
            try:
                self.proc = subprocess.Popen(cmd, env=self.env, start_new_session=True, preexec_fn=_child_setup,
                                             stdin=subprocess.DEVNULL)
                break
            except BlockingIOError:
                time.sleep(0.1 * (attempt + 1))
        else:
            raise SystemExit("kernel_start: could not fork the kernel (pid limit?)")
        write_state(gen=self.gen, pid=self.proc.pid, state="running", rc=None,
                    oom_kills_at_start=self.oom_at_start, oom_kills=self.oom_at_start, killed_by=None,
                    cleanup=self.cleanup)
        self.kernel_args = list(cmd)  # branch kernels started afresh use the same command

    def kill_group(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.killed_by = "supervisor"
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.reap()

    def reap(self) -> None:
        if self.proc is not None:
            self.record_exit(self.proc.wait())

    def record_exit(self, rc: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Leftover processes of the old kernel's group (its children) go with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        write_state(gen=self.gen, pid=proc.pid, state="exited", rc=rc, oom_kills_at_start=self.oom_at_start,
                    oom_kills=oom_kill_count(), killed_by=self.killed_by)

    def expire(self, why: str) -> None:
        """Past the sandbox's lifetime or idle timeout: end the kernel, say why, and stop the container."""
        self.branches.kill_all()
        self.kill_group()
        write_state(gen=self.gen, pid=None, state="expired", rc=None, reason=why,
                    oom_kills_at_start=self.oom_at_start, oom_kills=oom_kill_count(), killed_by="supervisor")
        kill_leftovers()

    def reap_all(self) -> None:
        """Reap every ended child: the kernel (its exit is recorded), branch kernels, orphans of kernel code."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
            if self.proc is not None and pid == self.proc.pid:
                self.proc.returncode = rc
                self.record_exit(rc)
            else:
                self.branches.ended(pid, rc)

    def run(self) -> None:
        _not_dumpable()
        lllm_branches.become_subreaper()
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        deadlines = Deadlines()
        forwarder = Forwarder()
        forwarder.ensure()
        self.spawn()
        while True:
            wait = deadlines.wait(time.time())
            if forwarder.down():
                wait = 1.0 if wait is None else min(wait, 1.0)
            info = signal.sigwaitinfo(_SIGNALS) if wait is None else signal.sigtimedwait(_SIGNALS, wait)
            why = deadlines.expired(time.time())
            if why:
                self.expire(why)
                return
            forwarder.ensure()
            if info is None:
                continue
            sig = info.si_signo
            if sig == signal.SIGCHLD:
                self.reap_all()
            elif sig == signal.SIGUSR1:
                self.branches.handle_requests()
            elif sig == signal.SIGHUP:
                branches = self.branches.kill_all()
                self.kill_group()
                self.cleanup = {"killed": kill_leftovers(), "home_removed": reset_home(), "branches": branches}
                forwarder.forget()
                self.env = prepare_home()
                _write_file(CONNECTION_FILE, self.connection)
                clear_socket_names(self.connection)
                forwarder.ensure()
                self.spawn()
            elif sig == signal.SIGINT:
                if self.proc is not None:
                    try:
                        os.killpg(self.proc.pid, signal.SIGINT)
                    except (ProcessLookupError, PermissionError):
                        pass
            elif sig == signal.SIGTERM:
                self.branches.kill_all()
                self.kill_group()
                return


def _branches(supervisor: Supervisor) -> lllm_branches.Branches:
    """Branch kernels are started like the kernel, on their own connection file."""

    def kernel_cmd(connection_file: str) -> list[str]:
        cmd = list(supervisor.kernel_args or [])
        return [connection_file if i and cmd[i - 1] == "-f" else arg for i, arg in enumerate(cmd)]

    return lllm_branches.Branches(RUN_DIR, _write_file, oom_kill_count, kernel_cmd, lambda: supervisor.env,
                                  _child_setup)


def main() -> None:
    if not os.path.exists(CONNECTION_FILE):
        raise SystemExit(f"kernel_start: no connection file at {CONNECTION_FILE!r}; the host writes it first")
    Supervisor().run()


if __name__ == "__main__":
    main()
