"""The Runtime registry (prompts, configs, tactics, proxies) and `lllm.toml` package discovery.

A package declares itself in `lllm.toml`::

    [package]
    name = "research"
    version = "0.1.0"

    [dependencies]
    packages = ["../shared", "../tools as t", {path = "../more", alias = "m"}]

    [prompts]                 # each section: paths (default: the folder of that name) and a prefix
    paths = ["prompts"]
    prefix = ""
    [configs]
    [tactics]
    [proxies]

`load_package()` finds `lllm.toml` in the working directory or a parent (or at `$LLLM_CONFIG`), loads its
dependencies (a package is loaded once, whatever cycles and diamonds the graph has), then registers the
`Prompt` objects of prompts/**/*.py, the YAML files of configs/, the `Tactic` subclasses of tactics/ and the
proxy classes of proxies/. Every resource is registered as `namespace::key` (namespace: the alias or the
package name) and, unless a package loaded earlier took it, as the bare `key`; the root package's own names
always win. Prompts can also be `.md` files: `prompts/greeter/system.md` is the prompt `greeter/system`.

`import lllm` runs none of this. The default runtime discovers a package by itself the first time something is
looked up in it (a prompt, a config, a tactic by name...), when nothing was loaded explicitly before: the
package `$LLLM_CONFIG` names, else the first `lllm.toml` from the working directory upward (else, with a
warning, the working directory's own prompts/, configs/, tactics/ and proxies/ as a package named after it),
plus the packages installed in `./lllm_packages/` and `~/.lllm/packages/` (`install_package`).
`LLLM_AUTO_INIT=0` turns that off. (lllm-core does the same on `import lllm`; here importing stays light.)

Keys can be written as lllm-core writes them: `"pkg:key"` and `"pkg.prompts:key"` mean `"pkg::key"`.
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from collections.abc import MutableMapping
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.core._configfile import load_config as _load_config_file
from lllm.core.prompt import Prompt
from lllm.errors import ConfigError
from lllm.registry import Registry, suggest

Tactic = Any  # a `lllm.core.tactic.Tactic` subclass (that module sits above this one and registers into it)

__all__ = [
    "PackageInfo",
    "ResourceNode",
    "Runtime",
    "build_tactic",
    "get_default_runtime",
    "get_runtime",
    "key_forms",
    "load_config",
    "load_package",
    "load_prompt",
    "load_proxy",
    "load_resource",
    "load_runtime",
    "load_tactic",
    "register_tactic_class",
    "resolve_config",
]

TOML_NAME = "lllm.toml"
SECTIONS = ("prompts", "configs", "tactics", "proxies")
TACTIC_GROUP = "lllm.tactics"
"""The entry point group where rooms above the core (and other distributions) declare the tactics they ship by
name (lllm's own: `computer_use`); the default runtime reads it for a name it does not have."""


# -- lllm.toml schema ---------------------------------------------------------------------------------------


class _PackageTable(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str = "0.0.0"


class _DependencyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    alias: str | None = None


class _Dependencies(BaseModel):
    model_config = ConfigDict(extra="forbid")
    packages: list[str | _DependencyEntry] = Field(default_factory=list)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] | str | None = None
    prefix: str = ""


class PackageToml(BaseModel):
    """`lllm.toml`, validated. Tables other rooms add (`[sandbox]`, ...) are kept in `model_extra`."""

    model_config = ConfigDict(extra="allow")
    package: _PackageTable
    dependencies: _Dependencies = Field(default_factory=_Dependencies)
    prompts: _Section = Field(default_factory=_Section)
    configs: _Section = Field(default_factory=_Section)
    tactics: _Section = Field(default_factory=_Section)
    proxies: _Section = Field(default_factory=_Section)


@dataclass
class PackageInfo:
    """A loaded package: where it is, what it declared and what it registered."""

    name: str
    version: str
    root: Path
    toml_path: Path
    toml: PackageToml
    namespaces: list[str] = field(default_factory=list)
    """The names it is registered under (`name::key`): its package name and every alias."""
    dependencies: list[Path] = field(default_factory=list)
    registered: list[tuple[str, str, Any]] = field(default_factory=list)
    """(kind, key, object) for every resource it registered."""
    origin: Path | None = None
    """For a copy shipped to another machine: the folder of the package it is a copy of (its modules are named
    after that folder, so objects pickled where it came from unpickle here)."""


# -- the registry ----------------------------------------------------------------------------------------------


class Runtime:
    """A registry of prompts, configs, tactics and proxies, filled by `load_package`.

    Args:
        name: the runtime's name ("default" for the one `get_default_runtime()` gives).
    """

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.prompts: dict[str, Any] = {}
        """Prompt path -> `Prompt`."""
        self.configs: dict[str, str] = {}
        """Config name -> YAML file (loaded and merged by `get_config`)."""
        self.tactics: Registry[type[Tactic]] = Registry(
            "tactic", group=TACTIC_GROUP if name == "default" else None)
        """Tactic name -> class (the registry of tactics: classes register here when they are defined)."""
        self.proxies: dict[str, type] = {}
        """Proxy classes the loaded packages declared in proxies/, by `name` and `namespace::name`."""
        self.packages: dict[Path, PackageInfo] = {}
        """Loaded packages by their lllm.toml path."""
        self.context_managers: dict[str, type] = {}
        """Context manager classes by `name` (`register_context_manager`; "default" is built in)."""
        self.discovery_done = False
        """Whether this runtime has loaded a package (explicitly, or by discovering one on first lookup)."""
        self.missing_packages: list[Path] = []
        """Paths a lenient `load_package(path)` found no lllm.toml at (named again when a lookup fails)."""
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (f"Runtime({self.name!r}: {len(self.packages)} packages, {len(self.prompts)} prompts, "
                f"{len(self.configs)} configs, {len(self.tactics)} tactics, {len(self.proxies)} proxies)")

    # -- registration ----------------------------------------------------------------------------------

    def _table(self, kind: str) -> MutableMapping[str, Any]:
        return {"prompt": self.prompts, "config": self.configs, "tactic": self.tactics, "proxy": self.proxies}[kind]

    def _register(self, kind: str, key: str, obj: Any, *, namespaces: list[str] = (), bare: str = "always",  # type: ignore[assignment]
                  package: PackageInfo | None = None) -> None:
        table = self._table(kind)
        with self._lock:
            for ns in namespaces:
                table[f"{ns}::{key}"] = obj
            if bare == "always" or key not in table:
                table[key] = obj
            if package is not None:
                package.registered.append((kind, key, obj))

    def register_prompt(self, prompt: Any, *, path: str | None = None, namespace: str | None = None,
                        overwrite: bool = True) -> None:
        """Register a `Prompt` under its `path` (or the one given), and under `namespace::path` with a namespace.

        Args:
            namespace: a package name ("my_pkg"; lllm-core's "my_pkg.prompts" means the same).
            overwrite: False raises `ConfigError` when the key holds another prompt.
        """
        key = path or prompt.path
        self._check_free("prompt", key, prompt, overwrite)
        self._register("prompt", key, prompt, namespaces=_namespaces(namespace))

    def register_config(self, name: str, path: str | os.PathLike[str] | dict[str, Any], *,
                        namespace: str | None = None, overwrite: bool = True) -> None:
        """Register a YAML config file (or a config dict, lllm-core's form) under a name.

        Args:
            namespace: a package name; the config is also `namespace::name`.
            overwrite: False raises `ConfigError` when the name holds another config.
        """
        value: Any = dict(path) if isinstance(path, dict) else str(Path(path).resolve())
        self._check_free("config", name, value, overwrite)
        self._register("config", name, value, namespaces=_namespaces(namespace))

    def register_context_manager(self, cls: type, *, overwrite: bool = True, namespace: str | None = None) -> None:
        """Register a `ContextManager` subclass under its class attribute `name` (for the config block
        `context_manager: {type: <name>}`); "default" (`DefaultContextManager`) needs no registration."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{getattr(cls, '__qualname__', cls)} needs a class attribute `name` (a non-empty "
                              "string) to be registered as a context manager", key="name")
        if not overwrite and self.context_managers.get(name) not in (None, cls):
            raise ConfigError(f"a context manager named {name!r} is already registered; pass overwrite=True",
                              key=name)
        with self._lock:
            self.context_managers[name] = cls
            for ns in _namespaces(namespace):
                self.context_managers[f"{ns}::{name}"] = cls

    def _check_free(self, kind: str, key: str, value: Any, overwrite: bool) -> None:
        if not overwrite and self._table(kind).get(key) not in (None, value):
            raise ConfigError(f"a {kind} named {key!r} is already registered; pass overwrite=True to replace it",
                              key=key)

    def register_tactic(self, name: str, cls: type[Tactic]) -> None:
        """Register a Tactic class under a name (replacing a class of the same module and qualname, or of the
        same file and qualname: a tactics/ file that a script also imports as a module of its own)."""
        with self._lock:
            old = self.tactics.peek(name)
            if old is not None and not isinstance(old, str) and old is not cls and _class_id(old) != _class_id(cls) \
                    and _class_source(old) != _class_source(cls):
                raise ConfigError(f"a tactic named {name!r} is already registered ({_class_id(old)}); "
                                  f"{_class_id(cls)} cannot take the name too. Rename one of them.", key=name)
            self.tactics[name] = cls

    def register_proxy(self, name: str, cls: type, *, overwrite: bool = True) -> None:
        """Register a proxy class under a name (its `_proxy_path`, as `ProxyRegistrator` calls it)."""
        if not overwrite and self.proxies.get(name) not in (None, cls):
            raise ConfigError(f"a proxy named {name!r} is already registered ({_class_id(self.proxies[name])}); "
                              "pass overwrite=True to replace it.", key=name)
        self._register("proxy", name, cls)

    def iter_items(self, kind: str) -> Iterator[tuple[str, Any]]:
        """(key, object) pairs of one kind: "prompt", "config", "tactic" or "proxy"."""
        with self._lock:
            items = list(self._table(kind).items())
        return iter(items)

    # -- lookup ----------------------------------------------------------------------------------------

    def _lookup(self, kind: str, key: str) -> tuple[str, Any] | None:
        """(the key found, the object) for `key` in any form lllm-core writes it, or None."""
        self._discover_once()
        table = self._table(kind)
        for form in key_forms(key, kind):
            value = table.get(form)
            if value is not None:
                return form, value
        return None

    def find_prompt(self, path: str) -> Any | None:
        """The prompt registered under `path` ("key", "pkg::key", "pkg:key"), or None."""
        found = self._lookup("prompt", path)
        return found[1] if found else None

    def get_prompt(self, path: str) -> Any:
        """The prompt registered under `path` ("key", "pkg::key", "pkg:key", "pkg.prompts:key").

        Raises:
            ConfigError: no such prompt (with the nearest registered paths).
        """
        prompt = self.find_prompt(path)
        if prompt is None:
            raise ConfigError(f"no prompt {path!r} in runtime {self.name!r}.{suggest(path, self.prompts)} "
                              f"{self._loaded_hint('prompts')}", key=path)
        return prompt

    def get_config(self, name: str) -> dict[str, Any]:
        """The config registered under `name`, loaded with its `base:` chain merged (a fresh dict each time)."""
        found = self._lookup("config", name)
        if found is None:
            raise ConfigError(f"no config {name!r} in runtime {self.name!r}.{suggest(name, self.configs)} "
                              f"{self._loaded_hint('configs')}", key=name)
        value = found[1]
        if isinstance(value, dict):  # registered as data (lllm-core's register_config(name, config_data))
            return copy.deepcopy(value)
        return _load_config_file(value, runtime=self, complete=False)  # code may complete it before building

    def get_tactic(self, name: str) -> type[Tactic]:
        """The Tactic class registered under `name` (a tactic declared by entry point loads on first use)."""
        found = self._lookup("tactic", name)
        cls = found[1] if found else None
        if cls is None and self is not get_default_runtime():
            cls = get_default_runtime().tactics.get(name)
        if cls is None:
            raise ConfigError(f"unknown tactic_type {name!r}; registered tactics: {sorted(self.tactics)!r}."
                              f"{suggest(name, self.tactics)}", key="tactic_type")
        return cls

    def get_proxy(self, name: str) -> type:
        """The proxy class registered under `name`."""
        found = self._lookup("proxy", name)
        if found is None:
            raise ConfigError(f"no proxy {name!r} in runtime {self.name!r}; registered: {sorted(self.proxies)!r}."
                              f"{suggest(name, self.proxies)}", key=name)
        return found[1]

    def get_context_manager(self, name: str) -> type:
        """The context manager class registered under `name` (`"default"`: `DefaultContextManager`)."""
        self._discover_once()
        cls = self.context_managers.get(name)
        if cls is None and name == "default":
            from lllm.core.dialog import DefaultContextManager

            return DefaultContextManager
        if cls is None:
            raise ConfigError(f"no context manager {name!r} in runtime {self.name!r}; registered: "
                              f"{sorted(['default', *self.context_managers])!r}.{suggest(name, self.context_managers)}"
                              " Register one with runtime.register_context_manager(cls).", key=name)
        return cls

    # -- lllm-core's generic registry API ----------------------------------------------------------------

    def keys(self, resource_type: str | None = None) -> list[str]:
        """The keys of every resource (or of one type: "prompt", "config", "tactic", "proxy"): package resources
        as `pkg::key`, resources registered without a package as their bare key."""
        self._discover_once()
        kinds = [resource_type] if resource_type else ["prompt", "config", "tactic", "proxy"]
        out: list[str] = []
        for kind in kinds:
            if kind not in _KINDS:
                raise ConfigError(f"unknown resource type {kind!r}; the types are {list(_KINDS)!r}", key=kind)
            items = list(self.iter_items(kind))
            qualified = {(k.split("::", 1)[1], id(v)) for k, v in items if "::" in k}
            out += [k for k, v in items if "::" in k or (k, id(v)) not in qualified]
        return sorted(set(out))

    def has(self, key: str) -> bool:
        """Whether some resource answers to `key` (in any form `get_node` takes)."""
        try:
            self.get_node(key)
        except ConfigError:
            return False
        return True

    def get_node(self, key: str, resource_type: str | None = None) -> ResourceNode:
        """The resource `key` names, with where it comes from (`.value`, `.key`, `.namespace`, `.package`).

        Args:
            key: "key", "pkg::key", "pkg:key" or "pkg.section:key".
            resource_type: "prompt", "config", "tactic" or "proxy" (default: the first type that has the key,
                or the type the key's section names).

        Raises:
            ConfigError: nothing answers to `key`.
        """
        kinds = [resource_type] if resource_type else _kinds_for(key)
        for kind in kinds:
            if kind not in _KINDS:
                raise ConfigError(f"unknown resource type {kind!r}; the types are {list(_KINDS)!r}", key=kind)
            found = self._lookup(kind, key)
            if found is None:
                continue
            form, value = found
            bare = form.split("::", 1)[1] if "::" in form else form
            info = self._owner(kind, bare, value, form)
            loader = (lambda name=form: self.get_config(name)) if kind == "config" else None
            return ResourceNode(key=bare, resource_type=kind, package=info.name if info else None,
                                namespace=f"{info.name}.{kind}s" if info else "", _value=value, _loader=loader)
        names = [k for kind in kinds for k in self._table(kind)]
        raise ConfigError(f"nothing named {key!r} in runtime {self.name!r}.{suggest(key, names)} "
                          f"{self._loaded_hint('resources')}", key=key)

    def _owner(self, kind: str, key: str, value: Any, form: str) -> PackageInfo | None:
        """The package that registered `value` under `key` (the namespace of `form` first)."""
        ns = form.split("::", 1)[0] if "::" in form else None
        with self._lock:
            infos = list(self.packages.values())
        for info in infos:
            if ns is not None and ns not in info.namespaces:
                continue
            if any(k == kind and (r_key == key or obj is value) for k, r_key, obj in info.registered):
                return info
        return None

    def _loaded_hint(self, kind: str) -> str:
        missing = "".join(f" load_package({str(p)!r}) loaded nothing: no {TOML_NAME} there."
                          for p in self.missing_packages)
        if not self.packages:
            return (f"No package is loaded: call lllm.load_package() (it reads lllm.toml and discovers {kind})."
                    + missing)
        names = ", ".join(repr(p.name) for p in self.packages.values())
        return f"Loaded packages: {names}." + missing

    def reset(self) -> None:
        """Forget everything registered (discovery on first lookup does not run again)."""
        with self._lock:
            for table in (self.prompts, self.configs, self.tactics, self.proxies, self.packages,
                          self.context_managers):
                table.clear()
            self.missing_packages.clear()

    def _discover_once(self) -> None:
        """The default runtime's discovery on first lookup (see the module docstring)."""
        if self.discovery_done or self.name != "default":
            return
        with self._lock:
            if self.discovery_done:
                return
            self.discovery_done = True  # before loading: prompt files may look prompts up while they load
            if os.environ.get("LLLM_AUTO_INIT", "1").strip().lower() in ("0", "false", "no", "off"):
                return
            toml = _discovered_toml()
            if toml is None and any((Path.cwd() / section).is_dir() for section in SECTIONS):
                here = Path.cwd().resolve()
                warnings.warn(f"no {TOML_NAME} in {str(here)!r} or above: its folders {list(SECTIONS)} were loaded as "
                              f"the package {_folder_name(here)!r}; add an {TOML_NAME} to name it and declare its "
                              "dependencies", RuntimeWarning, stacklevel=3)
                self._load(here / TOML_NAME, alias=None, stack=(), root=True)
            elif toml is not None:
                self._load(toml, alias=None, stack=(), root=True)
            for installed in installed_package_tomls(toml.parent if toml is not None else Path.cwd()):
                if installed in self.packages:
                    continue
                try:
                    self._load(installed, alias=None, stack=(), root=False)
                except ConfigError as exc:  # someone else's package: say so, and go on without it
                    warnings.warn(f"the installed package at {installed.parent} was not loaded: {exc}",
                                  RuntimeWarning, stacklevel=3)

    # -- packages ---------------------------------------------------------------------------------------

    def load_package(self, path: str | os.PathLike[str] | None = None, *,
                     origins: dict[Path, Path] | None = None, strict: bool = False) -> PackageInfo | None:
        """Load a package (and its dependencies) into this runtime; loading it again does nothing.

        Args:
            path: an `lllm.toml` or its folder; default `$LLLM_CONFIG`, else the first `lllm.toml` found
                from the working directory upward.
            origins: for packages copied to another machine (a Ray batch ships them to its workers):
                `{lllm.toml of a copy: the lllm.toml it is a copy of}`, for the package and its dependencies.
                Their modules are named as where they came from, and `[dependencies]` paths are followed there
                and found among the copies.
            strict: a `path` with no lllm.toml is a ConfigError. By default (lllm-core's behaviour, which its
                docs rely on) it loads nothing and returns None, with a RuntimeWarning; the path is named again
                in the error of any lookup that then finds nothing. `$LLLM_CONFIG` naming a missing file, a
                missing dependency and no lllm.toml above the working folder are errors either way.
        """
        if not strict and path is not None:
            wanted = Path(path).expanduser().resolve()
            if not (wanted / TOML_NAME if wanted.is_dir() else wanted).is_file():
                self._note_missing(wanted)
                return None
        toml_path = find_package_toml(path)
        with self._lock:
            self.discovery_done = True  # explicit loading: no discovery on first lookup
            return self._load(toml_path, alias=None, stack=(), root=True, origins=origins or {})

    def _note_missing(self, wanted: Path) -> None:
        # lllm-core loads nothing for a path that does not exist, and its docs rely on it; a typo must still be
        # visible, so warn now and name the path again in the "not found" error of any later lookup.
        with self._lock:
            if wanted not in self.missing_packages:
                self.missing_packages.append(wanted)
        warnings.warn(f"runtime {self.name!r}: no {TOML_NAME} at {str(wanted)!r}, so nothing was loaded from it "
                      f"(check the path; load_package(path, strict=True) makes this an error)",
                      RuntimeWarning, stacklevel=3)

    def add_package(self, path: str | os.PathLike[str]) -> PackageInfo:
        """Load a package as an installed one (its bare keys only where free), after the default runtime's
        discovery, which it does not prevent (`install_package(load=True)` uses it)."""
        self._discover_once()
        toml_path = find_package_toml(path)
        with self._lock:
            return self._load(toml_path, alias=None, stack=(), root=not self.packages)

    def _load(self, toml_path: Path, *, alias: str | None, stack: tuple[Path, ...], root: bool,
              origins: dict[Path, Path] | None = None) -> PackageInfo:
        origins = origins or {}
        existing = self.packages.get(toml_path)
        if existing is not None:
            if alias and alias not in existing.namespaces:
                existing.namespaces.append(alias)
                for kind, key, obj in existing.registered:
                    self._table(kind)[f"{alias}::{key}"] = obj
            return existing
        spec = read_package_toml(toml_path) if toml_path.is_file() else _folder_toml(toml_path.parent)
        origin = origins.get(toml_path)
        info = PackageInfo(name=spec.package.name, version=spec.package.version, root=toml_path.parent,
                           toml_path=toml_path, toml=spec,
                           namespaces=[spec.package.name] + ([alias] if alias and alias != spec.package.name else []),
                           origin=origin.parent if origin is not None else None)
        self.packages[toml_path] = info
        try:
            for dep_path, dep_alias in _dependencies(spec, toml_path, origins):
                if dep_path in stack:
                    continue  # a cycle: that package is being loaded further up
                dep = self._load(dep_path, alias=dep_alias, stack=(*stack, toml_path), root=False, origins=origins)
                info.dependencies.append(dep.toml_path)
            _discover(self, info, bare="always" if root else "if_free")
        except BaseException:
            self.packages.pop(toml_path, None)
            raise
        return info


def _class_id(cls: type) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', cls)}"


def _class_source(cls: type) -> tuple[str | None, str]:
    """(the file that defined the class, its qualname): one class statement run under two module names."""
    module = sys.modules.get(getattr(cls, "__module__", ""))
    file = getattr(module, "__file__", None)
    return (str(Path(file).resolve()) if file else None, getattr(cls, "__qualname__", ""))


_KINDS = ("prompt", "config", "tactic", "proxy")
_SECTION_KIND = {f"{kind}s": kind for kind in _KINDS} | {"proxies": "proxy"}


def _namespaces(namespace: str | None) -> list[str]:
    """`namespace=` of the register methods: "pkg" or lllm-core's "pkg.section" -> ["pkg"]."""
    if not namespace:
        return []
    return [namespace.split(".", 1)[0]]


def key_forms(key: str, kind: str | None = None) -> list[str]:
    """The keys `key` may stand for, in the order tried: itself, then lllm-core's forms translated to ours
    ("pkg:key" and "pkg.<section>:key" -> "pkg::key"; "<section>:key" -> "key")."""
    if not isinstance(key, str) or "::" in key or ":" not in key:
        return [key]
    head, rest = key.split(":", 1)
    package, _, section = head.partition(".")
    forms = [key]
    if section and (_SECTION_KIND.get(section) is None or (kind and _SECTION_KIND[section] != kind)):
        return forms  # "pkg.configs:x" is not a prompt
    if not section and package in _SECTION_KIND:
        forms.append(rest)  # "prompts:key": the root package's
    forms.append(f"{package}::{rest}")
    return forms


def _kinds_for(key: str) -> list[str]:
    head = key.split(":", 1)[0] if ":" in key and "::" not in key else ""
    section = head.partition(".")[2] or head
    kind = _SECTION_KIND.get(section)
    return [kind] if kind else list(_KINDS)


def _folder_name(folder: Path) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in folder.name) or "project"


def _folder_toml(folder: Path) -> PackageToml:
    """The lllm.toml a folder without one stands for: a package named after the folder, default sections."""
    return PackageToml.model_validate({"package": {"name": _folder_name(folder)}})


def _discovered_toml() -> Path | None:
    """The package the default runtime discovers: `$LLLM_CONFIG` (which must exist), else the first lllm.toml
    from the working directory upward, else None."""
    if os.environ.get("LLLM_CONFIG"):
        return find_package_toml()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / TOML_NAME).is_file():
            return folder / TOML_NAME
    return None


PROJECT_PACKAGES = "lllm_packages"
"""The folder, next to a project's lllm.toml (or in the working directory), of packages installed for it."""


def user_packages_dir() -> Path:
    """Where packages installed for the user live: `~/.lllm/packages`."""
    return Path.home() / ".lllm" / "packages"


def installed_package_tomls(project_root: Path | None = None) -> list[Path]:
    """The lllm.toml of every installed package: `<project>/lllm_packages/*/`, then `~/.lllm/packages/*/`."""
    root = project_root if project_root is not None else Path.cwd()
    found = []
    for folder in (root / PROJECT_PACKAGES, user_packages_dir()):
        if folder.is_dir():
            found += [d / TOML_NAME for d in sorted(folder.iterdir()) if (d / TOML_NAME).is_file()]
    return [p.resolve() for p in found]


@dataclass
class ResourceNode:
    """A registered resource and where it comes from (lllm-core's registry entry).

    `value` is the object (a config is loaded, `base:` chain merged, when `value` is first read).
    """

    key: str
    """Its key inside its package ("greeter/system")."""
    resource_type: str
    """"prompt", "config", "tactic" or "proxy"."""
    package: str | None = None
    """The name of the package that declared it (None: registered in code)."""
    namespace: str = ""
    """lllm-core's form of the package: "pkg.prompts" ("" without a package)."""
    _value: Any = None
    _loader: Any = None

    @property
    def value(self) -> Any:
        if self._loader is not None:
            self._value, self._loader = self._loader(), None
        return self._value

    @property
    def qualified_key(self) -> str:
        """`pkg::key` (or the key, without a package)."""
        return f"{self.package}::{self.key}" if self.package else self.key

    @property
    def is_loaded(self) -> bool:
        """Whether `value` was computed (a config loads on first read)."""
        return self._loader is None

    @classmethod
    def eager(cls, key: str, value: Any, namespace: str = "", resource_type: str = "generic",
              **_metadata: Any) -> ResourceNode:
        """A node holding `value` (lllm-core's constructor)."""
        return cls(key=key, resource_type=resource_type, namespace=namespace,
                   package=namespace.split(".", 1)[0] or None, _value=value)

    @classmethod
    def lazy(cls, key: str, loader: Any, namespace: str = "", resource_type: str = "generic",
             **_metadata: Any) -> ResourceNode:
        """A node whose value `loader()` makes on first read (lllm-core's constructor)."""
        return cls(key=key, resource_type=resource_type, namespace=namespace,
                   package=namespace.split(".", 1)[0] or None, _loader=loader)


# -- lllm.toml -------------------------------------------------------------------------------------------


def find_package_toml(path: str | os.PathLike[str] | None = None) -> Path:
    """The `lllm.toml` a `load_package(path)` call means (see `Runtime.load_package`)."""
    from_env = False
    if path is None:
        env = os.environ.get("LLLM_CONFIG")
        if env:
            path, from_env = env, True
        else:
            here = Path.cwd().resolve()
            for folder in (here, *here.parents):
                if (folder / TOML_NAME).is_file():
                    return folder / TOML_NAME
            raise ConfigError(f"no {TOML_NAME} in {str(here)!r} or any folder above it. Run from inside a package, "
                              f"set LLLM_CONFIG to its {TOML_NAME}, or pass load_package(path).", path=str(here))
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        p = p / TOML_NAME
    if not p.is_file():
        fix = "set LLLM_CONFIG to a package's lllm.toml (or unset it)" if from_env else (
            f"pass the folder that holds the package's {TOML_NAME} (or the file itself)")
        source = " (from LLLM_CONFIG)" if from_env else ""
        raise ConfigError(f"no {TOML_NAME} at {str(p)!r}{source}: {fix}", path=str(p))
    return p


def read_package_toml(toml_path: Path) -> PackageToml:
    """Parse and validate an `lllm.toml` (a ConfigError names the file and the parse error or the key)."""
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: invalid TOML: {exc}", path=str(toml_path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {str(toml_path)!r}: {exc.strerror or exc}", path=str(toml_path)) from None
    try:
        return PackageToml.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
            if err["type"] == "extra_forbidden":
                section = str(err["loc"][0])
                known = list(PackageToml.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
                problems.append(f"unknown key {key!r}.{suggest(str(err['loc'][-1]), known)}")
            elif err["type"] == "missing":
                problems.append(f"missing key {key!r}")
            else:
                problems.append(f"{key!r}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{toml_path}: " + "; ".join(problems), path=str(toml_path)) from None


def _dependencies(spec: PackageToml, toml_path: Path,
                  origins: dict[Path, Path] | None = None) -> Iterator[tuple[Path, str | None]]:
    origins = origins or {}
    origin = origins.get(toml_path)
    for entry in spec.dependencies.packages:
        if isinstance(entry, str):
            raw, _, alias = entry.partition(" as ")
            entry = _DependencyEntry(path=raw.strip(), alias=alias.strip() or None)
        if origin is not None:  # a shipped copy: follow the path where it came from, to that package's copy
            wanted = (origin.parent / entry.path).expanduser().resolve()
            if wanted.name == TOML_NAME:
                wanted = wanted.parent
            local_copy = next((local for local, o in origins.items() if o.parent == wanted), None)
            if local_copy is None:
                raise ConfigError(f"{toml_path}: dependency {entry.path!r} of package {spec.package.name!r} "
                                  f"({str(wanted)!r} where the package came from) was not shipped with it",
                                  path=str(toml_path), key="dependencies.packages")
            yield local_copy, entry.alias
            continue
        target = (toml_path.parent / entry.path).expanduser().resolve()
        if target.is_dir():
            target = target / TOML_NAME
        bundled = toml_path.parent / PROJECT_PACKAGES / Path(entry.path).name / TOML_NAME
        if not target.is_file() and bundled.is_file():  # an installed zip made with bundle_deps (core/packages.py)
            target = bundled.resolve()
        if not target.is_file():
            raise ConfigError(f"{toml_path}: dependency {entry.path!r} of package {spec.package.name!r}: no "
                              f"{TOML_NAME} at {str(target)!r}. Fix [dependencies] packages.",
                              path=str(toml_path), key="dependencies.packages")
        yield target, entry.alias


# -- discovery ---------------------------------------------------------------------------------------------

_REGISTRATION: contextvars.ContextVar[tuple[Runtime, PackageInfo, str, str] | None] = contextvars.ContextVar(
    "lllm_registration", default=None)


def _section_dirs(info: PackageInfo, section: str) -> list[Path]:
    spec: _Section = getattr(info.toml, section)
    paths = spec.paths if spec.paths is not None else [section]
    if isinstance(paths, str):
        paths = [paths]
    out = []
    for p in paths:
        d = (info.root / p).resolve()
        if spec.paths is not None and not d.is_dir():  # lllm-core skips it too; say so, and load the rest
            warnings.warn(f"{info.toml_path}: [{section}] paths: {p!r} is not a folder ({str(d)!r}); skipped",
                          RuntimeWarning, stacklevel=2)
        if d.is_dir():
            out.append(d)
    return out


def _key(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix else key


def _import_file(info: PackageInfo, file: Path, base: Path, section: str) -> ModuleType:
    rel = file.relative_to(base).with_suffix("")
    tag = hashlib.sha1(str(info.origin or info.root).encode()).hexdigest()[:8]
    parts = [p.replace("-", "_").replace(".", "_") for p in rel.parts]
    name = ".".join(["_lllm_pkg", f"{info.name}_{tag}".replace("-", "_"), section, *parts])
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{file}: cannot be imported as a Python module", path=str(file))
    module = importlib.util.module_from_spec(module_spec)
    _parent_modules(name)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except ConfigError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{file}: importing it (package {info.name!r}, [{section}]) failed: "
                          f"{type(exc).__name__}: {exc}", path=str(file)) from exc
    return module


def _parent_modules(name: str) -> None:
    """Put empty parent packages of a package module's name (`_lllm_pkg`, `_lllm_pkg.<name>_<tag>`, ...) in
    `sys.modules`, so that `import _lllm_pkg.x.tactics.y` finds the module and pickle can refer to its classes
    (a result, an exception, a tactic sent to another process that loaded the same package)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            package = ModuleType(parent, "modules of the lllm.toml packages loaded in this process")
            package.__path__ = []  # a package: its children are in sys.modules
            sys.modules[parent] = package
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], package)


def _py_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _discover(runtime: Runtime, info: PackageInfo, *, bare: str) -> None:
    ns = info.namespaces
    for folder in _section_dirs(info, "configs"):
        prefix = info.toml.configs.prefix
        for file in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
            key = _key(prefix, file.relative_to(folder).with_suffix("").as_posix())
            runtime._register("config", key, str(file), namespaces=ns, bare=bare, package=info)
    for folder in _section_dirs(info, "prompts"):
        prefix = info.toml.prompts.prefix
        for file in _py_files(folder):
            module = _import_file(info, file, folder, "prompts")
            for value in list(vars(module).values()):
                if isinstance(value, Prompt):
                    runtime._register("prompt", _key(prefix, value.path), value, namespaces=ns, bare=bare,
                                      package=info)
        for file in sorted(folder.rglob("*.md")):  # a prompt's text on its own: the path is the file's
            path = file.relative_to(folder).with_suffix("").as_posix()
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{file}: cannot be read as a prompt (package {info.name!r}, [prompts]): {exc}",
                                  path=str(file)) from None
            try:
                prompt = Prompt(path=path, prompt=text, metadata={"source": str(file)})
            except ConfigError as exc:
                raise ConfigError(f"{file}: {exc.message}", path=str(file)) from None
            runtime._register("prompt", _key(prefix, path), prompt, namespaces=ns, bare=bare, package=info)
    for folder in _section_dirs(info, "tactics"):
        prefix = info.toml.tactics.prefix
        token = _REGISTRATION.set((runtime, info, prefix, bare))
        try:
            for file in _py_files(folder):
                before = len(info.registered)
                module = _import_file(info, file, folder, "tactics")
                if not any(kind == "tactic" for kind, _, _ in info.registered[before:]):
                    _register_imported_tactics(module)
        finally:
            _REGISTRATION.reset(token)
    for folder in _section_dirs(info, "proxies"):
        prefix = info.toml.proxies.prefix
        for file in _py_files(folder):
            module = _import_file(info, file, folder, "proxies")
            for value in list(vars(module).values()):
                if (_is_proxy_class(value) and value.__module__ == module.__name__
                        and getattr(value, "_proxy_variant", "live") == "live"):
                    runtime._register("proxy", _key(prefix, proxy_name(value)), value, namespaces=ns, bare=bare,
                                      package=info)


def _register_imported_tactics(module: ModuleType) -> None:
    """Register the Tactic subclasses of a tactics/ module that was imported before (by another Runtime
    loading the same package): their class statements do not run again, so they register here."""
    for value in list(vars(module).values()):  # `_lllm_registers` is set on the Tactic subclasses that register
        if (isinstance(value, type) and value.__module__ == module.__name__
                and value.__dict__.get("_lllm_registers")):
            register_tactic_class(value)


def _is_proxy_class(value: Any) -> bool:
    """A proxy class: it says so with `_lllm_proxy = True` (every `lllm.proxies.BaseProxy` subclass inherits it;
    the core does not import the proxies room) and is not abstract."""
    return (isinstance(value, type) and getattr(value, "_lllm_proxy", False) is True
            and not getattr(value, "__abstractmethods__", None))


def proxy_name(cls: type) -> str:
    """The name a proxy class is registered under: its `_proxy_path` (set by `ProxyRegistrator`), `name` or
    `proxy_name` attribute, else the class name."""
    for attr in ("_proxy_path", "name", "proxy_name"):
        value = getattr(cls, attr, None)
        if isinstance(value, str) and value:
            return value
    return cls.__name__


# -- module-level API ----------------------------------------------------------------------------------------

_RUNTIMES: dict[str, Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def _runtime_named(name: str) -> Runtime:
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(name)
        if runtime is None:
            runtime = _RUNTIMES[name] = Runtime(name)
        return runtime


def get_runtime(name: str | None = None) -> Runtime:
    """The runtime of that name (None or "default": the default runtime), created empty on first use (the batch
    executors rely on that; lllm-core raises KeyError for a name nobody loaded)."""
    return _runtime_named(name or "default")


def get_default_runtime() -> Runtime:
    """The default runtime: where `load_package()`, `resolve_config()` and Tactic subclasses register."""
    return _runtime_named("default")


def load_runtime(path: str | os.PathLike[str] | None = None, name: str = "default", *,
                 strict: bool = False) -> Runtime:
    """Load the package at `path` (see `Runtime.load_package`, also for `strict`) into the runtime `name` (made
    if new) and return it."""
    runtime = _runtime_named(name)
    runtime.load_package(path, strict=strict)
    return runtime


def load_tactic(path: str, *, runtime: Runtime | None = None) -> type[Tactic]:
    """The Tactic class registered under `path` ("name", "pkg::name", "pkg:name")."""
    return (runtime or get_default_runtime()).get_tactic(path)


def load_proxy(path: str, *, runtime: Runtime | None = None) -> type:
    """The proxy class a package registered under `path`."""
    return (runtime or get_default_runtime()).get_proxy(path)


def load_resource(path: str, *, runtime: Runtime | None = None) -> Any:
    """Any resource by lllm-core's full key, `"pkg.section:key"` or `"section:key"` (the root package's).

    Raises:
        ConfigError: `path` has no section (use `load_prompt`, `load_tactic`, ... for bare keys), or nothing
            answers to it.
    """
    if ":" not in path:
        raise ConfigError(f"load_resource takes '<package>.<section>:<key>' or '<section>:<key>', got {path!r}; "
                          "for a bare key use load_prompt/load_config/load_tactic/load_proxy", key=path)
    return (runtime or get_default_runtime()).get_node(path).value


def load_config(path: str | os.PathLike[str], *, runtime: Runtime | None = None) -> dict[str, Any]:
    """A tactic config: the YAML file at `path`, or, when there is no such file, the config registered under
    that name (lllm-core's `load_config("default")`). See `lllm.core._configfile.load_config`."""
    file = Path(path).expanduser()
    if file.is_file() or file.suffix in (".yaml", ".yml") or not isinstance(path, str):
        return _load_config_file(path, runtime=runtime)
    return (runtime or get_default_runtime()).get_config(path)


def load_package(path: str | os.PathLike[str] | None = None, *, runtime: Runtime | None = None,
                 strict: bool = False) -> PackageInfo | None:
    """Read `lllm.toml` (from `path`, `$LLLM_CONFIG`, or the working directory upward) and register what the
    package and its dependencies declare into the runtime (default: the default runtime). A `path` with no
    lllm.toml loads nothing, with a warning, unless `strict` (see `Runtime.load_package`)."""
    return (runtime or get_default_runtime()).load_package(path, strict=strict)


def load_prompt(path: str, *, runtime: Runtime | None = None) -> Any:
    """The registered `Prompt` at `path` (ConfigError with near names if there is none)."""
    return (runtime or get_default_runtime()).get_prompt(path)


def resolve_config(name: str, *, runtime: Runtime | None = None) -> dict[str, Any]:
    """The config registered under `name` with its `base:` chain merged (a fresh dict each call)."""
    return (runtime or get_default_runtime()).get_config(name)


def register_tactic_class(tactic_cls: type[Tactic], runtime: Runtime | None = None) -> type[Tactic]:
    """Register a Tactic subclass under its `name` (done for you when the class is defined)."""
    name = getattr(tactic_cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"tactic class {tactic_cls.__qualname__} needs a `name` (a non-empty string), "
                          f"got {name!r}", key="name")
    context = _REGISTRATION.get()
    if runtime is None and context is not None:
        target, info, prefix, bare = context
        key = _key(prefix, name)
        with target._lock:
            if bare == "always" or target.tactics.peek(key) is None:
                target.tactics[key] = tactic_cls  # the root package's own names win
            for ns in info.namespaces:
                target.tactics[f"{ns}::{key}"] = tactic_cls
            info.registered.append(("tactic", key, tactic_cls))
        return tactic_cls
    (runtime or get_default_runtime()).register_tactic(name, tactic_cls)
    return tactic_cls


def build_tactic(config: dict[str, Any] | str, *, log_store: Any = None, name: str | None = None,
                 runtime: Runtime | None = None, **kwargs: Any) -> Tactic:
    """Build the tactic a config's `tactic_type` names (or `name`), with `log_store` attached.

    Args:
        config: a config dict (`resolve_config(...)`) or a registered config name.
        log_store: where every call of the tactic is recorded (`sqlite_store(path)`).
        name: the tactic to build, overriding `tactic_type`.

    Raises:
        ConfigError: no `tactic_type`, or one that no registered tactic has (with near names).
    """
    runtime = runtime or get_default_runtime()
    if isinstance(config, str):
        config = runtime.get_config(config)
    tactic_type = name or config.get("tactic_type")
    if not tactic_type:
        where = config.get("_config_path") or "<config dict>"
        raise ConfigError(f"{where}: no 'tactic_type': say which registered tactic this config is for "
                          f"(registered: {sorted(runtime.tactics)!r})", path=where, key="tactic_type")
    try:
        cls = runtime.get_tactic(tactic_type)
    except ConfigError as exc:
        where = config.get("_config_path") or "<config dict>"
        raise ConfigError(f"{where}: {exc.message}", path=where, key="tactic_type") from None
    return cls(config, log_store=log_store, runtime=runtime, **kwargs)
