"""Save and restore the kernel's user namespace, variable by variable, with dill (`sb.save()`, `resume()`).

Loaded by `lllm_kernel_init` (`install(shell)`), which registers two shell handlers (they run between cells):
- `lllm_save_request` `{"file": name, "max_bytes": n}`: pickle every user variable on its own with dill and
  write them to `$LLLM_RUN_DIR/<name>`; reply `{"status", "saved": [names], "skipped": {name: why},
  "bytes"}`. A variable that does not pickle (a thread, a generator, a connection, a lock) is skipped with the
  reason; more than `max_bytes` in all stops the save with an error.
- `lllm_restore_request` `{"file": name}`: read that file and unpickle each variable into the namespace;
  reply `{"status", "restored": [names], "failed": {name: why}}`.
Unpickling happens only here, inside a sandbox: a snapshot is code (a pickle can run anything on load), so
the host never unpickles one, it only carries the bytes.

Functions defined in cells live in `__main__`; dill saves their globals as a reference to `__main__`'s dict,
so a restored function reads the restored kernel's globals, as it read the saved kernel's (cloudpickle would
give each function a private copy of its globals). Each variable is pickled alone, so two names for one
object come back as two objects.

Speed: a variable is first pickled by the standard library's C pickler with protocol 5, its large buffers (numpy
arrays, the blocks of a data frame, bytes-like objects) out of band: written to the file straight from the
object's memory, and read back into fresh buffers, with no copy through a pickle stream (100 MB of floats: about
15 ms instead of about a second through dill's pure-Python pickler). Whatever that pickler would save by
reference to `__main__` (functions and classes defined in cells, and everything holding one) or cannot pickle at
all (lambdas) goes through dill instead, so dill's meaning holds for every variable. Modules are saved by name,
as dill saves them; dill is imported only when a variable needs it.

File format: `LLNS2\n`, then repeated records of `<u32 name length><name utf-8><u8 kind><u64 data length><data>`;
kind 0: dill bytes; kind 1: standard pickle bytes, then `<u32 buffer count>` and per buffer `<u64 length><bytes>`.
A file without the header is the first format: records of `<u32 name length><name><u64 length><dill bytes>`.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any

SAVE_REQUEST, SAVE_REPLY = "lllm_save_request", "lllm_save_reply"
RESTORE_REQUEST, RESTORE_REPLY = "lllm_restore_request", "lllm_restore_reply"
RUN_DIR = os.environ.get("LLLM_RUN_DIR", "/run/lllm")
_SKIP = {"In", "Out", "get_ipython", "exit", "quit", "CALL_API", "query_api_doc", "CallAPIError"}
_NAME = struct.Struct(">I")
_SIZE = struct.Struct(">Q")
_COUNT = struct.Struct(">I")
MAGIC = b"LLNS2\n"
DILL, PICKLE5 = 0, 1


def install(shell: Any) -> None:
    """Register the save and restore handlers on the shell's kernel (a no-op outside an ipykernel)."""
    kernel = getattr(shell, "kernel", None)
    handlers = getattr(kernel, "shell_handlers", None)
    if not isinstance(handlers, dict):
        return

    def handler(do: Any, reply_type: str) -> Any:
        def handle(stream: Any, ident: Any, parent: dict[str, Any]) -> None:
            try:
                content = parent.get("content") or {}
                reply = do(shell, _path(content.get("file")), content)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the host
                reply = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            kernel.session.send(stream, reply_type, reply, parent, ident=ident)

        return handle

    handlers[SAVE_REQUEST] = handler(save, SAVE_REPLY)
    handlers[RESTORE_REQUEST] = handler(restore, RESTORE_REPLY)


def _path(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"file must be a plain name in {RUN_DIR}, got {name!r}")
    return os.path.join(RUN_DIR, name)


_IPYTHON_NAMES = re.compile(r"^(_+|_i+|_i\d+|_\d+|_oh|_dh|_ih|__\w+__)$")
"""IPython's history and output cache (`_`, `__`, `_i3`, `_12`, `_oh`, ...) and dunder names."""


def user_variables(shell: Any) -> dict[str, Any]:
    """The names the user made: not IPython's own (`In`, `Out`, `_12`, ...), not the guest API. Private names
    of the user's (`_cache`) are kept."""
    hidden = getattr(shell, "user_ns_hidden", {})
    return {name: value for name, value in shell.user_ns.items()
            if not _IPYTHON_NAMES.match(name) and name not in _SKIP and name not in hidden}


def _why(exc: BaseException, value: Any = None) -> str:
    text = str(exc).strip().splitlines()
    what = f"a {type(value).__module__}.{type(value).__qualname__}: " if value is not None else ""
    return f"{what}{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


class _RefersToMain(Exception):
    """A cell's function or class met by the standard pickler: this variable goes through dill."""


def _fast_pickle(value: Any) -> tuple[bytes, list[memoryview]] | None:
    """`value` pickled by the C pickler with out-of-band buffers, or None when dill must do it."""
    import importlib
    import io
    import pickle
    import sys
    import types

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
                raise _RefersToMain
            if isinstance(obj, types.ModuleType):  # `import numpy as np`: by name, as dill does
                name = obj.__name__
                if name == "__main__" or sys.modules.get(name) is not obj:
                    raise _RefersToMain
                return importlib.import_module, (name,)
            return NotImplemented

    buffers: list[memoryview] = []

    def keep(buffer: pickle.PickleBuffer) -> None:
        buffers.append(buffer.raw())  # BufferError when not contiguous: then dill does it

    out = io.BytesIO()
    try:
        Pickler(out, protocol=5, buffer_callback=keep).dump(value)
    except RecursionError:
        return None
    except Exception:  # noqa: BLE001 - _RefersToMain, PicklingError, TypeError, BufferError...: dill's turn
        return None
    return out.getvalue(), buffers


def save(shell: Any, path: str, content: dict[str, Any]) -> dict[str, Any]:
    limit = int(content.get("max_bytes") or 0)
    saved: list[str] = []
    skipped: dict[str, str] = {}
    total = len(MAGIC)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(MAGIC)
        for name, value in sorted(user_variables(shell).items()):
            fast = _fast_pickle(value)
            buffers: list[memoryview] = []
            if fast is not None:
                kind, (data, buffers) = PICKLE5, fast
            else:
                try:
                    import dill  # type: ignore[import-not-found]  # only when needed: its import takes a while

                    kind, data = DILL, dill.dumps(value)
                except BaseException as exc:  # noqa: BLE001 - pickling can raise anything (RecursionError too)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    skipped[name] = _why(exc, value)
                    continue
            encoded = name.encode()
            size = _NAME.size + len(encoded) + 1 + _SIZE.size + len(data)
            if kind == PICKLE5:
                size += _COUNT.size + sum(_SIZE.size + b.nbytes for b in buffers)
            total += size
            if limit and total > limit:
                fh.close()
                os.unlink(path)
                return {"status": "error", "error": f"the namespace is over {limit:,} bytes pickled (at {name!r}); "
                                                    "delete large variables or save files in the workspace"}
            fh.write(_NAME.pack(len(encoded)) + encoded + bytes([kind]) + _SIZE.pack(len(data)))
            fh.write(data)
            if kind == PICKLE5:
                fh.write(_COUNT.pack(len(buffers)))
                for buffer in buffers:
                    fh.write(_SIZE.pack(buffer.nbytes))
                    fh.write(buffer)
            saved.append(name)
    return {"status": "ok", "saved": saved, "skipped": skipped, "bytes": total}


def _read_exact(fh: Any, size: int, what: str) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise ValueError(f"the snapshot's namespace file is cut short ({what})")
    return bytes(data)


def _read_buffer(fh: Any, size: int, name: str) -> bytearray:
    if size > os.fstat(fh.fileno()).st_size - fh.tell():  # before allocating what the file says
        raise ValueError(f"the snapshot's namespace file is cut short (in {name!r})")
    buffer = bytearray(size)  # writable, as the saved object's memory was
    if fh.readinto(buffer) != size:
        raise ValueError(f"the snapshot's namespace file is cut short (in {name!r})")
    return buffer


def restore(shell: Any, path: str, content: dict[str, Any]) -> dict[str, Any]:
    import pickle

    restored: list[str] = []
    failed: dict[str, str] = {}
    with open(path, "rb") as fh:
        versioned = fh.read(len(MAGIC)) == MAGIC
        if not versioned:
            fh.seek(0)
        while True:
            head = fh.read(_NAME.size)
            if not head:
                break
            if len(head) != _NAME.size:
                raise ValueError("the snapshot's namespace file is cut short")
            name = _read_exact(fh, _NAME.unpack(head)[0], "a name").decode("utf-8", "replace")
            kind = _read_exact(fh, 1, name)[0] if versioned else DILL
            data = _read_exact(fh, _SIZE.unpack(_read_exact(fh, _SIZE.size, name))[0], f"in {name!r}")
            buffers: list[bytearray] = []
            if kind == PICKLE5:
                for _ in range(_COUNT.unpack(_read_exact(fh, _COUNT.size, name))[0]):
                    buffers.append(_read_buffer(fh, _SIZE.unpack(_read_exact(fh, _SIZE.size, name))[0], name))
            elif kind != DILL:
                raise ValueError(f"the snapshot's namespace file is corrupt (record kind {kind} in {name!r})")
            try:
                if kind == PICKLE5:
                    shell.user_ns[name] = pickle.loads(data, buffers=buffers)
                else:
                    import dill  # type: ignore[import-not-found]

                    shell.user_ns[name] = dill.loads(data)
                restored.append(name)
            except BaseException as exc:  # noqa: BLE001 - one bad variable must not stop the rest
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failed[name] = _why(exc)
            del data, buffers
    os.unlink(path)
    return {"status": "ok", "restored": restored, "failed": failed}
