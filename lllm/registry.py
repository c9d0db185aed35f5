"""Registries of plug-ins, one per kind, at the bottom of lllm beside `errors.py` (it imports no other room).

Every kind of plug-in (invokers, sandbox backends, agent config blocks, proxies, tactics, ...) has one
`Registry`, owned by the room that uses it, and one registration form, `register_<kind>(name, obj_or_path)`:
`obj_or_path` is the object itself or its dotted path `"package.module:attr"`, imported on first use, so
registering costs nothing at import time and `import lllm` stays fast.

A room registers its own built-ins in code. A plug-in that lives in a higher room, or in another distribution,
declares itself as an entry point of the registry's group in its package metadata (`pyproject.toml`):

```toml
[project.entry-points."lllm.agent_extensions"]
computer_use = "lllm.tools.cua:attach"
```

The registry reads its group the first time it is asked for a name it does not have, so a lower room never
imports, or even names, the rooms that plug into it. A name registered in code wins over an entry point.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from lllm.errors import ConfigError

__all__ = ["Registry", "load_dotted", "suggest"]

T = TypeVar("T")


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the nearest candidate names, or '' when none is near."""
    import difflib  # only an error message needs it

    close = difflib.get_close_matches(str(name), list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def load_dotted(path: str, *, what: str) -> Any:
    """Import `package.module:attr` (or `package.module.attr`; `attr` may be `Class.method`) and return it.

    Raises:
        ConfigError: not a dotted path, or the module or the attribute does not exist (names `what`).
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{what}: {path!r} is not a dotted path; write it as 'package.module:name'", key=what)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: {path!r} did not load: cannot import module {module_name!r} ({exc})",
                          key=what) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(f"{what}: {path!r} did not load: {module_name!r} has no attribute {attr!r}",
                              key=what) from exc
    return obj


class Registry(MutableMapping[str, T], Generic[T]):
    """Name -> plug-in of one kind; values may be dotted paths, resolved (and kept) on first use.

    It is a mapping: `reg[name]` resolves, `name in reg` and `list(reg)` never import anything, and
    `reg[name] = obj_or_path` is `register(name, obj_or_path)`.

    Args:
        kind: what it holds, for messages ("agent config block", "sandbox backend").
        group: the entry point group its plug-ins may declare themselves in (None: code only).
        check: called with (name, resolved object); raises ConfigError when the object is not of this kind.
        hint: the end of an unknown-name message: how to register one.
    """

    def __init__(self, kind: str, *, group: str | None = None,
                 check: Callable[[str, Any], None] | None = None, hint: str = "") -> None:
        self.kind = kind
        self.group = group
        self._check = check
        self._hint = hint
        self._entries: dict[str, Any] = {}
        """name -> the object (checked), or its dotted path (a str: not imported yet)."""
        self._declared: set[str] = set()  # names that came from entry points
        self._entry_points_read = group is None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {sorted(self._entries)!r})"

    # -- registration ---------------------------------------------------------------------------------

    def register(self, name: str, obj_or_path: T | str, *, replace: bool = True) -> None:
        """Register `obj_or_path` (the object, or its dotted path `"package.module:attr"`) under `name`.

        Raises:
            ConfigError: `name` is empty, a path is not dotted, or `name` is taken and `replace` is False.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} name must be a non-empty string, got {name!r}", key=str(name))
        if isinstance(obj_or_path, str) and ":" not in obj_or_path and "." not in obj_or_path:
            raise ConfigError(f"{self.kind} {name!r}: {obj_or_path!r} is not a dotted path; write "
                              "'package.module:name'", key=name)
        with self._lock:
            current = self._entries.get(name)
            if (current is not None and not replace and name not in self._declared
                    and current is not obj_or_path and current != obj_or_path):
                raise ConfigError(f"the {self.kind} name {name!r} is already registered ({_describe(current)}); "
                                  "pass replace=True to replace it, or choose another name", key=name)
            if not isinstance(obj_or_path, str) and self._check is not None:
                self._check(name, obj_or_path)
            self._entries[name] = obj_or_path
            self._declared.discard(name)

    def __setitem__(self, name: str, obj_or_path: T | str) -> None:
        self.register(name, obj_or_path)

    def clear(self) -> None:
        """Forget every registration (entry points are read again on the next miss)."""
        with self._lock:
            self._entries.clear()
            self._declared.clear()
            self._entry_points_read = self.group is None

    def __delitem__(self, name: str) -> None:
        with self._lock:
            del self._entries[name]
            self._declared.discard(name)

    # -- lookup ----------------------------------------------------------------------------------------

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        with self._lock:
            if self._entry_points_read:
                return
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.group or ""):
                if ep.name not in self._entries:
                    self._entries[ep.name] = ep.value
                    self._declared.add(ep.name)
            self._entry_points_read = True

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        self._read_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> list[str]:
        """Every registered name, sorted (declared entry points included; nothing is imported)."""
        self._read_entry_points()
        with self._lock:
            return sorted(self._entries)

    def peek(self, name: str) -> Any | None:
        """What `name` is registered as so far (the object or its dotted path), or None; reads no entry points
        and imports nothing (for a registration that only needs to know whether code took the name)."""
        return self._entries.get(name)

    def entry(self, name: str) -> Any:
        """What `name` was registered as (the object or its dotted path), without importing; KeyError if none."""
        if name not in self:
            raise KeyError(name)
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        if name not in self:
            raise KeyError(name)
        value = self._entries[name]
        if not isinstance(value, str):
            return value  # checked when it was registered
        obj = load_dotted(value, what=f"{self.kind} {name!r}")
        if self._check is not None:
            self._check(name, obj)
        with self._lock:
            if self._entries.get(name) is value:  # not re-registered meanwhile
                self._entries[name] = obj
        return obj  # checked by self._check where the kind has one

    def entry_point_hint(self) -> str:
        """A sentence for unknown-name errors: where plug-ins of other packages come from."""
        if self.group is None:
            return ""
        return (f" Packages declare theirs as entry points of the group {self.group!r} (installed metadata: after "
                "editing a pyproject.toml, reinstall that package, e.g. `pip install -e .`).")

    def lookup(self, name: str, *, where: str = "") -> T:
        """`self[name]`, or a ConfigError that lists the registered names and the nearest ones.

        Args:
            name: the name a config or a call gave.
            where: a prefix for the message (the config file).
        """
        if name not in self:
            names = self.names()
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; registered: {names!r}.{suggest(name, names)}"
                              f"{' ' + self._hint if self._hint else ''}{self.entry_point_hint()}", key=name)
        return self[name]


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return value
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', value)}"
