"""Benchmark: the explorer's session page for a session of 200 cells (code, 30 lines of output each, an image in
every tenth, a CALL_API with params and answer each), against Datasette's own table page of the same 200 cell
rows, both served by the same app in the same run (Datasette's ASGI test client: no network, no browser).

    .venv/bin/python bench/bench_explorer.py [--cells 200] [--repeat 5]

Prints the best time of each and the ratio. Target: the session page within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lllm.core.trace import ApiCallRecord, CellRecord  # noqa: E402
from lllm.logging import sqlite_store  # noqa: E402
from lllm.logging.explorer import build_explorer  # noqa: E402

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f80f0000010101005b3b5b8b0000000049454e44ae426082")).decode()


def make_log(path: Path, cells: int) -> None:
    with sqlite_store(path) as store:
        store.start_session("big", tactic="analysis", task="crunch the numbers")
        for i in range(cells):
            code = "\n".join(f"x{j} = {i} * {j}" for j in range(12)) + f"\nprint(x1, {i})"
            store.record(CellRecord(session_id="big", agent="analyst", sandbox_id="sb", code=code, status="ok",
                                    duration_s=0.01, output="\n".join(f"line {k} of cell {i}" for k in range(30)),
                                    images=[{"mime": "image/png", "data": PNG}] if i % 10 == 0 else []))
            store.record(ApiCallRecord(session_id="big", proxy="fmp", endpoint="price", status="ok",
                                       params='{"symbol": "AAPL"}', answer="[" + ",".join(["1.5"] * 200) + "]"))
        store.end_session("big", state="ok", result="done")


def best(ds: object, path: str, repeat: int) -> float:
    async def run() -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = await ds.client.get(path)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, (path, response.status_code)
        return min(times)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.db"
        make_log(db, args.cells)
        ds = build_explorer(db)
        baseline = best(ds, f"/big/cells?session_id=big&_size={args.cells}", args.repeat)
        page = best(ds, "/-/lllm/session/big", args.repeat)
    print(f"session of {args.cells} cells (+{args.cells} CALL_APIs), best of {args.repeat}:")
    print(f"  Datasette's table page of its {args.cells} cell rows: {baseline * 1000:7.0f} ms  (baseline, 1.00)")
    print(f"  the explorer's session page:                  {page * 1000:7.0f} ms  ({page / baseline:.2f} of baseline)"
          f"  target <= 1000 ms: {'met' if page <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
