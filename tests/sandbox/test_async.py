"""The async sandboxes (issue 11): the same contract awaited, on the same cell loop; many sandboxes' cells at once
from one event loop, without a thread per waiting cell and without stalling the loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from lllm.sandbox import SandboxLimits
from lllm.sandbox.asynchronous import AsyncDockerSandbox, AsyncLocalSandbox

LIMITS = SandboxLimits(memory="256m", pids=128, workspace_size="16m")


async def _loop_lag(stop: asyncio.Event, worst: list[float]) -> None:
    """How late a 10 ms sleep wakes up, at worst: a blocked loop shows here."""
    while not stop.is_set():
        t0 = time.monotonic()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], time.monotonic() - t0 - 0.01)


@pytest.mark.docker
def test_a_hundred_cells_on_ten_sandboxes_from_one_loop(sandbox_image: str) -> None:
    async def main() -> tuple[list[Any], float, float, int]:
        sandboxes = [AsyncDockerSandbox(image=sandbox_image, limits=LIMITS, cell_timeout=60) for _ in range(10)]
        await asyncio.gather(*(sb.start() for sb in sandboxes))
        try:
            stop, worst = asyncio.Event(), [0.0]
            watcher = asyncio.ensure_future(_loop_lag(stop, worst))
            pieces: list[str] = []

            async def collect(text: str) -> None:  # a coroutine callback is awaited
                await asyncio.sleep(0)
                pieces.append(text)

            t0 = time.monotonic()
            results = await asyncio.gather(*(
                sandboxes[i % 10].run_cell(f"import time\ntime.sleep(0.3)\nvalue_{i} = {i} * 2\nprint(value_{i})",
                                           on_stdout=collect) for i in range(100)))
            wall = time.monotonic() - t0
            stop.set()
            await watcher
            # state stayed in each kernel: sandbox k ran the cells i with i % 10 == k
            kept = await asyncio.gather(*(sb.run_cell(f"value_{k + 90}") for k, sb in enumerate(sandboxes)))
            return results + kept, wall, worst[0], len(pieces)
        finally:
            await asyncio.gather(*(sb.close() for sb in sandboxes))

    results, wall, lag, pieces = asyncio.run(main())
    cells, kept = results[:100], results[100:]
    assert all(r.status == "ok" and r.stdout == f"{i * 2}\n" for i, r in enumerate(cells)), [r.text for r in cells]
    assert [r.result for r in kept] == [str((k + 90) * 2) for k in range(10)]
    assert pieces == 100
    # 10 cells of 0.3 s in a row per sandbox: 3 s when the sandboxes run at once, 30 s when they take turns
    assert wall < 15, wall
    assert lag < 1.0, lag  # nothing blocked the loop for long


def test_async_local_sandbox_streams_to_coroutines_in_order_and_runs_commands() -> None:
    async def main() -> Any:
        async with AsyncLocalSandbox(cell_timeout=20) as sb:
            seen: list[tuple[float, str]] = []
            t0 = time.monotonic()

            async def note(text: str) -> None:
                await asyncio.sleep(0.01)  # slow callbacks still get the pieces in order
                seen.append((time.monotonic() - t0, text))

            res = await sb.run_cell("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)",
                                    on_stdout=note)
            ended = time.monotonic() - t0
            out: list[str] = []
            cmd = await sb.run_command("echo a; sleep 0.5; echo b", on_stdout=out.append)
            return res, seen, ended, cmd, out

    res, seen, ended, cmd, out = asyncio.run(main())
    assert res.ok and [t for _, t in seen] == ["0\n", "1\n", "2\n"]
    assert ended - seen[0][0] >= 0.8, (seen, ended)
    assert cmd.ok and cmd.stdout == "a\nb\n" and out == ["a\n", "b\n"]


def test_a_cancelled_cell_is_interrupted_and_the_sandbox_goes_on() -> None:
    async def main() -> Any:
        async with AsyncLocalSandbox(cell_timeout=60) as sb:
            await sb.run_cell("kept = 'yes'")
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sb.run_cell("import time\nwhile True: time.sleep(0.05)"), 0.5)
            after = await sb.run_cell("kept")
            return after, time.monotonic() - t0

    after, took = asyncio.run(main())
    assert after.result == "'yes'" and took < 10, took  # the endless cell was interrupted, not waited for


def test_a_pending_notice_reaches_the_next_awaited_cell_once() -> None:
    # what a resume could not restore is told to the next cell (BaseSandbox.add_notice), awaited or not
    async def main() -> Any:
        async with AsyncLocalSandbox(cell_timeout=20) as sb:
            sb.sandbox.add_notice("'conn' was not restored: a socket cannot be pickled")
            first = await sb.run_cell("print(1)")
            second = await sb.run_cell("print(2)")
            return first, second

    first, second = asyncio.run(main())
    assert first.notices[0].startswith("'conn' was not restored") and "'conn' was not restored" in first.text
    assert first.stdout == "1\n" and not any("restored" in n for n in second.notices)
