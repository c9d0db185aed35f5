"""What the explorer's pages show, read from the log with plain SQL on a read-only connection.

Each function takes a `sqlite3.Connection` (Datasette's read-only one, `mode=ro`) and returns plain dicts and
lists for a template. Nothing here writes, and nothing here imports `lllm.core`: the explorer reads the tables
the LogStore wrote (any schema this lllm knows; columns a schema-1 log lacks read as empty).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["SessionFilters", "batch_page", "costs_page", "session_page", "sessions_page"]

_IMAGE_MIMES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"}
"""Images the pages show, as `<img src="data:...">` (an SVG there runs no script and loads nothing)."""
_SORTS = {"started": "started_at", "cost": "cost", "duration": "duration_s",
          "tokens": "(prompt_tokens + completion_tokens)", "tactic": "tactic", "state": "state"}
PAGE_SIZE = 100


def _rows(conn: sqlite3.Connection, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _json(text: Any, default: Any) -> Any:
    if text is None or text == "":
        return default
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return default


def when(ts: float | None) -> str:
    """A unix time as `YYYY-MM-DD HH:MM:SS` UTC."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _session_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["tags"] = _json(row.get("tags"), {})
    row["metadata"] = _json(row.get("metadata"), {})
    row["tokens"] = (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
    row["started"] = when(row.get("started_at"))
    return row


def _result_text(text: str | None) -> str | None:
    """The session's stored result (`{"type": ..., "value": ...}`) as text."""
    data = _json(text, None)
    if not isinstance(data, dict):
        return text
    if data.get("type") == "none":
        return None
    value = data.get("value")
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


# -- the sessions page ---------------------------------------------------------------------------------------

@dataclass
class SessionFilters:
    """The sessions page's form: every field optional."""

    tactic: str = ""
    state: str = ""
    tag: str = ""
    """`key=value`."""
    since: str = ""
    """A date (YYYY-MM-DD) or a date and time; sessions started at or after it (UTC)."""
    until: str = ""
    min_cost: str = ""
    max_cost: str = ""
    q: str = ""
    """Text searched in the task (case-insensitive)."""
    batch: str = ""
    sort: str = "started"
    order: str = "desc"
    children: bool = False
    page: int = 1
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: Any) -> SessionFilters:
        text = {k: str(args.get(k) or "").strip() for k in ("tactic", "state", "tag", "since", "until", "min_cost",
                                                            "max_cost", "q", "batch")}
        f = cls(tactic=text["tactic"], state=text["state"], tag=text["tag"], since=text["since"],
                until=text["until"], min_cost=text["min_cost"], max_cost=text["max_cost"], q=text["q"],
                batch=text["batch"])
        f.sort = args.get("sort") if args.get("sort") in _SORTS else "started"
        f.order = "asc" if args.get("order") == "asc" else "desc"
        f.children = args.get("children") in ("1", "on", "true")
        try:
            f.page = max(1, int(args.get("page") or 1))
        except ValueError:
            f.page = 1
        return f


def _time_arg(text: str, name: str, errors: list[str]) -> float | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        errors.append(f"{name}: {text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _money_arg(text: str, name: str, errors: list[str]) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        errors.append(f"{name}: {text!r} is not a number of USD")
        return None


def sessions_page(conn: sqlite3.Connection, f: SessionFilters) -> dict[str, Any]:
    """Sessions matching the filters, one page of them, with the choices the form offers."""
    clauses: list[str] = []
    params: list[Any] = []
    if not f.children and not f.batch:
        clauses.append("parent_id IS NULL")
    if f.tactic:
        clauses.append("tactic = ?")
        params.append(f.tactic)
    if f.state:
        clauses.append("state = ?")
        params.append(f.state)
    if f.batch:
        clauses.append("batch_id = ?")
        params.append(f.batch)
    if f.tag:
        key, sep, value = f.tag.partition("=")
        if not sep or not key.strip():
            f.errors.append(f"tag: {f.tag!r} is not KEY=VALUE")
        else:
            clauses.append("CAST(json_extract(tags, ?) AS TEXT) = ?")
            params += [f'$."{key.strip()}"', value.strip()]
    for text, op, name in ((f.since, ">=", "since"), (f.until, "<", "until")):
        moment = _time_arg(text, name, f.errors)
        if moment is not None:
            clauses.append(f"started_at {op} ?")
            params.append(moment + (86400 if name == "until" and len(text) <= 10 else 0))
    for text, op, name in ((f.min_cost, ">=", "min cost"), (f.max_cost, "<=", "max cost")):
        amount = _money_arg(text, name, f.errors)
        if amount is not None:
            clauses.append(f"cost {op} ?")
            params.append(amount)
    if f.q:
        clauses.append("task LIKE ? ESCAPE '\\'")
        params.append("%" + f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    total = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(cost), 0) FROM sessions {where}", params).fetchone()
    order = f"{_SORTS[f.sort]} {'ASC' if f.order == 'asc' else 'DESC'}, started_at DESC, rowid DESC"
    offset = (f.page - 1) * PAGE_SIZE
    rows = _rows(conn, f"SELECT id, tactic, state, started_at, duration_s, cost, prompt_tokens, completion_tokens, "
                       f"model_calls, agent_calls, tags, task, error, last_event, batch_id, task_index, parent_id "
                       f"FROM sessions {where} ORDER BY {order} LIMIT {PAGE_SIZE} OFFSET {offset}", params)
    tactics = [r[0] for r in conn.execute("SELECT DISTINCT tactic FROM sessions ORDER BY tactic")]
    return {"sessions": [_session_row(r) for r in rows], "total": total[0], "total_cost": total[1],
            "tactics": tactics, "filters": f, "page_size": PAGE_SIZE,
            "pages": max(1, (total[0] + PAGE_SIZE - 1) // PAGE_SIZE)}


# -- one session ----------------------------------------------------------------------------------------------

class NotFound(LookupError):
    """No session with that id (or prefix) in the log."""


def find_session(conn: sqlite3.Connection, session_id: str) -> dict[str, Any]:
    """The session row for an id or a unique prefix of one.

    Raises:
        NotFound: no session matches, or the prefix matches several (the message says which).
    """
    rows = _rows(conn, "SELECT * FROM sessions WHERE id = ?", [session_id])
    if not rows and len(session_id) >= 4:
        rows = _rows(conn, "SELECT * FROM sessions WHERE id LIKE ? LIMIT 3", [session_id.replace("%", "") + "%"])
        if len(rows) > 1:
            raise NotFound(f"the id prefix {session_id!r} matches several sessions "
                           f"({', '.join(r['id'][:12] for r in rows)}, ...); give more characters")
    if not rows:
        raise NotFound(f"there is no session {session_id!r} in this log")
    return _session_row(rows[0])


def _of_session(conn: sqlite3.Connection, tables: set[str], table: str, sid: str) -> list[dict[str, Any]]:
    if table not in tables:
        return []
    return _rows(conn, f"SELECT * FROM {table} WHERE session_id = ? ORDER BY started_at, seq", [sid])


def _images(value: Any) -> list[dict[str, str]]:
    return [i for i in _json(value, []) if isinstance(i, dict) and i.get("mime") in _IMAGE_MIMES and i.get("data")]


def _tool_code(arguments: str | None) -> tuple[str | None, str]:
    """(the `code` argument, the other arguments as text) of a tool call."""
    args = _json(arguments, None)
    if isinstance(args, dict) and isinstance(args.get("code"), str):
        rest = {k: v for k, v in args.items() if k != "code"}
        return args["code"], json.dumps(rest, ensure_ascii=False) if rest else ""
    return None, arguments or ""


def session_page(conn: sqlite3.Connection, session_id: str) -> dict[str, Any]:
    """Everything the session page shows.

    Raises:
        NotFound: no such session.
    """
    session = find_session(conn, session_id)
    sid = session["id"]
    tables = _tables(conn)
    start = session.get("started_at") or 0.0
    end = session.get("ended_at") or session.get("updated_at") or start
    models = _of_session(conn, tables, "model_calls", sid)
    agents = _of_session(conn, tables, "agent_calls", sid)
    tools = _of_session(conn, tables, "tool_calls", sid)
    cells = _of_session(conn, tables, "cells", sid)
    apis = _of_session(conn, tables, "api_calls", sid)
    browser = _of_session(conn, tables, "browser_actions", sid)
    test_runs = _of_session(conn, tables, "test_runs", sid)

    by_agent_model: dict[tuple[str, str], dict[str, Any]] = {}
    for m in models:
        key = (m.get("agent") or "-", m.get("model") or "-")
        row = by_agent_model.setdefault(key, {"agent": key[0], "model": key[1], "calls": 0, "errors": 0,
                                              "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})
        row["calls"] += 1
        row["errors"] += m.get("status") == "error"
        row["prompt_tokens"] += m.get("prompt_tokens") or 0
        row["completion_tokens"] += m.get("completion_tokens") or 0
        row["cost"] += m.get("cost") or 0.0

    for i, c in enumerate(cells):
        c["n"] = i + 1
        c["images"] = _images(c.get("images"))
        c["notices"] = _json(c.get("notices"), [])
    for i, t in enumerate(tools):
        t["n"] = i + 1
        t["code"], t["args_text"] = _tool_code(t.get("arguments"))
    for i, a in enumerate(apis):
        a["n"] = i + 1
        a["params_text"] = _pretty(a.get("params"))
        a["answer_text"] = _pretty(a.get("answer"))
    for i, b in enumerate(browser):
        b["n"] = i + 1
        mime = b.get("screenshot_mime") or "image/png"
        b["shot"] = {"mime": mime, "data": b["screenshot"]} if b.get("screenshot") and mime in _IMAGE_MIMES else None
    for a in agents:
        a["detail"] = _json(a.get("detail"), {})
    _nest_in_tool_calls(tools, cells, apis, browser)

    span = max(end - start, 1e-6)
    timeline: list[dict[str, Any]] = []

    def add(kind: str, rows: list[dict[str, Any]], label: Any, duration: Any, anchor: str | None) -> None:
        for r in rows:
            at = (r.get("started_at") or start) - start
            took = max(float(duration(r) or 0.0), 0.0)
            timeline.append({"kind": kind, "label": label(r), "at": at, "took": took, "status": r.get("status"),
                             "agent": r.get("agent"), "error": r.get("error"),
                             "anchor": f"{anchor}-{r['n']}" if anchor else None,
                             "left": min(100.0, 100.0 * at / span), "width": max(0.4, min(100.0, 100.0 * took / span))})

    add("agent_call", agents, lambda r: f"{r.get('agent')}/{r.get('dialog')} respond: {r.get('model_calls')} model "
                                        f"call(s), {r.get('interrupts')} tool round(s)", lambda r: r.get("duration_s"),
        None)
    add("model_call", models, lambda r: f"{r.get('model')} {r.get('prompt_tokens') or 0}+"
                                        f"{r.get('completion_tokens') or 0} tok ${(r.get('cost') or 0):.5f}",
        lambda r: r.get("latency_s"), None)
    add("tool_call", tools, lambda r: f"{r.get('name')}", lambda r: r.get("duration_s"), "tool")
    add("cell", cells, lambda r: _first_line(r.get("code")), lambda r: r.get("duration_s"), "cell")
    add("api_call", apis, lambda r: f"{r.get('proxy')}/{r.get('endpoint')}", lambda r: r.get("latency_s"), "api")
    add("browser_action", browser, lambda r: f"{r.get('action')} {r.get('target') or ''}".strip(),
        lambda r: r.get("duration_s"), "browser")
    add("test_run", test_runs, lambda r: f"tests {r.get('path')}: {r.get('passed')} passed, {r.get('failed')} failed, "
                                         f"{r.get('errors')} errors (exit {r.get('exit_code')})",
        lambda r: r.get("duration_s"), None)
    timeline.sort(key=lambda item: item["at"])

    dialogs = []
    if "dialogs" in tables:
        for row in _rows(conn, "SELECT agent, alias, data FROM dialogs WHERE session_id = ? ORDER BY rowid", [sid]):
            data = _json(row["data"], {})
            dialogs.append({"agent": row["agent"], "alias": row["alias"], "tree": _dialog_node(data, row["agent"], 0)})

    children = [_session_row(r) for r in _rows(conn, "SELECT * FROM sessions WHERE parent_id = ? ORDER BY started_at",
                                                [sid])]
    parent = _rows(conn, "SELECT id, tactic FROM sessions WHERE id = ?", [session["parent_id"]]) \
        if session.get("parent_id") else []
    notebooks = session["metadata"].get("notebooks") or {}
    return {"session": session, "result_text": _result_text(session.get("result")),
            "by_agent_model": sorted(by_agent_model.values(), key=lambda r: -r["cost"]),
            "timeline": timeline, "models": models, "agents": agents, "tools": tools, "cells": cells,
            "apis": apis, "browser": browser, "dialogs": dialogs, "children": children,
            "steps": _steps(tools, cells, apis, browser),
            "parent": parent[0] if parent else None, "notebooks": sorted(notebooks) if isinstance(notebooks, dict) else [],
            "ended": when(session.get("ended_at")), "counts": {"model_call": len(models), "tool_call": len(tools),
                                                              "cell": len(cells), "api_call": len(apis),
                                                              "browser_action": len(browser)}}


_SLACK_S = 0.005  # clock granularity: a cell recorded at its tool call's last millisecond is still inside it


def _nest_in_tool_calls(tools: list[dict[str, Any]], *kinds: list[dict[str, Any]]) -> None:
    """Give each tool call the cells, CALL_APIs and browser actions that ran inside it (`inside`: a list of
    `(kind, row)`; each such row gets `in_tool`, its tool call's number): those of the same agent (or of no
    recorded agent) that started within the call's time span. A cell that repeats its tool call's code or
    output is marked so the page shows them once."""
    for t in tools:
        t["inside"] = []
    spans = sorted(((t.get("started_at") or 0.0, (t.get("started_at") or 0.0) + (t.get("duration_s") or 0.0), t)
                    for t in tools), key=lambda span: span[0])
    for kind, rows in zip(("cell", "api", "browser"), kinds):
        for r in rows:
            at, agent = r.get("started_at") or 0.0, r.get("agent")
            owner = None
            for start, end, t in spans:
                if start > at:
                    break
                if at <= end + _SLACK_S and (agent is None or t.get("agent") == agent):
                    owner = t
            if owner is None:
                continue
            owner["inside"].append((kind, r))
            r["in_tool"] = owner["n"]
            if kind == "cell":
                r["same_code"] = (r.get("code") or "").strip() == (owner.get("code") or "").strip()
                output = (r.get("output") or "").strip()
                r["output_in_result"] = bool(output) and output in (owner.get("result") or "")


def _steps(tools: list[dict[str, Any]], cells: list[dict[str, Any]], apis: list[dict[str, Any]],
           browser: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The session's steps in the order they started: each tool call (with what ran inside it), and the cells,
    CALL_APIs and browser actions that ran outside any tool call (a tactic's own code, a start page)."""
    steps = [("tool", t) for t in tools]
    for kind, rows in (("cell", cells), ("api", apis), ("browser", browser)):
        steps += [(kind, r) for r in rows if not r.get("in_tool")]
    steps.sort(key=lambda step: step[1].get("started_at") or 0.0)
    return steps


def _first_line(text: str | None, limit: int = 80) -> str:
    line = next((ln for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


_CAP_NOTE = "\n... ["
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # one encoder for every row (json.dumps makes one a call)


def _pretty(text: str | None) -> str:
    """JSON text indented; a payload the log cut (no longer valid JSON) with one object a line, its note kept."""
    data = _json(text, None)
    if isinstance(data, list) and data:
        if not any(isinstance(item, (dict, list)) for item in data):  # a series of numbers or names: one line
            return _ENCODE(data)
        if all(isinstance(item, (dict, list)) for item in data):  # rows (prices, hits): one a line if it fits
            lines = [_ENCODE(item) for item in data]
            if max(map(len, lines)) <= 160:
                return "[\n  " + ",\n  ".join(lines) + "\n]"
    if data is not None:
        return json.dumps(data, indent=2, ensure_ascii=False)
    text = text or ""
    body, note, rest = text.partition(_CAP_NOTE)
    if note and body[:1] in "[{":
        return body.replace("},{", "},\n{").replace("}, {", "},\n{") + note + rest
    return text


def _message_view(m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content")
    images: list[dict[str, str]] = []
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = "\n".join(texts)
    for img in m.get("images") or []:
        if isinstance(img, dict) and img.get("mime") in _IMAGE_MIMES and img.get("data"):
            images.append({"mime": img["mime"], "data": img["data"]})
    calls = []
    for c in m.get("tool_calls") or []:
        raw = c.get("raw_arguments") or json.dumps(c.get("arguments") or {})
        code, rest = _tool_code(raw)
        calls.append({"name": c.get("name"), "code": code, "args": rest, "error": c.get("error_message")})
    role = m.get("role")
    return {"role": role, "name": m.get("name"), "content": content, "calls": calls, "images": images,
            "cost": (m.get("usage") or {}).get("cost") if isinstance(m.get("usage"), dict) else None}


def _dialog_node(data: dict[str, Any], agent: str, depth: int) -> dict[str, Any]:
    messages = data.get("messages") or []
    split = data.get("split_point")
    own = messages[split or 0:]
    return {"id": data.get("id") or f"{agent}-{depth}", "name": data.get("name") or "dialog", "agent": agent,
            "split_point": split, "shared": split or 0, "total": len(messages),
            "messages": [_message_view(m) for m in own],
            "children": [_dialog_node(c, agent, depth + 1) for c in data.get("children") or []]}


# -- costs ----------------------------------------------------------------------------------------------------

def costs_page(conn: sqlite3.Connection, since: str = "") -> dict[str, Any]:
    """Cost and tokens over time and by model, agent, tag, tactic; CALL_APIs by proxy."""
    errors: list[str] = []
    start = _time_arg(since, "since", errors) if since else None
    tables = _tables(conn)
    s_where, s_params = ("WHERE started_at >= ?", [start]) if start is not None else ("", [])
    span = conn.execute(f"SELECT MIN(started_at), MAX(started_at) FROM sessions {s_where}", s_params).fetchone()
    first, last = span[0] or time.time(), span[1] or time.time()
    bucket = 3600 if last - first <= 3 * 86400 else 86400
    fmt = "%Y-%m-%d %H:00" if bucket == 3600 else "%Y-%m-%d"
    over_time = []
    if "model_calls" in tables:
        m_where = "WHERE started_at >= ?" if start is not None else ""
        for r in _rows(conn, f"SELECT CAST(started_at / {bucket} AS INTEGER) AS b, SUM(cost) AS cost, "
                             f"SUM(prompt_tokens) AS prompt, SUM(completion_tokens) AS completion, COUNT(*) AS calls "
                             f"FROM model_calls {m_where} GROUP BY b ORDER BY b", s_params):
            over_time.append({"label": datetime.fromtimestamp(r["b"] * bucket, tz=timezone.utc).strftime(fmt),
                              "cost": r["cost"] or 0.0, "tokens": (r["prompt"] or 0) + (r["completion"] or 0),
                              "calls": r["calls"]})

    def grouped(column: str) -> list[dict[str, Any]]:
        if "model_calls" not in tables:
            return []
        m_where = "WHERE started_at >= ?" if start is not None else ""
        return _rows(conn, f"SELECT COALESCE({column}, '-') AS name, COUNT(*) AS calls, SUM(cost) AS cost, "
                           f"SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
                           f"SUM(status = 'error') AS errors FROM model_calls {m_where} GROUP BY name "
                           f"ORDER BY cost DESC, calls DESC", s_params)

    by_proxy = []
    if "api_calls" in tables:
        a_where = "WHERE started_at >= ?" if start is not None else ""
        by_proxy = _rows(conn, f"SELECT COALESCE(proxy, '-') AS name, COUNT(*) AS calls, SUM(status != 'ok') AS errors, "
                               f"AVG(latency_s) AS latency_s, SUM(response_bytes) AS response_bytes FROM api_calls "
                               f"{a_where} GROUP BY name ORDER BY calls DESC", s_params)
    t_where = "WHERE parent_id IS NULL" + (" AND started_at >= ?" if start is not None else "")
    tag_where = "WHERE s.parent_id IS NULL" + (" AND s.started_at >= ?" if start is not None else "")
    by_tag = _rows(conn, f"SELECT j.key || '=' || CAST(j.value AS TEXT) AS name, COUNT(*) AS sessions, "
                         f"SUM(s.cost) AS cost, SUM(s.prompt_tokens + s.completion_tokens) AS tokens, "
                         f"SUM(s.state = 'error') AS errors FROM sessions s, json_each(CASE WHEN json_valid(s.tags) "
                         f"THEN s.tags ELSE '{{}}' END) j {tag_where} GROUP BY name ORDER BY cost DESC LIMIT 50",
                   s_params)
    by_tactic = _rows(conn, f"SELECT tactic AS name, COUNT(*) AS sessions, SUM(cost) AS cost, "
                            f"SUM(prompt_tokens + completion_tokens) AS tokens, SUM(state = 'error') AS errors "
                            f"FROM sessions {t_where} GROUP BY name ORDER BY cost DESC", s_params)
    total = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(cost), 0), COALESCE(SUM(prompt_tokens + completion_tokens), 0) "
                         f"FROM sessions {t_where}", s_params).fetchone()
    return {"since": since, "errors": errors, "over_time": over_time, "bucket": "hour" if bucket == 3600 else "day",
            "by_model": grouped("model"), "by_agent": grouped("agent"), "by_proxy": by_proxy, "by_tag": by_tag,
            "by_tactic": by_tactic, "total": {"sessions": total[0], "cost": total[1], "tokens": total[2]}}


# -- a batch --------------------------------------------------------------------------------------------------

def batches(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every bcall in the log, newest first."""
    rows = _rows(conn, "SELECT batch_id, tactic, MIN(started_at) AS started_at, COUNT(*) AS sessions, "
                       "SUM(state = 'ok') AS ok, SUM(state = 'error') AS errors, SUM(state = 'running') AS running, "
                       "SUM(cost) AS cost, MIN(tags) AS tags FROM sessions WHERE batch_id IS NOT NULL AND "
                       "parent_id IS NULL GROUP BY batch_id ORDER BY started_at DESC LIMIT 200")
    for r in rows:
        r["started"] = when(r["started_at"])
        r["tags"] = _json(r["tags"], {})
    return rows


def batch_page(conn: sqlite3.Connection, batch_id: str = "", tag: str = "") -> dict[str, Any]:
    """The sessions of one bcall (by its id) or of every session with a tag: counts, slowest, costliest, failures.

    Raises:
        NotFound: nothing matches.
    """
    if batch_id:
        where, params, title = "batch_id = ? AND parent_id IS NULL", [batch_id], f"batch {batch_id}"
    else:
        key, sep, value = tag.partition("=")
        if not sep or not key.strip():
            raise NotFound(f"a batch is a batch id or a tag KEY=VALUE; got {tag!r}")
        where = "CAST(json_extract(tags, ?) AS TEXT) = ? AND parent_id IS NULL"
        params, title = [f'$."{key.strip()}"', value.strip()], f"tag {key.strip()}={value.strip()}"
    counts = {r["state"]: r["n"] for r in _rows(conn, f"SELECT state, COUNT(*) AS n FROM sessions WHERE {where} "
                                                      f"GROUP BY state", params)}
    if not counts:
        raise NotFound(f"no sessions of {title} in this log")
    totals = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(cost), 0), MIN(started_at), MAX(COALESCE(ended_at, "
                          f"updated_at)), AVG(duration_s), COALESCE(SUM(prompt_tokens + completion_tokens), 0) "
                          f"FROM sessions WHERE {where}", params).fetchone()
    cols = "id, tactic, state, started_at, duration_s, cost, prompt_tokens, completion_tokens, tags, task, error, " \
           "task_index, last_event"
    slowest = [_session_row(r) for r in _rows(conn, f"SELECT {cols} FROM sessions WHERE {where} AND duration_s IS "
                                                    f"NOT NULL ORDER BY duration_s DESC LIMIT 10", params)]
    costliest = [_session_row(r) for r in _rows(conn, f"SELECT {cols} FROM sessions WHERE {where} "
                                                      f"ORDER BY cost DESC LIMIT 10", params)]
    failures = [_session_row(r) for r in _rows(conn, f"SELECT {cols} FROM sessions WHERE {where} AND state = 'error' "
                                                     f"ORDER BY task_index, started_at LIMIT 200", params)]
    return {"title": title, "batch_id": batch_id, "tag": tag, "counts": counts, "sessions": totals[0],
            "cost": totals[1], "started": when(totals[2]), "wall_s": (totals[3] or 0) - (totals[2] or 0),
            "mean_s": totals[4] or 0.0, "tokens": totals[5], "slowest": slowest, "costliest": costliest,
            "failures": failures}


def notebook_path(conn: sqlite3.Connection, session_id: str, agent: str) -> str:
    """The notebook file a session recorded for an agent.

    Raises:
        NotFound: the session or its notebook entry does not exist.
    """
    session = find_session(conn, session_id)
    notebooks = session["metadata"].get("notebooks") or {}
    path = notebooks.get(agent) if isinstance(notebooks, dict) else None
    if not isinstance(path, str) or not path.endswith(".ipynb"):
        raise NotFound(f"session {session['id'][:12]} recorded no notebook for agent {agent!r}")
    return path
