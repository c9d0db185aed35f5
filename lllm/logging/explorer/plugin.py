"""The Datasette plugin of the run explorer: the trace pages, as routes over Datasette's read-only connection.

Datasette does the serving, the table browsing (`/<db>/sessions`, `/<db>/cells`, any SQL), the JSON API and
the read-only connection (`mode=ro`); this plugin adds the pages that need to put rows together:

- `/`                                   the sessions: filters, sort, task search, pages
- `/-/lllm/session/<id>`                one session: totals, timeline, dialogs as trees, cells, CALL_APIs, browser
- `/-/lllm/session/<id>/notebook/<agent>`  the agent's notebook, as a download
- `/-/lllm/costs`                       cost and tokens over time and by model, agent, proxy, tag, tactic
- `/-/lllm/batches`, `/-/lllm/batch/<batch_id>`, `/-/lllm/batch?tag=KEY=VALUE`   one bcall's sessions
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any, Callable
from urllib.parse import quote

from datasette import hookimpl
from datasette.utils.asgi import Response

from lllm.logging.explorer import _data

PLUGIN = "lllm.logging.explorer"


def _static(datasette: Any, name: str) -> str:
    return datasette.urls.path(f"/-/lllm-static/{name}")


async def _read(datasette: Any, fn: Callable[[Any], Any]) -> Any:
    started = time.perf_counter()
    out = await datasette.get_database().execute_fn(fn)
    if isinstance(out, dict):
        out["query_ms"] = (time.perf_counter() - started) * 1000
    return out


async def _page(datasette: Any, request: Any, template: str, context: dict[str, Any], status: int = 200) -> Response:
    db = datasette.get_database()
    context = {**context, "db_name": db.name, "db_path": db.path, "static": lambda n: _static(datasette, n),
               "when": _data.when, "quote": lambda s: quote(str(s), safe=""), "nav": template}
    html = await datasette.render_template(template, context, request=request)
    return Response.html(html, status=status)


async def _not_found(datasette: Any, request: Any, message: str) -> Response:
    return await _page(datasette, request, "lllm_error.html", {"message": message, "title": "Not found"}, status=404)


async def sessions_view(datasette: Any, request: Any) -> Response:
    filters = _data.SessionFilters.from_args(request.args)
    data = await _read(datasette, lambda conn: _data.sessions_page(conn, filters))
    return await _page(datasette, request, "lllm_sessions.html", {**data, "title": "Sessions"})


async def session_view(datasette: Any, request: Any) -> Response:
    sid = request.url_vars["session_id"]
    try:
        data = await _read(datasette, lambda conn: _data.session_page(conn, sid))
    except _data.NotFound as exc:
        return await _not_found(datasette, request, str(exc))
    return await _page(datasette, request, "lllm_session.html", {**data, "title": f"Session {data['session']['id'][:12]}"})


async def notebook_view(datasette: Any, request: Any) -> Response:
    sid, agent = request.url_vars["session_id"], request.url_vars["agent"]
    try:
        path = await datasette.get_database().execute_fn(lambda conn: _data.notebook_path(conn, sid, agent))
    except _data.NotFound as exc:
        return await _not_found(datasette, request, str(exc))
    try:  # only a regular file, never through a symlink: the explorer serves what the run wrote, nothing else
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        return await _not_found(datasette, request, f"the notebook {path!r} is not readable any more ({exc.strerror})")
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return await _not_found(datasette, request, f"{path!r} is not a regular file")
        body = fh.read()
    name = os.path.basename(path)
    return Response(body, status=200, content_type="application/x-ipynb+json",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


async def costs_view(datasette: Any, request: Any) -> Response:
    since = (request.args.get("since") or "").strip()
    data = await _read(datasette, lambda conn: _data.costs_page(conn, since))
    return await _page(datasette, request, "lllm_costs.html", {**data, "title": "Costs"})


async def batches_view(datasette: Any, request: Any) -> Response:
    rows = await datasette.get_database().execute_fn(_data.batches)
    return await _page(datasette, request, "lllm_batches.html", {"batches": rows, "title": "Batches"})


async def batch_view(datasette: Any, request: Any) -> Response:
    batch_id = request.url_vars.get("batch_id") or ""
    tag = (request.args.get("tag") or "").strip()
    try:
        data = await _read(datasette, lambda conn: _data.batch_page(conn, batch_id, tag))
    except _data.NotFound as exc:
        return await _not_found(datasette, request, str(exc))
    return await _page(datasette, request, "lllm_batch.html", {**data})


@hookimpl
def register_routes(datasette: Any) -> list[tuple[str, Any]]:
    return [
        (r"^/$", sessions_view),
        (r"^/-/lllm/sessions$", sessions_view),
        (r"^/-/lllm/session/(?P<session_id>[^/]+)$", session_view),
        (r"^/-/lllm/session/(?P<session_id>[^/]+)/notebook/(?P<agent>[^/]+)$", notebook_view),
        (r"^/-/lllm/costs$", costs_view),
        (r"^/-/lllm/batches$", batches_view),
        (r"^/-/lllm/batch$", batch_view),
        (r"^/-/lllm/batch/(?P<batch_id>[^/]+)$", batch_view),
    ]


@hookimpl
def menu_links(datasette: Any) -> list[dict[str, str]]:
    db = datasette.get_database().name
    return [{"href": "/", "label": "Sessions"}, {"href": "/-/lllm/costs", "label": "Costs"},
            {"href": "/-/lllm/batches", "label": "Batches"}, {"href": f"/{db}", "label": "Tables and SQL"}]
