"""Issue 16: what forks and snapshots must not give code in the sandbox on the HOST.

- A fork must not multiply the API budget: every branch kernel gets a gateway session of its own (own token,
  same limits), but its CALL_APIs are charged to the budgets of the agent's one `ProxyManager`, the parent's.
- A snapshot is code (a pickle may run anything when loaded): the host never unpickles one; a hostile pickle
  runs only inside the sandbox it is resumed in.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lllm.core.agent import Agent
from lllm.core.config import AgentBuildContext
from lllm.invokers.scripted import ScriptedInvoker
from lllm.sandbox.docker import DockerSandbox
from lllm.sandbox.snapshot import META
from lllm.tools.code import attach

pytestmark = pytest.mark.docker

LOOP = """
import json
ok, refused = 0, []
for i in range({n}):
    try:
        CALL_API("fmp/quote", {{"symbol": "AAPL"}})
        ok += 1
    except CallAPIError as e:
        refused.append(e.type)
print(json.dumps({{"ok": ok, "refused": sorted(set(refused))}}))
"""


def quote_route(path: str, q: dict, h: dict, body: Any) -> tuple[int, Any]:
    return 200, [{"symbol": "AAPL", "price": 201.08}]


def test_forks_share_the_parents_api_budget(sandbox_image: str, fake_api, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    api = fake_api(quote_route)
    monkeypatch.setenv("FMP_API_KEY", "host-only-key-0123456789")
    monkeypatch.setenv("FMP_BASE_URL", api.url + "/stable")
    agent = Agent(name="brancher", system_prompt="You fork.", model="scripted", llm_invoker=ScriptedInvoker([]))
    ctx = AgentBuildContext(session_id="forkbudget", tracer=lambda r: None, workdir_base=tmp_path)
    tools = attach(agent, {"activate_proxies": ["fmp"], "source": "live", "timeout": 60.0,
                           "budgets": {"fmp": {"calls": 10}},
                           "sandbox": {"backend": "docker", "image": sandbox_image}}, ctx)

    def run(dialog: str, n: int) -> dict:
        return json.loads(str(tools.run(LOOP.format(n=n), dialog=dialog)).strip().splitlines()[-1])

    try:
        agent.open("base")
        assert run("base", 4) == {"ok": 4, "refused": []}
        agent.fork("base", "one")
        agent.fork("base", "two")
        branches = [tools.dialogs.kernels["one"], tools.dialogs.kernels["two"]]
        assert all(b.kind == "docker-branch" for b in branches)
        tokens = {(tools.sandbox.session_dir / f"{b.gateway_name}.token").read_text() for b in branches}
        assert len(tokens | {tools.gateway_session.token}) == 3  # each kernel has a session (and token) of its own
        # before the fix (a budget per branch session) each branch would spend 10 more calls
        assert run("one", 10) == {"ok": 6, "refused": ["ApiBudgetExceeded"]}
        assert run("two", 10) == {"ok": 0, "refused": ["ApiBudgetExceeded"]}
        assert run("base", 1) == {"ok": 0, "refused": ["ApiBudgetExceeded"]}
        assert len(api.requests) == 10
        agent.close("one")  # its gateway session closes with it
        assert not (tools.sandbox.session_dir / f"{branches[0].gateway_name}.sock").exists()
    finally:
        agent.shutdown()



@pytest.mark.parametrize("scope", ["tactic", "session"])
def test_branches_of_a_shared_sandbox_call_apis_on_the_shared_budget(scope: str, sandbox_image: str, fake_api,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox shared by a tactic call (or kept as a session) keeps its gateway session in the holder, not in
    the agent's tools: a dialog fork there must still give the branch a session, charged to the same budget."""
    import os

    from lllm import Tactic

    api = fake_api(quote_route)
    monkeypatch.setenv("FMP_API_KEY", "host-only-key-0123456789")
    monkeypatch.setenv("FMP_BASE_URL", api.url + "/stable")

    class Forker(Tactic, register=False):
        name = "shared_forker"
        agent_group = ["brancher"]

        def call(self, task: str, **kwargs: Any) -> list[dict]:
            agent = self.agents["brancher"]
            tools = agent.proxy_tools

            def run(dialog: str, n: int) -> dict:
                return json.loads(str(tools.run(LOOP.format(n=n), dialog=dialog)).strip().splitlines()[-1])

            agent.open("base")
            out = [run("base", 4)]
            agent.fork("base", "one")
            agent.fork("base", "two")
            assert all(tools.dialogs.kernels[d].kind == "docker-branch" for d in ("one", "two"))
            out += [run("one", 10), run("two", 10), run("base", 1)]
            return out

    block = {"backend": "docker", "image": sandbox_image, "scope": scope}
    config = {"invoker": "scripted", "invoker_config": {"steps": []}, "workdir": str(tmp_path / "runs"),
              "agent_configs": [{"name": "brancher", "model_name": "gpt-4o", "system_prompt": "You fork.",
                                 "proxy": {"activate_proxies": ["fmp"], "source": "live", "timeout": 60,
                                           "budgets": {"fmp": {"calls": 10}}, "sandbox": block}}]}
    name = f"forkbudget-{os.environ['LLLM_TEST_RUN']}"
    try:
        results = Forker(config)("go", **({"sandbox_session": name} if scope == "session" else {}))
        # before the fix the branches had no gateway session at all (CALL_API could not connect)
        assert results == [{"ok": 4, "refused": []}, {"ok": 6, "refused": ["ApiBudgetExceeded"]},
                           {"ok": 0, "refused": ["ApiBudgetExceeded"]}, {"ok": 0, "refused": ["ApiBudgetExceeded"]}]
        assert len(api.requests) == 10
    finally:
        if scope == "session":
            from lllm.tools._shared_sandbox import close_session_sandboxes

            close_session_sandboxes()


def _hostile_snapshot(src: Path, dst: Path, code: str) -> Path:
    class Evil:
        def __reduce__(self):
            return (exec, (code,))

    blob = pickle.dumps(Evil())
    namespace = struct.pack(">I", 4) + b"evil" + struct.pack(">Q", len(blob)) + blob
    with tarfile.open(src) as tar, tarfile.open(dst, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name == META:
                meta = json.loads(data)
                data = json.dumps({**meta, "namespace_bytes": len(namespace), "saved": ["evil"]}).encode()
            elif member.name == "namespace.bin":
                data = namespace
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return dst


def test_a_hostile_snapshot_runs_only_in_the_sandbox_never_on_the_host(sandbox_image: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "host-was-here"
    with DockerSandbox(image=sandbox_image) as sb:
        sb.run_cell("x = 1")
        sb.save(tmp_path / "plain.snapshot")
    hostile = _hostile_snapshot(tmp_path / "plain.snapshot", tmp_path / "hostile.snapshot",
                                f"import pathlib; p = pathlib.Path({str(marker)!r}); p.parent.mkdir(parents=True, "
                                "exist_ok=True); p.write_text('pwned'); "
                                "open('/home/sandbox/work/ran-in-sandbox', 'w').write('yes')")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the host unpickled snapshot data")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    with DockerSandbox.resume(hostile) as resumed:
        # it ran where the model's code runs anyway: in the sandbox
        assert resumed.run_cell("print(open('ran-in-sandbox').read())").stdout == "yes\n"
        assert resumed.restored_names == ["evil"]
    assert not marker.exists()
