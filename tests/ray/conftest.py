"""A real multi-node Ray cluster on this machine for the Ray tests: a head (no CPU: tasks never run on it, the
driver's node) and two worker nodes of one CPU each, every listener on 127.0.0.1, one cluster for the whole run.

Ray picks the machine's outside address for its nodes and rewrites 127.0.0.1 in an address it connects to;
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it use the loopback address throughout (set before Ray is imported,
and inherited by every process of the cluster). Tests that need Ray take `ray_cluster` (or `require_ray`): with
LLLM_REQUIRE_RAY=1 (the test command) or CI=true a missing Ray fails them, never skips them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only (see the module docstring)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PACKAGE = Path(__file__).parent / "pkg"
KEY_ENV = "LLLM_RAYTEST_API_KEY"


def _required() -> bool:
    return os.environ.get("LLLM_REQUIRE_RAY") == "1" or os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def require_ray() -> None:
    """Tests that need Ray take this; under LLLM_REQUIRE_RAY=1 or CI=true a missing Ray fails, never skips."""
    try:
        import ray  # noqa: F401
    except ImportError:
        message = 'Ray is not installed: pip install -e ".[dev]" (scripts/setup.sh does it)'
        if _required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)  # a developer run without Ray; never under CI=true or LLLM_REQUIRE_RAY=1


class TestCluster:
    """The session's cluster: `address`, the Ray `Cluster` and its worker nodes."""

    __test__ = False

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        # node deaths are noticed within seconds (the defaults take about 15 s)
        system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                  "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "_system_config": system})
        self.workers: list[Any] = []
        """The live worker nodes (`kill_worker` takes one out, `add_worker` puts one in)."""
        for _ in range(2):
            self.add_worker()
        self.address = self.cluster.address

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        return node

    def kill_worker(self, node: Any) -> list[int]:
        """Kill a worker node the way a crash would: its raylet and every process under it (its workers
        included), with SIGKILL; returns the pids killed."""
        import signal

        roots = [p.process.pid for procs in node.all_processes.values() for p in procs if p.process is not None]
        pids = set(roots)
        for pid in roots:
            pids |= _descendants(pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.workers.remove(node)
        self.cluster.worker_nodes.discard(node)  # the cluster no longer waits for it
        return sorted(pids)

    def close(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.fixture(scope="session")
def ray_cluster(require_ray: None) -> Iterator[TestCluster]:
    """A head and two one-CPU worker nodes on 127.0.0.1, this process connected as the driver (on the head)."""
    import ray

    assert KEY_ENV not in os.environ, "the key must not be in the environment the cluster's nodes start with"
    started = time.monotonic()
    cluster = TestCluster()
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    print(f"Ray test cluster up in {time.monotonic() - started:.1f}s at {cluster.address}", file=sys.stderr)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def ray_runtime(require_ray: None) -> Any:
    """The test package loaded into a runtime of its own (the default runtime stays as other tests expect)."""
    from lllm.core.runtime import get_runtime

    runtime = get_runtime("raytest")
    runtime.load_package(PACKAGE)
    return runtime
