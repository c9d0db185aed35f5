"""compat-check --names, inside one venv: does each name exist here? (stdlib only; JSON list in, JSON dict out)

Run by compat-check as `<venv>/bin/python probe.py < names.json` in an empty folder. Answers per name:
"yes"; "no: <why>"; "kwargs" (a keyword the callable takes only through **kwargs, so unverified); "instance"
(an attribute that `__init__` sets on `self`, or a pydantic/dataclass field: present on instances).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from typing import Any


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for i, attr in enumerate(parts[cut:]):
            if not hasattr(obj, attr):
                raise LookupError(f"{'.'.join(parts[: cut + i])} has no {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"no module {parts[0]!r}")


def _instance_attr(cls: type, attr: str) -> bool:
    for klass in inspect.getmro(cls):
        if attr in getattr(klass, "model_fields", {}) or attr in getattr(klass, "__dataclass_fields__", {}):
            return True
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if re.search(rf"self\.{re.escape(attr)}\s*(:[^=\n]+)?=(?!=)", source):
            return True
    return False


def _attribute(owner: str, attr: str) -> str:
    obj = _resolve(owner)
    if hasattr(obj, attr):
        return "yes"
    if isinstance(obj, type) and _instance_attr(obj, attr):
        return "instance"
    return f"no: {owner.rsplit('.', 1)[-1]} has no {attr!r}"


def _keyword(target: str, kw: str) -> str:
    if target.endswith(".__call__"):
        fn = getattr(_resolve(target[: -len(".__call__")]), "__call__")
    else:
        fn = _resolve(target)
    if isinstance(fn, type):
        fn = fn.__init__
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "kwargs"
    if kw in params and params[kw].kind is not inspect.Parameter.POSITIONAL_ONLY:
        return "yes"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return "kwargs"
    return f"no: {target.rsplit('.', 1)[-1]}() takes no {kw}="


_KW = re.compile(r"^(?P<target>[\w.]+)\((?:class keyword )?(?P<kw>\w+)=\)$")


def probe(name: str) -> str:
    try:
        if name.startswith("module "):
            importlib.import_module(name[len("module "):])
            return "yes"
        m = _KW.match(name)
        if m:
            if "(class keyword" in name:
                return _keyword(m["target"] + ".__init_subclass__", m["kw"])
            return _keyword(m["target"], m["kw"])
        owner, _, attr = name.rpartition(".")
        try:
            _resolve(name)
            return "yes"
        except LookupError:
            pass
        try:
            importlib.import_module(owner)
            return f"no: module {owner} has no {attr!r}"
        except ImportError:
            pass
        return _attribute(owner, attr)
    except LookupError as exc:
        return f"no: {exc}"
    except Exception as exc:  # noqa: BLE001  (an import that fails is an answer too)
        return f"no: {type(exc).__name__}: {exc}"[:160]


if __name__ == "__main__":
    json.dump({n: probe(n) for n in json.load(sys.stdin)}, sys.stdout)
