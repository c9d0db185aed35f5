"""WebRTC cannot go around the egress proxy: UDP is not proxied, so Chromium is told to send none.

The allowlist lives in the egress proxy every byte of the context's traffic goes through (issue 6: "enforced on
every request"). WebRTC's ICE sends STUN over UDP straight from the browser, which no HTTP proxy sees: a page on
an allowed origin (or a prompt-injected one) could use it to reach a blocked or private address. Chromium runs
with `--webrtc-ip-handling-policy=disable_non_proxied_udp`, which leaves WebRTC only TCP through the proxy.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from lllm.tools.cua import BrowserSession

pytestmark = pytest.mark.browser

_ICE_JS = """port => new Promise(resolve => {
  const pc = new RTCPeerConnection({iceServers: [{urls: 'stun:127.0.0.1:' + port}]});
  pc.createDataChannel('exfil');
  const seen = [];
  pc.onicecandidate = e => { if (e.candidate) seen.push(e.candidate.type); };
  pc.createOffer().then(o => pc.setLocalDescription(o)).catch(err => resolve('error: ' + err));
  setTimeout(() => { pc.close(); resolve(seen.join(',') || 'none'); }, 2500);
})"""


def test_webrtc_sends_no_udp_around_the_proxy(server: Any, cu_block: dict[str, Any]) -> None:
    catcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("127.0.0.1", 0))
    catcher.settimeout(1.0)
    port = catcher.getsockname()[1]
    try:
        with BrowserSession(cu_block) as s:
            s.perform("navigate", url=server.url("table.html"))
            outcome = s.driver.run(lambda: s.page.evaluate(_ICE_JS, port), timeout=15)
        assert not str(outcome).startswith("error"), outcome  # WebRTC itself still loads; it just gets no UDP
        assert "srflx" not in str(outcome), f"a STUN server answered over UDP: {outcome}"
        with pytest.raises(socket.timeout):
            data, peer = catcher.recvfrom(2048)
            pytest.fail(f"the page sent {len(data)} bytes of UDP (STUN) to 127.0.0.1:{port} around the proxy")
    finally:
        catcher.close()
