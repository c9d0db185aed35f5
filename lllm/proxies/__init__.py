"""API proxies and the CALL_API gateway: what sandboxed code may call, and how it reaches it.

- `BaseProxy`, `@BaseProxy.endpoint(...)`, `ProxyRegistrator(path=, name=, description=)`: declare a proxy.
- `ProxyManager(activate_proxies=[...])`: one session's proxies; `call(path, params)`, `directory()`,
  `api_doc(name)`.
- `Gateway` / `get_gateway()` (`lllm.proxies.gateway`): the host-side unix-socket server the sandbox's
  `CALL_API` talks to.
"""

from __future__ import annotations

from lllm._lazy import lazy_getattr
from lllm.proxies.base import PROXY_REGISTRY, BaseProxy, EndpointSpec, ParamSpec, ProxyRegistrator, register_proxy
from lllm.proxies.manager import ProxyManager, load_builtin_proxies

_LAZY = {
    "Gateway": "lllm.proxies.gateway",
    "GatewayLimits": "lllm.proxies.gateway",
    "GatewaySession": "lllm.proxies.gateway",
    "get_gateway": "lllm.proxies.gateway",
}

__all__ = sorted([
    "PROXY_REGISTRY", "BaseProxy", "EndpointSpec", "ParamSpec", "ProxyManager",
    "ProxyRegistrator", "load_builtin_proxies", "register_proxy", *_LAZY,
])


__getattr__ = lazy_getattr('lllm.proxies', _LAZY, globals())
