"""`DockerSandbox`: one hardened, network-less container per session, holding a Jupyter kernel and nothing else.

The container runs `tini -- python3 kernel_start.py` (see `sandbox/kernel_start.py`): a small supervisor that
starts the ipykernel on the connection file the host wrote into the session directory, restarts it on SIGHUP
and records how it ended (exit code, OOM kills) in `kernel.state`. The host talks to the kernel over the ipc
unix sockets in that directory, so the container needs no network at all.

Hardening, all on by default: `--network none`, uid 1000, `--cap-drop ALL`, `no-new-privileges`, lllm's
seccomp profile (Docker's default minus io_uring, ptrace and kin: `lllm.sandbox.seccomp`), read-only root
filesystem, tmpfs `/tmp`, home and workspace with size limits, memory == memory+swap, CPU and PID limits, tini
as PID 1, no stdin (execute requests say `allow_stdin=False`, so `input()` fails at once), and labels naming
the owner process and session for the reaper.

Why the workspace is a tmpfs (`/home/sandbox/work`, the kernel's cwd): the kernel enforces its size without
root, quotas or loop devices on the host; its pages are charged to the container's memory cgroup, so the
memory limit bounds it as well; nothing a sandbox writes ever touches the host's disk; and it disappears with
the container. The price: files do not survive a container restart (a kernel restart keeps them, since only
the kernel process is replaced), and `docker cp` cannot see it, so `upload`/`download` go through `docker exec`
and the session directory (see `lllm.sandbox.files`).

The session directory itself is a tmpfs as large as the workspace when the host runs as root, since it is the
one host directory the container can write to.

On an engine elsewhere (`docker_host=`, `tls=`, or `DOCKER_HOST`/`DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`) nothing
is bind-mounted: `/run/lllm` is a tmpfs in the container, kept like the host's session directory by a relay
over one `docker exec` (`lllm.sandbox.remote`), and files stream over the helpers' stdin and stdout.

gVisor: `runtime="runsc"` (or `LLLM_SANDBOX_RUNTIME=runsc`) runs the same image under gVisor's user-space
kernel. Tested here with gVisor 2022-12 (Debian's `runsc`) registered in /etc/docker/daemon.json as
`{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=all"]}}}`
(then SIGHUP dockerd): `--host-uds=all` lets the kernel create its unix sockets in the bind-mounted session
directory, which the host connects to. The whole contract and hostile-input suites pass under it with these
differences: the PID limit also counts gVisor's own threads (use `pids` >= 128), a huge allocation is
OOM-killed rather than refused with MemoryError, a fork bomb runs out of memory before PIDs, and PID 1 can be
killed from inside (the sandbox then restarts its container). Start-up is about 1 s slower.

Packages: `packages=["scipy", ...]` runs an image with them installed (`lllm.sandbox.derived`, built on the
host's pip the first time); `packages="index"` lets pip in the sandbox reach the host's package index through a
relay on the session directory (`lllm.sandbox.package_relay`), and nothing else: the network stays off.

Lifetime: `name=` keeps a sandbox after its process ends (scope `session`), for `DockerSandbox.attach(name)`
from another process of the same user; `idle_timeout` and `max_lifetime` end any sandbox, whether its owner
lives or not (`lllm.sandbox.lifetime`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import posixpath
import re
import secrets
import shutil
import stat
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from lllm.errors import SandboxClosed, SandboxError, SandboxFileError, SandboxStartError, UsageError
from lllm.sandbox import _docker, _exec, commands, files, seccomp
from lllm.sandbox._cell_loop import CellSteps, ExitStatus, KernelSandbox, Listen
from lllm.sandbox.commands import CommandResult
from lllm.sandbox._kernel import KernelChannels, iopub_message_limit, write_connection_file
from lllm.sandbox._mounts import check_mounts, mount_specs
from lllm.sandbox._rundir import (container_user, make_session_dir, new_sandbox_id, read_guest_json,
                                 remove_session_dir)
from lllm.sandbox.base import (DEFAULT_MAX_OUTPUT_CHARS, RecordLimits, SandboxLimits, SandboxState,
                               parse_size)
from lllm.sandbox.fork import Forkable, RootBranches

WORKSPACE = "/home/sandbox/work"
HOME = "/home/sandbox"
RUN_DIR = "/run/lllm"
_RESERVED_ENV = {"LLLM_RUN_DIR", "HOME", "PYTHONPATH", "MPLBACKEND"}
PACKAGES_DIR = "/opt/lllm/packages"
"""With packages="index": where pip installs (PYTHONUSERBASE; a tmpfs of `limits.packages_size`)."""
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SCOPES = ("agent", "tactic", "session")
_live: weakref.WeakSet[DockerSandbox] = weakref.WeakSet()


@atexit.register
def _close_live_sandboxes() -> None:
    """At a normal interpreter exit, remove every sandbox this process still has open, but let go of named ones
    (they outlive the process; a SIGKILL skips this: then the reaper removes the others)."""
    for sandbox in list(_live):
        try:
            sandbox.detach() if sandbox.name else sandbox.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class DockerSandbox(RootBranches, Forkable, KernelSandbox):
    """A session's sandbox: a container with a Jupyter kernel, no network, hardened (see the module docstring).

    Args:
        image: the sandbox image; None: `ensure_image()` (builds it the first time).
        limits: memory, CPU, PID and tmpfs sizes.
        network: False (the default) runs with `--network none`. True gives the container Docker's default
            bridge network, i.e. open egress: only for trusted code.
        runtime: the OCI runtime; default `$LLLM_SANDBOX_RUNTIME` or `runc`. `runsc` (gVisor) works when dockerd
            registers it with `"runtimeArgs": ["--network=none", "--host-uds=all"]` (see the module docstring).
        env: extra environment variables for the kernel.
        cell_timeout: default `run_cell` timeout in seconds (None: no limit).
        interrupt_grace: seconds a timed-out cell gets to stop after the interrupt before the kernel is killed.
        start_timeout: seconds for the container and kernel to come up.
        max_output_chars: cap of `CellResult.text`.
        max_stored_chars: cap of `CellResult.stdout`/`stderr` each.
        max_display_bytes: a display bundle over this is dropped with a notice.
        labels: extra container labels.
        file_timeout: seconds an `upload`/`download`/`list_files` may take in the container before its helper
            is killed and the call fails with `SandboxFileError` (kernel code can stop or block the helpers).
        seccomp_profile: the syscall filter. None (the default): lllm's own profile, Docker's default minus
            io_uring, ptrace and a few more (see `lllm.sandbox.seccomp`); `"docker-default"`: the engine's
            default; or the path of a seccomp profile JSON file.
        tracer: receives a `CellRecord` per cell (and, with packages="index", a `PackageRecord` per package).
        agent: the agent name for those records.
        record_limits: how much the host keeps of what cells send, per cell and over the session.
        mounts: host folders shown read-only in the workspace, `{"/host/path": "name"}` -> `~/work/name` (see
            `lllm.sandbox._mounts`); checked here (a missing folder is a UsageError before anything starts).
        packages: None (the default): pip cannot download anything (it says how to get packages). A list of
            requirements (`["scipy", "rich>=13"]`): run an image with them installed, built on the host the
            first time (`lllm.sandbox.derived`; `image` is then the base). `"index"`: pip in the sandbox reaches
            the host's package index through a relay, and nothing else (`lllm.sandbox.package_relay`); pip
            installs into a tmpfs of `limits.packages_size`, and every file it fetches is recorded.
        name: keep the sandbox when this process ends, under this name (letters, digits, `_.-`): another process
            of the same user reconnects with `DockerSandbox.attach(name)`; `lllm sandbox rm NAME` removes it.
        scope: what the sandbox serves, shown by `lllm sandbox ls`: `agent`, `tactic` or `session` (the
            default: `session` with a name, else `agent`).
        idle_timeout: seconds without use (cells, files) after which the sandbox is removed (None: never).
        max_lifetime: seconds after its start after which the sandbox is removed, busy or not (None: never).
        max_branches: the most live branch kernels (`fork()`, `lllm.sandbox.fork`) the container may hold;
            None: what its PID limit leaves room for (`default_max_branches`).
        docker_host: the Docker engine, as DOCKER_HOST spells it (`tcp://10.0.0.5:2376`, `ssh://user@box`);
            None: `$DOCKER_HOST`, else the local engine.
        tls: TLS to that engine: True (`$DOCKER_CERT_PATH`'s ca.pem, cert.pem, key.pem), a folder with those
            files, or `{"ca": ..., "cert": ..., "key": ...}`; None: `$DOCKER_TLS_VERIFY` decides.
        transport: how host and container talk: `mount` (the session directory bind-mounted at /run/lllm: the
            engine must be on this machine), `relay` (everything over the Docker API: `lllm.sandbox.remote`), or
            None/`auto` (`$LLLM_SANDBOX_TRANSPORT`, else `relay` for an engine elsewhere, `mount` for a local one).
    """

    kind = "docker"

    @property
    def guest_uid(self) -> int | None:  # type: ignore[override]  # a property over the base's plain attribute
        """The container user's uid (1000 when the host runs as root, else the host's own)."""
        return container_user()[0]

    def __init__(self, *, image: str | None = None, limits: SandboxLimits | None = None, network: bool = False,
                 runtime: str | None = None, env: dict[str, str] | None = None, cell_timeout: float | None = 60.0,
                 interrupt_grace: float = 3.0, start_timeout: float = 60.0,
                 max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS, max_stored_chars: int = 1_000_000,
                 max_display_bytes: int = 8 << 20, labels: dict[str, str] | None = None, tracer: Any = None,
                 agent: str | None = None, seccomp_profile: str | Path | None = None,
                 file_timeout: float = 60.0, record_limits: RecordLimits | None = None,
                 mounts: dict[str | Path, str] | None = None,
                 packages: str | Sequence[str] | None = None, name: str | None = None, scope: str | None = None,
                 idle_timeout: float | None = None, max_lifetime: float | None = None,
                 max_branches: int | None = None, docker_host: str | None = None, tls: Any = None,
                 transport: str | None = None) -> None:
        super().__init__(cell_timeout=cell_timeout, max_output_chars=max_output_chars, tracer=tracer, agent=agent)
        bad = sorted(set(env or {}) & _RESERVED_ENV)
        if bad:
            raise UsageError(f"env may not set {bad!r}: the sandbox sets those itself")
        if not isinstance(network, bool):
            raise UsageError(f"network={network!r} must be True or False")
        self.image = image
        self.limits = limits or SandboxLimits()
        self.network = network
        self.runtime = runtime or os.environ.get("LLLM_SANDBOX_RUNTIME") or "runc"
        self.env = dict(env or {})
        self.interrupt_grace = interrupt_grace
        self.start_timeout = start_timeout
        self.max_stored_chars = max_stored_chars
        self.max_display_bytes = max_display_bytes
        self.record_limits = record_limits or RecordLimits()
        self.labels = dict(labels or {})
        self.seccomp_profile = seccomp_profile
        self.file_timeout = file_timeout
        self._security_opt = ["no-new-privileges", *seccomp.security_opt(seccomp_profile)]  # checked here, once
        self.mounts = check_mounts(mounts)
        """{resolved host folder: name under ~/work}, read-only."""
        self.container: Any = None
        self.channels: KernelChannels | None = None
        self._conn: dict[str, Any] = {}
        self._gen = 0
        self._lock = threading.RLock()
        self._last_container_check = 0.0
        self._cell_started = time.time()
        self._restart_note = ""
        self.packages, self.name, self.scope = _check_lifetime_options(packages, name, scope, idle_timeout,
                                                                       max_lifetime)
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.created = 0.0
        self._relay: Any = None
        self._busy = 0
        self._last_used = 0.0
        self._record_written = 0.0
        self._closed_reason = ""
        self.engine = _docker.engine_from(docker_host, tls)
        transport = transport or os.environ.get("LLLM_SANDBOX_TRANSPORT") or "auto"
        if transport not in ("auto", "mount", "relay"):
            raise UsageError(f"transport={transport!r} must be 'mount', 'relay' or 'auto'")
        self.transport = transport
        self._host_relay: Any = None
        self._fork_init()
        self._root_init(max_branches, self.limits.pids)

    def _client(self) -> Any:
        return _docker.client(self.engine)

    @property
    def relayed(self) -> bool:
        """Whether this sandbox talks to its container over the relay (no bind mount; `lllm.sandbox.remote`)."""
        if self.transport == "auto":
            self.transport = "mount" if _docker.is_local(self._client()) else "relay"
        return self.transport == "relay"

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def _start(self) -> None:
        check_mounts(self.mounts)  # a folder removed since the constructor: fail before anything exists
        self.sandbox_id = new_sandbox_id()
        if self.relayed and self.mounts:
            raise UsageError("mounts= shows host folders in the sandbox, which a Docker engine on another machine "
                             "cannot see; upload them (sb.upload(folder)) instead")
        image = self._resolve_image()
        self.image = image
        if self.name:
            _claim_name(self.name, self.engine)
        # A tmpfs as large as the workspace: uploads and downloads pass through it, nothing more is needed.
        size = self._run_dir_bytes()
        self._session_dir = make_session_dir(self.sandbox_id, size=size, keep=bool(self.name))
        try:
            if self.packages == "index":
                self._start_relay()
            self.created = time.time()
            self._conn = write_connection_file(self._session_dir, f"{RUN_DIR}/kernel")
            os.chmod(self._session_dir / "kernel.json", 0o600)
            from lllm.sandbox._rundir import chown_for_sandbox

            chown_for_sandbox(self._session_dir / "kernel.json")
            # The host side's imports (jupyter_client's message signing, ~0.1 s the first time in a process) load
            # while the engine creates and starts the container, not after it.
            host_side = threading.Thread(target=_import_host_side, daemon=True)
            host_side.start()
            try:
                with _docker.translate_errors(f"create the sandbox container from {image!r}"):
                    self.container = self._client().containers.create(image, **self._create_options())
                with _docker.translate_errors("start the sandbox container"):
                    self.container.start()
                if self.relayed:
                    self._start_host_relay()
            except SandboxError as exc:
                if self.name and "already in use" in str(exc):  # another process claimed the name just now
                    raise UsageError(f"a sandbox named {self.name!r} is already running: attach to it with "
                                     f"DockerSandbox.attach({self.name!r})", name=self.name) from exc
                if isinstance(exc, SandboxStartError):
                    raise
                hint = (f"; is the {self.runtime!r} runtime registered with dockerd (`docker info` lists them)?"
                        if "runtime" in str(exc) else "")
                raise SandboxStartError(f"{exc}{hint}", image=image, runtime=self.runtime) from exc
            self._gen = 1
            _live.add(self)
            host_side.join()
            self._connect()
            self._started()
        except BaseException as exc:
            logs = self._logs_tail()
            self._destroy()
            if isinstance(exc, SandboxStartError):
                hint = ""
                if self.runtime == "runsc" and self.limits.pids < 128:
                    hint = (f"\nunder gVisor the PID limit also counts gVisor's own threads: limits.pids="
                            f"{self.limits.pids} is too low, use 128 or more")
                if "kernel_start.py" in logs and "No such file" in logs:
                    hint += (f"\nthe image {image!r} lacks lllm's guest code in /opt/lllm/guest: build it FROM "
                             "lllm-sandbox:latest without removing /opt/lllm")
                if logs or hint:
                    raise SandboxStartError(f"{exc}{hint}" + (f"\ncontainer log (last lines):\n{logs}" if logs else ""),
                                            sandbox_id=self.sandbox_id) from exc
            raise

    def _resolve_image(self) -> str:
        """The image to run: the derived one for a list of packages, else the given one or the sandbox image;
        refused when it has no guest code (`lllm.sandbox.image.check_guest`)."""
        from lllm.sandbox.image import check_guest, ensure_image

        if isinstance(self.packages, tuple):
            from lllm.sandbox.derived import derived_image

            return derived_image(self.packages, base=self.image)
        if self.engine is not None or not _docker.is_local(self._client()):
            from lllm.sandbox.image import image_name

            image = self.image or image_name()  # built here, loaded there: never built on another machine
            check_guest(image, self.engine or _docker.engine_from_env())
            return image
        image = self.image or ensure_image()
        check_guest(image)
        return image

    def _create_options(self) -> dict[str, Any]:
        options = self._kernel_options()
        run_tmpfs = options.pop("tmpfs_run", None)
        if run_tmpfs:
            options["tmpfs"][RUN_DIR] = run_tmpfs
        self._lifetime_options(options)
        return options

    def _kernel_options(self) -> dict[str, Any]:
        lim = self.limits
        uid, gid = container_user()
        mem = parse_size(lim.memory)
        env = {**self.env, "LLLM_RUN_DIR": RUN_DIR, "HOME": HOME, "LLLM_MAX_DISPLAY_BYTES": str(self.max_display_bytes),
               "LLLM_MAX_ERROR_CHARS": str(self.record_limits.error_chars), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        tmpfs_opts = "rw,nosuid,nodev"
        return {
            "detach": True,
            "user": f"{uid}:{gid}",
            "network_mode": "bridge" if self.network else "none",
            "runtime": self.runtime,
            "cap_drop": ["ALL"],
            "security_opt": list(self._security_opt),
            "read_only": True,
            "tmpfs": {
                "/tmp": f"{tmpfs_opts},size={lim.tmp_size},mode=1777",
                HOME: f"{tmpfs_opts},size={lim.home_size},uid={uid},gid={gid},mode=700",
                WORKSPACE: f"{tmpfs_opts},size={lim.workspace_size},uid={uid},gid={gid},mode=700",
            },
            "mem_limit": mem,
            "memswap_limit": mem,
            "nano_cpus": int(lim.cpus * 1e9),
            "pids_limit": lim.pids,
            "ulimits": [_ulimit("nofile", lim.nofile)],
            # Kernel code can write to the supervisor's stdout (os.write(1, ...)), which the engine stores on the
            # host's disk: capped, else a loop fills /var/lib/docker. The last lines stay for start-up errors.
            "log_config": _log_config(),
            **self._run_dir_options(),
            "environment": env,
            "working_dir": WORKSPACE,
            "labels": _docker.owner_labels(self.sandbox_id, self.session_dir, self.labels),
            "stdin_open": False,
            "tty": False,
            "ipc_mode": "private",
            "name": f"lllm-{self.sandbox_id}",
        }

    def _run_dir_options(self) -> dict[str, Any]:
        """/run/lllm: the session directory bind-mounted, or (relay) a tmpfs the relay keeps like it."""
        if not self.relayed:
            return {"volumes": {str(self._session_dir): {"bind": RUN_DIR, "mode": "rw"}},
                    "mounts": mount_specs(self.mounts)}
        from lllm.sandbox import remote

        uid, gid = container_user()
        return {"tmpfs_run": f"rw,nosuid,nodev,size={self._run_dir_bytes()},uid={uid},gid={gid},mode=700",
                "command": remote.wait_for_connection_file(RUN_DIR, self.start_timeout)}

    def _run_dir_bytes(self) -> int:
        """The session directory's size (and with the relay, the container's /run/lllm): as large as the
        workspace, for the files that pass through it (a snapshot's namespace, a resume's)."""
        return max(16 << 20, parse_size(self.limits.workspace_size))

    def _start_host_relay(self) -> None:
        from lllm.sandbox import remote

        peer_names: set[str] = set()
        if self._host_relay is not None:
            self._host_relay.close()
            if self._host_relay.relay is not None:
                peer_names = set(self._host_relay.relay.from_peer)
        container = getattr(self.container, "_container", self.container)
        uid, gid = container_user()
        self._host_relay = remote.HostRelay(container, self.session_dir, user=f"{uid}:{gid}", run_dir=RUN_DIR,
                                            max_file=self._run_dir_bytes(),
                                            peer_names=peer_names).start(self.start_timeout)
        self.container = remote.SyncedContainer(container, self._host_relay)

    def _connect(self) -> None:
        if self.channels is not None:
            self.channels.close()
        self.channels = KernelChannels(self._conn, max_message_bytes=iopub_message_limit(self.max_display_bytes))
        self.channels.wait_ready(self.start_timeout, check_alive=self._check_alive_for_start)

    def _check_alive_for_start(self) -> None:
        ended = self.exit_status()
        if ended is not None:
            expired = _ended_reason(self._session_dir) if self._session_dir is not None else ""
            hint = f"; {expired}: give the sandbox a longer limit" if expired else ""
            raise SandboxStartError(f"the sandbox kernel did not come up: {ended.describe()}{hint}",
                                    sandbox_id=self.sandbox_id)

    def _close(self) -> None:
        self._destroy()

    def _destroy(self) -> None:
        self._end_branches(f"sandbox {self.sandbox_id!r}, which they were forked from, was closed")
        self._drop_supervisor_pidfd()
        from lllm.sandbox import lifetime

        lifetime.forget(self)
        if self.sandbox_id:
            lifetime.remove_record(self.sandbox_id)
        self._close_connections()
        if self.container is not None:
            try:
                with _docker.translate_errors("remove the sandbox container"):
                    self.container.remove(force=True)
            except SandboxError:
                pass  # already gone; the reaper catches anything left over
            self.container = None
        if self._session_dir is not None:
            remove_session_dir(self._session_dir)

    def _logs_tail(self) -> str:
        if self.container is None:
            return ""
        try:
            return self.container.logs(tail=20).decode(errors="replace").strip()
        except Exception:  # noqa: BLE001 - best effort, for an error message
            return ""

    # -- the kernel handle used by the cell loop -----------------------------------------------------------------
    def _read_state(self) -> dict[str, Any] | None:
        """The supervisor's state file, or None (kernel code can write /run/lllm: see `read_guest_json`)."""
        return read_guest_json(self.session_dir / "kernel.state", limit=4096)

    def exit_status(self, *, force_container: bool = False) -> ExitStatus | None:
        """None while the kernel lives; else how it ended (from the supervisor's state file or the container)."""
        state = self._read_state()
        if state and state.get("gen") == self._gen and state.get("state") == "exited":
            rc = state.get("rc")
            oom_start, oom_now = state.get("oom_kills_at_start", -1), state.get("oom_kills", -1)
            oom = isinstance(oom_now, int) and isinstance(oom_start, int) and oom_now > oom_start >= 0
            if oom_now == -1 and rc == -9 and not state.get("killed_by"):
                oom = True  # no cgroup counter readable: an unexplained SIGKILL is the OOM killer
            return ExitStatus(rc if isinstance(rc, int) else None, oom=oom)
        now = time.monotonic()
        if force_container or now - self._last_container_check > 1.0:
            self._last_container_check = now
            if not force_container and self._init_alive():
                return None  # the container's init runs, so does the container: no engine round trip (10-30 ms)
            try:
                self.container.reload()
            except Exception:  # noqa: BLE001 - the container is gone
                return ExitStatus(None, detail="the container is gone")
            if self.container.status != "running":
                info = self.container.attrs.get("State", {})
                code = info.get("ExitCode")
                # Exit 137 alone is any SIGKILL (kernel code can kill the supervisor), and Docker's OOMKilled
                # stays set for any OOM kill since the container started (an earlier kernel's): so it counts
                # only with an `oom` event for this container during this cell.
                oom = bool(info.get("OOMKilled")) and self._oom_events_since(self._cell_started)
                return ExitStatus(code, oom=oom, detail="the whole container stopped", container=True)
        return None

    def _init_alive(self) -> bool:
        """True when a pidfd of the container's init (`RootBranches._supervisor_pidfd`) shows it has not exited;
        False when it has, or there is no such pidfd (then ask the engine)."""
        import select

        pidfd = self._supervisor_pidfd(self.container) if self.container is not None else None
        if pidfd is None:
            return False
        try:
            return not select.select([pidfd], [], [], 0)[0]  # a pidfd turns readable when its process exits
        except (OSError, ValueError):
            return False

    def _oom_events_since(self, since: float) -> bool:
        try:
            events = self._client().events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                             filters={"container": self.container.id, "event": "oom"})
            return any(True for _ in events)
        except Exception:  # noqa: BLE001 - no events API: trust OOMKilled
            return True

    def send_interrupt(self) -> None:
        """Interrupt the running cell with a control-channel interrupt_request (the kernel SIGINTs itself).
        A kernel that ignores it is killed and restarted by the cell loop after the grace period."""
        if self.channels is not None:
            self.channels.send_control("interrupt_request")

    def restart_kernel(self) -> None:
        """Kill the kernel and start a new one (the supervisor does it on SIGHUP); if the whole container died,
        start the container again (its tmpfs files are then lost too)."""
        self._refuse_if_expired()
        if self.channels is not None:
            self.channels.close()
            self.channels = None
        ended = self._end_branches("the kernel they were forked from was restarted (the supervisor killed them)")
        with _docker.translate_errors("restart the sandbox kernel"):
            self.container.reload()
            if self.container.status == "running":
                self.container.kill(signal="SIGHUP")
            else:
                _remove_entry(self.session_dir / "kernel.state")  # whatever kernel code left there
                self.container.start()
                if self.relayed:
                    self._start_host_relay()  # the old one ended with the container, and /run/lllm is empty
                self._gen = 0
        self._gen += 1
        if self.relayed and not self._host_relay.flush(2.0):
            # kernel code can stop or kill the relay (the same uid): start another, the restart cleans up after it
            self._start_host_relay()
        deadline = time.monotonic() + self.start_timeout
        while True:
            state = self._read_state()
            if state and state.get("gen") == self._gen and state.get("state") == "running":
                break
            if time.monotonic() > deadline:
                raise SandboxStartError(f"the kernel of sandbox {self.sandbox_id!r} did not restart within "
                                        f"{self.start_timeout:.0f}s", sandbox_id=self.sandbox_id)
            time.sleep(0.01)
        self._restart_note = _cleanup_note((state or {}).get("cleanup")) if self._gen > 1 else ""
        if ended:
            self._restart_note = "; ".join(filter(None, [self._restart_note, _ended_note(ended)]))
        self._connect()

    def restart_note(self) -> str:
        """What the last restart cleaned up besides the kernel: the old kernel's other processes (all killed)
        and the home directory (reset); '' after a restart of the whole container (nothing of it is left)."""
        return self._restart_note

    # -- backend hooks --------------------------------------------------------------------------------------------
    def _on_cell_start(self) -> None:
        self._cell_started = time.time()

    # -- commands -------------------------------------------------------------------------------------------------
    def _run_command(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                     stdin: bytes | None, listen: Listen | None) -> CommandResult:
        """`docker exec` of the command's supervisor (`lllm.sandbox.commands`) as the sandbox user, in the
        workspace; its streams are read as they come. Past the timeout and the supervisor's grace, the
        supervisor is killed from the host and the command's process group from inside the container."""
        uid, gid = container_user()
        nonce = commands.new_nonce()
        started = time.monotonic()
        workdir = WORKSPACE if cwd is None else posixpath.normpath(posixpath.join(WORKSPACE, cwd))
        request = commands.command_request(argv, nonce=nonce, cwd=workdir, env=env, timeout=timeout, oom=True,
                                           stdin=stdin)
        pump = commands.CommandPump(nonce, max_stored_chars=self.max_stored_chars, listen=listen)
        session = _exec.ExecSession(self.container, ["python3", *commands.GUEST_ARGS],
                                    user=f"{uid}:{gid}", workdir=WORKSPACE, stdin=True,
                                    what="the command's supervisor")
        backstop = False
        try:
            for stream, body in session.exchange(request, None if timeout is None else
                                                 started + timeout + commands.BACKSTOP_S):
                pump.feed(stream, body)
        except TimeoutError:
            backstop = True
        except OSError as exc:
            pump.broken = f"the connection to it broke: {exc}"
        finally:
            session.close()
        if backstop:
            session.kill()
            if pump.pid:
                self._kill_command_group(pump.pid)
        return pump.finish(argv, duration_s=time.monotonic() - started, backstop=backstop)

    def _kill_command_group(self, pid: int) -> None:
        """Kill a command's process group and session from inside the container (its supervisor is gone)."""
        uid, gid = container_user()
        script = commands.GUEST_SOURCE.replace('if __name__ == "__main__":', "if False:") + f"\nkill_tree({pid})\n"
        try:
            _exec.run_capped(self.container, ["python3", "-I", "-S", "-c", script], user=f"{uid}:{gid}", timeout=10,
                             max_bytes=1 << 16, what="the command killer")
        except SandboxError:
            pass  # the container is gone, or the killer was stopped too: the container's removal ends them

    # -- files ----------------------------------------------------------------------------------------------------
    def _exec_files(self, op: str, *, script: str = files.CONTAINER_SCRIPT, send: IO[bytes] | None = None,
                    sink: IO[bytes] | None = None, max_sink: int = 0, **args: str) -> files.HelperReply:
        """Run the file helper (`files.CONTAINER_SCRIPT`) for one operation: isolated Python (`-I`), the
        request and a fresh nonce on stdin (then `send`, for a folder's archive), output capped and timed
        (`_exec.run_capped`; the archive of `getdir` goes to `sink`); only the line that carries the nonce is
        taken as the reply."""
        uid, gid = container_user()
        nonce = secrets.token_hex(16)
        request = files.helper_request(op, nonce, workspace=WORKSPACE, run_dir=RUN_DIR, **args)
        stdin: bytes | _exec.Readable = request if send is None else _Chain(request, send)
        out = _exec.run_capped(self.container, ["python3", "-I", "-c", script], user=f"{uid}:{gid}", stdin=stdin,
                               timeout=self.file_timeout, max_bytes=files.MAX_REPLY_BYTES,
                               what=f"the {op!r} file helper", sink=sink, max_sink=max_sink)
        if sink is not None:
            return files.parse_reply(out.stderr, b"", nonce, op=op)
        return files.parse_reply(out.stdout, out.stderr, nonce, op=op)

    def _workspace_bytes(self) -> int:
        return parse_size(self.limits.workspace_size)

    def upload(self, src: str | Path | bytes, dest: str | None = None) -> str:
        self._require_running("upload")
        rel = files.clean_relative(files.default_dest(src, dest), workspace=WORKSPACE)
        if rel == ".":
            raise SandboxFileError(f"upload destination {dest!r} names the workspace itself; give a file name",
                                   path=dest)
        limit = min(files.MAX_TRANSFER_BYTES, self._workspace_bytes())
        if files.is_folder(src):
            return self._upload_folder(Path(src), rel, limit)  # type: ignore[arg-type]
        if self.relayed:  # on the helper's stdin: no host directory is shared with the container
            import io

            data = files.read_source(src, limit=limit)
            reply = self._exec_files("put", send=io.BytesIO(data), rel=rel, size=str(len(data)))
            if not reply.ok:
                raise SandboxFileError(f"upload to {dest!r} refused: {reply.error}", path=dest)
            return rel
        name = files.host_write_xfer(self.session_dir, files.read_source(src, limit=limit))
        try:
            reply = self._exec_files("put", xfer=name, rel=rel)
        finally:
            _remove_entry(self.session_dir / name)
        if not reply.ok:
            raise SandboxFileError(f"upload to {dest!r} refused: {reply.error}", path=dest)
        return rel

    def _upload_folder(self, src: Path, rel: str, limit: int) -> str:
        """A folder goes as one tar on the helper's stdin (not through the session directory, which code in the
        sandbox can write to); the helper checks every member again as it unpacks (`putdir`)."""
        archive, size = files.pack_folder(src, limit=limit, limit_name=f"the sandbox's workspace "
                                                                         f"({self.limits.workspace_size})")
        with archive:
            reply = self._exec_files("putdir", script=files.ARCHIVE_SCRIPT, send=archive, rel=rel, size=str(size))
        if not reply.ok:
            raise SandboxFileError(f"upload of folder {str(src)!r} to {rel!r} refused: {reply.error}", path=rel)
        return rel

    def download(self, path: str) -> bytes:
        self._require_running("download")
        rel = files.clean_relative(path, workspace=WORKSPACE)
        if self.relayed:  # on the helper's stdout, capped
            import io

            sink = io.BytesIO()
            reply = self._exec_files("get", sink=sink, max_sink=min(files.MAX_TRANSFER_BYTES,
                                                                    self._workspace_bytes() * 2), rel=rel)
            if not reply.ok:
                raise SandboxFileError(f"download of {path!r} refused: {reply.error}", path=path)
            return sink.getvalue()
        name = files.xfer_name()
        try:
            reply = self._exec_files("get", rel=rel, xfer=name)
        except SandboxFileError:
            _remove_entry(self.session_dir / name)
            raise
        if not reply.ok:
            _remove_entry(self.session_dir / name)
            raise SandboxFileError(f"download of {path!r} refused: {reply.error}", path=path)
        return files.host_take_xfer(self.session_dir, name)

    def download_dir(self, path: str, dest: str | Path) -> Path:
        """The helper packs the folder onto its stdout (never through the session directory); the host treats
        what arrives as hostile: every member is checked before anything is written under `dest`."""
        import tempfile

        self._require_running("download_dir")
        rel = files.clean_relative(path, workspace=WORKSPACE)
        files.check_download_dest(dest, what=f"download of folder {path!r}")
        limit = min(files.MAX_TRANSFER_BYTES, self._workspace_bytes() * 2)
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as archive:
            reply = self._exec_files("getdir", script=files.ARCHIVE_SCRIPT, sink=archive, max_sink=limit, rel=rel,
                                     limit=str(limit))
            if not reply.ok:
                raise SandboxFileError(f"download of folder {path!r} refused: {reply.error}", path=path)
            archive.seek(0)
            return files.unpack_folder(archive, dest, max_bytes=limit, what=f"download of folder {path!r}")

    def list_files(self, path: str = ".") -> list[str]:
        self._require_running("list_files")
        reply = self._exec_files("ls", rel=files.clean_relative(path, workspace=WORKSPACE))
        if not reply.ok:
            raise SandboxFileError(f"cannot list {path!r}: {reply.error}", path=path)
        return list(reply.files or [])

    # -- packages through the host ------------------------------------------------------------------------------
    def _start_relay(self) -> None:
        from lllm.sandbox.package_relay import PackageRelay, host_index

        if self._relay is not None:
            self._relay.close()
        self._relay = PackageRelay(self.session_dir, host_index(), report=self._report_package,
                                   sandbox_id=self.sandbox_id).start()

    def _report_package(self, record: Any) -> None:
        tracer = self.tracer
        if tracer is not None:
            record.agent = self.agent
            tracer(record)

    @property
    def package_index(self) -> str | None:
        """With packages="index": the index pip in the sandbox reaches (without credentials); else None."""
        return self._relay.index.display if self._relay is not None else None

    def _lifetime_options(self, options: dict[str, Any]) -> None:
        """What scope, limits and packages add to the container: labels for the reaper and `lllm sandbox ls`,
        the supervisor's deadlines, and pip's settings and directory when packages come through the host."""
        from lllm.sandbox.package_relay import GUEST_PORT

        env, labels, tmpfs = options["environment"], options["labels"], options["tmpfs"]
        if self.name:
            options["name"] = f"lllm-s-{self.name}"  # the engine refuses a second container of that name
        labels[_docker.LABEL_SCOPE] = self.scope
        labels[_docker.LABEL_CREATED] = f"{self.created:.3f}"
        env["LLLM_CREATED"] = f"{self.created:.3f}"
        if self.name:
            labels[_docker.LABEL_NAME] = self.name
        if self.idle_timeout:
            labels[_docker.LABEL_IDLE] = env["LLLM_IDLE_TIMEOUT"] = f"{self.idle_timeout:g}"
        if self.max_lifetime:
            labels[_docker.LABEL_LIFETIME] = env["LLLM_MAX_LIFETIME"] = f"{self.max_lifetime:g}"
        if self._relay is not None:
            uid, gid = container_user()
            tmpfs[PACKAGES_DIR] = f"rw,nosuid,nodev,size={self.limits.packages_size},uid={uid},gid={gid},mode=700"
            env.update({
                "LLLM_PACKAGES": "index", "LLLM_PACKAGE_PORT": str(GUEST_PORT),
                "LLLM_PACKAGE_INDEX_NAME": self._relay.index.display, "PIP_INDEX_URL": self._relay.guest_index_url(),
                "PIP_RETRIES": "2", "PIP_TIMEOUT": "60", "PIP_USER": "1", "PIP_BREAK_SYSTEM_PACKAGES": "1",
                "PYTHONUSERBASE": PACKAGES_DIR, "PATH": f"{PACKAGES_DIR}/bin:{_DEFAULT_PATH}",
            })

    # -- lifetime: records, use, limits, detach and attach ---------------------------------------------------------
    def _started(self) -> None:
        from lllm.sandbox import lifetime

        self._touch(force=True)
        if self.idle_timeout or self.max_lifetime:
            lifetime.watch(self)

    def _record_data(self) -> dict[str, Any]:
        from lllm.sandbox._rundir import host_id, process_start_time

        return {
            "sandbox_id": self.sandbox_id, "name": self.name, "scope": self.scope,
            "container": getattr(self.container, "id", None), "container_name": getattr(self.container, "name", ""),
            "session_dir": str(self.session_dir), "image": self.image, "network": self.network,
            "runtime": self.runtime, "limits": self.limits.model_dump(), "transport": self.transport,
            "packages": "index" if self.packages == "index" else None,
            "idle_timeout": self.idle_timeout, "max_lifetime": self.max_lifetime, "created": self.created,
            "last_used": self._last_used, "kernel": self._conn, "gen": self._gen,
            # what the next cell must tell the model (e.g. what a resume did not restore), for whichever process
            # runs that cell: `lllm sandbox resume` starts a sandbox and lets go of it before any cell
            "notices": list(self._pending_notices),
            "owner": {"pid": os.getpid(), "start": process_start_time(os.getpid()), "host": host_id(),
                      "uid": os.geteuid()},
        }

    def _touch(self, *, force: bool = False) -> None:
        """Note a use: now is the last use, for the watchdog, the supervisor (`last_used` in the session
        directory) and the reaper (the record, rewritten at most every few seconds)."""
        from lllm.sandbox import lifetime

        now = time.time()
        self._last_used = now
        if self._session_dir is None:
            return
        lifetime.touch_file(self._session_dir)
        if force or now - self._record_written > 5.0:
            self._record_written = now
            try:
                lifetime.write_record(self.sandbox_id, self._record_data())
            except OSError:
                pass  # attach and the reaper's idle view are the poorer for it; the sandbox itself is fine

    def cell_steps(self, code: str, *, timeout: float | None, listen: Listen | None = None) -> CellSteps:
        # Wrapping the steps (not `_run_cell`) counts async cells as use too, and keeps `_run_cell`'s signature,
        # by which the base class knows this backend streams (`listen=`).
        with self.in_use():
            return (yield from super().cell_steps(code, timeout=timeout, listen=listen))

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Count what runs inside as use of this sandbox (its own cells, its branches' cells): the watchdog, the
        supervisor and the reaper do not end a sandbox that is busy, and its idle time starts when it ends."""
        self._busy += 1
        self._touch()
        try:
            yield
        finally:
            self._busy -= 1
            self._touch()

    def _watch(self, now: float) -> float | None:
        """The watchdog's look (`lllm.sandbox.lifetime`): end the sandbox when its time is up."""
        if self._state is not SandboxState.RUNNING:
            return None
        due: list[float] = []
        reason = ""
        if self.max_lifetime:
            end = self.created + self.max_lifetime
            if now >= end:
                reason = f"its lifetime of {self.max_lifetime:g}s ended"
            due.append(end - now)
        if self.idle_timeout:
            if self._busy:
                if now - self._last_used > self.idle_timeout / 4:
                    self._touch()  # a long cell is use: keep the supervisor and the reaper from ending it
                due.append(self.idle_timeout / 4)
            else:
                end = self._last_used + self.idle_timeout
                if now >= end and not reason:
                    reason = f"it was idle for {self.idle_timeout:g}s"
                due.append(end - now)
        if reason:
            self._expire(reason)
            return None
        return min(due) if due else None

    def _expire(self, reason: str) -> None:
        self._closed_reason = reason
        if self._lock.acquire(blocking=False):
            try:
                self.close()
            finally:
                self._lock.release()
            return
        try:  # a cell is running: stop the container; the cell loop's restart then refuses (_refuse_if_expired)
            self.container.kill()
        except Exception:  # noqa: BLE001 - already stopped or gone
            pass

    def _refuse_if_expired(self) -> None:
        if self._closed_reason:
            if self._state is SandboxState.RUNNING:
                self.close()
            raise SandboxClosed(f"sandbox {self.sandbox_id!r} was removed because {self._closed_reason}; start a "
                                "new one", sandbox_id=self.sandbox_id, reason=self._closed_reason)

    def _check_not_closed(self, what: str) -> None:
        if self._state is SandboxState.CLOSED and self._closed_reason:
            raise SandboxClosed(f"{what}() on sandbox {self.sandbox_id!r}: {self._closed_reason}; start a new one"
                                + (f" (or DockerSandbox.attach({self.name!r}))" if "detached" in self._closed_reason
                                   else ""), sandbox_id=self.sandbox_id, reason=self._closed_reason)
        super()._check_not_closed(what)

    def _close_connections(self) -> None:
        """This process's links to the sandbox: the package relay, the kernel channels, the host side of the relay
        transport (closing and detaching both end them; only closing removes the container)."""
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self.channels is not None:
            self.channels.close()
            self.channels = None
        if self._host_relay is not None:
            self._host_relay.close()
            self._host_relay = None

    def detach(self) -> None:
        """Let go of the sandbox without removing it: this process closes its connections (and its package
        relay); the container, its session directory and its record stay, for `DockerSandbox.attach` from this
        or another process. A named sandbox is detached (not removed) at interpreter exit; an unnamed one
        detached is an orphan once this process ends, and the reaper removes it."""
        from lllm.sandbox import lifetime

        if self._state is not SandboxState.RUNNING:
            return
        with self._lock:
            lifetime.forget(self)
            self._touch(force=True)
            self._close_connections()
            _live.discard(self)
            self._drop_supervisor_pidfd()
            self._closed_reason = "it was detached from this process"
            self._state = SandboxState.CLOSED

    def __del__(self) -> None:
        if getattr(self, "name", None) and getattr(self, "_state", None) is SandboxState.RUNNING:
            try:
                self.detach()  # a named sandbox outlives the object that started it
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
            return
        super().__del__()

    @classmethod
    def attach(cls, sandbox: str, *, docker_host: str | None = None, tls: Any = None, **use: Any) -> DockerSandbox:
        """Reconnect to a live sandbox of this user on this host, by name or sandbox id (`lllm sandbox ls`),
        from any process: the kernel's state is as it was (variables, files, installed packages).

        Args:
            sandbox: the name (`DockerSandbox(name=...)`, a tactic call's `sandbox_session=`) or sandbox id.
            docker_host, tls: the engine it runs on, as for the constructor (default: the environment's).
            **use: per-use options (`cell_timeout`, `max_output_chars`, `tracer`, `agent`).

        Raises:
            SandboxError: there is no such sandbox, it is no longer running, it belongs to another user or host,
                or its record is missing (`reason`: `missing`, `dead`, `foreign`, `no_record`; the message
                says what to do). Nothing is started or left behind.
        """
        from lllm.sandbox import lifetime

        container = lifetime.find_container(sandbox, _docker.engine_from(docker_host, tls))
        if container is None:
            raise SandboxError(f"no sandbox named {sandbox!r} (nor with that id) on this Docker engine; `lllm "
                               "sandbox ls` lists them. Start one with DockerSandbox(name=...) or a tactic call "
                               "with sandbox_session=...", sandbox=sandbox, reason="missing")
        labels = container.labels or {}
        if labels.get(_docker.LABEL_UID) != str(os.geteuid()) or _docker.owned_elsewhere(labels):
            raise SandboxError(f"sandbox {sandbox!r} belongs to another user or host (uid "
                               f"{labels.get(_docker.LABEL_UID, '?')}, host {labels.get(_docker.LABEL_HOST, '?')}); "
                               "only its owner can attach to it: start a sandbox of your own", sandbox=sandbox,
                               reason="foreign")
        sandbox_id = labels.get(_docker.LABEL_SESSION, "")
        if container.status != "running":
            why = _ended_reason(Path(labels.get(_docker.LABEL_DIR, "")))
            raise SandboxError(f"sandbox {sandbox!r} is not running ({container.status}{': ' + why if why else ''}); "
                               f"its state is gone. Remove it with `lllm sandbox rm {sandbox}` (or `lllm sandbox "
                               "gc`) and start a new one", sandbox=sandbox, reason="dead")
        record = lifetime.read_record(sandbox_id)
        if record is None or record.get("container") != container.id:
            raise SandboxError(f"sandbox {sandbox!r} runs, but this user has no record of it under "
                               f"{str(lifetime.records_dir())!r} (started with another LLLM_RUN_ROOT?); set "
                               "LLLM_RUN_ROOT as its owner had it", sandbox=sandbox, reason="no_record")
        self = cls(image=record["image"], limits=SandboxLimits(**record["limits"]), network=record["network"],
                   runtime=record["runtime"], name=record.get("name"), scope=record.get("scope"),
                   idle_timeout=record.get("idle_timeout"), max_lifetime=record.get("max_lifetime"),
                   packages=record.get("packages"), docker_host=docker_host, tls=tls,
                   transport=record.get("transport"), **use)
        self.sandbox_id = sandbox_id
        self.container = container
        self._session_dir = Path(record["session_dir"])
        self._conn = dict(record["kernel"])
        self.created = float(record["created"])
        self._pending_notices = [str(note) for note in record.get("notices") or [] if isinstance(note, str)]
        state = self._read_state()
        gen = state.get("gen") if state else None
        self._gen = gen if isinstance(gen, int) else int(record.get("gen") or 1)
        owner_gone = not _owner_alive(record.get("owner"))
        if owner_gone:
            for stale in ("gateway.sock", "gateway.token"):  # its gateway went with its process
                _remove_entry(self._session_dir / stale)
        try:
            if self.packages == "index":
                self._start_relay()
            if self.relayed:  # a relay of our own: the one of the process before ended with it
                self._start_host_relay()
            self._connect()
        except BaseException:
            if self._host_relay is not None:
                self._host_relay.close()
            if self.channels is not None:
                self.channels.close()
            if self._relay is not None:
                self._relay.close()
            raise
        self._state = SandboxState.RUNNING
        _live.add(self)
        self._started()
        if owner_gone:  # its branch kernels went on running, but only that process held their keys
            self.end_leftover_branches()
        return self


def _claim_name(name: str, engine: Any = None) -> None:
    """Make sure no live sandbox has `name`; a stopped one of this user (its time was up) is removed."""
    from lllm.sandbox.lifetime import find_container

    container = find_container(name, engine)
    if container is None or (container.labels or {}).get(_docker.LABEL_NAME) != name:
        return
    if container.status == "running":
        raise UsageError(f"a sandbox named {name!r} is already running: attach to it with "
                         f"DockerSandbox.attach({name!r}), or remove it with `lllm sandbox rm {name}`", name=name)
    if (container.labels or {}).get(_docker.LABEL_UID) != str(os.geteuid()):
        raise UsageError(f"the name {name!r} is taken by another user's sandbox; choose another", name=name)
    from lllm.sandbox.reaper import remove_container

    remove_container(container, engine)


def _owner_alive(owner: Any) -> bool:
    from lllm.sandbox._rundir import owner_alive

    if not isinstance(owner, dict):
        return False
    try:
        return owner_alive(int(owner.get("pid") or 0), str(owner.get("start") or ""), str(owner.get("host") or ""))
    except (TypeError, ValueError):
        return False


def _ended_reason(session_dir: Path) -> str:
    """What the supervisor said when the container stopped by itself (`expired`: its lifetime or idle time)."""
    try:
        fd = os.open(session_dir / "kernel.state", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            state = json.loads(fh.read(4096) or b"")
    except (OSError, ValueError):
        return ""
    if isinstance(state, dict) and state.get("state") == "expired" and isinstance(state.get("reason"), str):
        return f"it stopped because {state['reason'][:200]}"
    return ""


def _check_lifetime_options(packages: Any, name: Any, scope: Any, idle_timeout: Any,
                            max_lifetime: Any) -> tuple[Any, str | None, str]:
    if packages is not None and packages != "index":
        if isinstance(packages, str) or not all(isinstance(p, str) and p.strip() for p in packages):
            raise UsageError(f"packages={packages!r}: give 'index' (pip reaches your package index through the host) "
                             "or a list of requirements such as ['scipy', 'rich>=13']")
        packages = tuple(p.strip() for p in packages)
        if not packages:
            packages = None
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise UsageError(f"name={name!r}: a sandbox name is 1-63 letters, digits, '_', '.' or '-', starting with a "
                         "letter or digit")
    scope = scope or ("session" if name else "agent")
    if scope not in SCOPES:
        raise UsageError(f"scope={scope!r} must be one of {SCOPES!r}")
    if scope == "session" and not name:
        raise UsageError("scope='session' keeps the sandbox under a name: give name= (a tactic call takes it as "
                         "sandbox_session=ID)")
    for key, value in (("idle_timeout", idle_timeout), ("max_lifetime", max_lifetime)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise UsageError(f"{key}={value!r} must be a positive number of seconds or None")
    return packages, name, scope


class _Chain:
    """`head` bytes, then what `tail` reads: a request line followed by an archive, as one stdin."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self.head = head
        self.tail = tail

    def read(self, size: int = -1, /) -> bytes:
        if self.head:
            part, self.head = self.head[: size if size >= 0 else None], self.head[size if size >= 0 else len(self.head):]
            return part
        return self.tail.read(size)


def _import_host_side() -> None:
    import jupyter_client.session  # noqa: F401 - loaded ahead, in parallel with the container's start


def _cleanup_note(cleanup: Any) -> str:
    """The supervisor's report of a restart's clean-up (`kernel.state`'s `cleanup`), for a notice. Kernel code can
    write that file too, so only whole numbers are taken from it."""
    cleanup = cleanup if isinstance(cleanup, dict) else {}
    killed = cleanup.get("killed")
    if not isinstance(killed, int) or isinstance(killed, bool) or killed < 0:
        return "the old kernel's other processes were killed and the home directory was reset (the workspace is kept)"
    others = (f"{killed} process{'es' if killed != 1 else ''} it had left running were killed" if killed else
              "it had left no other process running")
    return f"nothing of the old kernel is left ({others}) and the home directory was reset (the workspace is kept)"


def _ended_note(ended: list[str]) -> str:
    return f"its {len(ended)} branch kernel{'s' if len(ended) != 1 else ''} ({', '.join(ended)}) ended with it"


def _remove_entry(path: Path) -> None:
    """Remove one name from a session directory: a file, link or FIFO is unlinked (never followed); a directory
    is removed with `shutil.rmtree`, which works on file descriptors and never follows a symlink inside."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


CONTAINER_LOG_MAX = "1m"
"""The most container output (the supervisor's and the kernel's fds 1 and 2) the engine keeps on the host."""


def _log_config() -> Any:
    import docker.types

    return docker.types.LogConfig(type="json-file", config={"max-size": CONTAINER_LOG_MAX, "max-file": "1"})


def _ulimit(name: str, value: int) -> Any:
    import docker.types

    return docker.types.Ulimit(name=name, soft=value, hard=value)
