"""Tactics: orchestration code over agents built fresh from a config for every call, and the call's session.

```python
class Classify(Tactic):
    name = "classifier"                 # defining the class registers it under this name
    agent_group = ["classifier"]        # the agents each call gets, built from the config's agent_configs

    def call(self, task: str, **kwargs) -> str:
        agent = self.agents["classifier"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content

tactic = Classify(config, log_store=sqlite_store("runs.db"))
tactic("some text")                                   # one call
await tactic.acall("some text")                       # the same, async
tactic.bcall(items, max_workers=50, tags={"env": "prod"})   # results in input order
for index, result in tactic.ccall(items): ...         # as they finish (also `async for`)
```

Each call runs on a shallow copy of the tactic with its own agents, so concurrent calls share nothing but
the invoker (built once per Tactic from `invoker`/`invoker_config`; invokers are thread-safe). Every call has
a `TacticCallSession`: the agents' tracer fills in its id and writes each trace record to the log store, and
a tactic called inside another one's `call` becomes a child session whose cost folds into its parent's.
Every agent's `shutdown()` runs when the call ends, whether it succeeded or not.

What the agents of one call share lives on its session: `session.shared(key, factory)` makes it on first use
and `session.add_cleanup(fn)` ends it with the call (the `proxy:` block keeps a `scope: tactic` sandbox there).
`tactic(task, sandbox_session="ID")` names the sandbox that agents with `scope: session` keep across calls
(`session.sandbox_session`; a sub-tactic call inherits its parent's).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import threading
import time
import traceback as tb_module
import uuid
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from lllm.core._batch import BatchResult, BatchRun, BatchStream
from lllm.core.agent import Agent
from lllm.core.prompt import Prompt
from lllm.core.config import AgentBuildContext, AgentSpec, invoker_config_of, parse_agent_configs
from lllm.core.runtime import build_tactic, get_default_runtime, register_tactic_class
from lllm.errors import BudgetExceeded, ConfigError, UsageError
from lllm.invokers import build_invoker
from lllm.invokers.base import call_scope
from lllm.logging.sinks import SessionInfo, active_trace_sinks, notify
from lllm.records import InvokeCost, task_text

if TYPE_CHECKING:
    from lllm.core.runtime import Runtime
    from lllm.logging.store import LogStore

__all__ = [
    "BatchResult",
    "CallState",
    "Tactic",
    "TacticCallSession",
    "build_tactic",
    "current_session",
    "register_tactic_class",
]

_CURRENT: contextvars.ContextVar[TacticCallSession | None] = contextvars.ContextVar("lllm_tactic_session",
                                                                                      default=None)


def current_session() -> TacticCallSession | None:
    """The tactic call session running in this context (None outside a tactic call)."""
    return _CURRENT.get()


class CallState(str):
    """A tactic call's state as lllm-core names it (`"initial"`, `"running"`, `"success"`, `"failure"`), equal
    also to the log store's words for the last two (`"ok"`, `"error"`): `state == "ok"` and
    `state == "success"` both hold after a call that worked. (A set or dict key matches only the value itself.)"""

    _LOG_WORD = {"success": "ok", "failure": "error"}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.__eq__(self, other) or self._LOG_WORD.get(str(self)) == str(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__

    @property
    def log_word(self) -> str:
        """The log store's word for this state (`ok`/`error` for `success`/`failure`)."""
        return self._LOG_WORD.get(str(self), str(self))


class TacticCallSession:
    """One tactic call: its agent calls, model calls, sub-tactic calls, cost, result or error.

    Attribute and method names follow lllm-core 0.1 (`tactic_name`, `state`, `agent_sessions`,
    `sub_tactic_sessions`, `delivery`, `error`, `total_cost`, `summary()`). `state` is `"initial"`, then
    `"running"`, then `"success"` or `"failure"` (lllm-core's words; a `CallState`, which also equals the log
    store's `"ok"` / `"error"`).
    """

    def __init__(self, tactic_name: str, *, store: LogStore | None = None,
                 parent: TacticCallSession | None = None, tags: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None, batch_id: str | None = None,
                 task_index: int | None = None, task_hash: str | None = None) -> None:
        self.tactic_name = tactic_name
        self.session_id: str = uuid.uuid4().hex
        self.state: str = CallState("initial")
        self.store = store
        self.parent = parent
        self.tags: dict[str, Any] = dict(tags or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.batch_id, self.task_index, self.task_hash = batch_id, task_index, task_hash
        self.agent_sessions: dict[str, list[Any]] = {}
        """Agent name -> its `AgentCallRecord`s, one per `respond()`."""
        self.sub_tactic_sessions: dict[str, list[TacticCallSession]] = {}
        self.records: list[Any] = []
        """Every trace record of this call, in order (sub-tactic records are in their own session)."""
        self.agents: dict[str, Any] = {}
        """The agents of this call (kept after the call for inspection; they are shut down)."""
        self.delivery: Any = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.exception: BaseException | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._own = [0, 0, 0.0]  # prompt tokens, completion tokens, USD of this call's own model calls
        self._lock = threading.Lock()
        self._sinks = active_trace_sinks()  # OpenTelemetry and other trace sinks (lllm.logging.sinks)
        self.sandbox_session: str | None = None
        """The `sandbox_session=` id of this call (or of its parent call): agents whose sandbox has
        `scope: session` use, and keep, the sandbox of that name."""
        self._shared: dict[Any, Any] = {}
        self._cleanups: list[Callable[[], Any]] = []
        self._shared_lock = threading.RLock()

    def __repr__(self) -> str:
        return (f"TacticCallSession({self.tactic_name!r}, id={self.session_id[:12]!r}, state={self.state!r}, "
                f"cost=${self.total_cost.cost:.6f})")

    # -- recording ------------------------------------------------------------------------------------

    def tracer(self, record: Any) -> None:
        """The tracer this session's agents (and their tools) report to."""
        if getattr(record, "session_id", None) is None:
            record.session_id = self.session_id
        kind = getattr(record, "kind", None)
        with self._lock:
            self.records.append(record)
            if kind == "model_call":
                own = self._own
                own[0] += record.prompt_tokens
                own[1] += record.completion_tokens
                own[2] += record.cost
            elif kind == "agent_call":
                self.agent_sessions.setdefault(record.agent, []).append(record)
        if self.store is not None:
            self.store.record(record)
        if self._sinks:
            notify(self._sinks, "record", record)

    def info(self) -> SessionInfo:
        """This session as trace sinks see it."""
        total = self.total_cost
        return SessionInfo(session_id=self.session_id, tactic=self.tactic_name, started_at=self.started_at or 0.0,
                           parent_id=self.parent.session_id if self.parent else None, tags=dict(self.tags),
                           batch_id=self.batch_id, task_index=self.task_index, ended_at=self.ended_at,
                           state=CallState(self.state).log_word, error=self.error, cost=total.cost, prompt_tokens=total.prompt_tokens,
                           completion_tokens=total.completion_tokens)

    def shared(self, key: Any, factory: Callable[[], Any]) -> Any:
        """What the agents of this call share under `key`, made by `factory()` on first use (tools keep a
        `scope: tactic` sandbox here); end it with `add_cleanup`."""
        with self._shared_lock:
            if key not in self._shared:
                self._shared[key] = factory()
            return self._shared[key]

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        """Run `fn()` when the call ends (after its agents' shutdown, newest first), whether it failed or not."""
        with self._shared_lock:
            self._cleanups.append(fn)

    def run_cleanups(self) -> list[str]:
        """Run the cleanups `add_cleanup` registered, once each; the errors they raised, as text."""
        with self._shared_lock:
            cleanups, self._cleanups = self._cleanups[::-1], []
            self._shared.clear()
        errors: list[str] = []
        for fn in cleanups:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - reported in the session's metadata
                errors.append(f"call cleanup: {type(exc).__name__}: {exc}")
        return errors

    def record_agent_call(self, agent_name: str, session: Any) -> None:
        """Add an agent call (lllm-core 0.1 name; the tracer does this for `AgentCallRecord`s)."""
        with self._lock:
            self.agent_sessions.setdefault(agent_name, []).append(session)

    def record_sub_tactic_call(self, tactic_name: str, session: TacticCallSession) -> None:
        """Add a sub-tactic call made inside this one (its cost folds into `total_cost`)."""
        with self._lock:
            self.sub_tactic_sessions.setdefault(tactic_name, []).append(session)

    def start(self, task: Any) -> None:
        """Mark the call running and write its row (state `running`) to the log store."""
        self.state = CallState("running")
        self.started_at = time.time()
        if self.store is not None:
            self.store.start_session(
                self.session_id, tactic=self.tactic_name, tags=self.tags, metadata=self.metadata, task=task,
                task_hash=self.task_hash, batch_id=self.batch_id, task_index=self.task_index,
                parent_id=self.parent.session_id if self.parent else None, started_at=self.started_at,
                wait=self.batch_id is None)  # a batch flushes before it hands out results (BatchRun)
        if self._sinks:
            notify(self._sinks, "session_started", self.info())

    def success(self, result: Any, *, dialogs: Sequence[tuple[str, str, Any]] = ()) -> None:
        """The call returned `result`."""
        self.state = CallState("success")
        self.delivery = result
        self._end(dialogs)

    def failure(self, error: BaseException | None = None, *,
                dialogs: Sequence[tuple[str, str, Any]] = ()) -> None:
        """The call raised `error` (kept with its traceback)."""
        self.state = CallState("failure")
        if error is not None:
            self.exception = error
            self.error = f"{type(error).__name__}: {error}"
            self.traceback = "".join(tb_module.format_exception(error))
        self._end(dialogs)

    def _end(self, dialogs: Sequence[tuple[str, str, Any]]) -> None:
        self.ended_at = time.time()
        if self._sinks:
            notify(self._sinks, "session_ended", self.info())
        if self.store is not None:
            if self.sub_tactic_sessions:
                total = self.total_cost
                cost, prompt, completion = total.cost, total.prompt_tokens, total.completion_tokens
            else:  # the usual case: this call's own totals, without building an InvokeCost (once per task)
                own = self._own
                prompt, completion, cost = int(own[0]), int(own[1]), float(own[2])
            self.store.end_session(
                self.session_id, state="ok" if self.state == "ok" else "error", ended_at=self.ended_at,
                cost=cost, prompt_tokens=prompt, completion_tokens=completion,
                result=self.delivery, store_result=self.parent is None, error=self.error,
                traceback=self.traceback, dialogs=dialogs, metadata=self.metadata, wait=self.batch_id is None)

    # -- cost ---------------------------------------------------------------------------------------

    @property
    def agent_cost(self) -> InvokeCost:
        """Usage and USD of this call's own model calls."""
        prompt, completion, cost = self._own
        return InvokeCost.model_construct(prompt_tokens=int(prompt), completion_tokens=int(completion),
                                          total_tokens=int(prompt + completion), cost=cost)

    @property
    def sub_tactic_cost(self) -> InvokeCost:
        """Usage and USD of the sub-tactic calls made inside this one."""
        with self._lock:
            children = [s for ss in self.sub_tactic_sessions.values() for s in ss]
        return InvokeCost.total(s.total_cost for s in children)

    @property
    def total_cost(self) -> InvokeCost:
        """Everything this call spent, sub-tactic calls included."""
        if not self.sub_tactic_sessions:  # the usual case: no sums of pydantic models to build
            return self.agent_cost
        return self.agent_cost + self.sub_tactic_cost

    @property
    def agent_call_count(self) -> int:
        return sum(len(v) for v in self.agent_sessions.values())

    @property
    def sub_tactic_call_count(self) -> int:
        return sum(len(v) for v in self.sub_tactic_sessions.values())

    def summary(self) -> dict[str, Any]:
        """A small dict for printing."""
        return {"tactic": self.tactic_name, "session_id": self.session_id, "state": self.state,
                "agent_calls": self.agent_call_count, "sub_tactic_calls": self.sub_tactic_call_count,
                "cost": self.total_cost.cost, "error": self.error}


def _track_roots(agent: Any) -> list[Any]:
    """Remember every dialog `agent.open()` starts (closed dialogs leave `agent.dialogs`, not the log)."""
    roots: list[Any] = []
    open_dialog = agent.open

    def open(alias: str, prompt_args: dict[str, Any] | None = None) -> Any:  # noqa: A001 - wraps Agent.open
        dialog = open_dialog(alias, prompt_args)
        roots.append(dialog)
        return dialog

    open.__doc__ = open_dialog.__doc__
    agent.open = open
    return roots


def _dialog_trees(agents: dict[str, Any], roots: dict[str, list[Any]]) -> list[tuple[str, str, Any]]:
    """(agent, root alias, root.to_json() with every fork) for each dialog tree of each agent."""
    out: list[tuple[str, str, Any]] = []
    for agent_name, agent in agents.items():
        dialogs = getattr(agent, "dialogs", None) or {}
        found: dict[int, Any] = {id(d): d for d in roots.get(agent_name, ())}
        for d in (dialogs.values() if hasattr(dialogs, "values") else dialogs):
            root = d
            while getattr(root, "parent", None) is not None:
                root = root.parent
            found.setdefault(id(root), root)
        seen: set[str] = set()
        for root in found.values():
            try:
                data: Any = root.to_json()  # JSON text: the log stores it as it is (no dict in between)
            except Exception as exc:  # noqa: BLE001 - a dialog that cannot serialise must not lose the call
                data = {"error": f"to_json failed: {type(exc).__name__}: {exc}"}
            alias = str(getattr(root, "name", None) or "dialog")
            if alias in seen:  # the alias was opened again: keep both
                alias = f"{alias}#{getattr(root, 'id', len(seen))}"
            seen.add(alias)
            out.append((agent_name, alias, data))
    return out


class Tactic:
    """Orchestration over a group of agents; subclass it with `name`, `agent_group` and `call()`.

    Args:
        config: the tactic config (`resolve_config(name)` or `load_config(path)`) or a registered config name,
            with an `agent_configs` entry for each name in `agent_group`.
        log_store: where each call's session and trace are written (None: not recorded).
        runtime: where `system_prompt_path`s are looked up (default: the default runtime).
        tags: tags stored on every session of this tactic (a call's own tags are merged over them).

    Raises:
        ConfigError: the config lacks an agent of the group, has a bad key or an unknown prompt path.
    """

    name: ClassVar[str | None] = None
    agent_group: ClassVar[list[str] | None] = None
    _lllm_registers: ClassVar[bool] = False
    """Set by `__init_subclass__`: the class registers itself by `name` (lllm.toml discovery looks for it)."""

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._lllm_registers = bool(register and isinstance(cls.__dict__.get("name"), str) and cls.__dict__["name"])
        if cls._lllm_registers:
            register_tactic_class(cls)

    def __init__(self, config: dict[str, Any] | str | None = None, log_store: LogStore | None = None, *,
                 runtime: Runtime | None = None, tags: dict[str, Any] | None = None) -> None:
        if not self.name:
            raise UsageError(f"{type(self).__qualname__} has no `name`; give the Tactic subclass a class "
                             "attribute name = '...'")
        self._runtime = runtime or get_default_runtime()
        if isinstance(config, str):  # a registered config name
            config = self._runtime.get_config(config)
        if config is not None and not isinstance(config, dict):
            raise UsageError(f"{type(self).__qualname__}(config, ...) takes a config dict (resolve_config(name)) or "
                             f"a registered config name; got {type(config).__name__}: {config!r:.80}")
        self.config: dict[str, Any] = dict(config or {})
        self.log_store = log_store
        self.tags: dict[str, Any] = _check_tags(tags)
        self.agent_specs: dict[str, AgentSpec] = parse_agent_configs(
            self.config, list(self.agent_group or []), self.name, runtime=self._runtime)
        self._invoker_config = invoker_config_of(self.config.get("invoker"), self.config.get("invoker_config"))
        self.llm_invoker: Any = None
        """The tactic's invoker, built once and shared by every agent and call (None if no agent uses it)."""
        self._agent_invokers: dict[str, Any] = {}
        for agent_name, spec in self.agent_specs.items():
            if spec.invoker_config is not None:
                self._agent_invokers[agent_name] = _build_invoker(build_invoker, spec.invoker_config, self.config,
                                                                  f"agent {agent_name!r}: ")
            else:
                if self.llm_invoker is None:
                    self.llm_invoker = _build_invoker(build_invoker, self._invoker_config, self.config, "")
                self._agent_invokers[agent_name] = self.llm_invoker
        self.max_workers: int = int(self.config.get("max_workers", 8))
        self.agents: dict[str, Any] = {}
        """Inside `call()`: this call's agents by name."""
        self.session: TacticCallSession | None = None
        """Inside `call()`: this call's session."""
        self.last_session: TacticCallSession | None = None
        """The session of the call that finished last (for inspection after a call)."""
        self.last_batch_id: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, agents={list(self.agent_specs)!r})"

    @classmethod
    def quick(cls, query: str | None = None, system_prompt: str | Prompt = "You are a helpful assistant.",
              model: str = "gpt-4o", return_agent: bool = False, **model_args: Any) -> Any:
        """One agent, no config: ask `query` and get the answer (the quick start of lllm-core's Lesson 1).

        Builds an `Agent` named "assistant" with `system_prompt` (a string becomes `Prompt(path="_quick/system")`,
        a template like any prompt: write a literal brace as `{{`), `model`, the invoker `build_invoker({"invoker":
        "litellm"})` (so `lllm.invokers.override(...)` and the scripted model apply) and `model_args`.

        Args:
            query: The first user message. The first positional argument is the query, never the system prompt:
                `Tactic.quick("You are a ...")` asks the model that text (some lllm-core guides read it as a
                system prompt; lllm-core's code and Lesson 1 do not).
            system_prompt: The system prompt (a string or a `Prompt`).
            model: The model name, as litellm spells it.
            return_agent: Also return the agent, to go on talking in its "chat" dialog.
            **model_args: Provider arguments (temperature, max_tokens, ...).

        Returns:
            With a query: the answer `Message`, or `(Message, Agent)` with `return_agent=True`. Without one: the
            `Agent`, with no dialog open (`agent.open(alias)` first).
        """
        prompt = system_prompt
        if isinstance(system_prompt, str):
            prompt = Prompt(path="_quick/system", prompt=system_prompt)
        agent = Agent(name="assistant", system_prompt=prompt, model=model,
                      llm_invoker=build_invoker({"invoker": "litellm"}), model_args=model_args)
        if query is None:
            return agent
        agent.open("chat")
        agent.receive(query)
        response = agent.respond()
        return (response, agent) if return_agent else response

    # -- the call ------------------------------------------------------------------------------------

    def call(self, task: Any, **kwargs: Any) -> Any:
        """Override: solve `task` with `self.agents[...]`; the return value is the call's result."""
        raise NotImplementedError(f"{type(self).__qualname__}.call(task, **kwargs) is not implemented")

    def _build_agents(self, session: TacticCallSession, into: dict[str, Any], roots: dict[str, list[Any]]) -> None:
        for agent_name, spec in self.agent_specs.items():
            ctx = AgentBuildContext(session_id=session.session_id, tracer=session.tracer, runtime=self._runtime,
                                    workdir_base=self.config.get("workdir"), agent_name=agent_name,
                                    config=spec.raw)
            agent = spec.build(self._agent_invokers[agent_name], tracer=session.tracer, ctx=ctx)
            into[agent_name] = agent
            if session.store is not None:
                roots[agent_name] = _track_roots(agent)

    def _execute(self, task: Any, *, call_kwargs: dict[str, Any], tags: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None, batch_id: str | None = None,
                 task_index: int | None = None, task_hash: str | None = None,
                 session_out: list[Any] | None = None) -> Any:
        """Run one call on an isolated copy with fresh agents; every entry point ends up here."""
        parent = _CURRENT.get()
        call_kwargs = dict(call_kwargs)
        sandbox_session = call_kwargs.pop("sandbox_session", None)
        if sandbox_session is not None and (not isinstance(sandbox_session, str) or not sandbox_session.strip()):
            raise UsageError(f"sandbox_session={sandbox_session!r} must be a non-empty name, like 'analysis-1'",
                             value=sandbox_session)
        store = self.log_store if self.log_store is not None else (parent.store if parent else None)
        merged_tags = {**(parent.tags if parent else {}), **self.tags, **_check_tags(tags)}
        session = TacticCallSession(self.name or type(self).__name__, store=store, parent=parent, tags=merged_tags,
                                    metadata=metadata, batch_id=batch_id, task_index=task_index,
                                    task_hash=task_hash)
        session.sandbox_session = sandbox_session or (parent.sandbox_session if parent else None)
        if sandbox_session:
            session.metadata["sandbox_session"] = sandbox_session
        if session_out is not None:
            session_out.append(session)
        if parent is not None:
            parent.record_sub_tactic_call(session.tactic_name, session)
        ctx = copy.copy(self)
        agents: dict[str, Any] = {}
        roots: dict[str, list[Any]] = {}
        ctx.agents, ctx.session = agents, session
        session.agents = agents
        token = _CURRENT.set(session)
        error: BaseException | None = None
        result: Any = None
        try:
            session.start(task)
            ctx._build_agents(session, agents, roots)
            with call_scope(session.session_id, task_text(task)):  # this call's model requests belong to it
                result = ctx.call(task, **call_kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _CURRENT.reset(token)
            dialogs = _dialog_trees(agents, roots) if store is not None else []
            cleanup_errors = _shutdown(agents) + session.run_cleanups()
            if cleanup_errors:
                session.metadata["cleanup_errors"] = cleanup_errors
            self.last_session = session
            if session.state == "running":
                try:
                    if error is None:
                        session.success(result, dialogs=dialogs)
                    else:
                        session.failure(error, dialogs=dialogs)
                except Exception as log_error:
                    if error is None:
                        raise  # the call worked but could not be recorded: say so
                    error.add_note(f"the log store could not record this failure: {log_error!r}")
        return result

    def __call__(self, task: Any, *, tags: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                 return_session: bool = False, **kwargs: Any) -> Any:
        """Run one call of the tactic on `task` (keyword arguments go to `call()`).

        Args:
            tags: stored on this call's session (over the tactic's own tags).
            metadata: stored on this call's session.
            return_session: return the `TacticCallSession` (result in `.delivery`) instead of the result.
            sandbox_session: (a keyword like the others, taken by the tactic, not given to `call()`) the name of
                the sandbox that agents with `sandbox: {scope: session}` use and keep for later calls; also
                taken by `acall`, `bcall` and `ccall`.
        """
        holder: list[Any] = []
        result = self._execute(task, call_kwargs=kwargs, tags=tags, metadata=metadata, session_out=holder)
        return holder[0] if return_session else result

    async def acall(self, task: Any, **kwargs: Any) -> Any:
        """`tactic(task, ...)` without blocking the event loop (it runs in a worker thread)."""
        return await asyncio.to_thread(self.__call__, task, **kwargs)

    def _batch(self, tasks: Sequence[Any], *, max_workers: int | None, fail_fast: bool,
               tags: dict[str, Any] | None, resume: str | None, max_cost: float | None, progress: bool | None,
               metadata: dict[str, Any] | None, call_kwargs: dict[str, Any],
               return_sessions: bool = False, executor: Any = None) -> BatchRun:
        _check_tags(tags)
        run = BatchRun(self, tasks, max_workers=self.max_workers if max_workers is None else max_workers,
                       fail_fast=fail_fast, tags=tags, resume=resume, max_cost=max_cost, progress=progress,
                       metadata=metadata, call_kwargs=call_kwargs, return_sessions=return_sessions,
                       executor=executor)
        self.last_batch_id = run.batch_id
        return run

    def bcall(self, tasks: Sequence[Any], max_workers: int | None = None, fail_fast: bool = True,
              tags: dict[str, Any] | None = None, *, resume: str | None = None, max_cost: float | None = None,
              progress: bool | None = None, metadata: dict[str, Any] | None = None, return_sessions: bool = False,
              executor: Any = None, **kwargs: Any) -> BatchResult:
        """Run many tasks on `max_workers` threads; the results come back in input order.

        Args:
            tasks: the tasks.
            max_workers: threads (default: the config's `max_workers`, else 8).
            fail_fast: raise the first error, starting no new task after it; with False a failed task's
                exception stands in its place in the list.
            tags: stored on every task's session.
            resume: the `batch_id` of an earlier bcall: its succeeded tasks are not run again.
            max_cost: USD; no new task starts once the batch spent this much (see `BudgetExceeded`).
            progress: a progress bar on stderr (default: only when stderr is a terminal).
            metadata: stored on every task's session.
            return_sessions: put each task's `TacticCallSession` in the list instead of its result.
            executor: where the tasks run: None or "threads" (this process), "ray" (a Ray cluster:
                `$LLLM_RAY_ADDRESS`, else a local one), or an executor object such as
                `lllm.executors.RayExecutor(address=..., max_retries=...)`; see docs/scaling.md.
            **kwargs: passed to `call()` for every task.

        Returns:
            A `BatchResult` (a list) with `.batch_id`, `.spent`, `.skipped` and `.errors`.
        """
        run = self._batch(tasks, max_workers=max_workers, fail_fast=fail_fast, tags=tags, resume=resume,
                          max_cost=max_cost, progress=progress, metadata=metadata, call_kwargs=kwargs,
                          return_sessions=return_sessions, executor=executor)
        results = BatchResult([None] * len(run.tasks))
        try:
            for index, value in run:
                results[index] = value
        except BudgetExceeded as exc:
            setattr(exc, "results", results)  # what finished before the cap (not pickled; the log store has it too)
            raise
        results.batch_id, results.spent, results.skipped = run.batch_id, run.spent, run.skipped
        return results

    def ccall(self, tasks: Sequence[Any], max_workers: int | None = None, fail_fast: bool = True,
              tags: dict[str, Any] | None = None, *, resume: str | None = None, max_cost: float | None = None,
              progress: bool | None = None, metadata: dict[str, Any] | None = None, return_sessions: bool = False,
              executor: Any = None, **kwargs: Any) -> BatchStream:
        """Like `bcall`, but yields `(index, result)` as tasks finish; iterate with `for` or `async for`."""
        return BatchStream(self._batch(tasks, max_workers=max_workers, fail_fast=fail_fast, tags=tags,
                                       resume=resume, max_cost=max_cost, progress=progress, metadata=metadata,
                                       call_kwargs=kwargs, return_sessions=return_sessions, executor=executor))


def _build_invoker(build: Any, invoker_config: dict[str, Any], config: dict[str, Any], who: str) -> Any:
    """`build_invoker(invoker_config)`, its ConfigError naming the config file and the invoker keys."""
    try:
        return build(invoker_config)
    except ConfigError as exc:
        where = config.get("_config_path") or "<config dict>"
        key = f"invoker_config.{getattr(exc, 'key', None)}" if getattr(exc, "key", None) not in (None, "invoker") else "invoker"
        raise ConfigError(f"{where}: {who}{exc.message}", path=where, key=key) from exc


def _check_tags(tags: Any, name: str = "tags") -> dict[str, Any]:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) for k in tags):
        raise UsageError(f"`{name}` must be a dict with string keys, like {{'env': 'prod'}}; got {tags!r}",
                         value=tags)
    return dict(tags)


def _shutdown(agents: dict[str, Any]) -> list[str]:
    """Shut every agent down; a failing cleanup does not stop the others. Returns the errors as text."""
    errors: list[str] = []
    for agent_name, agent in agents.items():
        shutdown = getattr(agent, "shutdown", None)
        if shutdown is None:
            continue
        try:
            failures = shutdown()
        except Exception as exc:  # noqa: BLE001 - reported in the session's metadata
            failures = [exc]
        for failure in failures or ():
            errors.append(f"{agent_name}: {type(failure).__name__}: {failure}")
    return errors
