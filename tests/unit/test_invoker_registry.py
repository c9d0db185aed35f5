"""The invoker registry: build_invoker, register_invoker (class or dotted path), override()."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

import lllm.invokers as invokers
from lllm.errors import ConfigError
from lllm.invokers import BaseInvoker, ScriptedInvoker, build_invoker, known_invokers, override, register_invoker
from lllm.invokers.base import InvokeRequest, InvokeResult

USER = [{"role": "user", "content": "ping"}]


class EchoInvoker(BaseInvoker):
    """Answers with the last message, prefixed."""

    name = "echo"

    def __init__(self, *, prefix: str = "echo: ", retry: Any = None) -> None:
        super().__init__(retry=retry)
        self.prefix = prefix

    def _call_once(self, request: InvokeRequest) -> InvokeResult:
        return InvokeResult(content=self.prefix + request.messages[-1]["content"], model=request.model)


NOT_AN_INVOKER = object()


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved = dict(invokers._registry)
    yield
    invokers._registry.clear()
    invokers._registry.update(saved)
    assert invokers._overrides == [], "an override() leaked out of a test"


def test_builtins_are_known() -> None:
    assert {"litellm", "scripted", "function"} <= set(known_invokers())


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_invoker({"invoker": "openai-direct"})
    text = str(info.value)
    assert "unknown invoker 'openai-direct'" in text
    for name in ("function", "litellm", "scripted"):
        assert repr(name) in text
    assert "register_invoker" in text and info.value.key == "invoker"


def test_bad_config_shapes() -> None:
    with pytest.raises(ConfigError, match="is a dict"):
        build_invoker(["scripted"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`invoker` must be a name"):
        build_invoker({"invoker": 3})


def test_default_and_string_config() -> None:
    assert type(build_invoker()).__name__ == "LiteLLMInvoker"
    assert type(build_invoker({})).__name__ == "LiteLLMInvoker"
    assert isinstance(build_invoker("scripted"), ScriptedInvoker)


def test_register_by_class_with_options() -> None:
    register_invoker("echo", EchoInvoker)
    inv = build_invoker({"invoker": "echo", "prefix": ">> ", "max_retries": 0})
    assert isinstance(inv, EchoInvoker) and inv.retry.max_retries == 0
    r = inv.call(USER, model="m")
    assert r.content == ">> ping" and r.attempts == 1
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['prefx'\].*'prefix'"):
        build_invoker({"invoker": "echo", "prefx": "x"})


def test_register_by_dotted_path_resolves_on_first_use() -> None:
    register_invoker("echo2", f"{__name__}:EchoInvoker")
    assert invokers._registry["echo2"] == f"{__name__}:EchoInvoker"
    assert isinstance(build_invoker({"invoker": "echo2"}), EchoInvoker)
    assert invokers._registry["echo2"] is EchoInvoker
    register_invoker("echo3", f"{__name__}.EchoInvoker")  # module.attr also works
    assert isinstance(build_invoker("echo3"), EchoInvoker)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
        (f"{__name__}:Missing", "has no attribute 'Missing'"),
        (f"{__name__}:NOT_AN_INVOKER", "not a BaseInvoker subclass"),
    ],
)
def test_bad_dotted_paths_fail_at_build_with_a_clear_error(path: str, match: str) -> None:
    register_invoker("broken", path)
    with pytest.raises(ConfigError, match=match):
        build_invoker({"invoker": "broken"})


def test_register_rejects_bad_targets_and_silent_replacement() -> None:
    with pytest.raises(ConfigError, match="not a BaseInvoker subclass"):
        register_invoker("x", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a dotted path"):
        register_invoker("x", "EchoInvoker")
    with pytest.raises(ConfigError, match="non-empty string"):
        register_invoker("", EchoInvoker)
    with pytest.raises(ConfigError, match="'scripted' is already registered"):
        register_invoker("scripted", EchoInvoker)
    register_invoker("echo", EchoInvoker)
    register_invoker("echo", EchoInvoker)  # the same target again is fine
    register_invoker("scripted", EchoInvoker, replace=True)
    assert isinstance(build_invoker({"invoker": "scripted"}), EchoInvoker)


def test_override_returns_the_invoker_everywhere_nests_and_restores() -> None:
    outer = ScriptedInvoker(["outer"])
    inner = ScriptedInvoker(["inner"])
    with override(outer) as got:
        assert got is outer
        assert build_invoker({"invoker": "litellm"}) is outer
        assert build_invoker({"invoker": "no-such-thing"}) is outer  # the config is not even looked at
        with override(inner):
            assert build_invoker() is inner
            seen: list[BaseInvoker] = []
            t = threading.Thread(target=lambda: seen.append(build_invoker({"invoker": "litellm"})))
            t.start()
            t.join()
            assert seen == [inner]  # bcall's worker threads see it too
        assert build_invoker() is outer
    assert type(build_invoker()).__name__ == "LiteLLMInvoker"


def test_override_restores_after_an_exception_and_checks_its_argument() -> None:
    inv = ScriptedInvoker([])
    with pytest.raises(RuntimeError):
        with override(inv):
            raise RuntimeError("boom")
    assert invokers._overrides == []
    with pytest.raises(ConfigError, match="takes an invoker instance"):
        with override(ScriptedInvoker):  # type: ignore[arg-type]
            pass


def test_lazy_exports() -> None:
    from lllm.invokers import FunctionInvoker, LiteLLMInvoker

    assert FunctionInvoker.name == "function" and LiteLLMInvoker.name == "litellm"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        invokers.Nope  # noqa: B018
    assert sorted(invokers.__all__) == invokers.__all__
