"""Watching cells while they run (issue 11): `lllm run` shows what an agent's cell prints as it prints it, through
the terminal-text sanitiser; `TerminalEcho` and the watchers; FakeSandbox hands its answers to the callbacks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lllm.sandbox import FakeSandbox
from lllm.sandbox.commands import CommandResult
from lllm.sandbox.live import CellEvent, TerminalEcho, watch_cells

ROOT = Path(__file__).resolve().parents[2]
CELL = "import time\\nprint('first', flush=True)\\ntime.sleep(1)\\nprint('second \\x1b]52;c;aGk=\\x07')"


def _package(tmp_path: Path) -> Path:
    """A package whose scripted analyst runs one cell on a local kernel: print, sleep 1 s, print."""
    research = ROOT / "examples" / "research"
    (tmp_path / "configs").mkdir()
    (tmp_path / "lllm.toml").write_text(
        f'[package]\nname = "livecheck"\nversion = "0.1.0"\n[prompts]\npaths = ["{research / "prompts"}"]\n'
        f'[configs]\npaths = ["configs"]\n[tactics]\npaths = ["{research / "tactics"}"]\n')
    (tmp_path / "configs" / "live.yaml").write_text(
        "tactic_type: research\ninvoker: scripted\ninvoker_config:\n  steps:\n    - content: null\n"
        "      tool_calls:\n        - name: run_python\n"
        f'          arguments: {{code: "{CELL}"}}\n    - "all done"\n'
        "agent_configs:\n  - name: research_analyst\n    model_name: gpt-4o\n    system_prompt: You analyse.\n"
        "    proxy: {exec_env: interpreter, sandbox: {backend: local}}\n")
    return tmp_path


def _run_cli(args: list[str]) -> tuple[list[tuple[float, str]], str, int]:
    """Run `lllm ...` and timestamp each stderr line as it arrives."""
    proc = subprocess.Popen([sys.executable, "-m", "lllm.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stderr))  # type: ignore[union-attr]
    reader.start()
    out = proc.stdout.read()
    code = proc.wait(120)
    reader.join(10)
    return lines, out, code


def test_lllm_run_shows_a_running_cell_live_and_neutralised(tmp_path: Path) -> None:
    package = _package(tmp_path)
    lines, out, code = _run_cli(["run", "live", "--package", str(package), "--task", "go", "--db",
                                 str(tmp_path / "runs.db")])
    assert code == 0 and out == "all done\n", (out, lines)
    text = [line for _, line in lines]
    first = next(i for i, line in enumerate(text) if line == "[research_analyst] | first\n")
    second = next(i for i, line in enumerate(text) if line.startswith("[research_analyst] | second"))
    assert text[second] == "[research_analyst] | second ^[]52;c;aGk=^G\n"  # the escape is shown, not obeyed
    assert lines[second][0] - lines[first][0] >= 0.8, lines  # the first line came while the cell slept
    assert text[first - 1].startswith("[research_analyst] >>> import time")

    quiet, out, code = _run_cli(["run", "live", "--package", str(package), "--task", "go", "--no-live", "--db",
                                 str(tmp_path / "runs.db")])
    assert code == 0 and not any("| first" in line for _, line in quiet)


def test_terminal_echo_prefixes_lines_keeps_a_budget_and_says_how_it_ended() -> None:
    out = io.StringIO()
    echo = TerminalEcho(out, max_lines=3)
    events = [CellEvent("start", "sb1", "alice", text="for i in range(9):\n    print(i)"),
              CellEvent("stdout", "sb1", "alice", text="0\n1"), CellEvent("stdout", "sb1", "alice", text="\n2\n3\n"),
              CellEvent("display", "sb1", "alice", data={"image/png": "...", "text/plain": "<Figure>"}),
              CellEvent("end", "sb1", "alice", text="error")]
    for event in events:
        echo(event)
    assert out.getvalue().splitlines() == [
        "[alice] >>> for i in range(9): ...", "[alice] | 0", "[alice] | 1", "[alice] | 2",
        "[alice] ... (2 more lines not shown here)", "[alice] [cell ended: error]"]


def test_watchers_nest_and_a_broken_one_changes_nothing() -> None:
    outer: list[str] = []

    def broken(event: CellEvent) -> None:
        raise RuntimeError("a watcher's bug")

    with FakeSandbox(lambda code: "out") as sb, watch_cells(lambda e: outer.append(e.kind)):
        with watch_cells(broken):
            assert sb.run_cell("x").stdout == "out"
        sb.run_cell("y")
    assert outer == ["start", "stdout", "end"] * 2


def test_fake_sandbox_hands_its_answers_to_the_callbacks() -> None:
    got: list[str] = []
    with FakeSandbox(lambda code: f"ran {code}", command_handler=lambda argv: CommandResult(
            status="error", exit_code=2, stderr="no\n", argv=argv)) as sb:
        assert sb.run_cell("1", on_stdout=got.append).stdout == "ran 1"
        res = sb.run_command(["ls", "x"], on_stderr=got.append)
    assert got == ["ran 1", "no\n"] and res.exit_code == 2 and sb.commands == [["ls", "x"]]
    with FakeSandbox() as bare, pytest.raises(Exception, match="runs no commands"):
        bare.run_command("ls")
