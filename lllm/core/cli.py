"""`lllm pkg export|install|list|remove`: share lllm packages as zips (see `lllm.core.packages`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def _cmd_export(args: argparse.Namespace) -> int:
    from lllm.core.packages import export_package

    print(export_package(args.name, args.output, bundle_deps=args.bundle_deps))
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    from lllm.core.packages import install_package

    print(install_package(args.zip, alias=args.alias, scope=args.scope, load=False))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from lllm.core.packages import list_packages

    found = list_packages(args.scope)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no installed packages (lllm pkg install PACKAGE.zip installs one)")
        return 0
    width = max(len(p["name"]) for p in found)
    for p in found:
        print(f"{p['name'].ljust(width)}  {p['version']:<10} {p['scope']:<8} {p['path']}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    from lllm.core.packages import remove_package

    print(f"removed {remove_package(args.name, scope=args.scope)}")
    return 0


def register(subparsers: Any) -> None:
    """Add `lllm pkg ...` to the `lllm` command."""
    pkg = subparsers.add_parser("pkg", help="share lllm packages as zips",
                                description="Export a package as a zip; install, list and remove installed ones "
                                            "(~/.lllm/packages for the user, lllm_packages/ for the project).")
    pkg.set_defaults(func=lambda a: (pkg.print_help(), 0)[1])
    sub = pkg.add_subparsers(dest="pkg_command", metavar="COMMAND")
    scope_help = "'user' (~/.lllm/packages) or 'project' (lllm_packages/ beside the project's lllm.toml)"

    p = sub.add_parser("export", help="zip a package", description="Zip a loaded package (the one in or above the "
                       "working folder, its dependencies, or an installed one) for others to install.")
    p.add_argument("name", help="the package's name (its [package] name)")
    p.add_argument("output", help="the zip to write (.zip is added when missing)")
    p.add_argument("--bundle-deps", action="store_true", help="put its dependencies in the zip too")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("install", help="install a package zip", description="Install a package zip for the user "
                       "or the project; lllm loads installed packages by itself.")
    p.add_argument("zip", help="the package zip")
    p.add_argument("--alias", help="install under this name (its namespace changes to it)")
    p.add_argument("--scope", choices=("user", "project"), default="user", help=f"where: {scope_help}")
    p.set_defaults(func=_cmd_install)

    p = sub.add_parser("list", help="list installed packages", description="List installed packages: name, "
                       "version, scope and folder.")
    p.add_argument("--scope", choices=("user", "project"), help=f"only this scope: {scope_help}")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("remove", help="remove an installed package", description="Delete an installed package's "
                       "folder.")
    p.add_argument("name", help="the package's name (or its folder's)")
    p.add_argument("--scope", choices=("user", "project"), help=f"only look here: {scope_help}")
    p.set_defaults(func=_cmd_remove)
