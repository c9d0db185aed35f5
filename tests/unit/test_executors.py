"""The parts of batches-elsewhere that need no cluster: the executor seam and its registry, proxies and models
served where the keys are (ProxyHost / RemoteProxyManager, InvokerHost / RemoteInvoker, through the real
gateway), the record stream (Recorder, Inbox, replay into a log store), the key hand-over, packages loaded as
shipped copies, and the cluster address probe. The Ray cluster itself is tested in tests/ray/."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.errors import (
    ClusterUnavailable,
    ConfigError,
    ProxyError,
    ProxyNotActivated,
    ApiBudgetExceeded,
    ScriptError,
    UsageError,
)
from lllm.proxies import BaseProxy


class Echo(BaseProxy):
    _proxy_name = "Echo"
    _proxy_description = "Echoes, and says which process answered."
    closed = 0

    @BaseProxy.endpoint(category="t", endpoint="echo", description="Echo.", params={"x": (int, 1)})
    def echo(self, x: int = 0) -> dict:
        return {"x": x, "pid": os.getpid()}

    def close(self) -> None:
        Echo.closed += 1


def host_runtime() -> Runtime:
    runtime = Runtime("executors-test")
    runtime.register_proxy("echo", Echo)
    return runtime


def direct(host: Any) -> Any:
    """A transport that calls the host in this process (a Ray actor call on a worker)."""
    calls: list[str] = []

    def transport(method: str, *args: Any) -> Any:
        calls.append(method)
        return getattr(host, method)(*args)

    transport.calls = calls  # type: ignore[attr-defined]
    return transport


# -- the executor seam ---------------------------------------------------------------------------------------


class Classify(Tactic, register=False):
    name = "executors_classify"
    agent_group = ["a"]

    def call(self, task: str, **kwargs: Any) -> str:
        if task == "boom":
            raise ValueError("boom")
        agent = self.agents["a"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


def classify(**kwargs: Any) -> Classify:
    from lllm.invokers.scripted import ScriptedInvoker

    config = {"tactic_type": "executors_classify", "invoker": "scripted",
              "agent_configs": [{"name": "a", "model_name": "m", "system_prompt": "Say it."}]}
    from lllm.invokers import override

    with override(ScriptedInvoker(responder=lambda messages: f"<{messages[-1]['content']}>")):
        return Classify(config, runtime=Runtime("executors-classify"), **kwargs)


class Recording:
    """An executor that runs tasks in the worker threads, as threads do, and notes what it was asked."""

    name = "recording"

    def __init__(self) -> None:
        self.started = self.finished = 0
        self.ran: list[int] = []

    def start(self, run: Any) -> Any:
        self.started += 1

        def execute(task: Any, **kwargs: Any) -> Any:
            self.ran.append(kwargs["task_index"])
            return run.tactic._execute(task, **kwargs)

        return execute

    def finish(self, run: Any) -> None:
        self.finished += 1


def test_the_registry_has_threads_and_ray_and_says_what_it_knows() -> None:
    from lllm.core.executor import EXECUTORS, ThreadExecutor, resolve_executor

    assert {"threads", "ray"} <= set(EXECUTORS.names())
    assert isinstance(resolve_executor(None), ThreadExecutor) and resolve_executor("threads") is resolve_executor(None)
    with pytest.raises(ConfigError, match=r"unknown executor 'rya'.*Did you mean 'ray'"):
        resolve_executor("rya")
    with pytest.raises(UsageError, match="executor must be a registered name"):
        resolve_executor(object())  # type: ignore[arg-type]


def test_a_batch_runs_through_its_executor_with_the_same_rules() -> None:
    executor = Recording()
    results = classify().bcall(["x", "boom", "y"], executor=executor, fail_fast=False, max_workers=2)
    assert results[0] == "<x>" and isinstance(results[1], ValueError) and results[2] == "<y>"
    assert sorted(executor.ran) == [0, 1, 2] and (executor.started, executor.finished) == (1, 1)
    with pytest.raises(ValueError, match="boom"):  # finish runs when the batch fails too
        classify().bcall(["boom"], executor=executor)
    assert (executor.started, executor.finished) == (2, 2)
    assert classify().bcall([], executor=executor) == [] and executor.started == 2  # nothing to run: no start


def test_an_executor_that_cannot_start_fails_the_batch_before_any_task() -> None:
    class Broken(Recording):
        def start(self, run: Any) -> Any:
            raise ClusterUnavailable("no cluster here")

    from lllm.logging import sqlite_store

    store = sqlite_store(":memory:")
    tactic = classify()
    tactic.log_store = store
    with pytest.raises(ClusterUnavailable):
        tactic.bcall(["x"], executor=Broken())
    assert store.count("sessions") == 0


# -- proxies where the keys are ----------------------------------------------------------------------------


def test_a_remote_proxy_manager_runs_calls_in_its_host() -> None:
    from lllm.proxies.remote import ProxyHost, RemoteProxyManager

    host = ProxyHost(runtime=host_runtime())
    transport = direct(host)
    manager = RemoteProxyManager(transport, "s1", ["echo"], budgets={"echo": {"calls": 2}})
    assert manager.available() == ["echo"] and "echo (Echo): echo" in manager.directory()
    assert manager.resolve("echo/echo") == (None, "echo", "echo")
    assert manager.call("echo/echo", {"x": 3}) == {"x": 3, "pid": os.getpid()}
    assert "### echo/echo" in manager.api_doc("echo")
    with pytest.raises(ProxyNotActivated):  # refused here, as a ProxyManager does, without asking the host
        manager.call("fmp/price", {})
    with pytest.raises(ProxyError, match="must be '<proxy>/<endpoint>'"):
        manager.resolve("nopath")
    manager.call("echo/echo", {"x": 1})
    with pytest.raises(ApiBudgetExceeded):  # the session's budget is counted in the host
        manager.call("echo/echo", {"x": 2})
    assert manager.budgets.spent() == {"echo": {"calls": 2, "cost": 0.0}}
    assert host.sessions() == ["s1"]
    closed = Echo.closed
    manager.close()
    manager.close()
    assert host.sessions() == [] and Echo.closed == closed + 1
    assert transport.calls.count("close") == 1
    with pytest.raises(ConfigError, match="no live proxy is registered under that path"):
        RemoteProxyManager(transport, "s2", ["nosuch"])


def test_build_manager_is_remote_only_inside_use_proxy_host() -> None:
    from lllm.proxies.manager import ProxyManager
    from lllm.proxies.remote import (
        ProxyHost,
        RemoteProxyManager,
        build_manager,
        current_proxy_host,
        use_proxy_host,
    )

    host = ProxyHost(runtime=host_runtime())
    assert isinstance(build_manager(["echo"], runtime=host_runtime()), ProxyManager)
    seen: dict[str, Any] = {}
    with use_proxy_host(direct(host), prefix="batch/3/"):
        manager = build_manager(["echo"], runtime=object(), source="live")
        thread = threading.Thread(target=lambda: seen.update(host=current_proxy_host()))
        thread.start()
        thread.join()
    assert seen == {"host": None}  # a thread that does not copy the context builds local managers
    assert current_proxy_host() is None
    assert isinstance(manager, RemoteProxyManager) and manager.key.startswith("batch/3/")
    assert host.close_prefix("batch/3/") == 1 and host.sessions() == []


def test_the_gateway_serves_a_remote_manager(tmp_path: Path) -> None:
    from lllm.proxies.gateway import Gateway
    from lllm.proxies.remote import ProxyHost, RemoteProxyManager
    from lllm.proxies.wire import CallRequest  # noqa: F401 - the wire format the payload follows

    host = ProxyHost(runtime=host_runtime())
    manager = RemoteProxyManager(direct(host), "g1", ["echo"])
    records: list[Any] = []
    with Gateway() as gateway:
        session = gateway.open_session(tmp_path, manager, session_id="s", tracer=records.append)
        payload = json.dumps({"token": session.token, "path": "echo/echo", "params": {"x": 5}, "id": 1}).encode()
        reply = json.loads(session.handle(payload)[4:])
        session.close()
    assert reply["ok"] and reply["data"] == {"x": 5, "pid": os.getpid()}
    assert [(r.proxy, r.endpoint, r.status) for r in records] == [("echo", "echo", "ok")]


# -- models where the keys are -----------------------------------------------------------------------------


def test_a_remote_invoker_answers_from_its_host_with_the_call_scope() -> None:
    from lllm.invokers.base import BaseStreamHandler, InvokeContext, call_scope
    from lllm.invokers.remote import InvokerHost, RemoteInvoker
    from lllm.invokers.scripted import ScriptedInvoker

    scripted = ScriptedInvoker(scripts={"t1": ["one"], "t2": ["two"]}, input_price=1.0)
    host = InvokerHost({"main": pickle.loads(pickle.dumps(scripted))})  # a copy, as the hub gets it
    invoker = RemoteInvoker(direct(host), "main")
    tokens: list[str] = []

    class Tokens(BaseStreamHandler):
        def on_token(self, token: str) -> None:
            tokens.append(token)

    with call_scope("call-2", "t2"):
        result = invoker.call([{"role": "user", "content": "hi"}], model="m", stream_handler=Tokens(),
                              context=InvokeContext(agent="a"))
    assert result.content == "two" and result.usage.cost > 0 and result.raw is None and tokens == ["two"]
    with call_scope("call-1", "t1"):
        assert invoker.call([{"role": "user", "content": "hi"}], model="m").content == "one"
    with pytest.raises(ScriptError):  # the host's errors come back as they are
        invoker.call([{"role": "user", "content": "no task"}], model="m")
    with pytest.raises(UsageError, match="no invoker 'other'"):
        RemoteInvoker(direct(host), "other").call([], model="m")


# -- the record stream ---------------------------------------------------------------------------------------


def test_the_recorder_holds_a_start_until_the_first_record() -> None:
    from lllm.executors._worker import Recorder
    from lllm.records import ModelCallRecord

    sent: list[tuple[int, list[Any]]] = []
    recorder = Recorder(lambda seq, ops: sent.append((seq, ops)))
    recorder.start_session("s", tactic="t")
    assert sent == []
    recorder.record(ModelCallRecord(session_id="s", agent="a", model="m"))
    recorder.record({"kind": "model_call", "session_id": "s", "agent": "a", "model": "m"})
    recorder.end_session("s", state="ok")
    assert [seq for seq, _ in sent] == [0, 1] and [op[0] for op in sent[0][1]] == ["start", "record"]
    assert recorder.rest() == ([ops for _, ops in sent], [("end", "s", {"state": "ok"})])


def test_the_inbox_hands_out_messages_in_order_and_what_a_lost_attempt_sent() -> None:
    from lllm.executors._hub import Inbox

    inbox = Inbox()
    inbox.put("a", 1, ["second"])
    assert inbox.take_ready() == {}  # message 0 has not arrived
    inbox.put("a", 0, ["first"])
    assert inbox.take_ready() == {"a": [(0, ["first"]), (1, ["second"])]}
    inbox.put("a", 2, ["third"])
    assert inbox.close("a") == [(2, ["third"])]
    inbox.put("b", 0, ["x"])
    inbox.put("b", 2, ["z"])
    assert inbox.close("b") == [(0, ["x"]), (2, ["z"])]  # a lost worker: what came, gaps and all
    inbox.put("b", 1, ["late"])
    assert inbox.take_ready() == {} and inbox.close("b") == []  # a closed attempt keeps nothing


def test_replay_takes_each_streamed_message_once_in_order() -> None:
    from lllm.executors._replay import Attempt
    from lllm.logging import sqlite_store

    store = sqlite_store(":memory:")
    ops = _ops("w1")
    attempt = Attempt("k/0/1", store=store, parent=None, sinks=(), task="x", number=1, fields={})
    messages = [(0, ops[:2]), (1, [("record", ops[1][1].model_copy())])]
    attempt.replay_messages(messages[1:])  # out of order: held back
    attempt.replay_messages(messages[:1])  # the collector took message 0
    attempt.replay_messages(messages)  # the reply brings both: only message 1 is new
    attempt.replay([ops[2]])
    store.flush()
    assert attempt.replayed == 2 and store.count("model_calls") == 2
    assert store.get_session("w1").state == "ok"


def _ops(session: str, *, parent: str | None = None, cost: float = 0.5) -> list[tuple[Any, ...]]:
    from lllm.records import ModelCallRecord

    return [("start", session, {"tactic": "t", "tags": {"k": "v"}, "metadata": {}, "task": "x", "task_hash": "h",
                                "batch_id": "b", "task_index": 0, "parent_id": parent, "started_at": 1.0,
                                "wait": False}),
            ("record", ModelCallRecord(session_id=session, agent="a", model="m", cost=cost, prompt_tokens=3)),
            ("end", session, {"state": "ok", "ended_at": 2.0, "cost": cost, "prompt_tokens": 3,
                              "completion_tokens": 0, "result": "r", "store_result": parent is None,
                              "error": None, "traceback": None, "dialogs": [], "metadata": {"ray": {}},
                              "wait": False})]


def test_replay_writes_an_attempt_into_the_store_under_the_drivers_call() -> None:
    from lllm.core.tactic import TacticCallSession
    from lllm.executors._replay import Attempt
    from lllm.logging import sqlite_store

    store = sqlite_store(":memory:")
    parent = TacticCallSession("outer", store=store)
    parent.start("outer task")
    attempt = Attempt("k/0/1", store=store, parent=parent, sinks=(), task="x", number=1, fields={})
    attempt.replay(_ops("w1"))
    store.flush()
    row = store.get_session("w1")
    assert (row.state, row.parent_id, row.cost, row.tags) == ("ok", parent.session_id, 0.5, {"k": "v"})
    assert row.result is None  # a child session's result is its parent's business
    assert attempt.top is not None and attempt.top.total_cost.cost == 0.5 and attempt.top.delivery == "r"
    assert parent.total_cost.cost == 0.5  # folded into the driver's call, as with threads
    assert store.get_session(parent.session_id).cost == pytest.approx(0.5)


def test_a_lost_attempt_keeps_its_records_and_says_so() -> None:
    from lllm.executors._replay import Attempt
    from lllm.logging import sqlite_store

    store = sqlite_store(":memory:")
    attempt = Attempt("k/0/1", store=store, parent=None, sinks=(), task="x", number=1, fields={})
    attempt.replay(_ops("w1")[:2])  # started, one model call, then the worker died
    top = attempt.lose("NodeDiedError on attempt 1")
    store.flush()
    row = store.get_session("w1")
    assert (row.state, row.cost, row.error) == ("error", 0.5, "WorkerLost: NodeDiedError on attempt 1")
    assert row.metadata["ray"]["lost"] is True and top.state == "error" and top.total_cost.cost == 0.5
    # a worker lost before it recorded anything still leaves one session for its attempt
    fields = {"tactic": "t", "tags": {}, "metadata": {"m": 1}, "task_hash": "h", "batch_id": "b", "task_index": 4}
    silent = Attempt("k/4/2", store=store, parent=None, sinks=(), task="y", number=2, fields=fields)
    top = silent.lose("WorkerCrashedError")
    store.flush()
    row = store.get_session(top.session_id)
    assert (row.state, row.task_index, row.batch_id, row.task) == ("error", 4, "b", "y")
    assert row.metadata == {"m": 1, "ray": {"attempt": 2, "lost": True}}


# -- keys ----------------------------------------------------------------------------------------------------


def test_secret_variables_and_the_scrubbed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.executors._keys import scrubbed_environ, secret_env_names

    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    monkeypatch.setenv("HF_TOKEN", "t")
    monkeypatch.setenv("LLLM_PLAIN_SETTING", "x")
    names = secret_env_names()
    assert {"OPENAI_API_KEY", "HF_TOKEN"} <= set(names) and "LLLM_PLAIN_SETTING" not in names
    with scrubbed_environ() as scrubbed:
        assert "OPENAI_API_KEY" in scrubbed and "OPENAI_API_KEY" not in os.environ
        assert os.environ["LLLM_PLAIN_SETTING"] == "x"
    assert os.environ["OPENAI_API_KEY"] == "sk-1"


def test_the_handoff_file_is_private_and_read_once() -> None:
    from lllm.executors._keys import read_handoff, write_handoff

    path = write_handoff(b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_handoff(path) == b"secret"
    assert not path.exists() and not path.parent.exists()


def test_the_config_workers_get_has_no_invoker_settings() -> None:
    from lllm.executors._worker import scrub_invokers

    config = {"invoker": {"invoker": "litellm", "api_key": "sk"}, "invoker_config": {"api_key": "sk"},
              "global": {"invoker_config": {"api_key": "sk"}},
              "agent_configs": [{"name": "a", "invoker": "litellm", "invoker_config": {"api_key": "sk"}}]}
    scrubbed = scrub_invokers(config)
    assert "sk" not in json.dumps(scrubbed)
    assert scrubbed["invoker"] == {"invoker": "litellm"} and scrubbed["agent_configs"][0]["invoker"] == "litellm"
    assert config["invoker_config"] == {"api_key": "sk"}  # the tactic's own config is left as it was


# -- packages as shipped copies -----------------------------------------------------------------------------


def _package(root: Path, name: str, deps: list[str] = ()) -> Path:  # type: ignore[assignment]
    (root / "tactics").mkdir(parents=True)
    (root / "lllm.toml").write_text(f'[package]\nname = "{name}"\n[dependencies]\npackages = {json.dumps(deps)}\n')
    (root / "tactics" / "t.py").write_text(
        "from lllm import Tactic\nfrom pydantic import BaseModel\n\n"
        f"class Out(BaseModel):\n    v: int\n\nclass T{name}(Tactic):\n    name = 't_{name}'\n"
        "    agent_group = []\n")
    return root


def test_a_shipped_copy_loads_with_the_originals_module_names(tmp_path: Path) -> None:
    original = _package(tmp_path / "orig" / "main", "shipmain", ["../shared"])
    _package(tmp_path / "orig" / "shared", "shipshared")
    source = Runtime("ship-src")
    source.load_package(original)
    out_cls = [obj for kind, _, obj in next(iter(source.packages.values())).registered if kind == "tactic"][0]
    module = out_cls.__module__
    Out = getattr(__import__(module, fromlist=["Out"]), "Out")
    data = pickle.dumps(Out(v=1))  # a package class pickles by reference (its parent modules exist)

    # the copy lives elsewhere (as on a worker), under other folder names
    shutil.copytree(tmp_path / "orig" / "main", tmp_path / "w" / "p0")
    shutil.copytree(tmp_path / "orig" / "shared", tmp_path / "w" / "p1")
    copy = Runtime("ship-copy")
    origins = {(tmp_path / "w" / "p0" / "lllm.toml").resolve(): (tmp_path / "orig" / "main" / "lllm.toml").resolve(),
               (tmp_path / "w" / "p1" / "lllm.toml").resolve(): (tmp_path / "orig" / "shared" / "lllm.toml").resolve()}
    info = copy.load_package(tmp_path / "w" / "p0", origins=origins)
    assert info.root == (tmp_path / "w" / "p0").resolve() and "t_shipshared" in copy.tactics
    assert copy.tactics["t_shipmain"].__module__ == module
    assert pickle.loads(data) == Out(v=1)
    # a dependency that was not shipped is named
    lonely = Runtime("ship-lonely")
    with pytest.raises(ConfigError, match="was not shipped with it"):
        lonely.load_package(tmp_path / "w" / "p0", origins={k: v for k, v in origins.items() if "p0" in str(k)})


# -- the address probe --------------------------------------------------------------------------------------


def test_the_address_probe_tells_nothing_from_something_else() -> None:
    from lllm.executors.ray_executor import _probe

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ClusterUnavailable, match=f"no Ray cluster answers at '127.0.0.1:{port}'"):
        _probe(f"127.0.0.1:{port}", 2.0)
    with pytest.raises(ClusterUnavailable, match="is not host:port"):
        _probe("localhost", 2.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_http() -> None:
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer_http, daemon=True).start()
    try:
        with pytest.raises(ClusterUnavailable, match="answers, but not like a Ray head"):
            _probe(f"127.0.0.1:{server.getsockname()[1]}", 5.0)
    finally:
        server.close()


def test_ray_client_addresses_and_bad_options_are_refused_at_once() -> None:
    from lllm.executors import RayExecutor

    with pytest.raises(UsageError, match="Ray Client address"):
        RayExecutor(address="ray://10.0.0.5:10001")
    with pytest.raises(UsageError, match="max_retries"):
        RayExecutor(max_retries=-1)
    with pytest.raises(UsageError, match="retry_exceptions"):
        RayExecutor(retry_exceptions=["ValueError"])  # type: ignore[list-item]
