"""The example of docs/scaling.md runs as written, in a fresh process that joins the test cluster through
$LLLM_RAY_ADDRESS (from a folder holding a copy of examples/basic, where it writes its runs.db)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_the_scaling_guide_example_runs_on_the_cluster(ray_cluster: Any, tmp_path: Path) -> None:
    from lllm.logging import sqlite_store

    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "scaling.md").read_text(), flags=re.S)
    shutil.copytree(ROOT / "examples" / "basic", tmp_path / "examples" / "basic")
    env = {**os.environ, "LLLM_RAY_ADDRESS": ray_cluster.address}
    out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # the example's one line (Ray may add lines of its workers' output, as it does by default, around it)
    assert "['positive', 'negative', 'neutral', 'positive']" in out.stdout.splitlines(), out.stdout[-3000:]
    store = sqlite_store(tmp_path / "runs.db", readonly=True)
    rows = store.query("SELECT state, tags, metadata, model_calls FROM sessions ORDER BY task_index")
    assert [(r["state"], json.loads(r["tags"]), r["model_calls"]) for r in rows] == [
        ("ok", {"env": "cluster"}, 1)] * 4
    workers = {node.node_id for node in ray_cluster.workers}
    assert {json.loads(r["metadata"])["ray"]["node"] for r in rows} <= workers  # never the driver's (head) node
