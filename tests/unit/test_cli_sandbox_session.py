"""`lllm run --sandbox-session` and the notebook paths `lllm run` prints and `lllm logs show` lists, on a small
package whose agent runs code in a local kernel (no Docker: the session scope is kept in the process)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from lllm import cli

TACTIC = '''
from lllm import Tactic


class Counter(Tactic):
    name = "cli_counter"
    agent_group = ["counter"]

    def call(self, task, **kwargs):
        agent = self.agents["counter"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content
'''


@pytest.fixture
def package(tmp_path: Path) -> Any:
    root = tmp_path / "pkg"
    (root / "configs").mkdir(parents=True)
    (root / "tactics").mkdir()
    (root / "lllm.toml").write_text('[package]\nname = "clicounter"\n[configs]\npaths = ["configs"]\n'
                                    '[tactics]\npaths = ["tactics"]\n')
    (root / "tactics" / "counter.py").write_text(TACTIC)
    (root / "configs" / "counter.yaml").write_text(textwrap.dedent(f"""
        tactic_type: cli_counter
        invoker: scripted
        invoker_config:
          scripts:
            first: [{{tool_calls: [{{name: run_python, arguments: {{code: "n = 41"}}}}]}}, "set"]
            second: [{{tool_calls: [{{name: run_python, arguments: {{code: "print(n + 1)"}}}}]}}, "read"]
        workdir: {tmp_path / 'runs'}
        agent_configs:
          - name: counter
            model_name: gpt-4o
            system_prompt: You count.
            proxy: {{activate_proxies: [], sandbox: {{backend: local, scope: session}}}}
        """))
    yield root
    from lllm.tools._shared_sandbox import close_session_sandboxes

    close_session_sandboxes()


def test_run_keeps_the_session_sandbox_and_prints_the_notebooks(package: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    common = ["--package", str(package), "--db", str(db), "--sandbox-session", "cli-demo"]
    assert cli.main(["run", "counter", "--task", "first", *common]) == 0
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "notebook of counter:" in ln]
    notebook = Path(line.split("notebook of counter: ", 1)[1])
    assert notebook.name == "counter.ipynb" and notebook.exists()
    assert "sandbox session 'cli-demo' kept" in err
    assert cli.main(["run", "counter", "--task", "second", *common]) == 0  # the same sandbox: n is still there
    out = capsys.readouterr()
    assert out.out.strip() == "read"
    from lllm.logging import sqlite_store

    store = sqlite_store(str(db), readonly=True)
    (session,) = [s for s in store.list_sessions() if s.task == "second"]
    cell = [r for r in store.load_session(session.id).records if r.kind == "tool_call"][0]
    assert cell.result.strip() == "42"
    store.close()
    assert cli.main(["logs", "show", session.id, "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert f"notebook counter: {tmp_path / 'runs' / session.id / 'counter.ipynb'}" in shown
    assert "sandbox  session 'cli-demo'" in shown


def test_run_without_a_session_id_says_how_to_give_one(package: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "counter", "--task", "first", "--package", str(package)]) == 1
    assert "--sandbox-session" in capsys.readouterr().err
