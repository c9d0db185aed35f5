"""Kernel start-up, loaded as an IPython extension in every sandbox kernel (Docker and local).

- Installs the guest API (`CALL_API`, `query_api_doc`, `CallAPIError`) with
  `lllm_guest.install(get_ipython().user_ns)` when `lllm_guest` is importable; without it the kernel runs as a
  plain Python kernel.
- Keeps output messages small: stdout/stderr are flushed every `LLLM_FLUSH_BYTES` (default 1 MiB) so one huge
  `print` reaches the host as many modest messages (the writer waits for each flush: back-pressure), and a
  display bundle larger than `LLLM_MAX_DISPLAY_BYTES` (default 8 MiB) is replaced by a text notice before it
  is serialised. These protect the kernel's own memory; the host enforces its own caps regardless, since code
  in the kernel can undo anything done here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

FLUSH_BYTES = int(os.environ.get("LLLM_FLUSH_BYTES", str(1 << 20)))
MAX_DISPLAY_BYTES = int(os.environ.get("LLLM_MAX_DISPLAY_BYTES", str(8 << 20)))


def _bundle_size(data: dict[str, Any]) -> int:
    size = 0
    for value in data.values():
        size += len(value) if isinstance(value, (str, bytes)) else len(repr(value))
    return size


def _chunk_stream(stream: Any, limit: int) -> None:
    """Make `stream.write` flush every `limit` characters (an ipykernel OutStream)."""
    original = stream.write
    pending = [0]

    def write(text: str) -> int | None:
        if not isinstance(text, str) or len(text) + pending[0] < limit:
            pending[0] += len(text) if isinstance(text, str) else 0
            return original(text)
        for start in range(0, len(text), limit):
            piece = text[start : start + limit]
            original(piece)
            pending[0] += len(piece)
            if pending[0] >= limit:
                stream.flush()
                pending[0] = 0
        return len(text)

    stream.write = write


def _cap_display(shell: Any, limit: int) -> None:
    pub = shell.display_pub
    original = pub.publish

    def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        size = _bundle_size(data or {})
        if size > limit:
            kinds = ", ".join(sorted(data))
            note = (f"[display output dropped: {kinds}, {size / 1e6:.1f} MB is over the sandbox's "
                    f"{limit / 1e6:.1f} MB limit for one display; save it to a file or make it smaller]")
            data = {"text/plain": note}
            metadata = {"lllm_dropped": {"mime_types": kinds, "bytes": size, "limit": limit}}
        return original(data, metadata, *args, **kwargs)

    pub.publish = publish


def load_ipython_extension(shell: Any) -> None:
    """IPython entry point: called once when the kernel starts."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if hasattr(stream, "flush") and type(stream).__name__ == "OutStream":
            _chunk_stream(stream, FLUSH_BYTES)
    _cap_display(shell, MAX_DISPLAY_BYTES)
    try:
        import lllm_guest  # type: ignore[import-not-found]
    except ImportError:
        return
    try:
        lllm_guest.install(shell.user_ns)
    except Exception as exc:  # noqa: BLE001 - a broken guest must not keep the kernel from starting
        print(f"lllm_kernel_init: lllm_guest.install failed: {exc!r}", file=sys.__stderr__)
