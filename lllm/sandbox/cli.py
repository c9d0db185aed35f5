"""`lllm sandbox build|gc|ls|rm`: the sandbox commands, registered into the main CLI by `register(subparsers)`."""

from __future__ import annotations

import argparse
import json
import sys

from lllm.errors import LLLMError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sandbox` command group (build, gc, ls) to the main parser's subparsers."""
    parser = subparsers.add_parser("sandbox", help="build sandbox images, list, remove and garbage-collect sandboxes",
                                   description="Manage lllm's Docker sandboxes.")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    add_arguments(parser.add_subparsers(dest="sandbox_command", metavar="COMMAND"))


def add_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Add `build`, `gc`, `ls` and `rm` to a subparsers object (the `sandbox` group's)."""
    build = subparsers.add_parser(
        "build", help="build the sandbox image, or one with extra packages (--pip, --requirements)",
        description="Build the sandbox image lllm-sandbox:<content hash> from Dockerfile.sandbox and sandbox/ and "
                    "tag it lllm-sandbox:latest (for your own `FROM lllm-sandbox:latest` Dockerfiles). Quick "
                    "and does nothing when it exists. Without a registry the base is built with debootstrap "
                    "(sandbox/build_base.sh, needs root, about two minutes). With --pip or --requirements: build "
                    "an image FROM it with those packages, their wheels fetched by this host's pip (its index "
                    "and settings); cached by content; prints the image name to give as DockerSandbox(image=...) "
                    "or `sandbox: {image: ...}`.")
    build.add_argument("--base-image", help="FROM image of the sandbox image (default: local lllm base, "
                                            "python:3.12-slim, debootstrap)")
    build.add_argument("--rebuild", action="store_true", help="build even when the image exists")
    build.add_argument("--base-only", action="store_true", help="only build the debootstrap base image")
    build.add_argument("--pip", nargs="+", metavar="PACKAGE", default=[],
                       help="requirements to install into a derived image (`scipy`, `'rich>=13'`)")
    build.add_argument("--requirements", "-r", metavar="FILE", help="a requirements.txt to install (with or "
                                                                     "without --pip)")
    build.add_argument("--tag", metavar="NAME", help="also tag the derived image NAME (repo[:tag]) and print that")
    build.add_argument("--quiet", "-q", action="store_true", help="print only the image name")
    build.set_defaults(func=cmd_build)

    gc = subparsers.add_parser(
        "gc", help="remove sandbox containers and session directories whose owner process is gone",
        description="Remove sandbox containers (in any state, including created) whose owner process on this "
                    "host is gone, and their session directories.")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--all-hosts", action="store_true", help="also remove containers owned by other hosts")
    gc.set_defaults(func=cmd_gc)

    ls = subparsers.add_parser("ls", help="list sandboxes: id, name, scope, status, age, idle time, owner, image",
                               description="List every lllm sandbox container on the Docker engine: its id, the "
                                           "name of a kept one, its scope (agent, tactic, session), status, age, "
                                           "time since its last use, its owner process (or 'gone') and image.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_ls)

    rm = subparsers.add_parser("rm", help="remove sandboxes of yours by name or id",
                               description="Remove sandbox containers of this user, with their session directories "
                                           "and records, by the name of a kept sandbox (sandbox_session) or by id.")
    rm.add_argument("sandboxes", nargs="+", metavar="ID", help="a name or sandbox id (`lllm sandbox ls`)")
    rm.set_defaults(func=cmd_rm)


def _fail(exc: LLLMError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def cmd_build(args: argparse.Namespace) -> int:
    """`lllm sandbox build`."""
    from lllm.sandbox.image import build_base, ensure_image, tag_latest

    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    derived = bool(args.pip or args.requirements)
    if args.tag and not derived:
        print("error: --tag names an image with packages: give --pip or --requirements", file=sys.stderr)
        return 2
    try:
        if args.base_only:
            name = build_base(say=say)
        else:
            name = ensure_image(base_image=args.base_image, rebuild=args.rebuild and not derived, log=say)
            tag_latest(name)
            if derived:
                from lllm.sandbox.derived import derived_image

                name = derived_image(args.pip, requirements_file=args.requirements, base=name, tag=args.tag,
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
        why = report.reasons.get(name)
        print(f"{verb} container {name}" + (f" ({why})" if why else ""))
    for path in report.session_dirs:
        print(f"{verb} session directory {path}")
    print(f"{verb} {len(report.containers)} container(s) and {len(report.session_dirs)} session "
          f"director{'y' if len(report.session_dirs) == 1 else 'ies'}; kept {report.kept} with a live owner")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """`lllm sandbox ls`."""
    from lllm.sandbox.reaper import format_age, list_sandboxes

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
    print(f"{'ID':<13} {'NAME':<16} {'SCOPE':<8} {'STATUS':<8} {'AGE':>6} {'IDLE':>6} {'OWNER':<8} IMAGE")
    for row in rows:
        owner = "gone" if row["orphan"] else row["owner_pid"]
        print(f"{row['id']:<13} {row['sandbox_name'] or '-':<16} {row['scope']:<8} {row['status']:<8} "
              f"{format_age(row['age_s']):>6} {format_age(row['idle_s']):>6} {owner:<8} {row['image']}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """`lllm sandbox rm`."""
    from lllm.sandbox.reaper import remove_sandbox

    status = 0
    for sandbox in args.sandboxes:
        try:
            name = remove_sandbox(sandbox)
        except LLLMError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"removed {sandbox} ({name})")
    return status


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
