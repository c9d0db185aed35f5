"""Cassettes: record a run's model requests and CALL_API answers in a YAML file once, then replay the run from it
with no model provider and no live API.

```python
from lllm.testing import cassette

with cassette("tests/cassettes/analyst.yaml", mode="record"):   # real provider and APIs answer; the file keeps it
    tactic = build_tactic(config)
    tactic("What does AAPL trade at?")

with cassette("tests/cassettes/analyst.yaml", mode="replay"):   # the file answers; nothing is reached
    tactic = build_tactic(config)
    tactic("What does AAPL trade at?")
```
Or for a whole process: `LLLM_CASSETTE=path.yaml LLLM_CASSETTE_MODE=record|replay|auto python run.py` (auto, the
default: replay when the file exists, record otherwise).

Where it listens:
- model requests at the invoker boundary: every invoker `build_invoker` returns (configs, tactics) is wrapped in
  a `lllm.invokers.recording.RecordingInvoker` (through `lllm.invokers.wrap_invokers`, or the `cassette` entry
  point of `lllm.invoker_wrappers` under `$LLLM_CASSETTE`), so build the tactic inside the block; an invoker you
  construct yourself, wrap with `Cassette.wrap(invoker)`. Streamed answers keep their text pieces, replayed to
  the stream handler one by one.
- CALL_API answers (and errors) at the `ProxyManager` on the host: the gateway's calls from the sandbox and
  in-process calls alike (`lllm.proxies.hooks`). The sandbox itself still runs the model's code on replay; only
  the API answers come from the file.

Matching. A run's model requests are matched in order *per stream*: one stream is one agent's dialog in one
tactic call, named by (task, agent, dialog) plus the call's rank among calls on the same task (0 unless a task
runs more than once). Request n of a stream is compared with the recorded request n of that stream. In a batch
(`bcall`), threads interleave differently in every run, but each task's calls, and each dialog within a call, make
their requests in the same order every time, so replay is deterministic whatever the scheduling. CALL_API
answers are matched by the call itself (path and parameters, as normalised JSON); the same call made twice gets
the recorded answers in recorded order. (Two identical tasks in one batch, or an API that answered the same
call differently within one run, may swap their recordings between the concurrent calls involved.)

A replayed request that differs from the recorded one raises `CassetteMismatch` whose message holds a unified
diff (difflib) of the two requests as YAML; so does a request past the recorded ones. The cassette remembers
the first mismatch: every later request raises again (a mismatch inside the gateway reaches the sandbox as a
CALL_API error, and the run still fails at its next model request), and so does `close()`. In replay,
`close()` also fails when recorded requests were never made (`allow_unused=True` turns that off).

Secrets never enter the file: string values of model arguments whose names look secret (`api_key`,
`extra_headers: {Authorization: ...}`, `*token*`, `*secret*`, `*password*`) become `[redacted]`, user:password
in URLs too; every string is passed through `lllm.proxies.redact.scrub`, which knows the proxies' keys, the
wrapped invoker's `api_key` and the values of the environment's secret-looking variables (`*_API_KEY`, `*_TOKEN`,
`*SECRET*`, ...), in every form (raw, URL-encoded, JSON-escaped, base64). Images in requests are kept as a
SHA-256 digest of their data URL (a change of image is still a mismatch).
"""

from __future__ import annotations

import atexit
import copy
import difflib
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from lllm.errors import CassetteError, CassetteMismatch, LLLMError, ModelRequestsDisabled, ProxyError
from lllm.invokers import wrap_invokers
from lllm.invokers.recording import ExchangeSite, RecordingInvoker, TapeAnswer
from lllm.proxies import redact
from lllm.proxies.hooks import hook_api_calls

if TYPE_CHECKING:
    from lllm.invokers.base import BaseInvoker

__all__ = ["Cassette", "CassetteMode", "MODES", "api_call_hook", "cassette", "env_cassette", "wrap_invoker"]

CassetteMode = Literal["record", "replay", "auto"]
MODES = ("record", "replay", "auto")
FORMAT = 1
"""The file format's version (`lllm_cassette:` at the top of the file)."""
MAX_DIFF_LINES = 160
"""A mismatch message shows at most this many lines of diff."""

_SECRET_NAME = re.compile(r"(?i)(api[-_]?key|apikey|secret|token|password|passwd|authorization|credential|cookie)")
_SECRET_ENV = re.compile(r"(?i)(^|_)(api_?key|key|token|secret|password|passwd|credentials?)($|_)")
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
_DATA_URL = re.compile(r"^data:([\w.+/-]+);base64,", re.I)
_REDACTED = "[redacted]"


def _register_env_secrets() -> None:
    """Scrub the values of the environment's secret-looking variables (provider and API keys) from now on."""
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name) and value and not name.startswith("LLLM_"):
            redact.register_secret(value, name)


def _normalise(value: Any, *, secret_names: bool = False, digests: bool = False) -> Any:
    """A JSON value as the cassette keeps it (a copy): secrets scrubbed; with `secret_names`, string values under
    secret-looking keys redacted; with `digests` (requests only: answers are replayed as they were), image data
    URLs replaced by their digest."""
    if isinstance(value, str):
        image = _DATA_URL.match(value) if digests and len(value) > 256 else None
        if image is not None:
            return f"data:{image.group(1)};sha256,{hashlib.sha256(value.encode()).hexdigest()} ({len(value)} chars)"
        if secret_names:
            value = _URL_USERINFO.sub(_REDACTED + "@", value)
        return redact.scrub(value) if redact.has_secrets() else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if secret_names and isinstance(item, str) and _SECRET_NAME.search(str(key)):
                out[key] = _REDACTED
            else:
                out[key] = _normalise(item, secret_names=secret_names, digests=digests)
        return out
    if isinstance(value, list):
        return [_normalise(item, secret_names=secret_names, digests=digests) for item in value]
    return value


def _normal_request(request: dict[str, Any]) -> dict[str, Any]:
    out = _normalise({k: v for k, v in request.items() if k != "model_args"}, digests=True)
    if "model_args" in request:
        out["model_args"] = _normalise(request["model_args"], secret_names=True, digests=True)
        # keep the request's own key order (model_args before the format), so that files diff well
        out = {k: out[k] for k in request if k in out}
    return out


def _plain(value: Any) -> Any:
    """`value` as plain JSON data (tuples become lists; what YAML gives back when the file is read)."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=lambda o: f"<{type(o).__qualname__}>"))


# ---- YAML ----------------------------------------------------------------------------------------------


def _yaml() -> Any:
    import yaml

    return yaml


@functools.cache
def _dumper() -> Any:
    yaml = _yaml()
    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(base):  # type: ignore[misc, valid-type]
        pass

    def text(dumper: Any, data: str) -> Any:
        style = "|" if "\n" in data else None  # multi-line text as a block: a diff of it is a diff of lines
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def _dump(data: Any) -> str:
    return str(_yaml().dump(data, Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=1 << 30,
                            default_flow_style=False))


def _load(text: str) -> Any:
    yaml = _yaml()
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _diff(recorded: Any, now: Any, *, recorded_label: str, now_label: str = "this run") -> str:
    lines = list(difflib.unified_diff(_dump(recorded).splitlines(), _dump(now).splitlines(),
                                      fromfile=recorded_label, tofile=now_label, lineterm="", n=3))
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... ({len(lines) - MAX_DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


_HEADER = """\
# An lllm cassette: the model requests and CALL_API answers of one run, recorded by lllm.testing.
# Replay it with `with lllm.testing.cassette(PATH, mode="replay"):` or LLLM_CASSETTE=PATH LLLM_CASSETTE_MODE=replay.
# Secrets were scrubbed before writing. Record it again rather than editing it by hand.
"""


# ---- the cassette ----------------------------------------------------------------------------------------


def _stream_name(key: tuple[str | None, int, str | None, str | None]) -> str:
    task, call, agent, dialog = key
    where = f"agent {agent!r}, dialog {dialog!r}"
    if task is not None:
        shown = task if len(task) <= 80 else task[:77] + "..."
        where += f", task {shown!r}" + (f" (call {call + 1} on it)" if call else "")
    return where


class Cassette:
    """One cassette file, recording or replaying (see the module docstring).

    Args:
        path: The YAML file.
        mode: "record" (call live, write the file at `close()`, replacing it), "replay" (answer from the file;
            it must exist) or "auto" (replay when the file exists, record otherwise).
        allow_unused: Replaying, do not fail at `close()` when recorded requests were never made.

    Raises:
        CassetteError: An unknown mode, or replaying a file that is missing or is not a cassette.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: str = "auto", allow_unused: bool = False) -> None:
        if mode not in MODES:
            raise CassetteError(f"cassette mode must be one of {list(MODES)!r}, got {mode!r} (LLLM_CASSETTE_MODE)",
                                mode=mode)
        self.path = Path(path)
        self.requested_mode = mode
        self.mode: Literal["record", "replay"] = (
            "replay" if mode == "replay" or (mode == "auto" and self.path.exists()) else "record")
        self.allow_unused = allow_unused
        self.failure: CassetteMismatch | None = None
        """The first mismatch of a replay (raised again by every later request and by `close()`)."""
        self.closed = False
        self._lock = threading.Lock()
        self._calls: dict[str | None, dict[str | None, int]] = {}  # task -> call id -> its rank on that task
        self._next: dict[Any, int] = {}  # stream key or API key -> the next index
        self._models: list[dict[str, Any]] = []  # recorded model exchanges (record mode)
        self._apis: list[tuple[int, dict[str, Any]]] = []  # recorded CALL_API exchanges and their rank (record)
        self._tape_models: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self._tape_apis: dict[str, list[dict[str, Any]]] = {}
        self._used: set[int] = set()  # id() of replayed entries
        _register_env_secrets()
        if self.mode == "replay":
            self._read()

    def __repr__(self) -> str:
        return f"Cassette({str(self.path)!r}, mode={self.mode!r})"

    # -- the file --------------------------------------------------------------------------------------

    def _read(self) -> None:
        if not self.path.exists():
            raise CassetteError(
                f"cassette {str(self.path)!r} does not exist, so there is nothing to replay. Record it first: "
                "run once with mode='record' (LLLM_CASSETTE_MODE=record) against the real provider, or use "
                "mode='auto' to record when the file is missing.", path=str(self.path))
        try:
            data = _load(self.path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - yaml errors, a directory, bad bytes: the file is unusable
            raise CassetteError(f"cassette {str(self.path)!r} cannot be read: {type(exc).__name__}: {exc}. Record "
                                "it again (mode='record').", path=str(self.path)) from None
        if not isinstance(data, dict) or data.get("lllm_cassette") != FORMAT:
            raise CassetteError(
                f"{str(self.path)!r} is not an lllm cassette (format {FORMAT}): it has no `lllm_cassette: {FORMAT}` "
                "line. Record it again (mode='record').", path=str(self.path))
        try:
            for entry in data.get("model_requests") or ():
                if not (isinstance(entry.get("request"), dict) and isinstance(entry.get("response"), dict)):
                    raise ValueError(f"a model request without its request and response: {str(entry)[:200]}")
                key = (entry.get("task"), int(entry.get("call") or 0), entry.get("agent"), entry.get("dialog"))
                self._tape_models.setdefault(key, []).append(entry)
            for stream in self._tape_models.values():
                stream.sort(key=lambda e: int(e["n"]))
                if [int(e["n"]) for e in stream] != list(range(len(stream))):
                    raise ValueError(f"the requests of one stream are not numbered 0, 1, 2, ...: "
                                     f"{[e['n'] for e in stream]}")
            for entry in data.get("api_calls") or ():
                if "answer" not in entry and not isinstance(entry.get("error"), dict):
                    raise ValueError(f"a CALL_API without its answer or error: {str(entry)[:200]}")
                self._tape_apis.setdefault(self._api_key(entry), []).append(entry)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CassetteError(f"cassette {str(self.path)!r} is malformed ({type(exc).__name__}: {exc}). Record "
                                "it again (mode='record').", path=str(self.path)) from None

    def save(self) -> None:
        """Write what was recorded to the file (atomically; parent folders are created). Record mode only."""
        if self.mode != "record":
            raise CassetteError(f"cassette {str(self.path)!r} is replaying; only a recording is saved")
        with self._lock:
            models = sorted(self._models, key=lambda e: (e.get("task") or "", e.get("task") is not None,
                                                        e.get("call", 0), e.get("agent") or "",
                                                        e.get("dialog") or "", e["n"]))
            apis = [e for _, e in sorted(self._apis, key=lambda ie: (ie[1]["path"], self._api_key(ie[1]), ie[0]))]
            data = {"lllm_cassette": FORMAT, "model_requests": models, "api_calls": apis}
        text = _HEADER + _dump(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self, *, check: bool = True) -> None:
        """End the cassette: a recording is saved; a replay raises its first mismatch, or (unless
        `allow_unused`) a `CassetteError` listing recorded requests that were never made. `check=False` only
        saves. Closing twice does nothing."""
        if self.closed:
            return
        self.closed = True
        if self.mode == "record":
            self.save()
            return
        if not check:
            return
        if self.failure is not None:
            raise CassetteMismatch(self.failure.message, **self.failure.facts)
        if not self.allow_unused:
            unused = self.unused()
            if unused:
                shown = "\n".join(f"  - {u}" for u in unused[:10])
                more = f"\n  ... and {len(unused) - 10} more" if len(unused) > 10 else ""
                raise CassetteError(
                    f"cassette {str(self.path)!r}: {len(unused)} recorded exchange(s) were never replayed:\n{shown}"
                    f"{more}\nThe run stopped earlier than the recorded one. Record it again if that is meant "
                    "(mode='record'), or pass allow_unused=True.", path=str(self.path), unused=len(unused))

    def unused(self) -> list[str]:
        """Recorded exchanges a replay has not used so far, described."""
        out = []
        for key, stream in sorted(self._tape_models.items(), key=lambda kv: repr(kv[0])):
            for entry in stream:
                if id(entry) not in self._used:
                    out.append(f"model request {entry['n'] + 1} of {_stream_name(key)}")
        for entries in self._tape_apis.values():
            for entry in entries:
                if id(entry) not in self._used:
                    out.append(f"CALL_API({entry['path']!r}, {json.dumps(entry.get('params'))})")
        return out

    # -- failures --------------------------------------------------------------------------------------

    def _fail(self, exc: CassetteMismatch) -> CassetteMismatch:
        with self._lock:
            if self.failure is None:
                self.failure = exc
        return exc

    def _check_failed(self) -> None:
        failure = self.failure
        if failure is not None:
            raise CassetteMismatch(f"the replay of {str(self.path)!r} already failed, at its first difference:\n"
                                   f"{failure.message}", **failure.facts)

    def _check_open(self) -> None:
        if self.closed:
            raise CassetteError(f"cassette {str(self.path)!r} is closed; open a new one (lllm.testing.cassette(...))")

    # -- model requests --------------------------------------------------------------------------------

    def wrap(self, invoker: BaseInvoker) -> RecordingInvoker:
        """`invoker` wrapped so that its requests go through this cassette (for an invoker you built yourself;
        `build_invoker` does it inside a `cassette(...)` block)."""
        key = getattr(invoker, "api_key", None)
        if isinstance(key, str):
            redact.register_secret(key, f"{type(invoker).__name__}.api_key")
        return RecordingInvoker(invoker, self)

    def _stream_key(self, site: ExchangeSite) -> tuple[tuple[str | None, int, str | None, str | None], int]:
        with self._lock:
            ranks = self._calls.setdefault(site.task, {})
            call = ranks.setdefault(site.call_id, len(ranks))
            key = (site.task, call, site.agent, site.dialog)
            n = self._next.get(key, 0)
            self._next[key] = n + 1
        return key, n

    def _unclaim(self, key: Any) -> None:
        """Give back the index a request took when it ends without an answer to record (a stream's requests come
        one at a time, so it is still the last one taken)."""
        with self._lock:
            self._next[key] -= 1

    def model_exchange(self, request: dict[str, Any], site: ExchangeSite,
                       live: Callable[[], dict[str, Any]]) -> TapeAnswer:
        """Record or replay one model request (the `ModelTape` protocol of `RecordingInvoker`).

        Raises:
            CassetteMismatch: Replaying, and the request differs from the recorded one or was not recorded.
        """
        self._check_open()
        self._check_failed()
        normal = _normal_request(request)  # plain JSON already (request_doc)
        key, n = self._stream_key(site)
        if self.mode == "record":
            try:
                response = live()
            except ModelRequestsDisabled as exc:
                self._unclaim(key)
                why = ("its file did not exist, so mode 'auto' records" if self.requested_mode == "auto"
                       else "mode 'record'")
                raise ModelRequestsDisabled(
                    f"{exc.message} The cassette {str(self.path)!r} is recording ({why}) and needs the real model "
                    "for that; to replay, record it once with requests allowed (under pytest: "
                    "--lllm-allow-model-requests) and keep the file.", **exc.facts) from None
            except BaseException:  # not an answer (a scripted model out of steps, ...): nothing recorded
                self._unclaim(key)
                raise
            entry: dict[str, Any] = {}
            if key[0] is not None:
                entry["task"] = key[0]
            if key[1]:
                entry["call"] = key[1]
            entry.update(agent=key[2], dialog=key[3], n=n, request=normal, response=_normalise(_plain(response)))
            with self._lock:
                self._models.append(entry)
            return TapeAnswer(response, replayed=False)
        stream = self._tape_models.get(key, [])
        if n >= len(stream):
            others = "" if stream else self._other_streams(key)
            raise self._fail(CassetteMismatch(
                f"cassette {str(self.path)!r} has no model request {n + 1} of {_stream_name(key)}: it recorded "
                f"{len(stream)} for it.{others} This run asked:\n{_dump(normal)}\nIf the run is meant to change, "
                "record the cassette again (mode='record').",
                path=str(self.path), agent=key[2], dialog=key[3], request_index=n))
        entry = stream[n]
        with self._lock:
            self._used.add(id(entry))
        if entry.get("request") != normal:
            diff = _diff(entry.get("request"), normal, recorded_label=f"recorded ({self.path.name})")
            raise self._fail(CassetteMismatch(
                f"cassette {str(self.path)!r}: model request {n + 1} of {_stream_name(key)} differs from the "
                f"recorded one:\n{diff}\nIf the change is meant, record the cassette again (mode='record').",
                path=str(self.path), agent=key[2], dialog=key[3], request_index=n))
        return TapeAnswer(copy.deepcopy(entry["response"]), replayed=True)

    def _other_streams(self, key: tuple[Any, ...]) -> str:
        known = sorted({_stream_name(k) for k in self._tape_models})[:6]
        if not known:
            return " The cassette holds no model requests at all."
        return " It holds requests of: " + "; ".join(known) + "."

    # -- CALL_API ----------------------------------------------------------------------------------------

    @staticmethod
    def _api_key(doc: dict[str, Any]) -> str:
        return json.dumps({"path": doc["path"], "params": doc.get("params")}, sort_keys=True, ensure_ascii=False)

    def api_hook(self, path: str, params: dict[str, Any] | None, proceed: Callable[[], Any]) -> Any:
        """Record or replay one CALL_API (a `lllm.proxies.hooks` hook).

        Raises:
            CassetteMismatch: Replaying a call the cassette did not record (the message shows the nearest one).
            ProxyError: The recorded call failed with it (replayed), or the live call failed (recording).
        """
        self._check_open()
        self._check_failed()
        request = _normalise(_plain({"path": path, "params": params}), digests=True)
        key = self._api_key(request)
        with self._lock:
            i = self._next.get(key, 0)
            self._next[key] = i + 1
        if self.mode == "record":
            entry: dict[str, Any] = {"path": request["path"], "params": request["params"]}
            try:
                answer = proceed()
            except LLLMError as exc:
                entry["error"] = {"type": type(exc).__name__, "message": _normalise(exc.message)}
                with self._lock:
                    self._apis.append((i, entry))
                raise
            except BaseException:
                self._unclaim(key)
                raise
            entry["answer"] = _normalise(_plain(answer))
            with self._lock:
                self._apis.append((i, entry))
            return answer
        entries = self._tape_apis.get(key, [])
        if i >= len(entries):
            raise self._fail(self._api_miss(request, i, len(entries)))
        entry = entries[i]
        with self._lock:
            self._used.add(id(entry))
        if "error" in entry:
            raise _proxy_error(entry["error"])
        return copy.deepcopy(entry.get("answer"))

    def _api_miss(self, request: dict[str, Any], i: int, recorded: int) -> CassetteMismatch:
        call = f"CALL_API({request['path']!r}, {json.dumps(request['params'], ensure_ascii=False)})"
        where = f"cassette {str(self.path)!r}"
        if recorded:
            return CassetteMismatch(
                f"{where}: {call} was made {i + 1} times in this run; the recording made it {recorded} times. If "
                "the run is meant to change, record the cassette again (mode='record').",
                path=str(self.path), api_path=request["path"])
        candidates = [e for entries in self._tape_apis.values() for e in entries]
        same_path = [e for e in candidates if e["path"] == request["path"]] or candidates
        if not same_path:
            return CassetteMismatch(f"{where} recorded no CALL_API, and this run made {call}. Record the cassette "
                                    "again (mode='record').", path=str(self.path), api_path=request["path"])
        mine = _dump(request)
        nearest = max(same_path, key=lambda e: difflib.SequenceMatcher(
            None, _dump({"path": e["path"], "params": e.get("params")}), mine).ratio())
        diff = _diff({"path": nearest["path"], "params": nearest.get("params")}, request,
                     recorded_label=f"nearest recorded call ({self.path.name})")
        return CassetteMismatch(
            f"{where} did not record {call}; the nearest recorded call differs:\n{diff}\nIf the change is meant, "
            "record the cassette again (mode='record').", path=str(self.path), api_path=request["path"])


def _proxy_error(doc: dict[str, Any]) -> ProxyError:
    """The error a recorded CALL_API failure stands for (`ProxyError` when its class is not a proxy error)."""
    import lllm.errors as lllm_errors

    cls = getattr(lllm_errors, str(doc.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, ProxyError)):
        cls = ProxyError
    return cls(str(doc.get("message") or "recorded CALL_API error"))


# ---- use from Python ---------------------------------------------------------------------------------------


@contextmanager
def cassette(path: str | os.PathLike[str], mode: str = "auto", *, allow_unused: bool = False) -> Iterator[Cassette]:
    """Record or replay the model requests and CALL_API answers made inside the block (see the module docstring).

    Build tactics (and invokers) inside the block: they are wrapped when they are built. On a clean exit a
    recording is saved and a replay is checked (its first mismatch, requests never made); when the block
    raises, a recording is still saved and the block's exception goes on.

    Raises:
        CassetteError: A bad mode or file, or (at the end of a replay) recorded requests that were never made.
        CassetteMismatch: A replayed request differs from the recorded one.
    """
    tape = Cassette(path, mode=mode, allow_unused=allow_unused)
    try:
        with wrap_invokers(tape.wrap), hook_api_calls(tape.api_hook):
            yield tape
    except BaseException:
        tape.close(check=False)
        raise
    tape.close()


# ---- use from the environment ($LLLM_CASSETTE) -----------------------------------------------------------------

_env_lock = threading.Lock()
_env: tuple[tuple[str, str], Cassette] | None = None


def env_cassette() -> Cassette:
    """The process's cassette named by `$LLLM_CASSETTE` (mode `$LLLM_CASSETTE_MODE`, default auto), opened on
    first use and closed at exit. When the variables change, the previous one is closed first.

    Raises:
        CassetteError: `$LLLM_CASSETTE` is not set, or the cassette cannot be opened.
    """
    global _env
    path = os.environ.get("LLLM_CASSETTE", "")
    mode = os.environ.get("LLLM_CASSETTE_MODE", "").strip().lower() or "auto"
    if not path:
        raise CassetteError("LLLM_CASSETTE is not set; set it to the cassette's file (a .yaml path)")
    with _env_lock:
        if _env is not None and _env[0] == (path, mode):
            return _env[1]
        previous, _env = _env, None
        if previous is not None:
            _close_quietly(previous[1])
        tape = Cassette(path, mode=mode)
        _env = ((path, mode), tape)
        return tape


def close_env_cassette() -> Cassette | None:
    """Close the `$LLLM_CASSETTE` cassette if one is open (save a recording, check a replay) and return it.

    Raises:
        CassetteError, CassetteMismatch: What `Cassette.close()` raises.
    """
    global _env
    with _env_lock:
        current, _env = _env, None
    if current is None:
        return None
    current[1].close()
    return current[1]


def _close_quietly(tape: Cassette) -> None:
    try:
        tape.close()
    except LLLMError as exc:
        print(f"lllm: {exc}", file=sys.stderr)


@atexit.register
def _close_env_at_exit() -> None:
    with _env_lock:
        current = _env
    if current is not None and not current[1].closed:
        _close_quietly(current[1])


def wrap_invoker(invoker: BaseInvoker) -> BaseInvoker:
    """The `cassette` entry point of `lllm.invoker_wrappers`: `invoker` recording into, or replaying from, the
    `$LLLM_CASSETTE` cassette."""
    return env_cassette().wrap(invoker)


def api_call_hook(path: str, params: dict[str, Any] | None, proceed: Callable[[], Any]) -> Any:
    """The `cassette` entry point of `lllm.api_call_hooks`: CALL_API through the `$LLLM_CASSETTE` cassette."""
    return env_cassette().api_hook(path, params, proceed)
