"""Unix sockets in a session directory, shared by the CALL_API gateway and the package relay (layer 0: both
rooms above use it, neither imports the other)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def bind_unix(path: Path) -> socket.socket:
    """Bind and listen on `path` (replacing what is there); paths past the 107-byte AF_UNIX limit go through
    /proc/self/fd."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        target, dirfd = str(path), None
        if len(os.fsencode(target)) > 100:
            dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            target = f"/proc/self/fd/{dirfd}/{path.name}"
        try:
            sock.bind(target)
        finally:
            if dirfd is not None:
                os.close(dirfd)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock
