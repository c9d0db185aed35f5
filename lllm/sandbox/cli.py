"""`lllm sandbox build|gc|ls`: the sandbox commands, registered into the main CLI by `register(subparsers)`."""

from __future__ import annotations

import argparse
import json
import sys

from lllm.errors import LLLMError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sandbox` command group (build, gc, ls) to the main parser's subparsers."""
    parser = subparsers.add_parser("sandbox", help="build the sandbox image, remove orphaned sandboxes, list them",
                                   description="Manage lllm's Docker sandboxes.")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    add_arguments(parser.add_subparsers(dest="sandbox_command", metavar="COMMAND"))


def add_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Add `build`, `gc` and `ls` to a subparsers object (the `sandbox` group's)."""
    build = subparsers.add_parser(
        "build", help="build the sandbox image (and its Debian base when no registry answers)",
        description="Build the sandbox image lllm-sandbox:<content hash> from Dockerfile.sandbox and sandbox/. "
                    "Quick and does nothing when it exists. Without a registry the base is built with "
                    "debootstrap (sandbox/build_base.sh, needs root, about two minutes).")
    build.add_argument("--base-image", help="FROM image (default: local lllm base, python:3.12-slim, debootstrap)")
    build.add_argument("--rebuild", action="store_true", help="build even when the image exists")
    build.add_argument("--base-only", action="store_true", help="only build the debootstrap base image")
    build.add_argument("--quiet", "-q", action="store_true", help="print only the image name")
    build.set_defaults(func=cmd_build)

    gc = subparsers.add_parser(
        "gc", help="remove sandbox containers and session directories whose owner process is gone",
        description="Remove sandbox containers (in any state, including created) whose owner process on this "
                    "host is gone, and their session directories.")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--all-hosts", action="store_true", help="also remove containers owned by other hosts")
    gc.set_defaults(func=cmd_gc)

    ls = subparsers.add_parser("ls", help="list sandbox containers with owner and state",
                               description="List every lllm sandbox container on the Docker engine.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_ls)


def _fail(exc: LLLMError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def cmd_build(args: argparse.Namespace) -> int:
    """`lllm sandbox build`."""
    from lllm.sandbox.image import build_base, ensure_image

    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    try:
        name = build_base(say=say) if args.base_only else ensure_image(base_image=args.base_image,
                                                                       rebuild=args.rebuild, log=say)
    except LLLMError as exc:
        return _fail(exc)
    print(name)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """`lllm sandbox gc`."""
    from lllm.sandbox.reaper import reap

    try:
        report = reap(dry_run=args.dry_run, all_hosts=args.all_hosts)
    except LLLMError as exc:
        return _fail(exc)
    verb = "would remove" if args.dry_run else "removed"
    for name in report.containers:
        print(f"{verb} container {name}")
    for path in report.session_dirs:
        print(f"{verb} session directory {path}")
    print(f"{verb} {len(report.containers)} container(s) and {len(report.session_dirs)} session "
          f"director{'y' if len(report.session_dirs) == 1 else 'ies'}; kept {report.kept} with a live owner")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """`lllm sandbox ls`."""
    from lllm.sandbox.reaper import list_sandboxes

    try:
        rows = list_sandboxes()
    except LLLMError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no sandbox containers")
        return 0
    print(f"{'NAME':<20} {'STATUS':<10} {'OWNER PID':<10} {'ORPHAN':<7} IMAGE")
    for row in rows:
        print(f"{row['name']:<20} {row['status']:<10} {row['owner_pid']:<10} {'yes' if row['orphan'] else 'no':<7} "
              f"{row['image']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m lllm.sandbox.cli ...` (the same commands without the main CLI)."""
    from lllm._textsafe import safe_stdio

    parser = argparse.ArgumentParser(prog="lllm sandbox")
    add_arguments(parser.add_subparsers(dest="sandbox_command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    with safe_stdio():  # container names, images and errors come from the engine: no terminal controls
        return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
