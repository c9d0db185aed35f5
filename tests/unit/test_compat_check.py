"""scripts/compat-check's parts, on pages and scripts of our own (the lllm-core mirror is not in CI).

The scripted model must answer what a format asks for, the page reader must apply its documented rule
(files, illustrative blocks, fragments, prerequisites, implied imports), and the worker must run a script
against our lllm through the fork server with that model in place of the provider.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    """scripts/compat/<name>.py under a name of its own (scripts/ is not a package; keep sys.path clean)."""
    spec = importlib.util.spec_from_file_location(f"compat_{name}", REPO / "scripts" / "compat" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


model = _load("model")
names = _load("names")
pages = _load("pages")


class Review(BaseModel):
    title: str
    score: float
    tags: list[str]
    verdict: bool | None = None


def test_model_calls_the_first_tool_once_then_answers() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                         "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "days", "unit"]}}}]
    first = model.answer([{"role": "user", "content": "weather?"}], tools)
    assert first["content"] is None
    assert first["tool_calls"][0]["name"] == "lookup"
    assert first["tool_calls"][0]["arguments"] == {"city": "Paris", "days": 2, "unit": "c"}
    after = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None},
             {"role": "tool", "content": "sunny"}]
    assert model.answer(after, tools)["tool_calls"] == []


def test_model_answers_json_that_validates_against_the_schema() -> None:
    step = model.answer([{"role": "user", "content": "review it"}], None, Review.model_json_schema())
    Review.model_validate_json(step["content"])  # raises if it does not fit
    assert json.loads(model.answer([{"role": "user", "content": "x"}], None, {})["content"])


def test_model_answers_the_tags_and_code_blocks_the_prompt_asks_for() -> None:
    system = "Answer with <plan>...</plan> and <risk>...</risk>, code in a ```python block; say <DONE> at the end."
    first = model.answer([{"role": "system", "content": system}, {"role": "user", "content": "go"}])["content"]
    assert "<plan>example</plan>" in first and "<risk>example</risk>" in first
    assert "```python\nprint(2 + 2)\n```" in first
    assert "<DONE>" not in first  # a first reply does the work ...
    again = [{"role": "system", "content": system}, {"role": "user", "content": "go"},
             {"role": "assistant", "content": first}, {"role": "user", "content": "more"}]
    assert "<DONE>" in model.answer(again)["content"]  # ... a later one may say it is done


PAGE = '''
# A page

```toml
[package]
name = "demo"
```

```python
# prompts/hello.py
from lllm import Prompt
hello = Prompt(path="hello", prompt="Hi")
```

```python
import json
config = {"a": 1}
```

```python
print(json.dumps(config))
```

```python
Agent(..., name="x")
```

```python
print(undefined_thing)
```

```python
class Base(ABC):
    @abstractmethod
    def run(self) -> Dialog: ...
```

```python
@dataclass
class Registered:
    n: int = 1
```

```python
print("later")
```
'''


def test_page_rule_files_prerequisites_fragments_and_implied_imports() -> None:
    implied = pages.implied_imports("from lllm.core.dialog import Dialog, Message\n")
    jobs = {j.index: j for j in pages.page_jobs("p.md", PAGE, implied)}
    assert jobs[1].status == "file" and jobs[1].missing == ["prompts/hello.py"]
    assert jobs[2].status == "run" and jobs[2].files.keys() == {"lllm.toml", "prompts/hello.py"}
    assert jobs[3].prereqs == [2] and "config = {" in jobs[3].code  # json and config come from block 2
    assert jobs[4].status == "illustrative"
    assert jobs[5].status == "fragment" and jobs[5].missing == ["undefined_thing"]
    assert jobs[6].status == "run"
    assert jobs[6].implied == ["from abc import ABC", "from abc import abstractmethod", "from lllm import Dialog"]
    compile(jobs[6].code, "snippet.py", "exec")
    assert jobs[8].prereqs == [7]  # a decorated class registers by side effect: later blocks run after it


def test_examples_are_read_from_the_readme_commands() -> None:
    readme = "```bash\npython examples/a.py\ncd examples/svc\npython service.py --demo\npython service.py\n```\n"
    tree = {"examples/a.py", "examples/svc/service.py"}
    jobs = pages.example_jobs(readme, tree, lambda p: 'DB = "/tmp/demo.db"' if p.endswith("a.py") else "")
    assert [(j.script, j.cwd, j.argv) for j in jobs] == [
        ("examples/a.py", ".", []), ("examples/svc/service.py", "examples/svc", ["--demo"])
    ]
    assert jobs[0].exclusive == ["/tmp/demo.db"]


def test_names_scan_follows_instances_and_keywords() -> None:
    code = (
        "from lllm import Agent, Tactic\nfrom lllm.logging import sqlite_store\n"
        "store = sqlite_store('x.db', partition='p')\nstore.list_sessions(limit=3)\n"
        "agent = Agent(name='a', model='m')\nmsg = agent.respond()\nprint(msg.content)\n"
    )
    found = names.scan(code)
    assert {"lllm.logging.sqlite_store(partition=)", "lllm.LogStore.list_sessions(limit=)", "lllm.Agent(name=)",
            "lllm.Agent.respond", "lllm.Message.content"} <= found


SCRIPT = '''
from pydantic import BaseModel
from lllm import Agent, Prompt
from lllm.core.prompt import tool
from lllm.invokers import build_invoker

class Answer(BaseModel):
    city: str
    degrees: float

@tool(description="Temperature of a city")
def temperature(city: str) -> str:
    return f"{city}: 21"

agent = Agent(name="a", system_prompt=Prompt(path="s", prompt="Use tools.", function_list=[temperature]),
              model="gpt-4o", llm_invoker=build_invoker({"invoker": "litellm"}))
agent.open("chat")
agent.receive("How warm is it?")
print("TOOL", agent.respond().content)
agent.receive_prompt(Prompt(path="j", prompt="Now reply as JSON.", format=Answer))
print("DATA", Answer(**agent.respond().parsed["output"]))
'''


def test_worker_runs_a_script_against_our_lllm_with_the_scripted_model(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(SCRIPT)
    job = {"id": "t", "script": str(script), "cwd": str(tmp_path), "argv": [], "timeout": 60,
           "log": str(tmp_path / "out.txt"), "env": {"HOME": str(tmp_path)}}
    late = dict(job, id="late", script=str(tmp_path / "sleep.py"), timeout=1, log=str(tmp_path / "late.txt"))
    (tmp_path / "sleep.py").write_text("import time\ntime.sleep(30)\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compat" / "worker.py"), "--side", "ours"],
        input=json.dumps(job) + "\n" + json.dumps(late) + "\n", capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "LLLM_ALLOW_MODEL_REQUESTS": "0"},
    )
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    output = (tmp_path / "out.txt").read_text()
    assert answers[0]["rc"] == 0, output
    assert "TOOL Scripted answer." in output and "DATA city='Paris' degrees=2.0" in output
    assert answers[1]["timed_out"] is True and answers[1]["seconds"] < 10
