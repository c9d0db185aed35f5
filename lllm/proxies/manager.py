"""ProxyManager: the activated proxies of one session, dispatch by `<proxy>/<endpoint>`, the directory and docs.

`ProxyManager(activate_proxies=["fmp", "fred"])` instantiates the registered proxies named there (importing the
ones declared by entry point, like lllm's own in the top-level `proxies` package, on first use) and nothing else: a path that names any other
proxy is refused with `ProxyNotActivated`, which is also how the gateway enforces a session's allowlist.

`source` picks the implementation: "live" (the real APIs, keys from the host's environment), "offline" (data
shipped in the repo, same endpoint names) or "auto" (live where the proxy's key is set, offline otherwise).

A manager is one session's: it also holds the session's budgets (`budgets=`, see `lllm.proxies.budget`), and
every call is charged to them before it is dispatched.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any, Iterable, Literal

from lllm.errors import ConfigError, LLLMError, ProxyError, ProxyNotActivated, UsageError
from lllm.proxies.base import PROXY_REGISTRY, BaseProxy
from lllm.proxies.budget import DEFAULT_LIVE_BUDGET, ProxyBudget, SessionBudgets
from lllm.proxies.hooks import active_api_call_hooks, call_through_hooks, environment_hooks

__all__ = ["DEFAULT_LIVE_BUDGET", "ProxyManager", "Source", "split_path"]

Source = Literal["live", "offline", "auto"]


def _lookup(path: str, variant: str) -> type[BaseProxy] | None:
    """The class registered under `path` (a proxy declared by entry point is imported now), or None."""
    return PROXY_REGISTRY[variant].get(path)


class ProxyManager:
    """The proxies one session may call, and the one place calls are dispatched.

    Args:
        activate_proxies: proxy paths to load ("fmp", "fred", ...). None: every registered live proxy, or only
            the `proxies` given when there are some.
        source: "live", "offline" or "auto" (see the module docstring).
        proxies: ready instances by path, added to (and overriding) the activated ones; for tests and
            for proxies that need constructor arguments.
        cutoff_date, deploy_mode, use_cache: passed to each proxy's constructor (lllm-core 0.1 options).
        budgets: this session's budget per proxy path (`{"fmp": {"calls": 500}, "*": {...}}`); live proxies
            that need a key get `DEFAULT_LIVE_BUDGET` unless named here.

    Raises:
        ConfigError: a name in `activate_proxies` is not registered (the message lists the known ones), or a
            budget is malformed.
    """

    def __init__(self, activate_proxies: Iterable[str] | None = None, *, source: Source = "live",
                 proxies: dict[str, BaseProxy] | None = None, cutoff_date: Any = None, deploy_mode: bool = False,
                 use_cache: bool = True, runtime: Any = None,
                 budgets: dict[str, ProxyBudget | dict[str, Any]] | None = None) -> None:
        if source not in ("live", "offline", "auto"):
            raise ConfigError(f"proxy source must be 'live', 'offline' or 'auto', got {source!r}.")
        try:
            self.budgets = SessionBudgets(budgets)
            """What this session spent on each proxy, against its budgets."""
        except ValueError as exc:  # a pydantic ValidationError
            raise ConfigError(f"proxy budgets are invalid: {exc}", key="proxy.budgets") from None
        if isinstance(activate_proxies, str):
            activate_proxies = [activate_proxies]
        self.source: Source = source
        self.cutoff_date = cutoff_date
        self.deploy_mode = deploy_mode
        self.proxies: dict[str, BaseProxy] = {}
        if activate_proxies is not None:
            names = list(activate_proxies)
        else:  # everything registered, unless instances were given: then just those
            names = [] if proxies else sorted(PROXY_REGISTRY["live"])
        self.activate_proxies = names
        for name in names:
            if proxies and name in proxies:
                continue
            cls = self._resolve_class(name, runtime)
            self.proxies[name] = self._instantiate(cls, names, cutoff_date, deploy_mode, use_cache)
        for name, instance in (proxies or {}).items():
            if not isinstance(instance, BaseProxy):
                raise UsageError(f"proxies[{name!r}] must be a BaseProxy instance, got {type(instance).__name__}.")
            self.proxies[name] = instance
            if name not in self.activate_proxies:
                self.activate_proxies.append(name)
        # longest path first, so "acme/prices" wins over "acme" when both are activated
        self._by_length = sorted(self.proxies, key=len, reverse=True)
        self._env_hooks = environment_hooks()  # CALL_API hooks the environment turns on ($LLLM_CASSETTE)

    def _resolve_class(self, name: str, runtime: Any) -> type[BaseProxy]:
        if self.source == "live":
            order = ["live"]
        elif self.source == "offline":
            order = ["offline"]
        else:
            live = _lookup(name, "live")
            key = getattr(live, "api_key_env", None) if live is not None else None
            order = ["live", "offline"] if live is not None and (key is None or os.environ.get(key)) else [
                "offline", "live"]
        for variant in order:
            cls = _lookup(name, variant)
            if cls is not None:
                return cls
        if runtime is not None and hasattr(runtime, "iter_items"):
            for key, node in runtime.iter_items("proxy"):
                value = getattr(node, "value", node)
                if name in (key, getattr(node, "key", None), getattr(value, "_proxy_path", None)):
                    return value
        known = PROXY_REGISTRY[order[0]].names()
        raise ConfigError(
            f"activate_proxies names {name!r}, but no {order[0]} proxy is registered under that path; known: "
            f"{known!r}. Register one with @ProxyRegistrator(path={name!r}, ...) in a module your lllm.toml "
            "discovers, or fix the name.")

    @staticmethod
    def _instantiate(cls: type[BaseProxy], names: list[str], cutoff_date: Any, deploy_mode: bool,
                     use_cache: bool) -> BaseProxy:
        try:
            return cls(activate_proxies=names, cutoff_date=cutoff_date, deploy_mode=deploy_mode,
                       use_cache=use_cache)
        except TypeError:
            return cls()

    # ------------------------------------------------------------------ lookup
    def available(self) -> list[str]:
        """The activated proxy paths, sorted."""
        return sorted(self.proxies)

    def resolve(self, path: str) -> tuple[BaseProxy, str, str]:
        """Split `"<proxy>/<endpoint>"` into (proxy instance, proxy path, endpoint name).

        Raises:
            ProxyError: `path` is not of the form "<proxy>/<endpoint>".
            ProxyNotActivated: the proxy is not activated in this session.
        """
        name, endpoint = split_path(path, self._by_length)
        return self.proxies[name], name, endpoint

    def get(self, name: str) -> BaseProxy:
        """The activated proxy `name`, or ProxyNotActivated."""
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ProxyNotActivated(
                f"proxy {name!r} is not activated for this session; activated: {self.available()!r}.",
                proxy=name)
        return proxy

    # ------------------------------------------------------------------ dispatch
    def call(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """Dispatch `CALL_API(path, params)` to its proxy, in this process, through the CALL_API hooks that are
        on (`lllm.proxies.hooks`: a cassette records or replays the answer there).

        Raises:
            ProxyNotActivated, EndpointNotFound, ApiBudgetExceeded, ProxyError: what went wrong, with the next
                step.
        """
        hooks = active_api_call_hooks(self._env_hooks)
        if hooks:
            return call_through_hooks(hooks, path, params, lambda: self._dispatch(path, params))
        return self._dispatch(path, params)

    def _dispatch(self, path: str, params: dict[str, Any] | None) -> Any:
        proxy, name, endpoint = self.resolve(path)
        try:
            # charged once the parameters are valid, before the endpoint runs: a refused call reaches nothing
            return proxy.call(endpoint, params, charge=lambda: self.budgets.charge(name, proxy, endpoint))
        except LLLMError:
            raise
        except Exception as exc:  # a proxy bug or an API library error: one line for the model
            raise ProxyError(f"{path!r} failed: {type(exc).__name__}: {exc}", proxy=name,
                             endpoint=endpoint) from exc

    __call__ = call

    # ------------------------------------------------------------------ docs
    def directory(self) -> str:
        """The compact directory for a system prompt: one line per proxy with its endpoint names."""
        lines = []
        for name in self.available():
            proxy = self.proxies[name]
            title = getattr(proxy, "_proxy_name", type(proxy).__name__)
            desc = " ".join((getattr(proxy, "_proxy_description", "") or "").split())
            if len(desc) > 80:
                desc = desc[:80].rsplit(" ", 1)[0].rstrip(",.;:") + "..."
            if getattr(proxy, "_proxy_variant", "live") == "offline":
                title += ", offline sample data"
            endpoints = ", ".join(proxy.endpoint_specs())
            lines.append(f"- {name} ({title}): {endpoints}" + (f" -- {desc}" if desc else ""))
        return "\n".join(lines)

    def api_catalog(self) -> dict[str, dict[str, Any]]:
        """The structured directory of every activated proxy."""
        return {name: proxy.api_directory() for name, proxy in self.proxies.items()}

    def api_doc(self, name: str) -> str:
        """The full docs of one activated proxy: each endpoint's description, parameters (type, required,
        example), and response shape with an example.

        Raises:
            ProxyNotActivated: `name` is not an activated proxy (the message lists the activated ones).
        """
        name = name.strip().rstrip("/") if isinstance(name, str) else name
        proxy = self.get(name)
        meta = proxy.api_directory()
        out = [f"# {meta['display_name']} ({name})"]
        if meta["description"]:
            out.append(textwrap.fill(meta["description"].strip(), 110))
        out.append(f'Call: CALL_API("{name}/<endpoint>", {{param: value, ...}}) -> parsed JSON.')
        category = None
        for ep in meta["endpoints"]:
            if ep["category"] != category:
                category = ep["category"]
                out.append(f"\n## {category}")
            out.append(f"\n### {name}/{ep['endpoint']}" + (f"  ({ep['name']})" if ep.get("name") else ""))
            out.append(textwrap.fill(ep["description"].strip(), 110))
            if ep["params"]:
                out.append("Parameters:")
                for p in ep["params"]:
                    bits = [p["type"], "required" if p["required"] else "optional"]
                    if "default" in p:
                        bits.append(f"default {p['default']!r}")
                    line = f"  - {p['name']} ({', '.join(bits)})"
                    if p.get("description"):
                        line += f": {p['description']}"
                    if "enum" in p:
                        line += f"; one of {p['enum']!r}"
                    if "example" in p:
                        line += f"; e.g. {p['example']!r}"
                    out.append(line)
            else:
                out.append("Parameters: none")
            out.append(f"Returns: {ep['response_shape']}")
            if "response_example" in ep:
                example = _compact(ep["response_example"])
                out.append(f"Example response: {example}")
            example_params = {p["name"]: p["example"] for p in ep["params"] if p["required"] and "example" in p}
            out.append(f'Example: CALL_API("{name}/{ep["endpoint"]}", {example_params!r})')
        return "\n".join(out)

    def retrieve_api_docs(self, proxy_name: str | None = None) -> str:
        """The full docs of one activated proxy (`api_doc`), or of every activated proxy when no name is given
        (lllm-core 0.1's name and signature).

        Raises:
            ProxyNotActivated: `proxy_name` is not an activated proxy.
        """
        if proxy_name is not None:
            return self.api_doc(proxy_name)
        return "\n\n".join(self.api_doc(name) for name in self.available())

    def close(self) -> None:
        """Close every proxy that holds something open (an HTTP connection pool); errors are ignored: a pool
        that fails to close loses nothing."""
        for proxy in self.proxies.values():
            close = getattr(proxy, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - see the docstring
                    pass

    def endpoint_names(self, name: str) -> list[str]:
        """The endpoint names of one activated proxy."""
        return list(self.get(name).endpoint_specs())


def split_path(path: Any, names: list[str]) -> tuple[str, str]:
    """`"<proxy>/<endpoint>"` -> (proxy path, endpoint) for the activated proxy `names`, longest first.

    Raises:
        ProxyError: `path` is not of the form "<proxy>/<endpoint>".
        ProxyNotActivated: no name in `names` is its proxy.
    """
    available = sorted(names)
    if not isinstance(path, str) or "/" not in path:
        raise ProxyError(
            f"CALL_API path must be '<proxy>/<endpoint>', e.g. 'fmp/price', got {path!r}. "
            f"Activated proxies: {available!r}.", path=path)
    for name in names:
        if path.startswith(name + "/"):
            return name, path[len(name) + 1:]
    proxy = path.rsplit("/", 1)[0]
    raise ProxyNotActivated(
        f"proxy {proxy!r} is not activated for this session; activated: {available!r}. "
        "Add it to the agent's proxy.activate_proxies to use it.", proxy=proxy, path=path)


def _compact(value: Any, limit: int = 400) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 4] + " ..."



BUILTIN_GROUPS = ("lllm.proxies", "lllm.offline_proxies")
"""The entry point groups where lllm (and other distributions) declare their proxies."""


def load_builtin_proxies(modules: list[str] | None = None) -> tuple[list[str], dict[str, Exception]]:
    """Import proxy modules now, so their proxies are registered (lllm-core 0.1's function).

    lllm's built-in proxies (fmp, fred, exa and their offline variants) load by themselves the first time a
    session activates them; this imports them up front (to list them, or to see an import problem early).

    Args:
        modules: module names to import (default: every module declared in the entry point groups
            `lllm.proxies` and `lllm.offline_proxies`: lllm's own and any other installed distribution's).

    Returns:
        `(loaded, errors)`: the modules imported, and `{module: exception}` for those that failed (a missing
        dependency, a module that does not exist); nothing is raised.
    """
    import importlib
    from importlib.metadata import entry_points

    if modules is None:
        found = [ep.value.partition(":")[0] for group in BUILTIN_GROUPS for ep in entry_points(group=group)]
        modules = list(dict.fromkeys(found))
    loaded: list[str] = []
    errors: dict[str, Exception] = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, as lllm-core does
            errors[module] = exc
        else:
            loaded.append(module)
    return loaded, errors
