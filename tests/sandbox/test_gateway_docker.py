"""CALL_API from inside real Docker sandboxes (no network) through the host gateway; sessions stay apart."""

from __future__ import annotations

import json
import threading

import pytest

from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.gateway import Gateway, GatewayLimits
from lllm.sandbox._rundir import container_user

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("each_transport")]


class Toy(BaseProxy):
    _proxy_name = "Toy"
    _proxy_description = "Endpoints for container tests."

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    @BaseProxy.endpoint(category="t", endpoint="echo", description="Echo.", params={"x": (int, 1)})
    def echo(self, x: int = 0) -> dict:
        return {"x": x}

    @BaseProxy.endpoint(category="t", endpoint="hang", description="Hangs until released.")
    def hang(self) -> str:
        self.release.wait(20)
        return "late"


@pytest.fixture(scope="module")
def gateway():
    with Gateway(limits=GatewayLimits(call_timeout=5.0)) as gw:
        yield gw


@pytest.fixture
def sandboxes(sandbox_image: str):
    from lllm.sandbox.docker import DockerSandbox

    made: list = []

    def make() -> DockerSandbox:
        sb = DockerSandbox(image=sandbox_image, cell_timeout=30)
        made.append(sb)
        sb.start()
        return sb

    yield make
    for sb in made:
        sb.close()


def run(sb, code: str) -> str:
    result = sb.run_cell(code)
    assert result.status == "ok", result.text
    return result.stdout


def test_call_api_from_inside_a_container(gateway: Gateway, sandboxes) -> None:
    sb = sandboxes()
    records: list = []
    toy = Toy()
    with gateway.open_session(sb.session_dir, ProxyManager(proxies={"toy": toy}), session_id="dock-1",
                              tracer=records.append, token_owner=container_user()[0]) as session:
        out = run(sb, 'r = CALL_API("toy/echo", {"x": 41})\nprint(r["x"] + 1)')
        assert out.strip() == "42"
        doc = run(sb, 'print(query_api_doc("toy"))')
        assert "### toy/echo" in doc
        refused = run(sb, 'try:\n    CALL_API("fmp/price", {"symbol": "AAPL"})\n'
                          'except CallAPIError as e:\n    print(e.type)')
        assert refused.strip() == "ProxyNotActivated"
        # the network is really off: the only way out is the gateway socket
        net = run(sb, "import urllib.request\ntry:\n    urllib.request.urlopen('http://1.1.1.1', timeout=3)\n"
                      "except Exception as e:\n    print(type(e).__name__)")
        assert net.strip() in ("URLError", "OSError", "TimeoutError")
        # the token is readable by the kernel's user only (0400, uid 1000) and the key never enters
        mode = run(sb, "import os, stat\nst = os.stat('/run/lllm/gateway.token')\n"
                       "print(oct(stat.S_IMODE(st.st_mode)), st.st_uid, os.getuid())")
        assert mode.split() == ["0o400", str(container_user()[0]), str(container_user()[0])]
        # a cell interrupted in the middle of a CALL_API: the next call uses a fresh connection
        result = sb.run_cell('CALL_API("toy/hang")', timeout=1.5)
        assert result.status == "timeout"
        toy.release.set()
        assert run(sb, 'print(CALL_API("toy/echo", {"x": 7})["x"])').strip() == "7"
        session.flush()
    ok = [r for r in records if r.status == "ok" and r.endpoint == "echo"]
    assert len(ok) == 2 and all(r.session_id == "dock-1" for r in ok)
    gone = run(sb, 'try:\n    CALL_API("toy/echo")\nexcept CallAPIError as e:\n    print(e.type)')
    assert gone.strip() == "NoGateway"  # the session closed: socket and token removed


def test_a_sandbox_cannot_reach_another_sessions_socket(gateway: Gateway, sandboxes) -> None:
    a, b = sandboxes(), sandboxes()
    owner = container_user()[0]
    sa = gateway.open_session(a.session_dir, ProxyManager(proxies={"toy": Toy()}), session_id="A", token_owner=owner)
    sb_ = gateway.open_session(b.session_dir, ProxyManager(proxies={"toy": Toy()}), session_id="B", token_owner=owner)
    try:
        b_dir = str(b.session_dir)
        probe = run(a, f"""
import json, os, socket, glob
out = {{}}
out["b_dir_visible"] = os.path.exists({b_dir!r})
out["b_parent_visible"] = os.path.exists({str(b.session_dir.parent)!r})
try:
    s = socket.socket(socket.AF_UNIX); s.connect({b_dir + "/gateway.sock"!r}); out["connect_b"] = "connected"
except OSError as e:
    out["connect_b"] = type(e).__name__
out["sockets_seen"] = sorted(glob.glob("/run/**/gateway.sock", recursive=True) + glob.glob("/tmp/**/*.sock", recursive=True))
out["run_dir_listing"] = sorted(os.listdir("/run/lllm"))
try:
    out["up"] = sorted(os.listdir("/run/lllm/.."))
except OSError as e:
    out["up"] = type(e).__name__
print(json.dumps(out))
""")
        seen = json.loads(probe.strip().splitlines()[-1])
        assert seen["b_dir_visible"] is False and seen["b_parent_visible"] is False
        assert seen["connect_b"] in ("FileNotFoundError", "ConnectionRefusedError", "PermissionError")
        assert seen["sockets_seen"] == ["/run/lllm/gateway.sock"]
        assert "lllm" in seen["up"] and not any(name.startswith("sb") for name in seen["up"] if name != "lllm")
        # even with B's token (say it leaked), A's socket refuses it: the token is bound to its own socket
        forged = run(a, f"""
import json, socket, struct
s = socket.socket(socket.AF_UNIX); s.connect("/run/lllm/gateway.sock")
body = json.dumps({{"token": {sb_.token!r}, "path": "toy/echo", "id": 1}}).encode()
s.sendall(struct.pack(">I", len(body)) + body)
n = struct.unpack(">I", s.recv(4))[0]
print(json.loads(s.recv(n))["error"]["type"])
""")
        assert forged.strip() == "GatewayAuthError"
        assert run(b, 'print(CALL_API("toy/echo", {"x": 2})["x"])').strip() == "2"
    finally:
        sa.close()
        sb_.close()


def test_pooled_sandboxes_get_their_gateway_after_acquisition(sandbox_image: str, tmp_path) -> None:
    from lllm.core.agent import Agent
    from lllm.core.config import AgentBuildContext
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.tools.code import attach, close_pools

    block = {"activate_proxies": ["fred"], "source": "offline", "timeout": 30,
             "sandbox": {"backend": "docker", "image": sandbox_image, "pool_size": 1}}
    seen = []
    try:
        for n in range(2):
            agent = Agent(name=f"a{n}", system_prompt="s", model="m", llm_invoker=ScriptedInvoker([]))
            records: list = []
            attach(agent, block, AgentBuildContext(session_id=f"pool-{n}", tracer=records.append,
                                                   workdir_base=tmp_path))
            out = agent.proxy_tools.run('print(CALL_API("fred/series", {"series_id": "UNRATE"})[-1]["value"])')
            assert out.strip() == "4.2"
            seen.append(agent.proxy_tools.sandbox.sandbox_id)
            agent.shutdown()
            assert [r.session_id for r in records if r.kind == "api_call"] == [f"pool-{n}"]
        assert seen[0] != seen[1]  # a pooled sandbox is never handed to a second session
    finally:
        close_pools()


def test_matplotlib_figures_reach_the_model_as_images(sandbox_image: str, tmp_path) -> None:
    from lllm.core.agent import Agent
    from lllm.core.config import AgentBuildContext
    from lllm.core.prompt import ToolResult
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.tools.code import attach

    agent = Agent(name="plotter", system_prompt="s", model="m", llm_invoker=ScriptedInvoker([]))
    attach(agent, {"activate_proxies": ["fmp"], "source": "offline", "sandbox": {"image": sandbox_image}},
           AgentBuildContext(session_id="plot-1", tracer=lambda r: None, workdir_base=tmp_path))
    try:
        out = agent.proxy_tools.run(
            "import matplotlib.pyplot as plt\n"
            "prices = CALL_API('fmp/price', {'symbol': 'NVDA', 'period': '3m'})\n"
            "plt.plot([p['close'] for p in prices]); plt.title('NVDA'); plt.show()\n"
            "print(len(prices))")
        assert isinstance(out, ToolResult) and len(out.images) == 1
        import base64

        assert base64.b64decode(out.images[0])[:8] == b"\x89PNG\r\n\x1a\n"
        assert "[image/png]" in out.content and any(line.isdigit() for line in out.content.splitlines())
    finally:
        agent.shutdown()
    nb = agent.proxy_tools.notebook_path.read_text()
    assert '"image/png"' in nb  # the figure is in the notebook too
