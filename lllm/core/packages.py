"""Sharing packages: export one as a zip, install a zip for the user or the project, list and remove installed ones
(lllm-core 0.1's `export_package`, `install_package`, `list_packages`, `remove_package`; `lllm pkg ...`).

An installed package is a folder with its `lllm.toml`, either in `~/.lllm/packages/` (scope "user") or in
`lllm_packages/` beside the project's `lllm.toml` (scope "project", committed with the project). The default
runtime loads both on its first lookup (`lllm.core.runtime`), after the project's own package, whose names win.

```python
export_package("research_writer", "dist/rw-1.0.zip", bundle_deps=True)
install_package("dist/rw-1.0.zip", alias="rw", scope="project")
[p["name"] for p in list_packages()]
remove_package("rw")
```

A zip holds one top folder (named after the package) with the package's files. With `bundle_deps`, the
package's dependencies (all of them, transitively) go into its `lllm_packages/<folder>/`; a dependency whose
declared path does not exist where it is installed is looked for there (`lllm.core.runtime`), so the
`[dependencies]` of the bundled `lllm.toml` work unchanged. Installing never writes outside the target folder:
members with absolute paths, `..` or links are refused.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from lllm.core.runtime import (
    PROJECT_PACKAGES,
    TOML_NAME,
    PackageInfo,
    Runtime,
    _discovered_toml,
    get_default_runtime,
    read_package_toml,
    user_packages_dir,
)
from lllm.errors import ConfigError, UsageError

__all__ = ["export_package", "install_package", "list_packages", "remove_package"]

SCOPES = ("user", "project")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_SKIP_PARTS = ("__pycache__", ".git")


def _project_root() -> Path:
    """The folder of the project's lllm.toml (`$LLLM_CONFIG`, else upward from here), else the working folder."""
    found = _discovered_toml()
    return found.parent if found is not None else Path.cwd()


def _scope_dir(scope: str) -> Path:
    if scope == "user":
        return user_packages_dir()
    if scope == "project":
        return _project_root() / PROJECT_PACKAGES
    raise UsageError(f"scope must be 'user' or 'project', got {scope!r}", value=scope)


def _package(name: str, runtime: Runtime) -> PackageInfo:
    runtime._discover_once()
    for info in runtime.packages.values():
        if name == info.name or name in info.namespaces:
            return info
    loaded = sorted(info.name for info in runtime.packages.values())
    raise UsageError(f"no package {name!r} is loaded (loaded: {loaded!r}); load it first "
                     "(lllm.load_package(path), or run from inside it)", name=name)


def _files(root: Path, *, skip_installed: bool) -> list[Path]:
    out = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if any(p.startswith(".") or p in _SKIP_PARTS for p in rel.parts):
            continue
        if skip_installed and rel.parts[0] == PROJECT_PACKAGES:
            continue  # what the package itself installed is not part of it
        if file.is_file() and not file.is_symlink():
            out.append(file)
    return out


def _dependencies(info: PackageInfo, runtime: Runtime, seen: set[Path]) -> list[PackageInfo]:
    found = []
    for toml in info.dependencies:
        if toml in seen:
            continue
        seen.add(toml)
        dep = runtime.packages.get(toml)
        if dep is not None:
            found += [dep, *_dependencies(dep, runtime, seen)]
    return found


def export_package(package_name: str, output_path: str | os.PathLike[str], *, bundle_deps: bool = False,
                   runtime: Runtime | None = None) -> Path:
    """Zip a loaded package (its folder, without dotfiles, `__pycache__` and what it installed itself).

    Args:
        package_name: its `[package] name` (or an alias it was loaded under).
        output_path: the zip to write (`.zip` is added when missing; `~` is expanded; folders are created).
        bundle_deps: also put every dependency, transitively, in the zip's `lllm_packages/`.
        runtime: where the package is loaded (default: the default runtime, after its discovery).

    Returns:
        The zip written.

    Raises:
        UsageError: no such package is loaded, or two dependencies would share a folder name.
    """
    rt = runtime or get_default_runtime()
    info = _package(package_name, rt)
    out = Path(output_path).expanduser()
    if out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    deps = _dependencies(info, rt, {info.toml_path}) if bundle_deps else []
    folders: dict[str, PackageInfo] = {}
    for dep in deps:
        other = folders.setdefault(dep.root.name, dep)
        if other is not dep:
            raise UsageError(f"cannot bundle both {other.root} and {dep.root}: they share the folder name "
                             f"{dep.root.name!r}; rename one of them")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".export-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            top = Path(info.name)
            for file in _files(info.root, skip_installed=True):
                zf.write(file, top / file.relative_to(info.root))
            for folder, dep in folders.items():
                for file in _files(dep.root, skip_installed=True):
                    zf.write(file, top / PROJECT_PACKAGES / folder / file.relative_to(dep.root))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _safe_extract(zf: zipfile.ZipFile, target: Path) -> None:
    for member in zf.infolist():
        name = member.filename
        parts = Path(name).parts
        mode = member.external_attr >> 16
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]) or stat.S_ISLNK(mode):
            raise UsageError(f"the zip member {name!r} would land outside the package folder (absolute path, '..' "
                             "or a link); this zip is not installed", member=name)
    zf.extractall(target)


def install_package(zip_path: str | os.PathLike[str], *, alias: str | None = None, scope: str = "user",
                    load: bool = True, runtime: Runtime | None = None) -> Path:
    """Install a package zip (from `export_package`, or any zip of one folder holding an `lllm.toml`).

    Args:
        zip_path: the zip (`~` is expanded).
        alias: install under this name: its folder, and the `[package] name` in its `lllm.toml`, change to it
            (so its resources are `alias::key`); for a package whose name is taken.
        scope: "user" (`~/.lllm/packages/`) or "project" (`lllm_packages/` beside the project's lllm.toml).
        load: load it into `runtime` now (default runtime: after its discovery, as an installed package).
        runtime: where to load it.

    Returns:
        The installed folder.

    Raises:
        UsageError: the zip is missing, is not a package, holds unsafe paths, the alias is not a valid name, or a
            package of that name is installed there already.
    """
    source = Path(zip_path).expanduser()
    if not source.is_file():
        raise UsageError(f"no package zip at {str(source)!r}", path=str(source))
    if alias is not None and not _NAME.match(alias):
        raise UsageError(f"alias {alias!r} is not a package name: letters, digits, '_' and '-'", value=alias)
    root = _scope_dir(scope)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            with zipfile.ZipFile(source) as zf:
                _safe_extract(zf, work)
        except zipfile.BadZipFile as exc:
            raise UsageError(f"{str(source)!r} is not a zip file ({exc})", path=str(source)) from None
        tops = [work] if (work / TOML_NAME).is_file() else sorted(
            d for d in work.iterdir() if d.is_dir() and (d / TOML_NAME).is_file())
        if len(tops) != 1:
            raise UsageError(f"{source.name}: a package zip holds one folder with an {TOML_NAME} "
                             f"({'none' if not tops else len(tops)} found)", path=str(source))
        pkg = tops[0]
        name = read_package_toml(pkg / TOML_NAME).package.name
        final = alias or name
        dest = root / final
        if dest.exists():
            raise UsageError(f"a package {final!r} is installed at {dest} already; remove it first "
                             f"(remove_package({final!r}, scope={scope!r})) or install with alias='...'",
                             path=str(dest))
        if alias and alias != name:
            _rename(pkg / TOML_NAME, alias)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(pkg, dest)
    if load:
        (runtime or get_default_runtime()).add_package(dest)
    return dest


def _rename(toml: Path, new: str) -> None:
    """Set `[package] name` of an lllm.toml to `new` (only that line; comments and layout stay)."""
    text = toml.read_text(encoding="utf-8")
    pattern = re.compile(r'(^\[package\][^\[]*?^\s*name\s*=\s*)(["\']).*?\2', re.M | re.S)
    changed, n = pattern.subn(lambda m: f'{m.group(1)}"{new}"', text, count=1)
    if n != 1:
        raise ConfigError(f"{toml}: no `name = \"...\"` line in its [package] table to rename", path=str(toml))
    toml.write_text(changed, encoding="utf-8")
    read_package_toml(toml)  # still valid


def list_packages(scope: str | None = None) -> list[dict[str, Any]]:
    """The installed packages: `[{"name", "version", "scope", "path"}]`, project ones first.

    Args:
        scope: "user" or "project" (default: both).
    """
    out = []
    for where in ([scope] if scope else ["project", "user"]):
        folder = _scope_dir(where)
        if not folder.is_dir():
            continue
        for d in sorted(folder.iterdir()):
            toml = d / TOML_NAME
            if not toml.is_file():
                continue
            try:
                spec = read_package_toml(toml)
                name, version = spec.package.name, spec.package.version
            except ConfigError:
                name, version = d.name, "?"
            out.append({"name": name, "version": version, "scope": where, "path": str(d)})
    return out


def remove_package(name: str, *, scope: str | None = None) -> Path:
    """Delete an installed package (by its name or its folder's); returns the folder removed.

    Raises:
        UsageError: no installed package of that name (in that scope).
    """
    for entry in list_packages(scope):
        if name in (entry["name"], Path(entry["path"]).name):
            path = Path(entry["path"])
            shutil.rmtree(path)
            return path
    where = f"in scope {scope!r}" if scope else "for the project or the user"
    raise UsageError(f"no installed package {name!r} {where}; `lllm pkg list` shows them", name=name)
