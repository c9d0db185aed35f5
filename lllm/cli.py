"""The `lllm` command: `lllm run`, `lllm logs ...`, and the command groups other parts of lllm register.

Start-up stays fast: only argparse and the small CLI modules load; a group's heavy libraries load when its
command runs. Groups of other rooms are found by module name (`lllm.sandbox.cli`, ...), each exposing
`register(subparsers)`; one that fails to load is reported on stderr and the rest still work.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from lllm.errors import ConfigError, LLLMError, UsageError

__all__ = ["build_parser", "main"]

OPTIONAL_GROUPS = (
    "lllm.core.cli", "lllm.sandbox.cli", "lllm.proxies.cli", "lllm.ci.cli", "lllm.tools.cli", "lllm.demo")
"""Modules that may add command groups (`register(subparsers)`), if they exist."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lllm")
    except PackageNotFoundError:
        return "unknown"


def _pick_config(runtime: Any, target: str) -> dict[str, Any]:
    from lllm.registry import suggest

    if target in runtime.configs:
        return runtime.get_config(target)
    if target in runtime.tactics:
        matches = []
        for name, path in sorted(runtime.configs.items()):
            if "::" in name:
                continue
            config = runtime.get_config(name)
            if config.get("tactic_type") == target:
                matches.append((name, config))
        if len(matches) == 1:
            return matches[0][1]
        if not matches:
            raise ConfigError(f"tactic {target!r} has no config in the loaded package (no config says "
                              f"tactic_type: {target}); write one in configs/", key=target)
        raise ConfigError(f"tactic {target!r} has several configs: {[n for n, _ in matches]!r}; name one of them",
                          key=target)
    names = [n for n in [*runtime.configs, *runtime.tactics] if "::" not in n]
    raise ConfigError(f"{target!r} is neither a config nor a tactic of the loaded package.{suggest(target, names)} "
                      f"Configs: {sorted(n for n in runtime.configs if '::' not in n)!r}", key=target)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseException):
        return f"ERROR {type(value).__name__}: {value}"
    dump = getattr(value, "model_dump_json", None)
    if dump is not None:
        return dump()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _cmd_run(args: argparse.Namespace) -> int:
    from lllm.core.runtime import build_tactic, get_default_runtime, load_package
    from lllm.logging.cli import parse_tags, resolve_db_path

    tasks = list(args.task or [])
    if args.tasks_file:
        text = Path(args.tasks_file).read_text(encoding="utf-8")
        loaded = json.loads(text) if text.lstrip().startswith("[") else [ln for ln in text.splitlines() if ln.strip()]
        tasks += loaded
    if not tasks:
        raise UsageError("no task: give --task TEXT (repeatable) or --tasks-file FILE")
    load_package(args.package, strict=True)
    runtime = get_default_runtime()
    config = _pick_config(runtime, args.target)
    store = None
    db = args.db
    if db is None:
        try:
            db = resolve_db_path(None, must_exist=False)
        except UsageError:
            db = None
    if db:
        from lllm.logging import sqlite_store

        store = sqlite_store(db)
    tactic = build_tactic(config, log_store=store)
    tags = parse_tags(args.tag)
    executor = None
    if args.ray is not None:
        from lllm.executors import RayExecutor

        # stdout is the results: the workers' output stays in Ray's logs
        executor = RayExecutor(address=args.ray, max_retries=args.ray_retries, log_to_driver=False)
    live = contextlib.ExitStack()
    if args.live:  # what the agents' cells print, on stderr while they run (the result stays alone on stdout)
        from lllm.sandbox.live import TerminalEcho, watch_cells

        live.enter_context(watch_cells(TerminalEcho()))
    extra = {"sandbox_session": args.sandbox_session} if args.sandbox_session else {}
    try:
        if executor is not None:
            return _run_batch(tactic, tasks, args, tags, store, executor, extra, one=len(tasks) == 1)
        if len(tasks) == 1:
            try:
                session = tactic(tasks[0], tags=tags, return_session=True, **extra)
            except LLLMError:  # main() prints the error itself; say where the failed session is recorded
                failed = tactic.last_session
                if failed is not None:
                    print(f"[{tactic.name}] session {failed.session_id[:12]}: FAILED"
                          + (f", logged to {store.path}" if store else ""), file=sys.stderr)
                raise
            print(_show(session.delivery))
            print(f"[{tactic.name}] session {session.session_id[:12]}: ${session.total_cost.cost:.6f}"
                  + (f", logged to {store.path}" if store else ""), file=sys.stderr)
            for line in _sandbox_lines(session.metadata):
                print(f"[{tactic.name}] {line}", file=sys.stderr)
            return 0
        return _run_batch(tactic, tasks, args, tags, store, None, extra, one=False)
    finally:
        if executor is not None:
            executor.close()
        live.close()
        if store is not None:
            store.close()


def _run_batch(tactic: Any, tasks: list[Any], args: argparse.Namespace, tags: dict[str, Any], store: Any,
               executor: Any, extra: dict[str, Any], *, one: bool) -> int:
    results = tactic.bcall(tasks, max_workers=args.workers, fail_fast=not args.keep_going, tags=tags,
                           executor=executor, **extra)
    if one:  # one task on a cluster: its result alone, as for a single call here
        print(_show(results[0]))
    else:
        for i, r in enumerate(results):
            print(f"{i}\t{_show(r)}")
    where = " on Ray" if executor is not None else ""
    print(f"[{tactic.name}] batch {results.batch_id}{where}: {len(results) - len(results.errors)} ok, "
          f"{len(results.errors)} failed, ${results.spent:.6f}" + (f", logged to {store.path}" if store else ""),
          file=sys.stderr)
    return 1 if results.errors else 0


def _sandbox_lines(metadata: dict[str, Any]) -> list[str]:
    """Where a call's notebooks were written, and the sandbox it kept (from its session's metadata)."""
    lines = []
    notebooks = metadata.get("notebooks")
    if isinstance(notebooks, dict):
        for agent, path in sorted(notebooks.items()):
            lines.append(f"notebook of {agent}: {path}")
    if metadata.get("sandbox_session"):
        lines.append(f"sandbox session {metadata['sandbox_session']!r} kept (`lllm sandbox ls`; "
                     f"`lllm sandbox rm {metadata['sandbox_session']}` removes it)")
    return lines


def _register_run(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run a tactic of the package on one or more tasks",
        description="Load the package (lllm.toml from --package, $LLLM_CONFIG or the working directory upward), "
                    "build the tactic of a config (or the one config of a tactic) and run it on the tasks: one "
                    "task is one call, several are a batch.")
    run.add_argument("target", help="a config name (configs/<name>.yaml) or a tactic name")
    run.add_argument("--task", action="append", help="a task (repeatable)")
    run.add_argument("--tasks-file", help="a file of tasks: a JSON list, or one task per line")
    run.add_argument("--package", help="the package's lllm.toml or folder")
    run.add_argument("--db", help="record the calls in this SQLite log (default: $LLLM_LOG_DB or [logging] db)")
    run.add_argument("--workers", type=int, default=8,
                     help="threads for a batch, or with --ray the tasks in flight on the cluster (default 8)")
    run.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a tag stored on every session")
    run.add_argument("--keep-going", action="store_true", help="in a batch, go on after a failed task")
    run.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run the tasks as Ray tasks: on the cluster whose head is ADDRESS (host:port), or, without "
                          "ADDRESS, on a local cluster started for this run (docs/scaling.md)")
    run.add_argument("--ray-retries", type=int, default=3, metavar="N",
                     help="with --ray: run a task again up to N times when its worker or node is lost (default 3)")
    run.add_argument("--no-live", dest="live", action="store_false",
                     help="do not show what the agents' code prints while it runs (on stderr, by default)")
    run.add_argument("--sandbox-session", metavar="ID",
                     help="the sandbox that agents with `sandbox: {scope: session}` use and keep for later runs "
                          "with the same ID (removed after its idle_timeout, or by `lllm sandbox rm ID`)")
    run.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The `lllm` argument parser with every command group registered."""
    parser = argparse.ArgumentParser(prog="lllm", description="lllm: language-model agents whose code runs in a "
                                     "real sandbox. `lllm COMMAND --help` explains each command.")
    parser.add_argument("--version", action="version", version=f"lllm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_run(sub)
    from lllm.logging.cli import register as register_logs

    register_logs(sub)
    for module_name in OPTIONAL_GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that part of lllm has no command group (yet)
            print(f"lllm: warning: the commands of {module_name} are unavailable: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - one broken group must not take the others down
            print(f"lllm: warning: the commands of {module_name} are unavailable: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `lllm` command; returns the exit status (errors of lllm print one line, status 1).

    An infrastructure failure (no Docker engine, no sandbox image, no Chromium) is such an error: the run
    ends with it and the command exits 1 with its message, it is never worked around by the model.

    Everything a command prints goes through `lllm._textsafe` (control characters made visible): sessions,
    logs and errors carry text from sandboxes, which must not drive the user's terminal.
    """
    from lllm._textsafe import safe_stdio

    with safe_stdio():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # only a command that passes them on takes more (`lllm test PATH -- PYTEST_ARGS`)
        if not getattr(args, "passes_extra_args", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra_args = extra[1:] if extra[0] == "--" else extra
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except LLLMError as exc:
        print(f"lllm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lllm logs show ... | head`: the reader left; say nothing more
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
