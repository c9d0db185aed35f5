"""What runs on a Ray worker for one task of a batch: load the shipped packages, rebuild the tactic, run the task
with the log store and the proxies of the driver, and send back the result and the last records.

The tactic is rebuilt once per worker process and batch as `TacticClass(config, runtime=..., tags=...)` from a
spec the driver made (`tactic_spec`): its config has no invoker settings (they may hold keys), and each agent's
invoker is a `RemoteInvoker` of the hub's. A task's records go to the driver as they are made (`Recorder`); what
is left when the task ends comes back with its result.
"""

from __future__ import annotations

import copy
import os
import threading
import traceback
from typing import Any

from lllm.errors import ExecutorError, RemoteTaskError, UsageError
from lllm.invokers.base import BaseInvoker, InvokeRequest, InvokeResult

__all__ = ["Recorder", "lllm_version", "rebuild_tactic", "run_task", "scrub_invokers", "sweep_node", "tactic_spec"]

_TACTICS: dict[str, Any] = {}
"""This worker process's rebuilt tactics, by batch (a few: a worker serves one batch after another)."""
_TACTICS_KEPT = 4


class _Unused(BaseInvoker):
    """The invoker a tactic is built with on a worker, replaced at once by the hub's (never called)."""

    name = "unused"

    def _call_once(self, request: InvokeRequest) -> InvokeResult:
        raise UsageError("this tactic's invokers were not connected to the batch's hub (a bug of lllm.executors)")


def scrub_invokers(config: dict[str, Any]) -> dict[str, Any]:
    """The config without invoker settings (`invoker_config`, and `invoker` given as a whole dict), which may
    hold keys: workers never build invokers, they use the hub's."""

    def clean(block: Any) -> Any:
        if not isinstance(block, dict):
            return block
        out = dict(block)
        if "invoker_config" in out:
            out["invoker_config"] = {}
        if isinstance(out.get("invoker"), dict):
            out["invoker"] = {"invoker": out["invoker"].get("invoker", "litellm")}
        return out

    config = clean(config)
    if isinstance(config.get("global"), dict):
        config["global"] = clean(config["global"])
    if isinstance(config.get("agent_configs"), list):
        config["agent_configs"] = [clean(a) for a in config["agent_configs"]]
    return config


def tactic_spec(tactic: Any) -> tuple[dict[str, Any], dict[str, BaseInvoker]]:
    """What a worker rebuilds the tactic from (no key in it), and the tactic's invokers by key (for the hub)."""
    invokers: dict[str, BaseInvoker] = {}
    keys: dict[int, str] = {}

    def key_of(invoker: Any) -> str | None:
        if invoker is None:
            return None
        if id(invoker) not in keys:
            keys[id(invoker)] = f"i{len(keys)}"
            invokers[keys[id(invoker)]] = invoker
        return keys[id(invoker)]

    agents = {name: key_of(inv) for name, inv in tactic._agent_invokers.items()}
    spec = {"cls": type(tactic), "config": scrub_invokers(tactic.config), "tags": dict(tactic.tags),
            "runtime": tactic._runtime.name, "agents": agents, "llm": key_of(tactic.llm_invoker)}
    return spec, invokers


def rebuild_tactic(spec: dict[str, Any], transport: Any = None) -> Any:
    """The tactic of `spec`, built here; with `transport`, its agents' invokers are the hub's.

    Raises:
        UsageError: the tactic class cannot be built as `cls(config, runtime=..., tags=...)`.
    """
    from lllm.core.runtime import get_runtime
    from lllm.invokers import override
    from lllm.invokers.remote import RemoteInvoker

    cls = spec["cls"]
    try:
        with override(_Unused()):  # the config's invokers are the hub's: build none here
            tactic = cls(spec["config"], runtime=get_runtime(spec["runtime"]), tags=spec["tags"])
    except TypeError as exc:
        raise UsageError(f"tactic class {cls.__qualname__} cannot be rebuilt on a Ray worker as "
                         f"{cls.__qualname__}(config, runtime=..., tags=...): {exc}. A Ray batch rebuilds the tactic "
                         "from its config on each worker: keep extra constructor arguments optional.") from None
    if transport is not None:
        remote = {key: RemoteInvoker(transport, key) for key in {*spec["agents"].values(), spec["llm"]} if key}
        tactic._agent_invokers = {agent: remote[key] for agent, key in spec["agents"].items() if key}
        tactic.llm_invoker = remote.get(spec["llm"]) if spec["llm"] else None
    return tactic


class Recorder:
    """A task's log store on a worker: every session start, record and end goes to the driver, in order.

    Records are sent to the hub as they are made (a worker that dies keeps nothing the driver has not seen); a
    session's start rides with its first record. When the task ends, every message comes back with the result
    as well (`rest()`): the driver replays those it has not collected from the hub yet, so it never waits for
    the hub at the end of a task.
    """

    path = "<records of a Ray task, sent to the driver's log store>"

    def __init__(self, send: Any) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._held: list[tuple[Any, ...]] = []
        self.messages: list[list[tuple[Any, ...]]] = []
        """The messages sent to the hub so far, in order (message n has sequence number n)."""

    def start_session(self, session_id: str, **fields: Any) -> None:
        with self._lock:
            self._held.append(("start", session_id, fields))

    def record(self, record: Any) -> None:
        if isinstance(record, dict):
            from lllm.records import TraceRecordAdapter

            record = TraceRecordAdapter.validate_python(record)
        with self._lock:
            ops, self._held = [*self._held, ("record", record)], []
            self._send(len(self.messages), ops)
            self.messages.append(ops)

    def note_metadata(self, session_id: str, values: dict[str, Any]) -> None:
        """A running session's metadata merge (the notebook of a sandbox that just started): sent in order with
        the next record, so the driver's log says it before the session ends."""
        with self._lock:
            self._held.append(("meta", session_id, dict(values)))

    def end_session(self, session_id: str, **fields: Any) -> None:
        with self._lock:
            self._held.append(("end", session_id, fields))

    def flush(self) -> None:
        """Nothing to commit here: the driver's store commits."""

    def rest(self) -> tuple[list[list[tuple[Any, ...]]], list[tuple[Any, ...]]]:
        """The messages sent, and the ops not sent yet."""
        with self._lock:
            ops, self._held = self._held, []
            return list(self.messages), ops


def lllm_version() -> str:
    """The installed lllm's version (every node must have the driver's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lllm")
    except PackageNotFoundError:
        return "unknown"


def _call(method: Any, *args: Any) -> Any:
    """A hub call from a worker: its value, or the error it raised (unwrapped); a hub that is gone is an
    infrastructure failure (it ends the tactic call)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(method.remote(*args))
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except RayActorError as exc:
        from lllm.errors import WorkerLost

        raise WorkerLost(f"the batch's hub on the driver's node is gone ({type(exc).__name__}); the batch cannot "
                         "reach its models and proxies any more", attempts=0, node=None) from None


def run_task(ctx: dict[str, Any], attempt_key: str, attempt: int, payload: bytes) -> bytes:
    """One attempt of one task (the Ray task's body); returns the pickled reply (see `RayExecutor`)."""
    from ray import cloudpickle
    import ray

    from lllm.executors._shipping import load_shipment
    from lllm.proxies.remote import use_proxy_host

    node = ray.get_runtime_context().get_node_id()
    if ctx["lllm_version"] != lllm_version():
        raise ExecutorError(f"node {node[:12]!r} has lllm {lllm_version()}, the driver {ctx['lllm_version']}: "
                            "install the same lllm on every node of the cluster", node=node)
    load_shipment(ctx["manifest"])
    hub = ctx["hub"]
    tactic = _TACTICS.get(ctx["batch_key"])
    if tactic is None:
        tactic = rebuild_tactic(cloudpickle.loads(ctx["spec"]),
                                transport=lambda method, *args: _call(getattr(hub, method), *args))
        while len(_TACTICS) >= _TACTICS_KEPT:
            _TACTICS.pop(next(iter(_TACTICS)))
        _TACTICS[ctx["batch_key"]] = tactic
    task, call_kwargs, tags, metadata, batch_id, task_index, task_hash = cloudpickle.loads(payload)
    recorder = Recorder(lambda seq, ops: hub.put.remote(attempt_key, seq, ops))
    mine = copy.copy(tactic)
    mine.log_store = recorder
    where = {"node": node, "attempt": attempt, "worker_pid": os.getpid()}
    result: Any = None
    error: BaseException | None = None
    with use_proxy_host(lambda method, *args: _call(hub.proxy, method, *args), prefix=attempt_key + "/"):
        try:
            result = mine._execute(task, call_kwargs=call_kwargs, tags=tags,
                                   metadata={**(metadata or {}), "ray": where}, batch_id=batch_id,
                                   task_index=task_index, task_hash=task_hash, session_out=[])
        except Exception as exc:  # noqa: BLE001 - the task's error goes back to the driver, as with threads
            error = exc
    streamed, ops = recorder.rest()
    reply = {"ok": error is None, "result": result, "error": error, "streamed": streamed, "ops": ops, **where}
    try:
        return cloudpickle.dumps(reply)
    except Exception as exc:  # noqa: BLE001 - a result or an error that does not pickle: say so instead
        what = "result" if error is None else "error"
        value = result if error is None else error
        text = "".join(traceback.format_exception(error)) if error is not None else None
        reply.update(ok=False, result=None, error=RemoteTaskError(
            f"task {task_index}'s {what}, a {type(value).__name__}, could not be sent back from Ray node "
            f"{node[:12]!r}: {type(exc).__name__}: {exc}" + (f"; it was: {error!r}"[:2000] if error else ""),
            error_type=type(value).__name__, traceback=text, node=node))
        reply["ops"] = [(op[0], op[1], {**op[2], "result": repr(op[2].get("result"))[:2000]})
                        if op[0] == "end" else op for op in ops]
        reply["streamed"] = [[(op[0], op[1], {**op[2], "result": repr(op[2].get("result"))[:2000]})
                              if op[0] == "end" else op for op in msg] for msg in streamed]
        return cloudpickle.dumps(reply)


def sweep_node() -> dict[str, Any]:
    """On one node: remove the sandbox containers and session folders whose owner process is gone (a worker
    killed with its node's processes leaves them); `lllm sandbox gc` on that node does the same."""
    from lllm.sandbox.reaper import reap

    report = reap()
    return {"containers": report.containers, "session_dirs": report.session_dirs}
