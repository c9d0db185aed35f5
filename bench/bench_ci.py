"""`lllm test` benchmark: a generated project of 400 fast tests, each figure against a baseline measured in the
same run.

    .venv/bin/python bench/bench_ci.py [--rounds 3] [--tests 400]

- the host baseline: `python -m pytest -q -p no:cacheprovider` on the project, on this machine, no sandbox;
- `run_tests(shards=1)`: one fresh sandbox (start, copy, pytest, report, removal); its overhead over the host
  run (target <= 2 s), and the part of it that is a test sandbox's start and removal alone;
- `run_tests(shards=4)`: four sandboxes at once; its speed-up over one shard (on this 2-core machine).
Rounds are interleaved (host, 1 shard, 4 shards, ...) so that load from other work on the machine hits every
figure alike; the medians are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lllm.ci import run_tests  # noqa: E402
from lllm.ci._sandbox import TestSandbox  # noqa: E402
from lllm.sandbox.image import ensure_image  # noqa: E402


def generate(root: Path, tests: int, per_file: int = 20) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "shapes.py").write_text("def area(w, h):\n    return w * h\n")
    for start in range(0, tests, per_file):
        body = ["from shapes import area", ""]
        for i in range(start, min(tests, start + per_file)):
            body += [f"def test_area_{i}():", f"    assert area({i}, 2) == {2 * i}", ""]
        (root / "tests" / f"test_shapes_{start // per_file:03d}.py").write_text("\n".join(body))
    return root


def host_run(project: Path) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the host run failed:\n{done.stdout[-2000:]}")
    return elapsed


def sandbox_run(project: Path, shards: int, expected: int) -> float:
    started = time.monotonic()
    report = run_tests(project, shards=shards, previous={})
    elapsed = time.monotonic() - started
    if report.exit_code != 0 or report.totals["passed"] != expected:
        raise SystemExit(f"shards={shards}: exit {report.exit_code}, totals {report.totals}, {report.reason}")
    return elapsed


def start_and_remove() -> float:
    started = time.monotonic()
    with TestSandbox(cell_timeout=None):
        pass
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are printed)")
    parser.add_argument("--tests", type=int, default=400, help="how many tests the generated project has")
    args = parser.parse_args()
    ensure_image()
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as tmp:
        project = generate(Path(tmp) / "project", args.tests)
        host_run(project)  # warm the page cache and the host's imports
        host, one, four, bare = [], [], [], []
        for _ in range(args.rounds):
            host.append(host_run(project))
            one.append(sandbox_run(project, 1, args.tests))
            four.append(sandbox_run(project, 4, args.tests))
            bare.append(start_and_remove())
    h, s1, s4, b = (statistics.median(v) for v in (host, one, four, bare))
    cores = os.cpu_count()
    print(f"{args.tests} tests, {args.rounds} rounds, medians; {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"host: python -m pytest                 {h:7.2f} s   (baseline)")
    print(f"lllm test --shards 1                   {s1:7.2f} s   ratio {s1 / h:5.2f} vs host   overhead "
          f"{s1 - h:+.2f} s (target <= 2 s: {'met' if s1 - h <= 2 else 'NOT met'})")
    print(f"  of which a sandbox's start + removal {b:7.2f} s   ratio {b / (s1 - h) if s1 > h else 0:5.2f} of the overhead")
    print(f"lllm test --shards 4                   {s4:7.2f} s   ratio {s4 / h:5.2f} vs host   speed-up over 1 shard "
          f"{s1 / s4:5.2f}x")


if __name__ == "__main__":
    main()
