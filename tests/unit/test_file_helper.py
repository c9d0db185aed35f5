"""The file helper's protocol: only the line with the call's nonce is believed; the helper script itself, run
here with this host's Python on a scratch workspace (the container runs the same text as `python3 -I -c`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lllm.errors import SandboxFileError
from lllm.sandbox import files


def test_only_the_line_with_the_nonce_is_the_reply() -> None:
    forged = b'{"ok": true, "files": ["forged"]}\nnoise\n'
    out = forged + b'n0nce {"ok": true, "files": ["real.txt"]}\n' + forged
    assert files.parse_reply(out, b"", "n0nce", op="ls").files == ["real.txt"]
    with pytest.raises(SandboxFileError, match="no valid answer"):
        files.parse_reply(forged, b"Traceback ...", "n0nce", op="ls")
    with pytest.raises(SandboxFileError, match="2 tagged replies"):
        files.parse_reply(b'n0nce {"ok": true}\nn0nce {"ok": false}\n', b"", "n0nce", op="put")
    with pytest.raises(SandboxFileError, match="malformed"):
        files.parse_reply(b'n0nce {"ok": true, "files": [1], "extra": 2}\n', b"", "n0nce", op="ls")
    with pytest.raises(SandboxFileError, match="malformed"):
        files.parse_reply(b'n0nce {"ok": true, "files": ["' + b"x" * 5000 + b'"]}\n', b"", "n0nce", op="ls")


def helper(tmp_path: Path, op: str, **args: str) -> dict:
    req = files.helper_request(op, "abc", workspace=str(tmp_path / "ws"), run_dir=str(tmp_path / "run"), **args)
    proc = subprocess.run([sys.executable, "-I", "-c", files.CONTAINER_SCRIPT], input=req, capture_output=True,
                          timeout=30)
    return files.parse_reply(proc.stdout, proc.stderr, "abc", op=op).model_dump()


def test_the_helper_script_moves_lists_and_refuses(tmp_path: Path) -> None:
    ws, run = tmp_path / "ws", tmp_path / "run"
    ws.mkdir()
    run.mkdir()
    (run / "x1").write_bytes(b"payload")
    assert helper(tmp_path, "put", xfer="x1", rel="sub/a.txt")["ok"]
    assert (ws / "sub" / "a.txt").read_bytes() == b"payload" and not (run / "x1").exists()
    assert helper(tmp_path, "get", rel="sub/a.txt", xfer="x2")["ok"] and (run / "x2").read_bytes() == b"payload"
    os.mkfifo(ws / "fifo")
    (ws / "bad\udcffname").write_bytes(b"")  # not UTF-8: listed with a replacement character
    os.symlink("/etc", ws / "link")
    assert helper(tmp_path, "ls", rel=".")["files"] == ["bad\ufffdname", "fifo", "link", "sub/a.txt"]
    (run / "x3").write_bytes(b"y")
    for reply in (helper(tmp_path, "put", xfer="x3", rel="fifo"), helper(tmp_path, "get", rel="fifo", xfer="x4")):
        assert not reply["ok"] and "not a regular file" in reply["error"]
    reply = helper(tmp_path, "get", rel="link/passwd", xfer="x5")
    assert not reply["ok"] and "outside the workspace" in reply["error"]
    assert not helper(tmp_path, "nope")["ok"]
    assert json.loads(files.helper_request("ls", "n", workspace="/w", run_dir="/r", rel=".")) == {
        "op": "ls", "nonce": "n", "ws": "/w", "run": "/r", "rel": "."}
