"""Sandboxes that outlive a call: their records under the run root, their limits, and the watchdog.

Every `DockerSandbox` writes a record, `<run root>/sandboxes/<sandbox id>.json` (mode 600 in a run root of mode
700 that only this user controls, see `lllm.sandbox._rundir.run_root`): the kernel's connection info (its
HMAC key included), the session directory, the container, the image and options, its limits and when it was
last used. `DockerSandbox.attach(id)` reads it to reconnect from another process of the same user; the reaper
and `lllm sandbox ls` read `last_used` from it. Nothing in it is written where the container can reach.

Limits (`idle_timeout`, `max_lifetime`, seconds; None: none) are enforced three times over:
- while the owning process lives, by this module's watchdog thread (`watch(sandbox)`), which closes a sandbox
  whose time is up (an idle one at once; a busy one past its lifetime by stopping its container);
- inside the container by the kernel supervisor (`sandbox/kernel_start.py`: `LLLM_MAX_LIFETIME`,
  `LLLM_IDLE_TIMEOUT` and the session directory's `last_used`, which the host touches), which stops the
  container when its owner is gone;
- by the reaper (`lllm sandbox gc`), which removes what is past its limits, running or stopped.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Protocol

from lllm.sandbox import _docker
from lllm.sandbox._rundir import run_root

__all__ = ["find_container", "read_record", "records", "remove_record", "touch_file", "watch", "write_record"]

RECORDS = "sandboxes"
LAST_USED = "last_used"
"""In the session directory: its mtime is the last use the host saw (the supervisor reads it)."""


def records_dir() -> Path:
    path = run_root() / RECORDS
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _record_path(sandbox_id: str) -> Path:
    if not sandbox_id or "/" in sandbox_id or sandbox_id.startswith("."):
        raise ValueError(f"not a sandbox id: {sandbox_id!r}")
    return records_dir() / f"{sandbox_id}.json"


def write_record(sandbox_id: str, data: dict[str, Any]) -> None:
    """Write (replace) a sandbox's record, mode 600, atomically."""
    path = _record_path(sandbox_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_record(sandbox_id: str) -> dict[str, Any] | None:
    """A sandbox's record, or None when there is none (or it cannot be read: another user's, or junk)."""
    try:
        fd = os.open(_record_path(sandbox_id), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_record(sandbox_id: str) -> None:
    try:
        os.unlink(_record_path(sandbox_id))
    except (OSError, ValueError):
        pass


def records() -> dict[str, dict[str, Any]]:
    """Every record under the run root, by sandbox id."""
    out: dict[str, dict[str, Any]] = {}
    try:
        names = [p.name for p in records_dir().iterdir()]
    except OSError:
        return out
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            data = read_record(name[:-5])
            if data is not None:
                out[name[:-5]] = data
    return out


def touch_file(session_dir: Path) -> None:
    """Set the mtime of `<session_dir>/last_used` to now (creating it). The container can write that
    directory, so whatever is there is never followed: a link, directory or other odd entry is replaced."""
    path = session_dir / LAST_USED
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError:
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    import shutil

                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                return
            continue
        try:
            os.utime(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        return


def find_container(sandbox: str, engine: Any = None) -> Any:
    """The sandbox container named `sandbox` (a kept sandbox's name) or with that sandbox id, or None; on
    `engine` (`lllm.sandbox._docker.Engine`) when given, else the environment's engine."""
    client = _docker.client(engine)
    for label in (_docker.LABEL_NAME, _docker.LABEL_SESSION):
        with _docker.translate_errors("list sandbox containers", engine=engine):
            found = client.containers.list(all=True, ignore_removed=True,
                                           filters={"label": [f"{_docker.LABEL}=1", f"{label}={sandbox}"]})
        if found:
            return found[0]
    return None


class Watched(Protocol):
    def _watch(self, now: float) -> float | None:
        """Enforce the limits at `now`; seconds until it needs looking at again (None: never)."""


class _Watchdog:
    """One daemon thread per process, waking when the earliest watched sandbox needs it (at most every 5 s)."""

    def __init__(self) -> None:
        self._items: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, item: Watched) -> None:
        with self._cond:
            self._items.add(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lllm-sandbox-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, item: Watched) -> None:
        with self._cond:
            self._items.discard(item)

    def _loop(self) -> None:
        while True:
            with self._cond:
                items = list(self._items)
            wait = 5.0
            now = time.time()
            for item in items:
                try:
                    due = item._watch(now)
                except Exception:  # noqa: BLE001 - one sandbox's trouble must not stop the watch of the others
                    due = 5.0
                if due is not None:
                    wait = min(wait, max(0.05, due))
            with self._cond:
                self._cond.wait(wait)


_watchdog = _Watchdog()


def watch(item: Watched) -> None:
    """Have the watchdog enforce `item`'s limits (it is held weakly)."""
    _watchdog.watch(item)


def forget(item: Watched) -> None:
    _watchdog.forget(item)
