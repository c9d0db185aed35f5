"""`lllm sandbox build|gc|ls|rm|save|resume`: the sandbox commands, registered into the main CLI by `register(subparsers)`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lllm.errors import LLLMError

if TYPE_CHECKING:
    from lllm.sandbox._docker import Engine


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sandbox` command group (build, gc, ls, rm, save, resume) to the main parser's subparsers."""
    parser = subparsers.add_parser("sandbox", help="build sandbox images, list, remove and garbage-collect sandboxes",
                                   description="Manage lllm's Docker sandboxes.")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    add_arguments(parser.add_subparsers(dest="sandbox_command", metavar="COMMAND"))


def add_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Add `build`, `gc`, `ls`, `rm`, `save` and `resume` to a subparsers object (the `sandbox` group's)."""
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
    add_engine_options(gc, "to clean")
    gc.set_defaults(func=cmd_gc)

    ls = subparsers.add_parser("ls", help="list sandboxes: id, name, scope, status, age, idle time, owner, image",
                               description="List every lllm sandbox container on the Docker engine: its id, the "
                                           "name of a kept one, its scope (agent, tactic, session), status, age, "
                                           "time since its last use, its owner process (or 'gone'; PID@HOST for "
                                           "an owner on another machine, which this one cannot check) and image.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    add_engine_options(ls, "to list")
    ls.set_defaults(func=cmd_ls)

    rm = subparsers.add_parser("rm", help="remove sandboxes of yours by name or id",
                               description="Remove sandbox containers of this user, with their session directories "
                                           "and records, by the name of a kept sandbox (sandbox_session) or by id. "
                                           "One another user or a process on another machine started (an engine "
                                           "several machines use) is refused, the others named are removed, and "
                                           "the exit status is 1.")
    rm.add_argument("sandboxes", nargs="+", metavar="ID", help="a name or sandbox id (`lllm sandbox ls`)")
    rm.add_argument("--force", action="store_true", help="remove them even when another user or another machine's "
                                                         "process started them (whose owner may still use them)")
    add_engine_options(rm, "to remove them from")
    rm.set_defaults(func=cmd_rm)

    save = subparsers.add_parser(
        "save", help="save a kept sandbox's variables and workspace files to a snapshot file; it goes on running",
        description="Attach to a running sandbox of yours (by the name of a kept sandbox or its id), write a "
                    "snapshot of its kernel's variables (pickled with dill inside the sandbox) and its workspace "
                    "files to PATH, and let go of it: it goes on running, unchanged. Waits for a running cell to "
                    "end. Prints what was saved and the variables that could not be, with the reason.")
    save.add_argument("sandbox", metavar="ID", help="a name or sandbox id (`lllm sandbox ls`)")
    save.add_argument("path", metavar="PATH", help="the snapshot file to write (replaced if it exists)")
    add_engine_options(save, "the sandbox runs on")
    save.set_defaults(func=cmd_save)

    resume = subparsers.add_parser(
        "resume", help="start a kept sandbox restored from a snapshot file (`lllm sandbox save`, sb.save())",
        description="Start a new sandbox in the snapshot's image and limits, restore its variables (unpickled "
                    "inside the sandbox, never on this host) and workspace files, and keep it running under a "
                    "name (scope session) for DockerSandbox.attach(NAME), a tactic call with "
                    "sandbox_session=NAME, `lllm sandbox ls` and `lllm sandbox rm NAME`. Prints its name and id "
                    "and the variables that were not restored (the first cell run in it tells the model too). "
                    "A snapshot that is corrupt, from another image or too large for the limits is refused "
                    "before anything starts.")
    resume.add_argument("path", metavar="PATH", help="a snapshot file")
    resume.add_argument("--name", metavar="NAME", help="the kept sandbox's name (default: resumed-<random>)")
    resume.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                        help="remove the sandbox after this long without use (default: kept until `lllm sandbox rm`)")
    resume.add_argument("--allow-other-image", action="store_true",
                        help="resume in the current build of the snapshot's image even if it was rebuilt since")
    add_engine_options(resume, "to start the sandbox on (it must have the snapshot's image)")
    resume.set_defaults(func=cmd_resume)


def add_engine_options(parser: argparse.ArgumentParser, what: str) -> None:
    """`--docker-host URL` and `--tls CERT_DIR` on a command that works on a Docker engine (`engine_options`)."""
    parser.add_argument("--docker-host", metavar="URL", help=f"the Docker engine {what} (tcp://HOST:2376, "
                                                             "ssh://...; default: $DOCKER_HOST, else the local one)")
    parser.add_argument("--tls", metavar="CERT_DIR", help="TLS to that engine: a folder with ca.pem, cert.pem, "
                                                          "key.pem (default: $DOCKER_TLS_VERIFY/$DOCKER_CERT_PATH)")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """`docker_host=` and `tls=` for DockerSandbox from `--docker-host`/`--tls`. With `--docker-host` and no
    `--tls`, TLS comes from $DOCKER_TLS_VERIFY/$DOCKER_CERT_PATH, as the `docker` command takes them."""
    tls: Any = args.tls
    if tls is None and args.docker_host and os.environ.get("DOCKER_TLS_VERIFY") not in (None, "", "0"):
        tls = True
    return {"docker_host": args.docker_host, "tls": tls}


def engine_from_args(args: argparse.Namespace) -> Engine | None:
    """The engine `--docker-host`/`--tls` name; None: the environment's.

    Raises:
        UsageError: a malformed address, or a TLS folder without ca.pem, cert.pem, key.pem.
    """
    from lllm.sandbox._docker import engine_from

    return engine_from(**engine_options(args))


def _engine_flags(args: argparse.Namespace) -> str:
    """The same options again, for the commands a message suggests (' --docker-host ... --tls ...', or '')."""
    return "".join(f" {flag} {shlex.quote(value)}" for flag, value in (("--docker-host", args.docker_host),
                                                                        ("--tls", args.tls)) if value)


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
        report = reap(dry_run=args.dry_run, all_hosts=args.all_hosts, engine=engine_from_args(args))
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
        engine = engine_from_args(args)
        rows = list_sandboxes(engine)
    except LLLMError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no sandbox containers" + (f" on the Docker engine at {engine.describe()}" if engine else ""))
        return 0
    owners = [_owner(row) for row in rows]
    width = max(8, *(len(owner) for owner in owners))
    print(f"{'ID':<13} {'NAME':<16} {'SCOPE':<8} {'STATUS':<8} {'AGE':>6} {'IDLE':>6} {'OWNER':<{width}} IMAGE")
    for row, owner in zip(rows, owners):
        print(f"{row['id']:<13} {row['sandbox_name'] or '-':<16} {row['scope']:<8} {row['status']:<8} "
              f"{format_age(row['age_s']):>6} {format_age(row['idle_s']):>6} {owner:<{width}} {row['image']}")
    return 0


def _owner(row: dict[str, Any]) -> str:
    """The OWNER column: the pid, `gone`, or PID@HOST for a process on another machine (not checked from here)."""
    if row["orphan"]:
        return "gone"
    if row.get("owner_here", True):
        return str(row["owner_pid"])
    from lllm.sandbox._rundir import machine_name

    return f"{row['owner_pid']}@{machine_name(str(row['owner_host']))}"


def cmd_rm(args: argparse.Namespace) -> int:
    """`lllm sandbox rm`."""
    from lllm.sandbox import _docker
    from lllm.sandbox.reaper import remove_sandbox

    try:
        engine = engine_from_args(args)
        _docker.client(engine)  # an engine given by address is asked once here, not once per sandbox
    except LLLMError as exc:
        return _fail(exc)
    status = 0
    for sandbox in args.sandboxes:
        try:
            name = remove_sandbox(sandbox, engine, force=args.force, cli_flags=_engine_flags(args))
        except LLLMError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"removed {sandbox} ({name})")
    return status


def cmd_save(args: argparse.Namespace) -> int:
    """`lllm sandbox save ID PATH`."""
    from lllm.sandbox.docker import DockerSandbox

    try:
        sandbox = DockerSandbox.attach(args.sandbox, **engine_options(args))
    except LLLMError as exc:
        return _fail(exc)
    try:
        info = sandbox.save(args.path)
    except LLLMError as exc:
        return _fail(exc)
    finally:
        sandbox.detach()  # it goes on running for its owner, or for the next attach
    meta = info.meta
    print(f"saved sandbox {meta.sandbox_id} to {info.path} in {info.seconds:.1f} s: {len(meta.saved)} "
          f"variable{'s' if len(meta.saved) != 1 else ''} ({meta.namespace_bytes / 1e6:.1f} MB), workspace files "
          f"({meta.workspace_bytes / 1e6:.1f} MB)")
    for name, why in sorted(meta.skipped.items()):
        print(f"not saved: {name} ({why})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """`lllm sandbox resume PATH`."""
    import secrets

    from lllm.sandbox.docker import DockerSandbox

    name = args.name or f"resumed-{secrets.token_hex(4)}"
    try:
        sandbox = DockerSandbox.resume(args.path, name=name, scope="session", idle_timeout=args.idle_timeout,
                                       allow_other_image=args.allow_other_image, **engine_options(args))
    except LLLMError as exc:
        return _fail(exc)
    sandbox_id, restored, missing = sandbox.sandbox_id, sandbox.restored_names, dict(sandbox.not_restored)
    sandbox.detach()  # kept: its record carries the notice for the first cell, whichever process runs it
    print(f"resumed {args.path} as sandbox {sandbox_id} named {name!r}: {len(restored)} "
          f"variable{'s' if len(restored) != 1 else ''} and the workspace files restored")
    for var, why in sorted(missing.items()):
        print(f"not restored: {var} ({why})")
    engine = _engine_for_config(args)
    where = "".join(f", {key}={value!r}" for key, value in engine.items())
    print(f"attach with DockerSandbox.attach({name!r}{where}); `lllm sandbox rm {shlex.quote(name)}"
          f"{_engine_flags(args)}` removes it")
    call = f"a tactic call with sandbox_session={name!r} (`lllm run ... --sandbox-session {shlex.quote(name)}`)"
    if not engine:
        print(f"{call} runs in it when its agents' config has `proxy: {{sandbox: {{scope: session}}}}`")
        return 0
    keys = " and ".join(engine)
    print(f"{call} runs in it when its agents' config has this block (without {keys} there, the tactic looks for "
          f"{name!r} on the default engine, $DOCKER_HOST or this machine's, and starts a new, empty one):")
    print("\n".join(f"  {line}" for line in _session_block(engine)))
    return 0


def _engine_for_config(args: argparse.Namespace) -> dict[str, Any]:
    """`--docker-host`/`--tls` as `docker_host`/`tls` settings that mean the same from any directory (an absolute
    certificate folder); empty without them."""
    options = {key: value for key, value in engine_options(args).items() if value is not None}
    if isinstance(options.get("tls"), str):
        options["tls"] = str(Path(options["tls"]).expanduser().absolute())
    return options


def _session_block(engine: dict[str, Any]) -> list[str]:
    """The agents' `proxy:` config block for a tactic to run in a kept sandbox on that engine (YAML lines; JSON
    scalars are YAML too, so an address or folder with odd characters stays one string)."""
    return ["proxy:", "  sandbox:", "    scope: session"] + [f"    {key}: {json.dumps(value)}"
                                                            for key, value in engine.items()]


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
