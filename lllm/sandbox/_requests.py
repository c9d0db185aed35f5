"""lllm's own shell requests to a kernel (fork, save, restore): one request, one reply, between two cells."""

from __future__ import annotations

import time
from typing import Any

from lllm.errors import SandboxError
from lllm.sandbox._kernel import KernelChannels
from lllm.sandbox._zmtp import ChannelError


def kernel_request(sandbox: Any, msg_type: str, content: dict[str, Any], reply_type: str, *, timeout: float,
                   error: type[SandboxError], what: str) -> dict[str, Any]:
    """Send one of lllm's own shell requests to `sandbox`'s kernel (call it under the sandbox's lock: it runs
    between cells) and return the reply's content when its `status` is ok.

    Raises:
        error: the kernel did not take it, answered with an error, or not within `timeout` (its image may
            predate the request: the message says to rebuild it).
    """
    channels: KernelChannels = sandbox.channels
    channels.discard_pending()
    try:
        msg_id = channels.send_shell(msg_type, content)
    except ChannelError as exc:
        raise error(f"the kernel of sandbox {sandbox.sandbox_id!r} did not take the request to {what}: {exc}",
                    sandbox_id=sandbox.sandbox_id) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, has_shell, has_control = channels.poll(0.05)
        for msg in channels.read(channels.shell if has_shell else None, msg_id):
            if msg.get("foreign") or "malformed" in msg or msg.get("msg_type") != reply_type:
                continue
            reply = msg["content"]
            if reply.get("status") != "ok":
                raise error(f"sandbox {sandbox.sandbox_id!r} could not {what}: {str(reply.get('error'))[:500]}",
                            sandbox_id=sandbox.sandbox_id)
            return dict(reply)
        if has_control:
            channels.drain_control()
        if sandbox.exit_status() is not None:
            raise error(f"the kernel of sandbox {sandbox.sandbox_id!r} ended while asked to {what}",
                        sandbox_id=sandbox.sandbox_id)
    raise error(f"the kernel of sandbox {sandbox.sandbox_id!r} did not answer the request to {what} within "
                f"{timeout:g}s (its image may predate this request: rebuild it with `lllm sandbox build`)",
                sandbox_id=sandbox.sandbox_id)
