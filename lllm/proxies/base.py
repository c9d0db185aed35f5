"""BaseProxy, the `@BaseProxy.endpoint(...)` decorator, `ProxyRegistrator` and the proxy registry.

A proxy describes one API surface that sandboxed code reaches through `CALL_API("<proxy>/<endpoint>", params)`.
Each endpoint is a method decorated with `@BaseProxy.endpoint(category=, endpoint=, description=, params=,
response=, ...)`; dispatch goes by the decorator's `endpoint` name, exactly the name the docs show (never by the
Python method name). Parameters are declared as in lllm-core 0.1:

```python
@ProxyRegistrator(path="fmp", name="Financial Modeling Prep", description="Market data.")
class FMPProxy(BaseProxy):
    @BaseProxy.endpoint(
        category="Prices", endpoint="price", description="Daily prices of one symbol.",
        params={"symbol*": (str, "AAPL"), "period": (str, "1y", "1m, 3m, 6m, 1y, 5y")},
        response=[{"date": "2025-01-02", "close": 243.85}],
    )
    def price(self, symbol: str, period: str = "1y") -> list[dict]: ...
```

A trailing `*` marks a required parameter. A spec is `(type, example)`, `(type, example, description)` or a dict
`{"type", "required", "example", "description", "default", "enum"}`. An endpoint method takes the parameters as
keyword arguments, or (lllm-core 0.1 style) one positional `params` dict.

`BaseProxy.call` is the one place every result and error of a proxy passes through: there, the secrets
registered with `lllm.proxies.redact.register_secret` (API keys) are scrubbed from them, so an upstream that
echoes a request cannot hand a key to the sandbox, the log or the notebook. A proxy may declare a price per
call (`price_per_call`, or `price=` on one endpoint) that session budgets count (`ProxyManager(budgets=)`).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, TypeVar

from lllm.errors import ConfigError, EndpointNotFound, LLLMError, ProxyError, UsageError
from lllm.proxies.redact import has_secrets, scrub, scrub_error, scrub_value
from lllm.registry import Registry

__all__ = [
    "PROXY_REGISTRY",
    "BaseProxy",
    "EndpointSpec",
    "ParamSpec",
    "ProxyRegistrator",
    "register_proxy",
]

ProxyT = TypeVar("ProxyT", bound=type)

_TYPE_NAMES: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict"}
_NAME_TYPES: dict[str, Any] = {v: k for k, v in _TYPE_NAMES.items()} | {"string": str, "integer": int,
                                                                        "number": float, "boolean": bool,
                                                                        "array": list, "object": dict}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter of an endpoint."""

    name: str
    type: Any = None
    """A Python type (`str`, `int`, ...) or None for any JSON value."""
    required: bool = False
    example: Any = None
    description: str = ""
    default: Any = None
    enum: tuple[Any, ...] | None = None

    @property
    def type_name(self) -> str:
        """The type as the docs print it."""
        if self.type is None:
            return "any"
        return _TYPE_NAMES.get(self.type, getattr(self.type, "__name__", str(self.type)))

    def check(self, value: Any, endpoint: str) -> Any:
        """Return `value` (ints widened to float where a float is declared) or raise ProxyError."""
        expected = self.type
        ok = True
        if expected is None:
            pass
        elif expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(expected, type):
            ok = isinstance(value, expected)
        if not ok:
            raise ProxyError(
                f"parameter {self.name!r} of {endpoint!r} must be {self.type_name}, got {type(value).__name__} "
                f"{_preview(value)}; for example {self.name}={self.example!r}.",
                endpoint=endpoint, param=self.name,
            )
        if self.enum is not None and value not in self.enum:
            raise ProxyError(
                f"parameter {self.name!r} of {endpoint!r} must be one of {list(self.enum)!r}, got {value!r}.",
                endpoint=endpoint, param=self.name,
            )
        return value

    def to_doc(self) -> dict[str, Any]:
        """A JSON-able description of this parameter."""
        doc: dict[str, Any] = {"name": self.name, "type": self.type_name, "required": self.required}
        if self.example is not None:
            doc["example"] = self.example
        if self.description:
            doc["description"] = self.description
        if self.default is not None:
            doc["default"] = self.default
        if self.enum is not None:
            doc["enum"] = list(self.enum)
        return doc


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_param(key: str, spec: Any, where: str) -> ParamSpec:
    required = key.endswith("*")
    name = key.rstrip("*")
    if not name.isidentifier() and not name.replace("-", "_").isidentifier():
        raise ConfigError(f"{where}: parameter name {key!r} is not a valid name.")
    if isinstance(spec, dict):
        typ = spec.get("type")
        if isinstance(typ, str):
            typ = _NAME_TYPES.get(typ, None)
        enum = spec.get("enum")
        return ParamSpec(name=name, type=typ, required=bool(spec.get("required", required)),
                         example=spec.get("example"), description=str(spec.get("description", "")),
                         default=spec.get("default"), enum=tuple(enum) if enum is not None else None)
    if isinstance(spec, tuple) and spec:
        typ = spec[0]
        if isinstance(typ, str):
            typ = _NAME_TYPES.get(typ, None)
        example = spec[1] if len(spec) > 1 else None
        description = str(spec[2]) if len(spec) > 2 else ""
        return ParamSpec(name=name, type=typ, required=required, example=example, description=description)
    if isinstance(spec, type):
        return ParamSpec(name=name, type=spec, required=required)
    # a bare example value: its type is the example's type
    return ParamSpec(name=name, type=type(spec) if spec is not None else None, required=required, example=spec)


@dataclass(frozen=True)
class EndpointSpec:
    """What `@BaseProxy.endpoint(...)` recorded about one endpoint."""

    endpoint: str
    category: str
    description: str
    params: tuple[ParamSpec, ...]
    response: Any
    name: str | None = None
    sub_category: str | None = None
    remove_keys: tuple[str, ...] = ()
    dt_cutoff: tuple[str, str] | None = None
    method: str = "GET"
    func_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> ParamSpec | None:
        """The declared parameter called `name`, if any."""
        for p in self.params:
            if p.name == name:
                return p
        return None

    def validate(self, params: dict[str, Any], proxy_path: str) -> dict[str, Any]:
        """Check `params` against the declaration; return them with defaults filled in.

        Raises:
            ProxyError: a required parameter is missing, an unknown one is given, or a value has the wrong type.
        """
        full = f"{proxy_path}/{self.endpoint}"
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ProxyError(
                f"{full!r} has no parameter {unknown[0]!r}; its parameters are {sorted(known)!r}. "
                f"Run query_api_doc({proxy_path!r}) for the full docs.",
                endpoint=full, param=unknown[0],
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in params and params[p.name] is not None:
                out[p.name] = p.check(params[p.name], full)
            elif p.required:
                raise ProxyError(
                    f"{full!r} needs parameter {p.name!r} ({p.type_name}), for example "
                    f"CALL_API({full!r}, {{{p.name!r}: {p.example!r}}}).",
                    endpoint=full, param=p.name,
                )
            elif p.default is not None:
                out[p.name] = p.default
        return out

    def to_doc(self) -> dict[str, Any]:
        """A JSON-able description of this endpoint (what query_api_doc renders)."""
        doc: dict[str, Any] = {"endpoint": self.endpoint, "category": self.category,
                               "description": self.description, "method": self.method,
                               "params": [p.to_doc() for p in self.params],
                               "response_shape": response_shape(self.response)}
        if self.name:
            doc["name"] = self.name
        if self.sub_category:
            doc["sub_category"] = self.sub_category
        if self.response is not None:
            doc["response_example"] = self.response
        return doc


def response_shape(example: Any, depth: int = 0) -> str:
    """A compact type sketch of an example response: `list[{date: str, close: float}]`."""
    if depth > 3:
        return "..."
    if isinstance(example, list):
        return f"list[{response_shape(example[0], depth + 1)}]" if example else "list"
    if isinstance(example, dict):
        inner = ", ".join(f"{k}: {response_shape(v, depth + 1)}" for k, v in list(example.items())[:16])
        more = ", ..." if len(example) > 16 else ""
        return "{" + inner + more + "}"
    if example is None:
        return "null"
    return _TYPE_NAMES.get(type(example), type(example).__name__)


class BaseProxy:
    """Base class for one API surface that sandboxed code calls through `CALL_API`.

    Subclasses declare endpoints with `@BaseProxy.endpoint(...)` and register with `@ProxyRegistrator(...)`.
    Keys and other secrets belong to the proxy instance on the host; they never reach the sandbox.

    Class attributes:
        api_key_env: the environment variable that holds the API key (None: no key needed).
        price_per_call: USD one call costs (0: free or unknown); an endpoint may declare its own `price=`.
    """

    api_key_env: ClassVar[str | None] = None
    price_per_call: ClassVar[float] = 0.0
    _lllm_proxy: ClassVar[bool] = True  # how lllm.toml discovery (in the core, below this room) knows a proxy
    _proxy_path: ClassVar[str]
    _proxy_name: ClassVar[str]
    _proxy_description: ClassVar[str]

    def __init__(self, *args: Any, activate_proxies: list[str] | None = None, cutoff_date: Any = None,
                 deploy_mode: bool = False, use_cache: bool = True, **kwargs: Any) -> None:
        self.activate_proxies = list(activate_proxies or [])
        self.cutoff_date: dt.datetime | None = _as_datetime(cutoff_date)
        """Rows dated after this are dropped from endpoints that declare `dt_cutoff` (no look-ahead in
        backtests); date ranges end there instead of today."""
        self.deploy_mode = deploy_mode
        self.use_cache = use_cache

    # ------------------------------------------------------------------ declaration
    @staticmethod
    def endpoint(category: str, endpoint: str, description: str, params: dict[str, Any] | None = None,
                 response: Any = None, name: str | None = None, sub_category: str | None = None,
                 remove_keys: list[str] | None = None, dt_cutoff: tuple[str, str] | None = None,
                 method: str = "GET", **extra: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a method as the endpoint `endpoint` (the name CALL_API and the docs use).

        Args:
            category: a heading for the docs ("Prices", "Search").
            endpoint: the endpoint name: `CALL_API("<proxy>/<endpoint>", ...)`.
            description: what it returns, for the model.
            params: parameter specs (see the module docstring); `"name*"` is required.
            response: an example response; the docs show it and its shape.
            name: a display name.
            sub_category: a sub-heading.
            remove_keys: keys dropped from each returned dict.
            dt_cutoff: `(field, strptime format)` of the rows' date field: with a `cutoff_date`, rows dated
                after it are dropped from the result.
            method: the HTTP method of the API behind it, for the docs.
        """
        if not isinstance(endpoint, str) or not endpoint or "/" in endpoint:
            raise ConfigError(f"endpoint name {endpoint!r} must be a non-empty string without '/'.")

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            where = f"endpoint {endpoint!r} ({func.__qualname__})"
            specs = tuple(_parse_param(k, v, where) for k, v in (params or {}).items())
            func.endpoint_info = {  # type: ignore[attr-defined]  # lllm-core 0.1 compatible
                "category": category, "endpoint": endpoint, "name": name, "description": description,
                "sub_category": sub_category, "remove_keys": remove_keys, "params": params or {},
                "response": response, "dt_cutoff": dt_cutoff, "method": method,
            }
            func._lllm_endpoint = EndpointSpec(  # type: ignore[attr-defined]
                endpoint=endpoint, category=category, description=description, params=specs,
                response=response, name=name, sub_category=sub_category,
                remove_keys=tuple(remove_keys or ()), dt_cutoff=dt_cutoff, method=method.upper(),
                func_name=func.__name__, extra=extra,
            )
            return func

        return decorator

    @staticmethod
    def postcall(func: Callable[..., Any]) -> Callable[..., Any]:
        """Mark a method run on every endpoint's result: `postcall(self, endpoint, result) -> result`."""
        func.is_postcall = True  # type: ignore[attr-defined]
        return func

    # ------------------------------------------------------------------ introspection
    @classmethod
    def endpoint_specs(cls) -> dict[str, EndpointSpec]:
        """Every declared endpoint by its name, in declaration order (cached per class)."""
        cache = cls.__dict__.get("_lllm_endpoint_cache")
        if cache is not None:
            return cache
        specs: dict[str, EndpointSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                spec = getattr(value, "_lllm_endpoint", None)
                if isinstance(spec, EndpointSpec):
                    for old_name, old in list(specs.items()):  # an override under the same attribute
                        if old.func_name == attr:
                            del specs[old_name]
                    if spec.endpoint in specs and specs[spec.endpoint].func_name != attr:
                        raise ConfigError(
                            f"{cls.__name__}: endpoint {spec.endpoint!r} is declared twice "
                            f"({specs[spec.endpoint].func_name} and {attr}); endpoint names must be unique.")
                    specs[spec.endpoint] = spec
        cls._lllm_endpoint_cache = specs  # type: ignore[attr-defined]
        return specs

    @classmethod
    def proxy_path(cls) -> str:
        """The path it was registered under (`fmp`), or the class name when unregistered."""
        return getattr(cls, "_proxy_path", cls.__name__)

    def endpoint_directory(self) -> list[dict[str, Any]]:
        """A structured list of every endpoint (lllm-core 0.1 compatible)."""
        return [spec.to_doc() for spec in self.endpoint_specs().values()]

    def api_directory(self) -> dict[str, Any]:
        """The proxy's metadata plus its endpoint directory."""
        return {"id": self.proxy_path(), "display_name": getattr(self, "_proxy_name", type(self).__name__),
                "description": getattr(self, "_proxy_description", ""), "endpoints": self.endpoint_directory()}

    def endpoint_price(self, endpoint: str) -> float:
        """USD one call of `endpoint` costs (its `price=`, else the proxy's `price_per_call`)."""
        spec = self.endpoint_specs().get(endpoint)
        declared = spec.extra.get("price") if spec is not None else None
        return float(declared if declared is not None else self.price_per_call)

    @property
    def keyed_live(self) -> bool:
        """Whether calls spend a real API quota: a live proxy that needs a key (budgeted by default)."""
        return bool(self.api_key_env) and getattr(self, "_proxy_variant", "live") == "live"

    def _postcalls(self) -> Iterator[Callable[..., Any]]:
        for _, member in inspect.getmembers(type(self)):
            if getattr(member, "is_postcall", False):
                yield getattr(self, member.__name__)

    # ------------------------------------------------------------------ dispatch
    def call(self, endpoint: str, params: dict[str, Any] | None = None, *,
             charge: Callable[[], None] | None = None) -> Any:
        """Run the endpoint called `endpoint` with `params`.

        Args:
            charge: called once the parameters are valid, right before the endpoint runs (the session's budget;
                it raises to refuse the call).

        Raises:
            EndpointNotFound: no endpoint has that name (the message lists the real ones).
            ProxyError: the parameters do not match the declaration, or the API failed.
        """
        specs = self.endpoint_specs()
        spec = specs.get(endpoint)
        path = self.proxy_path()
        if spec is None:
            raise EndpointNotFound(
                f"proxy {path!r} has no endpoint {endpoint!r}; its endpoints are {list(specs)!r}. "
                f"Call it as CALL_API('{path}/<endpoint>', {{...}}).",
                proxy=path, endpoint=endpoint, available=list(specs),
            )
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ProxyError(f"params of '{path}/{endpoint}' must be a dict, got {type(params).__name__}.",
                             proxy=path, endpoint=endpoint)
        clean = spec.validate(params, path)
        if charge is not None:
            charge()
        method = getattr(self, spec.func_name)
        try:
            result = method(clean) if _takes_params_dict(method) else method(**clean)
            if spec.remove_keys:
                result = _remove_keys(result, spec.remove_keys)
            if self.cutoff_date is not None and spec.dt_cutoff:
                result = _before_cutoff(result, spec.dt_cutoff, self.cutoff_date)
            for hook in self._postcalls():
                result = hook(endpoint, result)
        except LLLMError as exc:
            if not has_secrets():
                raise
            # the chain (an httpx error naming the URL, say) stays behind: it may hold what was scrubbed
            raise scrub_error(exc) from None
        except Exception as exc:
            text = str(exc)
            scrubbed = scrub(text)
            if scrubbed == text:
                raise  # the manager names it (`'<path>' failed: ...`)
            raise ProxyError(f"'{path}/{endpoint}' failed: {type(exc).__name__}: {scrubbed}",
                             proxy=path, endpoint=endpoint).with_traceback(exc.__traceback__) from None
        return scrub_value(result)


_PARAMS_DICT_CACHE: dict[Any, bool] = {}


def _takes_params_dict(method: Callable[..., Any]) -> bool:
    """True for lllm-core 0.1 style endpoints `def f(self, params: dict)`."""
    func = getattr(method, "__func__", method)
    cached = _PARAMS_DICT_CACHE.get(func)
    if cached is None:
        sig = inspect.signature(method)
        names = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        cached = len(names) == 1 and names[0].name == "params"
        _PARAMS_DICT_CACHE[func] = cached
    return cached


def _remove_keys(result: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k not in keys}
    if isinstance(result, list):
        return [_remove_keys(item, keys) if isinstance(item, dict) else item for item in result]
    return result


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, 23, 59, 59)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"cutoff_date must be an ISO date like '2024-12-31', got {value!r}.") from None
        return parsed.replace(hour=23, minute=59, second=59) if len(value) <= 10 else parsed
    raise ConfigError(f"cutoff_date must be a date, a datetime or an ISO string, got {value!r}.")


@functools.lru_cache(maxsize=32)
def _width(fmt: str) -> int:
    """How many characters a date in `fmt` has (ISO timestamps are cut to it before parsing)."""
    return len(dt.datetime(2000, 12, 31, 23, 59, 59).strftime(fmt))


def _before_cutoff(result: Any, dt_cutoff: tuple[str, str], cutoff: dt.datetime) -> Any:
    """Drop the rows of a list result whose date field is after `cutoff` (rows without a date stay)."""
    if not isinstance(result, list):
        return result
    field_name, fmt = dt_cutoff
    naive = cutoff.replace(tzinfo=None)
    kept = []
    for row in result:
        value = row.get(field_name) if isinstance(row, dict) else None
        if isinstance(value, str):
            try:
                if dt.datetime.strptime(value[: _width(fmt)], fmt) > naive:
                    continue
            except ValueError:
                pass
        kept.append(row)
    return kept


# ---------------------------------------------------------------------- registry
def _check_proxy_class(path: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, BaseProxy)):
        raise UsageError(f"register_proxy({path!r}, ...) needs a BaseProxy subclass, got {obj!r}.")


PROXY_REGISTRY: dict[str, Registry[type[BaseProxy]]] = {
    "live": Registry("proxy", group="lllm.proxies", check=_check_proxy_class),
    "offline": Registry("offline proxy", group="lllm.offline_proxies", check=_check_proxy_class),
}
"""The registry of proxy classes: `PROXY_REGISTRY[variant][path]`; `variant` is "live" or "offline". Proxies
that ship in other packages (lllm's own `proxies/`: fmp, fred, exa) declare themselves as entry points of the
groups `lllm.proxies` and `lllm.offline_proxies`, and load when a session first activates them."""


def register_proxy(path: str, proxy_cls: type[BaseProxy] | str, *, overwrite: bool = True,
                   variant: str = "live") -> None:
    """Register `proxy_cls` under `path` (what `activate_proxies` and CALL_API paths name).

    Args:
        path: the proxy's name, e.g. "fmp".
        proxy_cls: a BaseProxy subclass, or its dotted path "package.module:Class" (imported on first use).
        overwrite: replace an existing registration (else a ConfigError).
        variant: "live" (calls the real API) or "offline" (serves data shipped with the code).
    """
    if variant not in PROXY_REGISTRY:
        raise UsageError(f"variant must be one of {list(PROXY_REGISTRY)!r}, got {variant!r}.")
    if not isinstance(proxy_cls, str):
        _check_proxy_class(path, proxy_cls)
    if not path or path.startswith("/") or path.endswith("/") or path.startswith("_"):
        raise ConfigError(f"proxy path {path!r} must be non-empty, not start with '_' and not begin or end with '/'.")
    PROXY_REGISTRY[variant].register(path, proxy_cls, replace=overwrite)


def ProxyRegistrator(path: str, name: str, description: str, *, runtime: Any = None,
                     variant: str = "live") -> Callable[[ProxyT], ProxyT]:  # noqa: N802 (lllm-core 0.1 name)
    """Class decorator: register a BaseProxy subclass under `path` with a display name and description.

    Args:
        path: the proxy's name in `activate_proxies` and CALL_API paths ("fmp").
        name: a display name ("Financial Modeling Prep").
        description: one or two sentences; the first line goes in the system prompt's directory.
        runtime: also register it with this runtime (an object with `register_proxy(path, cls, overwrite=)`).
        variant: "live" or "offline" (an offline stand-in with the same endpoints).
    """

    def decorator(cls: ProxyT) -> ProxyT:
        cls._proxy_path = path  # type: ignore[attr-defined]
        cls._proxy_name = name  # type: ignore[attr-defined]
        cls._proxy_description = description  # type: ignore[attr-defined]
        cls._proxy_variant = variant  # type: ignore[attr-defined]
        cls.endpoint_specs()  # type: ignore[attr-defined]  # fail at import on duplicate endpoint names
        register_proxy(path, cls, overwrite=True, variant=variant)
        if runtime is not None and hasattr(runtime, "register_proxy") and variant == "live":
            runtime.register_proxy(path, cls, overwrite=True)
        return cls

    return decorator


def to_json_bytes(value: Any) -> bytes:
    """Compact JSON for a proxy result (what the gateway sends); raises ProxyError if it is not JSON-able."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()
    except (TypeError, ValueError) as exc:
        raise ProxyError(f"the proxy returned a value that is not JSON: {exc}") from exc


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
