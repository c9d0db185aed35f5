"""compat-check's worker: runs snippets in one Python environment, each in a fresh forked process.

Started by scripts/compat-check with the interpreter of the side under test (lllm-core's venv, or ours):

    <venv>/bin/python scripts/compat/worker.py --side core|ours [--preload litellm] [--fresh]

It imports the heavy third-party modules named by --preload once (litellm costs seconds to import), then reads
one JSON job per line on stdin: `{"id", "script", "cwd", "argv", "env", "timeout", "log"}`. For each job it
forks; the child starts a new session, moves to `cwd`, sends stdout and stderr to `log`, puts the scripted
model in place of the provider (`install_core` / `install_ours`) and runs `script` as `__main__`, as
`python script argv...` would. The parent waits at most `timeout` seconds, kills the child's whole process
group when it is late, and answers one JSON line `{"id", "rc", "timed_out", "seconds"}`. The library under
test is never imported by the parent, so every snippet sees a first `import lllm`, with its own cwd and env.
With --fresh each job runs in a new interpreter instead of a fork (slower; a check that forking changes
nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model  # noqa: E402  (the scripted model, stdlib only)

sys.path.remove(HERE)


def _schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a `response_format` asks for; `{}` for plain JSON mode; None for text."""
    if response_format is None:
        return None
    if hasattr(response_format, "model_json_schema"):
        return response_format.model_json_schema()
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            return dict(response_format.get("json_schema", {}).get("schema") or {})
        if response_format.get("type") == "json_object":
            return {}
        if "properties" in response_format:
            return response_format
    return None


def install_core() -> None:
    """lllm-core calls `litellm.completion` / `litellm.responses`: answer through litellm's own mock_response.

    lllm-core binds them at import (`from litellm import completion as completion_api`), and nothing of
    lllm-core is imported yet, so replacing the attributes on the litellm module is enough. A release without
    litellm (0.2.x without its `native` extra) has no provider to replace.
    """
    try:
        import litellm
    except ImportError:
        return
    from litellm import ModelResponse

    real_completion, real_acompletion, real_responses = litellm.completion, litellm.acompletion, litellm.responses

    def mock_for(model_name: str, kwargs: dict[str, Any]) -> Any:
        step = model.answer(list(kwargs.get("messages") or []), kwargs.get("tools"), _schema(kwargs.get("response_format")))
        if not step["tool_calls"]:
            return step["content"]
        calls = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for c in step["tool_calls"]
        ]
        return ModelResponse(
            model=model_name,
            choices=[{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": calls}}],
        )

    def completion(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(("model", "messages"), args))
        kwargs["mock_response"] = mock_for(kwargs["model"], kwargs)
        return real_completion(**kwargs)

    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(("model", "messages"), args))
        kwargs["mock_response"] = mock_for(kwargs["model"], kwargs)
        return await real_acompletion(**kwargs)

    def responses(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(("input", "model"), args))
        items = kwargs.get("input")
        messages = [{"role": "user", "content": items}] if isinstance(items, str) else [
            i for i in (items or []) if isinstance(i, dict) and "role" in i
        ]
        if kwargs.get("instructions"):
            messages.insert(0, {"role": "system", "content": kwargs["instructions"]})
        kwargs["mock_response"] = model.answer(messages, None, _schema(kwargs.get("text_format")))["content"]
        return real_responses(**kwargs)

    litellm.completion, litellm.acompletion, litellm.responses = completion, acompletion, responses


def install_ours() -> None:
    """Ours builds every invoker through `lllm.invokers.build_invoker`; `override` makes it our FunctionInvoker."""
    from lllm.invokers import FunctionInvoker, override

    def responder(messages: list[dict[str, Any]], call: Any) -> dict[str, Any]:
        return model.answer(messages, call.tools, _schema(call.response_format))

    global _OVERRIDE
    _OVERRIDE = override(FunctionInvoker(responder))  # held: a collected context manager would undo itself
    _OVERRIDE.__enter__()


_OVERRIDE: Any = None
INSTALL = {"core": install_core, "ours": install_ours}


def _child(side: str, job: dict[str, Any], *, new_session: bool = True) -> int:
    """Runs in the forked child: set up like `python script argv...` would, then run the script."""
    import atexit
    import runpy
    import traceback

    if new_session:
        os.setsid()
    os.chdir(job["cwd"])
    os.environ.update(job["env"])
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = [job["script"], *job.get("argv", [])]
    sys.path[0] = os.path.dirname(os.path.abspath(job["script"]))
    rc = 0
    try:
        INSTALL[side]()
        runpy.run_path(job["script"], run_name="__main__")
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (report anything the script raised, like the interpreter does)
        traceback.print_exc()
        rc = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return rc


def _run_forked(side: str, job: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(side, job)
        finally:
            os._exit(code)
    deadline = started + float(job["timeout"])
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"rc": os.waitstatus_to_exitcode(status), "timed_out": False, "seconds": time.monotonic() - started}
        if time.monotonic() > deadline:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return {"rc": None, "timed_out": True, "seconds": time.monotonic() - started}
        time.sleep(0.01)


def _run_fresh(side: str, job: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    env = dict(os.environ, **job["env"])
    with open(job["log"], "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--side", side, "--one"], stdin=subprocess.PIPE, stdout=log, stderr=log, env=env, start_new_session=True
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        try:
            return {"rc": proc.wait(timeout=float(job["timeout"])), "timed_out": False, "seconds": time.monotonic() - started}
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            return {"rc": None, "timed_out": True, "seconds": time.monotonic() - started}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=sorted(INSTALL), required=True)
    parser.add_argument("--preload", action="append", default=[], help="module to import once, before forking")
    parser.add_argument("--fresh", action="store_true", help="a new interpreter per job instead of a fork")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # --fresh's child: one job, in-process
    args = parser.parse_args()
    if args.one:
        return _child(args.side, json.loads(sys.stdin.read()), new_session=False)  # started as a session leader
    for name in args.preload:
        try:
            __import__(name)
        except ImportError:
            pass  # the side has no such module (install_core says what that means)
    run = _run_fresh if args.fresh else _run_forked
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        result = run(args.side, job)
        result["id"] = job["id"]
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
