"""`lllm test PATH`: a project's pytest suite in sandboxes; registered into the main CLI by `register`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `test` command to the main parser's subparsers."""
    parser = subparsers.add_parser(
        "test", help="run a project's pytest suite in sandboxes with no network",
        description="Copy the project at PATH into fresh sandboxes (no network, the sandbox's limits), run its "
                    "pytest suite there and print a report: each failure with its short traceback, the slowest "
                    "tests, the totals. The exit status is 0 only when every test passed; otherwise pytest's own "
                    "code (1 failed, 2 interrupted, 3 internal/setup error, 4 usage error, 5 no tests). "
                    "Arguments after -- go to pytest (lllm test PATH -- -k EXPR -x).")
    parser.add_argument("path", help="the project's folder (its tests are found by pytest, from there)")
    parser.add_argument("--shards", type=int, default=1,
                        help="split the tests across N sandboxes run at once (by the last run's durations)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--image", help="run in this image (it must have pytest); nothing is installed")
    where.add_argument("--requirements", metavar="FILE",
                       help="install these requirements instead of the project's requirements*.txt/pyproject")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds for the whole run (default 900); a shard still running then is ended")
    parser.add_argument("--test-timeout", type=float, default=None,
                        help="seconds one test may take (default: no limit but --timeout)")
    parser.add_argument("--json", metavar="FILE", help="write the whole report as JSON (lllm.ci.TestReport)")
    parser.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML")
    parser.add_argument("--durations-from", metavar="FILE",
                        help="split --shards by this earlier --json report (default: this path's last run)")
    # What follows `--` (and any option this command does not know) goes to pytest: lllm.cli hands it over as
    # args.extra_args (an argparse positional cannot follow the options reliably).
    parser.set_defaults(func=cmd_test, passes_extra_args=True)


def cmd_test(args: argparse.Namespace) -> int:
    from lllm.ci.render import render_text, to_junit
    from lllm.ci.runner import DEFAULT_TIMEOUT, run_tests

    extra = list(getattr(args, "extra_args", None) or [])
    report = run_tests(args.path, shards=args.shards, image=args.image, requirements=args.requirements,
                       pytest_args=extra, timeout=args.timeout or DEFAULT_TIMEOUT, test_timeout=args.test_timeout,
                       previous=args.durations_from,
                       log=lambda line: print(f"[lllm test] {line}", file=sys.stderr))
    if args.json:
        Path(args.json).write_text(report.model_dump_json(indent=1), encoding="utf-8")
    if args.junit:
        Path(args.junit).write_text(to_junit(report), encoding="utf-8")
    print(render_text(report))
    return report.exit_code
