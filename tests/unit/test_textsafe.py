"""`lllm._textsafe`: control characters from sandboxes are made visible, never dropped, on every printing path."""

from __future__ import annotations

import argparse
import io
import json
import sys
import types

import pytest

from lllm import cli
from lllm._textsafe import SafeWriter, neutralise, safe_writer

HOSTILE = "a\x1b]52;c;eA==\x07b\rc\x00d\x7fe\x9bf\u202eg\ud800h"


def test_controls_become_visible_text_and_newline_and_tab_stay() -> None:
    assert neutralise(HOSTILE) == "a^[]52;c;eA==^Gb^Mc^@d^?e\\u009bf\\u202eg\\ud800h"
    assert neutralise("line\n\tindented é ✓ 漢字 👩\u200d💻") == "line\n\tindented é ✓ 漢字 👩\u200d💻"
    once = neutralise(HOSTILE)
    assert neutralise(once) == once  # applying it twice changes nothing
    assert not any(ord(ch) < 0x20 and ch not in "\n\t" or 0x7F <= ord(ch) <= 0x9F for ch in once)
    once.encode("utf-8")  # no lone surrogate left to break the stream


def test_json_output_keeps_its_meaning() -> None:
    data = {"s": "x\x9by\u202ez"}
    assert json.loads(neutralise(json.dumps(data, ensure_ascii=False))) == data


def test_safe_writer_neutralises_every_write_and_delegates_the_rest() -> None:
    buf = io.StringIO()
    out = safe_writer(buf)
    assert safe_writer(out) is out and isinstance(out, SafeWriter)
    print("x\x1b[2J", "y\x07", file=out)
    out.writelines(["\x9b", "ok\n"])
    out.flush()
    assert buf.getvalue() == "x^[[2J y^G\n\\u009bok\n"
    assert not out.isatty() and out.writable()


def test_every_cli_command_prints_through_it(monkeypatch: pytest.MonkeyPatch,
                                             capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    group = types.ModuleType("lllm_test_hostile_cli")

    def register(sub: argparse._SubParsersAction) -> None:
        def loud(args: argparse.Namespace) -> int:
            print("out\x1b]0;title\x07")
            print("err\x1b]52;c;eA==\x07", file=sys.stderr)
            return 0

        sub.add_parser("loud", help="print controls", description="Print controls.").set_defaults(func=loud)

    group.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lllm_test_hostile_cli", group)
    monkeypatch.setattr(cli, "OPTIONAL_GROUPS", ("lllm_test_hostile_cli",))
    before = sys.stdout
    assert cli.main(["loud"]) == 0
    assert sys.stdout is before  # restored after the command
    out, err = capsysbinary.readouterr()
    assert out == b"out^[]0;title^G\n" and err == b"err^[]52;c;eA==^G\n"
