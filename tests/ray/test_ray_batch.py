"""Batches on a real multi-node Ray cluster (tests/ray/conftest.py): tasks run `run_python` with CALL_API in Docker
sandboxes on the worker nodes, the keys stay on the driver's node, every record reaches the driver's log once, and
no sandbox is left behind, also when a worker node is killed mid-batch."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

KEY_ENV = "LLLM_RAYTEST_API_KEY"  # read by the test package's proxy (pkg/proxies/keyed.py)

pytestmark = pytest.mark.docker

CODE = ("import os\nr = CALL_API('raytest/whoami', {})\nprint('HUB', r['pid'], r['key_sha'])\n"
        "print('CELL', os.getpid())")


def scripts_for(tasks: list[str], code: str = CODE) -> dict[str, list[Any]]:
    """Each task: one run_python call, then the answer `done <task>`."""
    return {t: [{"tool_calls": [{"name": "run_python", "arguments": {"code": code}}]}, f"done {t}"] for t in tasks}


def build(runtime: Any, config: str, invoker: Any, store: Any) -> Any:
    from lllm.core.runtime import build_tactic
    from lllm.invokers import override

    with override(invoker):
        return build_tactic(runtime.get_config(config), log_store=store, runtime=runtime)


def sandboxes_left() -> list[str]:
    """This test run's sandbox containers, in any state."""
    from lllm.sandbox._docker import LABEL_TEST_RUN, client

    found = client().containers.list(all=True, filters={"label": f"{LABEL_TEST_RUN}={os.environ['LLLM_TEST_RUN']}"})
    return [c.name for c in found]


def processes_holding(value: bytes) -> set[int]:
    """The pids whose environment contains `value`."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if value in (entry / "environ").read_bytes():
                    out.add(int(entry.name))
            except OSError:
                continue
    return out


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """The proxy's key, in the driver's environment only (the cluster's nodes started without it)."""
    value = "sk-raytest-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, value)
    return value


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The batches a RayExecutor opened and the task payloads it sent."""
    from lllm.executors import ray_executor as rx

    seen: dict[str, list[Any]] = {"batches": [], "payloads": []}
    open_batch, run_attempt = rx._RayBatch.open, rx._RayBatch._run

    def spied_open(self: Any) -> None:
        seen["batches"].append(self)
        open_batch(self)

    def spied_run(self: Any, attempt: Any, payload: bytes) -> Any:
        seen["payloads"].append(payload)
        return run_attempt(self, attempt, payload)

    monkeypatch.setattr(rx._RayBatch, "open", spied_open)
    monkeypatch.setattr(rx._RayBatch, "_run", spied_run)
    return seen


def test_a_batch_runs_on_two_nodes_with_its_keys_on_the_driver(ray_cluster: Any, ray_runtime: Any,
                                                                sandbox_image: str, canary: str,
                                                                spy: dict[str, list[Any]]) -> None:
    import ray

    from lllm.executors import RayExecutor
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.logging import sqlite_store

    tasks = [f"task {i}" for i in range(6)]
    store = sqlite_store(":memory:")
    tactic = build(ray_runtime, "probe", ScriptedInvoker(scripts=scripts_for(tasks)), store)
    results = tactic.bcall(tasks, executor=RayExecutor(), max_workers=4, tags={"suite": "ray"})

    # results in input order, of the package's own class (its modules have the driver's names on the workers)
    assert [(r.task, r.answer) for r in results] == [(t, f"done {t}") for t in tasks]
    assert type(results[0]).__module__.startswith("_lllm_pkg.raytest_")
    driver_node = ray.get_runtime_context().get_node_id()
    hub = spy["batches"][0].hub_info
    assert hub["node"] == driver_node  # the proxies (and the keys) ran on the driver's node

    sessions = store.query("SELECT id, state, tags, metadata, model_calls FROM sessions WHERE batch_id = ?",
                           [results.batch_id])
    assert len(sessions) == len(tasks) and {s["state"] for s in sessions} == {"ok"}
    assert all(json.loads(s["tags"]) == {"suite": "ray"} for s in sessions)
    nodes = {json.loads(s["metadata"])["ray"]["node"] for s in sessions}
    assert len(nodes) >= 2 and driver_node not in nodes  # on both worker nodes, never on the head

    # the log is complete, each record once
    key_sha = hashlib.sha256(canary.encode()).hexdigest()[:12]
    for s in sessions:
        sid = s["id"]
        assert s["model_calls"] == 2
        assert store.query("SELECT count(*) AS n FROM model_calls WHERE session_id = ?", [sid])[0]["n"] == 2
        cells = store.query("SELECT status FROM cells WHERE session_id = ?", [sid])
        assert [c["status"] for c in cells] == ["ok"]
        calls = store.query("SELECT status, proxy, endpoint, answer FROM api_calls WHERE session_id = ?", [sid])
        assert [(c["status"], c["proxy"], c["endpoint"]) for c in calls] == [("ok", "raytest", "whoami")]
        assert json.loads(calls[0]["answer"]) == {"pid": hub["pid"], "key_sha": key_sha}
        tools = store.query("SELECT result FROM tool_calls WHERE session_id = ?", [sid])
        assert len(tools) == 1 and f"HUB {hub['pid']} {key_sha}" in tools[0]["result"]

    # the key: not in the workers' environment (as they run, nor as any process of the cluster was started),
    # and in no payload sent to the cluster; the hub had it (the proxy saw it, above)
    assert not any(r.worker_has_key for r in results)
    assert processes_holding(canary.encode()) == set()
    assert len(spy["payloads"]) == len(tasks)
    assert all(canary.encode() not in p for p in spy["payloads"])
    ctx = ray.get(spy["batches"][0].ctx)
    assert canary.encode() not in ctx["spec"] and canary not in json.dumps(ctx["manifest"])

    assert sandboxes_left() == []


def test_a_worker_node_killed_mid_batch(ray_cluster: Any, ray_runtime: Any, sandbox_image: str,
                                        canary: str) -> None:
    """The killed node's task runs again on the other node; the lost attempt's records stay in the log, marked
    as that attempt's; its orphaned sandbox is removed."""
    from lllm.executors import RayExecutor
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.logging import sqlite_store

    tasks = [f"slow {i}" for i in range(2)]
    code = "import time\nprint('HUB', CALL_API('raytest/whoami', {})['pid'])\ntime.sleep(5)\nprint('woke')"
    store = sqlite_store(":memory:")
    tactic = build(ray_runtime, "probe", ScriptedInvoker(scripts=scripts_for(tasks, code)), store)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["results"] = tactic.bcall(tasks, executor=RayExecutor(max_retries=2), max_workers=2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 180
        busy: dict[str, str] = {}
        while len(busy) < 2 and time.monotonic() < deadline and thread.is_alive():
            # a task whose CALL_API is in the log is in its sleeping cell: its records streamed to the driver
            for row in store.query("SELECT s.id, s.metadata FROM api_calls a JOIN sessions s ON a.session_id = s.id "
                                   "WHERE s.state = 'running'"):
                busy[json.loads(row["metadata"])["ray"]["node"]] = row["id"]
            time.sleep(0.2)
        assert len(busy) == 2, f"both worker nodes should be running a task by now: {busy}, {box}"
        victim = next(n for n in ray_cluster.workers if n.node_id in busy)
        killed_session = busy[victim.node_id]
        ray_cluster.kill_worker(victim)
        thread.join(timeout=300)
        assert not thread.is_alive()
    finally:
        ray_cluster.add_worker()  # the next tests get two worker nodes again
    assert "error" not in box, box.get("error")
    results = box["results"]
    assert [r.task for r in results] == tasks

    lost = store.query("SELECT id, state, error, metadata, model_calls FROM sessions WHERE id = ?", [killed_session])[0]
    assert lost["state"] == "error" and lost["error"].startswith("WorkerLost:")
    assert json.loads(lost["metadata"])["ray"]["lost"] is True
    # what the lost attempt did before it died is in the log, once: its first model call and its CALL_API
    assert store.query("SELECT count(*) AS n FROM model_calls WHERE session_id = ?", [killed_session])[0]["n"] == 1
    assert store.query("SELECT count(*) AS n FROM api_calls WHERE session_id = ?", [killed_session])[0]["n"] == 1
    ok = store.query("SELECT task_index, count(*) AS n FROM sessions WHERE batch_id = ? AND state = 'ok' "
                     "GROUP BY task_index", [results.batch_id])
    assert {r["task_index"]: r["n"] for r in ok} == {i: 1 for i in range(len(tasks))}
    assert sandboxes_left() == []  # the dead worker's sandbox was swept
