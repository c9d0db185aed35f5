"""The `lllm` command: every command has --help text, `lllm run` on the example package, `lllm logs
ls|show|cost`, one-line errors, optional command groups, and a start-up that loads no heavy library."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lllm import cli
from lllm.logging import sqlite_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"


def all_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += all_parsers(sub, (*path, name))
    return out


def test_every_command_has_help_text() -> None:
    parsers = all_parsers(cli.build_parser())
    names = {" ".join(p) for p, _ in parsers}
    assert {"run", "logs", "logs ls", "logs show", "logs cost"} <= names
    for path, parser in parsers:
        assert parser.description, f"`lllm {' '.join(path)}` has no description"
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, f"`lllm {' '.join(path)}` option {action.option_strings} has no help"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lllm") and "    run " in out and "    logs " in out


@pytest.fixture
def ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    db = tmp_path / "runs.db"
    status = cli.main(["run", "default", "--package", str(EXAMPLE), "--task", "I love it", "--task", "awful",
                       "--db", str(db), "--tag", "env=cli", "--workers", "1"])
    assert status == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["0\tpositive", "1\tnegative"]
    assert "2 ok, 0 failed" in out.err and str(db) in out.err
    return db


def test_run_then_logs_ls_show_cost(ran: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["logs", "ls", "--db", str(ran)]) == 0
    table = capsys.readouterr().out
    assert table.count("sentiment") == 2 and "ok" in table and '{"env": "cli"}' in table
    assert cli.main(["logs", "ls", "--db", str(ran), "--json", "--tag", "env=cli"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and {r["result"] for r in rows} == {"positive", "negative"}
    sid = rows[0]["id"]
    assert cli.main(["logs", "show", sid[:10], "--db", str(ran)]) == 0
    shown = capsys.readouterr().out
    assert f"session  {sid}" in shown and "model_call" in shown and "agent classifier:" in shown
    assert "assistant: <label>" in shown
    assert cli.main(["logs", "cost", "--db", str(ran), "--by", "tag:env"]) == 0
    cost = capsys.readouterr().out
    assert cost.splitlines()[1].startswith("cli") and "total $" in cost


def test_single_task_run_prints_result_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLLM_LOG_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "sentiment", "--package", str(EXAMPLE), "--task", "nice"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "positive" and "[sentiment] session" in out.err


def test_errors_are_one_line_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLLM_LOG_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["logs", "ls", "--db", str(tmp_path / "missing.db")]) == 1
    assert capsys.readouterr().err.startswith("lllm: error: no log database at")
    assert cli.main(["logs", "ls"]) == 1
    assert "pass --db PATH, set LLLM_LOG_DB" in capsys.readouterr().err
    assert cli.main(["run", "defualt", "--package", str(EXAMPLE), "--task", "x"]) == 1
    assert "Did you mean 'default'" in capsys.readouterr().err
    assert cli.main(["run", "default", "--package", str(EXAMPLE)]) == 1
    assert "no task" in capsys.readouterr().err


def test_db_from_environment_and_lllm_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "from_toml.db"
    store = sqlite_store(db)
    store.start_session("s1", tactic="t")
    store.close()
    (tmp_path / "lllm.toml").write_text('[package]\nname = "x"\n[logging]\ndb = "from_toml.db"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLLM_LOG_DB", raising=False)
    assert cli.main(["logs", "ls", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["s1"]
    monkeypatch.setenv("LLLM_LOG_DB", str(db))
    monkeypatch.chdir(Path("/"))
    assert cli.main(["logs", "ls", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_optional_groups_register_and_a_broken_one_does_not_break_the_rest(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    good = types.ModuleType("lllm_test_good_cli")

    def register(sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser("hello", help="say hello", description="Say hello.")
        p.set_defaults(func=lambda a: print("hello!") or 0)

    good.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lllm_test_good_cli", good)
    monkeypatch.setattr(cli, "OPTIONAL_GROUPS", ("lllm_test_good_cli", "lllm_test_missing_cli",
                                                 "lllm.core.no_such_cli"))
    assert cli.main(["hello"]) == 0
    out = capsys.readouterr()
    assert out.out == "hello!\n" and out.err == ""  # missing groups are silent


def test_startup_loads_no_heavy_library() -> None:
    code = ("import sys; from lllm.cli import build_parser; build_parser();"
            "print(sorted(m for m in ('litellm', 'docker', 'playwright', 'sqlite_utils') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_docs_batch_command_labels_every_task_right_with_many_workers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/cli.md's `lllm run` batch: the scripted steps belong to each task's call, not to one shared queue."""
    for attempt in range(5):
        status = cli.main(["run", "default", "--package", str(EXAMPLE), "--task", "I love it", "--task", "awful",
                           "--db", str(tmp_path / f"runs{attempt}.db"), "--workers", "8"])
        assert status == 0
        assert capsys.readouterr().out.splitlines() == ["0\tpositive", "1\tnegative"]
