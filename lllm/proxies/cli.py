"""`lllm proxies ls|doc|call`: look at and try the API proxies from a shell (registered into the main CLI).

```
lllm proxies ls --source offline                     # the directory an agent's system prompt gets
lllm proxies doc fmp                                 # what query_api_doc("fmp") returns
lllm proxies call fmp/price '{"symbol": "AAPL", "period": "1m"}' --source offline
```

Proxies are the built-in ones (fmp, fred, exa) and those of the lllm package in the working directory (its
lllm.toml, when there is one). Calls run here, on the host, with the host's keys: no sandbox is involved.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lllm.errors import LLLMError

__all__ = ["register"]

_SOURCES = ("live", "offline", "auto")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `proxies` command group (ls, doc, call) to the main parser's subparsers."""
    parser = subparsers.add_parser("proxies", help="list API proxies, read their docs, call an endpoint",
                                   description="Look at and try the API proxies that CALL_API reaches.")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    sub = parser.add_subparsers(dest="proxies_command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", choices=_SOURCES, default=None,
                       help="live APIs, bundled offline data, or live where a key is set "
                            "(default: $LLLM_PROXY_SOURCE, else live)")
        p.add_argument("--no-package", action="store_true",
                       help="do not load the lllm.toml package of the working directory")

    ls = sub.add_parser("ls", help="one line per proxy with its endpoints (the system prompt's directory)",
                        description="List the proxies with their endpoint names, as an agent's system prompt "
                                    "shows them.")
    common(ls)
    ls.add_argument("--json", action="store_true", help="print the structured catalog as JSON")
    ls.set_defaults(func=cmd_ls)

    doc = sub.add_parser("doc", help="the full docs of one proxy (what query_api_doc returns)",
                         description="Print one proxy's docs: endpoints, parameters with types, required flags "
                                     "and examples, response shapes.")
    doc.add_argument("name", help="the proxy, e.g. fmp")
    common(doc)
    doc.set_defaults(func=cmd_doc)

    call = sub.add_parser("call", help="call one endpoint here, on the host, and print its JSON",
                          description="Call `<proxy>/<endpoint>` with JSON params, as CALL_API would, and print "
                                      "the result.")
    call.add_argument("path", help="<proxy>/<endpoint>, e.g. fmp/price")
    call.add_argument("params", nargs="?", default="{}", help='a JSON object, e.g. \'{"symbol": "AAPL"}\'')
    common(call)
    call.set_defaults(func=cmd_call)


def _manager(args: argparse.Namespace, names: list[str] | None) -> Any:
    import os
    from pathlib import Path

    from lllm.proxies.base import PROXY_REGISTRY
    from lllm.proxies.manager import ProxyManager

    runtime = None
    if not args.no_package and (os.environ.get("LLLM_CONFIG") or _find_toml(Path.cwd())):
        from lllm.core.runtime import get_default_runtime, load_package

        load_package()
        runtime = get_default_runtime()
    source = args.source or os.environ.get("LLLM_PROXY_SOURCE") or "live"
    if names is None:
        variant = "offline" if source == "offline" else "live"
        names = PROXY_REGISTRY[variant].names()
    return ProxyManager(names, source=source, runtime=runtime)  # type: ignore[arg-type]  # ProxyManager checks it


def _find_toml(start: Any) -> bool:
    return any((folder / "lllm.toml").is_file() for folder in (start, *start.parents))


def _fail(exc: LLLMError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def cmd_ls(args: argparse.Namespace) -> int:
    """`lllm proxies ls`."""
    try:
        manager = _manager(args, None)
    except LLLMError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(manager.api_catalog(), indent=2, ensure_ascii=False, default=str))
    else:
        print(manager.directory())
    return 0


def cmd_doc(args: argparse.Namespace) -> int:
    """`lllm proxies doc NAME`."""
    try:
        print(_manager(args, [args.name]).api_doc(args.name))
    except LLLMError as exc:
        return _fail(exc)
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    """`lllm proxies call PATH [PARAMS]`."""
    try:
        params = json.loads(args.params)
    except ValueError as exc:
        print(f"error: params must be a JSON object, got {args.params!r} ({exc})", file=sys.stderr)
        return 2
    if not isinstance(params, dict):
        print(f"error: params must be a JSON object, got {args.params!r}", file=sys.stderr)
        return 2
    try:
        manager = _manager(args, None)
        result = manager.call(args.path, params)
    except LLLMError as exc:
        return _fail(exc)
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0
