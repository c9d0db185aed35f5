"""`LocalSandbox`: the Sandbox protocol on a local ipykernel subprocess. NOT ISOLATED: for machines without Docker.

The kernel runs as the host user, with the host's network, files and memory: code in it can do anything that
user can. It has no resource limits. Use it for development and tests of trusted code; run model-written code
in `DockerSandbox`. What it shares with `DockerSandbox` is everything else: the same cell loop (timeouts with
interrupt then kill-and-restart, output caps, death reports), the same ipc-socket channels in a session
directory (`LLLM_RUN_DIR` is that host directory itself), the same kernel start-up (`lllm_kernel_init`, which
installs the guest API when `lllm_guest` is importable), and a workspace (`<session_dir>/work` unless
`workdir=` is given) that is the kernel's cwd and the root for `upload`/`download`/`list_files`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from lllm.errors import SandboxStartError, UsageError
from lllm.sandbox import files
from lllm.sandbox._cell_loop import ExitStatus, KernelSandbox, Listen
from lllm.sandbox.commands import CommandResult
from lllm.sandbox._kernel import KernelChannels, iopub_message_limit, write_connection_file
from lllm.sandbox._rundir import make_session_dir, new_sandbox_id, remove_session_dir
from lllm.sandbox.base import DEFAULT_MAX_OUTPUT_CHARS, RecordLimits


def guest_dir() -> Path | None:
    """Where the guest modules (`lllm_kernel_init`, `lllm_guest`) live: the checkout's `sandbox/`, or the
    copy a wheel carries as `lllm/sandbox/image_source/sandbox/` (see setup.py)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "sandbox", here.parent / "image_source" / "sandbox"):
        if (candidate / "lllm_kernel_init.py").is_file():
            return candidate
    return None


class LocalSandbox(KernelSandbox):
    """A local, NOT isolated kernel behind the Sandbox protocol (see the module docstring).

    Args:
        env: extra environment variables for the kernel (on top of the host's).
        workdir: the workspace (kernel cwd); default `<session_dir>/work`, deleted with the sandbox.
        python: the interpreter to run the kernel with (needs ipykernel); default this one.
        cell_timeout, interrupt_grace, start_timeout, max_output_chars, max_stored_chars, max_display_bytes,
        tracer, agent, record_limits: as for `DockerSandbox`.
    """

    kind = "local"

    def __init__(self, *, env: dict[str, str] | None = None, workdir: str | Path | None = None,
                 python: str | None = None, cell_timeout: float | None = 60.0, interrupt_grace: float = 3.0,
                 start_timeout: float = 60.0, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
                 max_stored_chars: int = 1_000_000, max_display_bytes: int = 8 << 20, tracer: Any = None,
                 agent: str | None = None, record_limits: RecordLimits | None = None) -> None:
        super().__init__(cell_timeout=cell_timeout, max_output_chars=max_output_chars, tracer=tracer, agent=agent)
        if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise UsageError(f"env must map str to str, got {env!r}")
        self.env = dict(env or {})
        self.workdir = Path(workdir) if workdir is not None else None
        self.python = python or sys.executable
        self.interrupt_grace = interrupt_grace
        self.start_timeout = start_timeout
        self.max_stored_chars = max_stored_chars
        self.max_display_bytes = max_display_bytes
        self.record_limits = record_limits or RecordLimits()
        self.channels: KernelChannels | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def workspace(self) -> Path:
        """The kernel's working directory on the host."""
        return self.workdir if self.workdir is not None else self.session_dir / "work"

    # -- lifecycle --------------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.sandbox_id = new_sandbox_id()
        self._session_dir = make_session_dir(self.sandbox_id, chown=False)
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
            self._conn = write_connection_file(self._session_dir, str(self._session_dir / "kernel"))
            os.chmod(self._session_dir / "kernel.json", 0o600)
            self._spawn()
        except BaseException:
            self._destroy()
            raise

    def _env(self) -> dict[str, str]:
        """The kernel's environment: this process's, the sandbox's `env`, and lllm's own variables."""
        env = dict(os.environ)
        env.update(self.env)
        guest = guest_dir()
        paths = [str(guest)] if guest else []
        paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update({"PYTHONPATH": os.pathsep.join(paths), "LLLM_RUN_DIR": str(self.session_dir),
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                    "LLLM_MAX_DISPLAY_BYTES": str(self.max_display_bytes),
                    "LLLM_MAX_ERROR_CHARS": str(self.record_limits.error_chars)})
        return env

    def _spawn(self) -> None:
        env = self._env()
        guest = guest_dir()
        launcher = "lllm_kernel_boot" if guest else "ipykernel_launcher"  # the former skips debugger imports
        cmd = [self.python, "-Xfrozen_modules=off", "-m", launcher, "-f",
               str(self.session_dir / "kernel.json"), "--HistoryManager.enabled=False", "--IPKernelApp.log_level=WARN"]
        if guest:
            cmd.append("--IPKernelApp.extra_extensions=lllm_kernel_init")
        log = open(self.session_dir / "kernel.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(cmd, cwd=self.workspace, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
        except OSError as exc:
            raise SandboxStartError(f"cannot start a local kernel with {self.python!r}: {exc}",
                                    python=self.python) from exc
        finally:
            log.close()
        self.channels = KernelChannels(self._conn, max_message_bytes=iopub_message_limit(self.max_display_bytes))
        self.channels.wait_ready(self.start_timeout, check_alive=self._check_alive_for_start)

    def _check_alive_for_start(self) -> None:
        ended = self.exit_status()
        if ended is not None:
            try:
                tail = (self.session_dir / "kernel.log").read_text(errors="replace")[-2000:]
            except OSError:
                tail = ""
            raise SandboxStartError(f"the local kernel did not come up: {ended.describe()}\n{tail}")

    def _kill(self) -> None:
        if self.channels is not None:
            self.channels.close()
            self.channels = None
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def _destroy(self) -> None:
        self._kill()
        if self._session_dir is not None:
            remove_session_dir(self._session_dir)

    def _close(self) -> None:
        self._destroy()

    # -- kernel handle ----------------------------------------------------------------------------------------
    def exit_status(self) -> ExitStatus | None:
        if self.proc is None:
            return ExitStatus(None, detail="no kernel process")
        rc = self.proc.poll()
        return None if rc is None else ExitStatus(rc)

    def send_interrupt(self) -> None:
        if self.channels is not None:
            self.channels.send_control("interrupt_request")

    def restart_kernel(self) -> None:
        self._kill()
        self._spawn()

    # -- commands -------------------------------------------------------------------------------------------------
    def _run_command(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                     stdin: bytes | None, listen: Listen | None) -> CommandResult:
        """A subprocess in the workspace under the same supervisor as in a container (NOT isolated: it runs as
        this user, with the kernel's environment plus `env`)."""
        from lllm.sandbox import commands

        where = self.workspace if cwd is None else (self.workspace / cwd)
        return commands.run_local(argv, python=self.python, workspace=str(self.workspace),
                                  cwd=os.path.normpath(where), env={**self._env(), **env},
                                  timeout=timeout, stdin=stdin, max_stored_chars=self.max_stored_chars, listen=listen)

    # -- files ------------------------------------------------------------------------------------------------
    def upload(self, src: str | Path | bytes, dest: str | None = None) -> str:
        self._require_running("upload")
        target = files.default_dest(src, dest)
        if files.is_folder(src):
            return files.local_upload_folder(self.workspace, Path(src), target)  # type: ignore[arg-type]
        return files.local_upload(self.workspace, files.read_source(src), target)

    def download_dir(self, path: str, dest: str | Path) -> Path:
        self._require_running("download_dir")
        return files.local_download_folder(self.workspace, path, dest)

    def download(self, path: str) -> bytes:
        self._require_running("download")
        return files.local_download(self.workspace, path)

    def list_files(self, path: str = ".") -> list[str]:
        self._require_running("list_files")
        return files.local_list(self.workspace, path)
