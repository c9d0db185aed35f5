"""`RayExecutor`: a batch's tasks run as Ray tasks on a cluster, with everything else as with threads.

```python
tactic.bcall(tasks, executor="ray")                         # $LLLM_RAY_ADDRESS, $RAY_ADDRESS, or a local cluster
tactic.bcall(tasks, executor=RayExecutor(address="10.0.0.5:6379", max_retries=1, num_cpus=2))
```

What runs where (docs/scaling.md says it for users):
- the driver (this process) keeps the batch's rules (`lllm.core._batch`: order, fail_fast, max_cost, resume,
  tags), the log store and the keys; each of its `max_workers` threads has one task in flight on the cluster.
- a worker (any node) loads the tactic's packages (shipped as the batch's Ray `working_dir`), rebuilds the
  tactic from its config and runs `Tactic._execute` on the task; its agents' sandboxes start on that node's
  Docker engine, and their records stream back to the driver.
- the hub (one actor per batch, pinned to the driver's node) answers the workers' model requests and CALL_APIs
  with the driver's invokers and proxies, and the keys of the driver's environment, handed to it through a
  private file; nothing of that goes through Ray. It also holds the records workers stream until the driver
  writes them.

Retries follow Ray's options (`max_retries`: a worker or node lost; `retry_exceptions`: the task raised), but
lllm runs each attempt itself, so that every attempt is a session of its own in the log: an attempt whose worker
was lost ends as an error that says so, with every record it sent (`metadata["ray"]["lost"]`); its cost counts
towards the batch's `spent` and `max_cost`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from lllm.errors import (
    ClusterUnavailable,
    ExecutorError,
    PackageShipError,
    UsageError,
    WorkerLost,
)

__all__ = ["RayExecutor"]

_log = logging.getLogger("lllm.executors.ray")

_LOST = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
         "OutOfMemoryError", "ObjectReconstructionFailedError", "ObjectFetchTimedOutError")
"""Ray's errors for a task whose worker or node died: the attempt is lost, and retried per `max_retries`."""


def _install_hint() -> str:
    return 'Ray is not installed here: pip install "lllm[ray]" (on the driver and on every node of the cluster).'


def _probe(address: str, timeout: float) -> None:
    """Fail fast, before `ray.init` (which retries for minutes), when nothing at `address` answers like a Ray
    head (its control store speaks gRPC: HTTP/2, which answers a connection preface with a SETTINGS frame)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ClusterUnavailable(f"Ray address {address!r} is not host:port (e.g. '10.0.0.5:6379', the head's "
                                 "address that `ray start --head` prints)", address=address)
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = conn.recv(9)
    except OSError as exc:
        raise ClusterUnavailable(
            f"no Ray cluster answers at {address!r} ({exc.strerror or type(exc).__name__}). Start one there with "
            "`ray start --head --port=PORT`, or check the address; without an address lllm starts a local "
            "cluster.", address=address) from None
    if len(head) < 9 or head[3] != 0x04:
        raise ClusterUnavailable(f"{address!r} answers, but not like a Ray head (no gRPC); give the address "
                                 "`ray start --head` printed (host:port of its control store)", address=address)


def _same_address(a: str, b: str) -> bool:
    """Whether two host:port addresses name the same place (hosts compared by their IP addresses)."""
    (host_a, _, port_a), (host_b, _, port_b) = a.rpartition(":"), b.rpartition(":")
    if port_a != port_b:
        return False
    try:
        return socket.gethostbyname(host_a.strip("[]")) == socket.gethostbyname(host_b.strip("[]"))
    except OSError:
        return host_a == host_b


class RayExecutor:
    """Runs a batch's tasks on a Ray cluster (see the module docstring).

    Args:
        address: the cluster's head (`host:port`, or "auto"); default `$LLLM_RAY_ADDRESS`, then `$RAY_ADDRESS`,
            else (or with "local") a local cluster started here (on 127.0.0.1, without the secret-looking
            variables of this environment), stopped by `close()` or at exit. A process joins one cluster: once
            connected, another address is a UsageError.
        max_retries: how often a task is run again when its worker or node is lost (Ray's option of that
            name; lllm applies it, one logged attempt each). Each attempt may spend again.
        retry_exceptions: also run a task again when it raised: True, or a list of exception classes (Ray's
            option of that name), within `max_retries`.
        num_cpus, resources: what each task reserves on its node (Ray's options).
        excludes: more gitignore-style patterns of files of the packages not to ship (besides .gitignore,
            .rayignore, `.git`, `.venv`, `__pycache__`).
        max_package_mb: refuse to ship packages larger than this (default: Ray's limit, 512 MiB).
        connect_timeout: seconds to wait for the head to answer, and for the hub to start (x30).
        local_cpus: CPUs of a local cluster (default: this machine's).
        log_to_driver: show workers' output here (Ray's option; `lllm run --ray` turns it off: its stdout is
            the results).
        collect_interval: seconds between two collections of streamed records into the log store.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, max_retries: int = 3,
                 retry_exceptions: bool | list[type[BaseException]] = False, num_cpus: float = 1.0,
                 resources: dict[str, float] | None = None, excludes: list[str] | tuple[str, ...] = (),
                 max_package_mb: float | None = None, connect_timeout: float = 10.0, local_cpus: int | None = None,
                 log_to_driver: bool = True, collect_interval: float = 0.5) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise UsageError(f"max_retries must be an int >= 0, got {max_retries!r}", value=max_retries)
        if not (isinstance(retry_exceptions, bool) or (isinstance(retry_exceptions, (list, tuple)) and all(
                isinstance(c, type) and issubclass(c, BaseException) for c in retry_exceptions))):
            raise UsageError(f"retry_exceptions must be True, False or a list of exception classes, got "
                             f"{retry_exceptions!r}", value=retry_exceptions)
        if address is not None and address.startswith("ray://"):
            raise UsageError(f"address {address!r} is a Ray Client address; lllm needs the driver on a node of the "
                             "cluster (the hub, with the keys, runs on the driver's node): run it on a node and "
                             "give the head's host:port", value=address)
        self.address = address
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.excludes = list(excludes)
        self.max_package_bytes = None if max_package_mb is None else int(max_package_mb * 2**20)
        self.connect_timeout = connect_timeout
        self.local_cpus = local_cpus
        self.log_to_driver = log_to_driver
        self.collect_interval = collect_interval
        self.owns_cluster = False
        """True when this executor started the local cluster it runs on (`close()` stops it)."""
        self._batches: dict[int, _RayBatch] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, max_retries={self.max_retries!r})"

    # -- connection ----------------------------------------------------------------------------------------

    def connect(self) -> Any:
        """Connect to the cluster (once per process); returns the `ray` module.

        Raises:
            ClusterUnavailable: Ray is not installed, nothing answers at the address, or no cluster started.
        """
        try:
            import ray
        except ImportError:
            raise ClusterUnavailable(_install_hint()) from None
        with self._lock:
            if ray.is_initialized():
                self._check_same_cluster(ray)
                return ray
            address = self.address or os.environ.get("LLLM_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": self.log_to_driver}
            if address and address != "local":
                if address != "auto":
                    _probe(address, self.connect_timeout)
                try:
                    ray.init(address=address, **options)
                except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError
                    raise ClusterUnavailable(f"could not join the Ray cluster at {address!r}: {type(exc).__name__}: "
                                             f"{exc}", address=address) from None
                return ray
            from lllm.executors._keys import scrubbed_environ

            try:
                with scrubbed_environ():  # the local cluster's processes never see the keys
                    # "local": a new cluster, even when another one on this machine left its address behind
                    ray.init(address="local", num_cpus=self.local_cpus, include_dashboard=False,
                             _node_ip_address="127.0.0.1", **options)
            except Exception as exc:  # noqa: BLE001 - see above
                raise ClusterUnavailable(f"could not start a local Ray cluster: {type(exc).__name__}: {exc}") from None
            self.owns_cluster = True
            return ray

    def _check_same_cluster(self, ray: Any) -> None:
        """A process joins one cluster: an explicit address must be the one this process is connected to."""
        if not self.address or self.address in ("auto", "local"):
            return
        current = ray.get_runtime_context().gcs_address or ""
        if _same_address(current, self.address):
            return
        raise UsageError(f"this process is already connected to the Ray cluster at {current!r}, not {self.address!r}: "
                         "a process joins one cluster. Use RayExecutor() for that one, or run the batch from another "
                         "process.", value=self.address)

    def close(self) -> None:
        """Stop the local cluster this executor started (a cluster it joined is left running)."""
        if self.owns_cluster:
            import ray

            ray.shutdown()
            self.owns_cluster = False

    # -- the executor seam (lllm.core.executor) ----------------------------------------------------------------

    def start(self, run: Any) -> Any:
        ray = self.connect()
        batch = _RayBatch(self, ray, run)
        batch.open()
        with self._lock:
            self._batches[id(run)] = batch
        return batch.execute

    def finish(self, run: Any) -> None:
        with self._lock:
            batch = self._batches.pop(id(run), None)
        if batch is not None:
            batch.close()


class _RayBatch:
    """One batch on the cluster: its hub, shipment, Ray task and the attempts in flight."""

    def __init__(self, executor: RayExecutor, ray: Any, run: Any) -> None:
        self.executor = executor
        self.ray = ray
        self.run = run
        self.key = f"{run.batch_id}-{os.getpid()}-{id(run) & 0xFFFF:04x}"
        self.hub: Any = None
        self.hub_info: dict[str, Any] = {}
        self.shipment: Any = None
        self.handoff: Any = None
        self.attempts: dict[str, Any] = {}
        self.losses: list[str] = []
        """Why attempts were lost (a sweep of orphaned sandboxes follows the batch when there are some)."""
        self.replay_lock = threading.Lock()
        self._stop = threading.Event()
        self._collector: threading.Thread | None = None

    # -- before any task -----------------------------------------------------------------------------------

    def open(self) -> None:
        from ray import cloudpickle

        import lllm.invokers.base as invokers_base
        from lllm.executors._hub import Hub
        from lllm.executors._keys import write_handoff
        from lllm.executors._shipping import check_shipment, plan_shipment, upload_shipment
        from lllm.executors._worker import lllm_version, run_task, tactic_spec

        ray, ex, tactic = self.ray, self.executor, self.run.tactic
        try:
            spec, invokers = tactic_spec(tactic)
            try:
                spec_bytes = cloudpickle.dumps(spec)
            except Exception as exc:  # noqa: BLE001 - cloudpickle raises many kinds
                raise UsageError(f"tactic {tactic.name!r} cannot be sent to Ray workers: its class or config does not "
                                 f"pickle ({type(exc).__name__}: {exc})") from None
            self.shipment = plan_shipment(tactic._runtime)
            if self.shipment is None and type(tactic).__module__.startswith("_lllm_pkg."):
                raise UsageError(f"tactic {tactic.name!r} comes from a package its runtime no longer has; load it with "
                                 "load_package() into the tactic's runtime")
            runtime_env: dict[str, Any] = {"env_vars": {"LLLM_TRACE_SINKS": "", "OTEL_SDK_DISABLED": "true"}}
            if self.shipment is not None:
                check_shipment(self.shipment, excludes=ex.excludes, limit=ex.max_package_bytes)
                runtime_env["working_dir"] = upload_shipment(self.shipment, excludes=ex.excludes)
            try:
                handoff = cloudpickle.dumps({"env": dict(os.environ), "invokers": invokers,
                                             "allow_model_requests": invokers_base.ALLOW_MODEL_REQUESTS})
            except Exception as exc:  # noqa: BLE001
                raise UsageError(f"the invokers of tactic {tactic.name!r} cannot be handed to the batch's hub: "
                                 f"{type(exc).__name__}: {exc}") from None
            self.handoff = write_handoff(handoff)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            driver_node = ray.get_runtime_context().get_node_id()
            manifest = None if self.shipment is None else self.shipment.manifest
            self.hub = ray.remote(Hub).options(
                num_cpus=0, max_concurrency=256, max_restarts=0, runtime_env=runtime_env,
                scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False),
            ).remote(str(self.handoff), manifest, driver_node)
            self.hub_info = self._ready(spec_bytes)
            self.ctx = ray.put({"batch_key": self.key, "hub": self.hub, "manifest": manifest, "spec": spec_bytes,
                                "lllm_version": lllm_version()})
            self.task_fn = ray.remote(run_task).options(
                num_cpus=ex.num_cpus, resources=ex.resources or None, runtime_env=runtime_env, max_retries=0,
                retry_exceptions=False)
        except BaseException:
            self.close()
            raise
        self._collector = threading.Thread(target=self._collect_loop, name=f"lllm-ray-collect-{self.key[:8]}",
                                           daemon=True)
        self._collector.start()

    def _ready(self, spec_bytes: bytes) -> dict[str, Any]:
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, RuntimeEnvSetupError

        timeout = max(60.0, self.executor.connect_timeout * 30)
        try:
            return self.ray.get(self.hub.ready.remote(spec_bytes), timeout=timeout)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ImportError):
                module = type(self.run.tactic).__module__
                raise UsageError(
                    f"the batch's hub (a fresh Python process, as the workers are) cannot rebuild tactic "
                    f"{self.run.tactic.name!r}: {type(cause).__name__}: {cause}. Ray workers import the tactic's "
                    f"module ({module!r}) by name: put the tactic in an lllm.toml package (shipped with the "
                    "batch), install its module on every node, or call "
                    f"ray.cloudpickle.register_pickle_by_value(sys.modules[{module!r}]) before the batch.") from None
            raise (cause if isinstance(cause, Exception) else exc) from None
        except RuntimeEnvSetupError as exc:
            raise PackageShipError(f"the batch's packages could not be set up on the driver's node: {exc}") from None
        except GetTimeoutError:
            raise ClusterUnavailable(f"the batch's hub did not start on the driver's node within {timeout:g}s (is "
                                     "the cluster busy, or its runtime environment slow to set up?)") from None
        except RayActorError as exc:
            raise ClusterUnavailable(f"the batch's hub could not start on the driver's node: {exc}") from None

    # -- one task ----------------------------------------------------------------------------------------------

    def execute(self, task: Any, *, call_kwargs: dict[str, Any], tags: dict[str, Any] | None = None,
                metadata: dict[str, Any] | None = None, batch_id: str | None = None, task_index: int | None = None,
                task_hash: str | None = None, session_out: list[Any] | None = None) -> Any:
        """Run one task on the cluster (see `Tactic._execute`; `session_out` gets every attempt's session)."""
        from ray import cloudpickle

        from lllm.core.tactic import current_session
        from lllm.executors._replay import Attempt
        from lllm.logging.sinks import active_trace_sinks

        ex, tactic = self.executor, self.run.tactic
        payload = cloudpickle.dumps((task, call_kwargs, tags, metadata, batch_id, task_index, task_hash))
        parent = current_session()
        store = tactic.log_store if tactic.log_store is not None else (parent.store if parent else None)
        merged_tags = {**(parent.tags if parent else {}), **tactic.tags, **(tags or {})}
        fields = {"tactic": tactic.name, "tags": merged_tags, "metadata": metadata, "task_hash": task_hash,
                  "batch_id": batch_id, "task_index": task_index}
        sinks = active_trace_sinks()
        number = 0
        while True:
            number += 1
            key = f"{self.key}/{task_index}/{number}"
            attempt = Attempt(key, store=store, parent=parent, sinks=sinks, task=task, number=number, fields=fields)
            self.attempts[key] = attempt
            try:
                reply = self._run(attempt, payload)
            finally:
                self.attempts.pop(key, None)
            if reply is None:  # the worker was lost
                if session_out is not None and attempt.top is not None:
                    session_out.append(attempt.top)
                if number > ex.max_retries:
                    raise WorkerLost(
                        f"task {task_index} of batch {batch_id!r}: its worker was lost {number} time(s) "
                        f"({self.losses[-1]}); retries used up (max_retries={ex.max_retries})",
                        attempts=number, node=None)
                continue
            if session_out is not None and attempt.top is not None:
                session_out.append(attempt.top)
            if reply["ok"]:
                return reply["result"]
            error = reply["error"]
            if number <= ex.max_retries and self._retries(error):
                continue
            if isinstance(error, BaseException):
                error.add_note(f"raised on Ray node {reply['node'][:12]} (worker pid {reply['worker_pid']}, attempt "
                               f"{number}); its traceback is in the session's log")
            raise error

    def _retries(self, error: Any) -> bool:
        rule = self.executor.retry_exceptions
        if rule is True:
            return True
        return bool(rule) and isinstance(error, tuple(rule))  # type: ignore[arg-type]

    def _run(self, attempt: Any, payload: bytes) -> dict[str, Any] | None:
        """One attempt: its reply with the records replayed, or None when its worker was lost."""
        from ray import cloudpickle
        import ray.exceptions as rex

        ray = self.ray
        ref = self.task_fn.remote(self.ctx, attempt.key, attempt.number, payload)
        try:
            raw = ray.get(ref)
        except rex.RayTaskError as exc:  # the task's machinery failed on the worker (not the tactic's call)
            cause = getattr(exc, "cause", None)
            self._lose(attempt, f"the task failed on the worker before or after the call: {cause!r}")
            raise (cause if isinstance(cause, Exception) else ExecutorError(str(exc))) from None
        except rex.RuntimeEnvSetupError as exc:
            self._lose(attempt, "the packages could not be set up on its node")
            raise PackageShipError(f"the batch's packages could not be set up on a worker node: {exc}") from None
        except rex.TaskUnschedulableError as exc:
            self._lose(attempt, "no node can run it")
            raise ClusterUnavailable(f"no node of the cluster can run the batch's tasks (num_cpus="
                                     f"{self.executor.num_cpus}, resources={self.executor.resources}): {exc}") from None
        except rex.RayError as exc:
            if type(exc).__name__ not in _LOST and not any(c.__name__ in _LOST for c in type(exc).__mro__):
                self._lose(attempt, f"{type(exc).__name__}")
                raise ExecutorError(f"Ray failed to run a task: {type(exc).__name__}: {exc}") from None
            reason = f"{type(exc).__name__} on attempt {attempt.number}: {str(exc).splitlines()[0][:300]}"
            self.losses.append(reason)
            self._lose(attempt, reason)
            return None
        reply: dict[str, Any] = cloudpickle.loads(raw)
        with self.replay_lock:  # what the collector has not replayed yet, then the rest: each op once, in order
            attempt.replay_messages(list(enumerate(reply["streamed"])))
            attempt.replay(reply["ops"])
            attempt.closed = True
        if reply["streamed"]:
            self.hub.close_attempt.remote(attempt.key)  # the hub may drop its copies (no need to wait)
        return reply

    def _lose(self, attempt: Any, reason: str) -> None:
        """Write off an attempt: replay what it streamed, end its sessions as lost, close its proxy sessions."""
        with self.replay_lock:
            try:
                streamed = self.ray.get(self.hub.close_attempt.remote(attempt.key))
            except Exception as exc:  # noqa: BLE001 - the hub itself may be gone: keep what we have
                _log.warning("attempt %s: its streamed records could not be taken: %s", attempt.key, exc)
                streamed = []
            attempt.replay_messages(streamed, gaps=True)
            attempt.lose(reason)
            attempt.closed = True

    # -- records streamed meanwhile --------------------------------------------------------------------------

    def _collect_loop(self) -> None:
        while not self._stop.wait(self.executor.collect_interval):
            try:
                self._collect()
            except Exception as exc:  # noqa: BLE001 - the hub is gone; attempts report it themselves
                _log.debug("record collection stopped: %s", exc)
                return

    def _collect(self) -> None:
        with self.replay_lock:
            ready = self.ray.get(self.hub.take_ready.remote())
            for key, messages in ready.items():
                attempt = self.attempts.get(key)
                if attempt is not None:
                    attempt.replay_messages(messages)

    # -- after the last task ---------------------------------------------------------------------------------

    def close(self) -> None:
        from lllm.executors._keys import remove_handoff

        self._stop.set()
        if self._collector is not None:
            self._collector.join()
        if self.hub is not None:
            try:
                self.ray.kill(self.hub)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.hub = None
        if self.handoff is not None:
            remove_handoff(self.handoff)
        if self.shipment is not None:
            self.shipment.discard()
        if self.losses:
            self.sweep()

    def sweep(self) -> dict[str, Any]:
        """Remove the sandboxes whose owner (a lost worker) is gone, on every live node; returns what each node
        removed (or why it could not)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from lllm.executors._worker import sweep_node

        ray = self.ray
        sweep = ray.remote(sweep_node)
        refs = {node["NodeID"]: sweep.options(
            num_cpus=0, max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
            for node in ray.nodes() if node.get("Alive")}
        out: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        for node, ref in refs.items():
            try:
                out[node] = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - a node without Docker, or one that died meanwhile
                out[node] = f"{type(exc).__name__}: {exc}"
        _log.info("sweep after lost workers: %s", out)
        return out
