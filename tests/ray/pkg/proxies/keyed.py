"""`raytest`: a proxy that needs a key, and says where it ran and which key it saw (as a hash, never the key)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from lllm.proxies import BaseProxy, ProxyRegistrator

KEY_ENV = "LLLM_RAYTEST_API_KEY"


@ProxyRegistrator(path="raytest", name="Ray test proxy", description="Says where the proxy ran.")
class KeyedProxy(BaseProxy):
    api_key_env = KEY_ENV

    @BaseProxy.endpoint(category="Probe", endpoint="whoami", description="The process that ran this call.",
                        params={}, response={"pid": 1, "key_sha": "abc"})
    def whoami(self) -> dict[str, Any]:
        key = os.environ.get(KEY_ENV, "")
        return {"pid": os.getpid(), "key_sha": hashlib.sha256(key.encode()).hexdigest()[:12] if key else None}
