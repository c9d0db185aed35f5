"""Packages and kept sandboxes: each figure printed next to a baseline measured in the same run, as a ratio.

    .venv/bin/python bench/bench_packages.py

- `pip install` of a wheel through the host's relay (`packages="index"`, a local index on loopback) vs the same
  wheel installed from the workspace with `--no-index` (the relay's cost);
- `pip install` with packages off (fails at once, with the message) vs starting `python3 -c pass` in the sandbox;
- `DockerSandbox.attach(name)` to a live kept sandbox vs a cold start;
- `derived_image([...])` when the image exists (the cache) vs `ensure_image()` when it exists.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lllm.sandbox import DockerSandbox, SandboxLimits  # noqa: E402
from lllm.sandbox.image import ensure_image  # noqa: E402
from package_index import LocalIndex, make_wheel  # noqa: E402

LIMITS = SandboxLimits(memory="512m")


def row(name: str, value: float, baseline_name: str, baseline: float) -> None:
    print(f"{name:<44} {value * 1000:9.1f} ms   vs {baseline_name:<38} {baseline * 1000:9.1f} ms   "
          f"ratio {value / baseline:7.2f}")


def timed(fn: object, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    import os

    image = ensure_image(log=lambda line: print(line, file=sys.stderr))
    tmp = Path(tempfile.mkdtemp(prefix="bench-packages-"))
    wheels = [make_wheel(tmp, f"bench-pkg{i}", "1.0", {f"bench_pkg{i}/__init__.py": "X = 1\n"}) for i in range(5)]
    index = LocalIndex(tmp / "index", wheels)
    os.environ["LLLM_PACKAGE_INDEX"] = index.simple
    os.environ["PIP_INDEX_URL"] = index.simple
    try:
        with DockerSandbox(image=image, limits=LIMITS, packages="index", cell_timeout=120) as sb:
            for i in range(5):
                sb.upload(wheels[i], wheels[i].name)
            relayed, local = [], []
            for i in range(5):
                started = time.perf_counter()
                out = sb.run_cell(f"!pip install -q --no-deps bench-pkg{i}")
                relayed.append(time.perf_counter() - started)
                assert "ERROR" not in out.stdout, out.stdout
                sb.run_cell(f"!pip uninstall -q -y bench-pkg{i}")
                started = time.perf_counter()
                out = sb.run_cell(f"!pip install -q --no-deps --no-index ./{wheels[i].name}")
                local.append(time.perf_counter() - started)
                assert "ERROR" not in out.stdout, out.stdout
            row("pip install through the relay p50", statistics.median(relayed),
                "pip install --no-index (workspace) p50", statistics.median(local))
        with DockerSandbox(image=image, limits=LIMITS) as sb:
            off = timed(lambda: sb.run_cell("!pip install requests"), 5)
            bare = timed(lambda: sb.run_cell("!python3 -c pass"), 5)
            row("pip install, packages off (fails) p50", off, "!python3 -c pass p50", bare)

        cold = []
        for _ in range(3):
            started = time.perf_counter()
            with DockerSandbox(image=image, limits=LIMITS) as sb:
                cold.append(time.perf_counter() - started)
        name = f"bench-attach-{os.getpid()}"
        kept = DockerSandbox(image=image, limits=LIMITS, name=name)
        kept.start()
        try:
            kept.detach()
            attaches = []
            for _ in range(5):
                started = time.perf_counter()
                again = DockerSandbox.attach(name)
                attaches.append(time.perf_counter() - started)
                again.detach()
            row("DockerSandbox.attach(name) p50", statistics.median(attaches), "cold start p50",
                statistics.median(cold))
        finally:
            DockerSandbox.attach(name).close()

        from lllm.sandbox.derived import derived_image

        derived_image(["bench-pkg0"], base=image)  # built once (or already there)
        cached = timed(lambda: derived_image(["bench-pkg0"], base=image), 5)
        base = timed(ensure_image, 5)
        row("derived_image() when it exists p50", cached, "ensure_image() when it exists p50", base)
    finally:
        index.close()


if __name__ == "__main__":
    main()
