"""Seed lesson, "Putting It All Together", run as written in a copy of the example package.

The snippet is executed verbatim from inside the package folder (so `load_package()` finds its lllm.toml);
`my_tasks` is the one name it leaves to the reader. `configs/default.yaml` extends `configs/base.yaml` and runs
the sentiment tactic on the scripted model (four steps, one per task). Checked: discovery registered the
package, the config was merged with its base, every scripted step was used, and the log store holds one
session per task with its tags, tokens and honest cost ($0: the scripted model bills nobody).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"

SNIPPET = '''
from lllm import load_package, resolve_config, build_tactic
from lllm.logging import sqlite_store

# Bootstrap the project
load_package() # reads lllm.toml, discovers everything

# Build a production tactic
store = sqlite_store("./production.db")
config = resolve_config("default") # loads and merges configs/default.yaml
tactic = build_tactic(config, log_store=store)

# Run a batch with tags for observability
results = tactic.bcall(
    my_tasks,
    max_workers=20,
    tags={"version": "1.2", "env": "prod"},
)
'''

my_tasks = [
    "The battery lasts two full days. Fantastic!",
    "It broke after a week and support never answered.",
    "It arrived on Tuesday.",
    "Best purchase I made this year.",
]


def test_putting_it_all_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    monkeypatch.chdir(project)
    monkeypatch.delenv("LLLM_CONFIG", raising=False)
    namespace = {"my_tasks": my_tasks}

    exec(compile(SNIPPET, "seed-putting-together", "exec"), namespace)

    results, store, config, tactic = (namespace[k] for k in ("results", "store", "config", "tactic"))
    assert Counter(results) == Counter({"positive": 2, "negative": 1, "neutral": 1})
    tactic.llm_invoker.assert_complete()  # the four scripted steps, one per task
    assert tactic.name == "sentiment" and config["_config_path"] == str(project / "configs" / "default.yaml")
    assert config["global"]["model_name"] == "gpt-4o"  # merged from configs/base.yaml
    assert config["global"]["model_args"] == {"temperature": 0}
    assert (project / "production.db").is_file()

    sessions = store.list_sessions(tags={"version": "1.2", "env": "prod"}, limit=None)
    assert len(sessions) == len(my_tasks)
    assert sorted(s.task for s in sessions) == sorted(my_tasks)
    # the example runs on the scripted model: it bills nobody, and the log says which model answered
    assert all(s.state == "ok" and s.tactic == "sentiment" and s.cost == 0.0 for s in sessions)
    assert all(s.batch_id == results.batch_id for s in sessions)
    assert {r["model"] for r in store.query("SELECT model FROM model_calls")} == {"scripted"}
    (row,) = store.cost_summary(group_by="tag:version")
    assert row.group == "1.2" and row.sessions == 4 and row.cost == 0.0
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
