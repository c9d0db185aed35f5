"""The public surface: `lllm.__all__` matches what resolves, and `import lllm` stays light."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

import lllm
import lllm.errors as errors


def test_every_exported_name_resolves() -> None:
    missing = [name for name in lllm.__all__ if getattr(lllm, name, None) is None]
    assert missing == []


def test_all_is_sorted_and_unique() -> None:
    assert lllm.__all__ == sorted(set(lllm.__all__))


def test_unknown_attribute_is_a_plain_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lllm.Nope  # noqa: B018


def test_import_lllm_pulls_in_no_heavy_library() -> None:
    code = (
        "import sys, json, lllm, lllm.core, lllm.errors, lllm.executors, lllm.core.executor;"
        "print(json.dumps(sorted(m for m in ('litellm','docker','playwright','jupyter_client','zmq','sqlite_utils','ray') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("cls", [getattr(errors, n) for n in errors.__all__])
def test_errors_pickle_and_keep_their_facts(cls: type[errors.LLLMError]) -> None:
    err = cls("something went wrong: 'x'", detail=3)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == "something went wrong: 'x'"
    assert back.detail == 3
    assert isinstance(back, errors.LLLMError)
    assert hash(back)
