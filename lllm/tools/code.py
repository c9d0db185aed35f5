"""The `proxy:` agent config block: run_python and query_api_doc tools over a per-agent sandbox and the gateway.

```yaml
agent_configs:
  - name: research_analyst
    proxy:
      activate_proxies: [fmp, fred, exa]
      exec_env: interpreter          # interpreter | jupyter | null
      max_output_chars: 8000
      truncation_indicator: "... (output truncated)"
      timeout: 90.0                  # seconds per cell
      source: live                   # live | offline | auto (default: $LLLM_PROXY_SOURCE or live)
      sandbox: {backend: docker, image: null, limits: {memory: 1g}, pool_size: 0,
                scope: agent,                # agent | tactic | session (with tactic(..., sandbox_session=ID))
                packages: null,              # null | index | [scipy, "rich>=13"]
                idle_timeout: null, max_lifetime: null}
      gateway: {rate: 1000, call_timeout: 30}
      budgets: {fmp: {calls: 500, cost: 2.0}}   # per session; live keyed proxies default to 200 calls
```

`attach(agent, block, ctx)` (the `proxy` entry point of `lllm.agent_extensions`) validates the block, builds the
agent's `ProxyManager` at once (an unknown proxy is a ConfigError at build time), appends the compact proxy
directory to the system prompt and adds the tools:
- `interpreter`: `run_python(code)` and `query_api_doc(proxy_name)`;
- `jupyter`: the agent writes `<python_cell>...</python_cell>` in its answers; an answer hook
  (`Agent.add_answer_hook`) runs each cell and sends the outputs back as the next user message, until an answer
  has no cell (at most `max_interrupt_steps` rounds);
- null: `query_api_doc` only (docs, no code execution).

One sandbox per agent per tactic call (`scope: agent`), created on the first cell, with a gateway session for
its allowlist; both are removed by the cleanup `attach` registers (`agent.shutdown()` runs it when the call
ends, also when it fails). Variables persist across that agent's cells. `scope: tactic` shares one sandbox
among the agents of a call (removed when the call ends); `scope: session` shares it among the calls given the
same `sandbox_session=ID`, and keeps it between them (`lllm/tools/_shared_sandbox.py`). Every cell is recorded in a notebook,
`<ctx.workdir>/<agent>.ipynb`; the sandbox reports each cell as a `CellRecord`, the gateway each CALL_API as an
`ApiCallRecord`, both to `ctx.tracer`.

Failures of the machinery are not tool results: a sandbox that cannot start (no Docker engine, no image), a
gateway session that cannot open, or an engine that fails mid-session raises an `InfrastructureError`, which
the agent re-raises and which ends the tactic call (also in jupyter mode). What the cell's code did (an
exception, a timeout, running out of memory) comes back to the model as the cell's output.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pydantic import model_validator

from lllm.errors import ConfigError, InfrastructureError, LLLMError
from lllm.proxies.budget import ProxyBudget
from lllm.proxies.manager import ProxyManager
from lllm.proxies.remote import build_manager
from lllm.tools._shared_sandbox import SharedSandbox, open_gateway, session_holder

__all__ = ["ProxyConfig", "ProxyTools", "SandboxBlock", "attach", "close_pools", "serve_proxies"]

_IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_CELL_RE = re.compile(r"<python_cell>(.*?)</python_cell>", re.S)


class SandboxBlock(BaseModel):
    """`proxy.sandbox`: where the agent's code runs."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "docker"
    """A registered sandbox backend: `docker` (isolated, no network), `local` (a kernel on the host: trusted code
    and tests only), `fake`, or one registered with `lllm.sandbox.register_sandbox_backend`."""
    image: str | None = None
    """The Docker image (default: the project's sandbox image)."""
    limits: dict[str, Any] = Field(default_factory=dict)
    """`SandboxLimits` fields: memory, cpus, pids, workspace_size, tmp_size, home_size, nofile."""
    pool_size: int = Field(default=0, ge=0)
    """Keep this many sandboxes started ahead of time (Docker; 0: start one on first use)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables of the kernel (never secrets: they would be readable by the model's code)."""
    scope: Literal["agent", "tactic", "session"] = "agent"
    """Who shares the sandbox: each agent its own, for one tactic call (`agent`); every agent of the call
    (`tactic`); every call given the same `sandbox_session=ID`, kept between them (`session`)."""
    packages: Literal["index"] | list[str] | None = None
    """Docker: `index` lets pip in the sandbox reach the host's package index (and nothing else); a list of
    requirements runs an image with them installed (built on the host the first time)."""
    idle_timeout: float | None = Field(default=None, gt=0)
    """Seconds without use after which the sandbox is removed (default: none; `session` scope: 3600)."""
    max_lifetime: float | None = Field(default=None, gt=0)
    """Seconds after its start after which the sandbox is removed (default: none; `session` scope: 86400)."""
    docker_host: str | None = None
    """Docker: the engine, as DOCKER_HOST spells it (`tcp://10.0.0.5:2376`); default `$DOCKER_HOST` or local."""
    tls: bool | str | dict[str, str] | None = None
    """Docker: TLS to that engine: true (`$DOCKER_CERT_PATH`), a folder with ca.pem, cert.pem, key.pem, or
    `{ca, cert, key}` paths (`docs/scaling.md`)."""

    @model_validator(mode="after")
    def _scope_and_pool(self) -> SandboxBlock:
        if self.scope == "session" and self.pool_size:
            raise ValueError("a session sandbox is named when it starts, so it cannot come from a pool: drop "
                             "pool_size or use scope agent/tactic")
        return self
    fork_with_dialog: bool = True
    """`agent.fork(src, dst)` while the sandbox is in use forks the kernel too: `dst` gets a branch kernel with
    `src`'s variables (`lllm/tools/_dialog_kernels.py`); False: every dialog shares one kernel."""

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        from lllm.sandbox.backends import SANDBOX_BACKENDS

        if value not in SANDBOX_BACKENDS:
            raise ValueError(f"unknown sandbox backend {value!r}; registered: {SANDBOX_BACKENDS.names()!r}")
        return value


class ProxyConfig(BaseModel):
    """The `proxy:` block of an agent config."""

    model_config = ConfigDict(extra="forbid")

    activate_proxies: list[str] = Field(default_factory=list)
    """The proxies this agent's code may call (its gateway allowlist)."""
    exec_env: Literal["interpreter", "jupyter"] | None = "interpreter"
    """How the agent runs code: run_python tool calls, `<python_cell>` tags, or not at all (null)."""
    max_output_chars: int = Field(default=5000, ge=100)
    """The most characters of one cell's output the model sees."""
    truncation_indicator: str = "... (output truncated)"
    """Put where output was cut."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds one cell may run before it is interrupted."""
    source: Literal["live", "offline", "auto"] | None = None
    """Proxy implementations: real APIs, bundled offline data, or live where a key is set (default:
    $LLLM_PROXY_SOURCE, else live)."""
    sandbox: SandboxBlock = Field(default_factory=SandboxBlock)
    gateway: dict[str, Any] = Field(default_factory=dict)
    """`GatewayLimits` fields: rate, burst, call_timeout, max_request_bytes, max_response_bytes, ..."""
    cutoff_date: str | None = None
    """Passed to every proxy (lllm-core 0.1 option)."""
    budgets: dict[str, ProxyBudget] = Field(default_factory=dict)
    """Per proxy path (or `"*"`): what one session may spend, `{calls, cost}` (see `lllm.proxies.budget`)."""

    @field_validator("activate_proxies", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ProxyTools:
    """What `attach` gives one agent: its ProxyManager, and its sandbox + gateway session once code has run.

    Available as `agent.proxy_tools`. Not thread-safe across agents; one instance per agent per tactic call.
    """

    def __init__(self, config: ProxyConfig, manager: ProxyManager, *, agent_name: str, session_id: str,
                 tracer: Any, workdir: Path) -> None:
        self.config = config
        self.manager = manager
        self.agent_name = agent_name
        self.session_id = session_id
        self.tracer = tracer
        self.workdir = workdir
        self.sandbox: Any = None
        self.gateway_session: Any = None
        self.notebook: Any = None
        self.notebook_path = workdir / f"{_safe_name(agent_name)}.ipynb"
        """Where the notebook of this agent's cells is written (after the first cell)."""
        self.cells = 0
        self.ran_in: str | None = None
        """Where this agent's cells ran, said plainly (set when its sandbox started; None: no sandbox started)."""
        self._pool: Any = None
        self._lock = threading.RLock()
        self._closed = False
        self.shared: SharedSandbox | None = None
        """The sandbox this agent shares with others (`scope: tactic` or `session`), else None."""
        self._note = ""
        from lllm.tools._dialog_kernels import DialogKernels

        self.dialogs = DialogKernels(self)
        """The branch kernels of forked dialogs (`fork_with_dialog`)."""

    # ------------------------------------------------------------------ sandbox
    def ensure_sandbox(self) -> Any:
        """The agent's sandbox, started (with its gateway session) on first use."""
        with self._lock:
            if self._closed:
                from lllm.errors import SandboxClosed

                raise SandboxClosed(f"agent {self.agent_name!r}: the tactic call ended and its sandbox was removed.")
            if self.shared is not None:
                return self._ensure_shared(self.shared)
            if self.sandbox is not None and _ended(self.sandbox):
                self._note = _replaced_note(self.sandbox)  # past its idle_timeout or max_lifetime: a new one
                old, self.sandbox = self.sandbox, None
                self._discard(old)
            if self.sandbox is not None:
                return self.sandbox
            sandbox = self._new_sandbox()
            try:
                # the token must be readable by the kernel's user; a proxy call may not outlive its cell
                self.gateway_session = open_gateway(sandbox, self.manager, self)
                from lllm.sandbox.notebook import JupyterSession

                self.notebook = JupyterSession(sandbox, path=self.notebook_path, autosave=True,
                                               title=f"{self.agent_name}: session {self.session_id}")
                _note_in_session(self.agent_name, notebook=str(self.notebook_path),
                                 image=getattr(sandbox, "image", None) or f"{self.config.sandbox.backend} (no image)")
            except BaseException:
                self._discard(sandbox)
                raise
            self.sandbox = sandbox
            self.ran_in = _describe_sandbox(sandbox)
            return sandbox

    def _ensure_shared(self, shared: SharedSandbox) -> Any:
        """The shared sandbox, with this agent's notebook on it (see `lllm/tools/_shared_sandbox.py`)."""
        with shared.lock:
            sandbox = shared.ensure(self, lambda: self._new_sandbox(keep=shared.name))
            if shared.replaced:
                self._note = _replaced_note(None, shared.replaced)
                shared.replaced = ""
            if self.sandbox is not sandbox or self.notebook is None:
                from lllm.sandbox.notebook import JupyterSession

                self.notebook = JupyterSession(sandbox, path=self.notebook_path, autosave=True,
                                               title=f"{self.agent_name}: session {self.session_id}")
                _note_in_session(self.agent_name, notebook=str(self.notebook_path),
                                 image=getattr(sandbox, "image", None) or f"{self.config.sandbox.backend} (no image)",
                                 sandbox=getattr(sandbox, "name", None) or getattr(sandbox, "sandbox_id", None))
                self.sandbox = sandbox
                self.ran_in = _describe_sandbox(sandbox)
            return sandbox

    def _new_sandbox(self, *, keep: str | None = None) -> Any:
        from lllm.sandbox.backends import backend_options, create_sandbox
        from lllm.sandbox.base import SandboxLimits
        from lllm.sandbox.pool import shared_pool

        cfg = self.config
        block = cfg.sandbox
        use = dict(cell_timeout=cfg.timeout, max_output_chars=cfg.max_output_chars, tracer=self.tracer,
                   agent=self.agent_name)
        takes = backend_options(block.backend)
        options: dict[str, Any] = {"env": dict(block.env)} if "env" in takes else {}
        if block.image is not None or "image" in takes:
            options["image"] = block.image
        if "limits" in takes:
            try:
                options["limits"] = SandboxLimits(**block.limits)
            except ValidationError as exc:
                raise ConfigError(f"agent {self.agent_name!r}: proxy.sandbox.limits is invalid: {exc}",
                                  key="proxy.sandbox.limits") from None
        idle, lifetime = block.idle_timeout, block.max_lifetime
        if block.scope == "session":
            idle = SESSION_IDLE_TIMEOUT if idle is None else idle
            lifetime = SESSION_MAX_LIFETIME if lifetime is None else lifetime
        for key, value in (("packages", block.packages), ("idle_timeout", idle), ("max_lifetime", lifetime),
                           ("docker_host", block.docker_host), ("tls", block.tls)):
            if value is not None and key in takes:  # given to a backend without them: refused by attach()
                options[key] = value
        if "scope" in takes:
            options["scope"] = block.scope
        if keep and "name" in takes:
            options["name"] = keep
        if block.pool_size:
            self._pool = shared_pool(block.backend, size=block.pool_size, **options)
            return self._pool.acquire(**use)
        if "labels" in takes:
            options["labels"] = {"lllm.tactic_session": self.session_id}
        sandbox = create_sandbox(block.backend, **options, **use)
        try:
            sandbox.start()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def _discard(self, sandbox: Any) -> None:
        if self.shared is not None:
            return  # the shared sandbox ends with its call (tactic) or its limits (session), not with an agent
        try:
            if self.gateway_session is not None:
                self.gateway_session.close()
                self.gateway_session = None
        finally:
            if self._pool is not None:
                self._pool.release(sandbox)
            else:
                sandbox.close()

    # ------------------------------------------------------------------ cells
    def run(self, code: str, *, dialog: str | None = None) -> Any:
        """Run one cell in the kernel of `dialog` (its branch, or the main kernel); return what the model should
        see (a str, or a ToolResult when there are images)."""
        with self._lock:
            if self.shared is not None:
                with self.shared.lock:  # agents take turns; each cell runs with its own agent's options
                    sandbox = self.ensure_sandbox()
                    sandbox.configure(cell_timeout=self.config.timeout, max_output_chars=self.config.max_output_chars,
                                      tracer=self.tracer, agent=self.agent_name)
                    _, notebook, note = self.dialogs.kernel_for(dialog)
                    result = notebook.run(code, timeout=self.config.timeout)
            else:
                self.ensure_sandbox()
                _, notebook, note = self.dialogs.kernel_for(dialog)
                result = notebook.run(code, timeout=self.config.timeout)
            self.cells += 1
            notes = [n for n in (self._note, note) if n]
            self._note = ""
        text = "\n".join([*notes, self.view(result)])
        images = [img.data for img in result.images if img.mime in _IMAGE_MIMES]
        if images:
            from lllm.core.prompt import ToolResult

            return ToolResult(content=text, images=images)
        return text

    def view(self, result: Any) -> str:
        """The model's view of a CellResult: a status line when not ok, then the sandbox's rendering of the
        cell (output, error, notices), all within max_output_chars."""
        from lllm.sandbox.render import render_cell

        header = ""
        if result.status == "timeout":
            how = ("the kernel was restarted and earlier variables are gone" if result.timeout_action == "restarted"
                   else "it was interrupted; earlier variables are kept")
            header = f"[timeout: the cell ran past {self.config.timeout:g}s; {how}]"
        elif result.status in ("oom", "died"):
            what = "ran out of memory" if result.status == "oom" else "died"
            header = f"[the kernel {what}; it was restarted and earlier variables are gone]"
        text = render_cell(result, max_chars=self.config.max_output_chars, header=header,
                           marker=self.config.truncation_indicator or None)
        if not text.strip():
            text = "(no output: print() what you want to see)"
        return text

    def api_doc(self, proxy_name: str) -> str:
        """The full docs of one activated proxy (the query_api_doc tool)."""
        return self.manager.api_doc(proxy_name)

    # ------------------------------------------------------------------ end of the call
    def close(self) -> None:
        """Remove the gateway session and the sandbox; the notebook stays. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.dialogs.close()
            sandbox, self.sandbox = self.sandbox, None
            try:
                if sandbox is not None:
                    self._discard(sandbox)
            finally:
                self.manager.close()


SESSION_IDLE_TIMEOUT = 3600.0
"""The default `idle_timeout` of a `scope: session` sandbox (seconds)."""
SESSION_MAX_LIFETIME = 86400.0
"""The default `max_lifetime` of a `scope: session` sandbox (seconds)."""


def _ended(sandbox: Any) -> bool:
    """The sandbox was closed by its limits (idle_timeout, max_lifetime), not by us."""
    return getattr(getattr(sandbox, "state", None), "value", None) == "closed" and bool(
        getattr(sandbox, "_closed_reason", ""))


def _replaced_note(sandbox: Any, reason: str | None = None) -> str:
    why = reason or getattr(sandbox, "_closed_reason", "") or "it was closed"
    return (f"[the sandbox was replaced by a new one because {why}: variables and files of earlier cells are "
            "gone]")


def _describe_sandbox(sandbox: Any) -> str:
    """Where a started sandbox runs code, in the words `lllm demo` prints."""
    if getattr(sandbox, "kind", None) == "docker":
        network = "with network" if getattr(sandbox, "network", False) else "no network"
        if getattr(sandbox, "package_index", None):
            network += f"; pip through the host to {sandbox.package_index}"
        runtime = getattr(sandbox, "runtime", "runc")
        under = f", runtime {runtime}" if runtime and runtime != "runc" else ""
        kept = f", kept as {sandbox.name!r}" if getattr(sandbox, "name", None) else ""
        return f"a Docker sandbox (image {getattr(sandbox, 'image', '?')}, {network}{under}{kept})"
    if getattr(sandbox, "kind", None) == "local":
        return "a local kernel on this host (NOT isolated)"
    return f"a {type(sandbox).__name__} sandbox"


def close_pools() -> None:
    """Close every sandbox pool that `proxy.sandbox.pool_size` started (also done at interpreter exit)."""
    from lllm.sandbox.pool import close_shared_pools

    close_shared_pools()


# ---------------------------------------------------------------------- attach
def _system_text(cfg: ProxyConfig, directory: str) -> str:
    limits = (f"print() what you need; output over {cfg.max_output_chars} characters is cut, and a cell may run "
              f"{cfg.timeout:g}s.")
    apis = ("CALL_API(path, params) calls the APIs below and returns parsed JSON, e.g. "
            'CALL_API("<proxy>/<endpoint>", {...}); query_api_doc(proxy_name) returns an API\'s endpoints and '
            "parameters: read it before using an endpoint.")
    if not directory:
        if cfg.exec_env == "interpreter":
            return ("## Python\nRun Python with the run_python tool: a persistent sandboxed interpreter (variables "
                    f"persist across calls; no network). {limits}")
        return ("## Python\nWrite Python in <python_cell>...</python_cell> tags; each cell runs in a persistent "
                "sandboxed Jupyter kernel and its output comes back in <cell_output> tags. Answer without a cell "
                f"when you are done. {limits}")
    if cfg.exec_env == "interpreter":
        how = ("Run Python with the run_python tool: a persistent sandboxed interpreter (variables persist across "
               f"calls; no network) where {apis} {limits}")
    elif cfg.exec_env == "jupyter":
        how = ("Write Python in <python_cell>...</python_cell> tags; each cell runs in a persistent sandboxed "
               f"Jupyter kernel and its output comes back in <cell_output> tags. In cells, {apis} Answer without a "
               f"cell when you are done. {limits}")
    else:
        how = "Call the query_api_doc tool with a proxy name to read the docs of the APIs below."
    return f"## APIs\n{how}\n{directory}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "agent"


def attach(agent: Any, block: dict[str, Any], ctx: Any = None) -> ProxyTools:
    """Give `agent` the tools its `proxy:` config block asks for (see the module docstring).

    Args:
        agent: an `lllm.core.agent.Agent`.
        block: the `proxy:` mapping from the agent's config.
        ctx: an `AgentBuildContext` (session_id, tracer, workdir, runtime); None outside a tactic.

    Returns:
        The agent's ProxyTools (also set as `agent.proxy_tools`).

    Raises:
        ConfigError: the block is invalid, or it activates a proxy that is not registered.
    """
    try:
        cfg = ProxyConfig.model_validate(block or {})
    except ValidationError as exc:
        problems = "; ".join(f"proxy.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r:.80})"
                             for e in exc.errors()[:5])
        raise ConfigError(f"agent {agent.name!r}: bad proxy block: {problems}", key="proxy") from None
    from lllm.proxies.gateway import GatewayLimits
    from lllm.sandbox.base import SandboxLimits

    from lllm.sandbox.backends import backend_options

    takes = backend_options(cfg.sandbox.backend)
    if cfg.sandbox.packages == "index" and "packages" in takes:
        from lllm.sandbox.package_relay import host_index

        try:
            host_index()
        except LLLMError as exc:
            raise ConfigError(f"agent {agent.name!r}: proxy.sandbox.packages is 'index', but {exc}",
                              key="proxy.sandbox.packages") from None
    for key in ("packages", "idle_timeout", "max_lifetime", "docker_host", "tls"):
        if getattr(cfg.sandbox, key) is not None and key not in takes:
            raise ConfigError(f"agent {agent.name!r}: proxy.sandbox.{key} needs the docker backend (backend "
                              f"{cfg.sandbox.backend!r} has no such option)", key=f"proxy.sandbox.{key}")
    for key, model, options in (("proxy.gateway", GatewayLimits, cfg.gateway),
                                ("proxy.sandbox.limits", SandboxLimits, cfg.sandbox.limits)):
        try:
            model(**options)
        except (ValidationError, LLLMError) as exc:
            raise ConfigError(f"agent {agent.name!r}: {key} is invalid: {exc}", key=key) from None
    source = cfg.source or os.environ.get("LLLM_PROXY_SOURCE") or "live"
    if source not in ("live", "offline", "auto"):
        raise ConfigError(f"LLLM_PROXY_SOURCE must be live, offline or auto, got {source!r}.", key="proxy.source")
    try:
        # a ProxyManager here, or (on a Ray worker) one whose proxies run where the keys are
        manager = build_manager(cfg.activate_proxies, source=source, runtime=getattr(ctx, "runtime", None),
                                cutoff_date=cfg.cutoff_date, budgets=dict(cfg.budgets))
    except ConfigError as exc:
        raise ConfigError(f"agent {agent.name!r}: {exc.message}", key="proxy.activate_proxies") from None
    session_id = getattr(ctx, "session_id", None) or secrets.token_hex(6)
    tracer = getattr(ctx, "tracer", None) or agent.tracer
    workdir = Path(ctx.workdir) if ctx is not None else Path(tempfile.gettempdir()) / "lllm-runs" / session_id
    tools = ProxyTools(cfg, manager, agent_name=agent.name, session_id=session_id, tracer=tracer, workdir=workdir)
    tools.shared = _shared_holder(agent.name, cfg.sandbox)
    agent.proxy_tools = tools
    agent.add_cleanup(tools.close)
    add_dialog_hook = getattr(agent, "add_dialog_hook", None)
    if callable(add_dialog_hook):
        add_dialog_hook(tools.dialogs.on_dialog)

    prompt = agent.system_prompt
    extra = _system_text(cfg, manager.directory()).replace("{", "{{").replace("}", "}}")
    agent.system_prompt = prompt.extend(path=prompt.path, prompt=f"{prompt.prompt.rstrip()}\n\n{extra}")

    from lllm.core.prompt import Function

    def query_api_doc(proxy_name: str) -> str:
        return tools.api_doc(proxy_name)

    if manager.available():
        agent.tools.append(Function.from_callable(
            query_api_doc,
            description="The full docs of one API proxy: every endpoint with its description, parameters (types, "
                        "required, examples) and response shape. Read it before calling an endpoint you have not "
                        "used.",
            prop_desc={"proxy_name": f"one of {manager.available()!r}"}))
    if cfg.exec_env == "interpreter":
        def run_python(code: str) -> Any:
            return tools.run(code, dialog=getattr(agent, "active_alias", None))

        agent.tools.append(Function.from_callable(
            run_python,
            description="Run Python in this agent's persistent sandboxed interpreter (variables persist across "
                        "calls; no network). CALL_API(path, params) calls the APIs and returns JSON; "
                        "query_api_doc(name) returns docs. print() results; errors come back as tracebacks; "
                        "matplotlib figures come back as images.",
            prop_desc={"code": "Python source to execute"}))
    elif cfg.exec_env == "jupyter":
        agent.add_answer_hook(_cell_runner(tools, agent))
    return tools


def _shared_holder(agent_name: str, block: SandboxBlock) -> SharedSandbox | None:
    """The holder of the sandbox this agent shares (None for `scope: agent`), from the running tactic call.

    Raises:
        ConfigError: `scope: tactic` or `session` outside a tactic call, or `session` in a call given no
            `sandbox_session` id.
    """
    if block.scope == "agent":
        return None
    from lllm.core.tactic import current_session

    call = current_session()
    if call is None:
        raise ConfigError(f"agent {agent_name!r}: proxy.sandbox.scope is {block.scope!r}, which shares a sandbox "
                          "across a tactic call, but this agent was built outside one; use scope: agent, or build "
                          "it through a Tactic", key="proxy.sandbox.scope")
    if block.scope == "tactic":
        key = ("lllm.tools.sandbox", block.model_dump_json(exclude={"pool_size"}))

        def make() -> SharedSandbox:
            holder = SharedSandbox("tactic")
            call.add_cleanup(holder.close)
            return holder

        holder: SharedSandbox = call.shared(key, make)
        return holder
    name = call.sandbox_session
    if not name:
        raise ConfigError(f"agent {agent_name!r}: proxy.sandbox.scope is 'session', which keeps the sandbox under an "
                          "id across calls, but this tactic call was given none: call tactic(task, "
                          "sandbox_session='my-analysis') (or `lllm run ... --sandbox-session my-analysis`), or "
                          "use scope: tactic", key="proxy.sandbox.scope")
    session_holder_ = session_holder(block.backend, name)

    def enter() -> SharedSandbox:
        session_holder_.enter_call()
        call.add_cleanup(session_holder_.leave_call)
        return session_holder_

    joined: SharedSandbox = call.shared(("lllm.tools.sandbox_session", block.backend, name), enter)
    return joined


def _cell_runner(tools: ProxyTools, agent: Any = None) -> Any:
    """Jupyter mode, as an answer hook: run the `<python_cell>` blocks of an answer and send their outputs back
    (the Agent asks the model again, at most `max_interrupt_steps` times; an answer without a cell stands)."""

    def run_cells(message: Any) -> Any:
        cells = [c.strip("\n") for c in _CELL_RE.findall(message.content or "") if c.strip()]
        if not cells:
            return None
        prose = _CELL_RE.sub("", message.content or "").strip()
        if prose:
            try:
                tools.ensure_sandbox()
                tools.notebook.add_markdown(prose)  # the model's reasoning, between its cells
            except InfrastructureError:
                raise  # no sandbox: the call ends (not something the model can work around)
            except LLLMError:
                pass  # reported with the cell below
        outputs: list[str] = []
        images: list[Any] = []
        for code in cells:
            try:
                out = tools.run(code, dialog=getattr(agent, "active_alias", None))
            except InfrastructureError:
                raise
            except LLLMError as exc:
                out = f"[the cell could not run: {type(exc).__name__}: {exc}]"
            text = getattr(out, "content", out)
            images.extend(getattr(out, "images", []) or [])
            outputs.append(f"<cell_output>\n{text}\n</cell_output>")
        from lllm.core.prompt import ToolResult

        return ToolResult(content="\n".join(outputs), images=images) if images else "\n".join(outputs)

    return run_cells


def _note_in_session(agent_name: str, *, notebook: str, image: str, sandbox: str | None = None) -> None:
    """Record the notebook's path and the sandbox image (and, when shared, which sandbox) in the tactic call's
    session metadata (for the log)."""
    from lllm.core.tactic import current_session

    session = current_session()
    if session is not None:
        session.metadata.setdefault("notebooks", {})[agent_name] = notebook
        session.metadata.setdefault("sandbox_images", {})[agent_name] = image
        if sandbox:
            session.metadata.setdefault("sandboxes", {})[agent_name] = sandbox
        if session.store is not None:  # in the log now: a run that dies mid-call still says where its notebook is
            noted: dict[str, Any] = {"notebooks": {agent_name: notebook}, "sandbox_images": {agent_name: image}}
            if sandbox:
                noted["sandboxes"] = {agent_name: sandbox}
            session.store.note_metadata(session.session_id, noted)


def serve_proxies(sandbox: Any, block: dict[str, Any], *, session_id: str, tracer: Any = None) -> Any:
    """CALL_API for a sandbox that no agent owns: the `proxy` service of `lllm.sandbox.jupyter.JupyterSession`
    (its `metadata["proxy"]`: `activate_proxies`, `cutoff_date`, `deploy_mode`, `source`, `budgets`).

    Returns:
        The gateway session (its `close()` removes the socket and the token).

    Raises:
        ConfigError: an unknown proxy or a bad block.
    """
    source: Any = block.get("source") or os.environ.get("LLLM_PROXY_SOURCE") or "live"
    manager = ProxyManager(block.get("activate_proxies") or [], cutoff_date=block.get("cutoff_date"),
                           deploy_mode=bool(block.get("deploy_mode", False)), source=source,
                           budgets=block.get("budgets"))
    from lllm.proxies.gateway import get_gateway

    return get_gateway().open_session(sandbox.session_dir, manager, session_id=session_id, tracer=tracer,
                                      token_owner=sandbox.guest_uid)
