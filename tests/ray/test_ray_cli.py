"""`lllm run --ray ADDRESS`: the batch runs on the cluster, stdout has only the results, the log is here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).parent / "pkg"


def test_lllm_run_ray_runs_the_tasks_on_the_cluster(ray_cluster: Any, tmp_path: Path) -> None:
    from lllm.logging import sqlite_store

    db = tmp_path / "runs.db"
    out = subprocess.run([sys.executable, "-m", "lllm.cli", "run", "echo", "--package", str(PACKAGE), "--ray",
                          ray_cluster.address, "--task", "a", "--task", "b", "--task", "c", "--db", str(db),
                          "--tag", "via=cli", "--ray-retries", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["0\techo a", "1\techo b", "2\techo c"]
    assert "batch " in out.stderr and "on Ray: 3 ok, 0 failed" in out.stderr
    store = sqlite_store(db, readonly=True)
    rows = store.query("SELECT task, state, tags, metadata FROM sessions ORDER BY task_index")
    assert [(r["task"], r["state"], json.loads(r["tags"])) for r in rows] == [
        (t, "ok", {"via": "cli"}) for t in ("a", "b", "c")]
    assert all(json.loads(r["metadata"])["ray"]["attempt"] == 1 for r in rows)
    one = subprocess.run([sys.executable, "-m", "lllm.cli", "run", "echo", "--package", str(PACKAGE), "--ray",
                          ray_cluster.address, "--task", "solo"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0 and one.stdout == "echo solo\n", one.stderr


LOCAL = """
import json, os
from pathlib import Path
os.environ["LLLM_RAYTEST_API_KEY"] = {key!r}  # in this driver's environment from the start
os.environ.pop("RAY_ADDRESS", None); os.environ.pop("LLLM_RAY_ADDRESS", None)
from lllm.core.executor import resolve_executor
from lllm.core.runtime import build_tactic, get_runtime
from lllm.invokers import override
from lllm.invokers.scripted import ScriptedInvoker

def descendants():
    kids = {{}}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), [os.getpid()]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.add(kid); todo.append(kid)
    return out

def holding(pids):
    found = []
    for pid in pids:
        try:
            if {key!r}.encode() in Path(f"/proc/{{pid}}/environ").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found

runtime = get_runtime("raytest")
runtime.load_package({package!r})
answer = lambda messages: "hub has the key: %s" % ("LLLM_RAYTEST_API_KEY" in os.environ)
with override(ScriptedInvoker(responder=answer)):
    tactic = build_tactic(runtime.get_config("plain"), runtime=runtime)
results = tactic.bcall(["a", "b"], executor="ray")
cluster = descendants()
print("RESULTS", json.dumps([[r.answer, r.worker_has_key] for r in results]))
print("CLUSTER", len(cluster) > 3, "HOLDING", holding(cluster))
resolve_executor("ray").close()
import time; time.sleep(1)
print("LEFT", sorted(p for p in descendants() if Path(f"/proc/{{p}}/cmdline").exists()))
"""


def test_a_local_cluster_starts_without_the_keys_and_stops_after(require_ray: None) -> None:
    """`executor="ray"` with no address and no cluster: lllm starts one here, whose processes never see the
    driver's keys (the hub gets them by hand), and `close()` stops it."""
    code = LOCAL.format(key="sk-local-" + "7" * 24, package=str(PACKAGE))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert json.loads(lines["RESULTS"]) == [["hub has the key: True", False], ["hub has the key: True", False]]
    assert lines["CLUSTER"] == "True HOLDING []"  # Ray's processes started without the key
    assert lines["LEFT"] == "[]"
