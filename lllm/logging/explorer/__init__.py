"""The run explorer: `lllm logs serve`, a local web app over a log file, built on Datasette.

Why Datasette: it is made for exactly this (browsing a SQLite file in a browser), from the same family as
sqlite-utils, which writes the log; it opens the file read-only (`mode=ro`), re-reads it on every request
(WAL: runs can keep writing), and gives table browsing, facets, SQL and a JSON API for free. What it cannot
know, the shape of a run, comes from this package's plugin (`plugin.py`): the sessions, session, costs and
batch pages. Every asset (Datasette's own, Chart.js, our CSS and JS) ships in the installed packages, so the
explorer works with no internet.

```python
from lllm.logging.explorer import build_explorer
ds = build_explorer("runs/demo.db")      # a datasette.app.Datasette; ds.app() is the ASGI app
```
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from lllm.errors import UsageError
from lllm.logging._schema import check_log

__all__ = ["build_explorer", "serve"]

_INSTALL_HINT = 'the explorer needs Datasette: pip install "lllm[explorer]"'


def _register_plugin() -> None:
    from datasette.plugins import pm

    from lllm.logging.explorer import plugin

    if not pm.is_registered(plugin):
        pm.register(plugin, name=plugin.PLUGIN)


def build_explorer(db: str | os.PathLike[str]) -> Any:
    """A Datasette instance serving the log `db` read-only, with the lllm pages.

    Raises:
        UsageError: the file is missing, not an lllm log, locked, or from a newer lllm (nothing is written);
            or Datasette is not installed.
    """
    path = Path(db).expanduser()
    check_log(path)
    try:
        from datasette.app import Datasette
    except ImportError:
        raise UsageError(_INSTALL_HINT) from None
    _register_plugin()
    here = Path(__file__).resolve().parent
    return Datasette(
        [str(path.resolve())],
        template_dir=str(here / "templates"),
        static_mounts=[("-/lllm-static", str(here / "static"))],
        settings={"sql_time_limit_ms": 5000, "num_sql_threads": 3, "allow_download": False,
                  "default_page_size": 100},
        metadata={"title": f"lllm runs: {path.name}", "description": f"The log {path.resolve()} (read-only)."},
    )


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port).

    Raises:
        UsageError: the port is in use or cannot be bound.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise UsageError(f"port {port} on {host} is in use (another explorer or server holds it); pick another "
                             "with --port N, or --port 0 for any free port", port=port) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another with --port N",
                         port=port) from None
    return sock


def find_session_id(db: str | os.PathLike[str], session: str) -> str:
    """The full id of a session given by id or unique prefix (read-only).

    Raises:
        UsageError: no such session, or the prefix is ambiguous.
    """
    from lllm.logging._schema import connect_readonly
    from lllm.logging.explorer._data import NotFound, find_session

    conn = connect_readonly(Path(db))
    try:
        return str(find_session(conn, session)["id"])
    except NotFound as exc:
        raise UsageError(f"{exc} ({Path(db)}); `lllm logs ls --db {db}` lists them", session_id=session) from None
    finally:
        conn.close()


def serve(db: str | os.PathLike[str], *, port: int = 8765, host: str = "127.0.0.1", open_browser: bool = False,
          session: str | None = None, out: Any = None) -> None:
    """Serve the explorer until Ctrl-C.

    Args:
        session: start at this session's page (id or unique prefix).

    Raises:
        UsageError: a bad log file (see `build_explorer`), an unknown session, or a port in use.
    """
    out = out or sys.stdout
    ds = build_explorer(db)
    start_path = f"-/lllm/session/{find_session_id(db, session)}" if session else ""
    sock = bind_port(host, port)
    try:
        import uvicorn
    except ImportError:
        sock.close()
        raise UsageError(_INSTALL_HINT) from None
    url = f"http://{host}:{sock.getsockname()[1]}/{start_path}"
    print(f"lllm explorer: {url}  (log {Path(db).expanduser().resolve()}, read-only; Ctrl-C stops it)",
          file=out, flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(ds.app(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
